//! What the session sends its client: every message of the stream numbered and kept
//! for a client that reattaches (`replay.rs`), written to the link without blocking
//! (see `link.rs`), or only kept while the session is detached.

use serde_json::Value;

use super::{Lost, Session};
use crate::link::{Link, LinkError};
use crate::protocol::{Capabilities, ClientError, ServerMessage};
use crate::replay::Replay;

/// Keep message `seq` for a client that is not there to take it now.
fn keep(replay: &mut Replay, seq: u64, msg: &ServerMessage<'_>) {
    let mut frame = Vec::new();
    msg.write_frame(seq, &mut frame);
    crate::metrics::relayed(frame.len());
    replay.push(seq, &frame);
}

impl Session<'_> {
    /// `connection_established`: the first message of a connection; `resumed` is
    /// `true` on a reattach, `"conversation"` for a session resumed from disk.
    pub(super) fn hello(&self, resumed: Option<Value>) -> ServerMessage<'static> {
        ServerMessage::ConnectionEstablished {
            session_id: self.id.clone(),
            capabilities: Capabilities {
                concurrent_input: true,
                interrupt_query: true,
                tool_definition: true,
                permission_prompts: true,
                live_settings: true,
                image_input: true,
                reattach: true,
                permission_modes: self.shared.config.allowed_permission_modes.clone(),
                choose_cwd: !self.shared.config.workspace_roots.is_empty(),
            },
            resumed,
        }
    }

    /// Send the next message of the session's stream (numbered, kept for replay).
    pub(super) fn send(&mut self, msg: ServerMessage<'_>) {
        self.seq += 1;
        let seq = self.seq;
        let replay = &mut self.replay;
        let Some(link) = &mut self.link else {
            // Detached: kept for the client to fetch when it reattaches.
            return keep(replay, seq, &msg);
        };
        let queued = link.queue_text_with(|out| {
            let start = out.len();
            msg.write_frame(seq, out);
            crate::metrics::relayed(out.len() - start);
            replay.push(seq, &out[start..]);
        });
        if let Err(e) = queued {
            // Kept all the same: a reattaching client gets it.
            keep(&mut self.replay, seq, &msg);
            self.lose_link(e);
        }
    }

    /// Bytes waiting for the client (none while detached).
    pub(super) fn pending_output(&self) -> usize {
        self.link.as_ref().map_or(0, Link::pending)
    }

    pub(super) fn send_error(&mut self, e: ClientError) {
        log::debug!("[{}] error to client: {e}", self.label);
        crate::metrics::error_sent(e.code);
        self.send(e.into());
    }

    pub(super) fn flush(&mut self) {
        let Some(link) = &mut self.link else { return };
        if let Err(e) = link.flush() {
            self.lose_link(e);
        }
    }

    pub(super) fn lose_link(&mut self, e: LinkError) {
        self.lose(match e {
            LinkError::Closed(code) => Lost::Closed(code),
            LinkError::Gone(why) => Lost::Gone(why),
            LinkError::Protocol(why) => Lost::Protocol(why),
        })
    }

    /// A message outside the numbered stream (seq 0): the reattach's hello and its
    /// replay-gap error.
    pub(super) fn send_unnumbered(&mut self, msg: &ServerMessage<'_>) {
        let mut frame = Vec::new();
        msg.write_frame(0, &mut frame);
        self.resend(&frame);
    }

    /// Queue a frame already written (replayed) to the client.
    pub(super) fn resend(&mut self, frame: &[u8]) {
        let Some(link) = &mut self.link else { return };
        if let Err(e) = link.queue_text_with(|out| out.extend_from_slice(frame)) {
            self.lose_link(e);
        }
    }
}
