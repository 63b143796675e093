use ub_fdb::{Fdb, FdbMap, PortId};
use ub_wire::Classified;

use crate::DropKind;

/// Where a frame goes. Policy only: no I/O, time passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// To this one port.
    Unicast(PortId),
    /// To every port but the ingress one.
    Flood,
    Drop(DropKind),
}

/// The forwarding decision of a learning bridge: broadcast, multicast and
/// unknown unicast flood; known unicast goes to its port; a destination
/// behind the ingress port is dropped (never reflected) unless the port has
/// hairpin on.
#[inline]
pub fn decide<M: FdbMap>(fdb: &Fdb<M>, ingress: PortId, hairpin: bool, c: &Classified, now: u64) -> Decision {
    decide_in(fdb, &fdb.guard(), ingress, hairpin, c, now)
}

/// [`decide`] under an FDB guard the caller holds across a batch.
#[inline]
pub fn decide_in<M: FdbMap>(
    fdb: &Fdb<M>,
    g: &M::Guard<'_>,
    ingress: PortId,
    hairpin: bool,
    c: &Classified,
    now: u64,
) -> Decision {
    if c.dst.is_multicast() {
        return Decision::Flood;
    }
    match fdb.lookup_in(g, c.vid, c.dst, now) {
        Some(p) if p == ingress && !hairpin => Decision::Drop(DropKind::SamePort),
        Some(p) => Decision::Unicast(p),
        None => Decision::Flood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ub_fdb::{DefaultFdb, FdbConfig};
    use ub_wire::Mac;

    const A: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 2]);

    #[test]
    fn bridge_rules() {
        let fdb = DefaultFdb::new(FdbConfig::default());
        let c = |dst, vid| Classified { dst, src: A, vid };
        assert_eq!(decide(&fdb, 0, false, &c(B, 0), 0), Decision::Flood);
        assert_eq!(decide(&fdb, 0, false, &c(Mac::BROADCAST, 0), 0), Decision::Flood);
        assert_eq!(decide(&fdb, 0, false, &c(Mac([0x33, 0x33, 0, 0, 0, 1]), 0), 0), Decision::Flood);
        fdb.learn(0, B, 1, 0);
        assert_eq!(decide(&fdb, 0, false, &c(B, 0), 0), Decision::Unicast(1));
        assert_eq!(decide(&fdb, 1, false, &c(B, 0), 0), Decision::Drop(DropKind::SamePort));
        // Hairpin: back out of the port it came in on.
        assert_eq!(decide(&fdb, 1, true, &c(B, 0), 0), Decision::Unicast(1));
        // Another VLAN does not know B.
        assert_eq!(decide(&fdb, 0, false, &c(B, 5), 0), Decision::Flood);
        // Expired: flood again.
        assert_eq!(decide(&fdb, 0, false, &c(B, 0), 300_000), Decision::Flood);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use ub_fdb::{DefaultFdb, FdbConfig, PortId};
    use ub_wire::Mac;

    proptest! {
        // Whatever the table holds: never back to the ingress port; group
        // addresses always flood; a known unicast goes to its port.
        #[test]
        fn never_reflects(
            learned in proptest::collection::vec((0u8..16, 0u16..4, 0u16..3), 0..40),
            ingress in 0u16..4,
            dst in 0u8..20,
            group in any::<bool>(),
            vid in 0u16..3,
        ) {
            let fdb = DefaultFdb::new(FdbConfig::default());
            for (m, port, v) in &learned {
                fdb.learn(*v, Mac([2, 0, 0, 0, 0, *m]), *port as PortId, 0);
            }
            let dst = Mac([if group { 1 } else { 2 }, 0, 0, 0, 0, dst]);
            let c = Classified { dst, src: Mac([2, 0, 0, 0, 1, 1]), vid };
            match decide(&fdb, ingress, false, &c, 1) {
                Decision::Unicast(p) => {
                    prop_assert_ne!(p, ingress);
                    prop_assert!(!group);
                    prop_assert_eq!(fdb.lookup(vid, dst, 1), Some(p));
                }
                Decision::Drop(k) => {
                    prop_assert_eq!(k, DropKind::SamePort);
                    prop_assert_eq!(fdb.lookup(vid, dst, 1), Some(ingress));
                }
                Decision::Flood => prop_assert!(group || fdb.lookup(vid, dst, 1).is_none()),
            }
        }
    }
}
