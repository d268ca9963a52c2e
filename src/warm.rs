//! Warm children: `claude` processes started ahead of need, so a new session's first
//! query does not wait for the CLI to start (`--warm-children N`).
//!
//! The real CLI spends most of a second starting before it reads stdin: a child
//! started by a query answers it in ~0.4-1.3 s, one started (and sent `initialize`)
//! ahead of time in ~0.1 s. So the pool keeps children running, each already sent
//! `initialize`, and a new session whose first query asks for what one was started
//! with takes it ([`Warm::take`]) and owns it as if it had started it; the pool starts
//! a replacement. Any other spec (options, client tools, a conversation to resume)
//! starts a child of its own, as before.
//!
//! Whom they are for:
//! - one CLI state for everybody: up to N children with the server's default spec (no
//!   query options, the first workspace root, the child environment);
//! - each principal its own state (`--state-dir`, authentication; with the sandbox,
//!   each child in the principal's own): one child for each of the N principals most
//!   recently active, built as that principal's default query would be (its
//!   `CLAUDE_CONFIG_DIR`, its workspace, its sandbox) when one of its sessions opens
//!   ([`Warm::want`]), before its first query. A principal not seen for
//!   `--child-idle-secs` is forgotten and its child stopped. A child is only ever
//!   taken by its own principal's sessions.
//!
//! How they wait: the first (and a principal's one) is started in its spec's directory
//! and sent `initialize`, and is taken only by exactly that spec: that is the fastest
//! first answer on every version. Where the CLI takes `--await-claim` (`features.rs`),
//! the others (`--warm-children` 2 or more, one CLI state) are parked spares, started
//! in a parking directory under the CLI state (`<CLAUDE_CONFIG_DIR or
//! ~/.claude>/spares`); a session binds one with a `claim_session` control request
//! (`cwd`, and `permission_mode` when the query names one), so a spare also serves a
//! query that differs from its spec only in those two. The claim is answered before
//! the user message is written; a refused claim stops the spare and the session starts
//! a child of its own (nothing of the query is lost).
//!
//! Each warm child holds one of the `--max-running` places, taken only when free and
//! nobody waits (`places.rs`), and gives it up first when a query waits for one (the
//! least recently active principal's first). So with idle-child eviction too, the
//! children alive never exceed `--max-running`.
//!
//! One thread (`warm-pool`) does all of it: it starts children, drains what they print
//! while they wait (the `initialize` answer), sees them die (their stdout closes),
//! and answers `places`. A child that dies while waiting is handed to the reaper and
//! replaced after a backoff that doubles with each child that dies before it has
//! answered `initialize` (1 s up to 60 s), so a broken CLI is retried at most once a
//! minute rather than in a fork loop; `/health` shows `failing` and the last error.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Select, Sender, TryRecvError};
use serde::Serialize;
use serde_json::json;

use crate::child::{Child, ChildEvent, Reaper, Stop};
use crate::cli::{self, CliEvent};
use crate::config::Config;
use crate::features::{Detected, AWAIT_CLAIM_FLAG};
use crate::places::{ChildSlot, Places, ToPool};
use crate::protocol::QueryOptions;
use crate::spec::{self, ChildPlan};
use crate::tools::Tools;
use crate::util::lock;

/// The wait before the first retry after a warm child died early (or failed to start).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries of a CLI that keeps dying.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The longest a session waits for a parked spare to answer its `claim_session`.
const CLAIM_LIMIT: Duration = Duration::from_secs(10);
/// How long after a child is taken its replacement waits to start. A CLI starting
/// takes most of a core for ~0.3 s; started at once, it competes with the taken
/// child's first turn (~0.1 s of the CLI's own work), which on a 2-core host came
/// out ~10% slower. A session arriving meanwhile still finds a child ahead of a fresh
/// start.
const REPLACE_AFTER: Duration = Duration::from_millis(300);
/// Stack of the pool thread: it goes no deeper than the reaper's.
const POOL_STACK: usize = 256 * 1024;
/// Label of warm children in log lines (until a session takes one).
const LABEL: &str = "warm";
/// The request id of a claim (one per child: a spare is claimed once).
const CLAIM_ID: &str = "claude_ws_claim";

/// Whom the pool starts children for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmFor {
    /// Everybody shares the CLI's state: children of this spec.
    Everybody(ChildPlan),
    /// Each principal has its own state: children for recently active principals.
    EachPrincipal,
}

/// The pool of warm children. Shared by every session; cheap to use from any thread.
pub struct Warm {
    /// How many warm children to keep (0: none, the pool thread is not started); with
    /// a state per principal, how many principals get one.
    target: usize,
    /// Whom they are for; `None`: the pool is off.
    serves: Option<WarmFor>,
    /// How long a principal counts as recently active (`--child-idle-secs`).
    recent: Option<Duration>,
    places: Arc<Places>,
    reaper: Reaper,
    features: Arc<Detected>,
    stop_grace: Duration,
    inner: Mutex<Pool>,
    /// Wakes the pool thread: a child was taken, a principal came, the server stops.
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
    /// The spec it serves (a parked spare: as claimed; it was started elsewhere).
    spec: ChildPlan,
    /// The principal it was started for (`None`: anybody).
    principal: Option<String>,
    /// A parked spare (`--await-claim`): a session claims it.
    parked: bool,
}

/// A principal that was active recently: a child is kept for it.
struct Wanted {
    principal: String,
    spec: ChildPlan,
    seen: Instant,
}

#[derive(Default)]
struct Pool {
    waiting: Vec<Waiting>,
    /// With a state per principal: the principals to keep a child for, the most
    /// recently active last (at most `target`).
    wanted: Vec<Wanted>,
    /// Children that died before answering `initialize`, in a row (or spawns that
    /// failed): the backoff's exponent.
    failures: u32,
    /// No child is started before this (the backoff).
    retry_at: Option<Instant>,
    /// No child is started before this either: a child was just taken, and its first
    /// answer comes first (see [`REPLACE_AFTER`]).
    quiet_until: Option<Instant>,
    last_error: Option<String>,
    /// Warm children taken by sessions, since the start.
    taken: u64,
    /// Of those, parked spares claimed.
    claimed: u64,
    /// Warm children started, since the start.
    started: u64,
    stopping: bool,
}

/// What `/health` shows of the pool (and `/metrics` may).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WarmHealth {
    /// `--warm-children` (0 when the pool cannot be used, see `disabled`).
    pub target: usize,
    /// `everybody` (one CLI state) or `each_principal` (a child per recently active
    /// principal, in its own state and sandbox).
    pub serves: &'static str,
    /// Principals a child is kept for (`each_principal`).
    pub principals: usize,
    /// Warm children that answered `initialize` and wait for a session.
    pub ready: usize,
    /// Warm children started and not yet answering.
    pub starting: usize,
    /// Of the waiting children, those parked (`--await-claim`).
    pub parked: usize,
    /// The last warm child died before it was ready (or could not start): the pool
    /// is backing off.
    pub failing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Warm children sessions have taken since the server started.
    pub taken: u64,
    /// Of those, parked spares bound by `claim_session`.
    pub claimed: u64,
    /// Warm children started since the server started.
    pub started: u64,
    /// Why the pool is off though `--warm-children` asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
}

/// Whom warm children are for: everybody, with the server's default spec (no query
/// options, no client tools), or each principal (it has its own state); or why there
/// can be none.
pub fn serves(
    config: &Config,
    child_env: &[(String, String)],
    per_principal_state: bool,
) -> Result<WarmFor, String> {
    if per_principal_state {
        // Each principal's child gets its own CLAUDE_CONFIG_DIR (and sandbox), which
        // the CLI reads at start: the session builds the spec when it opens.
        return Ok(WarmFor::EachPrincipal);
    }
    spec::build(
        config,
        child_env,
        &QueryOptions::default(),
        &Tools::default(),
        &config.workspace_roots,
    )
    .map(WarmFor::Everybody)
    .map_err(|e| format!("the default options give no child: {e}"))
}

/// What a parked spare's claim may set: the spec without them.
fn unclaimed(spec: &ChildPlan) -> ChildPlan {
    let mut s = spec.clone();
    s.cwd = None;
    s.settings.retain(|a| !a.starts_with("--permission-mode="));
    s
}

/// The `claim_session` request binding a spare to `spec`. Checked on 2.1.332: `cwd`
/// moves it (a missing one is refused, `cwd_not_found: …`, and the spare is then
/// unusable), `permission_mode` takes effect (a `system/status` line says so, and
/// `system/init` shows it); the answer is `{"status":"ok","cwd",…,"session_id",
/// "parked_ms","sdk_mcp_settled"}`. Model and thinking budget are not claim fields.
fn claim_request(spec: &ChildPlan) -> Option<serde_json::Value> {
    let cwd = spec.cwd.as_ref()?;
    let mut request = json!({"subtype": "claim_session", "cwd": cwd, "include_initialize": false});
    if let Some(mode) = spec
        .settings
        .iter()
        .find_map(|a| a.strip_prefix("--permission-mode="))
    {
        request["permission_mode"] = json!(mode);
    }
    Some(json!({"type": "control_request", "request_id": CLAIM_ID, "request": request}))
}

/// Where a spare of `spec` is parked: `spares/` under its CLI state directory (as the
/// TypeScript SDK's `prewarm()` does), a directory no session works in.
fn parking(spec: &ChildPlan) -> Option<PathBuf> {
    let dir = crate::conversations::cli_own_dir(&spec.env)?.join("spares");
    match spec::create_private_dir(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            log::warn!("cannot park a spare in {}: {e}", dir.display());
            None
        }
    }
}

impl Warm {
    /// A pool of `target` children for `serves` (an error: the pool is off, for the
    /// reason given). Nothing starts before [`Warm::start`].
    pub fn new(
        (target, recent): (usize, Option<Duration>),
        serves: Result<WarmFor, String>,
        places: Arc<Places>,
        reaper: Reaper,
        (features, stop_grace): (Arc<Detected>, Duration),
    ) -> Arc<Warm> {
        let (serves, disabled) = match serves {
            Ok(s) => (Some(s), None),
            // Said only when warm children were asked for.
            Err(why) => (None, (target > 0).then_some(why)),
        };
        let target = if serves.is_some() { target } else { 0 };
        let pool = Pool {
            last_error: disabled,
            ..Pool::default()
        };
        Arc::new(Warm {
            target,
            serves,
            recent,
            places,
            reaper,
            features,
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

    /// Wake the pool thread (the start-up check has found out what the CLI offers).
    pub fn wake(&self) {
        let _ = self.wake.0.try_send(());
    }

    /// Whether children are kept per principal ([`Warm::want`] does something).
    pub fn keeps_principals(&self) -> bool {
        self.target > 0 && self.serves == Some(WarmFor::EachPrincipal)
    }

    /// `principal` is active (a session of its opened, or queried): with a state per
    /// principal, keep a child of `spec` (its default query's) for it, started now if
    /// there is a free place. The least recently active principal beyond the target
    /// is forgotten, and its child stopped.
    pub fn want(&self, principal: &str, spec: ChildPlan) {
        if !self.keeps_principals() {
            return;
        }
        let (changed, forgotten) = {
            let mut pool = lock(&self.inner);
            if pool.stopping {
                return;
            }
            let known = pool.wanted.iter().position(|w| w.principal == principal);
            let mut changed = Vec::new();
            if let Some(i) = known {
                let w = pool.wanted.remove(i);
                if w.spec != spec {
                    // Its default spec changed (a new workspace root?): a new child.
                    changed = take_where(&mut pool.waiting, |w| {
                        w.principal.as_deref() == Some(principal)
                    });
                }
            }
            pool.wanted.push(Wanted {
                principal: principal.to_string(),
                spec,
                seen: Instant::now(),
            });
            let mut forgotten = Vec::new();
            while pool.wanted.len() > self.target {
                let gone = pool.wanted.remove(0);
                forgotten.extend(take_where(&mut pool.waiting, |w| {
                    w.principal.as_deref() == Some(gone.principal.as_str())
                }));
            }
            (changed, forgotten)
        };
        for w in changed {
            self.reap(
                w,
                "stopping a warm claude: its principal's default options changed",
            );
        }
        for w in forgotten {
            self.reap(
                w,
                "stopping a warm claude: its principal is no longer among the most recent",
            );
        }
        self.wake();
    }

    /// A warm child for a session's first query, if one waiting serves `spec` and may
    /// be taken by `principal`. It has been sent `initialize` (and, a parked spare,
    /// claimed for `spec`); its place comes with it. The pool starts a replacement.
    pub fn take(&self, principal: &str, spec: &ChildPlan) -> Option<(Child, ChildSlot)> {
        let serves = |w: &Waiting| {
            let whose = w.principal.as_deref().is_none_or(|p| p == principal);
            let what = if w.parked {
                unclaimed(&w.spec) == unclaimed(spec)
            } else {
                w.spec == *spec
            };
            whose && what
        };
        let taken = {
            let mut pool = lock(&self.inner);
            if let Some(w) = pool.wanted.iter_mut().find(|w| w.principal == principal) {
                w.seen = Instant::now();
            }
            // The oldest that is up, started ahead before parked (it answers sooner);
            // else the oldest (still ahead of a fresh start). One that has exited is
            // left to the pool thread, which sees its end.
            let fit: Vec<usize> = (0..pool.waiting.len())
                .filter(|&i| serves(&pool.waiting[i]) && pool.waiting[i].child.try_wait().is_none())
                .collect();
            let w = &pool.waiting;
            let i = fit
                .into_iter()
                .min_by_key(|&i| (!w[i].initialised, w[i].parked))?;
            pool.taken += 1;
            pool.quiet_until = Some(Instant::now() + REPLACE_AFTER);
            pool.waiting.remove(i)
        };
        self.wake();
        let parked = taken.parked;
        let pid = taken.child.pid();
        if parked {
            if let Err(why) = claim(&taken.child, spec) {
                lock(&self.inner).taken -= 1;
                self.reap_with(
                    taken,
                    Stop::Now,
                    &format!("stopping warm claude pid={pid}: its claim failed: {why}"),
                );
                return None;
            }
            lock(&self.inner).claimed += 1;
        }
        let Waiting {
            child, mut slot, ..
        } = taken;
        slot.leave_pool();
        log::info!(
            "a session takes warm claude pid={pid}{}",
            if parked { " (claimed)" } else { "" }
        );
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
        self.wake();
    }

    pub fn health(&self) -> WarmHealth {
        let pool = lock(&self.inner);
        let ready = pool.waiting.iter().filter(|w| w.initialised).count();
        WarmHealth {
            target: self.target,
            serves: match self.serves {
                Some(WarmFor::EachPrincipal) => "each_principal",
                _ => "everybody",
            },
            principals: pool.wanted.len(),
            ready,
            starting: pool.waiting.len() - ready,
            parked: pool.waiting.iter().filter(|w| w.parked).count(),
            failing: pool.failures > 0,
            last_error: pool.last_error.clone(),
            taken: pool.taken,
            claimed: pool.claimed,
            started: pool.started,
            disabled: self
                .serves
                .is_none()
                .then(|| pool.last_error.clone())
                .flatten(),
        }
    }

    /// The pool thread: top up, then wait for a child's output or end, a call from
    /// `places`, a wake-up, the backoff's end or a principal's time running out.
    fn run(self: Arc<Self>) {
        loop {
            self.forget_quiet();
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
                // A backoff or the quiet after a take not over yet, and the next
                // principal to be forgotten, are the only timers; anything else that
                // lets the pool start a child wakes it (a place freed, a child taken, a
                // principal came).
                let now = Instant::now();
                let mut wait = Duration::from_secs(3600);
                for at in [pool.retry_at, pool.quiet_until].into_iter().flatten() {
                    if at > now {
                        wait = wait.min(at - now);
                    }
                }
                if let (Some(recent), Some(oldest)) = (self.recent, pool.wanted.first()) {
                    wait = wait.min((oldest.seen + recent).saturating_duration_since(now));
                }
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
                continue; // a timer is over
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

    /// Forget the principals not active for `--child-idle-secs`, stopping their children.
    fn forget_quiet(&self) {
        let Some(recent) = self.recent else { return };
        let quiet = {
            let mut pool = lock(&self.inner);
            let mut quiet = Vec::new();
            while pool
                .wanted
                .first()
                .is_some_and(|w| w.seen.elapsed() >= recent)
            {
                let gone = pool.wanted.remove(0);
                quiet.extend(take_where(&mut pool.waiting, |w| {
                    w.principal.as_deref() == Some(gone.principal.as_str())
                }));
            }
            quiet
        };
        for w in quiet {
            self.reap(
                w,
                "stopping a warm claude: its principal has been away too long",
            );
        }
    }

    /// What to start next: the spec and whom it is for; `None`: the target is met.
    fn next_wanted(&self, pool: &Pool) -> Option<(ChildPlan, Option<String>)> {
        match self.serves.as_ref()? {
            WarmFor::Everybody(spec) => {
                (pool.waiting.len() < self.target).then(|| (spec.clone(), None))
            }
            // The most recently active first.
            WarmFor::EachPrincipal => pool.wanted.iter().rev().find_map(|w| {
                let has = pool
                    .waiting
                    .iter()
                    .any(|c| c.principal.as_deref() == Some(w.principal.as_str()));
                (!has).then(|| (w.spec.clone(), Some(w.principal.clone())))
            }),
        }
    }

    /// Whether the next child is a parked spare: only where the CLI can park one, for
    /// everybody, and once a child started ahead of the default spec waits. A child
    /// started ahead (sent `initialize` in its spec's directory) answers a query of
    /// exactly that spec fastest (~110 ms on 2.1.332 against ~200 ms for a claimed
    /// spare, docs/performance.md); a parked spare serves a first query in any
    /// directory and permission mode. So the first child waits started ahead, and the
    /// others (`--warm-children` 2 or more) parked. A principal's one child is
    /// started ahead: its default query is what a returning user sends.
    fn parks_next(&self, pool: &Pool) -> bool {
        self.features.parked_spares()
            && matches!(self.serves, Some(WarmFor::Everybody(_)))
            && pool.waiting.iter().any(|w| !w.parked)
    }

    /// Start children until the target is met, a place is missing, or the backoff
    /// says wait. Nothing starts before the start-up check knows whether the CLI
    /// takes `--await-claim`.
    fn top_up(&self) {
        if self.features.claim.get().is_none() {
            return; // the check wakes the pool when it is done
        }
        loop {
            let (spec, principal, park) = {
                let pool = lock(&self.inner);
                let now = Instant::now();
                let backing_off = pool.retry_at.is_some_and(|at| now < at);
                let quiet = pool.quiet_until.is_some_and(|at| now < at);
                if pool.stopping || backing_off || quiet {
                    return;
                }
                match self.next_wanted(&pool) {
                    Some((spec, principal)) => {
                        let park = self.parks_next(&pool);
                        (spec, principal, park)
                    }
                    None => return,
                }
            };
            let Some(slot) = self.places.try_acquire_warm() else {
                return; // `places` says Freed when one comes free
            };
            // A parked spare waits in a directory of its own; the claim moves it.
            let park = if park { parking(&spec) } else { None };
            let mut start = spec.spec();
            if let Some(dir) = &park {
                start.cwd = Some(dir.clone());
                start.args.push(AWAIT_CLAIM_FLAG.into());
            }
            match Child::spawn(&start, LABEL) {
                Ok(child) => {
                    let _ = child.send_line(&cli::initialize(spec.client_tools));
                    let mut pool = lock(&self.inner);
                    pool.started += 1;
                    let w = Waiting {
                        child,
                        slot,
                        initialised: false,
                        spec,
                        principal,
                        parked: park.is_some(),
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

    /// A query waits for a place: stop a warm child, and tell `places`. With a child
    /// per principal, the least recently active principal's; else the youngest (the
    /// least likely to be up yet).
    fn give_up(&self) {
        let w = {
            let mut pool = lock(&self.inner);
            let rank = |w: &Waiting| {
                w.principal
                    .as_ref()
                    .and_then(|p| pool.wanted.iter().position(|x| &x.principal == p))
            };
            let i = (0..pool.waiting.len()).min_by_key(|&i| rank(&pool.waiting[i]));
            match (i, self.serves.as_ref()) {
                (Some(i), Some(WarmFor::EachPrincipal)) => Some(pool.waiting.remove(i)),
                _ => pool.waiting.pop(),
            }
        };
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

/// Take out of `waiting` the children `which` picks.
fn take_where(waiting: &mut Vec<Waiting>, which: impl Fn(&Waiting) -> bool) -> Vec<Waiting> {
    let (out, keep) = std::mem::take(waiting).into_iter().partition(which);
    *waiting = keep;
    out
}

/// Bind the parked spare `child` to `spec` with `claim_session`, and wait for the
/// answer (so a refused claim leaves the query to a child of its own, nothing of it
/// lost). What the spare printed before the answer (its `initialize` answer, `system`
/// lines of its parking and of the claim) is the pool's, as while it waited; nothing
/// was seen after it before a user message (2.1.332), and what might come in the same
/// chunk is logged, not relayed: no query is running to own it.
fn claim(child: &Child, spec: &ChildPlan) -> Result<(), String> {
    let request = claim_request(spec).ok_or("the query has no working directory")?;
    child
        .send_line(&request)
        .map_err(|e| format!("cannot write the claim: {e:?}"))?;
    let deadline = Instant::now() + CLAIM_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.events().recv_timeout(left) {
            Ok(ChildEvent::Lines(chunk)) => {
                let mut events = cli::events(&chunk);
                let answer = events.by_ref().find_map(|event| match event {
                    CliEvent::ControlResponse { request_id, error } if request_id == CLAIM_ID => {
                        Some(error)
                    }
                    _ => None,
                });
                if let Some(error) = answer {
                    let after = events.count();
                    if after > 0 {
                        log::info!("a claimed spare printed {after} lines before its query");
                    }
                    return error.map_or(Ok(()), Err);
                }
            }
            Ok(ChildEvent::Closed) => return Err("it exited".into()),
            Err(_) => return Err(format!("no answer within {} s", CLAIM_LIMIT.as_secs())),
        }
    }
}
