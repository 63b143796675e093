//! Storm control: how many flooded frames per second each port may send
//! into the switch, per class of flood. Only flooded frames touch it; known
//! unicast never does.

use crate::DropKind;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use ub_wire::Mac;

/// Why a frame is flooded, which decides its storm limit and which ports'
/// flood flags apply (`bcast_flood`, `mcast_flood`, `flood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloodClass {
    Broadcast = 0,
    Multicast = 1,
    /// Unicast to a destination the FDB does not know.
    UnknownUnicast = 2,
}

impl FloodClass {
    pub const ALL: [FloodClass; 3] = [FloodClass::Broadcast, FloodClass::Multicast, FloodClass::UnknownUnicast];

    /// The class of a flood to `dst`.
    #[inline]
    pub fn of(dst: Mac) -> FloodClass {
        if dst.is_broadcast() {
            FloodClass::Broadcast
        } else if dst.is_multicast() {
            FloodClass::Multicast
        } else {
            FloodClass::UnknownUnicast
        }
    }

    /// What a frame over this class's storm limit is counted as.
    pub fn storm_drop(self) -> DropKind {
        match self {
            FloodClass::Broadcast => DropKind::StormBroadcast,
            FloodClass::Multicast => DropKind::StormMulticast,
            FloodClass::UnknownUnicast => DropKind::StormUnknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FloodClass::Broadcast => "broadcast",
            FloodClass::Multicast => "multicast",
            FloodClass::UnknownUnicast => "unknown unicast",
        }
    }
}

pub use ub_proto::StormLimits;

impl FloodClass {
    /// This class's limit in `l`.
    pub fn pps(self, l: &StormLimits) -> u32 {
        match self {
            FloodClass::Broadcast => l.broadcast_pps,
            FloodClass::Multicast => l.multicast_pps,
            FloodClass::UnknownUnicast => l.unknown_unicast_pps,
        }
    }
}

/// Storm control for one class of one port, shared by all the port's
/// readers: GCRA, the token bucket as one atomic "theoretical arrival time"
/// in µs.
#[derive(Debug, Default)]
pub struct StormGate(AtomicU64);

impl StormGate {
    /// Takes one frame's pass at `now_ms`; false if the class is over `pps`
    /// (0 = no limit). A tenth of a second's worth of burst, at least 10 frames.
    #[inline]
    pub fn take(&self, pps: u32, now_ms: u64) -> bool {
        if pps == 0 {
            return true;
        }
        let t = now_ms.saturating_mul(1000);
        let interval = (1_000_000 / u64::from(pps)).max(1);
        let burst = (u64::from(pps) / 10).max(10);
        let limit = t.saturating_add(burst * interval);
        let mut tat = self.0.load(Relaxed);
        loop {
            let next = tat.max(t) + interval;
            if next > limit {
                return false;
            }
            match self.0.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(now) => tat = now,
            }
        }
    }
}

impl StormGate {
    /// Whether [`StormGate::take`] would pass a frame at `now_ms`, taking nothing.
    pub fn would_pass(&self, pps: u32, now_ms: u64) -> bool {
        if pps == 0 {
            return true;
        }
        let t = now_ms.saturating_mul(1000);
        let interval = (1_000_000 / u64::from(pps)).max(1);
        let burst = (u64::from(pps) / 10).max(10);
        self.0.load(Relaxed).max(t) + interval <= t.saturating_add(burst * interval)
    }
}

/// A port's three gates, one per class.
#[derive(Debug, Default)]
pub struct PortStorm([StormGate; 3]);

impl PortStorm {
    #[inline]
    pub fn take(&self, c: FloodClass, limits: &StormLimits, now_ms: u64) -> bool {
        self.0[c as usize].take(c.pps(limits), now_ms)
    }

    pub fn would_pass(&self, c: FloodClass, limits: &StormLimits, now_ms: u64) -> bool {
        self.0[c as usize].would_pass(c.pps(limits), now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_gate_allows_a_tenth_of_a_second_then_the_rate() {
        let g = StormGate::default();
        // 1000 pps: a burst of 100 at once, then one per ms.
        assert_eq!((0..150).filter(|_| g.take(1000, 5_000)).count(), 100);
        assert!(!g.take(1000, 5_000));
        assert_eq!((0..50).filter(|_| g.take(1000, 5_010)).count(), 10);
        // 10 pps: at least 10 frames of burst, then one per 100 ms.
        let g = StormGate::default();
        assert_eq!((0..20).filter(|_| g.take(10, 1_000)).count(), 10);
        assert!(!g.take(10, 1_099));
        assert!(g.take(10, 1_100));
        // 0 = no limit.
        assert!((0..1000).all(|_| g.take(0, 0)));
    }

    #[test]
    fn storm_gate_is_one_limit_for_several_readers() {
        let g = std::sync::Arc::new(StormGate::default());
        let taken: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let g = g.clone();
                    s.spawn(move || (0..1000).filter(|_| g.take(1000, 7_000)).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 100, "four readers share one burst of 100");
    }

    #[test]
    fn classes_and_their_limits() {
        assert_eq!(FloodClass::of(Mac::BROADCAST), FloodClass::Broadcast);
        assert_eq!(FloodClass::of(Mac([0x01, 0, 0x5e, 0, 0, 1])), FloodClass::Multicast);
        assert_eq!(FloodClass::of(Mac([2, 0, 0, 0, 0, 1])), FloodClass::UnknownUnicast);
        let l = StormLimits { broadcast_pps: 1, multicast_pps: 2, unknown_unicast_pps: 3 };
        assert_eq!(FloodClass::ALL.map(|c| c.pps(&l)), [1, 2, 3]);
    }
}
