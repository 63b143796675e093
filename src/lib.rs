//! The userbridge daemon as a library: configuration (`config`), its
//! bridges (`bridge`: one L2 domain each, with its ports and host port),
//! the daemon that holds them and what changes them (`daemon`), its
//! start-up and loop (`start`), the control socket (`control`), metrics
//! (`metrics`), the status both read (`status`), link watching (`watch`),
//! pcap mirroring, the state file, text output, the lab commands, and an
//! upgrade without an outage (`takeover`, `upgrade`, `systemd`). The
//! `userbridge` binary (src/main.rs) is the command line over it; the fuzz
//! targets drive the control protocol through it.
//!
//! Who may call whom (docs/architecture.md): `start` wires `daemon`,
//! `control`, `metrics` and `watch` together; `control` and `metrics`
//! read `daemon` (through `status`); `daemon` holds `bridge`es; `watch`
//! knows only netlink and hands what it sees to `start`'s loop; `daemon`
//! and `bridge` call none of them.

pub mod bridge;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
mod metrics;
mod mirror;
pub mod netfilter;
pub mod output;
pub mod start;
pub mod state;
mod status;
mod systemd;
pub mod takeover;
pub mod upgrade;
mod watch;

pub use ub_proto::DEFAULT_SOCKET;

/// A mutex's guard, also after a thread panicked holding it (every
/// critical section leaves its data whole).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
