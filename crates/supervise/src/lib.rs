//! Threads that cannot die silently. A supervised body that panics is
//! restarted after a back-off (100 ms, doubling to 5 s); with a limit, one
//! more panic than the limit allows within its window ends it instead, so
//! the caller can mark what it served failed. The daemon's own threads
//! (ager, link watchers, control, metrics) restart forever; a port's reader
//! gives up after 5 restarts in a minute (docs/architecture.md).
//!
//! When to restart is [`Panics`], pure logic over an injected clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a supervised body is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// The first back-off; it doubles with each panic, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// At most this many restarts within `.1`; `None`: restart forever.
    pub limit: Option<(usize, Duration)>,
}

impl Restart {
    /// Restart forever (the daemon's own threads).
    pub const FOREVER: Restart =
        Restart { backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5), limit: None };

    /// Restart up to `n` times within `window`, then give up.
    pub const fn at_most(n: usize, window: Duration) -> Restart {
        Restart { limit: Some((n, window)), ..Restart::FOREVER }
    }
}

impl Default for Restart {
    /// A port's reader: 5 restarts within a minute, then the port is failed.
    fn default() -> Self {
        Restart::at_most(5, Duration::from_secs(60))
    }
}

/// What to do after a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart after this back-off.
    Restart(Duration),
    /// One panic too many within the window: stop.
    GiveUp,
}

/// The panics a body has had, and what each calls for.
#[derive(Debug)]
pub struct Panics {
    restart: Restart,
    recent: VecDeque<Instant>,
    backoff: Duration,
}

impl Panics {
    pub fn new(restart: Restart) -> Panics {
        Panics { restart, recent: VecDeque::new(), backoff: restart.backoff }
    }

    /// The body panicked at `now`.
    pub fn panicked(&mut self, now: Instant) -> Verdict {
        if let Some((max, window)) = self.restart.limit {
            while self.recent.front().is_some_and(|t| now.saturating_duration_since(*t) > window) {
                self.recent.pop_front();
            }
            if self.recent.len() >= max {
                return Verdict::GiveUp;
            }
            self.recent.push_back(now);
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.restart.max_backoff);
        Verdict::Restart(wait)
    }

    /// Restarts within the window so far.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

/// How a supervised body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It returned.
    Returned,
    /// It panicked once more than its [`Restart`] allows.
    GaveUp,
    /// `stopped` said so during a back-off.
    Stopped,
}

/// Runs `body` until it returns, restarting it after each panic as
/// `restart` says. Each panic is told to `panicked` with its message and
/// the verdict; a back-off ends early when `stopped` turns true.
pub fn run(
    restart: Restart,
    mut body: impl FnMut(),
    mut panicked: impl FnMut(&str, Verdict),
    stopped: impl Fn() -> bool,
) -> Ended {
    let mut panics = Panics::new(restart);
    loop {
        let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut body)) else {
            return Ended::Returned;
        };
        let verdict = panics.panicked(Instant::now());
        panicked(message(&*payload), verdict);
        let Verdict::Restart(wait) = verdict else { return Ended::GaveUp };
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if stopped() {
                return Ended::Stopped;
            }
            std::thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
        }
    }
}

/// Runs `body` on a thread named `name`, restarted forever after a panic
/// (logged, counted in `panics`), until it returns.
pub fn spawn(
    name: &'static str,
    panics: Arc<AtomicU64>,
    body: impl Fn() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let told = |msg: &str, v: Verdict| {
            panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(thread = name, panic = msg, verdict = ?v, "thread panicked; restarting it");
        };
        run(Restart::FOREVER, &body, told, || false);
    })
}

/// What a panic said.
pub fn message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_reader_gives_up_on_the_sixth_panic_within_a_minute() {
        let t0 = Instant::now();
        let mut p = Panics::new(Restart::default());
        let backoffs: Vec<Verdict> = (0..5).map(|i| p.panicked(at(t0, i))).collect();
        let ms = |v: u64| Verdict::Restart(Duration::from_millis(v));
        assert_eq!(backoffs, [ms(100), ms(200), ms(400), ms(800), ms(1600)]);
        assert_eq!(p.panicked(at(t0, 5)), Verdict::GiveUp);
    }

    #[test]
    fn panics_older_than_the_window_are_forgiven() {
        let t0 = Instant::now();
        let mut p = Panics::new(Restart::default());
        for i in 0..5 {
            assert!(matches!(p.panicked(at(t0, i)), Verdict::Restart(_)));
        }
        // A minute after the first: that one no longer counts.
        assert!(matches!(p.panicked(at(t0, 61)), Verdict::Restart(_)));
        assert_eq!(p.recent(), 5);
    }

    #[test]
    fn the_daemons_threads_restart_forever_with_the_back_off_capped() {
        let t0 = Instant::now();
        let mut p = Panics::new(Restart::FOREVER);
        let last = (0..1000).map(|i| p.panicked(at(t0, i))).last();
        assert_eq!(last, Some(Verdict::Restart(Duration::from_secs(5))));
    }

    #[test]
    fn a_body_that_panics_is_run_again_until_it_returns() {
        let mut runs = 0;
        let mut told = Vec::new();
        let restart = Restart { backoff: Duration::from_millis(1), ..Restart::FOREVER };
        let ended = run(
            restart,
            || {
                runs += 1;
                assert!(runs > 2, "run {runs} fails");
            },
            |msg, _| told.push(msg.to_string()),
            || false,
        );
        assert_eq!((ended, runs), (Ended::Returned, 3));
        assert_eq!(told.len(), 2);
        assert!(told[0].contains("run 1 fails"), "{told:?}");
    }

    #[test]
    fn with_a_limit_it_gives_up_and_a_stop_ends_a_back_off() {
        let restart = Restart { backoff: Duration::from_millis(1), ..Restart::at_most(2, Duration::from_secs(60)) };
        let ended = run(restart, || panic!("always"), |_, _| {}, || false);
        assert_eq!(ended, Ended::GaveUp);
        let slow = Restart { backoff: Duration::from_secs(60), ..Restart::FOREVER };
        let t = Instant::now();
        assert_eq!(run(slow, || panic!("always"), |_, _| {}, || true), Ended::Stopped);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
