/// `struct virtio_net_hdr` (10 bytes, host byte order as the kernel's packet
/// and tun drivers use on little-endian hosts): how a GSO super-frame is to be
/// segmented and where a partial checksum is to be completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 10;
    pub const F_NEEDS_CSUM: u8 = 1;
    pub const GSO_NONE: u8 = 0;

    pub fn from_bytes(b: &[u8; 10]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        }
    }

    pub fn to_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// True if this is a GSO super-frame the receiver will segment.
    pub fn is_gso(&self) -> bool {
        self.gso_type & 0x7f != Self::GSO_NONE
    }

    /// The header as it must read after a 4-byte tag is inserted after the
    /// MAC addresses: offsets into the frame move by 4.
    pub fn shifted_by_tag(mut self) -> VnetHdr {
        if self.flags & Self::F_NEEDS_CSUM != 0 {
            self.csum_start += 4;
        }
        if self.hdr_len != 0 {
            self.hdr_len += 4;
        }
        self
    }

    /// The header after the frame's 4-byte tag is taken out.
    pub fn unshifted_by_tag(mut self) -> VnetHdr {
        if self.flags & Self::F_NEEDS_CSUM != 0 {
            self.csum_start = self.csum_start.saturating_sub(4);
        }
        if self.hdr_len != 0 {
            self.hdr_len = self.hdr_len.saturating_sub(4);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shift() {
        let h = VnetHdr { flags: 1, gso_type: 1, hdr_len: 66, gso_size: 1448, csum_start: 34, csum_offset: 16 };
        assert_eq!(VnetHdr::from_bytes(&h.to_bytes()), h);
        assert!(h.is_gso());
        let s = h.shifted_by_tag();
        assert_eq!((s.csum_start, s.hdr_len, s.gso_size), (38, 70, 1448));
        assert_eq!(VnetHdr::default().shifted_by_tag(), VnetHdr::default());
    }
}
