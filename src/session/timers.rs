//! The session's clock: the one deadline its loop waits for (the next ping, a lease
//! refresh, the idle and grace timeouts, a query's interrupt grace, a question's
//! timeout, the place queue, an idle child, a stalled viewer), and what is due when it
//! passes.

use std::time::Instant;

use crate::child::Stop;
use crate::pending::Unanswered;
use crate::protocol::{ClientError, ErrorCode, QueryOutcome};
use crate::query::Query;

use super::{End, Lost, Session};

impl Session<'_> {
    pub(super) fn next_deadline(&self) -> Instant {
        let config = &self.shared.config;
        let mut next = self.next_ping;
        if let Some(d) = self.lease_due {
            next = next.min(d);
        }
        if self.query.is_none() {
            next = next.min(self.last_activity + config.timeouts.session_timeout);
        }
        if let Some(d) = self.query.as_ref().and_then(Query::deadline) {
            next = next.min(d);
        }
        if let Some(d) = self.pending.deadline() {
            next = next.min(d);
        }
        if let (Some(d), None) = (
            self.seat.idle_deadline(config.timeouts.child_idle),
            &self.query,
        ) {
            next = next.min(d);
        }
        if let Some(q) = self.seat.queued() {
            next = next.min(q.deadline);
        }
        if let Some(d) = self.detached_until {
            next = next.min(d);
        }
        let stall = config.timeouts.stall_timeout;
        for d in self
            .viewers
            .iter()
            .filter_map(|v| v.link.stall_deadline(stall))
        {
            next = next.min(d);
        }
        next
    }

    pub(super) fn on_timers(&mut self, now: Instant) {
        if self.lease_due.is_some_and(|d| now >= d) {
            self.keep_lease(now);
        }
        let config = &self.shared.config;
        if now >= self.next_ping {
            self.next_ping = now + config.timeouts.ping_interval;
            let mut gone = Vec::new();
            for v in &mut self.viewers {
                if now.duration_since(v.link.last_heard) > config.timeouts.ping_interval * 2 {
                    gone.push((v.id, Lost::HeartbeatTimeout));
                } else if v.link.ping().is_err() {
                    gone.push((v.id, Lost::Gone("ping failed".into())));
                }
            }
            for (viewer, why) in gone {
                self.lose(viewer, why);
            }
        }
        if self.detached_until.is_some_and(|d| now >= d) {
            return self.end(End::GraceExpired);
        }
        if self.query.is_none() && now >= self.last_activity + config.timeouts.session_timeout {
            return self.end(End::IdleTimeout);
        }
        if self.seat.queued().is_some_and(|q| now >= q.deadline) {
            self.seat.leave_queue();
            self.send_error(ClientError::new(
                ErrorCode::ServerBusy,
                format!(
                    "no claude place came free within {} s: all {} are busy \
                     (--max-running, --queue-timeout-secs); try again later",
                    config.timeouts.queue_timeout.as_secs_f64(),
                    config.max_running
                ),
            ));
            self.end_query(QueryOutcome::Error);
        }
        if self.pending.deadline().is_some_and(|d| now >= d) {
            self.refuse_pending(Some(now), Unanswered::TimedOut);
        }
        if self.query.as_ref().is_some_and(|q| q.overdue(now)) {
            log::warn!(
                "[{}] interrupt not honoured within {:?}; ending claude's process group",
                self.label,
                config.timeouts.interrupt_grace
            );
            self.stop_child_with(Stop::Now);
            self.end_query(QueryOutcome::Interrupted);
        }
        let idle = config.timeouts.child_idle;
        if let (Some(d), None) = (self.seat.idle_deadline(idle), &self.query) {
            if now >= d {
                log::info!(
                    "[{}] claude idle for {idle:?}; stopping it until the next query",
                    self.label
                );
                self.stop_child();
            }
        }
        let behind = self.max_behind();
        let stalled: Vec<(u64, usize)> = self
            .viewers
            .iter()
            .filter(|v| {
                v.link.stalled_for() >= config.timeouts.stall_timeout || v.link.pending() > behind
            })
            .map(|v| (v.id, v.link.pending()))
            .collect();
        for (viewer, pending) in stalled {
            log::warn!(
                "[{}] client kept its backlog above the high-water mark for {:?}, or fell \
                 behind the others (viewer {viewer}, {pending} bytes waiting); disconnecting",
                self.label,
                config.timeouts.stall_timeout,
            );
            self.lose(viewer, Lost::Stalled);
        }
    }
}
