//! What the session sends its clients: every message of the stream numbered, kept for
//! a client that reattaches (`replay.rs`), and written once to every connection (every
//! viewer gets it with the same `seq`) without blocking (see `link.rs`), or only kept
//! while the session is detached.

use serde_json::Value;

use super::{Lost, Session};
use crate::link::{Link, LinkError, HIGH_WATER};
use crate::protocol::{Capabilities, ClientError, ServerMessage};

/// One connection of the session.
pub(super) struct Viewer {
    pub link: Link,
    /// Its number in the session (1 for the first), as messages about viewers name it.
    pub id: u64,
}

impl Session<'_> {
    /// `connection_established`: the first message of a connection; `resumed` is
    /// `true` on a reattach, `"conversation"` for a session resumed from disk.
    pub(super) fn hello(&self, resumed: Option<Value>, viewer: u64) -> ServerMessage<'static> {
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
            viewers: self.viewers.len(),
            viewer,
        }
    }

    /// Send the next message of the session's stream (numbered, kept for replay) to
    /// every viewer.
    pub(super) fn send(&mut self, msg: ServerMessage<'_>) {
        self.seq += 1;
        let seq = self.seq;
        let replay = &mut self.replay;
        if let [only] = self.viewers.as_mut_slice() {
            // The common case, one viewer: the frame is written straight into its
            // output queue and kept from there (no buffer of its own, one copy less).
            let queued = only.link.queue_text_with(|out| {
                let start = out.len();
                msg.write_frame(seq, out);
                crate::metrics::relayed(out.len() - start);
                replay.push(seq, &out[start..]);
            });
            let Err(e) = queued else { return };
            // Nothing was written: kept all the same, for it to fetch when it reattaches.
            let viewer = only.id;
            self.keep(seq, &msg);
            return self.lose_link(viewer, e);
        }
        // Detached (kept for the client to fetch when it reattaches), or several
        // viewers: written once, kept, and queued to each.
        let frame = self.keep(seq, &msg);
        self.queue_for_every_viewer(&frame);
    }

    /// Keep message `seq` for replay; its frame.
    fn keep(&mut self, seq: u64, msg: &ServerMessage<'_>) -> Vec<u8> {
        let mut frame = Vec::new();
        msg.write_frame(seq, &mut frame);
        crate::metrics::relayed(frame.len());
        self.replay.push(seq, &frame);
        frame
    }

    /// An answer for the viewer whose message is being handled, which concerns nobody
    /// else (`pong`; what a request about the principal's history answers): while the
    /// session has other viewers it goes to that one alone, outside the numbered stream
    /// (seq 0, not replayed); with one viewer it is the next message of the stream.
    pub(super) fn reply(&mut self, msg: ServerMessage<'_>) {
        if self.viewers.len() < 2 {
            return self.send(msg);
        }
        self.send_unnumbered(self.speaker, &msg);
    }

    /// Queue `frame` to every viewer; a viewer whose connection failed is lost.
    fn queue_for_every_viewer(&mut self, frame: &[u8]) {
        if self.viewers.len() > 1 {
            self.largest_frame = self.largest_frame.max(frame.len());
        }
        let mut failed = Vec::new();
        for v in &mut self.viewers {
            if let Err(e) = v.link.queue_text_with(|out| out.extend_from_slice(frame)) {
                failed.push((v.id, e));
            }
        }
        for (id, e) in failed {
            self.lose_link(id, e);
        }
    }

    /// Most bytes a viewer may have waiting while the session has others: a whole
    /// replay (what a join queues at once), the largest frame sent, and a few child
    /// batches. Only a viewer slower than another gets there (the session takes no
    /// child output while the quickest has [`HIGH_WATER`] waiting); it is dropped as
    /// stalled then, without waiting for the stall timeout, so the memory a slow viewer
    /// holds stays bounded however fast the others read. A lone viewer has no such
    /// bound: the session waits for it (and the stall timeout applies).
    pub(super) fn max_behind(&self) -> usize {
        if self.viewers.len() < 2 {
            return usize::MAX;
        }
        let replay = self.shared.config.replay_buffer_bytes.max(HIGH_WATER);
        replay + self.largest_frame + 4 * HIGH_WATER
    }

    /// Bytes waiting for the quickest viewer (none while detached): a slow viewer does
    /// not hold the others back (it is dropped once it stalls, see `on_timers`).
    pub(super) fn pending_output(&self) -> usize {
        self.viewers
            .iter()
            .map(|v| v.link.pending())
            .min()
            .unwrap_or(0)
    }

    /// An error to the viewers: to the one whose message it refuses alone (nothing
    /// changed for the others, see [`ErrorCode::refuses_one_message`]), else to all.
    pub(super) fn send_error(&mut self, e: ClientError) {
        log::debug!("[{}] error to client: {e}", self.label);
        crate::metrics::error_sent(e.code);
        if e.code.refuses_one_message() {
            return self.reply(e.into());
        }
        self.send(e.into());
    }

    pub(super) fn flush(&mut self) {
        let mut failed = Vec::new();
        for v in &mut self.viewers {
            if let Err(e) = v.link.flush() {
                failed.push((v.id, e));
            }
        }
        for (id, e) in failed {
            self.lose_link(id, e);
        }
    }

    pub(super) fn lose_link(&mut self, viewer: u64, e: LinkError) {
        self.lose(
            viewer,
            match e {
                LinkError::Closed(code) => Lost::Closed(code),
                LinkError::Gone(why) => Lost::Gone(why),
                LinkError::Protocol(why) => Lost::Protocol(why),
            },
        )
    }

    /// A message outside the numbered stream (seq 0) to one viewer: its hello and its
    /// replay-gap error.
    pub(super) fn send_unnumbered(&mut self, viewer: u64, msg: &ServerMessage<'_>) {
        let mut frame = Vec::new();
        msg.write_frame(0, &mut frame);
        self.resend(viewer, &frame);
    }

    /// Queue a frame already written (replayed) to one viewer.
    pub(super) fn resend(&mut self, viewer: u64, frame: &[u8]) {
        let Some(v) = self.viewers.iter_mut().find(|v| v.id == viewer) else {
            return;
        };
        if let Err(e) = v.link.queue_text_with(|out| out.extend_from_slice(frame)) {
            self.lose_link(viewer, e);
        }
    }
}
