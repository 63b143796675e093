//! `userbridge trace`: what the switch would do with a frame, step by step,
//! as `ovs-appctl ofproto/trace` explains Open vSwitch. It walks the same
//! steps as [`crate::Forwarder::stage`] with the same functions (classify,
//! the ingress policy, `vlan::ingress`, `neigh::arp_verdict`, `decide`,
//! `policy::egress`, `vlan::egress`), against the live FDB, policies and
//! storm buckets, and changes nothing: no learning, no counters, no tokens
//! taken.

use crate::decide::{Decision, decide_in};
use crate::forward::{fits, out_frame};
use crate::neigh;
use crate::policy::{self, Excluded};
use crate::storm::FloodClass;
use crate::switch::Switch;
use crate::vlan;
use ub_fdb::PortId;
use ub_port::{RxFrame, TxFrame};
use ub_proto::PortState;
use ub_wire::{ArpPacket, Classified, ETHERTYPE_ARP, EthernetFrame, classify};

/// One step of the walk: what was looked at, and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    pub step: &'static str,
    pub detail: String,
}

/// One port the frame could leave by: whether it would, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEgress {
    pub port: PortId,
    pub name: String,
    pub sent: bool,
    pub why: String,
    /// The 802.1Q VID it would carry on the wire there, if tagged.
    pub tagged: Option<u16>,
}

/// The whole explanation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    pub steps: Vec<TraceStep>,
    /// `unicast to P`, `flood`, `drop: REASON`, `answered by the switch`.
    pub decision: String,
    pub egress: Vec<TraceEgress>,
    /// The frame's VLAN in the FDB (0 when the switch does not filter VLANs
    /// and the frame is untagged).
    pub vid: u16,
}

impl Trace {
    fn step(&mut self, step: &'static str, detail: impl Into<String>) {
        self.steps.push(TraceStep { step, detail: detail.into() });
    }

    fn decide(mut self, d: impl Into<String>) -> Trace {
        self.decision = d.into();
        self
    }
}

impl Switch {
    /// Explains what the switch would do with `frame` arriving on port
    /// `ingress` at `now` (see the module's doc).
    pub fn trace(&self, ingress: PortId, frame: &[u8], now: u64) -> Trace {
        let mut t = Trace::default();
        let ports = self.ports();
        let Some(me) = ports.get(usize::from(ingress)).and_then(Option::as_ref) else {
            return t.decide("drop: no such port");
        };
        let pol = &*me.policy;
        t.step("ingress", format!("port {} ({}), state {:?}", me.name, me.kind.as_str(), me.state()));
        if me.state() == PortState::Blocked {
            return t.decide("drop: loop_blocked (the port is blocked by the loop guard)");
        }
        let c = match classify(frame, None) {
            Ok(c) => c,
            Err(r) => return t.decide(format!("drop: {}", crate::DropKind::from(r).as_str())),
        };
        t.step("classify", format!("src {} dst {} tag vid {}", c.src, c.dst, c.vid));
        if !pol.admits_source(c.src) {
            t.step("locked", format!("{} is not one of the port's stations {:?}", c.src, pol.spec.macs));
            return t.decide("drop: locked");
        }
        if pol.flags.locked() {
            t.step("locked", format!("{} is the port's own station", c.src));
        }
        let rx = RxFrame { data: frame, vnet: None, offloaded_tag: None, wire_len: 0 };
        let vin = if self.vlan_filtering() {
            match vlan::ingress(&rx, &pol.vlans) {
                Some(v) => {
                    let how = match (v.q, v.rewrite) {
                        (vlan::QTag::None, _) => "untagged: the PVID",
                        (_, true) => "priority-tagged: the PVID",
                        _ => "tagged",
                    };
                    t.step("vlan", format!("VLAN {} ({how})", v.vid));
                    Some(v)
                }
                None => {
                    t.step(
                        "vlan",
                        format!(
                            "refused by the ingress filter (PVID {:?}, members {:?})",
                            pol.vlans.pvid(),
                            pol.spec.vlans.iter().map(|v| v.vid).collect::<Vec<_>>()
                        ),
                    );
                    return t.decide("drop: vlan");
                }
            }
        } else {
            t.step("vlan", "filtering off: VLAN-unaware, tags carried through");
            None
        };
        let c = match vin {
            Some(v) => Classified { vid: v.vid, ..c },
            None => c,
        };
        t.vid = c.vid;
        let g = self.fdb.guard();
        if pol.learning() {
            let detail = match self.fdb.lookup_in(&g, c.vid, c.src, now) {
                Some(p) if p == ingress => format!("{} refreshed on {}", c.src, me.name),
                Some(p) => format!("{} would move here from port {}", c.src, self.port_name(p)),
                None => format!("{} would be learned on {}", c.src, me.name),
            };
            t.step("learn", detail);
        } else {
            t.step("learn", "learning off on this port");
        }
        // ARP suppression, as the stage applies it.
        let mut replied = false;
        if self.neigh_suppressing()
            && let Ok(eth) = EthernetFrame::new_checked(frame)
            && let Ok((_, _, et, off)) = eth.tags()
            && et == ETHERTYPE_ARP
            && let Ok(arp) = ArpPacket::new_checked(&frame[off..])
        {
            let target = self.neigh.lookup(arp.target_ip(), now, self.fdb.ageing_ms());
            let v = neigh::arp_verdict(&arp, me.flags.neigh_suppress(), target, |mac| {
                let p = self.fdb.lookup_in(&g, c.vid, mac, now)?;
                Some(ports.get(usize::from(p)).and_then(Option::as_ref).is_some_and(|s| s.flags.neigh_suppress()))
            });
            replied = v.replied;
            let detail = match (v.answer, v.replied) {
                (Some(m), _) => format!(
                    "who-has {}: answered by the switch as {m}; not flooded to neigh_suppress ports",
                    arp.target_ip()
                ),
                (None, true) => format!("who-has {}: not flooded to neigh_suppress ports", arp.target_ip()),
                (None, false) => {
                    format!("who-has {}: no rule applies (neighbour {:?})", arp.target_ip(), target.map(|t| t.0))
                }
            };
            t.step("neigh_suppress", detail);
        }
        let tx = TxFrame::new(frame, None, None);
        let class = FloodClass::of(c.dst);
        match decide_in(&self.fdb, &g, ingress, pol.hairpin(), &c, now) {
            Decision::Drop(k) => {
                t.step("fdb", format!("{} is behind the ingress port (hairpin off)", c.dst));
                t.decide(format!("drop: {}", k.as_str()))
            }
            Decision::Unicast(p) => {
                t.step("fdb", format!("{} is behind port {}", c.dst, self.port_name(p)));
                let Some(to) = ports.get(usize::from(p)).and_then(Option::as_ref) else {
                    return t.decide("flood (the entry's port is being removed)");
                };
                let e = self.egress_of(ingress, me.flags, to, tx, vin.as_ref(), None, false);
                let sent = e.sent;
                t.egress.push(e);
                if sent { t.decide(format!("unicast to {}", to.name)) } else { t.decide("drop") }
            }
            Decision::Flood => {
                let why =
                    if c.dst.is_multicast() { class.as_str().to_string() } else { format!("{} is unknown", c.dst) };
                t.step("fdb", format!("flood: {why}"));
                if !me.storm.would_pass(class, &self.storm_limits(), now) {
                    t.step("storm", format!("{} over the port's limit", class.as_str()));
                    return t.decide(format!("drop: {}", class.storm_drop().as_str()));
                }
                for to in ports.iter().flatten() {
                    let e = self.egress_of(ingress, me.flags, to, tx, vin.as_ref(), Some(class), replied);
                    t.egress.push(e);
                }
                t.decide("flood")
            }
        }
    }

    fn port_name(&self, id: PortId) -> String {
        self.port(id).map_or_else(|| format!("#{id}"), |p| p.name.clone())
    }

    /// Whether the frame would leave by `to`, and why (not).
    #[allow(clippy::too_many_arguments)]
    fn egress_of(
        &self,
        from: PortId,
        fp: crate::Flags,
        to: &crate::Slot,
        tx: TxFrame<'_>,
        vin: Option<&vlan::VlanIn>,
        flood: Option<FloodClass>,
        skip_suppress: bool,
    ) -> TraceEgress {
        let mut e = TraceEgress { port: to.id, name: to.name.clone(), sent: false, why: String::new(), tagged: None };
        if let Err(x) = policy::egress(from, fp, to.id, to.flags, flood) {
            e.why = x.as_str().to_string();
            return e;
        }
        if skip_suppress && to.flags.neigh_suppress() {
            e.why = "neigh_suppress: the switch answered or the host does".into();
            return e;
        }
        let Some(o) = out_frame(tx, vin, to) else {
            e.why = Excluded::NotMember.as_str().to_string();
            return e;
        };
        match to.state() {
            PortState::Up => {}
            s => {
                e.why = format!("port is {s:?}");
                return e;
            }
        }
        if !fits(&o, to.tx.mtu()) {
            e.why = format!("larger than its MTU {}", to.tx.mtu());
            return e;
        }
        let w = o.to_wire_vec();
        e.tagged = (w.len() >= 16 && w[12..14] == [0x81, 0x00]).then(|| u16::from_be_bytes([w[14], w[15]]) & 0x0fff);
        e.sent = true;
        e.why = match (vin, e.tagged) {
            (Some(_), Some(v)) => format!("member, tagged {v}"),
            (Some(_), None) => "member, untagged".into(),
            (None, _) => "forwarded".into(),
        };
        e
    }
}
