//! The session's child seat: the one `claude` child a session may have, and the query
//! waiting for a `--max-running` place to start it in.
//!
//! A query asks for a child built as its [`ChildPlan`] says. The live child serves
//! when it was built from the same plan; else it is stopped, and the new one is a warm
//! child (`warm.rs`) when the session has no conversation yet and the plan is the
//! pool's, or is started in a place (`places.rs`) — now, or once one comes free, the
//! query waiting here meanwhile. A restarted child goes on with the session's
//! conversation (`--resume`) unless the query picked its own or moved to another
//! directory. The seat also answers for its place: idle or busy (for eviction), given
//! back with the child.
//!
//! Starting and stopping processes is the [`Launcher`]'s: the session's starts real
//! children and hands them to the reaper; the tests below use one that starts none, so
//! the seat's decisions are driven here without a socket or a process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::child::{Child, ChildSpec, Stop};
use crate::cli;
use crate::places::{Acquired, ChildSlot, Places};
use crate::protocol::{ClientError, ErrorCode, Prompt};
use crate::registry::Control;
use crate::spec::ChildPlan;
use crate::state::Shared;

/// Starts and stops the seat's children.
pub(super) trait Launcher {
    type Child;
    /// Start a child as `spec` says, and send it `initialize` (with our SDK MCP
    /// server when `client_tools`).
    fn spawn(&mut self, spec: &ChildSpec, client_tools: bool) -> Result<Self::Child, String>;
    /// A warm child started as `plan` says, with its place, if one waits.
    fn take_warm(&mut self, plan: &ChildPlan) -> Option<(Self::Child, ChildSlot)>;
    /// Have `child` stopped as `how` says; `slot` goes back once it is gone. Returns
    /// at once.
    fn stop(&mut self, child: Self::Child, how: Stop, slot: ChildSlot);
    fn pid(child: &Self::Child) -> u32;
}

/// The session's live child and what belongs to it alone. Held as one `Option`, so
/// nothing about a child outlives it by accident.
pub(super) struct LiveChild<C> {
    pub child: C,
    /// Its place among the server's `--max-running`, given back when it is gone.
    slot: ChildSlot,
    /// Whether it echoes our messages (seen at least once); see `query.rs`.
    pub echoes: bool,
    /// Since when it has had no query (for `--child-idle-secs`).
    pub idle_since: Instant,
}

/// A query waiting for a `--max-running` place.
pub(super) struct Queued {
    pub prompt: Prompt,
    plan: ChildPlan,
    /// `input` sent while it waited, written after the prompt.
    pub inputs: Vec<Prompt>,
    pub deadline: Instant,
    pub position: usize,
}

/// What became of the live child when a query asked for a plan.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kept {
    /// It was built from the same plan: it serves (and is busy now).
    Same,
    /// It was built otherwise and is being stopped.
    Stopped,
    /// There was none.
    None,
}

/// Where a query's child is.
#[derive(Debug, PartialEq)]
pub(super) enum Placed {
    /// Running: write the prompt.
    Ready(Prompt),
    /// Waiting for a place, at this position (1 = next).
    Queued(usize),
}

/// The prompt and the input that waited with it, once a place came and the child
/// started.
pub(super) type Started = (Prompt, Vec<Prompt>);

pub(super) struct Seat<L: Launcher> {
    launcher: L,
    places: Arc<Places>,
    /// The session's number among `places`' waiters.
    number: u64,
    /// Places arrive here when this session waited for one.
    grant: (Sender<ChildSlot>, Receiver<ChildSlot>),
    /// The session's control channel, handed to `places` (evictions, queue moves).
    control: Sender<Control>,
    live: Option<LiveChild<L::Child>>,
    queued: Option<Queued>,
    /// The plan the last child was built from (before it was made to resume). It
    /// outlives that child: the next query's plan is compared with it to decide
    /// whether the conversation goes on.
    last_plan: Option<ChildPlan>,
    label: String,
}

impl<L: Launcher> Seat<L> {
    pub fn new(launcher: L, places: Arc<Places>, control: Sender<Control>, label: &str) -> Self {
        Seat {
            launcher,
            places,
            number: next_number(),
            grant: bounded(1),
            control,
            live: None,
            queued: None,
            last_plan: None,
            label: label.to_string(),
        }
    }

    pub fn live(&self) -> Option<&LiveChild<L::Child>> {
        self.live.as_ref()
    }

    pub fn live_mut(&mut self) -> Option<&mut LiveChild<L::Child>> {
        self.live.as_mut()
    }

    pub fn pid(&self) -> Option<u32> {
        self.live.as_ref().map(|c| L::pid(&c.child))
    }

    pub fn queued(&self) -> Option<&Queued> {
        self.queued.as_ref()
    }

    pub fn queued_mut(&mut self) -> Option<&mut Queued> {
        self.queued.as_mut()
    }

    /// Where places for a waiting query arrive.
    pub fn grants(&self) -> &Receiver<ChildSlot> {
        &self.grant.1
    }

    pub fn last_plan(&self) -> Option<&ChildPlan> {
        self.last_plan.as_ref()
    }

    /// Forget how the last child was built (its conversation could not be resumed):
    /// the next query's child is planned afresh.
    pub fn forget_plan(&mut self) {
        self.last_plan = None;
    }

    /// The live child runs as a child built from `plan` would (a live setting took).
    pub fn replan(&mut self, plan: ChildPlan) {
        if self.last_plan.is_some() {
            self.last_plan = Some(plan);
        }
    }

    /// A query asks for a child built as `plan` says: the live child serves if it was
    /// built the same way; else it is stopped (`how`) — between queries, no turn to
    /// interrupt.
    pub fn keep_or_stop(&mut self, plan: &ChildPlan, how: Stop) -> Kept {
        if self.live.is_none() {
            return Kept::None;
        }
        if self.last_plan.as_ref() == Some(plan) {
            self.places.set_idle(self.number, false, &self.control);
            return Kept::Same;
        }
        log::info!("[{}] options changed; restarting claude", self.label);
        self.stop(how);
        Kept::Stopped
    }

    /// A child for a query built as `plan` says, when the seat has none (see
    /// [`Seat::keep_or_stop`]): a warm one if the session has no `conversation` yet,
    /// else one started in a place, now or once one comes free (it waits until
    /// `deadline`).
    pub fn place(
        &mut self,
        plan: ChildPlan,
        conversation: Option<&str>,
        prompt: Prompt,
        deadline: Instant,
    ) -> Result<Placed, ClientError> {
        if conversation.is_none() {
            // A warm child cannot resume a conversation.
            if let Some((child, slot)) = self.launcher.take_warm(&plan) {
                log::info!("[{}] took warm claude pid={}", self.label, L::pid(&child));
                self.adopt(child, slot, plan);
                return Ok(Placed::Ready(prompt));
            }
        }
        match self
            .places
            .acquire(self.number, &self.grant.0, &self.control)
        {
            Acquired::Now(slot) => {
                self.launch(plan, slot, conversation)?;
                Ok(Placed::Ready(prompt))
            }
            Acquired::Queued(position) => {
                log::info!(
                    "[{}] all claude places taken; queued at {position}",
                    self.label
                );
                self.queued = Some(Queued {
                    prompt,
                    plan,
                    inputs: Vec::new(),
                    deadline,
                    position,
                });
                Ok(Placed::Queued(position))
            }
        }
    }

    /// A place came free for the query that waited for one: its child starts there.
    /// `None` when nothing waits any more (the slot, dropped, is handed on).
    pub fn on_place(
        &mut self,
        slot: ChildSlot,
        conversation: Option<&str>,
    ) -> Option<Result<Started, ClientError>> {
        let q = self.queued.take()?;
        log::info!("[{}] a claude place came free", self.label);
        Some(
            self.launch(q.plan, slot, conversation)
                .map(|()| (q.prompt, q.inputs)),
        )
    }

    /// Start a child built from `plan`, holding `slot` for as long as it lives.
    fn launch(
        &mut self,
        plan: ChildPlan,
        slot: ChildSlot,
        conversation: Option<&str>,
    ) -> Result<(), ClientError> {
        // Continue the session's conversation, unless the client has just asked for
        // a specific one (new options with `resume` or `continue_conversation`), or for
        // another directory: the CLI keeps conversations per directory and cannot
        // resume one elsewhere, so a new cwd starts a new conversation.
        let new_options = self.last_plan.as_ref() != Some(&plan);
        let asked_for_own = plan.picks_conversation() && new_options;
        let moved = self
            .last_plan
            .as_ref()
            .is_some_and(|last| last.cwd != plan.cwd);
        let run = match conversation {
            Some(id) if !asked_for_own && !moved => plan.resuming(id),
            _ => plan.clone(),
        };
        let child = self
            .launcher
            .spawn(&run.spec(), plan.client_tools)
            .map_err(|e| {
                log::warn!("[{}] {e}", self.label);
                ClientError::new(ErrorCode::ClaudeSpawnFailed, e)
            })?;
        self.adopt(child, slot, plan);
        Ok(())
    }

    /// Make `child` (already sent `initialize`) the session's own.
    fn adopt(&mut self, child: L::Child, slot: ChildSlot, plan: ChildPlan) {
        self.live = Some(LiveChild {
            child,
            slot,
            echoes: false,
            idle_since: Instant::now(),
        });
        self.last_plan = Some(plan);
    }

    /// Hand the child, if there is one, to be stopped as `how` says (its place goes
    /// with it, given back once it is reaped). Whether there was one.
    pub fn stop(&mut self, how: Stop) -> bool {
        let Some(LiveChild { child, slot, .. }) = self.live.take() else {
            return false;
        };
        // No candidate for eviction any more.
        self.places.set_idle(self.number, false, &self.control);
        self.launcher.stop(child, how, slot);
        true
    }

    /// A queued query elsewhere needs this child's place: stopped (`how`) if it is
    /// idle (`busy` false); a busy one keeps it. Whether it was stopped.
    pub fn evict(&mut self, busy: bool, how: Stop) -> bool {
        match &mut self.live {
            Some(live) if !busy => {
                log::info!(
                    "[{}] stopping the idle claude: a queued query needs its place",
                    self.label
                );
                live.slot.mark_evicted();
                self.stop(how)
            }
            // Busy again meanwhile (or gone): it keeps its place.
            _ => {
                self.places.evicted();
                false
            }
        }
    }

    /// The query ended (`now`): the child is idle, and its place may go to a query
    /// that waits for one.
    pub fn idle(&mut self, now: Instant) {
        if let Some(c) = &mut self.live {
            c.idle_since = now;
            self.places.set_idle(self.number, true, &self.control);
        }
    }

    /// When the idle child is to be stopped (`--child-idle-secs`), if there is one.
    pub fn idle_deadline(&self, child_idle: Option<Duration>) -> Option<Instant> {
        Some(self.live.as_ref()?.idle_since + child_idle?)
    }

    /// The waiting query no longer waits (interrupted, timed out, the session ends).
    pub fn leave_queue(&mut self) -> Option<Queued> {
        let q = self.queued.take()?;
        self.places.leave_queue(self.number);
        Some(q)
    }

    /// The queue moved: the waiting query's new position, if it changed.
    pub fn queue_moved(&mut self) -> Option<usize> {
        let now = self.places.position(self.number)?;
        let q = self.queued.as_mut()?;
        (q.position != now).then(|| {
            q.position = now;
            now
        })
    }
}

/// A number for each session, for `places`.
fn next_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The server's launcher: real `claude` children, the warm pool, the reaper.
pub(super) struct Spawner<'a> {
    pub shared: &'a Shared,
    pub label: String,
}

impl Launcher for Spawner<'_> {
    type Child = Child;

    fn spawn(&mut self, spec: &ChildSpec, client_tools: bool) -> Result<Child, String> {
        let child = Child::spawn(spec, &self.label).map_err(|e| e.to_string())?;
        let _ = child.send_line(&cli::initialize(client_tools));
        Ok(child)
    }

    fn take_warm(&mut self, plan: &ChildPlan) -> Option<(Child, ChildSlot)> {
        self.shared.warm.take(plan)
    }

    fn stop(&mut self, child: Child, how: Stop, slot: ChildSlot) {
        self.shared.reaper.stop(child, how, slot, &self.label);
    }

    fn pid(child: &Child) -> u32 {
        child.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Conversation;
    use std::path::PathBuf;

    /// Children are numbers; nothing is started.
    #[derive(Default)]
    struct Fake {
        next_pid: u32,
        /// The argv of every child started.
        spawned: Vec<Vec<String>>,
        /// How each child was stopped (its slot is dropped at once: reaped).
        stopped: Vec<(u32, Stop)>,
        warm: Option<(u32, ChildSlot, ChildPlan)>,
        fail: bool,
    }

    impl Launcher for Fake {
        type Child = u32;
        fn spawn(&mut self, spec: &ChildSpec, _: bool) -> Result<u32, String> {
            if self.fail {
                return Err("cannot start claude: no such file".into());
            }
            self.next_pid += 1;
            self.spawned.push(spec.args.clone());
            Ok(self.next_pid)
        }
        fn take_warm(&mut self, plan: &ChildPlan) -> Option<(u32, ChildSlot)> {
            match self.warm.take() {
                Some((pid, slot, p)) if &p == plan => Some((pid, slot)),
                other => {
                    self.warm = other;
                    None
                }
            }
        }
        fn stop(&mut self, child: u32, how: Stop, slot: ChildSlot) {
            self.stopped.push((child, how));
            drop(slot);
        }
        fn pid(child: &u32) -> u32 {
            *child
        }
    }

    fn plan(cwd: &str) -> ChildPlan {
        ChildPlan {
            program: PathBuf::from("claude"),
            conversation: Conversation::New,
            client_tools: false,
            settings: Vec::new(),
            cwd: Some(PathBuf::from(cwd)),
            env: Vec::new(),
            sandbox: None,
        }
    }

    fn seat(places: &Arc<Places>) -> (Seat<Fake>, Receiver<Control>) {
        let (tx, rx) = bounded(16);
        (Seat::new(Fake::default(), places.clone(), tx, "test"), rx)
    }

    fn prompt(text: &str) -> Prompt {
        Prompt::Text(text.into())
    }

    const GRACE: Stop = Stop::Graceful(Duration::from_secs(2));

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn resumes(args: &[String]) -> Option<&str> {
        args.iter().find_map(|a| a.strip_prefix("--resume="))
    }

    #[test]
    fn a_free_place_starts_the_child_and_the_same_plan_keeps_it() {
        let places = Places::new(2);
        let (mut s, _) = seat(&places);
        let placed = s.place(plan("/w"), None, prompt("hi"), later()).unwrap();
        assert_eq!(placed, Placed::Ready(prompt("hi")));
        assert_eq!(s.pid(), Some(1));
        assert_eq!(places.used(), 1);
        s.idle(Instant::now());
        assert_eq!(s.keep_or_stop(&plan("/w"), GRACE), Kept::Same);
        assert_eq!(s.launcher.spawned.len(), 1);
        assert!(s.launcher.stopped.is_empty());
    }

    #[test]
    fn another_plan_restarts_the_child_resuming_the_conversation() {
        let places = Places::new(1);
        let (mut s, _) = seat(&places);
        s.place(plan("/w"), None, prompt("a"), later()).unwrap();
        let mut other = plan("/w");
        other.settings.push("--model=m2".into());
        assert_eq!(s.keep_or_stop(&other, GRACE), Kept::Stopped);
        assert_eq!(s.launcher.stopped, [(1, GRACE)]);
        assert!(s.live().is_none());
        // The stopped child's place came back (the fake reaps at once).
        assert_eq!(places.used(), 0);
        s.place(other.clone(), Some("conv-1"), prompt("b"), later())
            .unwrap();
        assert_eq!(resumes(&s.launcher.spawned[1]), Some("conv-1"));
        // The plan kept is the one asked for, not the resuming one: the same options
        // next time keep the child.
        assert_eq!(s.last_plan(), Some(&other));
        assert_eq!(s.keep_or_stop(&other, GRACE), Kept::Same);
    }

    #[test]
    fn a_conversation_picked_or_a_new_cwd_is_not_resumed_over() {
        let places = Places::new(1);
        let (mut s, _) = seat(&places);
        s.place(plan("/w"), None, prompt("a"), later()).unwrap();
        let mut own = plan("/w");
        own.conversation = Conversation::Resume("theirs".into());
        s.keep_or_stop(&own, GRACE);
        s.place(own.clone(), Some("mine"), prompt("b"), later())
            .unwrap();
        assert_eq!(resumes(&s.launcher.spawned[1]), Some("theirs"));
        // The same plan again (the child stopped meanwhile): now the conversation
        // the session learnt goes on.
        s.stop(GRACE);
        s.place(own, Some("learnt"), prompt("c"), later()).unwrap();
        assert_eq!(resumes(&s.launcher.spawned[2]), Some("learnt"));
        // Elsewhere: a new conversation.
        s.keep_or_stop(&plan("/elsewhere"), GRACE);
        s.place(plan("/elsewhere"), Some("learnt"), prompt("d"), later())
            .unwrap();
        assert_eq!(resumes(&s.launcher.spawned[3]), None);
    }

    #[test]
    fn a_warm_child_serves_only_a_session_without_a_conversation() {
        let places = Places::new(2);
        let (mut s, _) = seat(&places);
        let slot = places.try_acquire_warm().unwrap();
        s.launcher.warm = Some((77, slot, plan("/w")));
        s.place(plan("/w"), Some("conv"), prompt("a"), later())
            .unwrap();
        assert_eq!(s.pid(), Some(1), "a conversation is resumed, not warm");
        s.stop(GRACE);
        s.place(plan("/w"), None, prompt("b"), later()).unwrap();
        assert_eq!(s.pid(), Some(77));
        assert_eq!(s.launcher.spawned.len(), 1);
    }

    #[test]
    fn a_query_waits_for_a_place_and_starts_when_one_is_granted() {
        let places = Places::new(1);
        let (mut a, _) = seat(&places);
        let (mut b, b_control) = seat(&places);
        a.place(plan("/w"), None, prompt("a"), later()).unwrap();
        let placed = b.place(plan("/w"), None, prompt("b"), later()).unwrap();
        assert_eq!(placed, Placed::Queued(1));
        b.queued_mut().unwrap().inputs.push(prompt("more"));
        // `a` is busy: asked to make room, it keeps its place.
        assert!(!a.evict(true, GRACE));
        // Idle now: `places` asks it to stop, and it does.
        a.idle(Instant::now());
        assert!(a.evict(false, GRACE));
        let slot = b.grants().try_recv().expect("the freed place goes to b");
        let (p, inputs) = b.on_place(slot, None).unwrap().unwrap();
        assert_eq!((p, inputs), (prompt("b"), vec![prompt("more")]));
        assert!(b.queued().is_none());
        assert_eq!(b.pid(), Some(1));
        assert_eq!(places.used(), 1);
        drop(b_control);
    }

    #[test]
    fn a_waiting_query_that_leaves_hands_its_place_on() {
        let places = Places::new(1);
        let (mut a, _) = seat(&places);
        let (mut b, _) = seat(&places);
        a.place(plan("/w"), None, prompt("a"), later()).unwrap();
        b.place(plan("/w"), None, prompt("b"), later()).unwrap();
        assert_eq!(places.queued(), 1);
        assert!(b.leave_queue().is_some());
        assert_eq!(places.queued(), 0);
        assert!(b.leave_queue().is_none());
        a.stop(GRACE);
        assert!(b.grants().try_recv().is_err());
        assert_eq!(places.used(), 0);
    }

    #[test]
    fn a_child_that_cannot_start_gives_its_place_back() {
        let places = Places::new(1);
        let (mut s, _) = seat(&places);
        s.launcher.fail = true;
        let e = s.place(plan("/w"), None, prompt("a"), later()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ClaudeSpawnFailed);
        assert!(s.live().is_none());
        assert_eq!(places.used(), 0);
    }

    #[test]
    fn an_idle_child_has_a_deadline_and_a_stopped_one_none() {
        let places = Places::new(1);
        let (mut s, _) = seat(&places);
        let idle = Some(Duration::from_secs(600));
        assert_eq!(s.idle_deadline(idle), None);
        s.place(plan("/w"), None, prompt("a"), later()).unwrap();
        let t = Instant::now();
        s.idle(t);
        assert_eq!(s.idle_deadline(idle), Some(t + Duration::from_secs(600)));
        assert_eq!(s.idle_deadline(None), None);
        assert!(s.stop(Stop::Now));
        assert!(!s.stop(Stop::Now));
        assert_eq!(s.idle_deadline(idle), None);
        assert_eq!(s.launcher.stopped, [(1, Stop::Now)]);
    }
}
