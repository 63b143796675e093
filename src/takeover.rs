//! `run --takeover`: a new daemon takes the running one's ports without a
//! socket closed in between. The running daemon listens on a
//! `SOCK_SEQPACKET` socket beside its control socket (`SOCKET.takeover`);
//! the new one connects and says its version and its bridges and ports.
//! If they match, the running one stops taking requests (those in flight
//! finish, later ones are told to retry), gives its busy ports' rings back,
//! stops reading, and sends what the new one needs: its ports' receive
//! sockets, TAP queues and claims, its control and metrics listeners (by
//! `SCM_RIGHTS`, at most [`CHUNK`] a message), and its learned FDB entries
//! with their ages. The new one opens its ports on them, serves, says
//! ready; the old one exits without undoing anything. If the new one goes
//! away before it is ready, the old one attaches its ports again on the
//! same descriptors and goes on. docs/architecture.md, "Takeover".

use crate::bridge::handover::Frozen;
use crate::daemon::Daemon;
use crate::{control, metrics};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketType,
};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use ub_port::Role;

/// The handover's format; a daemon refuses one it does not know.
pub const VERSION: u32 = 1;
/// Descriptors per message (one `SCM_RIGHTS` message carries at most 253).
const CHUNK: usize = 250;
/// The most a message may be: the state, with every learned entry.
const MAX_MESSAGE: usize = 32 << 20;
/// How long the old daemon waits for the new one to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a new daemon waits for the running one's answer to its hello.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The handover socket of the daemon whose control socket is `socket`.
pub fn path_of(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".takeover");
    PathBuf::from(p)
}

/// What goes over the handover socket, one message each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Msg {
    /// New to old: who asks, and what it runs (its configured bridges and ports).
    Hello { version: u32, pid: u32, runs: String },
    /// Old to new: no, and why.
    Refused { why: String },
    /// Old to new: the ports, the FDB, the listeners; `fds` descriptors follow.
    State { ports: Vec<PortState>, fdb: Vec<Entry>, control: bool, metrics: bool, fds: usize },
    /// Old to new: the next descriptors.
    Fds,
    /// New to old: serving.
    Ready,
}

/// A port handed over: its descriptors' roles, in the order they come.
#[derive(Debug, Serialize, Deserialize)]
struct PortState {
    name: String,
    roles: Vec<String>,
    quiet: Vec<(String, String)>,
}

/// A learned FDB entry, by its port's name.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    bridge: String,
    vid: u16,
    mac: String,
    port: String,
    age_ms: u64,
}

/// What a daemon runs, as a takeover compares it: its configured bridges,
/// each with its host port or not and its configured ports.
pub fn runs(s: &crate::config::Settings) -> String {
    let mut v: Vec<String> = s
        .bridges
        .iter()
        .map(|b| {
            let ports: Vec<&str> = b.ports.iter().map(|p| p.name.as_str()).collect();
            format!("{} host={} ports={}", b.name, b.host.is_some(), ports.join(","))
        })
        .collect();
    v.sort();
    v.join("; ")
}

fn send(fd: BorrowedFd<'_>, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let text = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(CHUNK))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    // A call with a timeout is not restarted after a signal (socket(7)).
    while let Err(e) = rustix::net::sendmsg(fd, &[IoSlice::new(&text)], &mut control, SendFlags::NOSIGNAL) {
        if e != rustix::io::Errno::INTR {
            return Err(e.into());
        }
    }
    Ok(())
}

fn recv(fd: BorrowedFd<'_>) -> io::Result<(Msg, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(CHUNK))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let r = loop {
        match rustix::net::recvmsg(fd, &mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    if r.flags.contains(ReturnFlags::CTRUNC) || r.flags.contains(ReturnFlags::TRUNC) {
        return Err(io::Error::other("a handover message was cut short"));
    }
    if r.bytes == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the other daemon went away"));
    }
    let msg = serde_json::from_slice(&buf[..r.bytes]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((msg, fds))
}

fn seqpacket() -> io::Result<OwnedFd> {
    let fd =
        rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, rustix::net::SocketFlags::CLOEXEC, None)?;
    // A message is as big as the state; root may go past the sysctl limit.
    use rustix::net::sockopt as so;
    let size = MAX_MESSAGE + (1 << 20);
    if so::set_socket_send_buffer_size_force(&fd, size).is_err() {
        let _ = so::set_socket_send_buffer_size(&fd, size);
    }
    if so::set_socket_recv_buffer_size_force(&fd, size).is_err() {
        let _ = so::set_socket_recv_buffer_size(&fd, size);
    }
    Ok(fd)
}

fn set_timeout(fd: BorrowedFd<'_>, t: Duration) -> io::Result<()> {
    rustix::net::sockopt::set_socket_timeout(fd, rustix::net::sockopt::Timeout::Recv, Some(t))?;
    Ok(())
}

/// The running daemon's handover socket; its file goes with it.
#[derive(Debug)]
pub struct Listener {
    /// The listening socket, and its file's inode (a new daemon that
    /// took over binds its own at the path).
    fd: std::sync::Mutex<(Arc<OwnedFd>, u64)>,
    path: PathBuf,
    closing: std::sync::atomic::AtomicBool,
}

/// Listens at `path` (mode 0600), replacing a file left there.
fn listen_at(path: &Path) -> io::Result<(Arc<OwnedFd>, u64)> {
    let _ = std::fs::remove_file(path);
    let fd = seqpacket()?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    rustix::net::listen(&fd, 4)?;
    Ok((Arc::new(fd), std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path)?)))
}

impl Listener {
    /// Listens at `SOCKET.takeover`.
    pub fn bind(socket: &Path) -> io::Result<Listener> {
        let path = path_of(socket);
        let fd = listen_at(&path)?;
        Ok(Listener { fd: std::sync::Mutex::new(fd), path, closing: Default::default() })
    }

    fn current(&self) -> Arc<OwnedFd> {
        crate::lock(&self.fd).0.clone()
    }

    /// Waits for the next daemon asking to take over and reads its hello
    /// (a connection that says nothing within 5 s is dropped).
    pub fn accept(&self) -> io::Result<Asking> {
        loop {
            let fd = self.current();
            let conn = match rustix::net::accept_with(&*fd, rustix::net::SocketFlags::CLOEXEC) {
                Ok(c) => c,
                // Listening anew (see `renew`): on the new socket.
                Err(_) if !self.closing.load(Ordering::Acquire) && !Arc::ptr_eq(&fd, &self.current()) => continue,
                Err(e) => return Err(e.into()),
            };
            set_timeout(conn.as_fd(), Duration::from_secs(5))?;
            match recv(conn.as_fd()) {
                Ok((Msg::Hello { version, pid, runs }, _)) => return Ok(Asking { conn, version, pid, runs }),
                Ok(_) | Err(_) => continue,
            }
        }
    }

    /// After a takeover that did not happen: listens anew if the new
    /// daemon replaced the file (it binds its own once it said ready, and
    /// may have died just after).
    pub fn renew(&self) {
        let ours = crate::lock(&self.fd).1;
        let now = std::fs::metadata(&self.path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if now.as_ref().is_ok_and(|ino| *ino == ours) {
            return;
        }
        match listen_at(&self.path) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *crate::lock(&self.fd), fresh);
                let _ = rustix::net::shutdown(&*old.0, rustix::net::Shutdown::Read);
                tracing::info!(path = %self.path.display(), "listening for takeovers anew");
            }
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "no longer listening for takeovers"),
        }
    }

    /// Wakes a thread blocked in [`Listener::accept`] (it then fails).
    pub fn shut(&self) {
        self.closing.store(true, Ordering::Release);
        let _ = rustix::net::shutdown(&*self.current(), rustix::net::Shutdown::Read);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A daemon asking to take over.
#[derive(Debug)]
pub struct Asking {
    conn: OwnedFd,
    version: u32,
    pid: u32,
    runs: String,
}

/// What the daemon's loop serves: its control and metrics servers, which
/// a handover takes and a failed one gives back.
#[derive(Debug)]
pub struct Servers {
    pub control: Option<control::Server>,
    pub metrics: Option<metrics::Server>,
}

/// The old daemon's side. Returns if the handover did not happen (refused,
/// or the new daemon went away before it was ready): then this daemon
/// serves on, as before. Exits the process once the new one is ready.
pub fn hand_over(d: &Arc<Daemon>, a: Asking, servers: &mut Servers) {
    let conn = a.conn.as_fd();
    let refuse = |why: String| {
        tracing::warn!(pid = a.pid, why = %why, "takeover refused");
        let _ = send(conn, &Msg::Refused { why }, &[]);
    };
    if a.version != VERSION {
        return refuse(format!("handover format {} is not this daemon's ({VERSION})", a.version));
    }
    let ours = runs(&d.settings());
    if a.runs != ours {
        return refuse(format!(
            "the bridges and ports differ: this daemon runs \"{ours}\", the new one \"{}\"",
            a.runs
        ));
    }
    tracing::info!(pid = a.pid, "handing over to a new daemon");
    // Requests in flight finish; those after are told to retry.
    d.handing_over.store(true, Ordering::Release);
    drop(d.gate.write().unwrap_or_else(std::sync::PoisonError::into_inner));
    let bridges = d.bridges();
    // Busy ports steer their frames back to the sockets; what is in their
    // rings the readers forward as they stop (`freeze`), not later.
    for b in &bridges {
        b.prepare_handover();
    }
    let mut ports = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    for b in &bridges {
        match b.handover_ports() {
            Ok(p) => ports.extend(p),
            Err(e) => {
                bridges.iter().for_each(|b| b.cancel_handover());
                d.handing_over.store(false, Ordering::Release);
                return refuse(format!("duplicating bridge {}'s descriptors: {e}", b.name));
            }
        }
    }
    let frozen: Vec<(Arc<crate::bridge::Bridge>, Vec<Frozen>)> =
        bridges.iter().map(|b| (b.clone(), b.freeze())).collect();
    let mut fdb = Vec::new();
    for b in &bridges {
        let names: std::collections::HashMap<ub_fdb::PortId, String> =
            b.sw.ports().iter().flatten().map(|p| (p.port.id, p.port.name.clone())).collect();
        for e in b.sw.fdb.entries(b.sw.now_ms()).into_iter().filter(|e| !e.is_static) {
            let Some(port) = names.get(&e.port) else { continue };
            fdb.push(Entry {
                bridge: b.name.to_string(),
                vid: e.vid,
                mac: e.mac.to_string(),
                port: port.clone(),
                age_ms: e.age_ms,
            });
        }
    }
    let control = servers.control.take().map(control::Server::hand_over);
    let metrics = servers.metrics.take().map(metrics::Server::hand_over);
    // Its lock goes: the new daemon opens the state file.
    drop(d.release_state());
    let mut states = Vec::new();
    for (name, port_fds, quiet) in ports {
        let roles = port_fds.iter().map(|(r, _)| r.as_str().to_string()).collect();
        fds.extend(port_fds.into_iter().map(|(_, fd)| fd));
        states.push(PortState { name, roles, quiet });
    }
    let listeners: Vec<OwnedFd> = control
        .as_ref()
        .and_then(|(l, _)| l.try_clone().ok().map(OwnedFd::from))
        .into_iter()
        .chain(metrics.as_ref().and_then(|l| l.try_clone().ok().map(OwnedFd::from)))
        .collect();
    let msg = Msg::State {
        ports: states,
        fdb,
        control: control.is_some(),
        metrics: metrics.is_some(),
        fds: fds.len() + listeners.len(),
    };
    let all: Vec<BorrowedFd<'_>> = fds.iter().chain(listeners.iter()).map(AsFd::as_fd).collect();
    let sent = send(conn, &msg, &[]).and_then(|()| all.chunks(CHUNK).try_for_each(|c| send(conn, &Msg::Fds, c)));
    let ready = sent.and_then(|()| {
        set_timeout(conn, READY_WITHIN)?;
        match recv(conn)? {
            // It holds the connection while it lives: closed, it died after
            // it said so, and this daemon forwards on rather than none.
            (Msg::Ready, _) if peer_closed(conn) => {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the new daemon died as it said it was ready"))
            }
            (Msg::Ready, _) => Ok(()),
            (other, _) => Err(io::Error::other(format!("the new daemon said {other:?}"))),
        }
    });
    match ready {
        Ok(()) => {
            tracing::info!(pid = a.pid, "handed over; exiting");
            // Its pid as this process sees it (the kernel's word, not the hello's).
            let pid = rustix::net::sockopt::socket_peercred(conn)
                .map_or(a.pid, |c| c.pid.as_raw_nonzero().get().unsigned_abs());
            crate::systemd::handed_to(pid);
            // Nothing undone: the ports, claims, settings and files are the new daemon's.
            std::process::exit(0);
        }
        Err(e) => {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                // Still there (too slow, or the exchange broke): it could yet
                // serve. One process forwards, never two: it goes first.
                stop_peer(conn);
            }
            tracing::error!(pid = a.pid, error = %e, "takeover failed; this daemon forwards on");
            resume(d, fds, frozen, control, metrics, servers);
        }
    }
}

/// Whether the other end of `conn` has closed (its process is gone).
fn peer_closed(conn: BorrowedFd<'_>) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&conn, PollFlags::RDHUP)];
    let now = Timespec { tv_sec: 0, tv_nsec: 0 };
    rustix::event::poll(&mut fds, Some(&now))
        .is_ok_and(|_| fds[0].revents().intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR))
}

/// Kills the process at the other end of `conn` and waits (2 s at most)
/// for its end to close.
fn stop_peer(conn: BorrowedFd<'_>) {
    let pid = match rustix::net::sockopt::socket_peercred(conn) {
        Ok(c) => c.pid,
        Err(e) => return tracing::error!(error = %e, "the new daemon's pid is unknown: it cannot be stopped"),
    };
    if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
        return tracing::error!(pid = pid.as_raw_nonzero().get(), error = %e, "the new daemon cannot be stopped");
    }
    tracing::warn!(pid = pid.as_raw_nonzero().get(), "the new daemon was stopped (SIGKILL)");
    let start = Instant::now();
    let _ = set_timeout(conn, Duration::from_millis(100));
    while start.elapsed() < Duration::from_secs(2) {
        if recv(conn).is_err_and(|e| e.kind() == io::ErrorKind::UnexpectedEof) {
            return;
        }
    }
}

/// After a handover that failed: the ports attached again on the
/// descriptors they handed over, the listeners served again.
#[allow(clippy::type_complexity)]
fn resume(
    d: &Arc<Daemon>,
    _sent: Vec<OwnedFd>,
    frozen: Vec<(Arc<crate::bridge::Bridge>, Vec<Frozen>)>,
    control: Option<(UnixListener, control::SocketFile)>,
    metrics: Option<std::net::TcpListener>,
    servers: &mut Servers,
) {
    let pool = &d.opener.open.inherit;
    for (b, ports) in &frozen {
        match b.handover_ports_of(ports) {
            Ok(out) => {
                for (name, fds, quiet) in out {
                    for (role, fd) in fds {
                        pool.put(&name, role, fd);
                    }
                    pool.put_quiet(&name, quiet);
                }
            }
            Err(e) => tracing::error!(bridge = %b.name, error = %e, "cannot take the ports' descriptors back"),
        }
    }
    ub_datapath::hold_readers(true);
    for (b, ports) in frozen {
        for e in b.thaw(&d.opener, ports) {
            tracing::error!(bridge = %b.name, error = %e, "a port could not be attached again after the failed takeover");
        }
        // Its way through the node's netfilter, made anew, on as the node's rules say.
        d.netfilter_apply(&b);
    }
    ub_datapath::hold_readers(false);
    for left in pool.clear() {
        tracing::warn!(port = %left, "descriptors of a port not attached again closed");
    }
    let s = d.settings();
    match crate::state::StateFile::open(&s.state_dir, &s.socket) {
        Ok(state) => d.restore_state(Some(state)),
        Err(e) => {
            tracing::error!(error = %e, "the state file could not be taken back: run-time changes are not recorded")
        }
    }
    if let Some((l, file)) = control {
        match control::Server::start_on(l, file, d.clone()) {
            Ok(s) => servers.control = Some(s),
            Err(e) => tracing::error!(error = %e, "the control socket could not be served again"),
        }
    }
    if let Some(l) = metrics {
        match metrics::Server::start(l, d.clone()) {
            Ok(s) => servers.metrics = Some(s),
            Err(e) => tracing::error!(error = %e, "metrics could not be served again"),
        }
    }
    d.handing_over.store(false, Ordering::Release);
}

/// Why a takeover did not happen.
#[derive(Debug)]
pub enum NotTaken {
    /// The running daemon said no (or there is none to ask): nothing changed.
    Refused(String),
    /// The running daemon went away during the handover (killed): none
    /// holds the ports now, so this one starts afresh.
    Gone(String),
}

/// The new daemon's side: what the running one handed over.
#[derive(Debug)]
pub struct Incoming {
    conn: OwnedFd,
    pub control: Option<UnixListener>,
    pub metrics: Option<std::net::TcpListener>,
    fdb: Vec<Entry>,
    ports: Vec<(PortState, Vec<OwnedFd>)>,
}

impl Incoming {
    /// Asks the daemon on `socket` to hand over; its refusal, or a failure,
    /// is the error.
    pub fn ask(settings: &crate::config::Settings) -> Result<Incoming, NotTaken> {
        let path = path_of(&settings.socket);
        let refused = |e: io::Error| NotTaken::Refused(format!("{}: {e}", path.display()));
        let gone = |e: io::Error| NotTaken::Gone(format!("{}: {e}", path.display()));
        let conn = seqpacket().map_err(refused)?;
        rustix::net::connect(&conn, &SocketAddrUnix::new(&path).map_err(|e| refused(e.into()))?).map_err(|e| {
            NotTaken::Refused(format!(
                "no daemon to take over from at {} ({e}); is it running, and does it know --takeover?",
                path.display()
            ))
        })?;
        set_timeout(conn.as_fd(), ANSWER_WITHIN).map_err(refused)?;
        let hello = Msg::Hello { version: VERSION, pid: std::process::id(), runs: runs(settings) };
        send(conn.as_fd(), &hello, &[]).map_err(refused)?;
        // Its answer: gone if it went away, refused if it says nothing in
        // time or speaks a format this daemon does not know.
        let answer = recv(conn.as_fd()).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NotTaken::Refused(format!(
                "the running daemon did not answer within {} s ({}); it runs on unchanged",
                ANSWER_WITHIN.as_secs(),
                path.display()
            )),
            io::ErrorKind::InvalidData => NotTaken::Refused(format!(
                "the running daemon answered in a handover format this one does not know ({e}); it runs on unchanged"
            )),
            _ => gone(e),
        })?;
        set_timeout(conn.as_fd(), Duration::from_secs(30)).map_err(gone)?;
        let (ports, fdb, control, metrics, n) = match answer {
            (Msg::Refused { why }, _) => return Err(NotTaken::Refused(format!("the running daemon refused: {why}"))),
            (Msg::State { ports, fdb, control, metrics, fds }, _) => (ports, fdb, control, metrics, fds),
            (other, _) => return Err(NotTaken::Refused(format!("unexpected {other:?} from the running daemon"))),
        };
        let mut fds = Vec::with_capacity(n);
        while fds.len() < n {
            match recv(conn.as_fd()).map_err(gone)? {
                (Msg::Fds, got) if !got.is_empty() => fds.extend(got),
                (other, _) => return Err(NotTaken::Gone(format!("unexpected {other:?} from the running daemon"))),
            }
        }
        let mut fds = fds.into_iter();
        let ports = ports
            .into_iter()
            .map(|p| {
                let mine = fds.by_ref().take(p.roles.len()).collect();
                (p, mine)
            })
            .collect();
        let control = control.then(|| fds.next()).flatten().map(UnixListener::from);
        let metrics = metrics.then(|| fds.next()).flatten().map(std::net::TcpListener::from);
        Ok(Incoming { conn, control, metrics, fdb, ports })
    }

    /// Puts the ports' descriptors where their opening finds them.
    pub fn give_ports(&mut self, pool: &ub_port::Inherited) {
        for (p, fds) in std::mem::take(&mut self.ports) {
            for (role, fd) in p.roles.iter().zip(fds) {
                match Role::parse(role) {
                    Some(r) => pool.put(&p.name, r, fd),
                    None => {
                        tracing::warn!(port = %p.name, role = %role, "a handed-over descriptor of an unknown kind closed")
                    }
                }
            }
            pool.put_quiet(&p.name, p.quiet);
        }
    }

    /// Learns the old daemon's entries, as old as they were, on the ports
    /// of the same names.
    pub fn give_fdb(&mut self, d: &Daemon) -> usize {
        let mut n = 0;
        for e in std::mem::take(&mut self.fdb) {
            let Some(b) = d.bridge_named(&e.bridge) else { continue };
            let Ok(mac) = e.mac.parse::<ub_wire::Mac>() else { continue };
            let Some(id) = b.sw.ports().iter().flatten().find(|p| p.port.name == e.port).map(|p| p.port.id) else {
                continue;
            };
            let now = b.sw.now_ms();
            let _ = b.sw.fdb.learn(e.vid, mac, id, now.saturating_sub(e.age_ms));
            n += 1;
        }
        n
    }

    /// Tells the old daemon this one serves: it exits. The connection is
    /// this daemon's sign of life until then: keep it open while it runs.
    pub fn ready(self) -> OwnedFd {
        let _ = send(self.conn.as_fd(), &Msg::Ready, &[]);
        self.conn
    }
}
