//! One session: the loop that decides everything for one client and its `claude` child.
//!
//! Everything that can happen to a session arrives on a channel — word that the client
//! sent something (from the thread that watches every socket, see `link.rs`), child
//! stdout (from the child's reader thread), server control (shutdown) — or is a timer,
//! and one `select!` takes them one at a time. Nothing else touches the session's
//! state, so there is no lock around the socket or the child, and the loop never blocks
//! on either: child stdin writes go through a queue, socket reads and writes never
//! block (see `link.rs`), and while the client has more than [`HIGH_WATER`] bytes unread
//! the loop stops taking child events, which back-pressures the child through its
//! stdout pipe, and the link stops reading the client, which back-pressures the client
//! through TCP: what either side makes the server queue stays bounded.
//!
//! A query: `query` → `query_start` → the child's events translated → `query_end`.
//! Exactly one `query_end` follows every `query_start`, whatever happens.
//!
//! A session may have several connections (viewers, `attach.rs`): each gets every
//! message, and the child is read while the quickest keeps up.
//!
//! A session outlives its connections: when the last goes away without ending it (a
//! close other than 1000, or `end_session`), it is detached for
//! `--reconnect-grace-secs`, its query still running and its messages kept
//! (`replay.rs`), until the client reattaches (`attach.rs`) or the grace passes.
//!
//! This file is the loop and the client's side (dispatch, queries, input, interrupt);
//! beside it: `seat.rs` (the child seat: the one child, the place it waits for),
//! `from_child.rs` (what the child says), `asks.rs` (its questions and the client's
//! answers), `output.rs` (what goes to the viewers), `attach.rs` (viewers joining and
//! leaving), `timers.rs` (the one deadline the loop waits for).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, Receiver, Select, Sender};
use tungstenite::Message;

use crate::child::{ChildEvent, Stop, Undelivered};
use crate::cli;
use crate::handshake::Newcomer;
use crate::limits::RateWindow;
use crate::link::{Link, HIGH_WATER};
use crate::pending::{Pending, Unanswered};
use crate::protocol::{
    parse_client_text, parse_client_value, ClientError, ClientMessage, Closing, ErrorCode, Prompt,
    QueryOptions, QueryOutcome, ServerMessage, Setting,
};
mod asks;
mod attach;
mod from_child;
mod output;
mod seat;
mod timers;

use asks::MAX_REGISTRY_REQUESTS;
use output::Viewer;
use seat::{Kept, Placed, Seat, Spawner};

use crate::places::ChildSlot;
use crate::query::{Query, Step};
use crate::registry::{Control, Endpoint, Listing, SessionInfo, SessionState};
use crate::replay::Replay;
use crate::spec::{with_settings, ChildPlan};
use crate::state::Shared;
use crate::tool_registry;
use crate::tools::Tools;
use crate::util::{new_session_id, now_unix};

/// Child stdout chunks (each up to 256 KiB of lines) handled in one go before the loop
/// looks at the client again.
const EVENT_BATCH: usize = 4;

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client closed with 1000, or sent `end_session`.
    ClientEnded,
    /// Its client went away and did not come back within the grace.
    GraceExpired,
    IdleTimeout,
    Shutdown,
    /// The server drains and the session has no query running.
    Drained,
}

/// Why a connection ended without the session ending (it is detached).
#[derive(Debug)]
enum Lost {
    Gone(String),
    Closed(Option<u16>),
    Protocol(String),
    HeartbeatTimeout,
    Stalled,
}

pub struct Session<'a> {
    shared: &'a Shared,
    id: String,
    label: String,
    /// The session's connections (viewers), oldest first; none while detached.
    viewers: Vec<Viewer>,
    /// The number the last viewer got (they count from 1).
    next_viewer: u64,
    /// The viewer whose message is being handled (answers name it).
    speaker: u64,
    /// The largest frame sent to several viewers (see `max_behind`).
    largest_frame: usize,
    /// While detached: when the session ends unless its client reattaches.
    detached_until: Option<Instant>,
    /// The messages sent lately, for a client that reattaches.
    replay: Replay,
    peer: SocketAddr,
    /// Whom the session belongs to, and what its limits count against.
    principal: String,
    limit_key: String,
    /// The principal's CLI state directory (`CLAUDE_CONFIG_DIR`), if they are kept apart.
    state_dir: Option<PathBuf>,
    listing: Listing,
    control: Receiver<Control>,
    seq: u64,
    /// The session's child, and the query waiting for a place to start one in.
    seat: Seat<Spawner<'a>>,
    /// The options the last child was built from, with the live settings applied.
    last_options: QueryOptions,
    /// Settings changed during the session (`set_model`, …): they apply to every later
    /// query that does not set them itself.
    settings: QueryOptions,
    /// Live settings sent to the child, waiting for its answer: request id → setting.
    settings_sent: Vec<(String, Setting)>,
    /// Tools the client defined.
    tools: Tools,
    /// Questions of the CLI waiting for the client.
    pending: Pending,
    /// Answers of the tool registry, and how many requests to it are under way.
    registry: (Sender<tool_registry::Reply>, Receiver<tool_registry::Reply>),
    registry_requests: usize,
    claude_session_id: Option<String>,
    query: Option<Query>,
    queries: u64,
    rate: RateWindow,
    last_activity: Instant,
    next_ping: Instant,
    ending: Option<End>,
    /// Started by a client resuming, from the state directory, a session another
    /// instance held (see `handshake.rs`).
    resumed_conversation: bool,
    /// The server drains: end with 1012 once no query is running.
    draining: bool,
    /// When the client last sent something or a query started or ended (Unix seconds),
    /// and the directory of the last query's child, as `/sessions` shows them.
    active_at: u64,
    cwd: Option<String>,
    /// The changing part of the `/sessions` row as last published (see [`Row`]).
    listed: Row,
    /// While the session holds a conversation: when its lease is refreshed next
    /// (`conversations::hold`), so other instances sharing the state directory list the
    /// conversation as live.
    lease_due: Option<Instant>,
}

/// The part of a session's `/sessions` row that changes. Computed from the session at
/// the end of each turn of its loop and published only when it differs from the last.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    state: SessionState,
    claude_session_id: Option<String>,
    last_activity: u64,
    queries: u64,
    cwd: Option<String>,
    child_pid: Option<u32>,
    query_running: bool,
    viewers: usize,
}

impl Row {
    fn write(self, i: &mut SessionInfo) {
        i.state = self.state;
        i.claude_session_id = self.claude_session_id;
        i.last_activity = self.last_activity;
        i.queries = self.queries;
        i.cwd = self.cwd;
        i.child_pid = self.child_pid;
        i.query_running = self.query_running;
        i.viewers = self.viewers;
    }
}

/// Set up a session for a connection that passed the handshake, list it, and run it
/// on this thread until it ends.
pub fn serve(shared: &Shared, link: Link, peer: SocketAddr, mut newcomer: Newcomer) {
    let resumed = newcomer.resumed.take();
    let id = match (&resumed, &shared.config.instance_id) {
        (Some(r), _) => r.session_id.clone(),
        // Prefixed so a balancer can send a reattach back here (`deploy/nginx.conf`).
        (None, Some(instance)) => format!("{instance}-{}", new_session_id()),
        (None, None) => new_session_id(),
    };
    let conversation = resumed.map(|r| r.conversation);
    let (control_tx, control_rx) = bounded(16);
    let now = now_unix();
    let listing = shared.registry.list(
        SessionInfo {
            session_id: id.clone(),
            endpoint: Endpoint::Ws,
            claude_session_id: conversation.clone(),
            state: SessionState::Idle,
            created_at: now,
            last_activity: now,
            queries: 0,
            peer: newcomer.client_ip.to_string(),
            cwd: None,
            user: newcomer.user.clone(),
            child_pid: None,
            viewers: 1,
            principal: newcomer.principal.clone(),
            query_running: false,
        },
        control_tx.clone(),
    );
    // Listed after the shutdown broadcast went out: tell it ourselves.
    if shared.is_shutting_down() {
        let _ = control_tx.try_send(Control::Shutdown);
    } else if shared.is_draining() {
        let _ = control_tx.try_send(Control::Drain);
    }
    if let Some(c) = &conversation {
        // Its first query goes on with the conversation (`start_child` resumes it).
        log::info!(
            "[{}] resuming conversation {c} from the state directory",
            label_of(&id)
        );
    }
    let who = (&newcomer, peer, conversation);
    Session::new(shared, id, link, listing, (control_tx, control_rx), who).run();
    drop(newcomer);
}

/// How log lines name session `id`.
fn label_of(id: &str) -> String {
    id.chars().take(8).collect()
}

impl<'a> Session<'a> {
    fn new(
        shared: &'a Shared,
        id: String,
        link: Link,
        listing: Listing,
        (control_tx, control): (Sender<Control>, Receiver<Control>),
        (newcomer, peer, conversation): (&Newcomer, SocketAddr, Option<String>),
    ) -> Self {
        let now = Instant::now();
        let (n, window) = shared.config.rate_limit;
        let label = label_of(&id);
        let spawner = Spawner {
            shared,
            label: label.clone(),
            principal: newcomer.principal.clone(),
        };
        Session {
            seat: Seat::new(spawner, shared.places.clone(), control_tx, &label),
            label,
            id,
            shared,
            peer,
            viewers: vec![Viewer { link, id: 1 }],
            next_viewer: 1,
            speaker: 1,
            largest_frame: 0,
            detached_until: None,
            replay: Replay::new(shared.config.replay_buffer_bytes),
            principal: newcomer.principal.clone(),
            limit_key: newcomer.limit_key.clone(),
            state_dir: shared
                .state_dir
                .as_ref()
                .map(|d| crate::spec::principal_dir(d, &newcomer.principal)),
            listing,
            control,
            seq: 0,
            last_options: QueryOptions::default(),
            settings: QueryOptions::default(),
            settings_sent: Vec::new(),
            tools: Tools::default(),
            pending: Pending::default(),
            registry: bounded(MAX_REGISTRY_REQUESTS),
            registry_requests: 0,
            resumed_conversation: conversation.is_some(),
            claude_session_id: conversation,
            query: None,
            queries: 0,
            rate: RateWindow::new(n, window),
            last_activity: now,
            next_ping: now + shared.config.timeouts.ping_interval,
            ending: None,
            draining: false,
            active_at: now_unix(),
            cwd: None,
            listed: Row {
                state: SessionState::Idle,
                claude_session_id: None,
                last_activity: 0,
                queries: 0,
                cwd: None,
                child_pid: None,
                query_running: false,
                viewers: 1,
            },
            lease_due: None,
        }
    }

    /// Run the session until its client goes, it times out or the server shuts down;
    /// then stop its child and close the connection.
    fn run(mut self) {
        log::info!("[{}] session open, peer {}", self.label, self.peer);
        if self.claude_session_id.is_some() {
            self.keep_lease(Instant::now());
        }
        let hello = if self.resumed_conversation {
            self.hello(Some("conversation".into()), 1)
        } else {
            self.hello(None, 1)
        };
        self.send(hello);
        self.flush();
        self.warm_ahead();
        // Frames that came with the handshake are already buffered: no wake-up for them.
        self.on_client_input(1);
        self.publish();
        self.flush();
        self.publish();
        let end = loop {
            if let Some(end) = self.ending.take() {
                break end;
            }
            // Clones for this turn of the loop only: a clone kept longer would keep a
            // stopped child's reader from seeing that nobody listens any more.
            let inbound: Vec<(u64, Receiver<()>)> = self
                .viewers
                .iter()
                .map(|v| (v.id, v.link.inbound().clone()))
                .collect();
            let control = self.control.clone();
            let registry = self.registry.1.clone();
            let grant = self.seat.grants().clone();
            let events = match self.seat.live() {
                Some(c) if self.pending_output() <= HIGH_WATER => c.child.events().clone(),
                // No child, or back-pressure: the client must read first.
                _ => never(),
            };
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            // One receiver per viewer: a `Select` rather than `select!`.
            let mut choice = Select::new();
            for (_, r) in &inbound {
                choice.recv(r);
            }
            let on_events = choice.recv(&events);
            let on_control = choice.recv(&control);
            let on_grant = choice.recv(&grant);
            let on_registry = choice.recv(&registry);
            if let Ok(op) = choice.select_timeout(wait) {
                let i = op.index();
                if let Some((viewer, r)) = inbound.get(i) {
                    match op.recv(r) {
                        Ok(()) => self.on_client_input(*viewer),
                        Err(_) => self.lose(*viewer, Lost::Gone("connection closed".into())),
                    }
                } else if i == on_events {
                    match op.recv(&events) {
                        Ok(ev) => self.on_child_events(ev),
                        // The reader thread ended without saying so: treat it as an exit.
                        Err(_) => self.on_child_exit(),
                    }
                } else if i == on_control {
                    if let Ok(c) = op.recv(&control) {
                        self.on_control(c)
                    }
                } else if i == on_grant {
                    if let Ok(slot) = op.recv(&grant) {
                        self.on_place(slot)
                    }
                } else if i == on_registry {
                    if let Ok(r) = op.recv(&registry) {
                        self.on_registry_reply(r)
                    }
                }
            }
            self.on_timers(Instant::now());
            self.sync_drain();
            // The row first, then the frames: a client that reads `/sessions` when its
            // `query_end` arrives sees the session idle. (Again after: a viewer lost in
            // the flush changes it.)
            self.publish();
            self.flush();
            self.publish();
            if self.query.is_none() {
                for v in &mut self.viewers {
                    v.link.release_buffers(); // between queries a session stays small
                }
            }
        };
        self.finish(end);
    }

    /// In a drain, a session ends once it has no query (running or queued).
    fn sync_drain(&mut self) {
        if self.draining && self.query.is_none() {
            self.end(End::Drained);
        }
    }

    /// A child event, and those that wait behind it, up to [`EVENT_BATCH`] while the
    /// viewers keep up.
    fn on_child_events(&mut self, ev: ChildEvent) {
        self.on_child_event(ev);
        for _ in 1..EVENT_BATCH {
            if self.pending_output() > HIGH_WATER || self.ending.is_some() {
                break;
            }
            let Some(c) = self.seat.live() else { break };
            match c.child.events().try_recv() {
                Ok(ev) => self.on_child_event(ev),
                Err(_) => break,
            }
        }
    }

    // ---- client side ------------------------------------------------------------

    /// Viewer `viewer` sent something (or its socket has room again).
    fn on_client_input(&mut self, viewer: u64) {
        let Some(v) = self.viewers.iter_mut().find(|v| v.id == viewer) else {
            return;
        };
        let mut messages = Vec::new();
        let result = v.link.receive(|_, m| messages.push(m));
        self.speaker = viewer;
        if !messages.is_empty() {
            self.active_at = now_unix();
        }
        for m in messages {
            match m {
                Message::Text(text) => {
                    self.last_activity = Instant::now();
                    match parse_client_text(&text) {
                        Ok(msg) => self.dispatch(msg, true),
                        Err(e) => self.send_error(e),
                    }
                }
                _ => self.send_error(ClientError::new(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not supported; send JSON text frames",
                )),
            }
        }
        match result {
            Ok(()) => {}
            Err(e) => self.lose_link(viewer, e),
        }
    }

    fn dispatch(&mut self, msg: ClientMessage, top_level: bool) {
        match msg {
            ClientMessage::Query { prompt, options } => self.start_query(prompt, options),
            ClientMessage::Interrupt => self.interrupt(),
            ClientMessage::Input { text } => self.input(text),
            ClientMessage::Ping => self.reply(ServerMessage::Pong {}),
            ClientMessage::PermissionResponse {
                request_id,
                behavior,
                updated_input,
                message,
            } => self.permission_response(&request_id, behavior, updated_input, message),
            ClientMessage::DefineTool { tool } => self.define_tool(tool),
            ClientMessage::GetTools => self.get_tools(),
            ClientMessage::ToolResult {
                call_id,
                content,
                is_error,
            } => self.tool_result(&call_id, content, is_error),
            ClientMessage::Set(setting) => self.set(setting),
            ClientMessage::EndSession => self.end(End::ClientEnded),
            ClientMessage::History(request) => {
                let dir = self.history_dir();
                let registry = &self.shared.registry;
                let answer =
                    crate::history::answer(registry, dir.as_deref(), &self.principal, request);
                // Only the device that asked: another one is not told to load it.
                self.reply(answer);
            }
            ClientMessage::Batch { messages } if top_level => {
                for m in messages {
                    match parse_client_value(m) {
                        Ok(m) => self.dispatch(m, false),
                        Err(e) => self.send_error(e),
                    }
                }
            }
            ClientMessage::Batch { .. } => self.send_error(ClientError::new(
                ErrorCode::InvalidField,
                "a batch cannot contain another batch",
            )),
        }
    }

    fn start_query(&mut self, prompt: Prompt, options: QueryOptions) {
        let config = &self.shared.config;
        if self.draining {
            // Its connection closes with 1012 at once; the query goes to another
            // instance once the client reconnects.
            return self.send_error(ClientError::new(
                ErrorCode::ShuttingDown,
                "this instance is draining; reconnect with the session id to go on elsewhere",
            ));
        }
        if self.query.is_some() {
            return self.send_error(ClientError::new(
                ErrorCode::QueryInProgress,
                "a query is already running; send input, or interrupt it first",
            ));
        }
        if let Err(e) = self.check_text(&prompt, "prompt") {
            return self.send_error(e);
        }
        let options = self.own_conversation(with_settings(options, &self.settings));
        let spec = match self.spec_for(&options) {
            Ok(s) => s,
            Err(e) => return self.send_error(e),
        };
        if let Err(e) = self.check_rate() {
            return self.send_error(e);
        }
        self.queries += 1;
        log::info!("[{}] query {} started", self.label, self.queries);
        log::debug!("[{}] prompt: {}", self.label, prompt.text().escape_debug());
        self.send(ServerMessage::QueryStart {
            prompt: prompt.content(),
        });
        self.query = Some(Query::new(config.timeouts.interrupt_grace));
        self.active_at = now_unix();
        if let Some(cwd) = &spec.cwd {
            self.cwd = Some(cwd.display().to_string());
        }
        self.last_options = options;
        // The live child if it was built the same way; else a new one, in a place
        // among --max-running. (A child being stopped keeps its place until it is
        // reaped: a restart needs a place of its own.)
        let stop = Stop::Graceful(config.timeouts.stop_grace);
        match self.seat.keep_or_stop(&spec, stop) {
            Kept::Same => return self.begin(&prompt, Vec::new()),
            Kept::Stopped => self.child_gone(),
            Kept::None => {}
        }
        let deadline = Instant::now() + config.timeouts.queue_timeout;
        let conversation = self.claude_session_id.clone();
        match self
            .seat
            .place(spec, conversation.as_deref(), prompt, deadline)
        {
            Ok(Placed::Ready(prompt)) => self.begin(&prompt, Vec::new()),
            Ok(Placed::Queued(position)) => self.send(ServerMessage::QueryQueued { position }),
            Err(e) => {
                self.send_error(e);
                self.end_query(QueryOutcome::Error);
            }
        }
    }

    /// Write the running query's prompt (and input that waited with it) to the child.
    fn begin(&mut self, prompt: &Prompt, inputs: Vec<Prompt>) {
        if let Some(dir) = self.history_dir() {
            crate::history::note_prompt(&dir, &self.id, &prompt.text());
        }
        if let Err(e) = self.write_user_message(prompt) {
            if e.code == ErrorCode::ClaudeExited && self.seat.live().is_some() {
                // The child is exiting before it read the prompt: its exit (which
                // comes) ends the query, with what it wrote to stderr.
                return;
            }
            // Nothing reached the child, so nothing will end this query but us.
            self.send_error(e);
            return self.end_query(QueryOutcome::Error);
        }
        for input in inputs {
            if let Err(e) = self.write_user_message(&input) {
                self.send_error(e);
            }
        }
    }

    /// A place came free for the query that waited for one.
    fn on_place(&mut self, slot: ChildSlot) {
        let conversation = self.claude_session_id.clone();
        let Some(started) = self.seat.on_place(slot, conversation.as_deref()) else {
            return; // no longer waiting: dropping the slot hands it on
        };
        match started {
            Ok((prompt, inputs)) => self.begin(&prompt, inputs),
            Err(e) => {
                self.send_error(e);
                self.end_query(QueryOutcome::Error);
            }
        }
    }

    /// The plan of a child for `options`: the policy's checks, and the principal's
    /// own CLI state directory, workspace and sandbox.
    fn spec_for(&self, options: &QueryOptions) -> Result<ChildPlan, ClientError> {
        let dir = self.state_dir.as_deref();
        crate::workspace::child_spec(self.shared, &self.principal, dir, options, &self.tools)
    }

    /// `resume` may name this server's session id: it means that session's
    /// conversation, if it is the same principal's.
    fn own_conversation(&self, options: QueryOptions) -> QueryOptions {
        let dir = self.history_dir();
        crate::workspace::own_conversation(self.shared, &self.principal, dir.as_deref(), options)
    }

    /// With a CLI state per principal: keep a warm child for this principal, built as
    /// its default query's would be (`warm.rs`), ready before its first query.
    fn warm_ahead(&self) {
        if !self.shared.warm.keeps_principals() {
            return;
        }
        if let Ok(plan) = self.spec_for(&QueryOptions::default()) {
            self.shared.warm.want(&self.principal, plan);
        }
    }

    /// Write a user message to the child for the running query.
    fn write_user_message(&mut self, prompt: &Prompt) -> Result<(), ClientError> {
        let sent = match self.seat.live() {
            Some(c) => c.child.send_line(&cli::user_message(prompt.content())),
            None => Err(Undelivered::Closed),
        };
        match sent {
            Ok(()) => {
                if let Some(q) = &mut self.query {
                    q.wrote(&prompt.text());
                }
                Ok(())
            }
            Err(Undelivered::Busy) => Err(ClientError::new(
                ErrorCode::ClaudeBusy,
                "claude is not reading its input; the message was not delivered",
            )),
            Err(Undelivered::Closed) => Err(ClientError::new(
                ErrorCode::ClaudeExited,
                "claude is exiting; the message was not delivered",
            )),
        }
    }

    fn input(&mut self, text: Prompt) {
        match &self.query {
            None => {
                return self.send_error(ClientError::new(
                    ErrorCode::NoActiveQuery,
                    "no query is running; send a query instead",
                ))
            }
            Some(q) if !q.takes_input() => {
                return self.send_error(ClientError::new(
                    ErrorCode::NoActiveQuery,
                    "the query is being interrupted; send a new query after its query_end",
                ))
            }
            Some(_) => {}
        }
        if let Err(e) = self.check_text(&text, "input") {
            return self.send_error(e);
        }
        if let Some(q) = self.seat.queued_mut() {
            // Written after the prompt, once a place comes free.
            q.inputs.push(text.clone());
            return self.send(ServerMessage::InputAcknowledged {
                text: text.content(),
            });
        }
        match self.write_user_message(&text) {
            Ok(()) => self.send(ServerMessage::InputAcknowledged {
                text: text.content(),
            }),
            // The child is exiting: its exit ends the query with the reason.
            Err(e) if e.code == ErrorCode::ClaudeExited => {}
            Err(e) => self.send_error(e),
        }
    }

    /// A prompt or input within the size limit.
    fn check_text(&self, text: &Prompt, what: &str) -> Result<(), ClientError> {
        let max = self.shared.config.max_prompt_bytes;
        if text.size() > max {
            return Err(ClientError::new(
                ErrorCode::InvalidField,
                format!("the {what} is longer than {max} bytes"),
            ));
        }
        Ok(())
    }

    fn interrupt(&mut self) {
        let Some(q) = &mut self.query else {
            return self.send_error(ClientError::new(
                ErrorCode::NoActiveQuery,
                "no query is running",
            ));
        };
        let step = q.interrupt(Instant::now());
        self.send(ServerMessage::InterruptAcknowledged {});
        if self.seat.leave_queue().is_some() {
            // It never started: nothing to stop but the wait.
            return self.end_query(QueryOutcome::Interrupted);
        }
        if step == Step::Interrupt {
            log::info!("[{}] interrupt", self.label);
            // The CLI waits for these before it can stop the turn.
            self.refuse_pending(None, Unanswered::Interrupted);
        }
        self.apply(step);
    }

    fn send_interrupt(&self) {
        if let Some(c) = self.seat.live() {
            let _ = c.child.send_line(&cli::interrupt(self.queries));
        }
    }

    /// Do what the query asked for.
    fn apply(&mut self, step: Step) {
        match step {
            Step::Continue => {}
            Step::Interrupt => self.send_interrupt(),
            Step::End(outcome) => self.end_query(outcome),
        }
    }

    /// The session's and its principal's query rates (`--rate-limit`).
    fn check_rate(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        let (n, window) = self.shared.config.rate_limit;
        let own = self.rate.check(now);
        let principal = self.shared.peer_rates.check(&self.limit_key, now);
        if own.is_zero() && principal.is_zero() {
            self.rate.record(now);
            self.shared.peer_rates.record(&self.limit_key, now);
            return Ok(());
        }
        let whose = if own >= principal {
            "this session"
        } else if crate::auth::enabled(&self.shared.config) {
            "this user"
        } else {
            "this address"
        };
        Err(ClientError::new(
            ErrorCode::RateLimited,
            format!(
                "{whose} sent its maximum of {n} queries in {} s (--rate-limit); retry in {:.1} s",
                window.as_secs_f64(),
                own.max(principal).as_secs_f64().max(0.1)
            ),
        ))
    }

    // ---- query end and the /sessions row -----------------------------------

    fn end_query(&mut self, outcome: QueryOutcome) {
        let Some(query) = self.query.take() else {
            return;
        };
        crate::metrics::query_ended(outcome, query.started().elapsed());
        if outcome == QueryOutcome::Interrupted {
            self.send(ServerMessage::QueryInterrupted {});
        }
        self.send(ServerMessage::QueryEnd { outcome });
        log::info!("[{}] query {} ended: {outcome:?}", self.label, self.queries);
        self.last_activity = Instant::now();
        // Idle now: its place may go to a query that waits for one.
        self.seat.idle(self.last_activity);
        self.active_at = now_unix();
    }

    /// The session's `/sessions` row as it is now.
    fn row(&self) -> Row {
        Row {
            state: self.state(),
            claude_session_id: self.claude_session_id.clone(),
            last_activity: self.active_at,
            queries: self.queries,
            cwd: self.cwd.clone(),
            child_pid: self.seat.pid(),
            query_running: self.query.is_some(),
            viewers: self.viewers.len(),
        }
    }

    /// Publish the row if it changed: once per turn of the loop.
    fn publish(&mut self) {
        let row = self.row();
        if row != self.listed {
            self.listed = row.clone();
            self.listing.update(|i| row.write(i));
        }
    }

    /// What the session is doing, as `/sessions` shows it.
    fn state(&self) -> SessionState {
        match (self.viewers.is_empty(), self.seat.queued(), &self.query) {
            (true, ..) => SessionState::Detached,
            (_, Some(_), _) => SessionState::Queued,
            (_, None, Some(_)) => SessionState::Running,
            (_, None, None) => SessionState::Idle,
        }
    }

    // ---- ending ------------------------------------------------------------------

    /// Messages from outside the session.
    fn on_control(&mut self, c: Control) {
        match c {
            Control::Shutdown => self.end(End::Shutdown),
            Control::Drain => {
                if self.query.is_some() {
                    log::info!(
                        "[{}] draining: the running query may finish first",
                        self.label
                    );
                }
                self.draining = true;
            }
            Control::Evict => self.evict(),
            Control::QueueMoved => {
                if let Some(position) = self.seat.queue_moved() {
                    self.send(ServerMessage::QueryQueued { position });
                }
            }
            Control::Attach(link, last_seq) => self.attach(*link, last_seq),
            Control::Reclaim if self.viewers.is_empty() && self.query.is_none() => {
                log::info!("[{}] ended to make room for a new session", self.label);
                self.end(End::GraceExpired);
            }
            Control::Reclaim => {}
        }
    }

    /// A queued query elsewhere needs this idle child's place.
    fn evict(&mut self) {
        let how = Stop::Graceful(self.shared.config.timeouts.stop_grace);
        if self.seat.evict(self.query.is_some(), how) {
            self.child_gone();
        }
    }

    /// Remember why the session ends; the first reason wins.
    fn end(&mut self, why: End) {
        if self.ending.is_none() {
            self.ending = Some(why);
        }
    }

    fn finish(mut self, end: End) {
        let why = match &end {
            End::ClientEnded => "the client ended it".to_string(),
            End::GraceExpired => "its client did not come back".into(),
            End::IdleTimeout => "idle timeout".into(),
            End::Shutdown => "server shutdown".into(),
            End::Drained => "the server drains".into(),
        };
        let draining = self.shared.is_draining();
        self.seat.leave_queue();
        log::info!("[{}] session ending: {why}", self.label);
        if let (Some(_), Some(dir)) = (self.lease_due.take(), self.history_dir()) {
            crate::conversations::release(&dir, &self.id);
        }
        let had_query = self.query.is_some();
        if let (End::Shutdown, Some(_)) = (&end, &self.query) {
            self.send_error(ClientError::new(
                ErrorCode::ShuttingDown,
                if draining {
                    "the drain timeout passed (--drain-timeout-secs); the query was interrupted"
                } else {
                    "the server is shutting down; the query was interrupted"
                },
            ));
            self.end_query(QueryOutcome::Interrupted);
            self.flush();
        }
        self.listing.update(|i| i.state = SessionState::Closing);
        for v in &mut self.viewers {
            let link = &mut v.link;
            match &end {
                // A drain's clients reconnect through the balancer to another instance.
                End::Shutdown if draining => link.close(Closing::Restarting),
                End::Drained => link.close(Closing::Restarting),
                End::Shutdown => link.close(Closing::ShuttingDown),
                End::IdleTimeout => link.close(Closing::IdleTimeout),
                End::ClientEnded => link.close(Closing::Normal),
                End::GraceExpired => {}
            }
        }
        // The client learns first: its close completes without waiting for the child's
        // stop ladder (seconds, for the real CLI). A turn still running is interrupted
        // before that, so the child does no more work meanwhile.
        self.refuse_pending(None, Unanswered::ClientGone);
        if had_query {
            self.send_interrupt();
        }
        self.query = None;
        // Each viewer's close on a thread of its own but the last (the session's):
        // one slow peer does not hold up the others'.
        let last = self.viewers.pop();
        for v in self.viewers.drain(..) {
            v.link.finish_elsewhere(Duration::from_secs(1));
        }
        if let Some(mut v) = last {
            v.link.finish(Duration::from_secs(1));
        }
        self.stop_child();
        log::info!("[{}] session closed", self.label);
        drop(self.listing);
    }
}
