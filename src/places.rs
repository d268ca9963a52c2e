//! The server's `--max-running` places for `claude` children, and who waits for one.
//!
//! A child holds a [`ChildSlot`] from the moment it is started until it has been reaped
//! (see `child.rs`). When every place is taken, a query that needs a child does not
//! fail: it waits in a first-come, first-served queue, and
//! - if some places are held by idle children (a session with no query running), the
//!   least recently used one is asked to stop (`Control::Evict`); its conversation
//!   resumes later with `--resume`, as after `--child-idle-secs`;
//! - the place freed by any child that ends goes straight to the head of the queue, on
//!   that session's own grant channel, so no other session can take it first.
//!
//! Warm children (`warm.rs`) hold places too, but only places nobody waits for
//! ([`Places::try_acquire_warm`]), and they are the first to give theirs up: a queued
//! query asks the warm pool for a place before it evicts any session's idle child.
//!
//! Sessions tell this file when their child turns idle or busy; everything else
//! happens when a slot is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::registry::Control;
use crate::util::lock;

/// Holds one place; gives it back (or hands it on to the first in the queue) when
/// dropped.
pub struct ChildSlot {
    places: Arc<Places>,
    /// Its child was asked to make room for a queued query.
    evicted: bool,
    /// Held by a warm child waiting in the pool (counted in `Inner::warm`).
    warm: bool,
}

impl ChildSlot {
    fn new(places: &Arc<Places>, warm: bool) -> ChildSlot {
        ChildSlot {
            places: places.clone(),
            evicted: false,
            warm,
        }
    }

    /// Its child is being stopped to make room (see [`Places::acquire`]).
    pub fn mark_evicted(&mut self) {
        self.evicted = true;
    }

    /// Its warm child left the pool (a session took it, or it is being stopped): the
    /// place is no longer one a queued query can ask the pool for.
    pub fn leave_pool(&mut self) {
        if std::mem::take(&mut self.warm) {
            let mut inner = lock(&self.places.inner);
            inner.warm = inner.warm.saturating_sub(1);
        }
    }
}

impl Drop for ChildSlot {
    fn drop(&mut self) {
        self.leave_pool();
        if self.evicted {
            self.places.evicted();
        }
        self.places.release();
    }
}

impl std::fmt::Debug for ChildSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildSlot")
    }
}

/// A session waiting for a place.
struct Waiter {
    session: u64,
    grant: Sender<ChildSlot>,
    control: Sender<Control>,
}

/// A session whose child is alive and idle.
struct Idle {
    session: u64,
    since: Instant,
    control: Sender<Control>,
}

#[derive(Default)]
struct Inner {
    used: usize,
    idle: Vec<Idle>,
    queue: VecDeque<Waiter>,
    /// Idle children asked to stop and not yet gone: each will free a place.
    evicting: usize,
    /// Places held by warm children waiting in the pool.
    warm: usize,
    /// Of those, how many the pool was asked to give up and has not answered yet.
    warm_asked: usize,
    /// The warm pool's channel: told when a place comes free and when a queued query
    /// wants a warm child's place.
    pool: Option<Sender<ToPool>>,
}

/// What `places` tells the warm pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToPool {
    /// A place came free and nobody waited for it: the pool may fill it.
    Freed,
    /// A query waits for a place: stop one warm child (then answer with
    /// [`Places::warm_given_up`]).
    GiveUp,
}

/// What [`Places::acquire`] got.
pub enum Acquired {
    /// A place, now.
    Now(ChildSlot),
    /// In the queue at this position (1 = next); the slot will arrive on `grant`.
    Queued(usize),
}

/// The places, shared by every session.
pub struct Places {
    max: usize,
    inner: Mutex<Inner>,
}

impl Places {
    pub fn new(max: usize) -> Arc<Places> {
        Arc::new(Places {
            max,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// A place for `session`'s next child: at once if one is free, else a place in
    /// the queue (and an idle child is asked to make room, if there is one).
    pub fn acquire(
        self: &Arc<Self>,
        session: u64,
        grant: &Sender<ChildSlot>,
        control: &Sender<Control>,
    ) -> Acquired {
        let mut inner = lock(&self.inner);
        if inner.used < self.max && inner.queue.is_empty() {
            inner.used += 1;
            return Acquired::Now(ChildSlot::new(self, false));
        }
        inner.queue.push_back(Waiter {
            session,
            grant: grant.clone(),
            control: control.clone(),
        });
        let position = inner.queue.len();
        Self::evict_for_queue(&mut inner);
        Acquired::Queued(position)
    }

    /// A place for a warm child: only a free one nobody waits for, never by eviction.
    pub fn try_acquire_warm(self: &Arc<Self>) -> Option<ChildSlot> {
        let mut inner = lock(&self.inner);
        if inner.used < self.max && inner.queue.is_empty() {
            inner.used += 1;
            inner.warm += 1;
            return Some(ChildSlot::new(self, true));
        }
        None
    }

    /// Connect the warm pool (see [`ToPool`]).
    pub fn set_pool(&self, pool: Sender<ToPool>) {
        lock(&self.inner).pool = Some(pool);
    }

    /// The pool's answer to [`ToPool::GiveUp`]: whether it found a warm child to stop
    /// (its slot, marked evicted, frees the place once it is reaped). If it found none
    /// (a session took it meanwhile), an idle session child is asked instead.
    pub fn warm_given_up(&self, found: bool) {
        let mut inner = lock(&self.inner);
        inner.warm_asked = inner.warm_asked.saturating_sub(1);
        if !found {
            inner.evicting = inner.evicting.saturating_sub(1);
            Self::evict_for_queue(&mut inner);
        }
    }

    /// Free places while the queue is longer than the places already being freed:
    /// warm children's first, then the least recently used idle children's.
    fn evict_for_queue(inner: &mut Inner) {
        while inner.queue.len() > inner.evicting && inner.warm > inner.warm_asked {
            let Some(pool) = &inner.pool else { break };
            if pool.send(ToPool::GiveUp).is_err() {
                break;
            }
            inner.warm_asked += 1;
            inner.evicting += 1;
            log::info!("asking a warm claude to make room for a queued query");
        }
        while inner.queue.len() > inner.evicting && !inner.idle.is_empty() {
            let lru = (0..inner.idle.len())
                .min_by_key(|&i| inner.idle[i].since)
                .unwrap_or(0);
            let victim = inner.idle.swap_remove(lru);
            if victim.control.try_send(Control::Evict).is_ok() {
                inner.evicting += 1;
                log::info!("evicting an idle claude to make room for a queued query");
            }
        }
    }

    /// `session` no longer waits (interrupted, timed out, gone).
    pub fn leave_queue(&self, session: u64) {
        let mut inner = lock(&self.inner);
        let before = inner.queue.len();
        inner.queue.retain(|w| w.session != session);
        if inner.queue.len() != before {
            Self::tell_positions(&inner);
        }
    }

    /// Where `session` stands in the queue (1 = next), if it waits.
    pub fn position(&self, session: u64) -> Option<usize> {
        let inner = lock(&self.inner);
        inner
            .queue
            .iter()
            .position(|w| w.session == session)
            .map(|i| i + 1)
    }

    /// `session`'s child has no query now (`idle`), or has one again.
    pub fn set_idle(&self, session: u64, idle: bool, control: &Sender<Control>) {
        let mut inner = lock(&self.inner);
        inner.idle.retain(|i| i.session != session);
        if idle {
            inner.idle.push(Idle {
                session,
                since: Instant::now(),
                control: control.clone(),
            });
            Self::evict_for_queue(&mut inner);
        }
    }

    /// An eviction is over: the child is gone, or was busy again and stays.
    pub fn evicted(&self) {
        let mut inner = lock(&self.inner);
        inner.evicting = inner.evicting.saturating_sub(1);
    }

    /// Places held right now.
    pub fn used(&self) -> usize {
        lock(&self.inner).used
    }

    /// Queries waiting for a place.
    pub fn queued(&self) -> usize {
        lock(&self.inner).queue.len()
    }

    /// A place came free: hand it to the first waiter, else give it back.
    fn release(self: &Arc<Self>) {
        let waiter = {
            let mut inner = lock(&self.inner);
            match inner.queue.pop_front() {
                Some(w) => {
                    Self::tell_positions(&inner);
                    w
                }
                None => {
                    inner.used -= 1;
                    if let Some(pool) = &inner.pool {
                        let _ = pool.send(ToPool::Freed);
                    }
                    return;
                }
            }
        };
        // The place passes on without ever being free. Built outside the lock: a grant
        // that cannot be delivered (the session is gone) is dropped, which frees the
        // place again and offers it to the next waiter.
        let _ = waiter.grant.try_send(ChildSlot::new(self, false));
    }

    /// Tell every waiter its position may have changed.
    fn tell_positions(inner: &Inner) {
        for w in &inner.queue {
            let _ = w.control.try_send(Control::QueueMoved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{bounded, Receiver};

    fn session() -> (
        Sender<ChildSlot>,
        Receiver<ChildSlot>,
        Sender<Control>,
        Receiver<Control>,
    ) {
        let (g, gr) = bounded(1);
        let (c, cr) = bounded(16);
        (g, gr, c, cr)
    }

    #[test]
    fn a_full_server_queues_and_hands_places_on_in_order() {
        let places = Places::new(1);
        let (g1, _, c1, _) = session();
        let Acquired::Now(first) = places.acquire(1, &g1, &c1) else {
            panic!("a free place")
        };
        let (g2, gr2, c2, _) = session();
        let (g3, gr3, c3, cr3) = session();
        assert!(matches!(places.acquire(2, &g2, &c2), Acquired::Queued(1)));
        assert!(matches!(places.acquire(3, &g3, &c3), Acquired::Queued(2)));
        assert_eq!(places.queued(), 2);
        drop(first);
        let second = gr2.try_recv().expect("the first waiter gets the place");
        assert!(gr3.try_recv().is_err());
        assert_eq!(places.position(3), Some(1));
        assert_eq!(cr3.try_recv().ok(), Some(Control::QueueMoved));
        assert_eq!(places.used(), 1);
        drop(second);
        let third = gr3.try_recv().expect("then the next");
        drop(third);
        assert_eq!(places.used(), 0);
    }

    #[test]
    fn a_waiter_that_left_is_skipped() {
        let places = Places::new(1);
        let (g1, _, c1, _) = session();
        let Acquired::Now(first) = places.acquire(1, &g1, &c1) else {
            panic!()
        };
        let (g2, gr2, c2, _) = session();
        places.acquire(2, &g2, &c2);
        drop(gr2); // session 2 is gone without leaving the queue
        let (g3, gr3, c3, _) = session();
        places.acquire(3, &g3, &c3);
        drop(first);
        assert!(gr3.try_recv().is_ok());
        let (g4, _, c4, _) = session();
        places.acquire(4, &g4, &c4);
        places.leave_queue(4);
        assert_eq!(places.queued(), 0);
    }

    #[test]
    fn a_warm_place_is_given_up_before_an_idle_child_is_evicted() {
        let places = Places::new(2);
        let (pool, calls) = crossbeam_channel::unbounded();
        places.set_pool(pool);
        let mut warm = places.try_acquire_warm().expect("a free place");
        let (g1, _, c1, cr1) = session();
        let Acquired::Now(_a) = places.acquire(1, &g1, &c1) else {
            panic!()
        };
        places.set_idle(1, true, &c1);
        assert!(places.try_acquire_warm().is_none(), "no free place");
        let (g2, gr2, c2, _) = session();
        assert!(matches!(places.acquire(2, &g2, &c2), Acquired::Queued(1)));
        assert_eq!(calls.try_recv().ok(), Some(ToPool::GiveUp));
        assert!(cr1.try_recv().is_err(), "the idle child keeps its place");
        // The pool stops its warm child; once reaped, its place goes to the waiter.
        warm.leave_pool();
        warm.mark_evicted();
        places.warm_given_up(true);
        assert!(cr1.try_recv().is_err());
        drop(warm);
        let _b = gr2.try_recv().expect("the waiter gets the place");
        assert!(
            calls.try_recv().is_err(),
            "the place was handed on, not freed"
        );
    }

    #[test]
    fn a_warm_child_taken_meanwhile_leaves_the_idle_child_to_make_room() {
        let places = Places::new(2);
        let (pool, calls) = crossbeam_channel::unbounded();
        places.set_pool(pool);
        let mut warm = places.try_acquire_warm().expect("a free place");
        let (g1, _, c1, cr1) = session();
        let Acquired::Now(_a) = places.acquire(1, &g1, &c1) else {
            panic!()
        };
        places.set_idle(1, true, &c1);
        let (g2, _, c2, _) = session();
        places.acquire(2, &g2, &c2);
        assert_eq!(calls.try_recv().ok(), Some(ToPool::GiveUp));
        // A session took the warm child before the pool could stop it.
        warm.leave_pool();
        places.warm_given_up(false);
        assert_eq!(cr1.try_recv().ok(), Some(Control::Evict));
        drop(warm);
    }

    #[test]
    fn a_place_freed_with_nobody_waiting_is_offered_to_the_pool() {
        let places = Places::new(1);
        let (pool, calls) = crossbeam_channel::unbounded();
        places.set_pool(pool);
        let (g1, _, c1, _) = session();
        let Acquired::Now(a) = places.acquire(1, &g1, &c1) else {
            panic!()
        };
        drop(a);
        assert_eq!(calls.try_recv().ok(), Some(ToPool::Freed));
        assert!(places.try_acquire_warm().is_some());
    }

    #[test]
    fn the_least_recently_used_idle_child_is_evicted() {
        let places = Places::new(2);
        let (g1, _, c1, cr1) = session();
        let (g2, _, c2, cr2) = session();
        let Acquired::Now(_a) = places.acquire(1, &g1, &c1) else {
            panic!()
        };
        let Acquired::Now(_b) = places.acquire(2, &g2, &c2) else {
            panic!()
        };
        places.set_idle(1, true, &c1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        places.set_idle(2, true, &c2);
        let (g3, _, c3, _) = session();
        assert!(matches!(places.acquire(3, &g3, &c3), Acquired::Queued(1)));
        assert_eq!(cr1.try_recv().ok(), Some(Control::Evict));
        assert!(cr2.try_recv().is_err(), "one eviction per waiter");
        // Busy again: not a candidate any more.
        places.set_idle(2, false, &c2);
        let (g4, _, c4, _) = session();
        places.acquire(4, &g4, &c4);
        assert!(cr2.try_recv().is_err());
    }
}
