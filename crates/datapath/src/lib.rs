//! The datapath: one reader thread per port pulls a batch of frames, learns
//! their sources, decides where each goes ([`decide`]) and hands per-egress
//! batches to the egress ports' batched writers (one syscall per batch).
//!
//! The hot path does not allocate (batches are reused), does not log per
//! frame, and takes no lock: the port table is an RCU-style `ArcSwap`
//! snapshot, the FDB's common case is a read, counters are atomics added once
//! per batch.

mod counters;
mod decide;
mod forward;
mod loopguard;
mod reader;
mod switch;

pub use counters::{CounterSnapshot, DropKind, PortCounters};
pub use decide::{Decision, decide, decide_in};
pub use forward::Forwarder;
pub use loopguard::{LoopDetect, LoopGuard, PROBE_ETHERTYPE};
pub use reader::{Placement, ReaderHandle, spawn_reader, spawn_reader_at};
pub use switch::{MirrorSink, MirrorTo, Port, PortKind, PortSnapshot, PortState, StormLimits, Switch, SwitchError};
pub use ub_fdb::PortId;
