//! `userbridge run`: open the ports, start a reader per port, the ager and
//! the control socket; stop cleanly on SIGINT/SIGTERM.

use crate::control;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ub_datapath::{PortKind, ReaderHandle, Switch, spawn_reader};
use ub_fdb::FdbConfig;
use ub_port::afpacket::RingConfig;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Attach this interface (e.g. the host end of a pod's veth). Repeat for more ports.
    #[arg(long = "port", value_name = "IF")]
    pub ports: Vec<String>,
    /// Create a TAP interface NAME and attach it. Repeat for more.
    #[arg(long = "tap", value_name = "NAME")]
    pub taps: Vec<String>,
    /// Control socket path.
    #[arg(long, default_value = crate::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Seconds an idle learned entry lives (the Linux bridge's default is 300).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ageing_secs: u64,
    /// Most learned entries in the table.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub fdb_max: u64,
    /// Most learned entries behind one port.
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(u32).range(1..))]
    pub fdb_max_per_port: u32,
    /// Enter this network namespace (as in `ip netns exec NAME`) before attaching.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// RX ring: blocks per port.
    #[arg(long, default_value_t = 8)]
    pub ring_blocks: usize,
    /// RX ring: block size in KiB (power of two, >= 128: a block holds a 64 KiB GSO frame).
    #[arg(long, default_value_t = 256)]
    pub block_kib: usize,
    /// RX ring: longest a partly filled block waits before the reader sees it, in ms.
    #[arg(long, default_value_t = 1)]
    pub retire_ms: u32,
    /// Log filter (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// A port opened but not yet forwarding: name, backend, its two halves, link up.
type OpenedPort = (String, PortKind, Box<dyn ub_port::PortRx>, Box<dyn ub_port::PortTx>, bool);

pub fn run(a: RunArgs) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&a.log_level))
        .map_err(|e| format!("--log-level '{}': {e}", a.log_level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();

    if a.ports.is_empty() && a.taps.is_empty() {
        return Err("no ports: give at least one --port IF or --tap NAME".into());
    }
    let ring = RingConfig { block_kib: a.block_kib, blocks: a.ring_blocks, retire_ms: a.retire_ms };
    ring.validate()?;
    if let Some(ns) = &a.netns {
        // Before any thread exists: every thread started later inherits it.
        ub_netlink::NetNs::open(ns)
            .and_then(|n| n.enter())
            .map_err(|e| format!("{e} (list namespaces with `ip netns`)"))?;
    }
    let sw = Arc::new(Switch::new(FdbConfig {
        ageing_ms: a.ageing_secs * 1000,
        max_entries: a.fdb_max as usize,
        max_per_port: a.fdb_max_per_port,
    }));

    // A second daemon on the same socket stops here, before it touches any interface.
    control::Server::check_free(&a.socket)?;

    // Open every port before forwarding anything: a bad one fails the start.
    let mut opened: Vec<OpenedPort> = Vec::new();
    for name in &a.ports {
        if opened.iter().any(|(n, ..)| n == name) {
            return Err(format!("--port {name} given twice"));
        }
        let (rx, tx, info) = ub_port::afpacket::open(name, ring).map_err(|e| e.to_string())?;
        let up = info.admin_up && info.oper_up;
        if !up {
            tracing::warn!(port = %name, "link is down; the port forwards once it is up (`ip link set {name} up`, and its peer)");
        }
        opened.push((name.clone(), PortKind::AfPacket, Box::new(rx), Box::new(tx), up));
    }
    for name in &a.taps {
        let (rx, tx, actual) = ub_port::tap::open(name).map_err(|e| e.to_string())?;
        // A new TAP is down until whoever uses it brings it up (`ip link set
        // NAME up`); the link watcher then marks the port up.
        opened.push((actual, PortKind::Tap, Box::new(rx), Box::new(tx), false));
    }
    let mut readers: Vec<ReaderHandle> = Vec::new();
    for (name, kind, rx, tx, up) in opened {
        let id = sw.add_port(&name, kind, tx).map_err(|e| e.to_string())?;
        if !up && let Some(p) = sw.port(id) {
            p.set_state(ub_datapath::PortState::Down);
        }
        readers.push(spawn_reader(sw.clone(), id, rx).map_err(|e| format!("starting the reader of {name}: {e}"))?);
        tracing::info!(port = %name, id, ?kind, "port attached");
    }

    let links = crate::links::Watcher::start(sw.clone())?;

    // Only now that every port forwards does the socket accept clients: a
    // client that connects sees a ready switch.
    let server = control::Server::start(&a.socket, sw.clone())?;

    // Dropping `ager_stop` wakes and ends the ager.
    let (ager_stop, ager_rx) = std::sync::mpsc::channel::<()>();
    let ager = std::thread::Builder::new()
        .name("ager".into())
        .spawn({
            let sw = sw.clone();
            move || {
                // One pass a second, or ten per ageing period if that is shorter.
                let every = Duration::from_millis((sw.fdb.ageing_ms() / 10).clamp(100, 1000));
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = ager_rx.recv_timeout(every) {
                    let n = sw.fdb.age(sw.now_ms());
                    if n > 0 {
                        tracing::debug!(aged = n, "fdb entries aged out");
                    }
                }
            }
        })
        .map_err(|e| format!("starting the ager: {e}"))?;

    tracing::info!(socket = %a.socket.display(), ports = readers.len(), "userbridge running");
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    let sig = signals.forever().next();
    tracing::info!(signal = ?sig, "shutting down");
    drop(ager_stop);
    let _ = ager.join();
    drop(server);
    drop(links);
    for r in readers {
        r.stop();
    }
    Ok(())
}
