//! `userbridge upgrade`: the running daemon starts its binary anew (the
//! file it was started from, which a package upgrade has replaced) with its
//! own arguments and `--takeover`; the new process takes the ports over
//! (src/takeover.rs) and the old one exits. The command waits for the end:
//! the new daemon answering on the control socket, or the old one saying
//! the new one exited first. It is what the systemd unit's `ExecReload=`
//! runs (docs/systemd/userbridge.service).

use crate::daemon::Daemon;
use crate::lock;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use ub_proto::{Client, ClientError, FailedUpgrade, Upgrade, Upgrading, Version};

/// The binary's path and the arguments, as the daemon was started.
static LAUNCH: OnceLock<(PathBuf, Vec<OsString>)> = OnceLock::new();

/// Remembers how this daemon was started, while its path still names its
/// file (an upgrade replaces that file; `/proc/self/exe` then says
/// "(deleted)"). Called first thing by `run`.
pub fn remember() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = LAUNCH.set((exe, std::env::args_os().skip(1).collect()));
    }
}

/// Starts the new daemon (in the namespace this one started in, where its
/// `--netns` is looked up) and a thread that waits for it: if it exits
/// while this daemon still runs, it did not take over.
pub fn begin(d: &Daemon) -> Result<Upgrading, String> {
    let Some((exe, args)) = LAUNCH.get() else {
        return Err("this daemon does not know the binary it was started from".into());
    };
    let mut up = lock(&d.upgrade);
    if let Some(pid) = up.running {
        return Err(format!("an upgrade is under way (new daemon pid {pid})"));
    }
    let mut args = args.clone();
    if !args.iter().any(|a| a == "--takeover") {
        args.push("--takeover".into());
    }
    let spawn = || Command::new(exe).args(&args).stdin(Stdio::null()).spawn();
    let mut child = ub_netlink::NetNs::run_in(d.opener.start_ns.as_deref(), spawn)
        .map_err(|e| format!("entering the start namespace: {e}"))?
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let pid = child.id();
    up.running = Some(pid);
    drop(up);
    tracing::info!(pid, binary = %exe.display(), "upgrade: a new daemon started to take over");
    crate::systemd::reloading();
    let waiter = {
        let (handing_over, upgrade) = (d.handing_over.clone(), d.upgrade.clone());
        move || {
            let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
            // Still here: it did not take over. A handover it began is undone first.
            let start = Instant::now();
            while handing_over.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
            tracing::warn!(pid, status = %status, "upgrade: the new daemon exited before it took over; this one forwards on");
            let mut up = lock(&upgrade);
            up.running = None;
            up.failed = Some(FailedUpgrade { pid, why: status });
            drop(up);
            crate::systemd::ready();
        }
    };
    if let Err(e) = std::thread::Builder::new().name("upgrade".into()).spawn(waiter) {
        // Not waited for: it may still take over; a later upgrade is refused.
        tracing::warn!(pid, error = %e, "upgrade: cannot wait for the new daemon");
    }
    Ok(Upgrading { pid, from: std::process::id(), binary: exe.display().to_string() })
}

/// The client: asks the daemon on `socket` to upgrade and waits, at most
/// `within`, for the new daemon to answer there.
pub fn run(socket: &Path, within: Duration) -> Result<Upgrading, String> {
    let start = Instant::now();
    let up =
        Client::connect(socket).and_then(|mut c| c.call_patiently(Upgrade {}, within)).map_err(|e| e.to_string())?;
    loop {
        match Client::connect(socket).and_then(|mut c| c.call_patiently(Version {}, within)) {
            Ok(v) if v.pid == up.pid => return Ok(up),
            Ok(v) if v.failed_upgrade.as_ref().is_some_and(|f| f.pid == up.pid) => {
                let why = v.failed_upgrade.map(|f| f.why).unwrap_or_default();
                return Err(format!(
                    "the new daemon (pid {}, {}) exited ({why}) before it took over; pid {} forwards on (its log says why)",
                    up.pid, up.binary, up.from
                ));
            }
            // The old daemon exiting, the new one not serving yet: asked again.
            Ok(_) | Err(ClientError::Unreachable { .. } | ClientError::Io { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        if start.elapsed() > within {
            return Err(format!(
                "no outcome within {}s: pid {} was to take over from pid {}",
                within.as_secs(),
                up.pid,
                up.from
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
