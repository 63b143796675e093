use core::fmt;
use core::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
///
/// Aligned to 8 bytes (two bytes of padding): byte-aligned, the compiler
/// spilled a frame's destination to the stack in pieces and read it back
/// with a wider load spanning them to build the FDB key, a store-forwarding
/// stall that cost the datapath a quarter of its unicast rate once the
/// forwarding stage grew (docs/benchmarks-history.md, issue #14).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(align(8))]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// 00:00:00:00:00:00
    pub const ZERO: Mac = Mac([0; 6]);

    /// Builds a MAC from the first six bytes of `b`. `b` must hold at least six bytes.
    #[inline]
    pub fn from_slice(b: &[u8]) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        Mac(m)
    }

    /// The group bit (I/G) is set: multicast or broadcast.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Mac::BROADCAST
    }

    #[inline]
    pub fn is_zero(&self) -> bool {
        *self == Mac::ZERO
    }

    /// A station address a bridge may learn: unicast and not all-zero
    /// (the kernel's `is_valid_ether_addr`).
    #[inline]
    pub fn is_valid_source(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// 01:80:c2:00:00:0X, the IEEE 802.1D reserved group (STP, pause, LACP,
    /// 802.1X, LLDP). A bridge never forwards these.
    #[inline]
    pub fn is_link_local(&self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] & 0xf0 == 0
    }

    /// The address as a u64 (the low 48 bits), handy for hashing and tables.
    #[inline]
    pub fn to_u64(&self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string is not a MAC address of the form `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError(pub String);

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)", self.0)
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for Mac {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Mac, ParseMacError> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

/// Serialized as its text form, `"02:00:00:00:00:01"`.
#[cfg(feature = "serde")]
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        let m: Mac = "02:AB:cd:00:00:01".parse().unwrap();
        assert_eq!(m.0, [0x02, 0xab, 0xcd, 0, 0, 1]);
        assert_eq!(m.to_string(), "02:ab:cd:00:00:01");
        assert!("02:ab:cd:00:00".parse::<Mac>().is_err());
        assert!("02:ab:cd:00:00:01:02".parse::<Mac>().is_err());
        assert!("02:ab:cd:00:00:zz".parse::<Mac>().is_err());
        assert!("2:ab:cd:00:00:01".parse::<Mac>().is_err());
    }

    #[test]
    fn classes() {
        assert!(Mac::BROADCAST.is_multicast());
        assert!(!Mac::BROADCAST.is_valid_source());
        assert!(!Mac::ZERO.is_valid_source());
        assert!(!Mac([0x01, 0, 0x5e, 0, 0, 1]).is_valid_source());
        assert!(Mac([0x02, 0, 0, 0, 0, 1]).is_valid_source());
        assert!(Mac([0x01, 0x80, 0xc2, 0, 0, 0x0e]).is_link_local());
        assert!(!Mac([0x01, 0x80, 0xc2, 0, 0, 0x10]).is_link_local());
        assert_eq!(Mac([0, 0, 0, 0, 1, 2]).to_u64(), 0x0102);
    }
}
