//! The per-batch forwarding path in two stages (docs/architecture.md,
//! "Where a frame goes"): [`Forwarder::stage`] decides where each frame of
//! a batch goes, with an injected `now`, no I/O and no published counter
//! (it does learn into the FDB and the neighbour table, and takes storm
//! tokens); [`Forwarder::flush`] sends, mirrors and publishes. `trace`
//! runs the same stage with an observer (`observe.rs`); what leaves it,
//! and how, is `egress.rs`.

mod egress;
pub(crate) mod observe;

use crate::counters::{DropKind, LocalCounts};
use crate::decide::{Decision, decide_in};
use crate::neigh;
use crate::policy::{self, Excluded};
use crate::port::{MirrorSink, PortTable, Slot};
use crate::storm::FloodClass;
use crate::switch::Switch;
use crate::vlan::{self, QTag, VlanIn};
pub use egress::{ArpReplyFrame, Staged};
use egress::{FloodHow, egress_copy, flood, member_as, mirror, out_frame_as, push, storm_passes};
use observe::{Held, Live, Observe};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use ub_fdb::{Learn, PortId};
use ub_port::{BATCH, RxFrame, TxFrame, recycle_tx};
use ub_proto::{Backend, PortState};
use ub_wire::{ArpPacket, Classified, ETH_HLEN, ETHERTYPE_ARP, EthernetFrame, classify};

/// The per-reader forwarding state: the stage's buffers, kept across
/// batches so the per-frame path does not allocate (it does when the port
/// table grows, or when an egress batch outgrows any before it).
#[derive(Debug)]
pub struct Forwarder {
    ingress: PortId,
    out: Vec<Vec<TxFrame<'static>>>,
    sinks: Vec<(Arc<dyn MirrorSink>, TxFrame<'static>)>,
    probes: Vec<PortId>,
    egress_drops: Vec<(PortId, DropKind)>,
    replies: Vec<(PortId, ArpReplyFrame)>,
}

fn recycle_out<'b>(v: Vec<Vec<TxFrame<'_>>>) -> Vec<Vec<TxFrame<'b>>> {
    v.into_iter().map(recycle_tx).collect()
}

/// [`ub_port::recycle_tx`] for the mirror copies.
fn recycle_sinks<'b>(mut v: Vec<(Arc<dyn MirrorSink>, TxFrame<'_>)>) -> Vec<(Arc<dyn MirrorSink>, TxFrame<'b>)> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

impl Forwarder {
    pub fn new(ingress: PortId) -> Forwarder {
        Forwarder {
            ingress,
            out: Vec::new(),
            sinks: Vec::new(),
            probes: Vec::new(),
            egress_drops: Vec::new(),
            replies: Vec::new(),
        }
    }

    pub fn ingress(&self) -> PortId {
        self.ingress
    }

    /// Stages and flushes one batch received on the ingress port.
    pub fn forward(&mut self, sw: &Switch, frames: &[RxFrame<'_>], now: u64) {
        let ports = sw.ports();
        let staged = self.stage(sw, &ports, frames, now);
        self.flush(sw, &ports, staged, now);
    }

    /// The stage (see the module's doc): where each frame of the batch goes,
    /// against the port table snapshot `ports`, at time `now`.
    #[inline]
    pub fn stage<'a>(&mut self, sw: &Switch, ports: &PortTable, frames: &[RxFrame<'a>], now: u64) -> Staged<'a> {
        self.stage_observed(sw, ports, frames, now, &mut Live)
    }

    /// [`Forwarder::stage`], told to `obs` step by step.
    #[inline]
    pub(crate) fn stage_observed<'a, O: Observe>(
        &mut self,
        sw: &Switch,
        ports: &PortTable,
        frames: &[RxFrame<'a>],
        now: u64,
        obs: &mut O,
    ) -> Staged<'a> {
        // The switch-wide modes, read once per batch, pick a variant of the
        // stage compiled for them: with both off it is the path without them,
        // not one that tests them per frame (docs/benchmarks-history.md).
        match (sw.vlan_filtering(), sw.neigh_suppressing()) {
            (false, false) => self.stage_as::<false, false, O>(sw, ports, frames, now, obs),
            (true, false) => self.stage_as::<true, false, O>(sw, ports, frames, now, obs),
            (false, true) => self.stage_as::<false, true, O>(sw, ports, frames, now, obs),
            (true, true) => self.stage_as::<true, true, O>(sw, ports, frames, now, obs),
        }
    }

    /// The stage with VLAN filtering `FILTER` and ARP suppression `SUPPRESS`.
    /// Each variant is a function of its own, so the compiler's inlining
    /// budget for the per-frame loop (classify, learn, decide, flood, push
    /// all inlined) is not shared with the other three.
    #[inline(never)]
    fn stage_as<'a, const FILTER: bool, const SUPPRESS: bool, O: Observe>(
        &mut self,
        sw: &Switch,
        ports: &PortTable,
        frames: &[RxFrame<'a>],
        now: u64,
        obs: &mut O,
    ) -> Staged<'a> {
        let mut st = Staged {
            out: recycle_out(std::mem::take(&mut self.out)),
            sinks: recycle_sinks(std::mem::take(&mut self.sinks)),
            probes: std::mem::take(&mut self.probes),
            local: LocalCounts::default(),
            egress_drops: std::mem::take(&mut self.egress_drops),
            replies: std::mem::take(&mut self.replies),
        };
        if st.out.len() < ports.len() {
            st.out.resize_with(ports.len(), || Vec::with_capacity(BATCH));
        }
        let ingress = self.ingress;
        // A port being removed: its readers are about to stop.
        let Some(me) = ports.get(usize::from(ingress)).and_then(Option::as_ref) else {
            obs.decided(|| "drop: no such port".into());
            return st;
        };
        let pol = &*me.policy;
        let my_flags = me.flags;
        let limits = sw.storm_limits();
        // One relaxed load per batch: with no mirror set, nothing more is paid.
        let mirroring = sw.mirrors.load(Relaxed) != 0;
        let mirrors = mirroring.then_some(ports);
        let ingress_mirror = if mirroring { me.mirror.load_full() } else { None };
        let blocked = me.state() == PortState::Blocked;
        // The host port while tcpdump watches it: it sees every frame, as a
        // promiscuous bridge device does (one relaxed load per batch).
        let promisc = sw.promisc().filter(|&h| h != ingress).and_then(|h| ports.get(usize::from(h))?.as_ref());
        let guard_mac = sw.loop_guard.mac.0;
        // Netfilter on: IP unicast between stations goes to the kernel's
        // bridge first (never from the host port, whose traffic the node's
        // stack already judged, nor from the netfilter port, which returns
        // what the kernel let through). Not with VLAN filtering, whose
        // traffic br_netfilter leaves alone on a kernel bridge too.
        let nf = if FILTER || me.kind == Backend::Host { None } else { sw.netfilter() }
            .filter(|&p| p != ingress)
            .and_then(|p| ports.get(usize::from(p))?.as_ref());
        // From the kernel's side only what it let through comes back, all
        // unicast: its own frames (a multicast report) go no further.
        let from_kernel = sw.netfilter_port() == Some(ingress);
        // One FDB guard for the whole batch, not one per look-up.
        let g = sw.fdb.guard();
        for f in frames {
            st.local.rx_frames += 1;
            st.local.rx_bytes += u64::from(f.wire_len);
            // Our own loop probe, back: never learned or forwarded.
            if f.data.len() >= 12 && f.data[6..12] == guard_mac {
                probe_returned(sw, f.data, &mut st);
                continue;
            }
            if from_kernel && f.data.first().is_some_and(|b| b & 1 == 1) {
                st.local.drop(DropKind::Kernel);
                obs.decided(|| "drop: kernel (the netfilter port's own multicast)".into());
                continue;
            }
            obs.step("ingress", || format!("port {} ({}), state {:?}", me.name, me.kind.as_str(), me.state()));
            if blocked {
                st.local.drop(DropKind::LoopBlocked);
                obs.decided(|| "drop: loop_blocked (the port is blocked by the loop guard)".into());
                continue;
            }
            if f.wire_len as usize > f.data.len() {
                st.local.drop(DropKind::Truncated);
                obs.decided(|| "drop: truncated".into());
                continue;
            }
            let c = match classify(f.data, f.offloaded_tag.map(|(_, tci)| tci)) {
                Ok(c) => c,
                Err(r) => {
                    st.local.drop(DropKind::from(r));
                    obs.decided(|| format!("drop: {}", DropKind::from(r).as_str()));
                    continue;
                }
            };
            obs.step("classify", || format!("src {} dst {} tag vid {}", c.src, c.dst, c.vid));
            if !pol.admits_source(c.src) {
                st.local.drop(DropKind::Locked);
                obs.step("locked", || format!("{} is not one of the port's stations {:?}", c.src, pol.spec.macs));
                obs.decided(|| "drop: locked".into());
                continue;
            }
            if pol.flags.locked() {
                obs.step("locked", || format!("{} is the port's own station", c.src));
            }
            // VLAN filtering: the frame's VLAN, or the ingress filter drops it.
            let vin = if FILTER {
                match vlan_in(f, pol) {
                    Some(v) => {
                        obs.step("vlan", || format!("VLAN {} ({})", v.vid, vlan_how(&v)));
                        Some(v)
                    }
                    None => {
                        st.local.drop(DropKind::Vlan);
                        obs.step("vlan", || {
                            let members: Vec<u16> = pol.spec.vlans.iter().map(|v| v.vid).collect();
                            format!("refused by the ingress filter (PVID {:?}, members {members:?})", pol.vlans.pvid())
                        });
                        obs.decided(|| "drop: vlan".into());
                        continue;
                    }
                }
            } else {
                obs.step("vlan", || "filtering off: VLAN-unaware, tags carried through".into());
                None
            };
            let c = match vin {
                Some(v) => Classified { vid: v.vid, ..c },
                None => c,
            };
            obs.vlan(c.vid);
            if !pol.learning() {
                obs.step("learn", || "learning off on this port".into());
            } else if O::DRY {
                obs.step("learn", || match sw.fdb.lookup_in(&g, c.vid, c.src, now) {
                    Some(p) if p == ingress => format!("{} refreshed on {}", c.src, me.name),
                    Some(p) => format!("{} would move here from port {}", c.src, port_name(ports, p)),
                    None => format!("{} would be learned on {}", c.src, me.name),
                });
            } else if let Learn::Flapping = sw.fdb.learn_in(&g, c.vid, c.src, ingress, now) {
                flapping(sw, &c, &mut st);
                continue;
            }
            // ARP suppression: answered here, and/or kept from neigh_suppress ports.
            let replied = SUPPRESS && suppress_arp(sw, ports, &g, me, f.data, &c, vin, now, &mut st, obs);
            let tx = TxFrame::new(f.data, f.vnet, f.offloaded_tag);
            if let Some(m) = &ingress_mirror {
                mirror(m, tx, ports, &mut st);
            }
            // Whether the promiscuous port already has the frame.
            let mut seen = false;
            // The destination for the look-up read again from the frame, not
            // from `c`: LLVM spills `c` in pieces, and the look-up's key is one
            // wide load of it, a failed store forward (docs/benchmarks-history.md).
            let d = Classified { dst: ub_wire::Mac::from_slice(&f.data[..6]), ..c };
            let how = FloodHow { vin: vin.as_ref(), skip_suppress: replied, storm: true };
            match decide_in(&sw.fdb, &g, ingress, pol.hairpin(), &d, now) {
                Decision::Drop(k) => {
                    st.local.drop(k);
                    obs.step("fdb", || format!("{} is behind the ingress port (hairpin off)", c.dst));
                    obs.decided(|| format!("drop: {}", k.as_str()));
                }
                Decision::Unicast(p) => {
                    obs.step("fdb", || format!("{} is behind port {}", c.dst, port_name(ports, p)));
                    // An entry for a port being removed: flood like an unknown address.
                    if let Some(to) = ports.get(usize::from(p)).and_then(Option::as_ref) {
                        let sent = match policy::egress(ingress, my_flags, p, to.flags, None) {
                            Ok(()) => match member_as::<FILTER>(vin.as_ref(), to) {
                                Some(_) if nf.is_some_and(|n| judged(n, to, f)) => {
                                    let n = nf.unwrap_or(to);
                                    obs.step("netfilter", || format!("to {} for the node's rules first", n.name));
                                    push::<FILTER, O>(n, egress_copy::<false>(f, None, false), &mut st, mirrors, obs)
                                }
                                Some(untagged) => {
                                    let copy = egress_copy::<FILTER>(f, vin.as_ref(), untagged);
                                    let sent = push::<FILTER, O>(to, copy, &mut st, mirrors, obs);
                                    seen = promisc.is_some_and(|h| h.id == p);
                                    sent
                                }
                                None => {
                                    st.local.drop(DropKind::Vlan);
                                    obs.egress(to, Err(Held::Policy(Excluded::NotMember)));
                                    false
                                }
                            },
                            Err(x) => {
                                st.local.drop(if x == Excluded::Isolated {
                                    DropKind::Isolated
                                } else {
                                    DropKind::SamePort
                                });
                                obs.egress(to, Err(Held::Policy(x)));
                                false
                            }
                        };
                        obs.decided(|| if sent { format!("unicast to {}", to.name) } else { "drop".into() });
                    } else {
                        seen = flood::<FILTER, SUPPRESS, O>(
                            me, ports, f, c.dst, how, &limits, now, &mut st, mirrors, promisc, obs,
                        );
                        obs.decided(|| "flood (the entry's port is being removed)".into());
                    }
                }
                Decision::Flood if !c.dst.is_multicast() && nf.is_some() && is_ip(f) => {
                    // Unknown unicast IP: only what the kernel lets through floods,
                    // and only what this port's storm control lets go there.
                    let n = nf.unwrap_or(me);
                    obs.step("fdb", || format!("{} is unknown: to {} for the node's rules first", c.dst, n.name));
                    if storm_passes::<O>(me, FloodClass::UnknownUnicast, &limits, now, &mut st, obs) {
                        push::<FILTER, O>(n, egress_copy::<false>(f, None, false), &mut st, mirrors, obs);
                    }
                }
                Decision::Flood if from_kernel => {
                    // Unknown unicast the kernel let through floods as from the
                    // station that sent it (its isolation; its storm control
                    // was passed on the way in), found by its learned source.
                    let origin =
                        sw.fdb.lookup_in(&g, c.vid, c.src, now).and_then(|p| ports.get(usize::from(p))?.as_ref());
                    let (from, how) = match origin {
                        Some(o) => (o, FloodHow { storm: false, ..how }),
                        None => (me, how),
                    };
                    obs.step("fdb", || format!("flood: {} is unknown, as from {}", c.dst, from.name));
                    seen = flood::<FILTER, SUPPRESS, O>(
                        from, ports, f, c.dst, how, &limits, now, &mut st, mirrors, promisc, obs,
                    );
                }
                Decision::Flood => {
                    obs.step("fdb", || {
                        let class = FloodClass::of(c.dst);
                        if c.dst.is_multicast() {
                            format!("flood: {}", class.as_str())
                        } else {
                            format!("flood: {} is unknown", c.dst)
                        }
                    });
                    seen = flood::<FILTER, SUPPRESS, O>(
                        me, ports, f, c.dst, how, &limits, now, &mut st, mirrors, promisc, obs,
                    );
                }
            }
            if let Some(h) = promisc
                && !seen
            {
                // A promiscuous host port sees a frame of a VLAN it is not in as it came.
                let o = out_frame_as::<FILTER>(tx, vin.as_ref(), h).unwrap_or(tx);
                push::<FILTER, Live>(h, move || o, &mut st, mirrors, &mut Live);
            }
        }
        st
    }

    /// The I/O stage: sends what `stage` decided, one `send_batch` per egress
    /// port, hands copies to mirror sinks, publishes the counts and hands
    /// returned loop probes to the loop guard. `ports` must be the snapshot
    /// the batch was staged with.
    #[inline]
    pub fn flush(&mut self, sw: &Switch, ports: &PortTable, mut st: Staged<'_>, now: u64) {
        for (batch, slot) in st.out.iter_mut().zip(ports.iter()) {
            if let (false, Some(port)) = (batch.is_empty(), slot) {
                let o = port.tx.send_batch(batch);
                port.counters.tx_frames.fetch_add(o.sent as u64, Relaxed);
                port.counters.tx_bytes.fetch_add(o.bytes, Relaxed);
                port.counters.drop_n(DropKind::TxError, o.failed as u64);
            }
        }
        for (sink, f) in &st.sinks {
            sink.offer(f);
        }
        for (id, (buf, n)) in &st.replies {
            if let Some(Some(port)) = ports.get(usize::from(*id)) {
                let o = port.tx.send_batch(&[TxFrame::new(&buf[..*n], None, None)]);
                port.counters.tx_frames.fetch_add(o.sent as u64, Relaxed);
                port.counters.tx_bytes.fetch_add(o.bytes, Relaxed);
                port.counters.drop_n(DropKind::TxError, o.failed as u64);
            }
        }
        st.replies.clear();
        for &(id, k) in &st.egress_drops {
            if let Some(Some(p)) = ports.get(usize::from(id)) {
                p.counters.drop_n(k, 1);
            }
        }
        if let Some(Some(me)) = ports.get(usize::from(self.ingress)) {
            st.local.publish(&me.counters);
        }
        for &from in &st.probes {
            sw.loop_guard.probe_returned(ports, &sw.fdb, self.ingress, from, now);
        }
        st.probes.clear();
        st.egress_drops.clear();
        self.out = recycle_out(st.out);
        self.sinks = recycle_sinks(st.sinks);
        self.probes = st.probes;
        self.egress_drops = st.egress_drops;
        self.replies = st.replies;
    }
}

/// Whether a frame for station port `to` goes to the netfilter port `nf`
/// first: IPv4 or IPv6, to another station's port (the host port is the
/// node's stack, which judges its own traffic). A netfilter port that is
/// down drops it (counted there): closed, never a way around the rules.
#[inline(always)]
fn judged(nf: &Slot, to: &Slot, f: &RxFrame<'_>) -> bool {
    to.kind != Backend::Host && to.id != nf.id && is_ip(f)
}

/// IPv4 or IPv6 (a tag the kernel took off is not in `data`).
#[inline(always)]
fn is_ip(f: &RxFrame<'_>) -> bool {
    f.data.len() >= ETH_HLEN && matches!(u16::from_be_bytes([f.data[12], f.data[13]]), 0x0800 | 0x86dd)
}

/// Port `id`'s name in `ports`, or `#id`.
fn port_name(ports: &PortTable, id: PortId) -> String {
    ports.get(usize::from(id)).and_then(Option::as_ref).map_or_else(|| format!("#{id}"), |p| p.name.clone())
}

/// How a frame got its VLAN on the ingress port, in words.
fn vlan_how(v: &VlanIn) -> &'static str {
    match (v.q, v.rewrite) {
        (QTag::None, _) => "untagged: the PVID",
        (_, true) => "priority-tagged: the PVID",
        _ => "tagged",
    }
}

/// Our own loop probe came back (rare: out of line, to keep the per-frame
/// loop small enough for the compiler to inline its hot calls).
#[cold]
#[inline(never)]
fn probe_returned(sw: &Switch, data: &[u8], st: &mut Staged<'_>) {
    if let Some(from) = sw.loop_guard.origin(data) {
        st.probes.push(from);
    }
}

/// A copy that went round a loop: it was sent into the loop because its
/// destination's entry points there, learned from another looped copy.
/// Forget that entry; the station's next frame teaches it right. (Rare:
/// out of line.)
#[cold]
#[inline(never)]
fn flapping(sw: &Switch, c: &Classified, st: &mut Staged<'_>) {
    st.local.drop(DropKind::Flapping);
    if !c.dst.is_multicast() {
        sw.fdb.remove_learned(c.vid, c.dst);
    }
}

/// The frame's VLAN on the ingress port (VLAN filtering on): out of line,
/// so the path with filtering off stays as small as it was.
#[inline(never)]
fn vlan_in(f: &RxFrame<'_>, pol: &crate::policy::Policy) -> Option<VlanIn> {
    vlan::ingress(f, &pol.vlans)
}

/// The ARP rules of `neigh_suppress` for one frame (see `neigh.rs`): the
/// answer goes into `st.replies`, a sender the host port's cache would
/// learn is learned (unless the observer forbids changes). Returns whether
/// the frame is kept from `neigh_suppress` ports.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn suppress_arp<O: Observe>(
    sw: &Switch,
    ports: &PortTable,
    g: &<ub_fdb::DefaultMap as ub_fdb::FdbMap>::Guard<'_>,
    me: &Slot,
    data: &[u8],
    c: &Classified,
    vin: Option<VlanIn>,
    now: u64,
    st: &mut Staged<'_>,
    obs: &mut O,
) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(data) else { return false };
    let Ok((_, _, ethertype, off)) = eth.tags() else { return false };
    if ethertype != ETHERTYPE_ARP {
        return false;
    }
    let Ok(arp) = ArpPacket::new_checked(&data[off..]) else { return false };
    let ageing = sw.fdb.ageing_ms();
    let target = sw.neigh.lookup(arp.target_ip(), now, ageing);
    let v = neigh::arp_verdict(&arp, me.flags.neigh_suppress(), target, |mac| {
        let p = sw.fdb.lookup_in(g, c.vid, mac, now)?;
        Some(ports.get(usize::from(p)).and_then(Option::as_ref).is_some_and(|s| s.flags.neigh_suppress()))
    });
    if v.learn_sender && !O::DRY {
        sw.neigh.learn(arp.sender_ip(), arp.sender_mac(), me.id, now);
    }
    if let Some(mac) = v.answer {
        // Tagged as the request came, unless in the port's PVID (br_arp_send).
        let tag = vin.filter(|v| v.vid != 0 && me.policy.vlans.pvid() != Some(v.vid)).map(|v| v.tci);
        st.replies.push((me.id, neigh::arp_reply(&arp, mac, tag)));
    }
    obs.step("neigh_suppress", || match (v.answer, v.replied) {
        (Some(m), _) => {
            format!("who-has {}: answered by the switch as {m}; not flooded to neigh_suppress ports", arp.target_ip())
        }
        (None, true) => format!("who-has {}: not flooded to neigh_suppress ports", arp.target_ip()),
        (None, false) => format!("who-has {}: no rule applies (neighbour {:?})", arp.target_ip(), target.map(|t| t.0)),
    });
    v.replied
}
