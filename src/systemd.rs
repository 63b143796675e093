//! What the daemon tells systemd under `Type=notify` (`$NOTIFY_SOCKET`;
//! nothing without it): ready once it serves, reloading while an upgrade
//! runs, the new main process before it hands over and exits, stopping.
//! The unit: docs/systemd/userbridge.service; docs/operations.md.

use sd_notify::NotifyState;
use std::os::fd::AsFd;
use std::time::Duration;

fn tell(what: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(what) {
        tracing::warn!(error = %e, "telling systemd");
    }
}

/// The daemon serves (a start, or an upgrade that ended without a handover).
pub fn ready() {
    tell(&[NotifyState::Ready, NotifyState::Status("forwarding")]);
}

/// An upgrade began: the service reloads until [`ready`] or [`handed_to`].
pub fn reloading() {
    let mut v = vec![NotifyState::Reloading, NotifyState::Status("upgrading: a new daemon takes over")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        v.push(now);
    }
    tell(&v);
}

/// The daemon stops (SIGTERM, SIGINT).
pub fn stopping() {
    tell(&[NotifyState::Stopping]);
}

/// `pid` took the ports over: it is the service's main process now. Waits
/// (up to 5 s) until systemd has read this, so that the exit that follows
/// is not taken for the main process's (which `Restart=` would restart).
pub fn handed_to(pid: u32) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    tell(&[NotifyState::MainPid(pid), NotifyState::Ready, NotifyState::Status("forwarding")]);
    if let Err(e) = barrier(Duration::from_secs(5)) {
        tracing::warn!(error = %e, "systemd did not confirm the new main process");
    }
}

/// `BARRIER=1` (sd_notify_barrier(3)): systemd closes the descriptor sent
/// with it once it has read every message before it.
fn barrier(within: Duration) -> std::io::Result<()> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let (reader, writer) = std::io::pipe()?;
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[writer.as_fd()])?;
    drop(writer);
    let timeout = Timespec { tv_sec: i64::try_from(within.as_secs()).unwrap_or(i64::MAX), tv_nsec: 0 };
    let mut fds = [PollFd::new(&reader, PollFlags::HUP)];
    match rustix::event::poll(&mut fds, Some(&timeout))? {
        0 => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to BARRIER=1")),
        _ => Ok(()),
    }
}
