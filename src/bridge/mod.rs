//! One bridge: an L2 domain of its own, as a kernel bridge is. Its switch
//! (FDB, port table and policies, VLANs, storm control, loop guard,
//! mirrors), the ports attached to it, its host port (`host.rs`) and its
//! ager pass (`ager.rs`). A frame never leaves the bridge it arrived on:
//! a port's readers forward through its own bridge's `Switch` only, so
//! nothing of one bridge is written by another's frames.
//!
//! Every port is described by a [`PortSpec`] and opened by the one factory
//! in `ub_port::open`. Its origin says who owns it: a reload reconciles only
//! the ports that came from the configuration; ports added at run time
//! belong to whoever added them. Which bridge a request means, and the
//! names shared by every bridge (a port is in one bridge), are
//! `crate::daemon`'s business.

mod ager;
mod error;
pub mod handover;
mod host;
pub mod netfilter;
mod reload;

pub use ager::FdbEventLog;
pub use error::BridgeError;
pub use reload::restart_only;

use crate::config::{BridgeSettings, HostSettings, StaticEntry, ThreadConfig, allowed_cpus};
use crate::lock;
use crate::mirror;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use ub_datapath::{Member, PortId, PortState, ReaderHandle, Restart, Switch, spawn_reader_at};
use ub_netlink::NetNs;
use ub_port::{Claim, OpenOptions};
use ub_proto::{Backend, BridgeAdd, IfName, Origin, PortPolicy, PortSpec};

/// What every bridge opens ports with: the daemon's receive settings,
/// reader threads and the namespace host ports live in.
#[derive(Debug, Clone)]
pub struct Opener {
    pub open: OpenOptions,
    pub threads: ThreadConfig,
    pub restart: Restart,
    /// The namespace the daemon started in, when it entered another
    /// (`--netns`): where host ports live.
    pub start_ns: Option<Arc<NetNs>>,
}

/// A port attached to a bridge: its spec, its readers, and the claim that
/// keeps any other userbridge off its interface.
#[derive(Debug)]
struct Attached {
    spec: PortSpec,
    id: PortId,
    reader: ReaderHandle,
    claim: Claim,
    quiet: Option<ub_port::Quiet>,
}

/// The ports, and whether the bridge is being deleted (then no port is
/// added: an attach that opened its port meanwhile closes it again).
#[derive(Debug, Default)]
struct Ports {
    attached: BTreeMap<IfName, Attached>,
    closed: bool,
}

/// One bridge and everything that changes it at run time.
#[derive(Debug)]
pub struct Bridge {
    pub name: IfName,
    /// From the configuration, or made at run time.
    pub origin: Origin,
    /// How a bridge made at run time was asked for: the state file records it.
    pub made: Option<BridgeAdd>,
    pub sw: Arc<Switch>,
    /// What it runs with now (its configured ports among them), for reloads.
    settings: Mutex<BridgeSettings>,
    /// Every attached port by name, `gone` ones included (a configured port
    /// whose interface comes back is re-attached from its spec).
    ports: Mutex<Ports>,
    pub mirrors: Mutex<HashMap<IfName, mirror::PcapMirror>>,
    /// Its host port, if it has one.
    pub host: Option<HostSettings>,
    start_ns: Option<Arc<NetNs>>,
    /// Addresses put on the host port at run time (`host_address`).
    host_extra: Mutex<Vec<ub_netlink::IpNet>>,
    /// Held through each `host_address` and `host_address_del`: each looks
    /// at the port's addresses and then changes them, and two CNI ADDs at
    /// once for one network would otherwise both find the gateway missing
    /// and the second fail with EEXIST.
    host_address_change: Mutex<()>,
    /// Its host port was made by this daemon, not taken back.
    host_made: AtomicBool,
    /// The switch's port of its way through the node's netfilter, if made
    /// (`netfilter.rs`).
    netfilter: Mutex<Option<PortId>>,
    /// The log said the way is off because the bridge filters VLANs.
    netfilter_vlan_said: AtomicBool,
    log: Mutex<FdbEventLog>,
}

impl Bridge {
    /// A bridge with no port attached yet (not even its host port).
    pub fn new(
        settings: BridgeSettings,
        origin: Origin,
        made: Option<BridgeAdd>,
        start_ns: Option<Arc<NetNs>>,
    ) -> Bridge {
        let sw = Arc::new(Switch::new(settings.fdb));
        sw.set_storm_limits(settings.storm);
        sw.loop_guard.set_mode(settings.loop_detect);
        sw.set_vlan_filtering(settings.vlan_filtering);
        Bridge {
            name: settings.name.clone(),
            origin,
            made,
            sw,
            host: settings.host.clone(),
            settings: Mutex::new(settings),
            ports: Mutex::new(Ports::default()),
            mirrors: Mutex::new(HashMap::new()),
            start_ns,
            host_extra: Mutex::new(Vec::new()),
            host_address_change: Mutex::new(()),
            host_made: AtomicBool::new(false),
            netfilter: Mutex::new(None),
            netfilter_vlan_said: AtomicBool::new(false),
            log: Mutex::new(FdbEventLog::default()),
        }
    }

    /// What the bridge runs with now.
    pub fn settings(&self) -> BridgeSettings {
        lock(&self.settings).clone()
    }

    /// A new ageing time, applied and kept for reloads to compare against.
    pub fn set_ageing(&self, ms: u64) {
        self.sw.fdb.set_ageing_ms(ms);
        lock(&self.settings).fdb.ageing_ms = ms;
    }

    /// The spec of port `name`, if attached.
    pub fn spec(&self, name: &str) -> Option<PortSpec> {
        lock(&self.ports).attached.get(name).map(|a| a.spec.clone())
    }

    /// Every attached port's spec, by port id.
    pub fn specs(&self) -> BTreeMap<PortId, PortSpec> {
        lock(&self.ports).attached.values().map(|a| (a.id, a.spec.clone())).collect()
    }

    /// Whether this daemon made the host port (rather than took it back
    /// from one before it): a start that fails deletes only what it made.
    pub fn made_host_port(&self) -> bool {
        self.host_made.load(Ordering::Relaxed)
    }

    /// Whether port `name` is attached and not `gone`.
    pub fn has_port(&self, name: &str) -> bool {
        lock(&self.ports)
            .attached
            .get(name)
            .is_some_and(|a| self.sw.port(a.id).is_some_and(|p| p.state() != PortState::Gone))
    }

    /// The attached ports' names (`gone` ones included), the host port left out.
    pub fn port_names(&self) -> Vec<IfName> {
        self.port_names_in(&lock(&self.ports))
    }

    /// Opens the port `spec` describes and starts forwarding on it. A port of
    /// that name that is `gone` is replaced; any other is refused. The port
    /// table is locked only to look and to record, not while the port opens,
    /// so `stats` and scrapes never wait behind an attach. The caller holds
    /// the name (`crate::daemon` reserves it across bridges).
    pub fn attach(&self, o: &Opener, spec: PortSpec) -> Result<PortId, BridgeError> {
        if self.has_port(&spec.name) {
            return Err(BridgeError::AlreadyAttached(spec.name.clone()));
        }
        let bad = |why| BridgeError::BadPolicy { port: spec.name.clone(), why };
        let policy = Arc::new(ub_datapath::Policy::compile(spec.policy.clone()).map_err(bad)?);
        // Open first: if that fails, a `gone` port stays in the table, to be
        // re-attached on the interface's next appearance.
        let open = match (&self.host, spec.backend) {
            (Some(h), Backend::Host) => OpenOptions { host: Some(self.host_options(o, h)), ..o.open.clone() },
            _ => o.open.clone(),
        };
        let opened = ub_port::open(&spec, &open)?;
        if opened.backend == Backend::Host {
            self.host_made.store(opened.made, Ordering::Relaxed);
        }
        if opened.backend == Backend::Afpacket && opened.rx.len() < o.open.rx.readers {
            tracing::warn!(port = %spec.name, readers = opened.rx.len(), asked = o.open.rx.readers,
                "this kernel cannot make a PACKET_FANOUT group ignore outgoing frames (Linux 6.2+): one reader per port");
        }
        let mut ports = lock(&self.ports);
        if ports.closed {
            return Err(BridgeError::Deleted(self.name.clone()));
        }
        if let Some(old) = ports.attached.remove(&spec.name) {
            self.sw.remove_port(old.id);
            drop(old);
        }
        let id = self.sw.add_port_with(&opened.name, opened.backend, opened.tx, policy)?;
        if !opened.up {
            // A port added at run time (the Docker driver's, before Docker
            // brings its container's end up) is down as a matter of course.
            if opened.backend == Backend::Afpacket && spec.origin == Origin::Runtime {
                tracing::info!(port = %spec.name, "link is down; the port forwards once it is up");
            } else if opened.backend == Backend::Afpacket {
                tracing::warn!(port = %spec.name, "link is down; the port forwards once it is up (`ip link set {} up`, and its peer)", spec.name);
            }
            if let Some(p) = self.sw.port(id) {
                p.set_state(PortState::Down);
            }
        }
        let members = members(o.threads, opened.rx);
        let reader = match spawn_reader_at(self.sw.clone(), id, members, Some(o.threads.nice), o.restart) {
            Ok(r) => r,
            Err(source) => {
                self.sw.remove_port(id);
                return Err(BridgeError::Reader { port: spec.name.clone(), source });
            }
        };
        tracing::info!(bridge = %self.name, port = %opened.name, id, backend = opened.backend.as_str(), origin = ?spec.origin, "port attached");
        let spec = PortSpec { name: opened.name, ..spec };
        let attached = Attached { spec, id, reader, claim: opened.claim, quiet: opened.quiet };
        ports.attached.insert(attached.spec.name.clone(), attached);
        Ok(id)
    }

    /// Detaches port `name`: its readers are stopped and joined, its FDB
    /// entries flushed, mirrors from and to it ended, its claim released.
    /// Other ports forward on. Returns its spec.
    pub fn detach(&self, name: &str) -> Result<PortSpec, BridgeError> {
        let a = lock(&self.ports).attached.remove(name).ok_or_else(|| BridgeError::NoSuchPort(name.to_string()))?;
        a.reader.stop();
        self.sw.remove_port(a.id);
        lock(&self.mirrors).remove(name);
        tracing::info!(bridge = %self.name, port = %name, "port detached");
        Ok(a.spec)
    }

    /// Closes the bridge for good: no port is attached from here on. Refused
    /// (and nothing changes) while ports other than the host port are
    /// attached, unless `detach`. Returns the ports it took.
    pub fn close(&self, detach: bool) -> Result<Vec<PortSpec>, Vec<IfName>> {
        let mut ports = lock(&self.ports);
        let others = self.port_names_in(&ports);
        if !others.is_empty() && !detach {
            return Err(others);
        }
        ports.closed = true;
        let taken = std::mem::take(&mut ports.attached);
        drop(ports);
        let mut specs = Vec::new();
        for (_, a) in taken {
            a.reader.stop();
            self.sw.remove_port(a.id);
            specs.push(a.spec);
        }
        lock(&self.mirrors).clear();
        Ok(specs)
    }

    /// The ports other than the bridge's own (its host port, its netfilter port).
    fn port_names_in(&self, ports: &Ports) -> Vec<IfName> {
        let host = self.host.as_ref().map(|h| &h.name);
        let nf = self.netfilter_port();
        ports.attached.keys().filter(|n| Some(*n) != host && Some(*n) != nf.as_ref()).cloned().collect()
    }

    /// Changes port `name`'s policy with `f`: checked and applied whole (a
    /// batch sees the old policy or the new one), or not at all; recorded
    /// in the port's spec. Returns the policy and whether the port was
    /// added at run time (the state file records it then).
    pub fn change_policy(
        &self,
        name: &str,
        f: impl FnOnce(&mut PortPolicy),
    ) -> Result<(PortPolicy, Origin), BridgeError> {
        let mut ports = lock(&self.ports);
        let a = ports.attached.get_mut(name).ok_or_else(|| BridgeError::NoSuchPort(name.to_string()))?;
        let mut policy = a.spec.policy.clone();
        f(&mut policy);
        let port = a.spec.name.clone();
        match self.sw.set_policy(a.id, policy.clone()) {
            Ok(_) => {}
            Err(ub_datapath::SwitchError::BadPolicy(why)) => return Err(BridgeError::BadPolicy { port, why }),
            Err(e) => return Err(e.into()),
        }
        a.spec.policy = policy.clone();
        let (origin, host) = (a.spec.origin, a.spec.backend == Backend::Host);
        drop(ports);
        if host {
            self.sync_host_statics();
        }
        Ok((policy, origin))
    }

    /// VLAN filtering on or off (the setting kept for reloads).
    pub fn set_vlan_filtering(&self, on: bool) -> bool {
        let changed = self.sw.set_vlan_filtering(on);
        lock(&self.settings).vlan_filtering = on;
        self.sync_host_statics();
        changed
    }

    /// A static FDB entry: `st.mac` is behind `st.port`.
    pub fn add_static(&self, st: &StaticEntry) -> Result<(), BridgeError> {
        let port = self.sw.port_by_name(&st.port).ok_or_else(|| BridgeError::NoSuchPort(st.port.to_string()))?;
        self.sw.fdb.add_static(st.vlan, st.mac, port.id).map_err(|why| BridgeError::Static {
            mac: st.mac,
            port: st.port.clone(),
            why,
        })
    }

    /// The spec of configured port `name` if its interface is `gone`: a
    /// port to re-attach when the interface comes back (a port detached on
    /// purpose is forgotten; a run-time port's owner re-adds it).
    pub fn gone_configured(&self, name: &str) -> Option<PortSpec> {
        lock(&self.ports)
            .attached
            .get(name)
            .filter(|a| a.spec.origin == Origin::Config)
            .filter(|a| self.sw.port(a.id).is_some_and(|p| p.state() == PortState::Gone))
            .map(|a| a.spec.clone())
    }

    /// The ports added at run time, and the addresses put on the host port
    /// at run time: what the state file records of this bridge.
    pub fn runtime(&self) -> (Vec<PortSpec>, Vec<ub_netlink::IpNet>) {
        let ports = lock(&self.ports)
            .attached
            .values()
            .filter(|a| a.spec.origin == Origin::Runtime)
            .map(|a| a.spec.clone())
            .collect();
        (ports, lock(&self.host_extra).clone())
    }

    /// Stops every port's readers (the daemon is ending).
    pub fn stop_all(&self) {
        let ports = std::mem::take(&mut lock(&self.ports).attached);
        for (_, a) in ports {
            a.reader.stop();
        }
    }
}

/// A port's receive halves as its reader's members: pinned (each to the
/// CPU whose frames it gets) only when each has a CPU's frames of its own
/// (one per allowed CPU); otherwise a pinned thread would wait for a
/// busy CPU while others idle.
fn members(threads: ThreadConfig, rx: Vec<Box<dyn ub_port::PortRx>>) -> Vec<Member> {
    let n = rx.len();
    let cpus = allowed_cpus();
    let pin = threads.pin && n > 1 && n == cpus.len();
    rx.into_iter()
        .enumerate()
        .map(|(i, rx)| Member { rx, cpu: pin.then(|| reader_cpu_in(&cpus, i, n)).flatten() })
        .collect()
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
