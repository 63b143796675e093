//! Waiting for a condition with a deadline, polled every 20 ms: how tests
//! and labs wait, never for a fixed time.

use std::time::{Duration, Instant};

/// How often a condition is looked at.
const POLL: Duration = Duration::from_millis(20);

/// Polls `f` until it holds or `limit` has passed; whether it held.
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(POLL.min(limit.saturating_sub(t.elapsed())));
    }
}

/// Waits until `f` holds, for at most `limit`; panics naming `what` otherwise
/// (a test fails with it).
pub fn until(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(poll_until(limit, f), "timed out after {limit:?} waiting for {what}");
}

/// Samples `f` until `done` holds for a sample, for at most `limit`, and
/// returns the last sample: the caller asserts on it, and shows it in the
/// message when the wait ran out.
pub fn sample_until<T>(limit: Duration, mut f: impl FnMut() -> T, mut done: impl FnMut(&T) -> bool) -> T {
    let mut last = None;
    poll_until(limit, || {
        let v = f();
        let held = done(&v);
        last = Some(v);
        held
    });
    last.expect("sampled at least once")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_returns_as_soon_as_the_condition_holds_and_gives_up_at_the_limit() {
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        let t = Instant::now();
        assert!(!poll_until(Duration::from_millis(50), || false));
        assert!(t.elapsed() >= Duration::from_millis(50) && t.elapsed() < Duration::from_secs(2));
        assert_eq!(sample_until(Duration::from_millis(50), || 7, |_| false), 7);
    }
}
