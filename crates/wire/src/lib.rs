//! Zero-copy views of the frames userbridge switches: Ethernet II, 802.1Q and
//! 802.1ad tags, ARP, and the loop guard's probe. No I/O, no allocation, no
//! dependencies (serde only with the `serde` feature, for `Mac`).
//!
//! Contract (smoltcp's `wire` style): `new_checked` validates the length once;
//! after that every accessor is infallible and cannot panic.

mod arp;
mod classify;
mod ethernet;
mod mac;
mod probe;

pub use arp::{ArpOp, ArpPacket};
pub use classify::{Classified, DropReason, classify};
pub use ethernet::{
    ETH_HLEN, ETHERTYPE_8021AD, ETHERTYPE_8021Q, ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetFrame, VLAN_HLEN, VlanTag,
};
pub use mac::{Mac, ParseMacError};
pub use probe::{LoopProbe, PROBE_ETHERTYPE, PROBE_LEN, PROBE_MAGIC, probe_frame};

/// A view could not be built over the given bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the fixed header needs.
    Truncated,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Truncated => f.write_str("truncated header"),
        }
    }
}

impl std::error::Error for WireError {}
