//! What the stage says as it goes, and whether it may change the switch.
//! The stage is written once and run two ways: forwarding ([`Live`]: says
//! nothing, changes what forwarding changes) and `userbridge trace`
//! (`crate::trace::Trace`: records every step, changes nothing). Both are
//! type parameters, so forwarding pays for neither the words nor the tests.

use crate::policy::Excluded;
use crate::port::Slot;
use ub_port::TxFrame;
use ub_proto::PortState;

/// Why a frame does not leave by a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// The egress rules (`policy::egress`) or VLAN membership.
    Policy(Excluded),
    /// ARP suppression answered it, or the host does.
    Suppressed,
    /// The port is not up.
    State(PortState),
    /// Larger than the port's MTU.
    TooBig(u32),
}

/// A listener to the stage, and what it allows.
pub(crate) trait Observe {
    /// Nothing may change: no source learned or entry removed, no neighbour
    /// learned, no storm token taken.
    const DRY: bool;

    /// It listens: the stage builds what it is told only when it does.
    const HEARS: bool;

    /// A step of the walk and what it found (built only when heard).
    #[inline(always)]
    fn step(&mut self, _step: &'static str, _detail: impl FnOnce() -> String) {}

    /// The frame's VLAN, as the FDB keys it.
    #[inline(always)]
    fn vlan(&mut self, _vid: u16) {}

    /// The frame leaves by `to` as `frame` (`filtering`: the switch filters
    /// VLANs), or is held back from it.
    #[inline(always)]
    fn egress(&mut self, _to: &Slot, _out: Result<(TxFrame<'_>, bool), Held>) {}

    /// What became of the frame, in a few words.
    #[inline(always)]
    fn decided(&mut self, _what: impl FnOnce() -> String) {}
}

/// Forwarding: hears nothing, and the stage changes the tables as it must.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Live;

impl Observe for Live {
    const DRY: bool = false;
    const HEARS: bool = false;
}
