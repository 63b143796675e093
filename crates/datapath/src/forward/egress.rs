//! What leaves the stage: the staged batch (`Staged`), and how a frame is
//! staged for an egress port (`push`: its state, MTU and mirror), flooded
//! (`flood`: storm control, policy, VLAN membership) and tagged on the way.

use super::observe::{Held, Live, Observe};
use crate::counters::{DropKind, LocalCounts};
use crate::policy;
use crate::policy::Excluded;
use crate::port::{MirrorSink, MirrorTo, PortTable, Slot};
use crate::storm::{FloodClass, StormLimits};
use crate::vlan::{self, VlanIn};
use std::sync::Arc;
use ub_fdb::PortId;
use ub_port::{RxFrame, TxFrame};
use ub_proto::PortState;
use ub_wire::{ETH_HLEN, ETHERTYPE_8021AD, ETHERTYPE_8021Q, Mac, VLAN_HLEN};

/// An ARP reply the switch makes (`neigh_suppress`): bytes and length.
pub type ArpReplyFrame = ([u8; 46], usize);

/// What the stage decided for one batch.
#[derive(Debug)]
pub struct Staged<'a> {
    /// Frames to send, per egress port id.
    pub out: Vec<Vec<TxFrame<'a>>>,
    /// Copies for mirror sinks (pcap writers).
    pub sinks: Vec<(Arc<dyn MirrorSink>, TxFrame<'a>)>,
    /// Our own loop probes that came back in, by the port that sent them.
    pub probes: Vec<PortId>,
    /// The ingress port's counts for the batch.
    pub local: LocalCounts,
    /// Frames not sent to an egress port, and why (counted on that port).
    pub egress_drops: Vec<(PortId, DropKind)>,
    /// ARP replies the switch answers requests with, per port to send on.
    pub replies: Vec<(PortId, ArpReplyFrame)>,
}

impl<'a> Staged<'a> {
    /// The frames staged for port `id`.
    pub fn to(&self, id: PortId) -> &[TxFrame<'a>] {
        self.out.get(usize::from(id)).map_or(&[], Vec::as_slice)
    }
}

/// Whether `f` fits the egress MTU, counting the tag it carries or gets.
#[inline]
pub(super) fn fits(f: &TxFrame<'_>, mtu: u32) -> bool {
    let len = f.wire_len();
    // The common case, decided without reading the offload header or the
    // frame: the whole frame is within the MTU (so is each GSO segment).
    if len <= mtu as usize + ETH_HLEN {
        return true;
    }
    if let Some(v) = f.vnet.filter(|v| v.is_gso()) {
        // The receiver segments a GSO super-frame into gso_size payloads.
        return u32::from(v.gso_size) <= mtu;
    }
    let et = u16::from_be_bytes([f.data[12], f.data[13]]);
    let tagged = f.adds_tags() || et == ETHERTYPE_8021Q || et == ETHERTYPE_8021AD;
    len <= mtu as usize + ETH_HLEN + if tagged { 2 * VLAN_HLEN } else { 0 }
}

/// The frame `tx` as it leaves port `to`: unchanged when the switch does
/// not filter VLANs (`vin` is `None`); else `None` if `to` is not a member
/// of the frame's VLAN, or the frame tagged or untagged per `to`'s membership.
#[inline(always)]
fn out_frame<'a>(tx: TxFrame<'a>, vin: Option<&VlanIn>, to: &Slot) -> Option<TxFrame<'a>> {
    match vin {
        None => Some(tx),
        Some(v) => {
            let set = &to.policy.vlans;
            set.member(v.vid).then(|| vlan::egress(tx, v, set.untagged(v.vid)))
        }
    }
}

/// [`out_frame`] when the stage knows at compile time whether the switch
/// filters VLANs: without filtering, the frame itself, and no test.
#[inline(always)]
pub(super) fn out_frame_as<'a, const FILTER: bool>(
    tx: TxFrame<'a>,
    vin: Option<&VlanIn>,
    to: &Slot,
) -> Option<TxFrame<'a>> {
    if FILTER { out_frame(tx, vin, to) } else { Some(tx) }
}

/// How a frame is flooded besides its class: its VLAN (when the switch
/// filters VLANs), and whether `neigh_suppress` ports are left out.
#[derive(Debug, Clone, Copy)]
pub(super) struct FloodHow<'v> {
    pub(super) vin: Option<&'v VlanIn>,
    pub(super) skip_suppress: bool,
    /// Storm control applies (it was passed already for what comes back
    /// from the kernel's rules).
    pub(super) storm: bool,
}

/// Whether port `me`'s storm control lets a flood of `class` go at `now`;
/// if not, the drop is counted and said.
#[inline(always)]
pub(super) fn storm_passes<O: Observe>(
    me: &Slot,
    class: FloodClass,
    limits: &StormLimits,
    now: u64,
    st: &mut Staged<'_>,
    obs: &mut O,
) -> bool {
    let passes = if O::DRY { me.storm.would_pass(class, limits, now) } else { me.storm.take(class, limits, now) };
    if !passes {
        st.local.drop(class.storm_drop());
        obs.step("storm", || format!("{} over the port's limit", class.as_str()));
        obs.decided(|| format!("drop: {}", class.storm_drop().as_str()));
    }
    passes
}

/// Floods the received frame `f` from port `me` to every port policy lets it
/// reach, unless storm control drops it. Returns whether the promiscuous port
/// got it (or must not get it: a frame storm control drops is dropped for it
/// too).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn flood<'a, const FILTER: bool, const SUPPRESS: bool, O: Observe>(
    me: &Slot,
    ports: &PortTable,
    f: &RxFrame<'a>,
    dst: Mac,
    how: FloodHow<'_>,
    limits: &StormLimits,
    now: u64,
    st: &mut Staged<'a>,
    mirrors: Option<&PortTable>,
    promisc: Option<&Slot>,
    obs: &mut O,
) -> bool {
    let class = FloodClass::of(dst);
    if how.storm && !storm_passes::<O>(me, class, limits, now, st, obs) {
        return true;
    }
    st.local.flooded += 1;
    let mut seen = false;
    for to in ports.iter().flatten() {
        let held = match policy::egress(me.id, me.flags, to.id, to.flags, Some(class)) {
            Err(x) => Some(Held::Policy(x)),
            Ok(()) if SUPPRESS && how.skip_suppress && to.flags.neigh_suppress() => Some(Held::Suppressed),
            Ok(()) => match member_as::<FILTER>(how.vin, to) {
                Some(untagged) => {
                    push::<FILTER, O>(to, egress_copy::<FILTER>(f, how.vin, untagged), st, mirrors, obs);
                    seen |= promisc.is_some_and(|h| h.id == to.id);
                    None
                }
                None => Some(Held::Policy(Excluded::NotMember)),
            },
        };
        if let Some(h) = held {
            obs.egress(to, Err(h));
        }
    }
    obs.decided(|| "flood".into());
    seen
}

/// Whether port `to` is a member of the frame's VLAN (`vin`; always when the
/// switch does not filter VLANs), and if so whether it leaves untagged.
#[inline(always)]
pub(super) fn member_as<const FILTER: bool>(vin: Option<&VlanIn>, to: &Slot) -> Option<bool> {
    match vin {
        Some(v) if FILTER => {
            let set = &to.policy.vlans;
            set.member(v.vid).then(|| set.untagged(v.vid))
        }
        _ => Some(false),
    }
}

/// How [`push`] makes the copy of `f` for an egress port: built afresh from
/// the received frame where it is stored, with the port's tag change (VLAN
/// filtering: `vin`, and `untagged` from [`member_as`]) applied there.
#[inline(always)]
pub(super) fn egress_copy<'a, 'f, const FILTER: bool>(
    f: &'f RxFrame<'a>,
    vin: Option<&'f VlanIn>,
    untagged: bool,
) -> impl Fn() -> TxFrame<'a> + 'f {
    move || {
        let tx = TxFrame::new(f.data, f.vnet, f.offloaded_tag);
        match vin {
            Some(v) if FILTER => vlan::egress(tx, v, untagged),
            _ => tx,
        }
    }
}

/// Stages a frame made by `tx` for port `to`, unless its state or MTU says no
/// (counted on it); whether it was staged. With `mirrors` (the port table,
/// when any mirror is set), a copy also goes to the port's mirror target.
///
/// `tx` makes the frame: a descriptor just built on the stack and copied
/// whole into the batch is read back wider than it was written, a failed
/// store forward per frame (docs/benchmarks-history.md); made where it is stored,
/// from the received frame, it is not read back at all.
#[inline(always)]
pub(super) fn push<'a, const FILTER: bool, O: Observe>(
    to: &Slot,
    tx: impl Fn() -> TxFrame<'a>,
    st: &mut Staged<'a>,
    mirrors: Option<&PortTable>,
    obs: &mut O,
) -> bool {
    let state = to.state();
    if let Some(ports) = mirrors
        && state == PortState::Up
        && let Some(m) = to.mirror.load_full()
    {
        mirror(&m, tx(), ports, st);
    }
    match state {
        PortState::Up => {}
        PortState::Blocked => {
            st.egress_drops.push((to.id, DropKind::LoopBlocked));
            obs.egress(to, Err(Held::State(state)));
            return false;
        }
        _ => {
            st.egress_drops.push((to.id, DropKind::PortDown));
            obs.egress(to, Err(Held::State(state)));
            return false;
        }
    }
    let mtu = to.tx.mtu();
    if !fits(&tx(), mtu) {
        st.egress_drops.push((to.id, DropKind::TooBig));
        obs.egress(to, Err(Held::TooBig(mtu)));
        return false;
    }
    if O::HEARS {
        obs.egress(to, Ok((tx(), FILTER)));
    }
    st.out[usize::from(to.id)].push(tx());
    true
}

/// Copies a frame to a mirror target (a port's own mirror is not followed
/// again: no chains, no loops).
pub(super) fn mirror<'a>(m: &MirrorTo, tx: TxFrame<'a>, ports: &PortTable, st: &mut Staged<'a>) {
    match m {
        MirrorTo::Port(id) => {
            if let Some(Some(p)) = ports.get(usize::from(*id)) {
                push::<false, Live>(p, || tx, st, None, &mut Live);
            }
        }
        MirrorTo::Sink(s) => st.sinks.push((s.clone(), tx)),
    }
}
