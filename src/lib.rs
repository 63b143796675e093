//! The userbridge daemon as a library: configuration, the control socket,
//! the daemon's wiring, metrics, mirroring and the lab commands. The
//! `userbridge` binary (src/main.rs) is the command line over it; the fuzz
//! targets (fuzz/) drive the control protocol through it. The protocol's
//! types are `ub_proto`'s, shared with the CLI and the CNI plugin.

pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
mod links;
mod metrics;
mod mirror;
pub mod output;
pub mod state;

pub use ub_proto::DEFAULT_SOCKET;
