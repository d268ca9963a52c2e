//! What the session does with what its child says: each stdout line of a turn
//! (translated by `cli.rs`, relayed, fed to the query's state machine), the CLI
//! conversation it learns (recorded on disk, leased while live), a failed resume
//! (forgotten), and the child's end (the query ended with the child's own words).

use std::path::PathBuf;
use std::time::Instant;

use crate::child::{ChildEvent, Stop};
use crate::cli;
use crate::cli::CliEvent;
use crate::pending::Unanswered;
use crate::protocol::{ClientError, ErrorCode, QueryOutcome, ServerMessage};
use crate::query::Step;

use super::Session;

impl Session<'_> {
    pub(super) fn on_child_event(&mut self, ev: ChildEvent) {
        match ev {
            ChildEvent::Lines(chunk) => {
                for event in cli::events(&chunk) {
                    self.on_child_line(event);
                    if self.seat.live().is_none() || self.ending.is_some() {
                        break; // the child was stopped or the session ends: the rest is moot
                    }
                }
            }
            ChildEvent::Closed => self.on_child_exit(),
        }
    }

    pub(super) fn on_child_line(&mut self, event: CliEvent<'_>) {
        match event {
            CliEvent::Forward(m) => self.send(m),
            CliEvent::Init {
                session_id,
                message,
            } => {
                self.learn_claude_session(session_id);
                self.shared.features.learn_init(&message);
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
                if let Some(c) = self.seat.live_mut() {
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
                let missing = match &message {
                    ServerMessage::ResultMessage(fields) => {
                        crate::conversations::result_not_found(fields)
                    }
                    _ => None,
                };
                if let Some(why) = missing {
                    self.send(message);
                    return self.resume_failed(why);
                }
                self.learn_claude_session(session_id);
                if let (Some(dir), Some(c), ServerMessage::ResultMessage(fields)) =
                    (&self.history_dir(), &self.claude_session_id, &message)
                {
                    crate::history::note_result(dir, c, fields);
                }
                self.send(message);
                let echoes = self.seat.live().is_some_and(|c| c.echoes);
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
            CliEvent::CancelRequest { request_id } => self.on_cancel_request(&request_id),
            CliEvent::Internal => {}
            CliEvent::Invalid(text) => self.send_error(ClientError::new(
                ErrorCode::ClaudeOutputInvalid,
                format!("claude printed a line that is not a JSON object: {text:?}"),
            )),
        }
    }

    /// Where the principal's conversations are recorded: its state directory, else
    /// the CLI's own (one principal then).
    pub(super) fn history_dir(&self) -> Option<PathBuf> {
        let own = || crate::conversations::cli_own_dir(&self.shared.child_env);
        self.state_dir.clone().or_else(own)
    }

    /// Write or refresh this session's lease (it holds a conversation), and say when
    /// it is due again.
    pub(super) fn keep_lease(&mut self, now: Instant) {
        if let Some(dir) = self.history_dir() {
            crate::conversations::hold(&dir, &self.id);
            self.lease_due = Some(now + crate::conversations::LEASE_REFRESH);
        }
    }

    pub(super) fn learn_claude_session(&mut self, id: Option<String>) {
        if id.is_some() && self.lease_due.is_none() {
            self.keep_lease(Instant::now());
        }
        if id.is_some() && id != self.claude_session_id {
            if let (Some(dir), Some(conversation)) = (&self.history_dir(), &id) {
                // So that `resume` by this session's id works after it has ended, here
                // or on another instance sharing the state directory.
                if let Err(e) =
                    crate::conversations::record_conversation(dir, &self.id, conversation)
                {
                    log::warn!("[{}] cannot record the conversation id: {e}", self.label);
                }
                let from = self
                    .claude_session_id
                    .as_ref()
                    .or(self.last_options.resume.as_ref());
                if let Some(from) = from {
                    crate::history::carry_results(dir, from, conversation);
                }
            }
            self.claude_session_id = id;
        }
    }

    pub(super) fn on_child_exit(&mut self) {
        let Some(live) = self.seat.live_mut() else {
            return;
        };
        // Its reader reports the end once the child has exited: this does not wait.
        let report = live.child.exit_report();
        let pid = live.child.pid();
        match report.status {
            Some(s) => log::info!("[{}] claude pid={pid} exited ({s})", self.label),
            None => log::info!("[{}] claude pid={pid} closed stdout", self.label),
        }
        self.stop_child();
        let Some(q) = &self.query else { return };
        let outcome = q.child_gone();
        if outcome == QueryOutcome::Error {
            let message = report.sentence("claude", " before the query finished", 1000);
            if crate::conversations::says_not_found(&message) {
                return self.resume_failed(message);
            }
            self.send_error(ClientError::new(ErrorCode::ClaudeExited, message));
        }
        self.end_query(outcome);
    }

    /// The conversation a query resumed does not exist: the query ends with
    /// `conversation_not_found`, and the session forgets it (and the child that was
    /// started for it), so its next query starts a new conversation.
    pub(super) fn resume_failed(&mut self, why: String) {
        log::info!("[{}] resume failed: {why}", self.label);
        self.stop_child();
        self.seat.forget_plan();
        self.claude_session_id = None;
        self.resumed_conversation = false;
        self.send_error(ClientError::new(
            ErrorCode::ConversationNotFound,
            format!("{why}; the next query starts a new conversation"),
        ));
        self.end_query(QueryOutcome::Error);
    }

    /// The child is gone (or going): it asks nothing any more.
    pub(super) fn child_gone(&mut self) {
        self.pending.refuse(None, Unanswered::ClientGone);
        self.settings_sent.clear();
    }

    /// Hand the session's child, if it has one, to the reaper to stop as `how` says
    /// (its place among `--max-running` goes with it, given back once it is reaped).
    /// Returns at once.
    pub(super) fn stop_child_with(&mut self, how: Stop) {
        if self.seat.stop(how) {
            self.child_gone();
        }
    }

    /// Stop the child the way that keeps its conversation (close stdin, then escalate).
    pub(super) fn stop_child(&mut self) {
        self.stop_child_with(Stop::Graceful(self.shared.config.timeouts.stop_grace));
    }
}
