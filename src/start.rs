//! `userbridge run`: the daemon's start-up wiring and its loop. Checks the
//! capabilities, sets up logging and the open-files limit, makes the
//! configured bridges with their ports and the bridges and ports a restart
//! brings back, then starts the
//! link watchers, the metrics endpoint, the control socket and the ager,
//! and runs the daemon's loop: signals (SIGHUP reloads, SIGINT/SIGTERM
//! stop) and link events, one at a time, until it is told to stop.

use crate::config::{ConfigError, RunArgs, Settings};
use crate::daemon::{Daemon, DaemonError, Watched};
use crate::state::{StateError, StateFile};
use crate::watch::{Seen, Watcher};
use crate::{control, metrics};
use crossbeam_channel::{Receiver, RecvTimeoutError, select};
use std::net::TcpListener;
use std::sync::Arc;
use ub_netlink::NetNs;

/// Why the daemon did not start; each names the thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "missing capability {name} (needed for {why}): run as root, or grant it (e.g. systemd AmbientCapabilities={name})"
    )]
    Capability { name: &'static str, why: &'static str },
    #[error("log level '{level}': {why}")]
    LogLevel { level: String, why: String },
    #[error("network namespace {name}: {source} (list namespaces with `ip netns`)")]
    Netns { name: String, source: ub_netlink::Error },
    #[error("the namespace the daemon started in: {0}")]
    StartNs(ub_netlink::Error),
    #[error("the configured bridge, port or static entry: {0}")]
    Configured(#[from] DaemonError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Control(#[from] control::ServerError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("link notifications: {0}")]
    Links(ub_netlink::Error),
    #[error("starting the {what} thread: {source}")]
    Thread { what: &'static str, source: std::io::Error },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("--takeover: {0}")]
    Takeover(String),
    #[error("the handover socket: {0}")]
    TakeoverSocket(std::io::Error),
}

/// Capabilities the daemon needs, with why; checked before anything is opened
/// so a missing one is named instead of surfacing as EPERM on some socket.
fn check_capabilities(s: &Settings) -> Result<(), StartError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(eff) =
        status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Ok(()); // Cannot tell: let the kernel decide.
    };
    let mut need = vec![(13, "CAP_NET_RAW", "AF_PACKET sockets for the ports")];
    need.push((12, "CAP_NET_ADMIN", "promiscuous mode, socket buffers and TAP devices"));
    if s.netns.is_some() {
        need.push((21, "CAP_SYS_ADMIN", "entering the network namespace given with --netns"));
    }
    for (bit, name, why) in need {
        if eff & (1 << bit) == 0 {
            return Err(StartError::Capability { name, why });
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one: a port holds about
/// two descriptors per reader and a few more (25 with `--readers 8`), so
/// 110 pods on an 8-CPU node need some 2 800, where systemd starts a service
/// with a soft limit of 1024 (nothing in the daemon uses `select`).
fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (lim.current, lim.maximum) else { return };
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
        Ok(()) => tracing::debug!(from = soft, to = hard, "open-files limit raised to the hard limit"),
        Err(e) => {
            tracing::warn!(limit = soft, error = %e, "could not raise the open-files limit; ports may fail to open")
        }
    }
}

fn init_logging(level: &str) -> Result<(), StartError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .map_err(|e| StartError::LogLevel { level: level.to_string(), why: e.to_string() })?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
    Ok(())
}

/// How long a daemon killed during a handover may take to let go of what
/// it held (its sockets, claims and state file lock close one by one).
const GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `f`'s result; while it fails and `wait` (the daemon before this one was
/// killed during a handover and may still be exiting), tried again for up
/// to [`GONE_WITHIN`].
fn patient<T, E>(wait: bool, f: impl Fn() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + GONE_WITHIN;
    loop {
        match f() {
            Err(_) if wait && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// What the daemon's loop is told.
enum Told {
    Signal(i32),
    Seen(Seen),
    Takeover(crate::takeover::Asking),
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(a: RunArgs) -> Result<(), StartError> {
    crate::upgrade::remember();
    let settings = a.settings()?;
    check_capabilities(&settings)?;
    init_logging(&settings.log_level)?;
    raise_open_files();
    // For the daemon's whole life: its threads are counted (the soak).
    ub_port::afpacket::start_ring_closer();

    // Taking over: the running daemon's sockets, before anything is opened.
    let mut gone = false;
    let mut incoming = match a.takeover.then(|| crate::takeover::Incoming::ask(&settings)) {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(crate::takeover::NotTaken::Refused(why))) => return Err(StartError::Takeover(why)),
        Some(Err(crate::takeover::NotTaken::Gone(why))) => {
            // Killed mid-way, it holds nothing now: this daemon starts as after a crash.
            tracing::warn!(why = %why, "the running daemon went away during the handover; starting afresh");
            gone = true;
            None
        }
    };
    // Metrics are served in the namespace the daemon was started in, and
    // host ports live there.
    let metrics_listener = match incoming.as_mut().and_then(|i| i.metrics.take()) {
        Some(l) => Some(l),
        None => settings.metrics.map(metrics::Server::bind).transpose()?,
    };
    let start_ns = match &settings.netns {
        Some(_) => Some(Arc::new(NetNs::current().map_err(StartError::StartNs)?)),
        None => None,
    };
    if let Some(name) = &settings.netns {
        // Before any thread exists: every thread started later inherits it.
        NetNs::open(name).and_then(|n| n.enter()).map_err(|source| StartError::Netns { name: name.clone(), source })?;
    }
    // A second daemon on the same socket stops here, before it touches any
    // interface. One killed during a handover may still be closing its
    // sockets: given two seconds.
    if incoming.is_none() {
        patient(gone, || control::Server::check_free(&settings.socket))?;
    }

    let d = Daemon::new(settings.clone(), a.config.clone(), start_ns);
    if gone {
        // Its claims go as its descriptors close, a moment after its handover socket.
        d.opener.open.inherit.wait_for_claims(GONE_WITHIN);
    }
    if let Some(i) = &mut incoming {
        i.give_ports(&d.opener.open.inherit);
        // No port reads before every port is attached and the entries learned.
        ub_datapath::hold_readers(true);
    }
    // Claims of daemons killed before they could remove theirs.
    let swept = ub_port::sweep_claims(&d.opener.open.claim_dir);
    if swept > 0 {
        tracing::debug!(swept, "claim files nobody held removed");
    }
    // Before any bridge: its first frames already go as the node's rules say.
    let first = NetNs::run_in(d.opener.start_ns.as_deref(), crate::netfilter::look).unwrap_or_default();
    d.init_node_filter(first);
    // Every configured bridge and port opens, or the start fails with the
    // reason; then the bridges and ports recorded before a restart come back.
    let opened = (|| -> Result<(), StartError> {
        for b in &settings.bridges {
            d.add_configured_bridge(b)?;
        }
        // Its lock goes as the killed daemon's descriptors close.
        d.restore(patient(gone, || StateFile::open(&settings.state_dir, &settings.socket))?);
        if let Some(i) = &mut incoming {
            let entries = i.give_fdb(&d);
            for left in d.opener.open.inherit.clear() {
                tracing::warn!(port = %left, "a handed-over port this daemon does not run: its descriptors closed");
            }
            tracing::info!(entries, "taken over: ports, listeners and learned entries");
            ub_datapath::hold_readers(false);
        }
        Ok(())
    })();
    // A start that fails after its bridges are made leaves none it made.
    match opened.and_then(|()| serve(&d, &settings, metrics_listener, incoming)) {
        Ok(()) => {
            d.stop_all(settings.remove_bridges);
            Ok(())
        }
        Err(e) => {
            d.abandon();
            Err(e)
        }
    }
}

/// Serves the daemon `d`, whose bridges are ready: link watchers, metrics,
/// the control socket and the ager, and the daemon's loop until it is told
/// to stop.
fn serve(
    d: &Arc<Daemon>,
    settings: &Settings,
    metrics_listener: Option<TcpListener>,
    mut incoming: Option<crate::takeover::Incoming>,
) -> Result<(), StartError> {
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let panics = d.counters.thread_panics.clone();
    // The pods' namespace; the host ports' too, unless they live in the start namespace.
    let here = Watched { pods: true, host: d.opener.start_ns.is_none() };
    let links = Watcher::start(None, here, seen_tx.clone(), panics.clone()).map_err(StartError::Links)?;
    let host_links = d
        .opener
        .start_ns
        .clone()
        .map(|ns| Watcher::start(Some(ns), Watched { pods: false, host: true }, seen_tx, panics.clone()))
        .transpose()
        .map_err(StartError::Links)?;
    let metrics = metrics_listener.map(|l| metrics::Server::start(l, d.clone())).transpose()?;
    // Only now that every port forwards does the socket accept clients: a
    // client that connects sees a ready switch.
    let server = match incoming.as_mut().and_then(|i| i.control.take()) {
        Some(l) => control::Server::start_on(l, control::SocketFile::adopt(&settings.socket), d.clone())?,
        None => control::Server::start(&settings.socket, d.clone())?,
    };
    let mut servers = crate::takeover::Servers { control: Some(server), metrics };

    // Dropping `netfilter_stop` ends the netfilter follower (within a second).
    let (netfilter_stop, netfilter_rx) = crossbeam_channel::bounded::<()>(0);
    let netfilter = ub_supervise::spawn("netfilter", panics.clone(), {
        let (d, ns) = (d.clone(), d.opener.start_ns.clone());
        move || {
            let d = d.clone();
            crate::netfilter::follow(move |nf| d.set_node_filter(nf), ns.clone(), netfilter_rx.clone())
        }
    })
    .map_err(|source| StartError::Thread { what: "netfilter", source })?;
    // Dropping `ager_stop` wakes and ends the ager.
    let (ager_stop, ager_rx) = crossbeam_channel::bounded::<()>(0);
    let ager = ub_supervise::spawn("ager", panics, {
        let d = d.clone();
        move || {
            while let Err(RecvTimeoutError::Timeout) = ager_rx.recv_timeout(d.ager_interval()) {
                d.age();
            }
        }
    })
    .map_err(|source| StartError::Thread { what: "ager", source })?;

    let signals = signal_channel()?;
    let bridges = d.bridges();
    let ports: usize = bridges.iter().map(|b| b.sw.ports().iter().flatten().count()).sum();
    tracing::info!(socket = %settings.socket.display(), bridges = bridges.len(), ports, "userbridge running");
    d.log_node_filter();
    drop(bridges);
    // The daemon before this one exits now (and tells systemd this one is
    // its main process); the connection stays open while this one runs.
    let handed = incoming.map(crate::takeover::Incoming::ready);
    if handed.is_none() {
        crate::systemd::ready();
    }
    // A daemon taking over from this one asks here (bound only now: until
    // the daemon before this one has its answer, the file is its own).
    let handover = Arc::new(crate::takeover::Listener::bind(&settings.socket).map_err(StartError::TakeoverSocket)?);
    let (ask_tx, asks) = crossbeam_channel::bounded(0);
    let asking = std::thread::Builder::new()
        .name("takeover".into())
        .spawn({
            let handover = handover.clone();
            move || {
                while let Ok(a) = handover.accept() {
                    if ask_tx.send(a).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|source| StartError::Thread { what: "takeover", source })?;
    loop {
        let told = select! {
            recv(signals) -> s => s.map(Told::Signal),
            recv(seen) -> s => s.map(Told::Seen),
            recv(asks) -> a => a.map(Told::Takeover),
        };
        match told {
            Ok(Told::Signal(libc::SIGHUP)) => d.reload(),
            Ok(Told::Signal(sig)) => {
                tracing::info!(signal = sig, "shutting down");
                crate::systemd::stopping();
                break;
            }
            Ok(Told::Seen(Seen::Link(w, ev))) => d.link_event(w, ev),
            Ok(Told::Seen(Seen::Resynced(w, links))) => d.links_resynced(w, links),
            Ok(Told::Takeover(a)) => {
                // Back only if this daemon serves on.
                crate::takeover::hand_over(d, a, &mut servers);
                handover.renew();
            }
            Err(_) => break,
        }
    }
    drop(ager_stop);
    let _ = ager.join();
    drop(netfilter_stop);
    let _ = netfilter.join();
    // The asking thread may stay blocked in accept: not joined, its socket
    // file removed here.
    handover.shut();
    drop((asks, asking));
    let _ = std::fs::remove_file(crate::takeover::path_of(&settings.socket));
    drop(servers);
    drop(links);
    drop(host_links);
    Ok(())
}

/// SIGHUP, SIGINT and SIGTERM, as they come.
fn signal_channel() -> Result<Receiver<i32>, StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(StartError::Signals)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .map_err(|source| StartError::Thread { what: "signals", source })?;
    Ok(rx)
}
