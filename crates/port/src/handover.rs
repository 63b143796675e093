//! A port handed from one daemon to the next (`run --takeover`): the
//! descriptors that carry its frames (its receive sockets, its TAP queues)
//! and its claim travel to the new process, so what waits in them is read
//! there, once, and the interface is never without its switch.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// What a handed-over descriptor is to its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An AF_PACKET receive half's socket (in its fanout group, promiscuous).
    Rx,
    /// A socket bound to one protocol, read after tc ingress (`afpacket::shaped`).
    AfterTc,
    /// A TAP queue (the host port's, or a TAP port's).
    Tap,
    /// The port's claim file, locked.
    Claim,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Rx => "rx",
            Role::AfterTc => "after_tc",
            Role::Tap => "tap",
            Role::Claim => "claim",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Rx, Role::AfterTc, Role::Tap, Role::Claim].into_iter().find(|r| r.as_str() == s)
    }
}

/// Descriptors received from the daemon before this one, by port and
/// role, for the ports to open on instead of making their own; and the
/// IP settings each port's interface had before it became one.
#[derive(Debug, Default)]
pub struct Inherited {
    fds: Mutex<HashMap<(String, Role), Vec<OwnedFd>>>,
    quiet: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// Until then a claim held by another daemon is waited for: that
    /// daemon was killed during a handover and is still exiting.
    claims_free_by: Mutex<Option<std::time::Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inherited {
    /// Adds `fd`, port `port`'s next descriptor of `role`.
    pub fn put(&self, port: &str, role: Role, fd: OwnedFd) {
        lock(&self.fds).entry((port.to_string(), role)).or_default().push(fd);
    }

    /// What the port's interface had before it became a port ([`crate::Quiet`]).
    pub fn put_quiet(&self, port: &str, changed: Vec<(String, String)>) {
        lock(&self.quiet).insert(port.to_string(), changed);
    }

    /// Takes port `port`'s descriptors of `role`, in the order they came.
    pub(crate) fn take(&self, port: &str, role: Role) -> Vec<OwnedFd> {
        lock(&self.fds).remove(&(port.to_string(), role)).unwrap_or_default()
    }

    pub(crate) fn take_quiet(&self, port: &str) -> Option<Vec<(String, String)>> {
        lock(&self.quiet).remove(port)
    }

    /// Waits up to `d` for claims another daemon still holds (it was killed
    /// during a handover and its descriptors are still closing).
    pub fn wait_for_claims(&self, d: std::time::Duration) {
        *lock(&self.claims_free_by) = Some(std::time::Instant::now() + d);
    }

    pub(crate) fn claims_free_by(&self) -> Option<std::time::Instant> {
        *lock(&self.claims_free_by)
    }

    /// Closes what no port took; the ports it was for, each once.
    pub fn clear(&self) -> Vec<String> {
        let mut left: Vec<String> = lock(&self.fds).drain().map(|((p, _), _)| p).collect();
        lock(&self.quiet).clear();
        left.sort();
        left.dedup();
        left
    }
}
