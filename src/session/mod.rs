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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, Receiver, Sender};
use tungstenite::Message;

use crate::child::{Child, ChildEvent, ChildSpec, Undelivered};
use crate::cli;
use crate::cli::CliEvent;
use crate::handshake::Admission;
use crate::limits::RateWindow;
use crate::link::{Link, LinkError, HIGH_WATER};
use crate::pending::{Pending, Unanswered};
use crate::protocol::{
    parse_client_text, parse_client_value, Capabilities, ClientError, ClientMessage, Closing,
    ErrorCode, Prompt, QueryOptions, QueryOutcome, ServerMessage, Setting,
};
mod asks;

use asks::{with_settings, MAX_REGISTRY_REQUESTS};

use crate::query::{Query, Step};
use crate::registry::{
    new_session_id, now_unix, ChildSlot, Control, Listing, SessionInfo, SessionState,
};
use crate::spec;
use crate::state::Shared;
use crate::tool_registry;
use crate::tools::Tools;

/// Child stdout chunks (each up to 256 KiB of lines) handled in one go before the loop
/// looks at the client again.
const EVENT_BATCH: usize = 4;

/// Why a session ended.
#[derive(Debug)]
enum End {
    ClientGone(String),
    Protocol(String),
    HeartbeatTimeout,
    IdleTimeout,
    Stalled,
    Shutdown,
}

/// The session's live `claude` child and what belongs to it alone. Held as one
/// `Option`, so nothing about a child outlives it by accident.
struct LiveChild {
    child: Child,
    /// Its place among the server's `--max-running`, given back when it is gone.
    slot: ChildSlot,
    /// Whether it echoes our messages (seen at least once); see `query.rs`.
    echoes: bool,
    /// Since when it has had no query (for `--child-idle-secs`).
    idle_since: Instant,
}

pub struct Session<'a> {
    shared: &'a Shared,
    id: String,
    label: String,
    link: Link,
    listing: Listing,
    control: Receiver<Control>,
    seq: u64,
    child: Option<LiveChild>,
    /// The spec the last child was built from (before any `--resume` was added). It
    /// outlives that child: the next query's options are compared with it to decide
    /// whether the conversation goes on.
    last_spec: Option<ChildSpec>,
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
}

/// Set up a session for a connection that passed the handshake, list it, and run it
/// on this thread until it ends.
pub fn serve(shared: &Shared, link: Link, peer: SocketAddr, admission: Admission) {
    let id = new_session_id();
    let (control_tx, control_rx) = bounded(4);
    let now = now_unix();
    let listing = shared.registry.list(
        SessionInfo {
            session_id: id.clone(),
            claude_session_id: None,
            state: SessionState::Idle,
            created_at: now,
            last_activity: now,
            queries: 0,
            peer: peer.to_string(),
            cwd: None,
            user: admission.user.clone(),
            child_pid: None,
        },
        control_tx.clone(),
    );
    // Listed after the shutdown broadcast went out: tell it ourselves.
    if shared.is_shutting_down() {
        let _ = control_tx.try_send(Control::Shutdown);
    }
    Session::new(shared, id, link, listing, control_rx).run();
    drop(admission);
}

impl<'a> Session<'a> {
    fn new(
        shared: &'a Shared,
        id: String,
        link: Link,
        listing: Listing,
        control: Receiver<Control>,
    ) -> Self {
        let now = Instant::now();
        let (n, window) = shared.config.rate_limit;
        Session {
            label: id.chars().take(8).collect(),
            id,
            shared,
            link,
            listing,
            control,
            seq: 0,
            child: None,
            last_spec: None,
            last_options: QueryOptions::default(),
            settings: QueryOptions::default(),
            settings_sent: Vec::new(),
            tools: Tools::default(),
            pending: Pending::default(),
            registry: bounded(MAX_REGISTRY_REQUESTS),
            registry_requests: 0,
            claude_session_id: None,
            query: None,
            queries: 0,
            rate: RateWindow::new(n, window),
            last_activity: now,
            next_ping: now + shared.config.ping_interval,
            ending: None,
        }
    }

    /// Run the session until its client goes, it times out or the server shuts down;
    /// then stop its child and close the connection.
    fn run(mut self) {
        log::info!("[{}] session open, peer {}", self.label, self.link.peer());
        self.send(ServerMessage::ConnectionEstablished {
            session_id: self.id.clone(),
            capabilities: Capabilities {
                concurrent_input: true,
                interrupt_query: true,
                tool_definition: true,
                permission_prompts: true,
                live_settings: true,
                image_input: true,
            },
        });
        self.flush();
        // Frames that came with the handshake are already buffered: no wake-up for them.
        self.on_client_input();
        self.flush();
        // The handshake ran deeper than an idle session ever goes; give those stack
        // pages back (an idle session is mostly its stack: see the idle-scale benchmark).
        crate::sys::release_stack_below_caller();
        let end = loop {
            if let Some(end) = self.ending.take() {
                break end;
            }
            // Clones for this turn of the loop only: a clone kept longer would keep a
            // stopped child's reader from seeing that nobody listens any more.
            let inbound = self.link.inbound().clone();
            let control = self.control.clone();
            let registry = self.registry.1.clone();
            let events = match &self.child {
                Some(c) if self.link.pending() <= HIGH_WATER => c.child.events().clone(),
                // No child, or back-pressure: the client must read first.
                _ => never(),
            };
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            select! {
                recv(inbound) -> m => match m {
                    Ok(()) => self.on_client_input(),
                    Err(_) => self.end(End::ClientGone("connection closed".into())),
                },
                recv(events) -> ev => match ev {
                    Ok(ev) => {
                        self.on_child_event(ev);
                        for _ in 1..EVENT_BATCH {
                            if self.link.pending() > HIGH_WATER || self.ending.is_some() {
                                break;
                            }
                            let Some(c) = &self.child else { break };
                            match c.child.events().try_recv() {
                                Ok(ev) => self.on_child_event(ev),
                                Err(_) => break,
                            }
                        }
                    }
                    // The reader thread ended without saying so: treat it as an exit.
                    Err(_) => self.on_child_exit(),
                },
                recv(control) -> c => if let Ok(Control::Shutdown) = c {
                    self.end(End::Shutdown)
                },
                recv(registry) -> r => if let Ok(r) = r {
                    self.on_registry_reply(r)
                },
                default(wait) => {}
            }
            self.on_timers(Instant::now());
            self.flush();
            if self.query.is_none() {
                self.link.release_buffers(); // between queries a session stays small
            }
        };
        self.finish(end);
    }

    // ---- client side ------------------------------------------------------------

    fn on_client_input(&mut self) {
        let mut messages = Vec::new();
        let result = self.link.receive(|_, m| messages.push(m));
        if !messages.is_empty() {
            self.listing.update(|i| i.last_activity = now_unix());
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
            Err(LinkError::Gone(why)) => self.end(End::ClientGone(why)),
            Err(LinkError::Protocol(why)) => self.end(End::Protocol(why)),
        }
    }

    fn dispatch(&mut self, msg: ClientMessage, top_level: bool) {
        match msg {
            ClientMessage::Query { prompt, options } => self.start_query(prompt, options),
            ClientMessage::Interrupt => self.interrupt(),
            ClientMessage::Input { text } => self.input(text),
            ClientMessage::Ping => self.send(ServerMessage::Pong {}),
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
        if self.query.is_some() {
            return self.send_error(ClientError::new(
                ErrorCode::QueryInProgress,
                "a query is already running; send input, or interrupt it first",
            ));
        }
        if let Err(e) = self.check_text(&prompt, "prompt") {
            return self.send_error(e);
        }
        let options = with_settings(options, &self.settings);
        let spec = match spec::build(config, &self.shared.child_env, &options, &self.tools) {
            Ok(s) => s,
            Err(e) => return self.send_error(e),
        };
        if let Err(e) = self.check_rate() {
            return self.send_error(e);
        }
        // A live child holds a place among --max-running; a restart passes it on.
        let slot = match self.child.take() {
            Some(live) if self.last_spec.as_ref() == Some(&spec) => {
                self.child = Some(live);
                None
            }
            Some(live) => {
                log::info!("[{}] options changed; restarting claude", self.label);
                Some(self.retire_child(live)) // between queries: no turn to interrupt
            }
            None => None,
        };
        let slot = match slot {
            Some(slot) => Some(slot),
            None if self.child.is_some() => None,
            None => match self.shared.registry.reserve_child(config.max_running) {
                Some(slot) => Some(slot),
                None => {
                    return self.send_error(ClientError::new(
                        ErrorCode::ServerBusy,
                        format!(
                            "the server runs its maximum of {} claude processes; try again shortly",
                            config.max_running
                        ),
                    ))
                }
            },
        };
        self.queries += 1;
        log::info!("[{}] query {} started", self.label, self.queries);
        log::debug!("[{}] prompt: {}", self.label, prompt.text().escape_debug());
        self.send(ServerMessage::QueryStart {
            prompt: prompt.content(),
        });
        self.query = Some(Query::new(config.interrupt_grace));
        let cwd = spec.cwd.as_ref().map(|p| p.display().to_string());
        self.last_options = options;
        if let Some(slot) = slot {
            if let Err(e) = self.start_child(spec, slot) {
                self.send_error(e);
                return self.end_query(QueryOutcome::Error);
            }
        }
        let queries = self.queries;
        self.listing.update(|i| {
            i.state = SessionState::Running;
            i.queries = queries;
            i.last_activity = now_unix();
            if cwd.is_some() {
                i.cwd = cwd;
            }
        });
        if let Err(e) = self.write_user_message(&prompt) {
            // Nothing reached the child, so nothing will end this query but us.
            self.send_error(e);
            self.end_query(QueryOutcome::Error);
        }
    }

    /// Start a child built from `spec`, holding `slot` for as long as it lives.
    fn start_child(&mut self, spec: ChildSpec, slot: ChildSlot) -> Result<(), ClientError> {
        // Continue this session's conversation, unless the client has just asked for
        // a specific one (new options with `resume` or `continue_conversation`), or for
        // another directory: the CLI keeps conversations per directory and cannot
        // resume one elsewhere, so a new cwd starts a new conversation.
        let new_options = self.last_spec.as_ref() != Some(&spec);
        let asked_for_own = spec::picks_conversation(&spec) && new_options;
        let moved = self
            .last_spec
            .as_ref()
            .is_some_and(|last| last.cwd != spec.cwd);
        let argv = match &self.claude_session_id {
            Some(id) if !asked_for_own && !moved => spec::resuming(&spec, id),
            _ => spec.clone(),
        };
        let child = Child::spawn(&argv, &self.label).map_err(|e| {
            log::warn!("[{}] {e}", self.label);
            ClientError::new(ErrorCode::ClaudeSpawnFailed, e.to_string())
        })?;
        let _ = child.send_line(&cli::initialize(spec::has_client_tools(&spec)));
        self.listing.update(|i| i.child_pid = Some(child.pid()));
        self.child = Some(LiveChild {
            child,
            slot,
            echoes: false,
            idle_since: Instant::now(),
        });
        self.last_spec = Some(spec);
        Ok(())
    }

    /// Write a user message to the child for the running query.
    fn write_user_message(&mut self, prompt: &Prompt) -> Result<(), ClientError> {
        let sent = match &self.child {
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
        if text.len() > max {
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
        if step == Step::Interrupt {
            log::info!("[{}] interrupt", self.label);
            // The CLI waits for these before it can stop the turn.
            self.refuse_pending(None, Unanswered::Interrupted);
        }
        self.apply(step);
    }

    fn send_interrupt(&self) {
        if let Some(c) = &self.child {
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

    fn check_rate(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        let peer_wait = self.shared.peer_rates.check(self.link.peer_ip(), now);
        let wait = self.rate.check(now).max(peer_wait);
        if wait.is_zero() {
            self.rate.record(now);
            self.shared.peer_rates.record(self.link.peer_ip(), now);
            Ok(())
        } else {
            Err(ClientError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many queries; retry in {:.1} s",
                    wait.as_secs_f64().max(0.1)
                ),
            ))
        }
    }

    // ---- child side -------------------------------------------------------------

    fn on_child_event(&mut self, ev: ChildEvent) {
        match ev {
            ChildEvent::Lines(chunk) => {
                for event in cli::events(&chunk) {
                    self.on_child_line(event);
                    if self.child.is_none() || self.ending.is_some() {
                        break; // the child was stopped or the session ends: the rest is moot
                    }
                }
            }
            ChildEvent::Closed => self.on_child_exit(),
        }
    }

    fn on_child_line(&mut self, event: CliEvent<'_>) {
        match event {
            CliEvent::Forward(m) => self.send(m),
            CliEvent::Init {
                session_id,
                message,
            } => {
                self.learn_claude_session(session_id);
                self.send(message);
                if let Some(q) = &mut self.query {
                    let step = q.turn_started(Instant::now());
                    if step == Step::Interrupt {
                        log::info!(
                            "[{}] interrupting the turn that answers queued input",
                            self.label
                        );
                    }
                    self.apply(step);
                }
            }
            CliEvent::Replay { text } => {
                if let Some(c) = &mut self.child {
                    c.echoes = true;
                }
                if let Some(q) = &mut self.query {
                    q.echoed(&text);
                }
            }
            CliEvent::Result {
                session_id,
                is_error,
                message,
            } => {
                self.learn_claude_session(session_id);
                self.send(message);
                let echoes = self.child.as_ref().is_some_and(|c| c.echoes);
                if let Some(q) = &mut self.query {
                    let step = q.result(is_error, echoes, Instant::now());
                    self.apply(step);
                }
            }
            CliEvent::ControlRequest {
                request_id,
                request,
            } => self.on_control_request(request_id, request),
            CliEvent::ControlResponse { request_id, error } => {
                self.on_control_response(&request_id, error)
            }
            CliEvent::Internal => {}
            CliEvent::Invalid(text) => self.send_error(ClientError::new(
                ErrorCode::ClaudeOutputInvalid,
                format!("claude printed a line that is not a JSON object: {text:?}"),
            )),
        }
    }

    fn learn_claude_session(&mut self, id: Option<String>) {
        if id.is_some() && id != self.claude_session_id {
            self.claude_session_id = id.clone();
            self.listing.update(|i| i.claude_session_id = id);
        }
    }

    fn on_child_exit(&mut self) {
        let Some(live) = self.child.take() else {
            return;
        };
        self.forget_child_questions();
        self.listing.update(|i| i.child_pid = None);
        let LiveChild {
            mut child, slot, ..
        } = live;
        let ending = child.stop(self.shared.config.stop_grace, &self.label);
        drop(slot);
        let tail = child.stderr_tail();
        log::info!("[{}] claude exited: {ending:?}", self.label);
        let Some(q) = &self.query else { return };
        let outcome = q.child_gone();
        if outcome == QueryOutcome::Error {
            let status = ending.status();
            let mut message = format!("claude exited ({status}) before the query finished");
            if !tail.is_empty() {
                message.push_str("; its stderr ends with: ");
                message.push_str(last_chars(&tail, 1000));
            }
            self.send_error(ClientError::new(ErrorCode::ClaudeExited, message));
        }
        self.end_query(outcome);
    }

    /// Stop a child the way that keeps its conversation (close stdin, then escalate),
    /// and hand back its place among `--max-running`.
    fn retire_child(&mut self, live: LiveChild) -> ChildSlot {
        self.forget_child_questions();
        self.listing.update(|i| i.child_pid = None);
        let LiveChild {
            mut child, slot, ..
        } = live;
        child.stop(self.shared.config.stop_grace, &self.label);
        slot
    }

    /// A child that is gone asks nothing any more.
    fn forget_child_questions(&mut self) {
        self.pending.refuse(None, Unanswered::ClientGone);
        self.settings_sent.clear();
    }

    /// Stop the session's child, if it has one, and give its place back.
    fn stop_child(&mut self) {
        if let Some(live) = self.child.take() {
            drop(self.retire_child(live));
        }
    }

    fn end_query(&mut self, outcome: QueryOutcome) {
        if self.query.take().is_none() {
            return;
        }
        if outcome == QueryOutcome::Interrupted {
            self.send(ServerMessage::QueryInterrupted {});
        }
        self.send(ServerMessage::QueryEnd { outcome });
        log::info!("[{}] query {} ended: {outcome:?}", self.label, self.queries);
        self.last_activity = Instant::now();
        if let Some(c) = &mut self.child {
            c.idle_since = self.last_activity;
        }
        self.listing.update(|i| {
            i.state = SessionState::Idle;
            i.last_activity = now_unix();
        });
    }

    // ---- timers -----------------------------------------------------------------

    fn next_deadline(&self) -> Instant {
        let config = &self.shared.config;
        let mut next = self.next_ping;
        if self.query.is_none() {
            next = next.min(self.last_activity + config.session_timeout);
        }
        if let Some(d) = self.query.as_ref().and_then(Query::deadline) {
            next = next.min(d);
        }
        if let Some(d) = self.pending.deadline() {
            next = next.min(d);
        }
        if let (Some(idle), Some(c), None) = (config.child_idle, &self.child, &self.query) {
            next = next.min(c.idle_since + idle);
        }
        if self.link.pending() > 0 {
            // (Room in the socket wakes the session through `inbound`; this is the
            // deadline of a client that reads nothing.)
            let left = config.stall_timeout.saturating_sub(self.link.stalled_for());
            next = next.min(Instant::now() + left);
        }
        next
    }

    fn on_timers(&mut self, now: Instant) {
        let config = &self.shared.config;
        if now >= self.next_ping {
            if now.duration_since(self.link.last_heard) > config.ping_interval * 2 {
                return self.end(End::HeartbeatTimeout);
            }
            if self.link.ping().is_err() {
                return self.end(End::ClientGone("ping failed".into()));
            }
            self.next_ping = now + config.ping_interval;
        }
        if self.query.is_none() && now >= self.last_activity + config.session_timeout {
            return self.end(End::IdleTimeout);
        }
        if self.pending.deadline().is_some_and(|d| now >= d) {
            self.refuse_pending(Some(now), Unanswered::TimedOut);
        }
        if self.query.as_ref().is_some_and(|q| q.overdue(now)) {
            log::warn!(
                "[{}] interrupt not honoured within {:?}; ending claude's process group",
                self.label,
                config.interrupt_grace
            );
            if let Some(live) = self.child.take() {
                self.forget_child_questions();
                self.listing.update(|i| i.child_pid = None);
                let LiveChild { mut child, .. } = live;
                child.kill(&self.label);
            }
            self.end_query(QueryOutcome::Interrupted);
        }
        let idle_for = self
            .child
            .as_ref()
            .filter(|_| self.query.is_none())
            .map(|c| now.saturating_duration_since(c.idle_since));
        if let (Some(idle), Some(idle_for)) = (config.child_idle, idle_for) {
            if idle_for >= idle {
                log::info!(
                    "[{}] claude idle for {idle:?}; stopping it until the next query",
                    self.label
                );
                self.stop_child();
            }
        }
        if self.link.stalled_for() >= config.stall_timeout {
            log::warn!(
                "[{}] client kept its backlog above the high-water mark for {:?} ({} bytes waiting); disconnecting",
                self.label,
                config.stall_timeout,
                self.link.pending()
            );
            self.end(End::Stalled);
        }
    }

    // ---- output and ending ------------------------------------------------------

    fn send(&mut self, msg: ServerMessage<'_>) {
        self.seq += 1;
        let seq = self.seq;
        if let Err(LinkError::Gone(why) | LinkError::Protocol(why)) =
            self.link.queue_text_with(|out| msg.write_frame(seq, out))
        {
            self.end(End::ClientGone(why));
        }
    }

    fn send_error(&mut self, e: ClientError) {
        log::debug!("[{}] error to client: {e}", self.label);
        self.send(e.into());
    }

    fn flush(&mut self) {
        if let Err(LinkError::Gone(why) | LinkError::Protocol(why)) = self.link.flush() {
            self.end(End::ClientGone(why));
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
            End::ClientGone(why) => format!("client gone ({why})"),
            End::Protocol(why) => format!("protocol error ({why})"),
            End::HeartbeatTimeout => "no answer to pings".into(),
            End::IdleTimeout => "idle timeout".into(),
            End::Stalled => "client stopped reading".into(),
            End::Shutdown => "server shutdown".into(),
        };
        log::info!("[{}] session ending: {why}", self.label);
        let had_query = self.query.is_some();
        if let (End::Shutdown, Some(_)) = (&end, &self.query) {
            self.send_error(ClientError::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down; the query was interrupted",
            ));
            self.end_query(QueryOutcome::Interrupted);
            self.flush();
        }
        self.listing.update(|i| i.state = SessionState::Closing);
        match &end {
            End::Shutdown => self.link.close(Closing::ShuttingDown),
            End::IdleTimeout => self.link.close(Closing::IdleTimeout),
            End::Stalled => self.link.close(Closing::NotReading),
            End::ClientGone(_) | End::Protocol(_) | End::HeartbeatTimeout => {}
        }
        // The client learns first: its close completes without waiting for the child's
        // stop ladder (seconds, for the real CLI). A turn still running is interrupted
        // before that, so the child does no more work meanwhile.
        self.refuse_pending(None, Unanswered::ClientGone);
        if had_query {
            self.send_interrupt();
        }
        self.query = None;
        self.link.finish(Duration::from_secs(1));
        self.stop_child();
        log::info!("[{}] session closed", self.label);
        drop(self.listing);
    }
}

fn last_chars(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    match s.char_indices().nth(count.saturating_sub(n)) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}
