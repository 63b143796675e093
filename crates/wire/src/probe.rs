//! The loop guard's probe: a 64-byte broadcast a switch sends from its own
//! address out of every port; one that comes back in on a port proves a loop.
//!
//! ```text
//!  0  dst  ff:ff:ff:ff:ff:ff
//!  6  src  the switch's own address
//! 12  EtherType 0x88b5 (IEEE 802 local experimental)
//! 14  "UBPROBE1"
//! 22  nonce (u64, big endian): tells this daemon's probes from another's
//! 30  the port id it was sent from (u16, big endian)
//! 32  zero padding to 64 bytes
//! ```

use crate::{Mac, WireError};

/// EtherType of probe frames.
pub const PROBE_ETHERTYPE: u16 = 0x88b5;
/// Bytes 14..22 of a probe.
pub const PROBE_MAGIC: [u8; 8] = *b"UBPROBE1";
/// A probe on the wire (the minimum Ethernet frame).
pub const PROBE_LEN: usize = 64;

/// A zero-copy view of a probe. `new_checked` verifies the length, the
/// EtherType and the magic; the accessors then cannot panic.
#[derive(Debug, Clone, Copy)]
pub struct LoopProbe<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> LoopProbe<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < 32 || b[12..14] != PROBE_ETHERTYPE.to_be_bytes() || b[14..22] != PROBE_MAGIC {
            return Err(WireError::Truncated);
        }
        Ok(LoopProbe { buf })
    }

    pub fn src(&self) -> Mac {
        Mac::from_slice(&self.buf.as_ref()[6..12])
    }

    pub fn nonce(&self) -> u64 {
        let b = self.buf.as_ref();
        u64::from_be_bytes([b[22], b[23], b[24], b[25], b[26], b[27], b[28], b[29]])
    }

    /// The port the probe was sent from.
    pub fn port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[30], b[31]])
    }
}

/// A probe from `src`, with `nonce`, sent from port `port`.
pub fn probe_frame(src: Mac, nonce: u64, port: u16) -> [u8; PROBE_LEN] {
    let mut f = [0u8; PROBE_LEN];
    f[..6].copy_from_slice(&Mac::BROADCAST.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&PROBE_ETHERTYPE.to_be_bytes());
    f[14..22].copy_from_slice(&PROBE_MAGIC);
    f[22..30].copy_from_slice(&nonce.to_be_bytes());
    f[30..32].copy_from_slice(&port.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_probe() {
        let f = probe_frame(Mac([2, 0xaa, 0, 0, 0, 1]), 0x0102_0304_0506_0708, 3);
        assert_eq!(
            f[..32],
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xaa, 0, 0, 0, 1, 0x88, 0xb5, b'U', b'B', b'P', b'R', b'O',
                b'B', b'E', b'1', 1, 2, 3, 4, 5, 6, 7, 8, 0, 3
            ]
        );
        assert!(f[32..].iter().all(|&b| b == 0));
        let p = LoopProbe::new_checked(&f[..]).unwrap();
        assert_eq!((p.src(), p.nonce(), p.port()), (Mac([2, 0xaa, 0, 0, 0, 1]), 0x0102_0304_0506_0708, 3));
    }

    #[test]
    fn anything_else_is_not_a_probe() {
        let f = probe_frame(Mac([2, 0, 0, 0, 0, 1]), 1, 1);
        for n in 0..32 {
            assert!(LoopProbe::new_checked(&f[..n]).is_err());
        }
        let mut other = f;
        other[13] = 0xb6;
        assert!(LoopProbe::new_checked(&other[..]).is_err());
        let mut other = f;
        other[21] = b'2';
        assert!(LoopProbe::new_checked(&other[..]).is_err());
    }
}
