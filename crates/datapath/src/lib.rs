//! The datapath: reader threads pull a batch of frames from their port and
//! run it through the forwarding path ([`Forwarder`]): a stage that
//! classifies, applies policies, learns and decides ([`Forwarder::stage`]),
//! then a flush that hands each egress port its batch in one syscall.
//!
//! The hot path does not allocate (batches are reused), does not log per
//! frame, and takes no lock: the port table (ports and their policies) is an
//! RCU-style `ArcSwap` snapshot loaded once per batch, the FDB's common case
//! is a read, counters are atomics added once per batch. A port has one
//! reader per CPU by default, each supervised: a panic is counted and the
//! reader restarted.

mod counters;
mod decide;
mod forward;
mod loopguard;
mod neigh;
mod policy;
mod port;
mod reader;
mod storm;
mod switch;
mod sys;
mod trace;
mod vlan;

pub use counters::{CounterSnapshot, DropKind, LocalCounts, PortCounters};
pub use decide::{Decision, decide, decide_in};
pub use forward::{Forwarder, Staged};
pub use loopguard::{LoopDetect, LoopGuard};
pub use neigh::{ArpVerdict, NeighEntry, NeighTable, arp_reply, arp_verdict};
pub use policy::{Excluded, Flags, Policy, VlanSet, egress};
pub use port::{MirrorSink, MirrorTo, Port, PortSnapshot, PortTable, Slot};
pub use reader::{Member, ReaderHandle, Restart, hold_readers, spawn_reader, spawn_reader_at};
pub use storm::{FloodClass, StormGate, StormLimits};
pub use switch::{Switch, SwitchError, SwitchStats};
pub use trace::{Trace, TraceEgress, TraceStep};
pub use ub_fdb::PortId;
pub use ub_proto::{Backend, PortState};
pub use vlan::{QTag, VlanIn};
