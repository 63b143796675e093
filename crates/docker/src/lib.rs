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
//! - `api.rs`: the protocol's messages (HTTP is `ub_serve::http`'s)
//! - `driver.rs`: each call, against the daemon and the host's links
//! - `external.rs`: published ports, programmed and revoked
//! - `error.rs`: why a call failed, as Docker shows it
//! - `rules.rs`: the node's iptables rules for the networks (masquerade,
//!   published ports, isolation), in chains of the driver's own
//! - `publish.rs`: the published ports held for their containers
//! - `state.rs`: networks and endpoints, kept across restarts

pub mod api;
pub mod driver;
mod error;
mod external;
mod publish;
mod rules;
pub mod state;

pub use driver::{Call, Driver, link_names};
pub use error::DriverError;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ub_serve::http::{self, HttpLimits, Refused, Response};
use ub_serve::{Conn, Limits, Listener, Server};

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
    /// How often the node's rules are checked and put back; `None`: only at SIGHUP.
    pub check_rules: Option<Duration>,
}

impl Options {
    /// The driver's state file by default: one per plugin name.
    pub fn default_state(name: &str) -> PathBuf {
        Path::new(STATE_DIR).join(format!("docker-{name}.json"))
    }
}

/// Docker's requests are a few KiB (CreateEndpoint with every option).
pub const HTTP_LIMITS: HttpLimits = HttpLimits { head: 16 << 10, body: 1 << 20 };

/// Calls served at once (each takes the state's lock in turn): dockerd
/// keeps a few connections open; more are told to come back.
const LIMITS: Limits = Limits { connections: 16, timeout: Duration::from_secs(60) };

/// The content type of the plugin protocol's replies.
const JSON: &str = "application/vnd.docker.plugins.v1+json";

/// Serves Docker until SIGTERM or SIGINT (SIGHUP puts the node's rules
/// back); the socket is removed on the way out.
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
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(ServeError::Signals)?;
    let served = driver.clone();
    let handle = Arc::new(move |c: Conn| http::serve(c, HTTP_LIMITS, refused, |req| answer(&served, req)));
    let server = Server::start("docker-http", Listener::Unix(listener), LIMITS, handle, busy, Arc::default())
        .map_err(io(&sock))?;
    tracing::info!(socket = %sock.display(), daemon = %o.socket.display(), state = %o.state.display(), "serving Docker");
    // The node's rules are checked every few seconds and at SIGHUP, and put
    // back when a firewall reload or dockerd moved or flushed them.
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let every = o.check_rules;
    let keeper = ub_supervise::spawn("docker-rules", Arc::default(), {
        let driver = driver.clone();
        move || {
            let tick = || every.map_or(crossbeam_channel::never(), crossbeam_channel::after);
            loop {
                crossbeam_channel::select! {
                    recv(stopped) -> _ => break,
                    recv(tick()) -> _ => keep_rules(&driver, false),
                }
            }
        }
    })
    .map_err(|e| ServeError::Io { path: sock.clone(), source: e })?;
    for sig in signals.forever() {
        if sig != SIGHUP {
            break;
        }
        keep_rules(&driver, true);
    }
    drop(stop);
    let _ = keeper.join();
    drop(server);
    let _ = std::fs::remove_file(&sock);
    tracing::info!("stopped");
    Ok(())
}

/// How often the node's rules are checked by default.
pub const CHECK_RULES: Duration = Duration::from_secs(5);

/// Puts the node's rules back if they are not as the state says; says so
/// when they were (or, `asked`, either way).
fn keep_rules(driver: &Driver, asked: bool) {
    match driver.reapply() {
        Ok(true) => tracing::warn!("the node's rules were not as the networks need (a firewall reload?): put back"),
        Ok(false) if asked => tracing::info!("the node's rules are as the networks need"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "the node's rules could not be checked"),
    }
}

/// An error reply in the protocol's shape, `{"Err": "..."}`.
fn error(status: u16, msg: &str) -> Response {
    Response::new(status, JSON, serde_json::json!({ "Err": msg }).to_string())
}

fn refused(r: Refused) -> Response {
    error(r.status, r.why)
}

/// A connection over the cap: told to come back, then closed.
fn busy(mut c: Conn) {
    let _ = http::write_response(&mut c, &error(503, "too many connections to the driver; retry"), true);
}

/// Answers one call: the driver's reply, or its error with the status Docker expects.
pub fn answer(d: &Driver, req: &http::Request) -> Response {
    if req.method != "POST" {
        return error(405, "the plugin protocol is POST only");
    }
    let method = req.path.trim_start_matches('/');
    match d.handle(method, &req.body) {
        Ok(v) => Response::new(200, JSON, v.to_string()),
        Err(e) => {
            tracing::warn!(call = method, error = %e, "refused");
            let status = if matches!(e, DriverError::BadRequest { .. }) { 400 } else { 500 };
            error(status, &e.to_string())
        }
    }
}
