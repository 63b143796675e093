//! Per-port policy as the datapath applies it: the [`PortPolicy`] a user
//! gave, compiled once into what the per-frame path tests. A port's policy
//! sits next to the port in the switch's port table, so a batch reads every
//! port's policy with the one table load it makes anyway; a change replaces
//! the table (RCU), never a field under a reader.
//!
//! The rules are the Linux bridge's (`br_forward.c`'s `should_deliver`,
//! `br_flood`, `br_input.c`'s locked-port check); docs/policies.md lists
//! each knob with its `bridge` command.

use crate::storm::FloodClass;
use ub_fdb::PortId;
use ub_proto::PortPolicy;
use ub_wire::Mac;

/// What [`egress`] needs of a port, in one byte: kept inline in the port
/// table's slot, so deciding a frame's egress ports reads no other memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    const ISOLATED: u8 = 1;
    const HAIRPIN: u8 = 2;
    /// Does not take floods of class c: bit `NO_FLOOD << c`.
    const NO_FLOOD: u8 = 4;
    const LOCKED: u8 = 32;
    const NO_LEARNING: u8 = 64;
    const NEIGH_SUPPRESS: u8 = 128;
    /// The bits [`egress`] reads.
    const EGRESS: u8 = Self::ISOLATED | Self::HAIRPIN | (7 * Self::NO_FLOOD);

    #[inline]
    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    #[inline]
    pub fn hairpin(self) -> bool {
        self.has(Self::HAIRPIN)
    }

    #[inline]
    pub fn takes_flood(self, c: FloodClass) -> bool {
        !self.has(Self::NO_FLOOD << c as u8)
    }

    #[inline]
    pub fn neigh_suppress(self) -> bool {
        self.has(Self::NEIGH_SUPPRESS)
    }

    #[inline]
    pub fn locked(self) -> bool {
        self.has(Self::LOCKED)
    }
}

/// A port's VLAN membership, compiled for the per-frame test: one bit per
/// VID for membership and one for untagged egress (1 KiB per port, read
/// only while the switch filters VLANs).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet {
    member: Box<[u64; 64]>,
    untagged: Box<[u64; 64]>,
    pvid: Option<u16>,
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vids: Vec<u16> = (1..4095).filter(|v| self.member(*v)).collect();
        f.debug_struct("VlanSet").field("member", &vids).field("pvid", &self.pvid).finish()
    }
}

impl VlanSet {
    pub fn new(entries: &[ub_proto::VlanEntry]) -> VlanSet {
        let mut s = VlanSet { member: Box::new([0; 64]), untagged: Box::new([0; 64]), pvid: None };
        for e in entries {
            let (w, b) = (usize::from(e.vid >> 6), e.vid & 63);
            s.member[w] |= 1 << b;
            if e.untagged {
                s.untagged[w] |= 1 << b;
            }
            if e.pvid {
                s.pvid = Some(e.vid);
            }
        }
        s
    }

    /// Whether the port is a member of `vid` (VID 0 and 4095 never are).
    #[inline]
    pub fn member(&self, vid: u16) -> bool {
        vid < 4096 && self.member[usize::from(vid >> 6)] & (1 << (vid & 63)) != 0
    }

    /// Whether frames of `vid` leave the port without a tag.
    #[inline]
    pub fn untagged(&self, vid: u16) -> bool {
        vid < 4096 && self.untagged[usize::from(vid >> 6)] & (1 << (vid & 63)) != 0
    }

    /// The VLAN untagged frames arriving on the port belong to.
    #[inline]
    pub fn pvid(&self) -> Option<u16> {
        self.pvid
    }
}

/// A port's policy, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// As given (what `port list` shows).
    pub spec: PortPolicy,
    pub flags: Flags,
    /// VLAN membership, applied while the switch filters VLANs.
    pub vlans: VlanSet,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::compile(PortPolicy::default()).unwrap_or_else(|_| unreachable!("the default policy is valid"))
    }
}

/// Why a frame does not leave by a port (what `trace` explains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    /// It came in there, and the port has no hairpin.
    Ingress,
    /// The port is not a member of the frame's VLAN.
    NotMember,
    /// Both ports are isolated.
    Isolated,
    /// The port does not take floods of this class.
    FloodOff(FloodClass),
}

impl Excluded {
    pub fn as_str(self) -> &'static str {
        match self {
            Excluded::Ingress => "it is the ingress port (hairpin off)",
            Excluded::NotMember => "not a member of the frame's VLAN",
            Excluded::Isolated => "both ports are isolated",
            Excluded::FloodOff(FloodClass::Broadcast) => "bcast_flood is off",
            Excluded::FloodOff(FloodClass::Multicast) => "mcast_flood is off",
            Excluded::FloodOff(FloodClass::UnknownUnicast) => "flood is off",
        }
    }
}

impl Policy {
    /// Checks and compiles `spec`.
    pub fn compile(spec: PortPolicy) -> Result<Policy, ub_proto::PolicyError> {
        spec.validate()?;
        let mut f = 0;
        let mut set = |on: bool, bit: u8| f |= if on { bit } else { 0 };
        set(spec.isolated, Flags::ISOLATED);
        set(spec.locked, Flags::LOCKED);
        set(!spec.learning, Flags::NO_LEARNING);
        set(spec.hairpin, Flags::HAIRPIN);
        set(spec.neigh_suppress, Flags::NEIGH_SUPPRESS);
        for (c, takes) in [
            (FloodClass::Broadcast, spec.bcast_flood),
            (FloodClass::Multicast, spec.mcast_flood),
            (FloodClass::UnknownUnicast, spec.flood),
        ] {
            set(!takes, Flags::NO_FLOOD << c as u8);
        }
        let vlans = VlanSet::new(&spec.vlans);
        Ok(Policy { spec, flags: Flags(f), vlans })
    }

    #[inline]
    pub fn learning(&self) -> bool {
        !self.flags.has(Flags::NO_LEARNING)
    }

    /// A locked port lets only its own stations send.
    #[inline]
    pub fn admits_source(&self, src: Mac) -> bool {
        !self.flags.has(Flags::LOCKED) || self.spec.macs.contains(&src)
    }

    #[inline]
    pub fn hairpin(&self) -> bool {
        self.flags.hairpin()
    }
}

/// Whether a frame that came in on port `from` (flags `fp`) may leave by
/// port `to` (flags `tp`); `flood` is its class when it is flooded. The
/// kernel bridge's `should_deliver` and `br_flood`: never back out of its
/// ingress port unless that port has hairpin on, never between two isolated
/// ports, and a flood only to ports that take its class.
#[inline]
pub fn egress(from: PortId, fp: Flags, to: PortId, tp: Flags, flood: Option<FloodClass>) -> Result<(), Excluded> {
    if (fp.0 | tp.0) & Flags::EGRESS == 0 {
        // No knob set on either port: the common case, one comparison.
        return if to == from { Err(Excluded::Ingress) } else { Ok(()) };
    }
    if to == from && !tp.hairpin() {
        return Err(Excluded::Ingress);
    }
    if fp.has(Flags::ISOLATED) && tp.has(Flags::ISOLATED) {
        return Err(Excluded::Isolated);
    }
    match flood {
        Some(c) if !tp.takes_flood(c) => Err(Excluded::FloodOff(c)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(f: impl FnOnce(&mut PortPolicy)) -> Policy {
        let mut p = PortPolicy::default();
        f(&mut p);
        Policy::compile(p).unwrap()
    }

    #[test]
    fn the_bridge_egress_rules() {
        let d = Policy::default();
        assert_eq!(egress(1, d.flags, 2, d.flags, None), Ok(()));
        assert_eq!(egress(1, d.flags, 1, d.flags, None), Err(Excluded::Ingress));
        assert_eq!(egress(1, d.flags, 1, d.flags, Some(FloodClass::Broadcast)), Err(Excluded::Ingress));
        let hp = pol(|p| p.hairpin = true);
        assert_eq!(egress(1, hp.flags, 1, hp.flags, None), Ok(()));
        assert_eq!(
            egress(1, hp.flags, 1, hp.flags, Some(FloodClass::Broadcast)),
            Ok(()),
            "hairpin reflects floods too"
        );
        let iso = pol(|p| p.isolated = true);
        assert_eq!(egress(1, iso.flags, 2, iso.flags, None), Err(Excluded::Isolated));
        assert_eq!(egress(1, iso.flags, 2, d.flags, None), Ok(()));
        assert_eq!(egress(1, d.flags, 2, iso.flags, Some(FloodClass::Multicast)), Ok(()));
        // Flood flags filter floods by class, never known unicast.
        let nof = pol(|p| p.flood = false);
        assert_eq!(
            egress(1, d.flags, 2, nof.flags, Some(FloodClass::UnknownUnicast)),
            Err(Excluded::FloodOff(FloodClass::UnknownUnicast))
        );
        assert_eq!(egress(1, d.flags, 2, nof.flags, Some(FloodClass::Broadcast)), Ok(()));
        assert_eq!(egress(1, d.flags, 2, nof.flags, None), Ok(()));
        let nob = pol(|p| p.bcast_flood = false);
        assert_eq!(
            egress(1, d.flags, 2, nob.flags, Some(FloodClass::Broadcast)),
            Err(Excluded::FloodOff(FloodClass::Broadcast))
        );
        let nom = pol(|p| p.mcast_flood = false);
        assert_eq!(
            egress(1, d.flags, 2, nom.flags, Some(FloodClass::Multicast)),
            Err(Excluded::FloodOff(FloodClass::Multicast))
        );
        assert_eq!(egress(1, d.flags, 2, nom.flags, Some(FloodClass::Broadcast)), Ok(()));
    }

    #[test]
    fn locked_admits_only_its_own_stations() {
        let a = Mac([2, 0, 0, 0, 0, 1]);
        assert!(Policy::default().admits_source(a));
        let l = pol(|p| {
            p.locked = true;
            p.macs = vec![a];
        });
        assert!(l.admits_source(a));
        assert!(!l.admits_source(Mac([2, 0, 0, 0, 0, 2])));
        assert!(Policy::compile(PortPolicy { locked: true, ..PortPolicy::default() }).is_err());
    }
}
