//! Serving connections: the daemon's control socket, its metrics endpoint
//! and the Docker driver all accept here ([`Server`]), and the last two
//! speak HTTP/1.1 through [`http`].
//!
//! One accept loop: it waits on the listener and on a stop signal of its
//! own (no connecting to itself to wake it), serves each connection on a
//! thread of its own, and at most [`Limits::connections`] at once; a
//! connection beyond that is answered by the caller's `busy` and closed,
//! so no client can make the server take unbounded threads or memory.

pub mod http;

use rustix::event::{PollFd, PollFlags, poll};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A listening socket: TCP (metrics) or Unix (control, Docker).
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// The TCP address it listens on, if it is TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(c, _)| Conn::Tcp(c)),
            Listener::Unix(l) => l.accept().map(|(c, _)| Conn::Unix(c)),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// An accepted connection, blocking, with the server's timeouts set.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_timeouts(&self, t: Duration) {
        let _ = match self {
            Conn::Tcp(c) => c.set_nonblocking(false).and(c.set_read_timeout(Some(t))).and(c.set_write_timeout(Some(t))),
            Conn::Unix(c) => {
                c.set_nonblocking(false).and(c.set_read_timeout(Some(t))).and(c.set_write_timeout(Some(t)))
            }
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(c) => c.read(buf),
            Conn::Unix(c) => c.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(c) => c.write(buf),
            Conn::Unix(c) => c.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(c) => c.flush(),
            Conn::Unix(c) => c.flush(),
        }
    }
}

/// How much a server takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered by `busy` and closed.
    pub connections: usize,
    /// A connection idle (reading or writing) this long is closed.
    pub timeout: Duration,
}

/// What serves a connection, and what tells one over the cap to come back later.
pub type Handler = Arc<dyn Fn(Conn) + Send + Sync>;

/// An accept loop on its own thread; dropping it stops the loop (the
/// connections being served finish on their own, within their timeout).
#[derive(Debug)]
pub struct Server {
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `listener` on thread `name`: each connection on a thread of its
    /// own with `handle`, at most `limits.connections` at once (the rest
    /// get `busy`). A panic in the loop restarts it, one in `handle` closes
    /// that connection only; both are counted in `panics`.
    pub fn start(
        name: &'static str,
        listener: Listener,
        limits: Limits,
        handle: Handler,
        busy: fn(Conn),
        panics: Arc<AtomicU64>,
    ) -> io::Result<Server> {
        listener.set_nonblocking()?;
        let stop =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)?;
        let stop_wait = stop.try_clone()?;
        let active = Arc::new(AtomicUsize::new(0));
        let thread = ub_supervise::spawn(name, panics.clone(), move || {
            accept_loop(&listener, stop_wait.as_fd(), limits, &handle, busy, &active, &panics);
        })?;
        Ok(Server { stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &Listener,
    stop: BorrowedFd<'_>,
    limits: Limits,
    handle: &Handler,
    busy: fn(Conn),
    active: &Arc<AtomicUsize>,
    panics: &Arc<AtomicU64>,
) {
    loop {
        let lfd = listener.fd();
        let mut fds = [PollFd::new(&lfd, PollFlags::IN), PollFd::new(&stop, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "waiting for connections failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        loop {
            let conn = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the connection waits in the backlog; try again shortly.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            };
            conn.set_timeouts(limits.timeout);
            if active.fetch_add(1, Ordering::AcqRel) >= limits.connections {
                active.fetch_sub(1, Ordering::AcqRel);
                busy(conn);
                continue;
            }
            let (handle, count, panics) = (handle.clone(), active.clone(), panics.clone());
            let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(conn))).is_err() {
                    panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("a connection's handler panicked; its connection is closed");
                }
                count.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!("no thread for a connection; it is closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn connections_over_the_cap_are_told_busy_and_the_server_stops_without_a_client() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (entered, held) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(())));
        let gate = held.lock().unwrap();
        let handler: Handler = {
            let (entered, held) = (entered.clone(), held.clone());
            Arc::new(move |mut c: Conn| {
                entered.fetch_add(1, Ordering::SeqCst);
                let _g = held.lock();
                let _ = c.write_all(b"served\n");
            })
        };
        fn busy(mut c: Conn) {
            let _ = c.write_all(b"busy\n");
        }
        let limits = Limits { connections: 2, timeout: Duration::from_secs(5) };
        let s = Server::start("test", Listener::Tcp(l), limits, handler, busy, Arc::default()).unwrap();
        let conns: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t = std::time::Instant::now();
        while entered.load(Ordering::SeqCst) < 2 {
            assert!(t.elapsed() < Duration::from_secs(5), "two connections are served");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut third = String::new();
        TcpStream::connect(addr).unwrap().read_to_string(&mut third).unwrap();
        assert_eq!(third, "busy\n");
        drop(gate);
        for mut c in conns {
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            assert_eq!(out, "served\n");
        }
        let (done, wait) = mpsc::channel();
        std::thread::spawn(move || {
            drop(s);
            let _ = done.send(());
        });
        wait.recv_timeout(Duration::from_secs(5)).expect("the server stops by itself");
    }
}
