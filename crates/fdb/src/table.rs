use crate::{FdbMap, MAX_PORTS, PortId, key, unkey};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use ub_proto::settings::{AGEING_SECS, FDB_MAX, FDB_MAX_PER_PORT};
use ub_wire::Mac;

/// One FDB entry. The port and last-seen time are atomics, so refreshing an
/// entry or moving a station is not a map write.
#[derive(Debug)]
pub struct Entry {
    port: AtomicU16,
    last_seen: AtomicU64,
    is_static: bool,
    // Move (flap) tracking; touched only when the station moves.
    /// Start of the current move window, ms.
    window_start: AtomicU64,
    /// Moves in the current window.
    moves: AtomicU32,
    /// Where the station was when the window began: where a flapping one is pinned.
    home: AtomicU16,
    /// Until when moves are refused (a flapping station), ms.
    frozen_until: AtomicU64,
}

impl Entry {
    fn new(port: PortId, now: u64, is_static: bool) -> Entry {
        Entry {
            port: AtomicU16::new(port),
            last_seen: AtomicU64::new(now),
            is_static,
            window_start: AtomicU64::new(now),
            moves: AtomicU32::new(0),
            home: AtomicU16::new(port),
            frozen_until: AtomicU64::new(0),
        }
    }
    #[inline]
    pub fn port(&self) -> PortId {
        self.port.load(Relaxed)
    }
    #[inline]
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Relaxed)
    }
    pub fn is_static(&self) -> bool {
        self.is_static
    }
}

/// Limits and timers. Defaults follow the Linux bridge: 300 s ageing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Idle time after which a learned entry is removed, in milliseconds.
    pub ageing_ms: u64,
    /// Most learned entries in the whole table (statics do not count).
    pub max_entries: usize,
    /// Most learned entries behind any one port.
    pub max_per_port: u32,
    /// A station that moves this many times within `flap_window_ms` is
    /// flapping (a loop, or two hosts with one MAC): it is pinned to the port
    /// it was on before, and moves are refused for `flap_hold_ms`.
    pub flap_moves: u32,
    pub flap_window_ms: u64,
    pub flap_hold_ms: u64,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            ageing_ms: AGEING_SECS.default * 1000,
            max_entries: usize::try_from(FDB_MAX.default).unwrap_or(usize::MAX),
            max_per_port: FDB_MAX_PER_PORT.default,
            flap_moves: 4,
            flap_window_ms: 1_000,
            flap_hold_ms: 10_000,
        }
    }
}

/// Why a source was not learned, or a static entry not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The ingress port already has `max_per_port` learned entries.
    #[error("the port has as many learned entries as it may (--fdb-max-per-port)")]
    PortLimit,
    /// The table already has `max_entries` learned entries.
    #[error("the table has as many learned entries as it may (--fdb-max)")]
    TableFull,
    /// The port id is out of range.
    #[error("no port has that id")]
    BadPort,
}

/// The outcome of [`Fdb::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Known on this port: last-seen refreshed.
    Refreshed,
    /// New station.
    Learned,
    /// Known on another port; now on this one.
    Moved {
        from: PortId,
    },
    /// The station is flapping between ports and pinned elsewhere: the frame
    /// is most likely a copy looping back; the caller should drop it.
    Flapping,
    /// A static entry holds this address; it neither moves nor ages.
    Static,
    Refused(Refused),
}

/// Event counters, cumulative since start.
#[derive(Debug, Default)]
pub struct FdbStats {
    pub learned: AtomicU64,
    pub moved: AtomicU64,
    pub aged: AtomicU64,
    pub refused: AtomicU64,
    pub flushed: AtomicU64,
    /// Stations found flapping (and pinned).
    pub flaps: AtomicU64,
    /// Frames whose source was pinned on another port.
    pub flap_refused: AtomicU64,
    /// Key (see `unkey`) of the station found flapping last, for the log.
    pub last_flap: AtomicU64,
}

impl FdbStats {
    /// Every event counter by name: the one list `stats` and `/metrics` show.
    pub fn events(&self) -> [(&'static str, u64); 7] {
        let ld = |a: &AtomicU64| a.load(Relaxed);
        [
            ("learned", ld(&self.learned)),
            ("moved", ld(&self.moved)),
            ("aged", ld(&self.aged)),
            ("refused", ld(&self.refused)),
            ("flushed", ld(&self.flushed)),
            ("flaps", ld(&self.flaps)),
            ("flap_refused", ld(&self.flap_refused)),
        ]
    }
}

/// A copy of one entry for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub vid: u16,
    pub mac: Mac,
    pub port: PortId,
    /// Milliseconds since last seen (0 for static entries).
    pub age_ms: u64,
    pub is_static: bool,
}

/// The forwarding table: policy (limits, moves, statics, ageing) over a
/// concurrent map `M`.
#[derive(Debug)]
pub struct Fdb<M: FdbMap> {
    map: M,
    ageing_ms: AtomicU64,
    max_entries: usize,
    max_per_port: u32,
    flap_moves: u32,
    flap_window_ms: u64,
    flap_hold_ms: u64,
    learned_total: AtomicUsize,
    per_port: Box<[AtomicU32]>,
    pub stats: FdbStats,
}

impl<M: FdbMap> Fdb<M> {
    pub fn new(cfg: FdbConfig) -> Self {
        Fdb {
            map: M::default(),
            ageing_ms: AtomicU64::new(cfg.ageing_ms),
            max_entries: cfg.max_entries,
            max_per_port: cfg.max_per_port,
            flap_moves: cfg.flap_moves.max(2),
            flap_window_ms: cfg.flap_window_ms,
            flap_hold_ms: cfg.flap_hold_ms,
            learned_total: AtomicUsize::new(0),
            per_port: (0..MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            stats: FdbStats::default(),
        }
    }

    pub fn ageing_ms(&self) -> u64 {
        self.ageing_ms.load(Relaxed)
    }

    pub fn set_ageing_ms(&self, ms: u64) {
        self.ageing_ms.store(ms, Relaxed)
    }

    /// Learned entries in the table (statics excluded).
    pub fn learned_len(&self) -> usize {
        self.learned_total.load(Relaxed)
    }

    /// All entries, statics included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Learned entries behind `port`.
    pub fn port_learned(&self, port: PortId) -> u32 {
        self.per_port.get(port as usize).map_or(0, |c| c.load(Relaxed))
    }

    /// A guard to hold across a batch of `lookup_in`/`learn_in` calls.
    #[inline]
    pub fn guard(&self) -> M::Guard<'_> {
        self.map.guard()
    }

    /// The port `mac` sits behind in `vid`, unless unknown or expired.
    #[inline]
    pub fn lookup(&self, vid: u16, mac: Mac, now: u64) -> Option<PortId> {
        self.lookup_in(&self.guard(), vid, mac, now)
    }

    /// [`Fdb::lookup`] under a guard held by the caller.
    // Always inlined: the datapath's per-frame loop must keep it inline
    // whatever else the loop holds (docs/benchmarks-history.md, issue #12).
    #[inline(always)]
    pub fn lookup_in(&self, g: &M::Guard<'_>, vid: u16, mac: Mac, now: u64) -> Option<PortId> {
        let ageing = self.ageing_ms.load(Relaxed);
        self.map
            .with_entry_in(g, key(vid, mac), |e| {
                (e.is_static || now.saturating_sub(e.last_seen()) < ageing).then(|| e.port())
            })
            .flatten()
    }

    fn reserve(&self, port: PortId) -> Result<(), Refused> {
        let c = self.per_port.get(port as usize).ok_or(Refused::BadPort)?;
        if c.fetch_add(1, Relaxed) >= self.max_per_port {
            c.fetch_sub(1, Relaxed);
            return Err(Refused::PortLimit);
        }
        Ok(())
    }

    fn release(&self, port: PortId) {
        if let Some(c) = self.per_port.get(port as usize) {
            c.fetch_sub(1, Relaxed);
        }
    }

    fn refuse(&self, r: Refused) -> Learn {
        self.stats.refused.fetch_add(1, Relaxed);
        Learn::Refused(r)
    }

    /// Records that `mac` in `vid` was seen as a source on `port` at `now`.
    ///
    /// The caller has checked the address is a valid unicast source
    /// (`Mac::is_valid_source`); this is asserted in debug builds.
    #[inline]
    pub fn learn(&self, vid: u16, mac: Mac, port: PortId, now: u64) -> Learn {
        self.learn_in(&self.guard(), vid, mac, port, now)
    }

    /// The rare part of learning, out of line so the per-frame refresh
    /// stays small enough to inline: a known station seen on another port.
    #[inline(never)]
    fn learn_moved(&self, e: &Entry, k: u64, old: PortId, port: PortId, now: u64) -> Learn {
        if e.frozen_until.load(Relaxed) > now {
            self.stats.flap_refused.fetch_add(1, Relaxed);
            return Learn::Flapping;
        }
        if now.saturating_sub(e.window_start.load(Relaxed)) >= self.flap_window_ms {
            e.window_start.store(now, Relaxed);
            e.moves.store(0, Relaxed);
            e.home.store(old, Relaxed);
        }
        if e.moves.fetch_add(1, Relaxed) + 1 >= self.flap_moves {
            // Flapping: pin it where it was before the window's first move.
            e.frozen_until.store(now + self.flap_hold_ms, SeqCst);
            self.pin_home(e);
            self.stats.flaps.fetch_add(1, Relaxed);
            self.stats.flap_refused.fetch_add(1, Relaxed);
            self.stats.last_flap.store(k, Relaxed);
            return Learn::Flapping;
        }
        if let Err(r) = self.reserve(port) {
            return self.refuse(r);
        }
        match e.port.compare_exchange(old, port, SeqCst, Relaxed) {
            Ok(_) => {
                self.release(old);
                e.last_seen.store(now, Relaxed);
                // Another reader may have pinned the station meanwhile: its pin wins.
                if e.frozen_until.load(SeqCst) > now {
                    self.pin_home(e);
                    self.stats.flap_refused.fetch_add(1, Relaxed);
                    return Learn::Flapping;
                }
                self.stats.moved.fetch_add(1, Relaxed);
                Learn::Moved { from: old }
            }
            Err(_) => {
                // Another reader moved it first; its move stands.
                self.release(port);
                Learn::Refreshed
            }
        }
    }

    /// [`Fdb::learn`] under a guard held by the caller.
    #[inline(always)]
    pub fn learn_in(&self, g: &M::Guard<'_>, vid: u16, mac: Mac, port: PortId, now: u64) -> Learn {
        debug_assert!(mac.is_valid_source());
        let k = key(vid, mac);
        let known = self.map.with_entry_in(g, k, |e| {
            if e.is_static {
                return Learn::Static;
            }
            let old = e.port();
            if old == port {
                // Skip the store when the (coarse) clock has not moved: keeps the
                // cache line shared between readers.
                if e.last_seen() != now {
                    e.last_seen.store(now, Relaxed);
                }
                return Learn::Refreshed;
            }
            self.learn_moved(e, k, old, port, now)
        });
        if let Some(outcome) = known {
            return outcome;
        }
        if let Err(r) = self.reserve(port) {
            return self.refuse(r);
        }
        if self.learned_total.fetch_add(1, Relaxed) >= self.max_entries {
            self.learned_total.fetch_sub(1, Relaxed);
            self.release(port);
            return self.refuse(Refused::TableFull);
        }
        if self.map.insert_new(k, Entry::new(port, now, false)) {
            self.stats.learned.fetch_add(1, Relaxed);
            Learn::Learned
        } else {
            // Another reader inserted it between our look-up and insert.
            self.learned_total.fetch_sub(1, Relaxed);
            self.release(port);
            Learn::Refreshed
        }
    }

    /// Puts a flapping entry back on its home port, whatever port readers
    /// racing with us have just moved it to (SeqCst pairs with the check
    /// after a move in `learn`).
    fn pin_home(&self, e: &Entry) {
        let home = e.home.load(Relaxed);
        for _ in 0..8 {
            let cur = e.port.load(SeqCst);
            if cur == home {
                return;
            }
            if self.reserve(home).is_err() {
                return;
            }
            if e.port.compare_exchange(cur, home, SeqCst, Relaxed).is_ok() {
                self.release(cur);
                return;
            }
            self.release(home);
        }
    }

    fn forget(&self, e: &Entry) {
        if !e.is_static {
            self.learned_total.fetch_sub(1, Relaxed);
            self.release(e.port());
        }
    }

    /// Adds (or replaces with) a static entry, which never ages or moves.
    pub fn add_static(&self, vid: u16, mac: Mac, port: PortId) -> Result<(), Refused> {
        if port as usize >= MAX_PORTS {
            return Err(Refused::BadPort);
        }
        self.map.replace(key(vid, mac), Entry::new(port, 0, true), |old| self.forget(old));
        Ok(())
    }

    /// Removes the entry for (vid, mac), static or learned. True if one was there.
    pub fn remove(&self, vid: u16, mac: Mac) -> bool {
        self.map.remove(key(vid, mac), |old| self.forget(old)).is_some()
    }

    /// Releases every flapping station's pin (after the loop behind it has
    /// been dealt with): they may move again at once.
    pub fn clear_flap_pins(&self) {
        self.map.for_each(|_, e| {
            e.frozen_until.store(0, Relaxed);
            e.moves.store(0, Relaxed);
        });
    }

    /// Removes the entry for (vid, mac) if it is a learned one. True if it went.
    pub fn remove_learned(&self, vid: u16, mac: Mac) -> bool {
        self.map.remove_if(key(vid, mac), |e| !e.is_static, |old| self.forget(old)).is_some()
    }

    /// Removes the learned entries not refreshed within the ageing time.
    /// Returns how many went. The walk also finishes any resize the map left
    /// in progress (papaya resizes incrementally, on writes; until it is done
    /// a look-up may search two tables), so the daemon's periodic ageing pass
    /// keeps look-ups on one table.
    pub fn age(&self, now: u64) -> usize {
        let ageing = self.ageing_ms();
        let expired = |e: &Entry| !e.is_static && now.saturating_sub(e.last_seen()) >= ageing;
        self.remove_where(expired, &self.stats.aged)
    }

    /// Removes the entries behind `port`: learned ones, and static ones too if
    /// `include_static`. Returns how many went.
    pub fn flush_port(&self, port: PortId, include_static: bool) -> usize {
        self.remove_where(|e: &Entry| e.port() == port && (include_static || !e.is_static), &self.stats.flushed)
    }

    /// Removes every learned entry (and statics if `include_static`).
    pub fn flush_all(&self, include_static: bool) -> usize {
        self.remove_where(|e: &Entry| include_static || !e.is_static, &self.stats.flushed)
    }

    fn remove_where(&self, pred: impl Fn(&Entry) -> bool, counter: &AtomicU64) -> usize {
        let mut doomed = Vec::new();
        self.map.for_each(|k, e| {
            if pred(e) {
                doomed.push(k)
            }
        });
        // Re-check each at removal: an entry refreshed or moved meanwhile stays.
        let gone =
            doomed.into_iter().filter(|&k| self.map.remove_if(k, &pred, |old| self.forget(old)).is_some()).count();
        counter.fetch_add(gone as u64, Relaxed);
        gone
    }

    /// A copy of every entry, sorted by port, VLAN and MAC.
    pub fn entries(&self, now: u64) -> Vec<EntryView> {
        let mut v = Vec::with_capacity(self.map.len());
        self.map.for_each(|k, e| {
            let (vid, mac) = unkey(k);
            let age_ms = if e.is_static { 0 } else { now.saturating_sub(e.last_seen()) };
            v.push(EntryView { vid, mac, port: e.port(), age_ms, is_static: e.is_static });
        });
        v.sort_by_key(|e| (e.port, e.vid, e.mac));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DashMapBackend, PapayaBackend};

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    fn cfg() -> FdbConfig {
        FdbConfig { ageing_ms: 300_000, max_entries: 100, max_per_port: 10, ..FdbConfig::default() }
    }

    // Every behaviour is checked on both backends.
    macro_rules! both {
        ($name:ident, $body:expr) => {
            mod $name {
                use super::*;
                #[test]
                fn dashmap() {
                    ($body)(Fdb::<DashMapBackend>::new(cfg()))
                }
                #[test]
                fn papaya() {
                    ($body)(Fdb::<PapayaBackend>::new(cfg()))
                }
            }
        };
    }

    both!(learn_then_lookup, |f: Fdb<_>| {
        assert_eq!(f.lookup(0, mac(1), 0), None);
        assert_eq!(f.learn(0, mac(1), 3, 0), Learn::Learned);
        assert_eq!(f.learn(0, mac(1), 3, 5), Learn::Refreshed);
        assert_eq!(f.lookup(0, mac(1), 10), Some(3));
        // Keyed by VLAN too.
        assert_eq!(f.lookup(7, mac(1), 10), None);
        assert_eq!(f.learned_len(), 1);
        assert_eq!(f.port_learned(3), 1);
    });

    both!(station_move, |f: Fdb<_>| {
        f.learn(0, mac(1), 1, 0);
        assert_eq!(f.learn(0, mac(1), 2, 1), Learn::Moved { from: 1 });
        assert_eq!(f.lookup(0, mac(1), 2), Some(2));
        assert_eq!((f.port_learned(1), f.port_learned(2)), (0, 1));
        assert_eq!(f.stats.moved.load(Relaxed), 1);
    });

    both!(ageing_with_injected_time, |f: Fdb<_>| {
        f.learn(0, mac(1), 1, 0);
        f.learn(0, mac(2), 1, 200_000);
        assert_eq!(f.age(299_999), 0);
        // Expired entries are not returned even before the ager runs.
        assert_eq!(f.lookup(0, mac(1), 300_000), None);
        assert_eq!(f.age(300_000), 1);
        assert_eq!(f.lookup(0, mac(2), 300_000), Some(1));
        // A refresh keeps an entry alive.
        f.learn(0, mac(2), 1, 450_000);
        assert_eq!(f.age(600_000), 0);
        assert_eq!(f.age(750_000), 1);
        assert!(f.is_empty());
        assert_eq!(f.port_learned(1), 0);
        assert_eq!(f.stats.aged.load(Relaxed), 2);
        // Ageing time is adjustable at run time.
        f.learn(0, mac(3), 1, 0);
        f.set_ageing_ms(10);
        assert_eq!(f.age(10), 1);
    });

    both!(statics_never_age_or_move, |f: Fdb<_>| {
        f.add_static(0, mac(1), 4).unwrap();
        assert_eq!(f.learn(0, mac(1), 5, 0), Learn::Static);
        assert_eq!(f.lookup(0, mac(1), u64::MAX), Some(4));
        assert_eq!(f.age(u64::MAX), 0);
        assert_eq!(f.learned_len(), 0);
        assert_eq!(f.flush_port(4, false), 0);
        assert_eq!(f.entries(0)[0], EntryView { vid: 0, mac: mac(1), port: 4, age_ms: 0, is_static: true });
        // A static replaces a learned entry and releases its count.
        f.learn(0, mac(2), 5, 0);
        f.add_static(0, mac(2), 6).unwrap();
        assert_eq!(f.port_learned(5), 0);
        assert!(f.remove(0, mac(2)));
        assert!(!f.remove(0, mac(2)));
        assert_eq!(f.flush_port(4, true), 1);
    });

    both!(flapping_station_is_pinned_home_then_released, |f: Fdb<_>| {
        f.learn(0, mac(1), 1, 0);
        // A legitimate move is a move.
        assert_eq!(f.learn(0, mac(1), 2, 5_000), Learn::Moved { from: 1 });
        // Then it bounces 2 -> 3 -> 2 -> 3 within a second: the 4th move pins it on 2.
        assert_eq!(f.learn(0, mac(1), 3, 10_000), Learn::Moved { from: 2 });
        assert_eq!(f.learn(0, mac(1), 2, 10_100), Learn::Moved { from: 3 });
        assert_eq!(f.learn(0, mac(1), 3, 10_200), Learn::Moved { from: 2 });
        assert_eq!(f.learn(0, mac(1), 2, 10_300), Learn::Flapping);
        assert_eq!(f.lookup(0, mac(1), 10_300), Some(2));
        assert_eq!((f.port_learned(2), f.port_learned(3)), (1, 0));
        // While pinned: frames from it elsewhere are refused; at home they refresh.
        assert_eq!(f.learn(0, mac(1), 3, 11_000), Learn::Flapping);
        assert_eq!(f.learn(0, mac(1), 2, 11_000), Learn::Refreshed);
        assert_eq!(f.stats.flaps.load(Relaxed), 1);
        assert_eq!(f.stats.flap_refused.load(Relaxed), 2);
        // After the hold time it may move again.
        assert_eq!(f.learn(0, mac(1), 3, 20_300), Learn::Moved { from: 2 });
    });

    both!(per_port_limit_protects_others, |f: Fdb<_>| {
        for n in 0..10 {
            assert_eq!(f.learn(0, mac(100 + n), 1, 0), Learn::Learned);
        }
        f.learn(0, mac(1), 2, 0);
        // Port 1 is full: it cannot learn more, nor steal port 2's station.
        assert_eq!(f.learn(0, mac(999), 1, 0), Learn::Refused(Refused::PortLimit));
        assert_eq!(f.learn(0, mac(1), 1, 0), Learn::Refused(Refused::PortLimit));
        assert_eq!(f.lookup(0, mac(1), 0), Some(2));
        assert_eq!(f.stats.refused.load(Relaxed), 2);
        assert_eq!(f.port_learned(1), 10);
    });

    both!(global_limit, |f: Fdb<_>| {
        for p in 0..10u16 {
            for n in 0..10u32 {
                assert_eq!(f.learn(0, mac(p as u32 * 100 + n), p, 0), Learn::Learned);
            }
        }
        assert_eq!(f.learn(0, mac(5000), 11, 0), Learn::Refused(Refused::TableFull));
        assert_eq!(f.port_learned(11), 0);
        assert_eq!(f.learned_len(), 100);
        assert_eq!(f.learn(0, mac(5000), PortId::try_from(MAX_PORTS).unwrap(), 0), Learn::Refused(Refused::BadPort));
    });

    both!(flush_by_port, |f: Fdb<_>| {
        f.learn(0, mac(1), 1, 0);
        f.learn(0, mac(2), 1, 0);
        f.learn(0, mac(3), 2, 0);
        assert_eq!(f.flush_port(1, false), 2);
        assert_eq!(f.learned_len(), 1);
        assert_eq!(f.port_learned(1), 0);
        assert_eq!(f.entries(0).len(), 1);
        assert_eq!(f.flush_all(false), 1);
        assert!(f.is_empty());
    });

    #[test]
    fn concurrent_learning_keeps_counts_exact() {
        let f = std::sync::Arc::new(Fdb::<PapayaBackend>::new(FdbConfig {
            max_entries: 1_000_000,
            max_per_port: 1_000_000,
            ..cfg()
        }));
        let threads: Vec<_> = (0..4u16)
            .map(|p| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for n in 0..2000 {
                        // Half the addresses are shared: learned and moved concurrently.
                        f.learn(0, mac(if n % 2 == 0 { n } else { p as u32 * 10_000 + n }), p, 0);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let per_port: u32 = (0..4).map(|p| f.port_learned(p)).sum();
        assert_eq!(per_port as usize, f.learned_len());
        assert_eq!(f.learned_len(), f.len());
        assert_eq!(f.len(), 1000 + 4 * 1000);
    }
}
