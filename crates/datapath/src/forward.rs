use crate::counters::{DropKind, LocalCounts};
use crate::decide::{Decision, decide_in};
use crate::switch::{MirrorTo, Port, PortState, Switch};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use ub_fdb::PortId;
use ub_port::{BATCH, RxFrame, TxFrame, recycle_tx};
use ub_wire::{ETH_HLEN, ETHERTYPE_8021AD, ETHERTYPE_8021Q, VLAN_HLEN, classify};

/// The per-reader forwarding state: one reusable TX batch per egress port.
/// `forward` is the whole per-frame path; it allocates only when the port
/// table grows.
#[derive(Debug)]
pub struct Forwarder {
    ingress: PortId,
    out: Vec<Vec<TxFrame<'static>>>,
    local: LocalCounts,
}

/// Storm control for one class of one port, shared by all the port's
/// readers (with a reader per CPU, per-reader buckets would multiply the
/// limit): GCRA, the token bucket as one atomic "theoretical arrival time"
/// in µs. Touched only by flooded frames, never by known unicast.
#[derive(Debug, Default)]
pub struct StormGate(AtomicU64);

impl StormGate {
    /// Takes one frame's pass at `now_ms`; false if the class is over `pps`
    /// (0 = no limit). A tenth of a second's worth of burst, at least 10 frames.
    #[inline]
    pub fn take(&self, pps: u32, now_ms: u64) -> bool {
        if pps == 0 {
            return true;
        }
        let t = now_ms.saturating_mul(1000);
        let interval = (1_000_000 / pps as u64).max(1);
        let burst = (pps as u64 / 10).max(10);
        let limit = t.saturating_add(burst * interval);
        let mut tat = self.0.load(Relaxed);
        loop {
            let next = tat.max(t) + interval;
            if next > limit {
                return false;
            }
            match self.0.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(now) => tat = now,
            }
        }
    }
}

fn recycle_all<'b>(v: Vec<Vec<TxFrame<'_>>>) -> Vec<Vec<TxFrame<'b>>> {
    v.into_iter().map(recycle_tx).collect()
}

/// Whether `f` fits the egress MTU, counting the tag it carries or gets.
#[inline]
fn fits(f: &TxFrame<'_>, mtu: u32) -> bool {
    if let Some(v) = f.vnet.filter(|v| v.is_gso()) {
        // The receiver segments a GSO super-frame into gso_size payloads.
        return v.gso_size as u32 <= mtu;
    }
    let et = u16::from_be_bytes([f.data[12], f.data[13]]);
    let tagged = f.insert_tag.is_some() || et == ETHERTYPE_8021Q || et == ETHERTYPE_8021AD;
    f.wire_len() <= mtu as usize + ETH_HLEN + if tagged { 2 * VLAN_HLEN } else { 0 }
}

impl Forwarder {
    pub fn new(ingress: PortId) -> Forwarder {
        Forwarder { ingress, out: Vec::new(), local: LocalCounts::default() }
    }

    /// Learns, decides and sends one batch of frames received on the ingress port.
    pub fn forward<'a>(&mut self, sw: &Switch, frames: &[RxFrame<'a>], now: u64) {
        let ports = sw.ports();
        let mut out: Vec<Vec<TxFrame<'a>>> = recycle_all(std::mem::take(&mut self.out));
        if out.len() < ports.len() {
            out.resize_with(ports.len(), || Vec::with_capacity(BATCH));
        }
        let ingress = self.ingress;
        let local = &mut self.local;
        let limits = sw.storm_limits();
        let limits = [limits.broadcast_pps, limits.multicast_pps, limits.unknown_unicast_pps];
        // One relaxed load per batch: with no mirror set, nothing more is paid.
        let mirroring = sw.mirrors.load(std::sync::atomic::Ordering::Relaxed) != 0;
        // The ingress port, looked up once for the batch.
        let me = ports.get(ingress as usize).and_then(Option::as_ref);
        let ingress_mirror = if mirroring { me.and_then(|p| p.mirror.load_full()) } else { None };
        let blocked = me.is_some_and(|p| p.state() == PortState::Blocked);
        let guard_mac = sw.loop_guard.mac.0;
        // One FDB guard for the whole batch, not one per look-up.
        let g = sw.fdb.guard();
        for f in frames {
            local.rx_frames += 1;
            local.rx_bytes += f.wire_len as u64;
            // Our own loop probe, back: never learned or forwarded.
            if f.data.len() >= 12 && f.data[6..12] == guard_mac {
                if let Some(from) = sw.loop_guard.origin(f.data) {
                    sw.loop_found(ingress, from, now);
                }
                continue;
            }
            if blocked {
                local.drops[DropKind::LoopBlocked as usize] += 1;
                continue;
            }
            if f.wire_len as usize > f.data.len() {
                local.drops[DropKind::Truncated as usize] += 1;
                continue;
            }
            let c = match classify(f.data, f.offloaded_tag.map(|(_, tci)| tci)) {
                Ok(c) => c,
                Err(r) => {
                    local.drops[DropKind::from(r) as usize] += 1;
                    continue;
                }
            };
            if sw.fdb.learn_in(&g, c.vid, c.src, ingress, now) == ub_fdb::Learn::Flapping {
                // A copy that went round a loop: it was sent into the loop because
                // its destination's entry points there, learned from another looped
                // copy. Forget that entry; the station's next frame teaches it right.
                local.drops[DropKind::Flapping as usize] += 1;
                if !c.dst.is_multicast() {
                    sw.fdb.remove_learned(c.vid, c.dst);
                }
                continue;
            }
            let tx = TxFrame { data: f.data, vnet: f.vnet, insert_tag: f.offloaded_tag };
            if let Some(m) = &ingress_mirror {
                mirror(m, tx, &ports, &mut out);
            }
            let target = match decide_in(&sw.fdb, &g, ingress, &c, now) {
                Decision::Drop(k) => {
                    local.drops[k as usize] += 1;
                    continue;
                }
                // An entry for a port being removed: flood like an unknown address.
                Decision::Unicast(p) => ports.get(p as usize).and_then(Option::as_ref),
                Decision::Flood => None,
            };
            if target.is_none() {
                let (class, reason) = if c.dst.is_broadcast() {
                    (0, DropKind::StormBroadcast)
                } else if c.dst.is_multicast() {
                    (1, DropKind::StormMulticast)
                } else {
                    (2, DropKind::StormUnknown)
                };
                // The ingress port is in the table unless it is being removed.
                if me.is_some_and(|p| !p.storm[class].take(limits[class], now)) {
                    local.drops[reason as usize] += 1;
                    continue;
                }
            }
            match target {
                Some(port) => push(port, tx, &mut out, mirroring.then_some(&**ports)),
                None => {
                    local.flooded += 1;
                    for port in ports.iter().flatten().filter(|p| p.id != ingress) {
                        push(port, tx, &mut out, mirroring.then_some(&**ports));
                    }
                }
            }
        }
        for (batch, port) in out.iter_mut().zip(ports.iter()) {
            if let (false, Some(port)) = (batch.is_empty(), port) {
                flush(port, batch);
            }
        }
        if let Some(p) = me {
            local.publish(&p.counters);
        }
        self.out = recycle_all(out);
    }
}

/// Queues `tx` for `port`. With `mirrors` (the port table, when any mirror
/// is set), a copy also goes to the port's mirror target.
#[inline]
fn push<'a>(port: &Port, tx: TxFrame<'a>, out: &mut [Vec<TxFrame<'a>>], mirrors: Option<&[Option<Arc<Port>>]>) {
    if let Some(ports) = mirrors
        && let Some(m) = port.mirror.load_full()
        && port.state() == PortState::Up
    {
        mirror(&m, tx, ports, out);
    }
    match port.state() {
        PortState::Up => {}
        PortState::Blocked => return port.counters.drop_n(DropKind::LoopBlocked, 1),
        _ => return port.counters.drop_n(DropKind::PortDown, 1),
    }
    if !fits(&tx, port.tx.mtu()) {
        port.counters.drop_n(DropKind::TooBig, 1);
        return;
    }
    let batch = &mut out[port.id as usize];
    batch.push(tx);
    if batch.len() == BATCH {
        flush(port, batch);
    }
}

/// Copies a frame to a mirror target (a port's own mirror is not followed
/// again: no chains, no loops).
fn mirror<'a>(m: &MirrorTo, tx: TxFrame<'a>, ports: &[Option<Arc<Port>>], out: &mut [Vec<TxFrame<'a>>]) {
    match m {
        MirrorTo::Port(id) => {
            if let Some(Some(p)) = ports.get(*id as usize) {
                push(p, tx, out, None);
            }
        }
        MirrorTo::Sink(s) => s.offer(&tx),
    }
}

fn flush(port: &Port, batch: &mut Vec<TxFrame<'_>>) {
    use std::sync::atomic::Ordering::Relaxed;
    let o = port.tx.send_batch(batch);
    port.counters.tx_frames.fetch_add(o.sent as u64, Relaxed);
    port.counters.tx_bytes.fetch_add(o.bytes, Relaxed);
    port.counters.drop_n(DropKind::TxError, o.failed as u64);
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::StormGate;

    #[test]
    fn storm_gate_allows_a_tenth_of_a_second_then_the_rate() {
        let g = StormGate::default();
        // 1000 pps: a burst of 100 at once, then one per ms.
        assert_eq!((0..150).filter(|_| g.take(1000, 5_000)).count(), 100);
        assert!(!g.take(1000, 5_000));
        assert_eq!((0..50).filter(|_| g.take(1000, 5_010)).count(), 10);
        // 10 pps: at least 10 frames of burst, then one per 100 ms.
        let g = StormGate::default();
        assert_eq!((0..20).filter(|_| g.take(10, 1_000)).count(), 10);
        assert!(!g.take(10, 1_099));
        assert!(g.take(10, 1_100));
        // 0 = no limit.
        assert!((0..1000).all(|_| g.take(0, 0)));
    }

    #[test]
    fn storm_gate_is_one_limit_for_several_readers() {
        let g = std::sync::Arc::new(StormGate::default());
        let taken: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let g = g.clone();
                    s.spawn(move || (0..1000).filter(|_| g.take(1000, 7_000)).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 100, "four readers share one burst of 100");
    }
}
