//! The control socket: newline-delimited JSON requests and replies on a Unix
//! socket (mode 0600). One request per line: `{"cmd":"fdb_show"}`,
//! `{"cmd":"stats"}`, `{"cmd":"port_list"}`; replies are
//! `{"ok":true,"result":…}` or `{"ok":false,"error":"…"}`.

use crate::output;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use ub_datapath::Switch;

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most clients served at once; more are told to retry.
const MAX_CLIENTS: usize = 16;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers one request.
pub fn handle(sw: &Switch, line: &str) -> Value {
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"ok": false, "error": format!("malformed request: {e}")}),
    };
    let now = sw.now_ms();
    match req.get("cmd").and_then(Value::as_str) {
        Some("fdb_show") => {
            let names = port_names(sw);
            let entries: Vec<Value> = sw
                .fdb
                .entries(now)
                .into_iter()
                .map(|e| {
                    json!({"mac": e.mac.to_string(), "port": names.get(e.port as usize).cloned().flatten(),
                       "port_id": e.port, "vlan": e.vid, "age_secs": e.age_ms as f64 / 1000.0,
                       "state": if e.is_static { "static" } else { "learned" }})
                })
                .collect();
            json!({"ok": true, "result": entries})
        }
        Some("port_list") | Some("stats") => {
            let f = &sw.fdb;
            let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let fdb = json!({"entries": f.len(), "learned": f.learned_len(), "ageing_secs": f.ageing_ms() as f64 / 1000.0,
                "events": {"learned": ld(&f.stats.learned), "moved": ld(&f.stats.moved), "aged": ld(&f.stats.aged),
                           "refused": ld(&f.stats.refused), "flushed": ld(&f.stats.flushed)}});
            json!({"ok": true, "result": {"ports": sw.snapshot(), "fdb": fdb}})
        }
        Some(other) => {
            json!({"ok": false, "error": format!("unknown command '{other}' (known: fdb_show, stats, port_list)")})
        }
        None => json!({"ok": false, "error": "request has no \"cmd\" string"}),
    }
}

fn port_names(sw: &Switch) -> Vec<Option<String>> {
    sw.ports().iter().map(|p| p.as_ref().map(|p| p.name.clone())).collect()
}

/// The listening socket and its thread.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Fails if another daemon answers on `path`; removes a stale socket file.
    pub fn check_free(path: &Path) -> Result<(), String> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "control socket {} is in use by another running userbridge (stop it, or pass --socket PATH)",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Binds `path` (mode 0600), refusing if another daemon answers there.
    /// Clients can connect from here on: call it once the switch is ready.
    pub fn start(path: &Path, sw: Arc<Switch>) -> Result<Server, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        Self::check_free(path)?;
        let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot set mode 0600 on {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                            active.fetch_sub(1, Ordering::AcqRel);
                            let _ = (&conn).write_all(b"{\"ok\":false,\"error\":\"too many clients; retry\"}\n");
                            continue;
                        }
                        let (sw, active) = (sw.clone(), active.clone());
                        let spawned = std::thread::Builder::new().name("control-client".into()).spawn(move || {
                            serve(&sw, conn);
                            active.fetch_sub(1, Ordering::AcqRel);
                        });
                        if spawned.is_err() {
                            tracing::warn!("could not start a control client thread");
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(Server { path: path.to_path_buf(), stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves one client: requests until EOF, a timeout, or a bad line.
fn serve(sw: &Switch, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut reader = BufReader::new((&conn).take(u64::MAX));
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.get_mut().set_limit(MAX_LINE as u64 + 1);
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (reply, close) = if line.len() > MAX_LINE {
            (json!({"ok": false, "error": format!("request longer than {MAX_LINE} bytes")}), true)
        } else {
            match std::str::from_utf8(&line) {
                Ok(s) => {
                    let r = handle(sw, s.trim());
                    let bad = r["ok"] == false;
                    (r, bad)
                }
                Err(_) => (json!({"ok": false, "error": "request is not UTF-8"}), true),
            }
        };
        let mut out = reply.to_string();
        out.push('\n');
        if (&conn).write_all(out.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Sends one request and prints the reply as text or JSON.
pub fn client(socket: &Path, cmd: &str, json_out: bool) -> Result<(), String> {
    let conn = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is `userbridge run` running? pass --socket if it uses another path)",
            socket.display()
        )
    })?;
    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
    (&conn)
        .write_all(format!("{}\n", json!({"cmd": cmd})).as_bytes())
        .map_err(|e| format!("sending to {}: {e}", socket.display()))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).map_err(|e| format!("reading from {}: {e}", socket.display()))?;
    let reply: Value = serde_json::from_str(&line).map_err(|e| format!("malformed reply from the daemon: {e}"))?;
    if reply["ok"] != true {
        return Err(reply["error"].as_str().unwrap_or("the daemon refused the request").to_string());
    }
    let result = &reply["result"];
    if json_out {
        println!("{}", serde_json::to_string_pretty(result).unwrap_or_default());
        return Ok(());
    }
    let text = match cmd {
        "fdb_show" => output::fdb(result),
        "port_list" => output::ports(result),
        _ => output::stats(result),
    };
    print!("{text}");
    Ok(())
}
