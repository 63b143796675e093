//! A switch port as the datapath holds it: its transmit half, counters,
//! state, storm gates and mirror, and the table of ports (with their
//! policies) every batch reads once.

use crate::counters::{CounterSnapshot, PortCounters};
use crate::policy::Policy;
use crate::storm::PortStorm;
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use ub_fdb::PortId;
use ub_port::PortTx;
use ub_proto::{Backend, PortState};

/// Where a mirrored port's frames are copied.
#[derive(Debug, Clone)]
pub enum MirrorTo {
    /// Sent out of another port as well.
    Port(PortId),
    /// Handed to a sink (a pcap writer) in the flush stage.
    Sink(Arc<dyn MirrorSink>),
}

/// Takes copies of mirrored frames. `offer` is called by a reader: it must
/// not block (copy and queue, or drop and count), and dropping the last
/// reference to a sink must not block either (a reader may hold it).
pub trait MirrorSink: Send + Sync + std::fmt::Debug {
    fn offer(&self, frame: &ub_port::TxFrame<'_>);
}

/// One switch port.
pub struct Port {
    pub id: PortId,
    pub name: String,
    pub kind: Backend,
    pub tx: Box<dyn PortTx>,
    pub counters: PortCounters,
    state: AtomicU8,
    /// Copies of what this port receives and sends go here too.
    pub(crate) mirror: ArcSwapOption<MirrorTo>,
    /// Storm control of what this port floods.
    pub(crate) storm: PortStorm,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").field("id", &self.id).field("name", &self.name).field("kind", &self.kind).finish()
    }
}

impl Port {
    pub(crate) fn new(id: PortId, name: &str, kind: Backend, tx: Box<dyn PortTx>) -> Port {
        Port {
            id,
            name: name.to_string(),
            kind,
            tx,
            counters: PortCounters::default(),
            state: AtomicU8::new(PortState::Up as u8),
            mirror: ArcSwapOption::empty(),
            storm: PortStorm::default(),
        }
    }

    #[inline]
    pub fn state(&self) -> PortState {
        PortState::from_u8(self.state.load(Relaxed))
    }

    /// Sets the link-derived state. A blocked port stays blocked when its link
    /// is up (only the loop guard unblocks it); a failed port stays failed
    /// until it is gone; down and gone otherwise always apply.
    pub fn set_state(&self, s: PortState) {
        match (self.state(), s) {
            (PortState::Failed, PortState::Gone) => {}
            (PortState::Failed, _) => return,
            (PortState::Blocked, PortState::Up) => return,
            _ => {}
        }
        self.state.store(s as u8, Relaxed)
    }

    pub(crate) fn set_blocked(&self, blocked: bool) -> bool {
        let (from, to) =
            if blocked { (PortState::Up, PortState::Blocked) } else { (PortState::Blocked, PortState::Up) };
        self.state.compare_exchange(from as u8, to as u8, Relaxed, Relaxed).is_ok()
    }

    pub(crate) fn set_failed(&self) {
        if self.state() != PortState::Gone {
            self.state.store(PortState::Failed as u8, Relaxed);
        }
    }
}

/// An entry of the port table: the port and its policy, read together
/// (the policy's egress flags inline, so a flood's loop over the table
/// reads nothing else).
#[derive(Debug, Clone)]
pub struct Slot {
    pub port: Arc<Port>,
    pub flags: crate::policy::Flags,
    pub policy: Arc<Policy>,
}

impl Slot {
    pub fn new(port: Arc<Port>, policy: Arc<Policy>) -> Slot {
        Slot { port, flags: policy.flags, policy }
    }
}

impl std::ops::Deref for Slot {
    type Target = Port;
    fn deref(&self) -> &Port {
        &self.port
    }
}

/// The ports, indexed by id; `None` for a free id. Replaced whole on every
/// change, so a reader's snapshot never changes under it.
pub type PortTable = Vec<Option<Slot>>;

/// A port as `port list` and `stats` show it.
#[derive(Debug, Clone)]
pub struct PortSnapshot {
    pub id: PortId,
    pub name: String,
    pub kind: Backend,
    pub state: PortState,
    pub mtu: u32,
    pub fdb_learned: u32,
    pub policy: Arc<Policy>,
    pub counters: CounterSnapshot,
}
