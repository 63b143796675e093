//! The control socket: newline-delimited JSON requests and replies on a
//! Unix socket (mode 0600), documented request by request in
//! docs/control.md. The requests and replies are `ub_proto`'s; this module
//! answers each with one handler (`impl Serve for Daemon`).
//!
//! A request names its bridge (`bridge`), or a port of it, or neither:
//! then it means the daemon's only bridge, and a listing means them all.
//!
//! Each client has its own thread, a 5 s timeout and a 64 KiB line limit;
//! at most 16 are served at once (`ub_serve`), so no client can stall the
//! datapath (which never waits on the control plane) or take unbounded
//! memory.

use crate::bridge::{Bridge, BridgeError};
use crate::daemon::{Daemon, DaemonError};
use crate::{lock, mirror};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use ub_datapath::MirrorTo;
use ub_proto::settings::PCAP_MAX_BYTES;
use ub_proto::*;
use ub_serve::{Conn, Limits, Listener};

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Clients served at once; more are told to retry.
const LIMITS: Limits = Limits { connections: 16, timeout: Duration::from_secs(5) };

/// A request the daemon refuses, in one line that names the problem.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Mirror(#[from] mirror::MirrorError),
    #[error("{0} is not a unicast station address")]
    NotUnicast(ub_wire::Mac),
    #[error("no entry for {0} in vlan {1}")]
    NoEntry(ub_wire::Mac, u16),
    #[error("a port cannot mirror to itself")]
    MirrorSelf,
    #[error("\"pcap\" must be an absolute path")]
    PcapPath,
    #[error("\"max_bytes\": {0}")]
    PcapCap(ub_proto::settings::SettingError),
    #[error("give exactly one of \"to\" (a port) or \"pcap\" (a file)")]
    MirrorTarget,
    #[error("port '{0}' is not mirrored")]
    NotMirrored(String),
    #[error("a {0} port cannot be added at run time")]
    Backend(&'static str),
    #[error("pvid takes one VLAN, not a range ({0}-{1}): a port has one PVID")]
    PvidRange(u16, u16),
    #[error("vid range {0}-{1} ends before it starts")]
    VidRange(u16, u16),
    #[error("port '{0}' is not a member of VLAN {1}")]
    NotMember(String, u16),
    #[error("upgrade: {0}")]
    Upgrade(String),
}

/// The VIDs of `vid` to `end` (one if no end), checked.
fn vid_range(vid: u16, end: Option<u16>) -> Result<std::ops::RangeInclusive<u16>, ControlError> {
    let end = end.unwrap_or(vid);
    if end < vid {
        return Err(ControlError::VidRange(vid, end));
    }
    Ok(vid..=end)
}

/// Starting the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("control socket {} is in use by another running userbridge (stop it, or pass --socket PATH)", .0.display())]
    InUse(PathBuf),
    #[error("cannot remove stale socket {}: {source}", path.display())]
    Stale { path: PathBuf, source: std::io::Error },
    #[error("cannot create {}: {source}", path.display())]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {}: {source}", path.display())]
    Listen { path: PathBuf, source: std::io::Error },
}

/// Port `name` of bridge `b`.
fn port_in(b: &Bridge, name: &str) -> Result<Arc<ub_datapath::Port>, ControlError> {
    b.sw.port_by_name(name).ok_or_else(|| DaemonError::no_port(name).into())
}

/// Port names of bridge `b` by port id.
fn port_names(b: &Bridge) -> Vec<Option<String>> {
    b.sw.ports().iter().map(|p| p.as_ref().map(|p| p.name.clone())).collect()
}

/// The ports of the bridges a listing means, or only port `name` (in any
/// of them), or says there is none.
fn listed_ports(d: &Daemon, bridge: Option<&IfName>, name: Option<&IfName>) -> Result<Vec<PortStatus>, ControlError> {
    let mut ports: Vec<PortStatus> =
        d.bridges_named(bridge)?.iter().flat_map(|b| crate::status::of(d, b).ports).collect();
    if let Some(name) = name {
        ports.retain(|p| p.name == *name);
        if ports.is_empty() {
            return Err(DaemonError::no_port(name).into());
        }
    }
    Ok(ports)
}

impl Serve for Daemon {
    type Error = ControlError;

    fn fdb_show(&self, r: FdbShow) -> Result<Vec<FdbEntry>, ControlError> {
        let mut out = Vec::new();
        for b in self.bridges_named(r.bridge.as_ref())? {
            let names = port_names(&b);
            let now = b.sw.now_ms();
            out.extend(b.sw.fdb.entries(now).into_iter().map(|e| FdbEntry {
                bridge: b.name.to_string(),
                mac: e.mac,
                port: names.get(usize::from(e.port)).cloned().flatten(),
                port_id: e.port,
                vlan: e.vid,
                age_secs: e.age_ms as f64 / 1000.0,
                state: if e.is_static { EntryState::Static } else { EntryState::Learned },
            }));
        }
        Ok(out)
    }

    fn fdb_add(&self, r: FdbAdd) -> Result<FdbAdded, ControlError> {
        if !r.mac.is_valid_source() {
            return Err(ControlError::NotUnicast(r.mac));
        }
        let b = self.port_bridge(&r.port, r.bridge.as_ref())?;
        b.add_static(&crate::config::StaticEntry { mac: r.mac, port: r.port.clone(), vlan: r.vlan })
            .map_err(DaemonError::from)?;
        Ok(FdbAdded { added: r.mac, port: r.port, vlan: r.vlan })
    }

    fn fdb_del(&self, r: FdbDel) -> Result<FdbRemoved, ControlError> {
        if !self.bridge(r.bridge.as_ref())?.sw.fdb.remove(r.vlan, r.mac) {
            return Err(ControlError::NoEntry(r.mac, r.vlan));
        }
        Ok(FdbRemoved { removed: r.mac, vlan: r.vlan })
    }

    fn fdb_flush(&self, r: FdbFlush) -> Result<Flushed, ControlError> {
        let n = match r.port {
            None => self.bridge(r.bridge.as_ref())?.sw.fdb.flush_all(false),
            Some(name) => {
                let b = self.port_bridge(&name, r.bridge.as_ref())?;
                b.sw.fdb.flush_port(port_in(&b, &name)?.id, false)
            }
        };
        Ok(Flushed { flushed: n as u64 })
    }

    fn stats(&self, r: Stats) -> Result<Status, ControlError> {
        let b = match &r.port {
            Some(p) => self.port_bridge(p, r.bridge.as_ref())?,
            None => self.bridge(r.bridge.as_ref())?,
        };
        let mut s = crate::status::of(self, &b);
        if let Some(name) = &r.port {
            s.ports.retain(|p| p.name == *name);
        }
        Ok(s)
    }

    fn port_list(&self, r: PortList) -> Result<Vec<PortStatus>, ControlError> {
        listed_ports(self, r.bridge.as_ref(), r.port.as_ref())
    }

    fn port_add(&self, r: PortAdd) -> Result<PortAdded, ControlError> {
        let backend = r.backend();
        if !matches!(backend, Backend::Afpacket | Backend::Tap) {
            return Err(ControlError::Backend(backend.as_str()));
        }
        let b = self.bridge(r.bridge.as_ref())?;
        let spec = PortSpec {
            name: r.name,
            backend,
            origin: Origin::Runtime,
            policy: r.policy.unwrap_or_default(),
            meta: r.meta.unwrap_or_default(),
        };
        let name = spec.name.clone();
        self.attach(&b, spec)?;
        Ok(PortAdded { added: name })
    }

    fn port_del(&self, r: PortDel) -> Result<PortRemoved, ControlError> {
        match self.detach(&r.name) {
            Ok(_) => Ok(PortRemoved { removed: r.name, existed: true }),
            Err(DaemonError::Bridge(BridgeError::NoSuchPort(_))) if r.if_exists => {
                Ok(PortRemoved { removed: r.name, existed: false })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn port_set(&self, r: PortSet) -> Result<PortPolicySet, ControlError> {
        let policy = self.change_policy(&r.name, |p| *p = r.change.apply(p.clone()))?;
        Ok(PortPolicySet { port: r.name, policy })
    }

    fn vlan_add(&self, r: VlanAdd) -> Result<VlanPort, ControlError> {
        let vids = vid_range(r.vid, r.vid_end)?;
        if r.pvid && vids.start() != vids.end() {
            return Err(ControlError::PvidRange(*vids.start(), *vids.end()));
        }
        let policy = self.change_policy(&r.port, |p| {
            for vid in vids {
                // As `bridge vlan add`: the flags given replace the VLAN's;
                // a new PVID takes the flag from the old one.
                if r.pvid {
                    p.vlans.iter_mut().for_each(|v| v.pvid = false);
                }
                let e = VlanEntry { vid, pvid: r.pvid, untagged: r.untagged };
                match p.vlans.iter_mut().find(|v| v.vid == vid) {
                    Some(v) => *v = e,
                    None => p.vlans.push(e),
                }
            }
            p.vlans.sort_by_key(|v| v.vid);
        })?;
        let bridge = self.port_bridge(&r.port, None)?.name.to_string();
        Ok(VlanPort { bridge, port: r.port, vlans: policy.vlans })
    }

    fn vlan_del(&self, r: VlanDel) -> Result<VlanPort, ControlError> {
        let vids = vid_range(r.vid, r.vid_end)?;
        let b = self.port_bridge(&r.port, None)?;
        let spec = b.spec(&r.port).ok_or_else(|| DaemonError::no_port(&r.port))?;
        if let Some(v) = vids.clone().find(|v| !spec.policy.vlans.iter().any(|e| e.vid == *v)) {
            return Err(ControlError::NotMember(r.port.to_string(), v));
        }
        let policy = self.change_policy(&r.port, |p| p.vlans.retain(|v| !vids.contains(&v.vid)))?;
        Ok(VlanPort { bridge: b.name.to_string(), port: r.port, vlans: policy.vlans })
    }

    fn vlan_show(&self, r: VlanShow) -> Result<Vec<VlanPort>, ControlError> {
        let ports = listed_ports(self, r.bridge.as_ref(), r.port.as_ref())?;
        Ok(ports.into_iter().map(|p| VlanPort { bridge: p.bridge, port: p.name, vlans: p.policy.vlans }).collect())
    }

    fn set_vlan_filtering(&self, r: SetVlanFiltering) -> Result<VlanFiltering, ControlError> {
        let b = self.bridge(r.bridge.as_ref())?;
        b.set_vlan_filtering(r.on);
        self.netfilter_apply(&b);
        Ok(VlanFiltering { vlan_filtering: r.on })
    }

    fn neigh_show(&self, r: NeighShow) -> Result<Vec<NeighInfo>, ControlError> {
        let mut out = Vec::new();
        for b in self.bridges_named(r.bridge.as_ref())? {
            let names = port_names(&b);
            out.extend(b.sw.neigh.entries(b.sw.now_ms()).into_iter().map(|e| NeighInfo {
                bridge: b.name.to_string(),
                ip: e.ip,
                mac: e.mac,
                port: names.get(usize::from(e.port)).cloned().flatten(),
                told: e.told,
                local: e.local,
                age_secs: e.age_ms as f64 / 1000.0,
            }));
        }
        Ok(out)
    }

    fn trace(&self, r: Trace) -> Result<Traced, ControlError> {
        let b = self.port_bridge(&r.in_port, None)?;
        let port = port_in(&b, &r.in_port)?;
        let t = b.sw.trace(port.id, &r.frame(), b.sw.now_ms());
        Ok(Traced {
            bridge: b.name.to_string(),
            steps: t.steps.into_iter().map(|s| TraceStep { step: s.step.to_string(), detail: s.detail }).collect(),
            decision: t.decision,
            vlan: t.vid,
            egress: t
                .egress
                .into_iter()
                .map(|e| TraceEgress { port: e.name, sent: e.sent, why: e.why, tagged: e.tagged })
                .collect(),
        })
    }

    fn host_info(&self, r: HostInfo) -> Result<Host, ControlError> {
        Ok(self.bridge(r.bridge.as_ref())?.host_info().map_err(DaemonError::from)?)
    }

    fn host_address(&self, r: HostAddress) -> Result<HostAddressed, ControlError> {
        let b = self.bridge(r.bridge.as_ref())?;
        let added = Daemon::host_address(self, &b, r.address, r.force)?;
        Ok(HostAddressed { address: r.address, added })
    }

    fn host_address_del(&self, r: HostAddressDel) -> Result<HostAddressRemoved, ControlError> {
        let b = self.bridge(r.bridge.as_ref())?;
        let removed = Daemon::host_address_del(self, &b, r.address)?;
        Ok(HostAddressRemoved { address: r.address, removed })
    }

    fn set_ageing(&self, r: SetAgeing) -> Result<Ageing, ControlError> {
        self.bridge(r.bridge.as_ref())?.set_ageing(r.secs * 1000);
        Ok(Ageing { ageing_secs: r.secs })
    }

    fn mirror_add(&self, r: MirrorAdd) -> Result<Mirroring, ControlError> {
        let r_from = &r.from;
        let b = self.port_bridge(r_from, None)?;
        let from = port_in(&b, r_from)?;
        let target = match (r.to, r.pcap) {
            (Some(to), None) => {
                // A copy goes to a port of the same bridge: frames never cross bridges.
                let to = port_in(self.port_bridge(&to, Some(&b.name))?.as_ref(), &to)?;
                if to.id == from.id {
                    return Err(ControlError::MirrorSelf);
                }
                lock(&b.mirrors).remove(r_from);
                MirrorTo::Port(to.id)
            }
            (None, Some(path)) => {
                let path = Path::new(&path);
                if !path.is_absolute() || path.as_os_str().len() > 4096 {
                    return Err(ControlError::PcapPath);
                }
                let max = r.max_bytes.unwrap_or(PCAP_MAX_BYTES.default);
                PCAP_MAX_BYTES.check(max).map_err(ControlError::PcapCap)?;
                let m = mirror::PcapMirror::create(path, max)?;
                let sink = m.sink.clone();
                lock(&b.mirrors).insert(r_from.clone(), m);
                MirrorTo::Sink(sink)
            }
            _ => return Err(ControlError::MirrorTarget),
        };
        b.sw.set_mirror(from.id, Some(target));
        Ok(Mirroring { mirroring: r_from.clone() })
    }

    fn mirror_del(&self, r: MirrorDel) -> Result<MirrorStopped, ControlError> {
        let r_from = &r.from;
        let b = self.port_bridge(r_from, None)?;
        let from = port_in(&b, r_from)?;
        if b.sw.set_mirror(from.id, None).is_none() {
            return Err(ControlError::NotMirrored(from.name.clone()));
        }
        // Joins the pcap writer here, on the control thread, never on a reader.
        lock(&b.mirrors).remove(r_from);
        Ok(MirrorStopped { stopped: r_from.clone() })
    }

    fn mirror_list(&self, r: MirrorList) -> Result<Vec<MirrorInfo>, ControlError> {
        let mut out = Vec::new();
        for b in self.bridges_named(r.bridge.as_ref())? {
            let names = port_names(&b);
            let pcaps = lock(&b.mirrors);
            let name = |id: u16| names.get(usize::from(id)).cloned().flatten();
            for (from, m) in b.sw.mirrors() {
                let from = name(from).unwrap_or_default();
                let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let bridge = b.name.to_string();
                out.push(match &*m {
                    MirrorTo::Port(to) => MirrorInfo { bridge, from, to: name(*to), file: None },
                    MirrorTo::Sink(_) => {
                        let file = pcaps.get(from.as_str()).map(|m| PcapInfo {
                            pcap: m.sink.path.display().to_string(),
                            max_bytes: m.sink.max_bytes,
                            written: ld(&m.sink.written),
                            bytes: ld(&m.sink.bytes),
                            dropped: ld(&m.sink.dropped),
                        });
                        MirrorInfo { bridge, from, to: None, file }
                    }
                });
            }
        }
        Ok(out)
    }

    fn bridge_add(&self, r: BridgeAdd) -> Result<BridgeAdded, ControlError> {
        let (b, created) = self.add_runtime_bridge(r)?;
        let host = match &b.host {
            Some(_) => Some(b.host_info().map_err(DaemonError::from)?),
            None => None,
        };
        Ok(BridgeAdded { added: b.name.clone(), created, host })
    }

    fn bridge_del(&self, r: BridgeDel) -> Result<BridgeRemoved, ControlError> {
        let detached = self.del_bridge(&r.name, r.detach)?;
        Ok(BridgeRemoved { removed: r.name, detached })
    }

    fn bridge_list(&self, _: BridgeList) -> Result<Vec<BridgeInfo>, ControlError> {
        Ok(self
            .bridges()
            .iter()
            .map(|b| BridgeInfo {
                name: b.name.clone(),
                origin: b.origin,
                host: b.host.as_ref().and_then(|_| b.host_info().ok()),
                ports: u32::try_from(b.port_names().len()).unwrap_or(u32::MAX),
                fdb_entries: b.sw.fdb.len() as u64,
                vlan_filtering: b.sw.vlan_filtering(),
                network: b.made.as_ref().and_then(|m| m.network.clone()),
                netfilter: match b.netfilter() {
                    (false, _) => None,
                    (true, on) => Some(if on { "on" } else { "off" }.to_string()),
                },
            })
            .collect())
    }

    fn version(&self, _: Version) -> Result<VersionInfo, ControlError> {
        Ok(VersionInfo {
            protocol: PROTOCOL_VERSION,
            daemon: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            failed_upgrade: crate::lock(&self.upgrade).failed.clone(),
        })
    }

    fn upgrade(&self, _: Upgrade) -> Result<Upgrading, ControlError> {
        crate::upgrade::begin(self).map_err(ControlError::Upgrade)
    }
}

/// Answers one request line. The flag is true when the line was malformed
/// (not JSON, not an object, no or an unknown `cmd`): the connection is then
/// closed. A well-formed request that fails (no such port, bad argument)
/// gets its error and the connection stays open.
pub fn handle(d: &Daemon, line: &str) -> (Response, bool) {
    // A request is served whole before a handover starts, or told to retry
    // (and so reaches the daemon that takes over): never half-applied.
    let _served = d.gate.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if d.handing_over.load(std::sync::atomic::Ordering::Acquire) {
        return (Response::err(ub_proto::BUSY), true);
    }
    match Request::parse(line) {
        Ok(req) => (req.serve(d), false),
        Err(Parse::Malformed(m)) => (Response::err(m), true),
        Err(Parse::BadArgs(m)) => (Response::err(m), false),
    }
}

/// The socket's file, as this daemon bound it: removed when the daemon
/// stops, unless another daemon has bound the path since (then it is
/// that daemon's, and stays).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    ino: (u64, u64),
}

impl SocketFile {
    /// The socket file at `path`, bound by the daemon that handed its
    /// listener over: this daemon's from now on.
    pub fn adopt(path: &Path) -> SocketFile {
        let ino = std::fs::symlink_metadata(path).map_or((0, 0), |m| (m.dev(), m.ino()));
        SocketFile { path: path.into(), ino }
    }

    /// Binds `path` (mode 0600).
    pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), ServerError> {
        let err = |source| ServerError::Listen { path: path.into(), source };
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        let m = std::fs::symlink_metadata(path).map_err(err)?;
        Ok((listener, SocketFile { path: path.into(), ino: (m.dev(), m.ino()) }))
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The listening socket and its accept loop; dropping it stops the loop,
/// then removes the socket file if it is still this daemon's.
#[derive(Debug)]
pub struct Server {
    _accepting: ub_serve::Server,
    file: SocketFile,
    /// The listening socket, to hand over.
    listener: UnixListener,
}

impl Server {
    /// Fails if another daemon answers on `path`; removes a stale socket file.
    pub fn check_free(path: &Path) -> Result<(), ServerError> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.into()));
            }
            std::fs::remove_file(path).map_err(|source| ServerError::Stale { path: path.into(), source })?;
        }
        Ok(())
    }

    /// Binds `path` (mode 0600), refusing if another daemon answers there.
    /// Clients can connect from here on: call it once the switch is ready.
    pub fn start(path: &Path, d: Arc<Daemon>) -> Result<Server, ServerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ServerError::Dir { path: dir.into(), source })?;
        }
        Self::check_free(path)?;
        let (listener, file) = SocketFile::bind(path)?;
        Self::start_on(listener, file, d)
    }

    /// Serves `listener` (bound at `file`), one this daemon bound or the
    /// one a daemon before it handed over.
    pub fn start_on(listener: UnixListener, file: SocketFile, d: Arc<Daemon>) -> Result<Server, ServerError> {
        let path = file.path.clone();
        let kept = listener.try_clone().map_err(|source| ServerError::Listen { path: path.clone(), source })?;
        let panics = d.counters.thread_panics.clone();
        let handler = Arc::new(move |c: Conn| {
            if let Conn::Unix(s) = c {
                serve(&d, s);
            }
        });
        let accepting = ub_serve::Server::start("control", Listener::Unix(listener), LIMITS, handler, busy, panics)
            .map_err(|source| ServerError::Listen { path: path.clone(), source })?;
        Ok(Server { _accepting: accepting, file, listener: kept })
    }

    /// Stops accepting and gives the listening socket and its file away
    /// (the file stays: the daemon taking over serves it). Connections
    /// waiting in its backlog stay there for whoever accepts next.
    pub fn hand_over(self) -> (UnixListener, SocketFile) {
        let Server { _accepting, file, listener } = self;
        drop(_accepting);
        (listener, file)
    }
}

/// A client over the cap: told to retry, before its request is read.
fn busy(mut c: Conn) {
    let _ = c.write_all(Response::err(ub_proto::BUSY).to_line().as_bytes());
}

/// Serves one client: requests until EOF, a timeout, or a bad line.
fn serve(d: &Daemon, conn: UnixStream) {
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
            (Response::err(format!("request longer than {MAX_LINE} bytes")), true)
        } else {
            match std::str::from_utf8(&line) {
                Ok(s) => handle(d, s.trim()),
                Err(_) => (Response::err("request is not UTF-8"), true),
            }
        };
        if (&conn).write_all(reply.to_line().as_bytes()).is_err() || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_daemon_removes_its_socket_file_but_not_one_another_daemon_bound_since() {
        let path = std::env::temp_dir().join(format!("ub-control-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (_l1, first) = SocketFile::bind(&path).unwrap();
        // A second daemon found the path stale (the first not answering yet) and bound it anew.
        std::fs::remove_file(&path).unwrap();
        let (_l2, second) = SocketFile::bind(&path).unwrap();
        drop(first);
        assert!(path.exists(), "the first daemon removed the second one's socket");
        drop(second);
        assert!(!path.exists(), "a daemon leaves its own socket behind");
    }
}
