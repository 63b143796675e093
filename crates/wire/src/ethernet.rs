use crate::{Mac, WireError};

/// Length of the Ethernet II header: destination, source, EtherType.
pub const ETH_HLEN: usize = 14;
/// Length of one 802.1Q / 802.1ad tag (TPID + TCI).
pub const VLAN_HLEN: usize = 4;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// 802.1Q customer tag (C-tag).
pub const ETHERTYPE_8021Q: u16 = 0x8100;
/// 802.1ad service tag (S-tag, the outer tag of QinQ).
pub const ETHERTYPE_8021AD: u16 = 0x88a8;

/// An 802.1Q/802.1ad tag: its TPID and TCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

impl VlanTag {
    /// The 12-bit VLAN identifier.
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
    /// The 3-bit priority code point.
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci >> 13) as u8
    }
}

/// A zero-copy view of an Ethernet II frame, with its tags.
///
/// `new_checked` guarantees the 14-byte header is present, so `dst`, `src`
/// and `ethertype` cannot panic. Tags are parsed by [`EthernetFrame::tags`],
/// which reports a truncated tag as an error instead of panicking.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buf` without checking its length: accessors may panic.
    pub fn new_unchecked(buf: T) -> Self {
        EthernetFrame { buf }
    }

    /// Wraps `buf` after checking it holds a whole Ethernet header.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < ETH_HLEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    #[inline]
    pub fn dst(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[0..6])
    }

    #[inline]
    pub fn src(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[6..12])
    }

    /// The EtherType (or TPID, when the frame is tagged) after the addresses.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }

    /// The whole frame.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Parses up to two stacked tags (802.1ad outer and/or 802.1Q inner).
    ///
    /// Returns `(outer, inner, ethertype, payload_offset)`; a tag whose 4 bytes
    /// are cut off is `Err(Truncated)`.
    #[inline]
    pub fn tags(&self) -> Result<(Option<VlanTag>, Option<VlanTag>, u16, usize), WireError> {
        let b = self.buf.as_ref();
        let mut off = 12;
        let mut found: [Option<VlanTag>; 2] = [None, None];
        for slot in found.iter_mut() {
            let tpid = u16::from_be_bytes([b[off], b[off + 1]]);
            if tpid != ETHERTYPE_8021Q && tpid != ETHERTYPE_8021AD {
                break;
            }
            // TPID(2) + TCI(2) + the next EtherType(2)
            if b.len() < off + VLAN_HLEN + 2 {
                return Err(WireError::Truncated);
            }
            let tci = u16::from_be_bytes([b[off + 2], b[off + 3]]);
            *slot = Some(VlanTag { tpid, tci });
            off += VLAN_HLEN;
        }
        let ethertype = u16::from_be_bytes([b[off], b[off + 1]]);
        Ok((found[0], found[1], ethertype, off + 2))
    }

    /// Bytes after the Ethernet header and any tags, if the tags are whole.
    pub fn payload(&self) -> Result<&[u8], WireError> {
        let (_, _, _, off) = self.tags()?;
        Ok(&self.buf.as_ref()[off..])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, m: Mac) {
        self.buf.as_mut()[0..6].copy_from_slice(&m.0);
    }
    pub fn set_src(&mut self, m: Mac) {
        self.buf.as_mut()[6..12].copy_from_slice(&m.0);
    }
    pub fn set_ethertype(&mut self, t: u16) {
        self.buf.as_mut()[12..14].copy_from_slice(&t.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A broadcast ARP request from 02:00:00:00:00:01, as on the wire.
    const ARP_REQ: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op=request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // tha tpa
    ];

    // 802.1ad outer VID 100 over 802.1Q inner VID 200 over IPv4 (header only).
    const QINQ: [u8; 22] =
        [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x20, 0xc8, 0x08, 0x00];

    #[test]
    fn golden_untagged() {
        let f = EthernetFrame::new_checked(&ARP_REQ[..]).unwrap();
        assert_eq!(f.dst(), Mac::BROADCAST);
        assert_eq!(f.src(), Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.tags().unwrap(), (None, None, ETHERTYPE_ARP, 14));
        assert_eq!(f.payload().unwrap().len(), 28);
    }

    #[test]
    fn golden_qinq() {
        let f = EthernetFrame::new_checked(&QINQ[..]).unwrap();
        let (outer, inner, et, off) = f.tags().unwrap();
        let outer = outer.unwrap();
        let inner = inner.unwrap();
        assert_eq!((outer.tpid, outer.vid()), (ETHERTYPE_8021AD, 100));
        assert_eq!((inner.tpid, inner.vid(), inner.pcp()), (ETHERTYPE_8021Q, 200, 1));
        assert_eq!((et, off), (ETHERTYPE_IPV4, 22));
    }

    #[test]
    fn truncated_tags_are_errors_not_panics() {
        for n in 14..QINQ.len() {
            let f = EthernetFrame::new_checked(&QINQ[..n]).unwrap();
            assert_eq!(f.tags(), Err(WireError::Truncated), "len {n}");
        }
        for n in 0..ETH_HLEN {
            assert!(EthernetFrame::new_checked(&ARP_REQ[..n]).is_err());
        }
    }

    #[test]
    fn setters() {
        let mut buf = [0u8; 14];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(Mac::BROADCAST);
        f.set_src(Mac([2, 0, 0, 0, 0, 9]));
        f.set_ethertype(ETHERTYPE_8021Q);
        assert_eq!(f.dst(), Mac::BROADCAST);
        assert_eq!(f.src().0[5], 9);
        assert_eq!(f.ethertype(), 0x8100);
    }

    #[test]
    fn agrees_with_etherparse() {
        let pkt = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(9, 9);
        let mut buf = Vec::new();
        pkt.write(&mut buf, &[1, 2, 3]).unwrap();
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        let (outer, inner, et, off) = f.tags().unwrap();
        assert_eq!(outer.unwrap().vid(), 42);
        assert!(inner.is_none());
        assert_eq!(et, ETHERTYPE_IPV4);
        let sliced = etherparse::SlicedPacket::from_ethernet(&buf).unwrap();
        let ip_off = buf.len() - sliced.net.unwrap().ip_payload_ref().unwrap().payload.len() - 20;
        assert_eq!(off, ip_off);
    }
}
