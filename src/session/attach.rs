//! A session and its connections: losing one without ending the session (detach), and
//! a client coming back to it (reattach) with what it missed.
//!
//! Only a close with code 1000, or `end_session`, ends a session from the client's
//! side. However else the connection ends — the network drops, the page reloads, the
//! client breaks the protocol or stops reading or answering pings — the session is
//! detached: its child and running query go on, what it sends is kept in its replay
//! buffer, and permission prompts and tool calls keep waiting (with their own
//! timeouts). A client of the same principal that connects to
//! `/ws?session_id=S&last_seq=N` within `--reconnect-grace-secs` gets
//! `connection_established` with `resumed: true` (numbered 0: not part of the stream),
//! every message after `seq` N, the questions still waiting, then the live stream.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{End, Lost, Session};
use crate::link::Link;
use crate::protocol::{ClientError, Closing, ErrorCode, ServerMessage};
use crate::replay::Since;

impl Session<'_> {
    /// The connection ended: the session ends too if the client closed with 1000;
    /// otherwise it is detached and waits for the client.
    pub(super) fn lose(&mut self, why: Lost) {
        if self.link.is_none() || self.ending.is_some() {
            return;
        }
        let reason = match &why {
            Lost::Closed(Some(1000)) => return self.end(End::ClientEnded),
            Lost::Closed(code) => format!("the client closed with {code:?}"),
            Lost::Gone(why) => format!("connection lost ({why})"),
            Lost::Protocol(why) => format!("protocol error ({why})"),
            Lost::HeartbeatTimeout => "no answer to pings".into(),
            Lost::Stalled => "client stopped reading".into(),
        };
        let grace = self.shared.config.timeouts.reconnect_grace;
        if let Some(mut link) = self.link.take() {
            if matches!(why, Lost::Stalled) {
                link.close(Closing::NotReading);
            }
            link.finish_elsewhere(Duration::from_millis(200));
        }
        if grace.is_zero() {
            log::info!("[{}] {reason}; no reconnect grace", self.label);
            return self.end(End::GraceExpired);
        }
        log::info!(
            "[{}] {reason}; the session waits {grace:?} for its client",
            self.label
        );
        self.detached_until = Some(Instant::now() + grace);
    }

    /// The client is back, on `link`, having seen every message up to `last_seq`.
    pub(super) fn attach(&mut self, link: Link, last_seq: u64) {
        if let Some(mut old) = self.link.replace(link) {
            // The same client twice (it reconnected before the old connection was
            // seen to drop): the newer one wins.
            old.close(Closing::Replaced);
            old.finish_elsewhere(Duration::from_millis(200));
        }
        log::info!(
            "[{}] client reattached, peer {}, after seq {last_seq}",
            self.label,
            self.link.as_ref().map_or(self.peer, Link::peer)
        );
        self.detached_until = None;
        self.last_activity = Instant::now();
        self.send_unnumbered(&self.hello(Some(Value::Bool(true))));
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let gap = match self.replay.since(last_seq) {
            Since::All(f) => {
                frames.extend(f.iter().map(|b| b.to_vec()));
                None
            }
            Since::Gap { first, frames: f } => {
                frames.extend(f.iter().map(|b| b.to_vec()));
                Some(first)
            }
        };
        if let Some(first) = gap {
            log::info!(
                "[{}] replay gap: the client has {last_seq}, the oldest kept is {first}",
                self.label
            );
            let error: ServerMessage = ClientError::new(
                ErrorCode::ReplayGap,
                format!(
                    "messages {} to {} are no longer held (--replay-buffer-bytes); \
                     the first still held is {first}",
                    last_seq + 1,
                    first - 1
                ),
            )
            .into();
            crate::metrics::error_sent(ErrorCode::ReplayGap);
            self.send_unnumbered(&error);
        }
        for frame in &frames {
            self.resend(frame);
        }
        // Questions the client saw before it went may be lost with its state (a
        // reloaded page): ask them again.
        let again: Vec<ServerMessage<'static>> =
            self.pending.messages_up_to(last_seq).cloned().collect();
        for m in again {
            self.send(m);
        }
        // Input that came with the reattach is already buffered: no wake-up for it.
        self.on_client_input();
    }
}
