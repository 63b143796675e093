//! Loop detection by probes, the way access switches' "loop protection"
//! works (no spanning tree): the switch sends a small broadcast frame from
//! its own address out of every port; if one comes back in on a port, two
//! ports are joined outside the switch (directly, or through a pod or an
//! external bridge that floods it). Of the two, the higher-numbered port is
//! blocked: it forwards nothing until probes stop coming back.
//!
//! Probing is silent by default (`OnFlap`): it starts when the FDB sees a
//! station flapping between ports, the symptom of a loop, and runs for 30 s
//! after the last flap. `Always` probes every second; `Off` never does.

use crate::port::PortTable;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use ub_fdb::{DefaultFdb, PortId};
use ub_port::TxFrame;
use ub_proto::PortState;
use ub_wire::{LoopProbe, Mac, probe_frame};

/// Probing goes on this long after the last flap (mode `OnFlap`).
const PROBE_AFTER_FLAP_MS: u64 = 30_000;
/// A blocked port is unblocked when no probe has come back on it for this long.
const UNBLOCK_AFTER_MS: u64 = 3_500;
/// The loop's ports are flushed again this long after the block: frames the
/// loop still had in flight then (socket queues, other readers' batches)
/// arrive after the first flush and teach their sources the loop's port.
const REFLUSH_AFTER_MS: u64 = 500;

/// When to send probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopDetect {
    Off = 0,
    OnFlap = 1,
    Always = 2,
}

impl LoopDetect {
    /// As `--loop-detect` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopDetect::Off => "off",
            LoopDetect::OnFlap => "on-flap",
            LoopDetect::Always => "always",
        }
    }
}

/// The loop guard's state, shared by the readers (which see probes come
/// back) and the housekeeping tick (which sends them).
#[derive(Debug)]
pub struct LoopGuard {
    /// The switch's own address: locally administered, random per start.
    pub mac: Mac,
    nonce: u64,
    mode: AtomicU8,
    probe_until: AtomicU64,
    seen_flaps: AtomicU64,
    /// Loops found (a probe came back), cumulative.
    pub detected: AtomicU64,
    /// Ports blocked and unblocked, cumulative.
    pub blocked: AtomicU64,
    pub unblocked: AtomicU64,
    /// When a probe last came back, per port id (ms), to unblock.
    last_seen: Box<[AtomicU64]>,
    /// When to flush a loop port's entries once more, per port id (ms; 0: not due).
    reflush_at: Box<[AtomicU64]>,
}

impl LoopGuard {
    pub(crate) fn new() -> LoopGuard {
        // Random enough to tell this daemon's probes from another's.
        let seed = std::collections::hash_map::RandomState::new();
        let nonce = std::hash::BuildHasher::hash_one(&seed, std::process::id());
        let b = nonce.to_be_bytes();
        LoopGuard {
            mac: Mac([0x02 | (b[0] & 0xfc), b[1], b[2], b[3], b[4], b[5]]),
            nonce,
            mode: AtomicU8::new(LoopDetect::OnFlap as u8),
            probe_until: AtomicU64::new(0),
            seen_flaps: AtomicU64::new(0),
            detected: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            unblocked: AtomicU64::new(0),
            last_seen: (0..ub_fdb::MAX_PORTS).map(|_| AtomicU64::new(0)).collect(),
            reflush_at: (0..ub_fdb::MAX_PORTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn mode(&self) -> LoopDetect {
        match self.mode.load(Relaxed) {
            0 => LoopDetect::Off,
            2 => LoopDetect::Always,
            _ => LoopDetect::OnFlap,
        }
    }

    pub fn set_mode(&self, m: LoopDetect) {
        self.mode.store(m as u8, Relaxed)
    }

    /// The port a frame from our own address was probing from, if it is
    /// one of our probes (and not another daemon's).
    #[inline]
    pub(crate) fn origin(&self, frame: &[u8]) -> Option<PortId> {
        LoopProbe::new_checked(frame).ok().filter(|p| p.nonce() == self.nonce && p.src() == self.mac).map(|p| p.port())
    }

    /// Loops detected, ports blocked, ports unblocked: the counters by name.
    pub fn events(&self) -> [(&'static str, u64); 3] {
        [
            ("detected", self.detected.load(Relaxed)),
            ("blocked", self.blocked.load(Relaxed)),
            ("unblocked", self.unblocked.load(Relaxed)),
        ]
    }

    /// A probe sent from port `from` came back in on port `on`: block the
    /// higher-numbered of the two (one end of each loop stays in service).
    pub(crate) fn probe_returned(&self, ports: &PortTable, fdb: &DefaultFdb, on: PortId, from: PortId, now: u64) {
        self.detected.fetch_add(1, Relaxed);
        let victim = on.max(from);
        if let Some(seen) = self.last_seen.get(usize::from(victim)) {
            seen.store(now, Relaxed);
        }
        if let Some(Some(p)) = ports.get(usize::from(victim))
            && p.set_blocked(true)
        {
            self.blocked.fetch_add(1, Relaxed);
            // What was learned through the loop, on either of its ports, is
            // suspect (a station's looped copies teach it the port that stays
            // up too), stations pinned meanwhile may be pinned wrong: start
            // those afresh, as a spanning tree flushes on a topology change.
            for port in [on, from] {
                fdb.flush_port(port, false);
                if let Some(t) = self.reflush_at.get(usize::from(port)) {
                    t.store(now + REFLUSH_AFTER_MS, Relaxed);
                }
            }
            fdb.clear_flap_pins();
        }
    }

    /// Housekeeping, about once a second: flush a blocked loop's ports once
    /// more when due, send probes when the mode says so, and unblock ports
    /// whose loop has gone.
    pub fn tick(&self, ports: &PortTable, fdb: &DefaultFdb, now: u64) {
        let flaps = fdb.stats.flaps.load(Relaxed);
        if self.seen_flaps.swap(flaps, Relaxed) != flaps {
            self.probe_until.store(now + PROBE_AFTER_FLAP_MS, Relaxed);
        }
        let probing = match self.mode() {
            LoopDetect::Off => false,
            LoopDetect::Always => true,
            LoopDetect::OnFlap => now < self.probe_until.load(Relaxed),
        };
        for p in ports.iter().flatten() {
            let due = &self.reflush_at[usize::from(p.id)];
            let t = due.load(Relaxed);
            if t != 0 && now >= t && due.compare_exchange(t, 0, Relaxed, Relaxed).is_ok() {
                fdb.flush_port(p.id, false);
            }
            let st = p.state();
            if st == PortState::Blocked
                && now.saturating_sub(self.last_seen[usize::from(p.id)].load(Relaxed)) > UNBLOCK_AFTER_MS
                && p.set_blocked(false)
            {
                self.unblocked.fetch_add(1, Relaxed);
            }
            if probing && matches!(st, PortState::Up | PortState::Blocked) {
                let f = probe_frame(self.mac, self.nonce, p.id);
                let o = p.tx.send_batch(&[TxFrame::new(&f, None, None)]);
                p.counters.tx_frames.fetch_add(o.sent as u64, Relaxed);
                p.counters.tx_bytes.fetch_add(o.bytes, Relaxed);
            }
        }
        if self.mode() == LoopDetect::OnFlap && probing {
            // Keep probing while something is blocked, so it can be unblocked.
            let any_blocked = ports.iter().flatten().any(|p| p.state() == PortState::Blocked);
            if any_blocked {
                self.probe_until.store(now + PROBE_AFTER_FLAP_MS, Relaxed);
            }
        }
    }
}
