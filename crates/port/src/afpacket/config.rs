//! How AF_PACKET ports receive: `--rx`, `--ring-slots`, `--busy-pps`,
//! `--readers` and `--fanout`, each field named after its flag.

pub use crate::sys::Fanout;
use ub_proto::settings::{BUSY_PPS, READERS_MAX, RING_SLOTS};

/// How a port receives (`--rx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxMode {
    /// `recvmmsg` with PACKET_AUXDATA, woken per arrival; never holds a ring.
    Mmsg,
    /// `Mmsg`, and RX slots (a TPACKET_V2 ring per receive half) while the
    /// port is busy: less CPU per small frame under a flood, no ring memory
    /// while the port is not (`super::busy`, docs/benchmarks.md).
    #[default]
    BusySlots,
}

/// How a port receives, and how many receive halves share its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxConfig {
    /// `--rx`.
    pub mode: RxMode,
    /// `--ring-slots`: the most 2 KiB slots a busy port's ring takes.
    pub ring_slots: usize,
    /// `--busy-pps`: frames per second (the port's halves together) from
    /// which a port takes its rings; it gives them back after
    /// [`QUIET_FOR`](super::busy::QUIET_FOR) under a fifth of it.
    pub busy_pps: u64,
    /// `--readers`: receive halves (and at most reader threads) per port,
    /// in a PACKET_FANOUT group; 1 means a plain socket.
    pub readers: usize,
    /// `--fanout`: how the group spreads frames over the halves.
    pub fanout: Fanout,
}

impl Default for RxConfig {
    fn default() -> Self {
        RxConfig {
            mode: RxMode::BusySlots,
            ring_slots: RING_SLOTS.default,
            busy_pps: BUSY_PPS.default,
            readers: 1,
            fanout: Fanout::FlowOrCpu,
        }
    }
}

impl RxConfig {
    /// Whether the kernel and the rest of the port can work with it; the
    /// message names the flag's key and its range.
    pub fn validate(&self) -> Result<(), String> {
        RING_SLOTS.check(self.ring_slots)?;
        if !self.ring_slots.is_multiple_of(2) {
            return Err(format!("{} = {}: use an even count", RING_SLOTS.key, self.ring_slots));
        }
        BUSY_PPS.check(self.busy_pps)?;
        if !(1..=READERS_MAX).contains(&self.readers) {
            return Err(format!("{} readers per port: use 1 to {READERS_MAX}", self.readers));
        }
        Ok(())
    }
}
