//! The shared state of one switch: the FDB, the port table (with each
//! port's policy), the loop guard and the storm limits. Readers load the
//! table once per batch and never take a lock; control-plane changes are
//! serialised by a mutex readers never see, and replace the table whole.

use crate::loopguard::LoopGuard;
use crate::neigh::NeighTable;
use crate::policy::Policy;
use crate::port::{MirrorTo, Port, PortSnapshot, PortTable, Slot};
use crate::storm::StormLimits;
use arc_swap::{ArcSwap, Guard};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use ub_fdb::{DefaultFdb, FdbConfig, MAX_PORTS, PortId};
use ub_port::PortTx;
use ub_proto::{Backend, PortPolicy, PortState};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    #[error("port '{0}' is already attached (each interface may be given once)")]
    DuplicatePort(String),
    #[error("too many ports (at most {MAX_PORTS})")]
    TooManyPorts,
    #[error("no port with id {0}")]
    NoSuchPort(PortId),
    #[error(transparent)]
    BadPolicy(#[from] ub_proto::PolicyError),
}

/// The switch-wide counts and settings `stats` shows, read at one moment.
#[derive(Debug, Clone)]
pub struct SwitchStats {
    pub ports: Vec<PortSnapshot>,
    pub fdb_entries: usize,
    pub fdb_learned: usize,
    pub ageing_ms: u64,
    pub fdb_events: [(&'static str, u64); 7],
    pub storm: StormLimits,
    pub loop_events: [(&'static str, u64); 3],
}

/// The shared state of one switch.
#[derive(Debug)]
pub struct Switch {
    pub fdb: DefaultFdb,
    ports: ArcSwap<PortTable>,
    /// Serialises control-plane changes to the table; readers never take it.
    writer: Mutex<()>,
    /// Loop detection by probe frames.
    pub loop_guard: LoopGuard,
    /// Ports with a mirror set: when 0 the datapath skips mirroring entirely.
    pub(crate) mirrors: AtomicUsize,
    /// The port (id + 1; 0 for none) that gets a copy of every frame, as a
    /// kernel bridge's own device does while it is promiscuous (tcpdump on it).
    promisc: AtomicU32,
    /// The netfilter port (id + 1; 0 for none): the way to the kernel
    /// bridge whose netfilter hooks judge IP between stations
    /// (docs/architecture.md, "Netfilter"), and whether it is taken.
    netfilter: AtomicU32,
    netfilter_on: AtomicBool,
    /// Storm limits, packed (broadcast, multicast, unknown unicast) for a
    /// lock-free read per batch.
    storm: [AtomicU32; 3],
    /// VLAN filtering (`vlan_filtering 1`): ports' memberships apply.
    vlan_filtering: AtomicBool,
    /// Some port has `neigh_suppress`: ARP frames go through the rules.
    neigh_on: AtomicBool,
    /// What ARP suppression answers from.
    pub neigh: NeighTable,
    /// Reader helper threads running (reader.rs), at most one per port.
    helpers: AtomicUsize,
    epoch: Instant,
}

/// Where the datapath's clock starts: the longest ageing time, so that
/// `now - age` stays above zero for any entry that has not aged out.
pub const HEAD_START_MS: u64 = ub_proto::settings::AGEING_SECS.max * 1000;

impl Switch {
    pub fn new(fdb: FdbConfig) -> Switch {
        let d = StormLimits::default();
        Switch {
            fdb: DefaultFdb::new(fdb),
            ports: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
            loop_guard: LoopGuard::new(),
            mirrors: AtomicUsize::new(0),
            promisc: AtomicU32::new(0),
            netfilter: AtomicU32::new(0),
            netfilter_on: AtomicBool::new(false),
            storm: [
                AtomicU32::new(d.broadcast_pps),
                AtomicU32::new(d.multicast_pps),
                AtomicU32::new(d.unknown_unicast_pps),
            ],
            vlan_filtering: AtomicBool::new(false),
            neigh_on: AtomicBool::new(false),
            neigh: NeighTable::default(),
            helpers: AtomicUsize::new(0),
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

    /// Whether the switch filters VLANs: one relaxed load, once per batch.
    #[inline]
    pub fn vlan_filtering(&self) -> bool {
        self.vlan_filtering.load(Relaxed)
    }

    /// Turns VLAN filtering on or off. Learned entries are forgotten (they
    /// were learned in the other mode's VLANs); statics stay. Returns
    /// whether it changed.
    pub fn set_vlan_filtering(&self, on: bool) -> bool {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let changed = self.vlan_filtering.swap(on, Relaxed) != on;
        if changed {
            self.fdb.flush_all(false);
        }
        changed
    }

    /// Whether some port has `neigh_suppress` on (once per batch).
    #[inline]
    pub fn neigh_suppressing(&self) -> bool {
        self.neigh_on.load(Relaxed)
    }

    /// Sets the port that sees every frame the switch forwards (the host
    /// port while its interface is promiscuous), or none.
    pub fn set_promisc(&self, port: Option<PortId>) {
        self.promisc.store(port.map_or(0, |p| u32::from(p) + 1), Relaxed);
    }

    /// The port that sees every frame, if any: one relaxed load, once per batch.
    #[inline]
    pub fn promisc(&self) -> Option<PortId> {
        match self.promisc.load(Relaxed) {
            0 => None,
            p => PortId::try_from(p - 1).ok(),
        }
    }

    /// Sets the netfilter port (or none) and whether IP between stations
    /// goes through it (otherwise: the direct path).
    pub fn set_netfilter(&self, port: Option<PortId>, on: bool) {
        self.netfilter.store(port.map_or(0, |p| u32::from(p) + 1), Relaxed);
        self.netfilter_on.store(on && port.is_some(), Relaxed);
    }

    /// The netfilter port, taken or not.
    #[inline]
    pub fn netfilter_port(&self) -> Option<PortId> {
        match self.netfilter.load(Relaxed) {
            0 => None,
            p => PortId::try_from(p - 1).ok(),
        }
    }

    /// The netfilter port, if frames go through it: two relaxed loads per batch.
    #[inline]
    pub fn netfilter(&self) -> Option<PortId> {
        if self.netfilter_on.load(Relaxed) { self.netfilter_port() } else { None }
    }

    /// The datapath's clock, in milliseconds: [`HEAD_START_MS`] at the
    /// switch's start, so that an entry handed over by a takeover keeps its
    /// age (up to the longest ageing time) in a switch just started.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(HEAD_START_MS)
    }

    /// The current port table (a snapshot: cheap, lock-free).
    #[inline]
    pub fn ports(&self) -> Guard<Arc<PortTable>> {
        self.ports.load()
    }

    pub fn port(&self, id: PortId) -> Option<Arc<Port>> {
        self.ports.load().get(usize::from(id)).cloned().flatten().map(|s| s.port)
    }

    pub fn port_by_name(&self, name: &str) -> Option<Arc<Port>> {
        self.ports.load().iter().flatten().find(|p| p.name == name).map(|s| s.port.clone())
    }

    /// The policy port `id` runs with.
    pub fn policy(&self, id: PortId) -> Option<Arc<Policy>> {
        self.ports.load().get(usize::from(id)).cloned().flatten().map(|s| s.policy)
    }

    fn change(&self, f: impl FnOnce(&mut PortTable) -> Result<PortId, SwitchError>) -> Result<PortId, SwitchError> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut t: PortTable = (**self.ports.load()).clone();
        let id = f(&mut t)?;
        // What the port was told (its stations' addresses), for ARP suppression.
        match t.get(usize::from(id)).and_then(Option::as_ref) {
            Some(slot) => {
                let v4: Vec<std::net::Ipv4Addr> = slot
                    .policy
                    .spec
                    .ips
                    .iter()
                    .filter_map(|ip| match ip {
                        std::net::IpAddr::V4(a) => Some(*a),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                self.neigh.tell(id, slot.policy.spec.macs.first().copied(), &v4, slot.kind == Backend::Host);
            }
            None => self.neigh.forget_port(id),
        }
        self.neigh_on.store(t.iter().flatten().any(|s| s.flags.neigh_suppress()), Relaxed);
        self.ports.store(Arc::new(t));
        Ok(id)
    }

    /// Adds a port with the default policy and returns its id (the lowest free one).
    pub fn add_port(&self, name: &str, kind: Backend, tx: Box<dyn PortTx>) -> Result<PortId, SwitchError> {
        self.add_port_with(name, kind, tx, Arc::new(Policy::default()))
    }

    /// Adds a port with `policy`.
    pub fn add_port_with(
        &self,
        name: &str,
        kind: Backend,
        tx: Box<dyn PortTx>,
        policy: Arc<Policy>,
    ) -> Result<PortId, SwitchError> {
        self.change(|t| {
            if t.iter().flatten().any(|p| p.name == name) {
                return Err(SwitchError::DuplicatePort(name.to_string()));
            }
            let idx = t.iter().position(Option::is_none).unwrap_or(t.len());
            let id = PortId::try_from(idx).ok().filter(|_| idx < MAX_PORTS).ok_or(SwitchError::TooManyPorts)?;
            if idx == t.len() {
                t.push(None);
            }
            t[idx] = Some(Slot::new(Arc::new(Port::new(id, name, kind, tx)), policy));
            Ok(id)
        })
    }

    /// Gives port `id` a new policy, effective at each reader's next batch
    /// (all of it at once: a batch sees the old policy or the new one).
    pub fn set_policy(&self, id: PortId, spec: PortPolicy) -> Result<(), SwitchError> {
        let policy = Arc::new(Policy::compile(spec)?);
        self.change(|t| {
            let slot = t.get_mut(usize::from(id)).and_then(Option::as_mut).ok_or(SwitchError::NoSuchPort(id))?;
            *slot = Slot::new(slot.port.clone(), policy);
            Ok(id)
        })
        .map(drop)
    }

    /// Reserves a reader helper thread, if the switch runs fewer helpers
    /// than it has ports (so a node runs at most about two reader threads
    /// per port, however many CPUs it has).
    pub(crate) fn take_helper(&self) -> bool {
        let max = self.ports.load().iter().flatten().count();
        self.helpers.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Gives back a helper [`Switch::take_helper`] reserved.
    pub(crate) fn return_helper(&self) {
        self.helpers.fetch_sub(1, Relaxed);
    }

    /// Reader helper threads running now.
    pub fn reader_helpers(&self) -> usize {
        self.helpers.load(Relaxed)
    }

    /// Marks a port gone (its readers have stopped) and flushes its entries.
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

    /// Removes a port from the table and flushes its FDB entries, statics
    /// included. Mirrors from it, and to it, end.
    pub fn remove_port(&self, id: PortId) -> Option<Arc<Port>> {
        let old = self.port(id)?;
        old.set_state(PortState::Gone);
        self.set_mirror(id, None);
        for (from, m) in self.mirrors() {
            if matches!(*m, MirrorTo::Port(to) if to == id) {
                self.set_mirror(from, None);
            }
        }
        let _ = self.change(|t| {
            t[usize::from(id)] = None;
            Ok(id)
        });
        if self.promisc() == Some(id) {
            self.set_promisc(None);
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
                policy: p.policy.clone(),
                counters: p.counters.snapshot(),
            })
            .collect()
    }

    /// Everything `stats` and `/metrics` show of the switch, read once.
    pub fn stats(&self) -> SwitchStats {
        SwitchStats {
            ports: self.snapshot(),
            fdb_entries: self.fdb.len(),
            fdb_learned: self.fdb.learned_len(),
            ageing_ms: self.fdb.ageing_ms(),
            fdb_events: self.fdb.stats.events(),
            storm: self.storm_limits(),
            loop_events: self.loop_guard.events(),
        }
    }

    /// Housekeeping of the loop guard, about once a second (see [`LoopGuard::tick`]).
    pub fn loop_tick(&self, now: u64) {
        self.loop_guard.tick(&self.ports(), &self.fdb, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_helpers_are_bounded_by_the_number_of_ports() {
        let sw = Switch::new(FdbConfig::default());
        assert!(!sw.take_helper(), "no port, no helper");
        for p in 0..2 {
            sw.add_port(&format!("m{p}"), Backend::Mem, Box::new(ub_port::mem::SinkTx::default())).unwrap();
        }
        assert!(sw.take_helper() && sw.take_helper());
        assert!(!sw.take_helper(), "two ports: two helpers at most");
        assert_eq!(sw.reader_helpers(), 2);
        sw.return_helper();
        assert!(sw.take_helper());
        assert!(!sw.take_helper());
    }
}
