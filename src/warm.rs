//! Warm children: `claude` processes started ahead of need, so a new session's first
//! query does not wait for the CLI to start (`--warm-children N`).
//!
//! The real CLI spends most of a second starting before it reads stdin: a child
//! started by a query answers it in ~0.9-1.3 s, one started (and sent `initialize`)
//! ahead of time in ~0.12-0.17 s. So the pool keeps up to N children running with the
//! server's default spec (no query options, the first workspace root, the child
//! environment), each already sent `initialize`. A new session whose first query's
//! spec is exactly that spec takes one ([`Warm::take`]) and owns it as if it had
//! started it; the pool starts a replacement. Any other spec (options, client tools,
//! a conversation to resume, a per-principal `CLAUDE_CONFIG_DIR`) starts a child of
//! its own, as before.
//!
//! Each warm child holds one of the `--max-running` places, taken only when free and
//! nobody waits (`places.rs`), and gives it up first when a query waits for one. So
//! with idle-child eviction too, the children alive never exceed `--max-running`.
//!
//! One thread (`warm-pool`) does all of it: it starts children, drains what they print
//! while they wait (the `initialize` answer), sees them die (their stdout closes),
//! and answers `places`. A child that dies while waiting is handed to the reaper and
//! replaced after a backoff that doubles with each child that dies before it has
//! answered `initialize` (1 s up to 60 s), so a broken CLI is retried at most once a
//! minute rather than in a fork loop; `/health` shows `failing` and the last error.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TryRecvError};
use serde::Serialize;

use crate::child::{Child, ChildEvent, Reaper, Stop};
use crate::cli;
use crate::config::Config;
use crate::places::{ChildSlot, Places, ToPool};
use crate::protocol::QueryOptions;
use crate::spec::{self, ChildPlan};
use crate::tools::Tools;
use crate::util::lock;

/// The wait before the first retry after a warm child died early (or failed to start).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries of a CLI that keeps dying.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Stack of the pool thread: it goes no deeper than the reaper's.
const POOL_STACK: usize = 256 * 1024;
/// Label of warm children in log lines (until a session takes one).
const LABEL: &str = "warm";

/// The pool of warm children. Shared by every session; cheap to use from any thread.
pub struct Warm {
    /// How many warm children to keep (0: none, the pool thread is not started).
    target: usize,
    /// The spec every warm child is started with; a session's query must give exactly
    /// this spec to take one.
    spec: Option<ChildPlan>,
    places: Arc<Places>,
    reaper: Reaper,
    stop_grace: Duration,
    inner: Mutex<Pool>,
    /// Wakes the pool thread: a child was taken, or the server is stopping.
    wake: (Sender<()>, Receiver<()>),
    /// What `places` tells the pool.
    calls: (Sender<ToPool>, Receiver<ToPool>),
}

/// One warm child waiting for a session.
struct Waiting {
    child: Child,
    slot: ChildSlot,
    /// It answered `initialize`: the CLI is up and reading stdin.
    initialised: bool,
}

#[derive(Default)]
struct Pool {
    waiting: Vec<Waiting>,
    /// Children that died before answering `initialize`, in a row (or spawns that
    /// failed): the backoff's exponent.
    failures: u32,
    /// No child is started before this (the backoff).
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// Warm children taken by sessions, since the start.
    taken: u64,
    /// Warm children started, since the start.
    started: u64,
    stopping: bool,
}

/// What `/health` shows of the pool (and `/metrics` may).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WarmHealth {
    /// `--warm-children` (0 when the pool cannot be used, see `disabled`).
    pub target: usize,
    /// Warm children that answered `initialize` and wait for a session.
    pub ready: usize,
    /// Warm children started and not yet answering.
    pub starting: usize,
    /// The last warm child died before it was ready (or could not start): the pool
    /// is backing off.
    pub failing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Warm children sessions have taken since the server started.
    pub taken: u64,
    /// Warm children started since the server started.
    pub started: u64,
    /// Why the pool is off though `--warm-children` asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
}

/// The spec warm children are started with: the server's default (no query options,
/// no client tools), or why there is none.
pub fn default_spec(
    config: &Config,
    child_env: &[(String, String)],
    per_principal_state: bool,
) -> Result<ChildPlan, String> {
    if per_principal_state {
        // Each principal's child gets its own CLAUDE_CONFIG_DIR, which the CLI reads
        // at start: no child started ahead of a session could serve it.
        return Err(
            "each principal has its own CLI state directory (--state-dir, or \
                    authentication), which a child started ahead of its session cannot have"
                .into(),
        );
    }
    spec::build(
        config,
        child_env,
        &QueryOptions::default(),
        &Tools::default(),
        &config.workspace_roots,
    )
    .map_err(|e| format!("the default options give no child: {e}"))
}

impl Warm {
    /// A pool of `target` children built from `spec` (an error: the pool is off, for
    /// the reason given). Nothing starts before [`Warm::start`].
    pub fn new(
        target: usize,
        spec: Result<ChildPlan, String>,
        places: Arc<Places>,
        reaper: Reaper,
        stop_grace: Duration,
    ) -> Arc<Warm> {
        let (spec, disabled) = match spec {
            Ok(s) => (Some(s), None),
            // Said only when warm children were asked for.
            Err(why) => (None, (target > 0).then_some(why)),
        };
        let target = if spec.is_some() { target } else { 0 };
        let pool = Pool {
            last_error: disabled,
            ..Pool::default()
        };
        Arc::new(Warm {
            target,
            spec,
            places,
            reaper,
            stop_grace,
            inner: Mutex::new(pool),
            wake: bounded(1),
            calls: unbounded(),
        })
    }

    /// Start the pool thread (nothing happens when the target is 0).
    pub fn start(self: &Arc<Self>) {
        if self.target == 0 {
            if let Some(why) = &lock(&self.inner).last_error {
                log::info!("no warm claude children: {why}");
            }
            return;
        }
        self.places.set_pool(self.calls.0.clone());
        let pool = self.clone();
        let started = thread::Builder::new()
            .name("warm-pool".into())
            .stack_size(POOL_STACK)
            .spawn(move || pool.run());
        if let Err(e) = started {
            log::error!("cannot start the warm-children thread ({e}); none will be kept");
        }
    }

    /// A warm child for a session's first query, if `spec` is the one warm children
    /// were started with and one is waiting. It has been sent `initialize`; its place
    /// comes with it. The pool starts a replacement.
    pub fn take(&self, spec: &ChildPlan) -> Option<(Child, ChildSlot)> {
        if self.spec.as_ref() != Some(spec) {
            return None;
        }
        let taken = {
            let mut pool = lock(&self.inner);
            // The oldest that is up; else the oldest (still ahead of a fresh start). One
            // that has exited is left to the pool thread, which sees its end.
            let alive: Vec<usize> = (0..pool.waiting.len())
                .filter(|&i| pool.waiting[i].child.try_wait().is_none())
                .collect();
            let i = alive
                .iter()
                .copied()
                .find(|&i| pool.waiting[i].initialised)
                .or_else(|| alive.first().copied())?;
            pool.taken += 1;
            pool.waiting.remove(i)
        };
        let Waiting {
            child, mut slot, ..
        } = taken;
        slot.leave_pool();
        log::info!("a session takes warm claude pid={}", child.pid());
        let _ = self.wake.0.try_send(());
        Some((child, slot))
    }

    /// Stop every warm child (through the reaper, which the server's shutdown waits
    /// for) and start no more.
    pub fn stop(&self) {
        let waiting = {
            let mut pool = lock(&self.inner);
            pool.stopping = true;
            std::mem::take(&mut pool.waiting)
        };
        for w in waiting {
            self.reap(w, "stopping warm claude: the server shuts down");
        }
        let _ = self.wake.0.try_send(());
    }

    pub fn health(&self) -> WarmHealth {
        let pool = lock(&self.inner);
        let ready = pool.waiting.iter().filter(|w| w.initialised).count();
        WarmHealth {
            target: self.target,
            ready,
            starting: pool.waiting.len() - ready,
            failing: pool.failures > 0,
            last_error: pool.last_error.clone(),
            taken: pool.taken,
            started: pool.started,
            disabled: self
                .spec
                .is_none()
                .then(|| pool.last_error.clone())
                .flatten(),
        }
    }

    /// The pool thread: top up, then wait for a child's output or end, a call from
    /// `places`, a wake-up or the backoff's end.
    fn run(self: Arc<Self>) {
        loop {
            self.top_up();
            let (pids, events, wait) = {
                let pool = lock(&self.inner);
                if pool.stopping {
                    return;
                }
                let pids: Vec<u32> = pool.waiting.iter().map(|w| w.child.pid()).collect();
                // Clones for this turn only: a taken child's channel must not keep a
                // second reader (see `session::run`).
                let events: Vec<Receiver<ChildEvent>> = pool
                    .waiting
                    .iter()
                    .map(|w| w.child.events().clone())
                    .collect();
                // Below target, a backoff not over yet is the only timer; anything else
                // that lets the pool start a child wakes it (a place freed, a child taken).
                let now = Instant::now();
                let wait = match pool.retry_at {
                    Some(at) if at > now && pool.waiting.len() < self.target => at - now,
                    _ => Duration::from_secs(3600),
                };
                (pids, events, wait)
            };
            let mut sel = Select::new();
            let wake = sel.recv(&self.wake.1);
            let calls = sel.recv(&self.calls.1);
            for e in &events {
                sel.recv(e);
            }
            // `ready` only says which channel has something; it is taken below, under
            // the lock, and only from a child still in the pool.
            let Ok(i) = sel.ready_timeout(wait) else {
                continue; // the backoff is over
            };
            if i == wake {
                let _ = self.wake.1.try_recv();
            } else if i == calls {
                while let Ok(call) = self.calls.1.try_recv() {
                    if call == ToPool::GiveUp {
                        self.give_up();
                    }
                }
            } else if let Some(&pid) = pids.get(i - 2) {
                self.on_event(pid);
            }
        }
    }

    /// Start children until the target is met, a place is missing, or the backoff
    /// says wait.
    fn top_up(&self) {
        loop {
            {
                let pool = lock(&self.inner);
                let backing_off = pool.retry_at.is_some_and(|at| Instant::now() < at);
                if pool.stopping || pool.waiting.len() >= self.target || backing_off {
                    return;
                }
            }
            let Some(spec) = &self.spec else { return };
            let Some(slot) = self.places.try_acquire_warm() else {
                return; // `places` says Freed when one comes free
            };
            match Child::spawn(&spec.spec(), LABEL) {
                Ok(child) => {
                    let _ = child.send_line(&cli::initialize(spec.client_tools));
                    let mut pool = lock(&self.inner);
                    pool.started += 1;
                    let w = Waiting {
                        child,
                        slot,
                        initialised: false,
                    };
                    if pool.stopping {
                        drop(pool);
                        self.reap(w, "stopping warm claude: the server shuts down");
                        return;
                    }
                    pool.waiting.push(w);
                }
                Err(e) => {
                    drop(slot);
                    self.failed(e.to_string());
                    return;
                }
            }
        }
    }

    /// Something from the warm child `pid`: output (drained, and the child counts as
    /// up), or its end.
    fn on_event(&self, pid: u32) {
        let mut pool = lock(&self.inner);
        let Some(i) = pool.waiting.iter().position(|w| w.child.pid() == pid) else {
            return; // a session took it meanwhile: its output is the session's now
        };
        loop {
            match pool.waiting[i].child.events().try_recv() {
                Ok(ChildEvent::Lines(_)) => {
                    // The answer to `initialize`: the CLI is up.
                    if !pool.waiting[i].initialised {
                        pool.waiting[i].initialised = true;
                        pool.failures = 0;
                        pool.retry_at = None;
                        log::info!("warm claude pid={pid} is ready");
                    }
                }
                Err(TryRecvError::Empty) => return,
                Ok(ChildEvent::Closed) | Err(TryRecvError::Disconnected) => break,
            }
        }
        let mut w = pool.waiting.remove(i);
        let why = w.child.exit_report().sentence(
            &format!("warm claude pid={pid}"),
            " while waiting",
            500,
        );
        let early = !w.initialised;
        drop(pool);
        self.reap(w, &why);
        if early {
            self.failed(why);
        } else {
            // It was up once: try again soon, but not at once.
            let mut pool = lock(&self.inner);
            pool.retry_at = Some(Instant::now() + BACKOFF_FIRST);
            pool.last_error = Some(why);
        }
    }

    /// A child did not start, or died before it was up: back off exponentially.
    fn failed(&self, why: String) {
        let mut pool = lock(&self.inner);
        pool.failures = pool.failures.saturating_add(1);
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << (pool.failures - 1).min(16))
            .min(BACKOFF_MAX);
        log::warn!("{why}; next warm claude in {backoff:?}");
        pool.retry_at = Some(Instant::now() + backoff);
        pool.last_error = Some(why);
    }

    /// A query waits for a place: stop the youngest warm child (the least likely to
    /// be up yet), and tell `places`.
    fn give_up(&self) {
        let w = lock(&self.inner).waiting.pop();
        let found = w.is_some();
        if let Some(mut w) = w {
            w.slot.mark_evicted();
            // It has no conversation to save: SIGTERM, so the place frees fast.
            self.reap_with(
                w,
                Stop::Now,
                "stopping a warm claude: a queued query needs its place",
            );
        }
        self.places.warm_given_up(found);
    }

    /// Hand a warm child to the reaper; its place is given back once it is reaped.
    fn reap(&self, w: Waiting, why: &str) {
        self.reap_with(w, Stop::Graceful(self.stop_grace), why);
    }

    fn reap_with(&self, w: Waiting, how: Stop, why: &str) {
        let Waiting {
            child, mut slot, ..
        } = w;
        log::info!("{why}");
        slot.leave_pool();
        self.reaper.stop(child, how, slot, LABEL);
    }
}
