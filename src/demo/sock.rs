//! The demo's probes: a capture inside a pod (a packet socket on its eth0
//! that, like tcpdump there, sees what the pod receives) and a one-shot ping.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use ub_port::PortRx;

pub struct Capture(ub_port::afpacket::AfPacketRx);

impl Capture {
    /// Opens a capture on `ifname` in the calling thread's namespace.
    pub fn open(ifname: &str) -> Result<Capture, ub_port::PortError> {
        let (rx, _tx, _) = ub_port::afpacket::open(ifname, Default::default())?;
        let first = rx.into_iter().next().ok_or_else(|| ub_port::PortError::NoSuchInterface(ifname.into()))?;
        Ok(Capture(first))
    }

    /// Every frame received so far, in arrival order.
    pub fn drain(mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        // The ring hands over a block once it is full or its 1 ms timer fires.
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..64 {
            let mut frames = Vec::new();
            if self.0.recv_batch(&mut frames).is_err() || frames.is_empty() {
                break;
            }
            out.extend(frames.iter().map(|f| f.data.to_vec()));
        }
        out
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// Sends one ICMP echo request to `dst` and waits for the reply: how long
/// it took, or `None` if none came within `timeout`.
pub fn ping(dst: Ipv4Addr, timeout: Duration) -> std::io::Result<Option<Duration>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"userbridge demo!");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let start = Instant::now();
    s.send_to(&pkt, &SocketAddrV4::new(dst, 0).into())?;
    let mut buf = [0u8; 1500];
    while start.elapsed() < timeout {
        s.set_read_timeout(Some(timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(1))))?;
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(_) => break,
        };
        // IPv4 header, then ICMP: type 0 (echo reply) with our id.
        let ihl = ((buf[0] & 0x0f) as usize) * 4;
        if n >= ihl + 8 && buf[ihl] == 0 && buf[ihl + 4..ihl + 6] == id.to_be_bytes() {
            return Ok(Some(start.elapsed()));
        }
    }
    Ok(None)
}
