//! Rate limits: a sliding window of query start times, per session and per peer address.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::util::lock;
use std::time::{Duration, Instant};

/// At most `max` events in any `window`.
#[derive(Debug)]
pub struct RateWindow {
    max: u32,
    window: Duration,
    events: VecDeque<Instant>,
}

impl RateWindow {
    pub fn new(max: u32, window: Duration) -> Self {
        RateWindow {
            max,
            window,
            events: VecDeque::new(),
        }
    }

    /// Zero if an event may happen at `now`; otherwise how long until one may.
    pub fn check(&mut self, now: Instant) -> Duration {
        while self
            .events
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.events.pop_front();
        }
        if self.events.len() < self.max as usize {
            Duration::ZERO
        } else {
            self.events
                .front()
                .map(|t| (*t + self.window).saturating_duration_since(now))
                .unwrap_or(Duration::ZERO)
        }
    }

    pub fn record(&mut self, now: Instant) {
        self.events.push_back(now);
    }

    fn is_empty_at(&mut self, now: Instant) -> bool {
        self.check(now);
        self.events.is_empty()
    }
}

/// One [`RateWindow`] per peer address, so reconnecting does not reset the limit.
#[derive(Debug)]
pub struct PeerRates {
    max: u32,
    window: Duration,
    peers: Mutex<HashMap<String, RateWindow>>,
}

impl PeerRates {
    pub fn new(max: u32, window: Duration) -> Self {
        PeerRates {
            max,
            window,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Zero if `peer` may start a query at `now`; otherwise how long until it may.
    pub fn check(&self, peer: &str, now: Instant) -> Duration {
        let mut peers = lock(&self.peers);
        match peers.get_mut(peer) {
            Some(w) => w.check(now),
            None => Duration::ZERO,
        }
    }

    pub fn record(&self, peer: &str, now: Instant) {
        let mut peers = lock(&self.peers);
        if peers.len() > 10_000 {
            peers.retain(|_, w| !w.is_empty_at(now)); // forget peers gone quiet
        }
        peers
            .entry(peer.to_string())
            .or_insert_with(|| RateWindow::new(self.max, self.window))
            .record(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_trips_and_recovers() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(2, Duration::from_secs(10));
        assert!(w.check(t0).is_zero());
        w.record(t0);
        w.record(t0 + Duration::from_secs(1));
        let wait = w.check(t0 + Duration::from_secs(2));
        assert_eq!(wait, Duration::from_secs(8));
        assert!(w.check(t0 + Duration::from_secs(10)).is_zero());
    }

    #[test]
    fn peers_are_counted_apart() {
        let t0 = Instant::now();
        let p = PeerRates::new(1, Duration::from_secs(10));
        p.record("a", t0);
        assert!(!p.check("a", t0).is_zero());
        assert!(p.check("b", t0).is_zero());
    }
}
