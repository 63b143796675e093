//! `--metrics ADDR`: Prometheus text exposition at `GET /metrics`, built at
//! scrape time from the same status `stats` shows (`crate::status`), off
//! the hot path. HTTP is `ub_serve::http`'s, with its limits.

use crate::daemon::Daemon;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use ub_serve::http::{self, HttpLimits, Refused, Response};
use ub_serve::{Conn, Limits, Listener};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    bridge: String,
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    bridge: String,
    port: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BridgeLabel {
    bridge: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BridgeEventLabel {
    bridge: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

/// Renders every metric in the text format, from the same status `stats`
/// shows: each bridge's (label `bridge`), then the daemon's own.
pub fn render(d: &Daemon) -> String {
    let bridges: Vec<ub_proto::Status> = d.bridges().iter().map(|b| crate::status::of(d, b)).collect();
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
    let entries = Family::<BridgeLabel, Gauge>::default();
    reg.register("fdb_entries", "FDB entries, static and learned", entries.clone());
    let ageing = Family::<BridgeLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    reg.register("fdb_ageing_seconds", "FDB ageing time", ageing.clone());
    let bridge_events = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<BridgeEventLabel, Counter>::default();
        reg.register(name, help, f.clone());
        f
    };
    let fdb_events = bridge_events(
        &mut reg,
        "fdb_events",
        "FDB events: learned, moved, aged, refused, flushed, flaps, flap_refused",
    );
    let loop_events = bridge_events(&mut reg, "loop_events", "Loop guard: loops detected, ports blocked and unblocked");
    for st in &bridges {
        for p in &st.ports {
            let l = PortLabel { bridge: st.bridge.clone(), port: p.name.to_string() };
            let c = &p.counters;
            rx_frames.get_or_create(&l).inc_by(c.rx_frames);
            rx_bytes.get_or_create(&l).inc_by(c.rx_bytes);
            tx_frames.get_or_create(&l).inc_by(c.tx_frames);
            tx_bytes.get_or_create(&l).inc_by(c.tx_bytes);
            flooded.get_or_create(&l).inc_by(c.flooded);
            panics.get_or_create(&l).inc_by(c.reader_panics);
            for (reason, n) in &c.drops {
                let dl = DropLabel { bridge: st.bridge.clone(), port: p.name.to_string(), reason: reason.clone() };
                drops.get_or_create(&dl).inc_by(*n);
            }
            up.get_or_create(&l).set(i64::from(p.state == ub_proto::PortState::Up));
            learned.get_or_create(&l).set(i64::from(p.fdb_learned));
        }
        let bl = BridgeLabel { bridge: st.bridge.clone() };
        entries.get_or_create(&bl).set(i64::try_from(st.fdb.entries).unwrap_or(i64::MAX));
        ageing.get_or_create(&bl).set(st.fdb.ageing_secs);
        for (events, pairs) in [(&fdb_events, &st.fdb.events), (&loop_events, &st.loops.events)] {
            for (e, v) in pairs {
                events.get_or_create(&BridgeEventLabel { bridge: st.bridge.clone(), event: e.clone() }).inc_by(*v);
            }
        }
    }
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    let daemon = crate::status::daemon(d);
    reg.register("bridges", "Bridges this daemon serves", gauge(bridges.len() as u64));
    reg.register(
        "reader_helpers",
        "Reader helper threads running now (extra readers of busy or steadily fed ports, at most one per port)",
        gauge(daemon.reader_helpers),
    );
    let events = |reg: &mut Registry, name: &str, help: &str, pairs: &std::collections::BTreeMap<String, u64>| {
        let f = Family::<EventLabel, Counter>::default();
        reg.register(name, help, f.clone());
        for (e, v) in pairs {
            f.get_or_create(&EventLabel { event: e.clone() }).inc_by(*v);
        }
    };
    let links = d.links.events().iter().map(|(k, v)| ((*k).to_string(), *v)).collect();
    events(
        &mut reg,
        "link_events",
        "Link events followed: down, up, gone, reattached, host_recreated, resyncs",
        &links,
    );
    let own = [
        ("reloads".to_string(), daemon.reloads),
        ("reload_errors".to_string(), daemon.reload_errors),
        ("thread_panics".to_string(), daemon.thread_panics),
    ]
    .into_iter()
    .collect();
    events(&mut reg, "daemon_events", "The daemon: configuration reloads and refusals, its own threads' panics", &own);
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

/// A scrape is one short GET: its head fits in 8 KiB, it has no body.
const HTTP_LIMITS: HttpLimits = HttpLimits { head: 8 << 10, body: 0 };

/// Scrapes served at once; more are told to come back (503).
const LIMITS: Limits = Limits { connections: 4, timeout: Duration::from_secs(2) };

const TEXT: &str = "text/plain";

/// The HTTP listener and its accept loop; dropping it stops both.
#[derive(Debug)]
pub struct Server {
    _accepting: ub_serve::Server,
    /// The listening socket, to hand over.
    listener: TcpListener,
}

impl Server {
    /// Binds `addr` in the calling thread's network namespace: call it before
    /// `--netns` is entered, so metrics are served where the daemon was started.
    pub fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
        TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })
    }

    pub fn start(l: TcpListener, d: Arc<Daemon>) -> Result<Server, MetricsError> {
        let addr = l.local_addr().map_err(MetricsError::Listener)?;
        let kept = l.try_clone().map_err(MetricsError::Listener)?;
        let panics = d.counters.thread_panics.clone();
        let handler = Arc::new(move |c: Conn| http::serve(c, HTTP_LIMITS, refused, |req| answer(&d, req)));
        let accepting = ub_serve::Server::start("metrics", Listener::Tcp(l), LIMITS, handler, busy, panics)
            .map_err(MetricsError::Listener)?;
        tracing::info!(%addr, "serving metrics at /metrics");
        Ok(Server { _accepting: accepting, listener: kept })
    }

    /// Stops accepting and gives the listening socket away.
    pub fn hand_over(self) -> TcpListener {
        let Server { _accepting, listener } = self;
        drop(_accepting);
        listener
    }
}

fn refused(r: Refused) -> Response {
    Response::new(r.status, TEXT, format!("{}\n", r.why))
}

fn busy(mut c: Conn) {
    let _ = http::write_response(&mut c, &Response::new(503, TEXT, "too many scrapes at once; retry\n"), true);
}

fn answer(d: &Daemon, req: &http::Request) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/metrics") => {
            Response::new(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", render(d))
        }
        ("GET", _) => Response::new(404, TEXT, "try /metrics\n"),
        _ => Response::new(405, TEXT, "GET only\n"),
    }
}
