use crate::counters::{CounterSnapshot, PortCounters};
use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use serde::Serialize;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use ub_fdb::{DefaultFdb, FdbConfig, MAX_PORTS, PortId};
use ub_port::PortTx;

/// Which backend a port uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    AfPacket,
    Tap,
    Mem,
}

/// A port's link state as the datapath sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Up = 0,
    /// Link down: frames to it are dropped (`port_down`); it resumes on up.
    Down = 1,
    /// Interface deleted: its reader has stopped and its FDB entries are flushed.
    Gone = 2,
    /// Part of a loop (our own probe came back on it): it forwards nothing
    /// until the loop is gone (see `loopguard`).
    Blocked = 3,
}

/// Where a mirrored port's frames are copied.
#[derive(Debug, Clone)]
pub enum MirrorTo {
    /// Sent out of another port as well.
    Port(PortId),
    /// Handed to a sink (a pcap writer) off the hot path.
    Sink(Arc<dyn MirrorSink>),
}

/// Takes copies of mirrored frames. `offer` is called on the hot path: it
/// must not block (copy and queue, or drop and count).
pub trait MirrorSink: Send + Sync + std::fmt::Debug {
    fn offer(&self, frame: &ub_port::TxFrame<'_>);
}

/// One switch port: its transmit half, counters and state.
pub struct Port {
    pub id: PortId,
    pub name: String,
    pub kind: PortKind,
    pub tx: Box<dyn ub_port::PortTx>,
    pub counters: PortCounters,
    state: AtomicU8,
    /// Copies of what this port receives and sends go here too.
    pub(crate) mirror: ArcSwapOption<MirrorTo>,
    /// Storm control of what this port floods: broadcast, multicast, unknown unicast.
    pub(crate) storm: [crate::forward::StormGate; 3],
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").field("id", &self.id).field("name", &self.name).field("kind", &self.kind).finish()
    }
}

impl Port {
    #[inline]
    pub fn state(&self) -> PortState {
        match self.state.load(Relaxed) {
            0 => PortState::Up,
            1 => PortState::Down,
            3 => PortState::Blocked,
            _ => PortState::Gone,
        }
    }
    /// Sets the link-derived state. A blocked port stays blocked when its link
    /// is up (only the loop guard unblocks it); down and gone always apply.
    pub fn set_state(&self, s: PortState) {
        if s == PortState::Up && self.state() == PortState::Blocked {
            return;
        }
        self.state.store(s as u8, Relaxed)
    }

    pub(crate) fn set_blocked(&self, blocked: bool) {
        let (from, to) =
            if blocked { (PortState::Up, PortState::Blocked) } else { (PortState::Blocked, PortState::Up) };
        let _ = self.state.compare_exchange(from as u8, to as u8, Relaxed, Relaxed);
    }
}

/// A port as `port list` and `stats` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PortSnapshot {
    pub id: PortId,
    pub name: String,
    pub kind: PortKind,
    pub state: PortState,
    pub mtu: u32,
    pub fdb_learned: u32,
    pub counters: CounterSnapshot,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SwitchError {
    DuplicatePort(String),
    TooManyPorts,
}

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchError::DuplicatePort(n) => {
                write!(f, "port '{n}' is already attached (each interface may be given once)")
            }
            SwitchError::TooManyPorts => write!(f, "too many ports (at most {MAX_PORTS})"),
        }
    }
}

impl std::error::Error for SwitchError {}

type PortTable = Vec<Option<Arc<Port>>>;

/// Storm control: the most frames per second each port may flood, per class;
/// 0 means no limit. Each port's reader keeps its own token buckets (burst:
/// a tenth of a second's worth), so enforcing this takes no shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StormLimits {
    pub broadcast_pps: u32,
    pub multicast_pps: u32,
    pub unknown_unicast_pps: u32,
}

impl Default for StormLimits {
    fn default() -> Self {
        StormLimits { broadcast_pps: 10_000, multicast_pps: 10_000, unknown_unicast_pps: 10_000 }
    }
}

/// The shared state of one switch: the FDB and the port table.
#[derive(Debug)]
pub struct Switch {
    pub fdb: DefaultFdb,
    ports: ArcSwap<PortTable>,
    /// Serialises control-plane changes to the table; readers never take it.
    writer: Mutex<()>,
    /// Loop detection by probe frames.
    pub loop_guard: crate::loopguard::LoopGuard,
    /// Ports with a mirror set: when 0 the datapath skips mirroring entirely.
    pub(crate) mirrors: AtomicUsize,
    /// Storm limits, packed (broadcast, multicast, unknown unicast) for a
    /// lock-free read per batch.
    storm: [AtomicU32; 3],
    epoch: Instant,
}

impl Switch {
    pub fn new(fdb: FdbConfig) -> Switch {
        Switch {
            fdb: DefaultFdb::new(fdb),
            ports: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
            loop_guard: crate::loopguard::LoopGuard::new(),
            mirrors: AtomicUsize::new(0),
            storm: {
                let d = StormLimits::default();
                [
                    AtomicU32::new(d.broadcast_pps),
                    AtomicU32::new(d.multicast_pps),
                    AtomicU32::new(d.unknown_unicast_pps),
                ]
            },
            epoch: Instant::now(),
        }
    }

    pub fn storm_limits(&self) -> StormLimits {
        StormLimits {
            broadcast_pps: self.storm[0].load(Relaxed),
            multicast_pps: self.storm[1].load(Relaxed),
            unknown_unicast_pps: self.storm[2].load(Relaxed),
        }
    }

    /// Sets the storm limits of every port, effective at each reader's next batch.
    pub fn set_storm_limits(&self, l: StormLimits) {
        self.storm[0].store(l.broadcast_pps, Relaxed);
        self.storm[1].store(l.multicast_pps, Relaxed);
        self.storm[2].store(l.unknown_unicast_pps, Relaxed);
    }

    /// Milliseconds since the switch started: the datapath's clock.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The current port table (a snapshot: cheap, lock-free).
    #[inline]
    pub fn ports(&self) -> Guard<Arc<PortTable>> {
        self.ports.load()
    }

    pub fn port(&self, id: PortId) -> Option<Arc<Port>> {
        self.ports.load().get(id as usize).cloned().flatten()
    }

    pub fn port_by_name(&self, name: &str) -> Option<Arc<Port>> {
        self.ports.load().iter().flatten().find(|p| p.name == name).cloned()
    }

    /// Adds a port and returns its id (the lowest free one).
    pub fn add_port(&self, name: &str, kind: PortKind, tx: Box<dyn PortTx>) -> Result<PortId, SwitchError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut t: PortTable = (**self.ports.load()).clone();
        if t.iter().flatten().any(|p| p.name == name) {
            return Err(SwitchError::DuplicatePort(name.to_string()));
        }
        let id = t.iter().position(Option::is_none).unwrap_or(t.len());
        if id >= MAX_PORTS {
            return Err(SwitchError::TooManyPorts);
        }
        if id == t.len() {
            t.push(None);
        }
        t[id] = Some(Arc::new(Port {
            id: id as PortId,
            name: name.to_string(),
            kind,
            tx,
            counters: PortCounters::default(),
            state: AtomicU8::new(PortState::Up as u8),
            mirror: ArcSwapOption::empty(),
            storm: Default::default(),
        }));
        self.ports.store(Arc::new(t));
        Ok(id as PortId)
    }

    /// Marks a port gone (its reader has stopped) and flushes its entries.
    pub fn port_gone(&self, id: PortId) {
        if let Some(p) = self.port(id) {
            p.set_state(PortState::Gone);
        }
        self.fdb.flush_port(id, true);
    }

    /// Mirrors port `from` (what it receives and sends) to `to`, or stops
    /// mirroring it with `None`. Returns the previous target.
    pub fn set_mirror(&self, from: PortId, to: Option<MirrorTo>) -> Option<Arc<MirrorTo>> {
        let port = self.port(from)?;
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let adding = to.is_some();
        let old = port.mirror.swap(to.map(Arc::new));
        match (old.is_some(), adding) {
            (false, true) => drop(self.mirrors.fetch_add(1, Relaxed)),
            (true, false) => drop(self.mirrors.fetch_sub(1, Relaxed)),
            _ => {}
        }
        old
    }

    /// The mirror set on each port: (from, target).
    pub fn mirrors(&self) -> Vec<(PortId, Arc<MirrorTo>)> {
        self.ports.load().iter().flatten().filter_map(|p| p.mirror.load_full().map(|m| (p.id, m))).collect()
    }

    /// Removes a port from the table and flushes its FDB entries. Mirrors
    /// from it, and to it, end.
    pub fn remove_port(&self, id: PortId) -> Option<Arc<Port>> {
        let old = self.port(id)?;
        old.set_state(PortState::Gone);
        self.set_mirror(id, None);
        for (from, m) in self.mirrors() {
            if matches!(*m, MirrorTo::Port(to) if to == id) {
                self.set_mirror(from, None);
            }
        }
        {
            let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let mut t: PortTable = (**self.ports.load()).clone();
            t[id as usize] = None;
            self.ports.store(Arc::new(t));
        }
        self.fdb.flush_port(id, true);
        Some(old)
    }

    pub fn snapshot(&self) -> Vec<PortSnapshot> {
        self.ports
            .load()
            .iter()
            .flatten()
            .map(|p| PortSnapshot {
                id: p.id,
                name: p.name.clone(),
                kind: p.kind,
                state: p.state(),
                mtu: p.tx.mtu(),
                fdb_learned: self.fdb.port_learned(p.id),
                counters: p.counters.snapshot(),
            })
            .collect()
    }
}
