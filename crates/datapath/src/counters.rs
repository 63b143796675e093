use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was not forwarded (or not to one port). Counted per port;
/// [`DropKind::as_str`] is the one place reasons are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropKind {
    /// Shorter than an Ethernet header (ingress).
    Runt,
    /// 802.1Q/802.1ad tag cut off (ingress).
    TruncatedVlan,
    /// Multicast, broadcast or all-zero source (ingress).
    InvalidSrc,
    /// 01:80:c2:00:00:0X destination, never forwarded by bridges (ingress).
    LinkLocal,
    /// The destination sits behind the ingress port (ingress).
    SamePort,
    /// The port captured only part of the frame (ingress).
    Truncated,
    /// Larger than the egress port's MTU (egress).
    TooBig,
    /// The egress port's kernel refused it: buffer full or link gone (egress).
    TxError,
    /// The egress port is down (egress).
    PortDown,
    /// The kernel dropped it before the reader saw it: RX ring full (ingress).
    RingFull,
    /// Its source is a station pinned on another port for flapping: most
    /// likely a copy going round a loop (ingress).
    Flapping,
    /// Over the port's broadcast storm limit (ingress).
    StormBroadcast,
    /// Over the port's multicast storm limit (ingress).
    StormMulticast,
    /// Over the port's unknown-unicast flood limit (ingress).
    StormUnknown,
    /// The port is blocked as part of a loop (ingress and egress).
    LoopBlocked,
    /// From a locked port, and not from one of its own stations (ingress).
    Locked,
    /// Known unicast from an isolated port to another isolated port (ingress).
    Isolated,
    /// VLAN filtering: an untagged frame on a port with no PVID, a VID the
    /// port is not a member of, or known unicast to a port outside the VLAN
    /// (ingress).
    Vlan,
    /// The kernel's side of the netfilter port sent a frame of its own (a
    /// multicast report), not one it let through (ingress).
    Kernel,
}

impl DropKind {
    pub const ALL: [DropKind; 19] = [
        DropKind::Runt,
        DropKind::TruncatedVlan,
        DropKind::InvalidSrc,
        DropKind::LinkLocal,
        DropKind::SamePort,
        DropKind::Truncated,
        DropKind::TooBig,
        DropKind::TxError,
        DropKind::PortDown,
        DropKind::RingFull,
        DropKind::Flapping,
        DropKind::StormBroadcast,
        DropKind::StormMulticast,
        DropKind::StormUnknown,
        DropKind::LoopBlocked,
        DropKind::Locked,
        DropKind::Isolated,
        DropKind::Vlan,
        DropKind::Kernel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::Runt => "runt",
            DropKind::TruncatedVlan => "truncated_vlan",
            DropKind::InvalidSrc => "invalid_src",
            DropKind::LinkLocal => "link_local",
            DropKind::SamePort => "same_port",
            DropKind::Truncated => "truncated",
            DropKind::TooBig => "too_big",
            DropKind::TxError => "tx_error",
            DropKind::PortDown => "port_down",
            DropKind::RingFull => "ring_full",
            DropKind::Flapping => "flapping",
            DropKind::StormBroadcast => "storm_broadcast",
            DropKind::StormMulticast => "storm_multicast",
            DropKind::StormUnknown => "storm_unknown",
            DropKind::LoopBlocked => "loop_blocked",
            DropKind::Locked => "locked",
            DropKind::Isolated => "isolated",
            DropKind::Vlan => "vlan",
            DropKind::Kernel => "kernel",
        }
    }
}

impl From<ub_wire::DropReason> for DropKind {
    fn from(r: ub_wire::DropReason) -> DropKind {
        match r {
            ub_wire::DropReason::Runt => DropKind::Runt,
            ub_wire::DropReason::TruncatedVlan => DropKind::TruncatedVlan,
            ub_wire::DropReason::InvalidSource => DropKind::InvalidSrc,
            ub_wire::DropReason::LinkLocal => DropKind::LinkLocal,
        }
    }
}

/// Per-port counters, shared by every reader that touches the port.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames received here that were flooded (broadcast, multicast, unknown unicast).
    pub flooded: AtomicU64,
    /// Times one of the port's readers panicked.
    pub reader_panics: AtomicU64,
    drops: [AtomicU64; DropKind::ALL.len()],
}

impl PortCounters {
    #[inline]
    pub fn drop_n(&self, k: DropKind, n: u64) {
        if n != 0 {
            self.drops[k as usize].fetch_add(n, Relaxed);
        }
    }

    pub fn drops(&self, k: DropKind) -> u64 {
        self.drops[k as usize].load(Relaxed)
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            rx_frames: self.rx_frames.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            flooded: self.flooded.load(Relaxed),
            reader_panics: self.reader_panics.load(Relaxed),
            drops: DropKind::ALL.iter().map(|&k| (k.as_str(), self.drops(k))).collect(),
        }
    }
}

/// A copy of a port's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub flooded: u64,
    pub reader_panics: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

/// Per-batch counts for the ingress port, added to the shared atomics once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalCounts {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub flooded: u64,
    pub drops: [u64; DropKind::ALL.len()],
}

impl LocalCounts {
    /// Frames of this batch dropped for `k`.
    pub fn dropped(&self, k: DropKind) -> u64 {
        self.drops[k as usize]
    }

    #[inline]
    pub(crate) fn drop(&mut self, k: DropKind) {
        self.drops[k as usize] += 1;
    }

    pub fn publish(&mut self, c: &PortCounters) {
        c.rx_frames.fetch_add(self.rx_frames, Relaxed);
        c.rx_bytes.fetch_add(self.rx_bytes, Relaxed);
        if self.flooded != 0 {
            c.flooded.fetch_add(self.flooded, Relaxed);
        }
        for (k, n) in DropKind::ALL.iter().zip(self.drops) {
            c.drop_n(*k, n);
        }
        *self = LocalCounts::default();
    }
}
