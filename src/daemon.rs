//! `userbridge run`: open the ports, start the readers of each port (one per
//! CPU by default), the ager, the link watcher, the control socket and the
//! metrics endpoint; apply runtime changes (control requests, SIGHUP); stop
//! cleanly on SIGINT/SIGTERM.

use crate::config::{Settings, StaticEntry, ThreadConfig};
use crate::{control, links, metrics, mirror};
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ub_datapath::{LoopDetect, Placement, PortKind, PortState, ReaderHandle, StormLimits, Switch, spawn_reader_at};
use ub_fdb::FdbConfig;
use ub_port::afpacket::RxConfig;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Read everything from this TOML file (see docs/operations.md); SIGHUP re-reads it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ports", "taps", "socket", "ageing_secs", "fdb_max",
        "fdb_max_per_port", "netns", "rx", "ring_blocks", "block_kib", "retire_ms", "metrics", "storm_pps", "loop_detect", "readers", "no_pin", "reader_nice"])]
    pub config: Option<PathBuf>,
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
    /// How ports receive: `mmsg` (recvmmsg with PACKET_AUXDATA, woken per
    /// arrival: lowest latency) or `ring` (TPACKET_V3 ring, batches; a partly
    /// filled block waits up to --retire-ms).
    #[arg(long, value_enum, default_value_t = RxArg::Mmsg)]
    pub rx: RxArg,
    /// RX ring (--rx ring): blocks per port.
    #[arg(long, default_value_t = 8)]
    pub ring_blocks: usize,
    /// RX ring (--rx ring): block size in KiB (power of two, >= 128: a block holds a 64 KiB GSO frame).
    #[arg(long, default_value_t = 256)]
    pub block_kib: usize,
    /// RX ring (--rx ring): longest a partly filled block waits before the reader sees it, in ms.
    #[arg(long, default_value_t = 1)]
    pub retire_ms: u32,
    /// Reader threads per AF_PACKET port (`auto`: one per CPU this process may
    /// use, at most 8), in a PACKET_FANOUT group by CPU: reader i takes the
    /// frames that arrived on CPU i (mod N), so each sender's frames are
    /// forwarded on its own core.
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = parse_readers)]
    pub readers: Readers,
    /// Leave the readers unpinned (by default, with one reader per allowed CPU,
    /// reader i runs only on CPU i).
    #[arg(long)]
    pub no_pin: bool,
    /// Nice value of the reader threads, -20..=19: below a busy sender's 0, a
    /// reader sharing its core is not starved by it. Needs CAP_SYS_NICE (or
    /// the process already that nice); refused, the readers run at the
    /// process's own priority.
    #[arg(long, value_name = "NICE", default_value_t = DEFAULT_READER_NICE, allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub reader_nice: i32,
    /// Storm control: most broadcast, multicast and unknown-unicast frames per
    /// second each port may flood (each class); 0 turns it off.
    #[arg(long, default_value_t = 10_000, value_name = "PPS")]
    pub storm_pps: u32,
    /// Loop detection by probe frames: `on-flap` (default) probes only while
    /// stations flap between ports, `always` every second, `off` never.
    #[arg(long, value_enum, default_value_t = LoopMode::OnFlap)]
    pub loop_detect: LoopMode,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9435).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Log filter (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The readers' default nice value (docs/benchmarks.md: a reader at 0 on a
/// core with a busy sender gets half of it and loses most frames).
pub const DEFAULT_READER_NICE: i32 = -10;

/// `--readers auto` gives a port one reader per CPU up to this many: on a
/// large node, ports × CPUs threads (each with its receive buffers) would
/// cost more than they bring.
pub const AUTO_READERS_MAX: usize = 8;

/// `--readers`: a count, or one per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    Auto,
    Count(u16),
}

impl Readers {
    /// How many readers a port gets.
    pub fn count(self) -> usize {
        match self {
            Readers::Count(n) => usize::from(n),
            Readers::Auto => allowed_cpus().len().clamp(1, AUTO_READERS_MAX),
        }
    }
}

/// Parses `--readers` and `readers_per_port`: `auto` or 1..=64.
pub fn parse_readers(s: &str) -> Result<Readers, String> {
    if s == "auto" {
        return Ok(Readers::Auto);
    }
    match s.parse::<u16>() {
        Ok(n) if (1..=ub_port::afpacket::MAX_FANOUT as u16).contains(&n) => Ok(Readers::Count(n)),
        _ => Err(format!("'{s}' is not `auto` or a count from 1 to {}", ub_port::afpacket::MAX_FANOUT)),
    }
}

/// `--rx`, see `ub_port::afpacket::RxMode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RxArg {
    Ring,
    Mmsg,
}

impl From<RxArg> for ub_port::afpacket::RxMode {
    fn from(m: RxArg) -> Self {
        match m {
            RxArg::Ring => ub_port::afpacket::RxMode::Ring,
            RxArg::Mmsg => ub_port::afpacket::RxMode::Mmsg,
        }
    }
}

/// `--loop-detect`, see `ub_datapath::LoopDetect`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopMode {
    Off,
    OnFlap,
    Always,
}

impl From<LoopMode> for LoopDetect {
    fn from(m: LoopMode) -> LoopDetect {
        match m {
            LoopMode::Off => LoopDetect::Off,
            LoopMode::OnFlap => LoopDetect::OnFlap,
            LoopMode::Always => LoopDetect::Always,
        }
    }
}

impl RunArgs {
    fn settings(&self) -> Result<Settings, String> {
        if let Some(path) = &self.config {
            let mut s = Settings::load(path).map_err(|e| e.join("; "))?;
            s.log_level.clone_from(&self.log_level);
            return Ok(s);
        }
        if self.ports.is_empty() && self.taps.is_empty() {
            return Err("no ports: give at least one --port IF or --tap NAME (or --config FILE)".into());
        }
        let mut seen: Vec<&String> = Vec::new();
        for name in self.ports.iter().chain(&self.taps) {
            ub_port::validate_ifname(name).map_err(|e| e.to_string())?;
            if seen.contains(&name) {
                return Err(format!("'{name}' is given twice"));
            }
            seen.push(name);
        }
        let ring = RxConfig {
            mode: self.rx.into(),
            block_kib: self.block_kib,
            blocks: self.ring_blocks,
            retire_ms: self.retire_ms,
            fanout: self.readers.count(),
        };
        ring.validate()?;
        Ok(Settings {
            socket: self.socket.clone(),
            netns: self.netns.clone(),
            metrics: self.metrics,
            log_level: self.log_level.clone(),
            fdb: FdbConfig {
                ageing_ms: self.ageing_secs * 1000,
                max_entries: self.fdb_max as usize,
                max_per_port: self.fdb_max_per_port,
                ..FdbConfig::default()
            },
            loop_detect: self.loop_detect.into(),
            storm: StormLimits {
                broadcast_pps: self.storm_pps,
                multicast_pps: self.storm_pps,
                unknown_unicast_pps: self.storm_pps,
            },
            ring,
            threads: ThreadConfig { pin: !self.no_pin, nice: Some(self.reader_nice) },
            ports: self.ports.clone(),
            taps: self.taps.clone(),
            statics: Vec::new(),
        })
    }
}

/// Link events the daemon has followed.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub down: AtomicU64,
    pub up: AtomicU64,
    pub gone: AtomicU64,
    pub reattached: AtomicU64,
}

/// A port opened but not yet forwarding: its name, backend, receive halves
/// (one per reader), transmit half, and whether its link is up.
type Opened = (String, PortKind, Vec<Box<dyn ub_port::PortRx>>, Box<dyn ub_port::PortTx>, bool);

/// The running switch and everything that changes it at run time.
#[derive(Debug)]
pub struct Daemon {
    pub sw: Arc<Switch>,
    ring: RxConfig,
    threads: ThreadConfig,
    /// The reader threads of each port (several with --readers).
    readers: Mutex<HashMap<String, Vec<ReaderHandle>>>,
    /// What the configuration asks for: re-attached when a link comes back.
    pub settings: Mutex<Settings>,
    config_path: Option<PathBuf>,
    pub links: LinkCounters,
    pub mirrors: Mutex<HashMap<String, Arc<mirror::PcapSink>>>,
}

impl Daemon {
    /// A daemon with no port attached yet, for `settings`.
    pub fn new(settings: Settings, config_path: Option<PathBuf>) -> Arc<Daemon> {
        let sw = Arc::new(Switch::new(settings.fdb));
        sw.set_storm_limits(settings.storm);
        sw.loop_guard.set_mode(settings.loop_detect);
        Arc::new(Daemon {
            sw,
            ring: settings.ring,
            threads: settings.threads,
            readers: Mutex::new(HashMap::new()),
            settings: Mutex::new(settings),
            config_path,
            links: LinkCounters::default(),
            mirrors: Mutex::new(HashMap::new()),
        })
    }

    /// Attaches `name` as an AF_PACKET port (or creates TAP `name`).
    pub fn attach(&self, name: &str, tap: bool) -> Result<(), String> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let gone = match self.sw.port_by_name(name) {
            Some(p) if p.state() != PortState::Gone => return Err(format!("port '{name}' is already attached")),
            other => other,
        };
        // Open first: if that fails, a `gone` port stays in the table, to be
        // re-attached on the interface's next appearance.
        let opened: Opened = if tap {
            let (rx, tx, actual) = ub_port::tap::open(name).map_err(|e| e.to_string())?;
            // A new TAP is down until whoever uses it brings it up (`ip link set
            // NAME up`); the link watcher then marks the port up.
            (actual, PortKind::Tap, vec![Box::new(rx)], Box::new(tx), false)
        } else {
            let (rx, tx, info) = ub_port::afpacket::open(name, self.ring).map_err(|e| e.to_string())?;
            if rx.len() < self.ring.fanout {
                tracing::warn!(port = %name, readers = rx.len(), asked = self.ring.fanout,
                    "this kernel cannot make a PACKET_FANOUT group ignore outgoing frames (Linux 6.2+): one reader per port");
            }
            let up = info.admin_up && info.oper_up;
            if !up {
                tracing::warn!(port = %name, "link is down; the port forwards once it is up (`ip link set {name} up`, and its peer)");
            }
            let rx = rx.into_iter().map(|r| Box::new(r) as Box<dyn ub_port::PortRx>).collect();
            (name.to_string(), PortKind::AfPacket, rx, Box::new(tx), up)
        };
        if let Some(p) = gone {
            readers.remove(name);
            self.sw.remove_port(p.id);
        }
        let (actual, kind, rx, tx, up) = opened;
        let id = self.sw.add_port(&actual, kind, tx).map_err(|e| e.to_string())?;
        if !up && let Some(p) = self.sw.port(id) {
            p.set_state(PortState::Down);
        }
        let n = rx.len();
        let many = n > 1;
        // Pinned only when each reader has a CPU's frames of its own (one reader per
        // allowed CPU); otherwise a pinned reader would wait for a busy CPU while
        // others idle, and a single reader per port would put every port on one CPU.
        let cpus = allowed_cpus();
        let pin = self.threads.pin && many && n == cpus.len();
        let mut started = Vec::with_capacity(n);
        for (i, rx) in rx.into_iter().enumerate() {
            let at = Placement {
                cpu: pin.then(|| reader_cpu_in(&cpus, i, n)).flatten(),
                nice: self.threads.nice,
                index: many.then_some(i),
            };
            match spawn_reader_at(self.sw.clone(), id, rx, at) {
                Ok(r) => started.push(r),
                Err(e) => {
                    drop(started);
                    self.sw.remove_port(id);
                    return Err(format!("starting a reader of {name}: {e}"));
                }
            }
        }
        readers.insert(actual, started);
        tracing::info!(port = %name, id, tap, "port attached");
        Ok(())
    }

    /// Detaches port `name`: its reader is stopped and joined, its FDB
    /// entries flushed, mirrors from and to it ended. Other ports forward on.
    pub fn detach(&self, name: &str) -> Result<(), String> {
        let port =
            self.sw.port_by_name(name).ok_or_else(|| format!("no port named '{name}' (see `userbridge port list`)"))?;
        let reader = self.readers.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        for r in reader.into_iter().flatten() {
            r.stop();
        }
        self.sw.remove_port(port.id);
        self.mirrors.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        tracing::info!(port = %name, "port detached");
        Ok(())
    }

    fn add_static(&self, st: &StaticEntry) -> Result<(), String> {
        let port = self.sw.port_by_name(&st.port).ok_or_else(|| format!("no port named '{}'", st.port))?;
        self.sw.fdb.add_static(st.vlan, st.mac, port.id).map_err(|e| format!("{e:?}"))
    }

    /// Brings the switch to `new`: attaches added ports, detaches removed
    /// ones (unchanged ports are not touched), applies FDB settings and
    /// statics. Returns what it did, one line each.
    pub fn apply(&self, new: Settings) -> Vec<String> {
        let mut done = Vec::new();
        let old = self.settings.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (list, tap) in [(&new.ports, false), (&new.taps, true)] {
            for name in list.iter().filter(|n| !old.ports.contains(n) && !old.taps.contains(n)) {
                match self.attach(name, tap) {
                    Ok(()) => done.push(format!("added {name}")),
                    Err(e) => done.push(format!("could not add {name}: {e}")),
                }
            }
        }
        for name in old.ports.iter().chain(&old.taps).filter(|n| !new.ports.contains(n) && !new.taps.contains(n)) {
            match self.detach(name) {
                Ok(()) => done.push(format!("removed {name}")),
                Err(e) => done.push(format!("could not remove {name}: {e}")),
            }
        }
        if new.fdb.ageing_ms != old.fdb.ageing_ms {
            self.sw.fdb.set_ageing_ms(new.fdb.ageing_ms);
            done.push(format!("ageing {} s", new.fdb.ageing_ms / 1000));
        }
        if new.loop_detect != old.loop_detect {
            self.sw.loop_guard.set_mode(new.loop_detect);
            done.push(format!("loop detection {:?}", new.loop_detect));
        }
        if new.storm != old.storm {
            self.sw.set_storm_limits(new.storm);
            done.push(format!("storm limits {:?}", new.storm));
        }
        if new.fdb.max_entries != old.fdb.max_entries || new.fdb.max_per_port != old.fdb.max_per_port {
            done.push("fdb limits change only at restart".into());
        }
        for st in old.statics.iter().filter(|s| !new.statics.contains(s)) {
            self.sw.fdb.remove(st.vlan, st.mac);
            done.push(format!("static {} removed", st.mac));
        }
        for st in new.statics.iter().filter(|s| !old.statics.contains(s)) {
            match self.add_static(st) {
                Ok(()) => done.push(format!("static {} dev {} added", st.mac, st.port)),
                Err(e) => done.push(format!("static {}: {e}", st.mac)),
            }
        }
        if new.socket != old.socket
            || new.metrics != old.metrics
            || new.netns != old.netns
            || new.ring != old.ring
            || new.threads != old.threads
        {
            done.push("socket, metrics, netns, [ring] and [threads] settings change only at restart".into());
        }
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = Settings {
            socket: old.socket,
            metrics: old.metrics,
            netns: old.netns,
            ring: old.ring,
            threads: old.threads,
            ..new
        };
        done
    }

    /// SIGHUP: re-reads the configuration file and applies the difference.
    pub fn reload(&self) {
        let Some(path) = &self.config_path else {
            tracing::warn!("SIGHUP ignored: the daemon was not started with --config");
            return;
        };
        match Settings::load(path) {
            Ok(new) => {
                let done = self.apply(new);
                tracing::info!(config = %path.display(), changes = ?done, "configuration reloaded");
            }
            Err(errs) => tracing::error!(config = %path.display(), errors = ?errs, "configuration not reloaded"),
        }
    }

    /// Re-attaches a configured port whose interface has come back: only a
    /// port that is still in the table as `gone` (a port detached on purpose
    /// is not in the table and stays detached).
    pub fn reattach_if_wanted(&self, name: &str) {
        let wanted = {
            let s = self.settings.lock().unwrap_or_else(|e| e.into_inner());
            s.ports.iter().any(|p| p == name)
        };
        let gone = self.sw.port_by_name(name).is_some_and(|p| p.state() == PortState::Gone);
        if wanted && gone {
            match self.attach(name, false) {
                Ok(()) => {
                    self.links.reattached.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(port = %name, "interface is back; port re-attached");
                }
                Err(e) => tracing::warn!(port = %name, error = %e, "interface is back but could not be re-attached"),
            }
        }
    }

    fn stop_all(&self) {
        let readers: Vec<ReaderHandle> =
            self.readers.lock().unwrap_or_else(|e| e.into_inner()).drain().flat_map(|(_, r)| r).collect();
        for r in readers {
            r.stop();
        }
    }
}

/// Logs station moves and flaps at most once per ager pass (≤ 1/s), never per frame.
#[derive(Default)]
struct FdbEventLog {
    moved: u64,
    flaps: u64,
    blocked: u64,
}

impl FdbEventLog {
    fn log_changes(&mut self, sw: &Switch) {
        let fdb = &sw.fdb;
        let moved = fdb.stats.moved.load(Ordering::Relaxed);
        let flaps = fdb.stats.flaps.load(Ordering::Relaxed);
        if moved > self.moved {
            tracing::info!(moves = moved - self.moved, "stations moved between ports");
        }
        if flaps > self.flaps {
            let (vlan, mac) = ub_fdb::unkey(fdb.stats.last_flap.load(Ordering::Relaxed));
            tracing::warn!(flapping = flaps - self.flaps, last = %mac, vlan, "stations flapping between ports (a loop?): pinned, their copies dropped");
        }
        let loops = sw.loop_guard.blocked.load(Ordering::Relaxed);
        if loops > self.blocked {
            let names: Vec<String> = sw
                .ports()
                .iter()
                .flatten()
                .filter(|p| p.state() == PortState::Blocked)
                .map(|p| p.name.clone())
                .collect();
            tracing::warn!(blocked = ?names, "loop found (our probe came back): ports blocked until it is gone");
        }
        (self.moved, self.flaps, self.blocked) = (moved, flaps, loops);
    }
}

/// Capabilities the daemon needs, with why; checked before anything is opened
/// so a missing one is named instead of surfacing as EPERM on some socket.
fn check_capabilities(s: &Settings) -> Result<(), String> {
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
            return Err(format!(
                "missing capability {name} (needed for {why}): run as root, or grant it (e.g. systemd AmbientCapabilities={name})"
            ));
        }
    }
    Ok(())
}

pub fn run(a: RunArgs) -> Result<(), String> {
    let settings = a.settings()?;
    check_capabilities(&settings)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log_level))
        .map_err(|e| format!("log level '{}': {e}", settings.log_level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();

    // Metrics are served in the namespace the daemon was started in.
    let metrics_listener = settings.metrics.map(metrics::Server::bind).transpose()?;
    if let Some(ns) = &settings.netns {
        // Before any thread exists: every thread started later inherits it.
        ub_netlink::NetNs::open(ns)
            .and_then(|n| n.enter())
            .map_err(|e| format!("{e} (list namespaces with `ip netns`)"))?;
    }
    // A second daemon on the same socket stops here, before it touches any interface.
    control::Server::check_free(&settings.socket)?;

    let d = Daemon::new(settings.clone(), a.config.clone());
    // Every port opens, or the start fails with the reason.
    let result = (|| {
        for name in &settings.ports {
            d.attach(name, false)?;
        }
        for name in &settings.taps {
            d.attach(name, true)?;
        }
        for st in &settings.statics {
            d.add_static(st).map_err(|e| format!("static {}: {e}", st.mac))?;
        }
        Ok::<_, String>(())
    })();
    if let Err(e) = result {
        d.stop_all();
        return Err(e);
    }
    let links = links::Watcher::start(d.clone())?;
    let metrics = metrics_listener.map(|l| metrics::Server::start(l, d.clone())).transpose()?;
    // Only now that every port forwards does the socket accept clients: a
    // client that connects sees a ready switch.
    let server = control::Server::start(&settings.socket, d.clone())?;

    // Dropping `ager_stop` wakes and ends the ager.
    let (ager_stop, ager_rx) = std::sync::mpsc::channel::<()>();
    let ager = std::thread::Builder::new()
        .name("ager".into())
        .spawn({
            let sw = d.sw.clone();
            let mut events = FdbEventLog::default();
            move || {
                // A pass every 100 ms to 1 s: a tenth of the ageing time, within those
                // bounds; the loop guard's tick about once a second.
                let mut last_tick = 0u64;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    ager_rx.recv_timeout(Duration::from_millis((sw.fdb.ageing_ms() / 10).clamp(100, 1000)))
                {
                    let now = sw.now_ms();
                    if now.saturating_sub(last_tick) >= 1000 {
                        sw.loop_tick(now);
                        last_tick = now;
                    }
                    let n = sw.fdb.age(sw.now_ms());
                    if n > 0 {
                        tracing::debug!(aged = n, "fdb entries aged out");
                    }
                    events.log_changes(&sw);
                }
            }
        })
        .map_err(|e| format!("starting the ager: {e}"))?;

    tracing::info!(socket = %settings.socket.display(), ports = d.sw.ports().iter().flatten().count(), "userbridge running");
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("installing signal handlers: {e}"))?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            d.reload();
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        break;
    }
    drop(ager_stop);
    let _ = ager.join();
    drop(server);
    drop(metrics);
    drop(links);
    d.stop_all();
    Ok(())
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    rustix::thread::sched_getaffinity(None)
        .map(|set| (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
        .unwrap_or_default()
}

/// The CPU for reader `i` of `n`, among the allowed `cpus`: PACKET_FANOUT by
/// CPU hands the frames that arrived on CPU c to reader c mod n, so reader i
/// goes to an allowed CPU with that residue (CPU i when all CPUs are
/// allowed), else the i-th one.
fn reader_cpu_in(cpus: &[usize], i: usize, n: usize) -> Option<usize> {
    cpus.iter().copied().find(|c| c % n == i).or_else(|| cpus.get(i % cpus.len().max(1)).copied())
}

#[cfg(test)]
mod tests {
    use super::reader_cpu_in;

    #[test]
    fn readers_are_pinned_where_fanout_sends_their_frames() {
        // All of 0-3 allowed, four readers: reader i on CPU i.
        assert_eq!((0..4).map(|i| reader_cpu_in(&[0, 1, 2, 3], i, 4)).collect::<Vec<_>>(), [0, 1, 2, 3].map(Some));
        // taskset -c 2-7: six readers, reader i on the CPU c with c mod 6 == i.
        let cpus = [2, 3, 4, 5, 6, 7];
        let got: Vec<_> = (0..6).map(|i| reader_cpu_in(&cpus, i, 6).unwrap()).collect();
        assert_eq!(got, [6, 7, 2, 3, 4, 5]);
        // --readers 2 over CPUs 4 and 6 (both even): reader 0 on 4, reader 1 on the second CPU.
        assert_eq!(reader_cpu_in(&[4, 6], 0, 2), Some(4));
        assert_eq!(reader_cpu_in(&[4, 6], 1, 2), Some(6));
        assert_eq!(reader_cpu_in(&[], 0, 2), None);
    }
}
