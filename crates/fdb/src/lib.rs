//! The forwarding database (FDB): which port each (VLAN, MAC) sits behind.
//!
//! Policy without I/O: every operation takes the current time as an argument
//! (`now`, milliseconds on any monotonic clock), so ageing is tested without
//! sleeping. The table is shared by all port readers: the common case (a known
//! source refreshing its entry, a known destination looked up) is a read of
//! the map plus an atomic store; only a new station, a move, ageing and
//! flushing write to the map.
//!
//! The map itself sits behind [`FdbMap`], with a `dashmap` and a `papaya`
//! implementation compared in `benches/fdb.rs`; [`DefaultFdb`] is the winner.

mod map;
mod table;

pub use map::{DashMapBackend, FdbMap, PapayaBackend};
pub use table::{Entry, EntryView, Fdb, FdbConfig, FdbStats, Learn, Refused};

/// Index of a switch port. Ports are numbered densely from 0.
pub type PortId = u16;

/// The largest number of ports one switch can hold (port ids are below it).
pub const MAX_PORTS: usize = 4096;

/// The map the datapath's table uses, chosen by `benches/fdb.rs` and
/// `benches/datapath.rs` (see docs/benchmarks-history.md).
#[cfg(not(feature = "dashmap-default"))]
pub type DefaultMap = PapayaBackend;
/// The table the datapath uses (`dashmap-default` feature: for comparison).
#[cfg(feature = "dashmap-default")]
pub type DefaultMap = DashMapBackend;
pub type DefaultFdb = Fdb<DefaultMap>;

/// Packs (VLAN, MAC) into one u64 key: VID in bits 48..60, MAC in 0..48.
#[inline]
pub fn key(vid: u16, mac: ub_wire::Mac) -> u64 {
    ((vid as u64 & 0x0fff) << 48) | mac.to_u64()
}

/// Unpacks a key made by [`key`].
pub fn unkey(k: u64) -> (u16, ub_wire::Mac) {
    let b = k.to_be_bytes();
    ((k >> 48) as u16 & 0x0fff, ub_wire::Mac([b[2], b[3], b[4], b[5], b[6], b[7]]))
}
