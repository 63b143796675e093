//! How AF_PACKET ports receive: `--rx`, `--ring-slots`, `--busy-pps`,
//! `--readers` and `--fanout`, each field named after its flag.

pub use crate::sys::Fanout;
use ub_proto::settings::{BUSY_PPS, READERS_MAX, RING_SLOTS, SettingError};

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

/// Receive settings a port cannot work with; each names its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRxConfig {
    #[error("--ring-slots {0}: {1}")]
    RingSlots(usize, SettingError),
    #[error("--ring-slots {0}: use an even count")]
    OddRingSlots(usize),
    #[error("--busy-pps {0}: {1}")]
    BusyPps(u64, SettingError),
    #[error("--readers {0}: use 1 to {READERS_MAX}")]
    Readers(usize),
}

impl RxConfig {
    /// Whether the kernel and the rest of the port can work with it.
    pub fn validate(&self) -> Result<(), BadRxConfig> {
        RING_SLOTS.check(self.ring_slots).map_err(|e| BadRxConfig::RingSlots(self.ring_slots, e))?;
        if !self.ring_slots.is_multiple_of(2) {
            return Err(BadRxConfig::OddRingSlots(self.ring_slots));
        }
        BUSY_PPS.check(self.busy_pps).map_err(|e| BadRxConfig::BusyPps(self.busy_pps, e))?;
        if !(1..=READERS_MAX).contains(&self.readers) {
            return Err(BadRxConfig::Readers(self.readers));
        }
        Ok(())
    }
}
