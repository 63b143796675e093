//! `--metrics ADDR`: Prometheus text exposition at `GET /metrics`, built at
//! scrape time from the same snapshots `stats` shows, off the hot path.

use crate::daemon::{Daemon, DaemonError, spawn_supervised};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    port: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

/// Renders every metric in the text format, from the same snapshot `stats`
/// shows (`Daemon::status`).
pub fn render(d: &Daemon) -> String {
    let st = d.status();
    let mut reg = Registry::with_prefix("userbridge");
    let port_counter = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<PortLabel, Counter>::default();
        reg.register(name, help, f.clone());
        f
    };
    let rx_frames = port_counter(&mut reg, "port_rx_frames", "Frames received on the port");
    let rx_bytes = port_counter(&mut reg, "port_rx_bytes", "Bytes received on the port");
    let tx_frames = port_counter(&mut reg, "port_tx_frames", "Frames sent out of the port");
    let tx_bytes = port_counter(&mut reg, "port_tx_bytes", "Bytes sent out of the port");
    let flooded = port_counter(&mut reg, "port_flooded", "Frames received on the port and flooded");
    let panics =
        port_counter(&mut reg, "port_reader_panics", "Panics of the port's readers (each restarted, until failed)");
    let drops = Family::<DropLabel, Counter>::default();
    reg.register("port_drops", "Frames dropped, by port and reason", drops.clone());
    let up = Family::<PortLabel, Gauge>::default();
    reg.register("port_up", "1 if the port forwards, 0 if its link is down or gone", up.clone());
    let learned = Family::<PortLabel, Gauge>::default();
    reg.register("port_fdb_learned", "Learned FDB entries behind the port", learned.clone());
    for p in &st.ports {
        let l = PortLabel { port: p.name.clone() };
        let c = &p.counters;
        rx_frames.get_or_create(&l).inc_by(c.rx_frames);
        rx_bytes.get_or_create(&l).inc_by(c.rx_bytes);
        tx_frames.get_or_create(&l).inc_by(c.tx_frames);
        tx_bytes.get_or_create(&l).inc_by(c.tx_bytes);
        flooded.get_or_create(&l).inc_by(c.flooded);
        panics.get_or_create(&l).inc_by(c.reader_panics);
        for (reason, n) in &c.drops {
            drops.get_or_create(&DropLabel { port: p.name.clone(), reason: reason.clone() }).inc_by(*n);
        }
        up.get_or_create(&l).set(i64::from(p.state == ub_port::PortState::Up));
        learned.get_or_create(&l).set(i64::from(p.fdb_learned));
    }
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    reg.register("fdb_entries", "FDB entries, static and learned", gauge(st.fdb.entries));
    let ageing = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    ageing.set(st.fdb.ageing_secs);
    reg.register("fdb_ageing_seconds", "FDB ageing time", ageing);
    reg.register(
        "reader_helpers",
        "Reader helper threads running now (extra readers of busy or steadily fed ports, at most one per port)",
        gauge(st.daemon.reader_helpers),
    );
    let events = |reg: &mut Registry, name: &str, help: &str, pairs: &std::collections::BTreeMap<String, u64>| {
        let f = Family::<EventLabel, Counter>::default();
        reg.register(name, help, f.clone());
        for (e, v) in pairs {
            f.get_or_create(&EventLabel { event: e.clone() }).inc_by(*v);
        }
    };
    events(
        &mut reg,
        "fdb_events",
        "FDB events: learned, moved, aged, refused, flushed, flaps, flap_refused",
        &st.fdb.events,
    );
    events(&mut reg, "link_events", "Link events followed: down, up, gone, reattached", &st.links);
    events(&mut reg, "loop_events", "Loop guard: loops detected, ports blocked and unblocked", &st.loops.events);
    let daemon = [
        ("reloads".to_string(), st.daemon.reloads),
        ("reload_errors".to_string(), st.daemon.reload_errors),
        ("thread_panics".to_string(), st.daemon.thread_panics),
    ]
    .into_iter()
    .collect();
    events(
        &mut reg,
        "daemon_events",
        "The daemon: configuration reloads and refusals, its own threads' panics",
        &daemon,
    );
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// Serving metrics failed to start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {source} (choose another --metrics address)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("metrics listener: {0}")]
    Listener(std::io::Error),
}

/// The HTTP listener.
pub struct Server {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` in the calling thread's network namespace: call it before
    /// `--netns` is entered, so metrics are served where the daemon was started.
    pub fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
        TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })
    }

    pub fn start(l: TcpListener, d: Arc<Daemon>) -> Result<Server, DaemonError> {
        let addr = l.local_addr().map_err(MetricsError::Listener)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn_supervised("metrics", d.clone(), {
            let stop = stop.clone();
            move || {
                for conn in l.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    // One scrape at a time: a slow scraper delays only scrapers.
                    if let Ok(c) = conn {
                        serve(&d, c);
                    }
                }
            }
        })?;
        tracing::info!(%addr, "serving metrics at /metrics");
        Ok(Server { stop, addr, thread: Some(thread) })
    }
}

fn serve(d: &Daemon, c: TcpStream) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
    let mut r = BufReader::new(std::io::Read::take(&c, 8192));
    let mut request = String::new();
    if r.read_line(&mut request).is_err() {
        return;
    }
    // Skip the headers (bounded by the 8 KiB take).
    let mut line = String::new();
    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", render(d)),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let _ = write!(
        &c,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
