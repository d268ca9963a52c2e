//! One query's state machine: when is it over, and how did it end?
//!
//! A query is `query` → `query_start` → the child's events → exactly one `query_end`.
//! This file decides the last step and nothing else: the session feeds it what happens
//! (a message written to the child, the CLI echoing one back, a turn starting, a
//! `result`, an interrupt, the child exiting, the clock) and it answers with what to do.
//! It does no I/O, so every path to `query_end` is unit-tested below.
//!
//! Why not count results? The CLI answers messages that arrive during a turn together,
//! in one further turn, so results cannot be counted against messages. Instead every
//! message written waits in `unacked` until the CLI echoes it back
//! (`--replay-user-messages`; merged echoes acknowledge several); a `result` with
//! nothing left unacknowledged ends the query. Should a CLI not echo at all, the
//! fallback is the turn boundary: a `result` with no message written since the turn's
//! `system/init` ends it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::QueryOutcome;

/// What the session must do after telling the query something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the query goes on.
    Continue,
    /// Send the CLI an `interrupt` control request.
    Interrupt,
    /// The query is over: send `query_end` with this outcome.
    End(QueryOutcome),
}

/// A running query.
#[derive(Debug)]
pub struct Query {
    /// Messages written to the child and not yet taken into a turn.
    unacked: VecDeque<String>,
    written_since_init: usize,
    /// Set once the client interrupted: when the child must have stopped by.
    interrupt_deadline: Option<Instant>,
    /// Interrupt the next turn as soon as it starts (it answers input queued before
    /// the interrupt, which must not run either).
    reinterrupt: bool,
    /// How long the CLI gets to honour an interrupt.
    grace: Duration,
    /// When it started (its `query_start`).
    started: Instant,
}

impl Query {
    /// A query whose interrupts must be honoured within `grace`.
    pub fn new(grace: Duration) -> Query {
        Query {
            unacked: VecDeque::new(),
            written_since_init: 0,
            interrupt_deadline: None,
            reinterrupt: false,
            grace,
            started: Instant::now(),
        }
    }

    /// When it started (its `query_start`).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A user message reached the child's stdin queue.
    pub fn wrote(&mut self, text: &str) {
        self.unacked.push_back(text.to_string());
        self.written_since_init += 1;
    }

    /// Whether more `input` may be sent: not once the query is being interrupted (it
    /// would only be interrupted too).
    pub fn takes_input(&self) -> bool {
        self.interrupt_deadline.is_none()
    }

    /// The client asked to interrupt. `Interrupt` the first time; a repeated request
    /// changes nothing (the first is being honoured).
    pub fn interrupt(&mut self, now: Instant) -> Step {
        if self.interrupt_deadline.is_some() {
            return Step::Continue;
        }
        self.interrupt_deadline = Some(now + self.grace);
        Step::Interrupt
    }

    /// The CLI took `text` into a turn (its echo): one message of ours, or several
    /// queued ones joined by newlines.
    pub fn echoed(&mut self, text: &str) {
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

    /// A turn started (`system/init`).
    pub fn turn_started(&mut self, now: Instant) -> Step {
        self.written_since_init = 0;
        if self.reinterrupt {
            self.reinterrupt = false;
            self.interrupt_deadline = Some(now + self.grace);
            return Step::Interrupt;
        }
        Step::Continue
    }

    /// A turn ended with a `result`. `child_echoes`: whether this child has echoed a
    /// message of ours at least once (else turn boundaries are the fallback).
    pub fn result(&mut self, is_error: bool, child_echoes: bool, now: Instant) -> Step {
        let outstanding = if child_echoes {
            !self.unacked.is_empty()
        } else {
            self.written_since_init > 0
        };
        if self.interrupt_deadline.is_some() {
            if outstanding {
                // Input queued before the interrupt starts another turn: stop that too.
                self.reinterrupt = true;
                self.interrupt_deadline = Some(now + self.grace);
                return Step::Continue;
            }
            return Step::End(QueryOutcome::Interrupted);
        }
        match (outstanding, is_error) {
            (true, _) => Step::Continue,
            (false, true) => Step::End(QueryOutcome::Failed),
            (false, false) => Step::End(QueryOutcome::Completed),
        }
    }

    /// The child exited (or was stopped) while the query ran: how the query ends. An
    /// interrupted query ends `interrupted`; any other, `error` (the session says why).
    pub fn child_gone(&self) -> QueryOutcome {
        if self.interrupt_deadline.is_some() {
            QueryOutcome::Interrupted
        } else {
            QueryOutcome::Error
        }
    }

    /// When the CLI must have honoured the interrupt by, if one was asked for.
    pub fn deadline(&self) -> Option<Instant> {
        self.interrupt_deadline
    }

    /// Whether the interrupt was not honoured in time: the session ends the child's
    /// process group and the query ends `interrupted`.
    pub fn overdue(&self, now: Instant) -> bool {
        self.interrupt_deadline.is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use QueryOutcome::*;

    const GRACE: Duration = Duration::from_secs(2);

    fn started(texts: &[&str]) -> (Query, Instant) {
        let now = Instant::now();
        let mut q = Query::new(GRACE);
        for t in texts {
            q.wrote(t);
        }
        assert_eq!(q.turn_started(now), Step::Continue);
        (q, now)
    }

    #[test]
    fn a_result_after_the_echo_completes() {
        let (mut q, now) = started(&["hi"]);
        q.echoed("hi");
        assert_eq!(q.result(false, true, now), Step::End(Completed));
    }

    #[test]
    fn an_error_result_fails() {
        let (mut q, now) = started(&["hi"]);
        q.echoed("hi");
        assert_eq!(q.result(true, true, now), Step::End(Failed));
    }

    #[test]
    fn input_during_a_turn_waits_for_its_own_result() {
        let (mut q, now) = started(&["first"]);
        q.echoed("first");
        q.wrote("second");
        assert_eq!(q.result(false, true, now), Step::Continue);
        assert_eq!(q.turn_started(now), Step::Continue);
        q.echoed("second");
        assert_eq!(q.result(false, true, now), Step::End(Completed));
    }

    #[test]
    fn merged_echoes_acknowledge_several_messages() {
        let (mut q, now) = started(&["a"]);
        q.wrote("b");
        q.wrote("c");
        q.echoed("a\nb\nc");
        assert_eq!(q.result(false, true, now), Step::End(Completed));
    }

    #[test]
    fn an_unrecognised_echo_takes_the_oldest() {
        let (mut q, now) = started(&["a"]);
        q.wrote("b");
        q.echoed("something else");
        assert_eq!(q.result(false, true, now), Step::Continue);
        q.echoed("b");
        assert_eq!(q.result(false, true, now), Step::End(Completed));
    }

    #[test]
    fn without_echoes_the_turn_boundary_decides() {
        let (mut q, now) = started(&["a"]);
        // Written after the turn started: another turn answers it.
        q.wrote("b");
        assert_eq!(q.result(false, false, now), Step::Continue);
        assert_eq!(q.turn_started(now), Step::Continue);
        assert_eq!(q.result(false, false, now), Step::End(Completed));
    }

    #[test]
    fn an_interrupt_is_sent_once_and_ends_interrupted() {
        let (mut q, now) = started(&["a"]);
        assert_eq!(q.interrupt(now), Step::Interrupt);
        assert_eq!(q.interrupt(now), Step::Continue);
        assert!(!q.takes_input());
        q.echoed("a");
        // The CLI reports an interrupted turn as an error result.
        assert_eq!(q.result(true, true, now), Step::End(Interrupted));
    }

    #[test]
    fn queued_input_after_an_interrupt_is_interrupted_too() {
        let (mut q, now) = started(&["a"]);
        q.wrote("b");
        q.echoed("a");
        assert_eq!(q.interrupt(now), Step::Interrupt);
        assert_eq!(q.result(true, true, now), Step::Continue);
        // The turn answering "b" is interrupted as soon as it starts.
        assert_eq!(q.turn_started(now), Step::Interrupt);
        q.echoed("b");
        assert_eq!(q.result(true, true, now), Step::End(Interrupted));
    }

    #[test]
    fn an_interrupt_not_honoured_is_overdue_after_the_grace() {
        let (mut q, now) = started(&["a"]);
        assert!(!q.overdue(now + GRACE * 10));
        assert_eq!(q.interrupt(now), Step::Interrupt);
        assert_eq!(q.deadline(), Some(now + GRACE));
        assert!(!q.overdue(now));
        assert!(q.overdue(now + GRACE));
        assert_eq!(q.child_gone(), Interrupted);
    }

    #[test]
    fn a_child_that_dies_ends_the_query_with_an_error() {
        let (q, _) = started(&["a"]);
        assert_eq!(q.child_gone(), Error);
    }
}
