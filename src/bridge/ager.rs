//! The ager: a pass every 100 ms to 1 s (a tenth of the ageing time,
//! within those bounds) that ages the FDB and the neighbour table, ticks
//! the loop guard about once a second, and says in the log what stations
//! did since the last pass (never per frame).

use super::{Bridge, lock};
use std::sync::atomic::Ordering;
use std::time::Duration;
use ub_datapath::{PortState, Switch};

/// Station moves and flaps said at most once per ager pass.
#[derive(Debug, Default)]
pub struct FdbEventLog {
    moved: u64,
    flaps: u64,
    blocked: u64,
    last_tick: u64,
}

impl Bridge {
    /// How long the ager waits between passes over this bridge.
    pub fn ager_interval(&self) -> Duration {
        Duration::from_millis((self.sw.fdb.ageing_ms() / 10).clamp(100, 1000))
    }

    /// One pass of the ager.
    pub fn age(&self) {
        let sw = &self.sw;
        let mut log = lock(&self.log);
        let now = sw.now_ms();
        if now.saturating_sub(log.last_tick) >= 1000 {
            sw.loop_tick(now);
            log.last_tick = now;
        }
        let n = sw.fdb.age(sw.now_ms());
        sw.neigh.age(sw.now_ms(), sw.fdb.ageing_ms());
        if n > 0 {
            tracing::debug!(bridge = %self.name, aged = n, "fdb entries aged out");
        }
        log.log_changes(&self.name, sw);
    }
}

impl FdbEventLog {
    fn log_changes(&mut self, bridge: &str, sw: &Switch) {
        let fdb = &sw.fdb;
        let moved = fdb.stats.moved.load(Ordering::Relaxed);
        let flaps = fdb.stats.flaps.load(Ordering::Relaxed);
        if moved > self.moved {
            tracing::info!(bridge, moves = moved - self.moved, "stations moved between ports");
        }
        if flaps > self.flaps {
            let (vlan, mac) = ub_fdb::unkey(fdb.stats.last_flap.load(Ordering::Relaxed));
            tracing::warn!(bridge, flapping = flaps - self.flaps, last = %mac, vlan, "stations flapping between ports (a loop?): pinned, their copies dropped");
        }
        let loops = sw.loop_guard.blocked.load(Ordering::Relaxed);
        if loops > self.blocked {
            let names: Vec<String> = sw
                .ports()
                .iter()
                .flatten()
                .filter(|p| p.state() == PortState::Blocked)
                .map(|p| p.name.clone())
                .collect();
            tracing::warn!(bridge, blocked = ?names, "loop found (our probe came back): ports blocked until it is gone");
        }
        (self.moved, self.flaps, self.blocked) = (moved, flaps, loops);
    }
}
