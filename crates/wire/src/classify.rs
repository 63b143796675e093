use crate::{EthernetFrame, Mac, WireError};

/// Why a frame was refused before any forwarding decision (the datapath
/// counts it under its `DropKind`, which names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the 14-byte Ethernet header.
    Runt,
    /// An 802.1Q/802.1ad tag cut off before its end.
    TruncatedVlan,
    /// Source is multicast, broadcast or all-zero (the kernel bridge drops these too).
    InvalidSource,
    /// Destination in 01:80:c2:00:00:0X, which bridges never forward.
    LinkLocal,
}

/// What the forwarding decision needs from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub dst: Mac,
    pub src: Mac,
    /// The VLAN the frame travels in: the offloaded tag when the port
    /// delivered one, else the outermost in-frame tag, else 0.
    pub vid: u16,
}

/// Parses the headers the switch needs, once, in place.
///
/// `offloaded_tci` is the tag the NIC/driver removed from the frame (AF_PACKET
/// auxdata); when present it is the outermost tag.
#[inline]
pub fn classify(frame: &[u8], offloaded_tci: Option<u16>) -> Result<Classified, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Runt)?;
    let (outer, _, _, _) = eth.tags().map_err(|WireError::Truncated| DropReason::TruncatedVlan)?;
    let vid = match (offloaded_tci, outer) {
        (Some(tci), _) => tci & 0x0fff,
        (None, Some(tag)) => tag.vid(),
        (None, None) => 0,
    };
    let src = eth.src();
    if !src.is_valid_source() {
        return Err(DropReason::InvalidSource);
    }
    let dst = eth.dst();
    if dst.is_link_local() {
        return Err(DropReason::LinkLocal);
    }
    Ok(Classified { dst, src, vid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(dst: [u8; 6], src: [u8; 6], rest: &[u8]) -> Vec<u8> {
        let mut v = dst.to_vec();
        v.extend_from_slice(&src);
        v.extend_from_slice(rest);
        v
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn reasons() {
        assert_eq!(classify(&[0u8; 13], None), Err(DropReason::Runt));
        assert_eq!(classify(&frame(B, A, &[0x81, 0x00, 0x00]), None), Err(DropReason::TruncatedVlan));
        assert_eq!(classify(&frame(B, [0xff; 6], &[8, 0]), None), Err(DropReason::InvalidSource));
        assert_eq!(classify(&frame(B, [1, 0, 0x5e, 0, 0, 1], &[8, 0]), None), Err(DropReason::InvalidSource));
        assert_eq!(classify(&frame(B, [0; 6], &[8, 0]), None), Err(DropReason::InvalidSource));
        assert_eq!(classify(&frame([1, 0x80, 0xc2, 0, 0, 0], A, &[0, 38]), None), Err(DropReason::LinkLocal));
    }

    #[test]
    fn vlan_sources() {
        let tagged = frame(B, A, &[0x81, 0x00, 0x00, 0x2a, 0x08, 0x00]);
        assert_eq!(classify(&tagged, None).unwrap().vid, 42);
        let untagged = frame(B, A, &[0x08, 0x00]);
        assert_eq!(classify(&untagged, None).unwrap().vid, 0);
        assert_eq!(classify(&untagged, Some(0x2007)).unwrap().vid, 7);
        let c = classify(&untagged, None).unwrap();
        assert_eq!((c.dst, c.src), (Mac(B), Mac(A)));
    }

    proptest! {
        // No byte string can make the classifier panic, and it agrees with
        // etherparse on the addresses of every frame it accepts.
        #[test]
        fn never_panics_and_agrees(bytes in proptest::collection::vec(any::<u8>(), 0..80), tci in proptest::option::of(any::<u16>())) {
            if let Ok(c) = classify(&bytes, tci) {
                let h = etherparse::Ethernet2Header::from_slice(&bytes).unwrap().0;
                prop_assert_eq!(c.dst.0, h.destination);
                prop_assert_eq!(c.src.0, h.source);
                prop_assert!(c.vid < 4096);
            }
        }
    }
}
