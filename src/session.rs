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
//! stdout pipe.
//!
//! A query: `query` → `query_start` → the child's events translated → `query_end`.
//! Exactly one `query_end` follows every `query_start`, whatever happens.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, Receiver};
use serde_json::{json, Value};
use tungstenite::Message;

use crate::child::{Child, ChildEvent, ChildSpec, Stop, Undelivered};
use crate::limits::RateWindow;
use crate::link::{Link, LinkError, HIGH_WATER};
use crate::protocol::{
    parse_client_text, parse_client_value, Capabilities, ClientError, ClientMessage, Closing,
    ErrorCode, QueryOptions, QueryOutcome, ServerMessage,
};
use crate::registry::{now_unix, ChildSlot, Control, Listing, SessionState};
use crate::server::Shared;
use crate::spec;
use crate::translate::{self, CliEvent};

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

/// A running query. When is it over? The CLI answers messages that arrive during a
/// turn together, in one further turn, so results cannot be counted against messages.
/// Instead every message we write waits in `unacked` until the CLI echoes it back
/// (`--replay-user-messages`, merged echoes acknowledge several); a `result` with
/// nothing left unacknowledged ends the query. Should a CLI not echo at all, the
/// fallback is the turn boundary: a `result` with no message written since the turn's
/// `system/init` ends it.
struct Query {
    unacked: VecDeque<String>,
    written_since_init: usize,
    /// Set once the client interrupted: when the child must have stopped by.
    interrupt_deadline: Option<Instant>,
    /// Interrupt the next turn as soon as it starts (it answers input queued before
    /// the interrupt, which must not run either).
    reinterrupt: bool,
}

impl Query {
    /// Whether messages we wrote still wait for a turn of their own.
    fn outstanding(&self, child_echoes: bool) -> bool {
        if child_echoes {
            !self.unacked.is_empty()
        } else {
            self.written_since_init > 0
        }
    }

    /// The CLI took `text` into a turn: it is one message of ours, or several queued
    /// ones joined by newlines.
    fn acknowledge(&mut self, text: &str) {
        let mut joined = String::new();
        for n in 1..=self.unacked.len() {
            if n > 1 {
                joined.push('\n');
            }
            joined.push_str(&self.unacked[n - 1]);
            if joined == text {
                self.unacked.drain(..n);
                return;
            }
        }
        // Not an exact match (the CLI may have changed the text): take the oldest.
        self.unacked.pop_front();
    }
}

pub struct Session<'a> {
    shared: &'a Shared,
    id: String,
    label: String,
    link: Link,
    listing: Listing,
    control: Receiver<Control>,
    seq: u64,
    child: Option<Child>,
    /// The current child's events; `never()` when there is no child.
    child_events: Receiver<ChildEvent>,
    /// The spec the last child (the live one, if any) was built from, before any
    /// `--resume` was added.
    last_key: Option<ChildSpec>,
    /// The live child's place among the server's --max-running.
    child_slot: Option<ChildSlot>,
    /// Whether the current child echoes our messages (seen at least once).
    child_echoes: bool,
    child_idle_since: Instant,
    claude_session_id: Option<String>,
    query: Option<Query>,
    queries: u64,
    rate: RateWindow,
    last_activity: Instant,
    next_ping: Instant,
    ending: Option<End>,
}

impl<'a> Session<'a> {
    pub fn new(
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
            child_events: never(),
            last_key: None,
            child_slot: None,
            child_echoes: false,
            child_idle_since: now,
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
    pub fn run(mut self) {
        log::info!("[{}] session open, peer {}", self.label, self.link.peer());
        self.send(ServerMessage::ConnectionEstablished {
            session_id: self.id.clone(),
            capabilities: Capabilities {
                concurrent_input: true,
                interrupt_query: true,
                tool_definition: false,
            },
        });
        self.flush();
        // Frames that came with the handshake are already buffered: no wake-up for them.
        self.on_client_input();
        self.flush();
        let end = loop {
            if let Some(end) = self.ending.take() {
                break end;
            }
            let inbound = self.link.inbound().clone();
            let control = self.control.clone();
            let events = if self.link.pending() > HIGH_WATER {
                never() // back-pressure: the client must read first
            } else {
                self.child_events.clone()
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
                            match self.child_events.try_recv() {
                                Ok(ev) => self.on_child_event(ev),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => self.child_events = never(),
                },
                recv(control) -> c => if let Ok(Control::Shutdown) = c {
                    self.end(End::Shutdown)
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

    fn start_query(&mut self, prompt: String, options: QueryOptions) {
        let config = &self.shared.config;
        if self.query.is_some() {
            return self.send_error(ClientError::new(
                ErrorCode::QueryInProgress,
                "a query is already running; send input, or interrupt it first",
            ));
        }
        if prompt.len() > config.max_prompt_bytes {
            return self.send_error(ClientError::new(
                ErrorCode::InvalidField,
                format!(
                    "the prompt is longer than {} bytes",
                    config.max_prompt_bytes
                ),
            ));
        }
        let key = match spec::build(config, &self.shared.child_env, &options) {
            Ok(s) => s,
            Err(e) => return self.send_error(e),
        };
        if let Err(e) = self.check_rate() {
            return self.send_error(e);
        }
        // A restart stops the old child first. Its place among --max-running stays
        // taken until it is reaped, so the new child needs a place of its own.
        if self.child.is_some() && self.last_key.as_ref() != Some(&key) {
            log::info!("[{}] options changed; restarting claude", self.label);
            self.stop_child(); // between queries: no turn to interrupt
        }
        // A live child holds a slot of --max-running and keeps it.
        let slot = match self.child_slot.take() {
            Some(slot) => slot,
            None => match self.shared.registry.reserve_child(config.max_running) {
                Some(slot) => slot,
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
        log::debug!("[{}] prompt: {}", self.label, prompt.escape_debug());
        self.send(ServerMessage::QueryStart {
            prompt: prompt.clone(),
        });
        self.query = Some(Query {
            unacked: VecDeque::new(),
            written_since_init: 0,
            interrupt_deadline: None,
            reinterrupt: false,
        });
        let cwd = key.cwd.as_ref().map(|p| p.display().to_string());
        if let Err(e) = self.ensure_child(key, slot) {
            self.send_error(e);
            return self.end_query(QueryOutcome::Error);
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
        self.write_user_message(&prompt);
    }

    /// Make sure a child built from `key` is running, restarting it (resuming the
    /// conversation) when the flags differ from the current one's. The child keeps
    /// `slot` for as long as it lives.
    fn ensure_child(&mut self, key: ChildSpec, slot: ChildSlot) -> Result<(), ClientError> {
        if self.child.is_some() {
            self.child_slot = Some(slot);
            return Ok(());
        }
        // Continue this session's conversation, unless the client has just asked for
        // a specific one (new options with `resume` or `continue_conversation`), or for
        // another directory: the CLI keeps conversations per directory and cannot
        // resume one elsewhere, so a new cwd starts a new conversation.
        let new_options = self.last_key.as_ref() != Some(&key);
        let asked_for_own = spec::picks_conversation(&key) && new_options;
        let moved = self
            .last_key
            .as_ref()
            .is_some_and(|last| last.cwd != key.cwd);
        let spec = match &self.claude_session_id {
            Some(id) if !asked_for_own && !moved => spec::resuming(&key, id),
            _ => key.clone(),
        };
        let child = Child::spawn(&spec, &self.label).map_err(|e| {
            log::warn!("[{}] {e}", self.label);
            ClientError::new(ErrorCode::ClaudeSpawnFailed, e.to_string())
        })?;
        // The SDK's first message: the CLI answers control requests after it.
        let _ = child.send_line(&json!({
            "type": "control_request",
            "request_id": "claude_ws_init",
            "request": {"subtype": "initialize", "hooks": null}
        }));
        self.child_events = child.events().clone();
        self.child_echoes = false;
        self.listing.update(|i| i.child_pid = Some(child.pid()));
        self.child = Some(child);
        self.child_slot = Some(slot);
        self.last_key = Some(key);
        Ok(())
    }

    fn write_user_message(&mut self, text: &str) -> bool {
        let line = json!({
            "type": "user",
            "message": {"role": "user", "content": text},
            "parent_tool_use_id": null,
            "session_id": "default"
        });
        let sent = match &self.child {
            Some(c) => c.send_line(&line),
            None => Err(Undelivered::Closed),
        };
        match sent {
            Ok(()) => {
                if let Some(q) = &mut self.query {
                    q.unacked.push_back(text.to_string());
                    q.written_since_init += 1;
                }
                true
            }
            Err(Undelivered::Busy) => {
                self.send_error(ClientError::new(
                    ErrorCode::ClaudeBusy,
                    "claude is not reading its input; the message was not delivered",
                ));
                false
            }
            // The child is exiting; its exit ends the query with the reason.
            Err(Undelivered::Closed) => false,
        }
    }

    fn input(&mut self, text: String) {
        match &self.query {
            None => {
                return self.send_error(ClientError::new(
                    ErrorCode::NoActiveQuery,
                    "no query is running; send a query instead",
                ))
            }
            // It would only be interrupted too (see `on_result`).
            Some(q) if q.interrupt_deadline.is_some() => {
                return self.send_error(ClientError::new(
                    ErrorCode::NoActiveQuery,
                    "the query is being interrupted; send a new query after its query_end",
                ))
            }
            Some(_) => {}
        }
        if text.len() > self.shared.config.max_prompt_bytes {
            return self.send_error(ClientError::new(
                ErrorCode::InvalidField,
                format!(
                    "the input is longer than {} bytes",
                    self.shared.config.max_prompt_bytes
                ),
            ));
        }
        if self.write_user_message(&text) {
            self.send(ServerMessage::InputAcknowledged { text });
        }
    }

    fn interrupt(&mut self) {
        let Some(q) = &mut self.query else {
            return self.send_error(ClientError::new(
                ErrorCode::NoActiveQuery,
                "no query is running",
            ));
        };
        let first = q.interrupt_deadline.is_none();
        if first {
            q.interrupt_deadline = Some(Instant::now() + self.shared.config.interrupt_grace);
        }
        self.send(ServerMessage::InterruptAcknowledged {});
        if first {
            log::info!("[{}] interrupt", self.label);
            self.send_interrupt();
        }
    }

    fn send_interrupt(&self) {
        if let Some(c) = &self.child {
            let _ = c.send_line(&json!({
                "type": "control_request",
                "request_id": format!("claude_ws_interrupt_{}", self.queries),
                "request": {"subtype": "interrupt"}
            }));
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
                for event in translate::events(&chunk) {
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
                self.on_turn_start();
            }
            CliEvent::Replay { text } => {
                self.child_echoes = true;
                if let Some(q) = &mut self.query {
                    q.acknowledge(&text);
                }
            }
            CliEvent::Result {
                session_id,
                is_error,
                message,
            } => {
                self.learn_claude_session(session_id);
                self.send(message);
                self.on_result(is_error);
            }
            CliEvent::ControlRequest {
                request_id,
                subtype,
            } => self.refuse_control_request(request_id, &subtype),
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

    fn on_turn_start(&mut self) {
        let Some(q) = &mut self.query else { return };
        q.written_since_init = 0;
        if q.reinterrupt {
            q.reinterrupt = false;
            q.interrupt_deadline = Some(Instant::now() + self.shared.config.interrupt_grace);
            log::info!(
                "[{}] interrupting the turn that answers queued input",
                self.label
            );
            self.send_interrupt();
        }
    }

    fn on_result(&mut self, is_error: bool) {
        let echoes = self.child_echoes;
        let Some(q) = &mut self.query else {
            return; // a result after the query ended
        };
        let outstanding = q.outstanding(echoes);
        if q.interrupt_deadline.is_some() {
            if outstanding {
                // Input queued before the interrupt starts another turn: stop that too.
                q.reinterrupt = true;
                q.interrupt_deadline = Some(Instant::now() + self.shared.config.interrupt_grace);
                return;
            }
            return self.end_query(QueryOutcome::Interrupted);
        }
        if !outstanding {
            self.end_query(if is_error {
                QueryOutcome::Failed
            } else {
                QueryOutcome::Completed
            });
        }
    }

    /// The CLI asked something this server does not answer (it only asks when started
    /// with flags the server never passes); say so, so it does not wait forever.
    fn refuse_control_request(&mut self, request_id: Value, subtype: &str) {
        log::warn!(
            "[{}] claude sent an unsupported control request {:?}",
            self.label,
            subtype.escape_debug().to_string()
        );
        if let Some(c) = &self.child {
            let _ = c.send_line(&json!({
                "type": "control_response",
                "response": {
                    "subtype": "error",
                    "request_id": request_id,
                    "error": format!("claude-ws does not support control request {subtype:?}")
                }
            }));
        }
    }

    /// Detach the current child from the session (its events, its row in /sessions)
    /// and hand it, with its --max-running slot, to the reaper to stop as `how` says.
    /// Returns at once.
    fn stop_child_with(&mut self, how: Stop) {
        self.child_events = never();
        let slot = self.child_slot.take();
        if let Some(child) = self.child.take() {
            self.listing.update(|i| i.child_pid = None);
            self.shared.reaper.stop(child, how, slot, &self.label);
        }
    }

    fn on_child_exit(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        // Its reader reports the end once the child has exited: this does not wait.
        let status = child.try_wait();
        let tail = child.stderr_tail();
        match status {
            Some(s) => log::info!("[{}] claude pid={} exited ({s})", self.label, child.pid()),
            None => log::info!("[{}] claude pid={} closed stdout", self.label, child.pid()),
        }
        self.stop_child_with(Stop::Graceful(self.shared.config.stop_grace));
        let Some(q) = &self.query else { return };
        if q.interrupt_deadline.is_some() {
            return self.end_query(QueryOutcome::Interrupted);
        }
        let mut message = match status {
            Some(status) => format!("claude exited ({status}) before the query finished"),
            None => "claude closed its output before the query finished".to_string(),
        };
        if !tail.is_empty() {
            message.push_str("; its stderr ends with: ");
            message.push_str(last_chars(&tail, 1000));
        }
        self.send_error(ClientError::new(ErrorCode::ClaudeExited, message));
        self.end_query(QueryOutcome::Error);
    }

    /// Stop the current child gracefully (close stdin, then escalate), off this thread.
    fn stop_child(&mut self) {
        self.stop_child_with(Stop::Graceful(self.shared.config.stop_grace));
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
        self.child_idle_since = self.last_activity;
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
        if let Some(d) = self.query.as_ref().and_then(|q| q.interrupt_deadline) {
            next = next.min(d);
        }
        if let (Some(idle), Some(_), None) = (config.child_idle, &self.child, &self.query) {
            next = next.min(self.child_idle_since + idle);
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
        let overdue = self
            .query
            .as_ref()
            .and_then(|q| q.interrupt_deadline)
            .is_some_and(|d| now >= d);
        if overdue {
            log::warn!(
                "[{}] interrupt not honoured within {:?}; ending claude's process group",
                self.label,
                config.interrupt_grace
            );
            self.stop_child_with(Stop::Now);
            self.end_query(QueryOutcome::Interrupted);
        }
        if let (Some(idle), true, true) = (
            config.child_idle,
            self.child.is_some(),
            self.query.is_none(),
        ) {
            if now >= self.child_idle_since + idle {
                log::info!(
                    "[{}] claude idle for {idle:?}; stopping it until the next query",
                    self.label
                );
                self.stop_child();
            }
        }
        if self.link.stalled_for() >= config.stall_timeout {
            log::warn!(
                "[{}] client read nothing for {:?} with {} bytes waiting; disconnecting",
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
