//! VLAN filtering, as a Linux bridge with `vlan_filtering 1` does it
//! (`br_vlan.c`: `br_allowed_ingress`, `br_allowed_egress`,
//! `br_handle_vlan`): the VLAN of a frame is its 802.1Q tag's VID, or the
//! ingress port's PVID for an untagged or priority-tagged frame; the
//! ingress port must be a member of it; the FDB is per VLAN; a frame leaves
//! only by members of its VLAN, untagged where the VLAN is untagged on that
//! port and tagged elsewhere. Pure functions: the stage and `trace` share
//! them.
//!
//! An 802.1ad (0x88a8) outer tag is not this bridge's protocol: such a
//! frame is untagged to it (the PVID applies), and its 802.1ad tag travels
//! inside the 802.1Q one, as the kernel's 802.1Q bridge carries it.

use crate::policy::VlanSet;
use ub_port::{RxFrame, TxFrame};
use ub_wire::ETHERTYPE_8021Q;

/// Where the frame's 802.1Q tag is, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QTag {
    /// The kernel took it off (AF_PACKET's metadata): it comes back only
    /// if the egress port takes the VLAN tagged.
    Offloaded,
    /// In the frame at bytes 12..16.
    InFrame,
    /// None: the frame came untagged (or with an 802.1ad tag only).
    None,
}

/// A frame's VLAN, decided at ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanIn {
    pub vid: u16,
    /// The TCI it leaves tagged with: its priority, the VID.
    pub tci: u16,
    pub q: QTag,
    /// A priority-tagged frame (VID 0) given the PVID: an in-frame tag must
    /// be rewritten, not kept.
    pub rewrite: bool,
}

/// The frame's VLAN on a port with membership `set`, or `None` when the
/// port's ingress filter drops it (untagged with no PVID, or a VID the
/// port is not a member of).
#[inline]
pub fn ingress(f: &RxFrame<'_>, set: &VlanSet) -> Option<VlanIn> {
    let (q, tci) = match f.offloaded_tag {
        Some((tpid, tci)) if tpid == ETHERTYPE_8021Q => (QTag::Offloaded, tci),
        // An offloaded 802.1ad tag: untagged to this bridge (reinserted inside ours).
        Some(_) => (QTag::None, 0),
        None if f.data.len() >= 16 && u16::from_be_bytes([f.data[12], f.data[13]]) == ETHERTYPE_8021Q => {
            (QTag::InFrame, u16::from_be_bytes([f.data[14], f.data[15]]))
        }
        None => (QTag::None, 0),
    };
    let tagged_vid = tci & 0x0fff;
    let (vid, rewrite) = match q {
        QTag::None => (set.pvid()?, false),
        // Priority-tagged: the PVID, keeping the priority.
        _ if tagged_vid == 0 => (set.pvid()?, true),
        _ => (tagged_vid, false),
    };
    if !set.member(vid) {
        return None;
    }
    Some(VlanIn { vid, tci: (tci & 0xf000) | vid, q, rewrite })
}

/// The frame `base` (as received) as it leaves a port where `vid` is
/// untagged (`untagged`) or tagged.
#[inline]
pub fn egress<'a>(base: TxFrame<'a>, v: &VlanIn, untagged: bool) -> TxFrame<'a> {
    let tag = Some((ETHERTYPE_8021Q, v.tci));
    match (v.q, untagged) {
        (QTag::Offloaded, true) => base.with_insert_tag(None),
        (QTag::Offloaded, false) => base.with_insert_tag(tag),
        (QTag::InFrame, true) => base.with_strip_tag(true),
        (QTag::InFrame, false) if v.rewrite => base.with_strip_tag(true).with_insert_tag(tag),
        (QTag::InFrame, false) => base,
        // An offloaded 802.1ad tag (the inserted one) goes back inside ours.
        (QTag::None, true) => base,
        (QTag::None, false) => base.with_outer_tag(Some(v.tci)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ub_proto::VlanEntry;

    fn set(entries: &[(u16, bool, bool)]) -> VlanSet {
        let e: Vec<VlanEntry> =
            entries.iter().map(|&(vid, pvid, untagged)| VlanEntry { vid, pvid, untagged }).collect();
        VlanSet::new(&e)
    }

    fn untagged_frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(&[0; 46]);
        f
    }

    fn tagged_frame(tci: u16) -> Vec<u8> {
        let u = untagged_frame();
        [&u[..12], &[0x81, 0x00], &tci.to_be_bytes()[..], &u[12..]].concat()
    }

    fn rx(data: &[u8], off: Option<(u16, u16)>) -> RxFrame<'_> {
        RxFrame { data, vnet: None, offloaded_tag: off, wire_len: 0 }
    }

    /// bridge_vlan_aware.sh's access and trunk ports: the PVID for untagged
    /// frames, membership for tagged ones, nothing without a PVID.
    #[test]
    fn ingress_assigns_and_filters_as_br_allowed_ingress() {
        let access = set(&[(10, true, true)]);
        let trunk = set(&[(10, false, false), (20, false, false)]);
        let native = set(&[(1, true, true), (20, false, false)]);
        let u = untagged_frame();
        assert_eq!(ingress(&rx(&u, None), &access).map(|v| (v.vid, v.q)), Some((10, QTag::None)));
        assert_eq!(ingress(&rx(&u, None), &trunk), None, "untagged on a port without PVID");
        assert_eq!(ingress(&rx(&u, None), &native).map(|v| v.vid), Some(1));
        let t20 = tagged_frame(20);
        assert_eq!(ingress(&rx(&t20, None), &trunk).map(|v| (v.vid, v.q)), Some((20, QTag::InFrame)));
        assert_eq!(ingress(&rx(&t20, None), &access), None, "VID 20 on a port of VLAN 10 only");
        assert_eq!(ingress(&rx(&u, Some((0x8100, 0x6014))), &trunk).map(|v| (v.vid, v.tci)), Some((20, 0x6014)));
        // Priority-tagged: the PVID, priority kept, the tag rewritten.
        let p = tagged_frame(0xa000);
        let v = ingress(&rx(&p, None), &access).unwrap();
        assert_eq!((v.vid, v.tci, v.rewrite), (10, 0xa00a, true));
        // An 802.1ad tag is not ours: untagged, PVID.
        assert_eq!(ingress(&rx(&u, Some((0x88a8, 30))), &access).map(|v| (v.vid, v.q)), Some((10, QTag::None)));
    }

    /// br_handle_vlan: untagged where the VLAN is untagged on the egress
    /// port, tagged with the frame's VID elsewhere.
    #[test]
    fn egress_tags_per_membership() {
        let access = set(&[(10, true, true)]);
        let u = untagged_frame();
        let t10 = tagged_frame(10);
        let vin = ingress(&rx(&u, None), &access).unwrap();
        let base = TxFrame::new(&u, None, None);
        assert_eq!(egress(base, &vin, true).to_wire_vec(), u, "access to access: as it came");
        assert_eq!(egress(base, &vin, false).to_wire_vec(), t10, "access to trunk: tag pushed");
        let trunk = set(&[(10, false, false)]);
        let vin = ingress(&rx(&t10, None), &trunk).unwrap();
        let base = TxFrame::new(&t10, None, None);
        assert_eq!(egress(base, &vin, true).to_wire_vec(), u, "trunk to access: tag popped");
        assert_eq!(egress(base, &vin, false).to_wire_vec(), t10, "trunk to trunk: kept");
        // Offloaded tag: reinserted only toward a tagged port.
        let vin = ingress(&rx(&u, Some((0x8100, 10))), &trunk).unwrap();
        let base = TxFrame::new(&u, None, Some((0x8100, 10)));
        assert_eq!(egress(base, &vin, true).to_wire_vec(), u);
        assert_eq!(egress(base, &vin, false).to_wire_vec(), t10);
        // Priority-tagged in: leaves with the PVID in its tag.
        let p = tagged_frame(0xa000);
        let vin = ingress(&rx(&p, None), &access).unwrap();
        assert_eq!(&egress(TxFrame::new(&p, None, None), &vin, false).to_wire_vec()[12..16], &[0x81, 0x00, 0xa0, 0x0a]);
    }
}
