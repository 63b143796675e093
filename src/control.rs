//! The control socket: newline-delimited JSON requests and replies on a Unix
//! socket (mode 0600), documented request by request in docs/control.md.
//! Each client has its own thread, a 5 s timeout and a 64 KiB line limit;
//! at most 16 are served at once, so no client can stall the datapath (which
//! never waits on the control plane) or take unbounded memory.

use crate::daemon::Daemon;
use crate::mirror;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use ub_datapath::{MirrorTo, Switch};
use ub_wire::Mac;

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most clients served at once; more are told to retry.
const MAX_CLIENTS: usize = 16;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn ok(result: Value) -> Value {
    json!({"ok": true, "result": result})
}

fn fail(msg: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": msg.to_string()})
}

fn str_arg<'a>(req: &'a Value, key: &str) -> Result<&'a str, Value> {
    req.get(key).and_then(Value::as_str).ok_or_else(|| fail(format!("request needs a \"{key}\" string")))
}

fn vlan_arg(req: &Value) -> Result<u16, Value> {
    match req.get("vlan") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().filter(|&v| v < 4095).map(|v| v as u16).ok_or_else(|| fail("\"vlan\" must be 0-4094")),
    }
}

fn mac_arg(req: &Value) -> Result<Mac, Value> {
    str_arg(req, "mac")?.parse::<Mac>().map_err(fail)
}

fn port_arg(d: &Daemon, req: &Value, key: &str) -> Result<Arc<ub_datapath::Port>, Value> {
    let name = str_arg(req, key)?;
    d.sw.port_by_name(name).ok_or_else(|| fail(format!("no port named '{name}' (see `userbridge port list`)")))
}

/// Answers one request (see docs/control.md). The flag is true when the
/// request itself was malformed (not JSON, not an object, no or an unknown
/// `cmd`): the connection is then closed. A well-formed request that fails
/// (no such port, …) gets its error and the connection stays open.
pub fn handle(d: &Daemon, line: &str) -> (Value, bool) {
    let req: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return (fail("malformed request: expected a JSON object like {\"cmd\":\"stats\"}"), true),
        Err(e) => return (fail(format!("malformed request: {e}")), true),
    };
    const KNOWN: [&str; 12] = [
        "fdb_show",
        "fdb_add",
        "fdb_del",
        "fdb_flush",
        "stats",
        "port_list",
        "port_add",
        "port_del",
        "set_ageing",
        "mirror_add",
        "mirror_del",
        "mirror_list",
    ];
    match req.get("cmd").and_then(Value::as_str) {
        Some(c) if KNOWN.contains(&c) => {}
        Some(other) => return (fail(format!("unknown command '{other}' (known: {})", KNOWN.join(", "))), true),
        None => return (fail("malformed request: no \"cmd\" string"), true),
    }
    match answer(d, &req) {
        Ok(v) | Err(v) => (v, false),
    }
}

fn answer(d: &Daemon, req: &Value) -> Result<Value, Value> {
    let sw = &d.sw;
    let now = sw.now_ms();
    let cmd = str_arg(req, "cmd")?;
    Ok(match cmd {
        "fdb_show" => {
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
            ok(json!(entries))
        }
        "port_list" | "stats" => {
            let mut ports = sw.snapshot();
            if let Some(name) = req.get("port").and_then(Value::as_str) {
                ports.retain(|p| p.name == name);
                if ports.is_empty() {
                    return Err(fail(format!("no port named '{name}' (see `userbridge port list`)")));
                }
            }
            let f = &sw.fdb;
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let fdb = json!({"entries": f.len(), "learned": f.learned_len(), "ageing_secs": f.ageing_ms() as f64 / 1000.0,
                "events": {"learned": ld(&f.stats.learned), "moved": ld(&f.stats.moved), "aged": ld(&f.stats.aged),
                           "refused": ld(&f.stats.refused), "flushed": ld(&f.stats.flushed),
                           "flaps": ld(&f.stats.flaps), "flap_refused": ld(&f.stats.flap_refused)}});
            let l = &d.links;
            let links =
                json!({"down": ld(&l.down), "up": ld(&l.up), "gone": ld(&l.gone), "reattached": ld(&l.reattached)});
            let g = &sw.loop_guard;
            let loops = json!({"mode": g.mode(), "detected": ld(&g.detected), "blocked": ld(&g.blocked),
                "unblocked": ld(&g.unblocked), "probe_mac": g.mac.to_string()});
            ok(json!({"ports": ports, "fdb": fdb, "links": links, "storm": sw.storm_limits(), "loops": loops}))
        }
        "port_add" => {
            let name = str_arg(req, "name")?;
            ub_port::validate_ifname(name).map_err(fail)?;
            let tap = req.get("tap").and_then(Value::as_bool).unwrap_or(false);
            d.attach(name, tap).map_err(fail)?;
            let mut s = d.settings.lock().unwrap_or_else(|e| e.into_inner());
            let list = if tap { &mut s.taps } else { &mut s.ports };
            if !list.iter().any(|p| p == name) {
                list.push(name.to_string());
            }
            ok(json!({"added": name}))
        }
        "port_del" => {
            let name = str_arg(req, "name")?;
            {
                let mut s = d.settings.lock().unwrap_or_else(|e| e.into_inner());
                s.ports.retain(|p| p != name);
                s.taps.retain(|p| p != name);
            }
            d.detach(name).map_err(fail)?;
            ok(json!({"removed": name}))
        }
        "fdb_add" => {
            let (mac, vlan, port) = (mac_arg(req)?, vlan_arg(req)?, port_arg(d, req, "port")?);
            if !mac.is_valid_source() {
                return Err(fail(format!("{mac} is not a unicast station address")));
            }
            sw.fdb.add_static(vlan, mac, port.id).map_err(|e| fail(format!("{e:?}")))?;
            ok(json!({"added": mac.to_string(), "port": port.name, "vlan": vlan}))
        }
        "fdb_del" => {
            let (mac, vlan) = (mac_arg(req)?, vlan_arg(req)?);
            if !sw.fdb.remove(vlan, mac) {
                return Err(fail(format!("no entry for {mac} in vlan {vlan}")));
            }
            ok(json!({"removed": mac.to_string(), "vlan": vlan}))
        }
        "fdb_flush" => {
            let n = match req.get("port") {
                None | Some(Value::Null) => sw.fdb.flush_all(false),
                Some(_) => sw.fdb.flush_port(port_arg(d, req, "port")?.id, false),
            };
            ok(json!({"flushed": n}))
        }
        "set_ageing" => {
            let secs = req
                .get("secs")
                .and_then(Value::as_u64)
                .filter(|s| (1..=1_000_000).contains(s))
                .ok_or_else(|| fail("\"secs\" must be 1 to 1000000"))?;
            sw.fdb.set_ageing_ms(secs * 1000);
            d.settings.lock().unwrap_or_else(|e| e.into_inner()).fdb.ageing_ms = secs * 1000;
            ok(json!({"ageing_secs": secs}))
        }
        "mirror_add" => {
            let from = port_arg(d, req, "from")?;
            let target = match (req.get("to").and_then(Value::as_str), req.get("pcap").and_then(Value::as_str)) {
                (Some(_), None) => {
                    let to = port_arg(d, req, "to")?;
                    if to.id == from.id {
                        return Err(fail("a port cannot mirror to itself"));
                    }
                    d.mirrors.lock().unwrap_or_else(|e| e.into_inner()).remove(&from.name);
                    MirrorTo::Port(to.id)
                }
                (None, Some(path)) => {
                    let path = std::path::Path::new(path);
                    if !path.is_absolute() || path.as_os_str().len() > 4096 {
                        return Err(fail("\"pcap\" must be an absolute path"));
                    }
                    let max = req.get("max_bytes").and_then(Value::as_u64).unwrap_or(100 << 20);
                    if max < 1024 {
                        return Err(fail("\"max_bytes\" must be at least 1024"));
                    }
                    let sink = mirror::PcapSink::create(path, max).map_err(fail)?;
                    d.mirrors.lock().unwrap_or_else(|e| e.into_inner()).insert(from.name.clone(), sink.clone());
                    MirrorTo::Sink(sink)
                }
                _ => return Err(fail("give exactly one of \"to\" (a port) or \"pcap\" (a file)")),
            };
            sw.set_mirror(from.id, Some(target));
            ok(json!({"mirroring": from.name}))
        }
        "mirror_del" => {
            let from = port_arg(d, req, "from")?;
            if sw.set_mirror(from.id, None).is_none() {
                return Err(fail(format!("port '{}' is not mirrored", from.name)));
            }
            d.mirrors.lock().unwrap_or_else(|e| e.into_inner()).remove(&from.name);
            ok(json!({"stopped": from.name}))
        }
        "mirror_list" => {
            let names = port_names(sw);
            let sinks = d.mirrors.lock().unwrap_or_else(|e| e.into_inner());
            let list: Vec<Value> = sw
                .mirrors()
                .into_iter()
                .map(|(from, m)| {
                    let from = names.get(from as usize).cloned().flatten().unwrap_or_default();
                    match &*m {
                        MirrorTo::Port(to) => json!({"from": from, "to": names.get(*to as usize).cloned().flatten()}),
                        MirrorTo::Sink(_) => match sinks.get(&from) {
                            Some(s) => json!({"from": from, "pcap": s.path, "max_bytes": s.max_bytes,
                                "written": s.written.load(Ordering::Relaxed), "bytes": s.bytes.load(Ordering::Relaxed),
                                "dropped": s.dropped.load(Ordering::Relaxed)}),
                            None => json!({"from": from, "pcap": null}),
                        },
                    }
                })
                .collect();
            ok(json!(list))
        }
        other => return Err(fail(format!("unknown command '{other}'"))),
    })
}

fn port_names(sw: &Switch) -> Vec<Option<String>> {
    sw.ports().iter().map(|p| p.as_ref().map(|p| p.name.clone())).collect()
}

/// The listening socket and its thread.
#[derive(Debug)]
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
    pub fn start(path: &Path, d: Arc<Daemon>) -> Result<Server, String> {
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
                        let (d, active) = (d.clone(), active.clone());
                        let spawned = std::thread::Builder::new().name("control-client".into()).spawn(move || {
                            serve(&d, conn);
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
fn serve(d: &Daemon, conn: UnixStream) {
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
                Ok(s) => handle(d, s.trim()),
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

/// Sends one request and returns the reply's result, or its error.
pub fn request(socket: &Path, req: &Value) -> Result<Value, String> {
    let conn = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is `userbridge run` running? pass --socket if it uses another path)",
            socket.display()
        )
    })?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    (&conn).write_all(format!("{req}\n").as_bytes()).map_err(|e| format!("sending to {}: {e}", socket.display()))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).map_err(|e| format!("reading from {}: {e}", socket.display()))?;
    let mut reply: Value = serde_json::from_str(&line).map_err(|e| format!("malformed reply from the daemon: {e}"))?;
    if reply["ok"] != true {
        return Err(reply["error"].as_str().unwrap_or("the daemon refused the request").to_string());
    }
    Ok(reply["result"].take())
}

/// Sends one request and prints the reply: JSON, or text by `show`.
pub fn client(socket: &Path, req: Value, json_out: bool, show: fn(&Value) -> String) -> Result<(), String> {
    let result = request(socket, &req)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    } else {
        print!("{}", show(&result));
    }
    Ok(())
}
