//! userbridge's Docker network driver: `docker network create -d
//! userbridge` puts containers on the daemon's switch, as Docker's built-in
//! `bridge` driver puts them on a kernel bridge (docs/docker.md).
//!
//! A companion process, `userbridge docker-plugin`, not a part of the
//! daemon (docs/architecture.md says why): it serves Docker's remote
//! driver protocol (JSON over HTTP on a Unix socket Docker finds in
//! `/run/docker/plugins`), and talks to the daemon only through the
//! control protocol, as the CNI plugin does.
//!
//! - `http.rs`: just enough HTTP for Docker's plugin client
//! - `api.rs`: the protocol's messages
//! - `driver.rs`: each call, against the daemon and the host's links
//! - `state.rs`: networks and endpoints, kept across restarts

pub mod api;
pub mod driver;
pub mod http;
pub mod state;

pub use driver::{Driver, DriverError, link_names};

use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where Docker looks for plugin sockets.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// Where the driver keeps its networks and endpoints by default.
pub const STATE_DIR: &str = "/var/lib/userbridge";

/// The driver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0:?} is not a plugin name: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another driver already serves {0}: stop it, or choose another --name")]
    Taken(PathBuf),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("signals: {0}")]
    Signals(std::io::Error),
}

/// How the driver runs: Docker's name for it, the daemon's socket, files.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub socket: PathBuf,
    pub plugin_dir: PathBuf,
    pub state: PathBuf,
}

impl Options {
    /// The driver's state file by default: one per plugin name.
    pub fn default_state(name: &str) -> PathBuf {
        Path::new(STATE_DIR).join(format!("docker-{name}.json"))
    }
}

/// Serves Docker until SIGTERM or SIGINT; the socket is removed on the way out.
pub fn serve(o: &Options) -> Result<(), ServeError> {
    if o.name.is_empty() || !o.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(ServeError::BadName(o.name.clone()));
    }
    let driver = Arc::new(Driver::new(&o.socket, &o.state)?);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServeError::Io { path, source }
    };
    std::fs::create_dir_all(&o.plugin_dir).map_err(io(&o.plugin_dir))?;
    let sock = o.plugin_dir.join(format!("{}.sock", o.name));
    if UnixStream::connect(&sock).is_ok() {
        return Err(ServeError::Taken(sock));
    }
    // Left by a driver that did not stop cleanly.
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(io(&sock))?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(ServeError::Signals)?;
    {
        let sock = sock.clone();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                let _ = std::fs::remove_file(&sock);
                tracing::info!("stopped");
                std::process::exit(0);
            }
        });
    }
    tracing::info!(socket = %sock.display(), daemon = %o.socket.display(), state = %o.state.display(), "serving Docker");
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let d = driver.clone();
        std::thread::spawn(move || connection(&d, conn));
    }
    Ok(())
}

/// One client connection: requests until it closes (Docker keeps them
/// alive) or stays idle for a minute.
fn connection(d: &Driver, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(read) = conn.try_clone() else { return };
    let mut r = BufReader::new(read);
    let mut w = conn;
    loop {
        let (resp, close) = match http::read_request(&mut r) {
            Ok(None) => return,
            Ok(Some(req)) => (answer(d, &req), req.close),
            Err(resp) => (resp, true),
        };
        if http::write_response(&mut w, &resp, close).is_err() || close {
            return;
        }
    }
}

fn answer(d: &Driver, req: &http::Request) -> http::Response {
    if req.method != "POST" {
        return http::error(405, "the plugin protocol is POST only");
    }
    let method = req.path.trim_start_matches('/');
    match d.handle(method, &req.body) {
        Ok(v) => http::Response { status: 200, body: v.to_string() },
        Err(e) => {
            tracing::warn!(call = method, error = %e, "refused");
            let status = if matches!(e, DriverError::BadRequest { .. }) { 400 } else { 500 };
            http::error(status, &e.to_string())
        }
    }
}
