use crate::{Mac, WireError};
use std::net::Ipv4Addr;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
    Other(u16),
}

/// A zero-copy view of an Ethernet/IPv4 ARP packet (RFC 826): 28 bytes.
///
/// `new_checked` verifies the length and that it is Ethernet/IPv4 ARP
/// (htype 1, ptype 0x0800, hlen 6, plen 4); accessors then cannot panic.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub const LEN: usize = 28;

    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < Self::LEN || b[0..6] != [0x00, 0x01, 0x08, 0x00, 0x06, 0x04] {
            return Err(WireError::Truncated);
        }
        Ok(ArpPacket { buf })
    }

    pub fn op(&self) -> ArpOp {
        let b = self.buf.as_ref();
        match u16::from_be_bytes([b[6], b[7]]) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            o => ArpOp::Other(o),
        }
    }
    pub fn sender_mac(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[8..14])
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }
    pub fn target_mac(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[18..24])
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, // op=reply
        0x02, 0, 0, 0, 0, 2, 10, 0, 0, 2, // sha spa
        0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1, // tha tpa
    ];

    #[test]
    fn golden_reply() {
        let a = ArpPacket::new_checked(&REPLY[..]).unwrap();
        assert_eq!(a.op(), ArpOp::Reply);
        assert_eq!(a.sender_mac(), Mac([2, 0, 0, 0, 0, 2]));
        assert_eq!(a.sender_ip(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(a.target_mac(), Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(a.target_ip(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn truncated_or_foreign_is_rejected() {
        for n in 0..28 {
            assert!(ArpPacket::new_checked(&REPLY[..n]).is_err());
        }
        let mut ipv6ish = REPLY;
        ipv6ish[5] = 16;
        assert!(ArpPacket::new_checked(&ipv6ish[..]).is_err());
    }
}
