//! `userbridge trace`: what the switch would do with a frame, step by step,
//! as `ovs-appctl ofproto/trace` explains Open vSwitch. It runs the frame
//! through the stage itself (`Forwarder::stage`), with an observer that
//! writes down each step and each egress port, and lets the stage change
//! nothing: no learning, no counters, no storm tokens taken. What it says
//! is what forwarding does, because it is forwarding's own code.

use crate::forward::Forwarder;
use crate::forward::observe::{Held, Observe};
use crate::port::Slot;
use crate::switch::Switch;
use ub_fdb::PortId;
use ub_port::{RxFrame, TxFrame};

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

/// The whole explanation; also the observer that writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    pub steps: Vec<TraceStep>,
    /// `unicast to P`, `flood`, `drop: REASON`.
    pub decision: String,
    pub egress: Vec<TraceEgress>,
    /// The frame's VLAN in the FDB (0 when the switch does not filter VLANs
    /// and the frame is untagged).
    pub vid: u16,
}

impl Observe for Trace {
    const DRY: bool = true;
    const HEARS: bool = true;

    fn step(&mut self, step: &'static str, detail: impl FnOnce() -> String) {
        self.steps.push(TraceStep { step, detail: detail() });
    }

    fn vlan(&mut self, vid: u16) {
        self.vid = vid;
    }

    fn egress(&mut self, to: &Slot, out: Result<(TxFrame<'_>, bool), Held>) {
        let mut e = TraceEgress { port: to.id, name: to.name.clone(), sent: false, why: String::new(), tagged: None };
        match out {
            Ok((frame, filtering)) => {
                let w = frame.to_wire_vec();
                e.tagged =
                    (w.len() >= 16 && w[12..14] == [0x81, 0x00]).then(|| u16::from_be_bytes([w[14], w[15]]) & 0x0fff);
                e.sent = true;
                e.why = match (filtering, e.tagged) {
                    (true, Some(v)) => format!("member, tagged {v}"),
                    (true, None) => "member, untagged".into(),
                    (false, _) => "forwarded".into(),
                };
            }
            Err(Held::Policy(x)) => e.why = x.as_str().to_string(),
            Err(Held::Suppressed) => e.why = "neigh_suppress: the switch answered or the host does".into(),
            Err(Held::State(s)) => e.why = format!("port is {s:?}"),
            Err(Held::TooBig(mtu)) => e.why = format!("larger than its MTU {mtu}"),
        }
        self.egress.push(e);
    }

    fn decided(&mut self, what: impl FnOnce() -> String) {
        self.decision = what();
    }
}

impl Switch {
    /// Explains what the switch would do with `frame` arriving on port
    /// `ingress` at `now` (see the module's doc).
    pub fn trace(&self, ingress: PortId, frame: &[u8], now: u64) -> Trace {
        let mut t = Trace::default();
        let ports = self.ports();
        let wire_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let rx = [RxFrame { data: frame, vnet: None, offloaded_tag: None, wire_len }];
        let _ = Forwarder::new(ingress).stage_observed(self, &ports, &rx, now, &mut t);
        t
    }
}
