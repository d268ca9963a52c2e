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
//!
//! Such a connection to a session that has a connection already joins it as another
//! viewer (up to `--max-viewers`; past it: `too_many_viewers`, close 4004): every viewer
//! gets every later message with the same `seq`, any may send anything, and the others
//! learn of it (`viewer_joined`, `viewer_left`). A viewer that goes (a close 1000
//! included) leaves the others working; the last one ends or detaches the session as
//! above.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::output::Viewer;
use super::{End, Lost, Session};
use crate::link::Link;
use crate::protocol::{ClientError, Closing, ErrorCode, ServerMessage};
use crate::replay::Since;

impl Session<'_> {
    /// Viewer `viewer`'s connection ended. A close with 1000 removes that viewer; if it
    /// was the last, the session ends. Any other end removes it too; if it was the
    /// last, the session is detached and waits for its client.
    pub(super) fn lose(&mut self, viewer: u64, why: Lost) {
        if self.ending.is_some() {
            return;
        }
        let Some(at) = self.viewers.iter().position(|v| v.id == viewer) else {
            return;
        };
        let last = self.viewers.len() == 1;
        let reason = match &why {
            Lost::Closed(Some(1000)) if last => return self.end(End::ClientEnded),
            Lost::Closed(Some(1000)) => "the viewer closed with 1000".to_string(),
            Lost::Closed(code) => format!("the client closed with {code:?}"),
            Lost::Gone(why) => format!("connection lost ({why})"),
            Lost::Protocol(why) => format!("protocol error ({why})"),
            Lost::HeartbeatTimeout => "no answer to pings".into(),
            Lost::Stalled => "client stopped reading".into(),
        };
        let mut gone = self.viewers.remove(at);
        if matches!(why, Lost::Stalled) {
            gone.link.close(Closing::NotReading);
        }
        gone.link.finish_elsewhere(Duration::from_millis(200));
        if !last {
            log::info!(
                "[{}] viewer {viewer} gone: {reason}; {} left",
                self.label,
                self.viewers.len()
            );
            let viewers = self.viewers.len();
            return self.send(ServerMessage::ViewerLeft { viewer, viewers });
        }
        let grace = self.shared.config.timeouts.reconnect_grace;
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

    /// A client connects to the session on `link`, having seen every message up to
    /// `last_seq`: it comes back to a detached session, or joins the viewers of an
    /// attached one (up to `--max-viewers`).
    pub(super) fn attach(&mut self, mut link: Link, last_seq: u64) {
        let max = self.shared.config.max_viewers;
        if self.viewers.len() >= max {
            log::info!(
                "[{}] refused a viewer from {}: {max} already (--max-viewers)",
                self.label,
                link.peer()
            );
            let error: ServerMessage = ClientError::new(
                ErrorCode::TooManyViewers,
                format!("the session has {max} connections already (--max-viewers)"),
            )
            .into();
            crate::metrics::error_sent(ErrorCode::TooManyViewers);
            let mut frame = Vec::new();
            error.write_frame(0, &mut frame);
            let _ = link.queue_text_with(|out| out.extend_from_slice(&frame));
            link.close(Closing::TooManyViewers);
            return link.finish_elsewhere(Duration::from_millis(200));
        }
        self.next_viewer += 1;
        let viewer = self.next_viewer;
        let joined = !self.viewers.is_empty();
        log::info!(
            "[{}] client {}, peer {}, after seq {last_seq}",
            self.label,
            if joined { "joined" } else { "reattached" },
            link.peer()
        );
        self.viewers.push(Viewer { link, id: viewer });
        self.detached_until = None;
        self.last_activity = Instant::now();
        self.send_unnumbered(viewer, &self.hello(Some(Value::Bool(true)), viewer));
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
        // The questions still waiting that the replay does not carry.
        let asked_before = gap.map_or(last_seq, |first| last_seq.max(first - 1));
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
            self.send_unnumbered(viewer, &error);
        }
        for frame in &frames {
            self.resend(viewer, frame);
        }
        // Questions the client saw before it went may be lost with its state (a
        // reloaded page), and a new viewer never saw them: ask them again — of this
        // viewer only (outside the numbered stream) when others are watching.
        let again: Vec<ServerMessage<'static>> =
            self.pending.messages_up_to(asked_before).cloned().collect();
        for m in again {
            if joined {
                self.send_unnumbered(viewer, &m);
            } else {
                self.send(m);
            }
        }
        if joined {
            let viewers = self.viewers.len();
            self.send(ServerMessage::ViewerJoined { viewer, viewers });
        }
        // Input that came with the reattach is already buffered: no wake-up for it.
        self.on_client_input(viewer);
    }
}
