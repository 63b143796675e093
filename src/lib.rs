//! The userbridge daemon as a library: configuration (`config`), the
//! running switch and what changes it (`daemon`), its start-up and loop
//! (`start`), the control socket (`control`), metrics (`metrics`), the
//! status both read (`status`), link watching (`watch`), pcap mirroring,
//! the state file, text output and the lab commands. The `userbridge`
//! binary (src/main.rs) is the command line over it; the fuzz targets
//! drive the control protocol through it.
//!
//! Who may call whom (docs/architecture.md): `start` wires `daemon`,
//! `control`, `metrics` and `watch` together; `control` and `metrics`
//! read `daemon` (through `status`); `watch` knows only netlink and hands
//! what it sees to `start`'s loop; `daemon` calls none of them.

pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
mod metrics;
mod mirror;
pub mod output;
pub mod start;
pub mod state;
mod status;
mod watch;

pub use ub_proto::DEFAULT_SOCKET;
