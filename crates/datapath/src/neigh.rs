//! ARP suppression (`neigh_suppress`) with the Linux bridge's rules
//! (`br_arp_nd_proxy.c`, `br_do_proxy_suppress_arp`), and the neighbour
//! table it answers from: what ports were told and what the host port's ARP
//! cache would learn, ageing with the FDB. The rules: docs/policies.md.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use ub_fdb::PortId;
use ub_wire::{ArpOp, ArpPacket, Mac};

#[derive(Debug)]
struct Entry {
    mac: Mac,
    port: PortId,
    /// Told at `port add`: never ages, not replaced by what is learned.
    told: bool,
    /// One of the host port's own addresses.
    local: bool,
    seen_ms: AtomicU64,
}

/// One neighbour as `neigh show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEntry {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub port: PortId,
    pub told: bool,
    pub local: bool,
    pub age_ms: u64,
}

/// IPv4 address → MAC, for ARP suppression. Read under a shared lock only
/// for ARP frames while suppression is on; a refresh is an atomic store.
#[derive(Debug, Default)]
pub struct NeighTable {
    map: RwLock<HashMap<Ipv4Addr, Entry>>,
}

/// What the suppression rules say of one ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArpVerdict {
    /// Not flooded to `neigh_suppress` ports (the kernel's `proxyarp_replied`).
    pub replied: bool,
    /// Answer the request on the ingress port, as this MAC.
    pub answer: Option<Mac>,
    /// Learn the sender (the frame is for one of the host port's addresses).
    pub learn_sender: bool,
}

impl NeighTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Ipv4Addr, Entry>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Ipv4Addr, Entry>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what port `port` was told: `ips` are `mac`'s (the host
    /// port's own when `local`). Replaces what the port was told before.
    pub fn tell(&self, port: PortId, mac: Option<Mac>, ips: &[Ipv4Addr], local: bool) {
        let mut m = self.write();
        m.retain(|_, e| !(e.told && e.port == port));
        if let Some(mac) = mac {
            for ip in ips {
                m.insert(*ip, Entry { mac, port, told: true, local, seen_ms: AtomicU64::new(0) });
            }
        }
    }

    /// Forgets everything about port `port` (it was removed).
    pub fn forget_port(&self, port: PortId) {
        self.write().retain(|_, e| e.port != port);
    }

    /// Learns (or refreshes) `ip` at `mac` behind `port`, unless told otherwise.
    pub fn learn(&self, ip: Ipv4Addr, mac: Mac, port: PortId, now: u64) {
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return;
        }
        if let Some(e) = self.read().get(&ip)
            && (e.told || (e.mac == mac && e.port == port))
        {
            if !e.told {
                e.seen_ms.store(now, Relaxed);
            }
            return;
        }
        let mut m = self.write();
        if m.get(&ip).is_some_and(|e| e.told) {
            return;
        }
        m.insert(ip, Entry { mac, port, told: false, local: false, seen_ms: AtomicU64::new(now) });
    }

    /// The MAC for `ip` (and whether it is the host port's own address).
    pub fn lookup(&self, ip: Ipv4Addr, now: u64, ageing_ms: u64) -> Option<(Mac, bool)> {
        let m = self.read();
        let e = m.get(&ip)?;
        (e.told || now.saturating_sub(e.seen_ms.load(Relaxed)) < ageing_ms).then_some((e.mac, e.local))
    }

    /// Drops learned entries not seen for `ageing_ms`.
    pub fn age(&self, now: u64, ageing_ms: u64) {
        let stale = self.read().values().any(|e| !e.told && now.saturating_sub(e.seen_ms.load(Relaxed)) >= ageing_ms);
        if stale {
            self.write().retain(|_, e| e.told || now.saturating_sub(e.seen_ms.load(Relaxed)) < ageing_ms);
        }
    }

    pub fn entries(&self, now: u64) -> Vec<NeighEntry> {
        let mut v: Vec<NeighEntry> = self
            .read()
            .iter()
            .map(|(ip, e)| NeighEntry {
                ip: *ip,
                mac: e.mac,
                port: e.port,
                told: e.told,
                local: e.local,
                age_ms: if e.told { 0 } else { now.saturating_sub(e.seen_ms.load(Relaxed)) },
            })
            .collect();
        v.sort_by_key(|e| e.ip);
        v
    }
}

/// The suppression rules for one ARP frame (see the module's doc), given
/// whether the ingress port has `neigh_suppress`, the neighbour table's
/// answer for the target, and where the FDB has that MAC: `Some(true)` when
/// behind a `neigh_suppress` port, `Some(false)` behind another, `None`
/// unknown.
pub fn arp_verdict<T: AsRef<[u8]>>(
    arp: &ArpPacket<T>,
    ingress_suppress: bool,
    target: Option<(Mac, bool)>,
    target_port_suppress: impl FnOnce(Mac) -> Option<bool>,
) -> ArpVerdict {
    let (sip, tip) = (arp.sender_ip(), arp.target_ip());
    let mut v = ArpVerdict::default();
    if tip.is_loopback() || tip.is_multicast() || ingress_suppress {
        return v;
    }
    let local = target.is_some_and(|(_, local)| local);
    // What the host port's ARP cache learns: the senders of ARP to it.
    v.learn_sender = local && !sip.is_unspecified();
    if sip.is_unspecified() || sip == tip {
        v.replied = true;
        return v;
    }
    if arp.op() != ArpOp::Request {
        return v;
    }
    if local {
        v.replied = true;
        return v;
    }
    if let Some((mac, _)) = target
        && let Some(behind_suppress) = target_port_suppress(mac)
    {
        v.replied = true;
        if behind_suppress {
            v.answer = Some(mac);
        }
    }
    v
}

/// The ARP reply the switch sends for `req` as `mac`: from `mac` to the
/// requester, "target IP is at mac" (42 bytes, then the tag when `tag`).
pub fn arp_reply<T: AsRef<[u8]>>(req: &ArpPacket<T>, mac: Mac, tag: Option<u16>) -> ([u8; 46], usize) {
    let mut b = [0u8; 46];
    let sha = req.sender_mac();
    b[0..6].copy_from_slice(&sha.0);
    b[6..12].copy_from_slice(&mac.0);
    let mut o = 12;
    if let Some(tci) = tag {
        b[12..14].copy_from_slice(&ub_wire::ETHERTYPE_8021Q.to_be_bytes());
        b[14..16].copy_from_slice(&tci.to_be_bytes());
        o = 16;
    }
    b[o..o + 2].copy_from_slice(&[0x08, 0x06]);
    let a = o + 2;
    b[a..a + 8].copy_from_slice(&[0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02]);
    b[a + 8..a + 14].copy_from_slice(&mac.0);
    b[a + 14..a + 18].copy_from_slice(&req.target_ip().octets());
    b[a + 18..a + 24].copy_from_slice(&sha.0);
    b[a + 24..a + 28].copy_from_slice(&req.sender_ip().octets());
    (b, a + 28)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 2]);

    fn arp(op: u16, sha: Mac, sip: [u8; 4], tip: [u8; 4]) -> Vec<u8> {
        let mut v = vec![0x00, 0x01, 0x08, 0x00, 0x06, 0x04];
        v.extend_from_slice(&op.to_be_bytes());
        v.extend_from_slice(&sha.0);
        v.extend_from_slice(&sip);
        v.extend_from_slice(&[0; 6]);
        v.extend_from_slice(&tip);
        v
    }

    fn verdict(buf: &[u8], ingress_suppress: bool, target: Option<(Mac, bool)>, port: Option<bool>) -> ArpVerdict {
        arp_verdict(&ArpPacket::new_checked(buf).unwrap(), ingress_suppress, target, |_| port)
    }

    /// The cases of br_do_proxy_suppress_arp, one by one.
    #[test]
    fn the_kernel_rules() {
        let req = arp(1, A, [10, 0, 0, 1], [10, 0, 0, 2]);
        // Known, behind a suppressing port: answered, not flooded there.
        let v = verdict(&req, false, Some((B, false)), Some(true));
        assert_eq!((v.replied, v.answer), (true, Some(B)));
        // Known, behind another port: not answered, still kept from suppressing ports.
        assert_eq!(
            verdict(&req, false, Some((B, false)), Some(false)),
            ArpVerdict { replied: true, ..ArpVerdict::default() }
        );
        // Known to the table, unknown to the FDB: forwarded as usual.
        assert_eq!(verdict(&req, false, Some((B, false)), None), ArpVerdict::default());
        // From a suppressing port: never touched.
        assert_eq!(verdict(&req, true, Some((B, false)), Some(true)), ArpVerdict::default());
        // Gratuitous and probe: kept from suppressing ports.
        assert!(verdict(&arp(1, A, [10, 0, 0, 1], [10, 0, 0, 1]), false, None, None).replied);
        assert!(verdict(&arp(1, A, [0, 0, 0, 0], [10, 0, 0, 1]), false, None, None).replied);
        // A reply is forwarded as usual.
        assert_eq!(
            verdict(&arp(2, A, [10, 0, 0, 1], [10, 0, 0, 2]), false, Some((B, false)), Some(true)),
            ArpVerdict::default()
        );
        // For the host port's address: the host answers; the sender is learned.
        let v = verdict(&req, false, Some((B, true)), Some(true));
        assert_eq!((v.replied, v.answer, v.learn_sender), (true, None, true));
    }

    #[test]
    fn the_reply_says_where_the_target_is() {
        let req = arp(1, A, [10, 0, 0, 1], [10, 0, 0, 2]);
        let (b, n) = arp_reply(&ArpPacket::new_checked(&req[..]).unwrap(), B, None);
        assert_eq!(n, 42);
        assert_eq!((&b[0..6], &b[6..12], &b[12..14]), (&A.0[..], &B.0[..], &[0x08, 0x06][..]));
        let r = ArpPacket::new_checked(&b[14..42]).unwrap();
        assert_eq!((r.op(), r.sender_mac(), r.sender_ip()), (ArpOp::Reply, B, Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!((r.target_mac(), r.target_ip()), (A, Ipv4Addr::new(10, 0, 0, 1)));
        let (t, n) = arp_reply(&ArpPacket::new_checked(&req[..]).unwrap(), B, Some(20));
        assert_eq!((n, &t[12..18]), (46, &[0x81, 0x00, 0x00, 0x14, 0x08, 0x06][..]));
    }

    #[test]
    fn told_entries_stay_learned_ones_age() {
        let t = NeighTable::default();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        t.tell(1, Some(A), &[a], false);
        t.learn(a, B, 2, 0);
        assert_eq!(t.lookup(a, 10_000_000, 300_000), Some((A, false)), "told wins and never ages");
        t.learn(b, B, 2, 1000);
        assert_eq!(t.lookup(b, 2000, 300_000), Some((B, false)));
        assert_eq!(t.lookup(b, 301_000, 300_000), None);
        t.age(301_000, 300_000);
        assert_eq!(t.entries(301_000).len(), 1);
        t.forget_port(1);
        assert!(t.entries(0).is_empty());
    }
}
