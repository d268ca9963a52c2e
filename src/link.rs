//! The client side of a session: one WebSocket over one TCP socket, shaped so that a
//! single thread (the session's) can own it without ever blocking on it.
//!
//! Why a socket watcher and an in-memory stream: tungstenite's `WebSocket<S>` works
//! over any `Read + Write` and keeps partial frames across `WouldBlock`. One thread per
//! process ([`Watcher`]) waits on every session's socket at once (epoll) and, when one
//! has input, says so on that session's channel, so the session's one `select!` sees
//! client traffic, child output and timers alike, with no polling and no added latency.
//! The session then reads its socket without blocking and feeds the bytes to
//! tungstenite from memory. A quiet connection thus costs no thread of its own (a
//! reader thread per connection doubled the threads, their stacks and memory maps,
//! which capped a server near 8,000 sessions). The alternative — a short read timeout
//! and checking channels between reads — delays every child event by up to the
//! timeout and wakes every idle session periodically.
//!
//! Writes go out with non-blocking `send`; what the socket does not take waits in
//! [`Duplex`]'s own queue, and the watcher then also reports when the socket has room
//! again. A stalled client therefore never blocks the session thread, and a slow one is
//! fed as fast as it reads.
//!
//! Back-pressure, both ways: while more than [`HIGH_WATER`] bytes wait for the client,
//! the session takes no child output (see `session.rs`) and the link takes no client
//! input — not from the socket, and not the messages already buffered — and watches
//! the socket only for room. Whatever fills the queue (child output, or replies the
//! client's own pings, batches and bad frames earn), TCP then pushes back on the
//! client, and what one wake-up may add is bounded ([`MESSAGES_PER_WAKE`],
//! [`READ_LIMIT`]). A client that keeps its backlog above the mark is "stalled"
//! ([`Link::stalled_for`]) even if it reads a trickle.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::protocol::Closing;
use crate::protocol::WS_PATH;
use crate::sys::{self, Watch};
use crate::util::lock;

/// tungstenite's read buffer, which every session holds (it grows for a larger frame,
/// read from memory this much at a time).
const READ_CHUNK: usize = 1024;
/// Most bytes asked of the socket in one `recv`.
const RECV_CHUNK: usize = 16 * 1024;
/// Most bytes taken from the socket per wake-up, and most message bytes handed to the
/// session per wake-up: the bound on a flooding client. More waiting input wakes the
/// session again at once, after it has looked at the rest.
const READ_LIMIT: usize = 64 * 1024;
/// Most messages handed to the session per wake-up: each may earn up to a batch's worth
/// of replies, and all of them are queued before the session looks at the backlog.
const MESSAGES_PER_WAKE: usize = 16;
/// Above this much unsent output the session stops taking child events and the link
/// stops taking client input.
pub const HIGH_WATER: usize = 256 * 1024;
/// The opcode of a text frame (RFC 6455 5.2).
const OPCODE_TEXT: u8 = 0x1;
/// The opcode of a binary frame.
const OPCODE_BINARY: u8 = 0x2;

/// The one thread that waits for input on every session's socket.
struct Watcher {
    epoll: sys::Epoll,
    /// Whom to tell when a socket has input: token → the session's channel.
    sessions: Mutex<HashMap<u64, Sender<()>>>,
    next_token: AtomicU64,
}

/// The process's watcher, started with the first connection.
fn watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<&'static Watcher, String>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let epoll = sys::Epoll::new().map_err(|e| format!("cannot create an epoll: {e}"))?;
            let w: &'static Watcher = Box::leak(Box::new(Watcher {
                epoll,
                sessions: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(1),
            }));
            thread::Builder::new()
                .name("sockets".into())
                .stack_size(64 * 1024)
                .spawn(move || w.run())
                .map_err(|e| format!("cannot start the socket watcher: {e}"))?;
            Ok(w)
        })
        .clone()
        .map_err(io::Error::other)
}

impl Watcher {
    fn run(&self) {
        let mut ready = Vec::new();
        loop {
            match self.epoll.wait(&mut ready) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Not expected with a valid epoll; do not spin if it happens.
                    log::error!("waiting for socket input failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let sessions = lock(&self.sessions);
            for token in &ready {
                if let Some(tx) = sessions.get(token) {
                    // Full: the session has not taken the last word yet, which says the same.
                    let _ = tx.try_send(());
                }
            }
        }
    }
}

/// The stream tungstenite sees: reads come from memory (or, during the handshake,
/// straight from the socket with a deadline), writes go to the socket without blocking.
pub struct Duplex {
    tcp: Arc<TcpStream>,
    input: Vec<u8>,
    read_pos: usize,
    output: Vec<u8>,
    /// While set, reads block on the socket until this instant (the handshake).
    handshake_deadline: Option<Instant>,
    /// The stall clock (see [`stalled_for`](Self::stalled_for)) as it read at the
    /// output's last crossing of [`HIGH_WATER`]...
    stall_clock: Duration,
    /// ...which was then.
    crossed_at: Instant,
    /// Whether the output is above the mark (it runs the clock forward, else back).
    above_mark: bool,
}

impl Duplex {
    /// A stream for the handshake: blocking reads that fail after `timeout` in total,
    /// however slowly the client sends.
    pub fn for_handshake(tcp: Arc<TcpStream>, timeout: Duration) -> Duplex {
        Duplex {
            tcp,
            input: Vec::new(),
            read_pos: 0,
            output: Vec::new(),
            handshake_deadline: Some(Instant::now() + timeout),
            stall_clock: Duration::ZERO,
            crossed_at: Instant::now(),
            above_mark: false,
        }
    }

    /// The same, handing tungstenite first `head`: bytes already read from the socket
    /// (the request head, read to route plain HTTP requests away; see `web.rs`).
    pub fn already_read(mut self, head: Vec<u8>) -> Duplex {
        self.input = head;
        self.read_pos = 0;
        self
    }

    /// Bytes written but not yet taken by the socket.
    pub fn pending(&self) -> usize {
        self.output.len()
    }

    /// How long the output has been held above [`HIGH_WATER`], net of the time it has
    /// spent below: a clock that runs forward while the backlog is above the mark and
    /// back (down to zero) while it is not. A client that reads nothing runs it at full
    /// speed; so does one that reads a trickle, because each time the socket takes a
    /// little, the backlog refills at once and the session waits above the mark
    /// again. A client that keeps up keeps it near zero.
    ///
    /// (The time since the backlog was last empty would not do: the socket's own
    /// buffer, megabytes, can take the whole backlog at every report of room.)
    pub fn stalled_for(&self) -> Duration {
        let since = self.crossed_at.elapsed();
        if self.above_mark {
            self.stall_clock + since
        } else {
            self.stall_clock.saturating_sub(since)
        }
    }

    /// Keep [`stalled_for`](Self::stalled_for)'s clock: call after the output grew or
    /// shrank (it reads the time only when the output crosses the mark).
    fn note_backlog(&mut self) {
        let above = self.output.len() > HIGH_WATER;
        if above != self.above_mark {
            self.stall_clock = self.stalled_for();
            self.crossed_at = Instant::now();
            self.above_mark = above;
        }
    }

    /// Whether tungstenite has taken all input read so far.
    fn input_taken(&self) -> bool {
        self.read_pos == self.input.len()
    }

    /// Move what the socket has, up to [`READ_LIMIT`], into the input buffer without
    /// blocking (call only once the input so far is taken). `Ok(true)` at end of file.
    fn fill_input(&mut self) -> io::Result<bool> {
        self.input.clear();
        self.read_pos = 0;
        let mut taken = 0;
        while taken < READ_LIMIT {
            let ask = RECV_CHUNK.min(READ_LIMIT - taken);
            match sys::recv_append(&*self.tcp, &mut self.input, ask) {
                Ok(0) => return Ok(true),
                Ok(n) if n < ask => break, // drained (more arriving now re-arms at once)
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Give back the output buffer if it is empty: a burst can leave it hundreds of
    /// KiB large, and a session between queries has no use for it.
    fn release_output(&mut self) {
        if self.output.is_empty() && self.output.capacity() > 0 {
            self.output = Vec::new();
        }
    }

    /// Give back the input buffer once tungstenite has taken all of it, so a quiet
    /// connection holds no input memory.
    fn release_input(&mut self) {
        if self.read_pos == self.input.len() {
            self.input = Vec::new();
            self.read_pos = 0;
        }
    }

    /// Queue one whole unmasked frame (FIN set) whose payload `write` appends.
    ///
    /// The payload is written in place, after room for the header most events need (a
    /// 16-bit length); a frame that needs another header is moved by the difference.
    fn queue_frame_with(&mut self, opcode: u8, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.output.len();
        // RFC 6455 5.2: a 7-bit length, or 126 and 16 bits, or 127 and 64 bits (network
        // order).
        self.output.extend_from_slice(&[0x80 | opcode, 126, 0, 0]);
        write(&mut self.output);
        let len = self.output.len() - start - 4;
        match u16::try_from(len) {
            Ok(len) if len >= 126 => {
                self.output[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
            }
            Ok(len) => {
                self.output[start + 1] = len as u8;
                self.output.copy_within(start + 4.., start + 2);
                self.output.truncate(self.output.len() - 2);
            }
            Err(_) => {
                let mut long = [127; 9];
                long[1..].copy_from_slice(&(len as u64).to_be_bytes());
                self.output.splice(start + 1..start + 4, long);
            }
        }
        self.note_backlog();
    }

    /// Send what the socket takes now; keep the rest.
    fn drain_output(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            match sys::send_nonblocking(&*self.tcp, &self.output[sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if sent > 0 {
            self.output.drain(..sent);
            self.note_backlog();
            if self.output.is_empty() && self.output.capacity() > 1 << 20 {
                self.output = Vec::new(); // give back the memory of a huge message
            }
        }
        Ok(())
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The handshake reads the socket, with its deadline, once the bytes read before
        // it (`already_read`) are taken.
        if let Some(deadline) = self.handshake_deadline.filter(|_| self.input_taken()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "handshake timed out",
                ));
            }
            self.tcp.set_read_timeout(Some(left))?;
            return (&*self.tcp).read(buf);
        }
        let avail = &self.input[self.read_pos..];
        if avail.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.read_pos += n;
        Ok(n)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.handshake_deadline.is_some() {
            return (&*self.tcp).write(buf);
        }
        self.output.extend_from_slice(buf);
        self.note_backlog();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.handshake_deadline.is_some() {
            return (&*self.tcp).flush();
        }
        self.drain_output()
    }
}

/// Why a link ended.
#[derive(Debug)]
pub enum LinkError {
    /// The peer sent a close frame, with this code if it gave one.
    Closed(Option<u16>),
    /// The peer reset or vanished.
    Gone(String),
    /// The peer broke the protocol (the close code sent tells which way).
    Protocol(String),
}

/// One client connection after the handshake.
pub struct Link {
    ws: WebSocket<Duplex>,
    /// A word from the watcher: the socket has input (or the peer hung up).
    inbound: Receiver<()>,
    /// The same channel's sender: the link's own word that input it already holds waits.
    wake: Sender<()>,
    watcher: &'static Watcher,
    token: u64,
    peer: std::net::SocketAddr,
    /// When the peer last sent anything (for the heartbeat).
    pub last_heard: Instant,
    /// What the watcher reports next.
    watching: Watch,
    /// The last wake-up stopped at its bound: more messages may be buffered.
    more_input: bool,
    /// The peer has sent end of file.
    eof: bool,
    /// The peer sent a close frame, whose reply tungstenite holds until the next flush:
    /// replies to the messages before it may still be queued (not after the flush).
    close_reply_held: bool,
    /// The peer broke the protocol: the close to send once the replies to its messages
    /// before the bad frame are queued (at the next flush).
    failed: Option<Closing>,
}

/// The socket settings every session uses: small buffers (many idle sessions must be
/// cheap), writes handed straight to [`Duplex`], which batches until `flush`.
pub fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

impl Link {
    /// Take over a handshaken WebSocket: switch its stream to in-memory reads and have
    /// the watcher report the socket's input.
    pub fn start(mut ws: WebSocket<Duplex>, peer: std::net::SocketAddr) -> io::Result<Link> {
        let tcp = ws.get_ref().tcp.clone();
        tcp.set_read_timeout(None)?;
        tcp.set_nodelay(true)?;
        ws.get_mut().handshake_deadline = None;
        let watcher = watcher()?;
        let token = watcher.next_token.fetch_add(1, Ordering::Relaxed);
        let (wake, inbound) = bounded(1);
        lock(&watcher.sessions).insert(token, wake.clone());
        // From here on the link's drop undoes the registration.
        let link = Link {
            ws,
            inbound,
            wake,
            watcher,
            token,
            peer,
            last_heard: Instant::now(),
            watching: Watch::Input,
            more_input: false,
            eof: false,
            close_reply_held: false,
            failed: None,
        };
        watcher.epoll.watch(&*tcp, token)?;
        Ok(link)
    }

    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }

    /// Word that the socket has input (or room for output that is waiting), for the
    /// session's `select!`: then call [`receive`](Self::receive) (and flush).
    pub fn inbound(&self) -> &Receiver<()> {
        &self.inbound
    }

    /// Send what output the socket takes; then, unless more than [`HIGH_WATER`] bytes
    /// still wait, read what the socket has without blocking and hand each complete
    /// message (text or binary) to `on_message`, up to [`MESSAGES_PER_WAKE`] of them;
    /// then ask the watcher for the next report. Pings are answered by tungstenite;
    /// pongs only refresh the heartbeat.
    ///
    /// On a protocol error the messages before the bad frame have been handed over and
    /// the close frame waits for the next [`flush`](Self::flush): queue their replies
    /// first. Likewise when the peer closes.
    pub fn receive(&mut self, on_message: impl FnMut(&mut Self, Message)) -> Result<(), LinkError> {
        if self.failed.is_some() || self.close_reply_held {
            return Err(LinkError::Gone("the connection is closing".into()));
        }
        // The report may have been room for output: send what waits first, so a
        // drained backlog lets input in and the watch asks for room only if needed.
        self.drain()?;
        if self.pending() <= HIGH_WATER {
            self.take_input(on_message)?;
            self.drain()?;
        }
        if self.more_input && self.pending() <= HIGH_WATER {
            // Full: a report is on its way anyway.
            let _ = self.wake.try_send(());
        }
        self.rearm()
    }

    /// Read the socket (once tungstenite has taken what was read before) and hand the
    /// messages on.
    fn take_input(&mut self, on_message: impl FnMut(&mut Self, Message)) -> Result<(), LinkError> {
        let duplex = self.ws.get_mut();
        if !self.eof && duplex.input_taken() {
            self.eof = duplex
                .fill_input()
                .map_err(|e| LinkError::Gone(e.to_string()))?;
            if !self.ws.get_ref().input_taken() {
                self.last_heard = Instant::now();
            }
        }
        let read = self.read_messages(on_message);
        self.ws.get_mut().release_input();
        read?;
        if self.eof && !self.more_input {
            return Err(LinkError::Gone("connection closed".into()));
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), LinkError> {
        self.ws
            .get_mut()
            .drain_output()
            .map_err(|e| LinkError::Gone(e.to_string()))
    }

    /// What the watcher should report next: input, and room while output waits; only
    /// room while the backlog is above the mark (no input is taken then).
    fn watch_needed(&self) -> Watch {
        match self.pending() {
            0 => Watch::Input,
            n if n <= HIGH_WATER => Watch::InputAndRoom,
            _ => Watch::Room,
        }
    }

    /// Have the watcher report what [`watch_needed`](Self::watch_needed) says (the
    /// watch is one-shot: each report needs this).
    fn rearm(&mut self) -> Result<(), LinkError> {
        let watch = self.watch_needed();
        let tcp = &self.ws.get_ref().tcp;
        self.watcher
            .epoll
            .rearm(&**tcp, self.token, watch)
            .map_err(|e| LinkError::Gone(e.to_string()))?;
        self.watching = watch;
        Ok(())
    }

    /// Hand complete messages tungstenite has to `on_message`, up to the per-wake-up
    /// bounds (then `more_input` is set).
    fn read_messages(
        &mut self,
        mut on_message: impl FnMut(&mut Self, Message),
    ) -> Result<(), LinkError> {
        self.more_input = false;
        let (mut messages, mut bytes) = (0, 0);
        loop {
            if messages >= MESSAGES_PER_WAKE || bytes >= READ_LIMIT {
                self.more_input = true;
                return Ok(());
            }
            match self.ws.read() {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                    messages += 1;
                    bytes += m.len();
                    on_message(self, m);
                }
                Ok(Message::Close(frame)) => {
                    // tungstenite holds the close reply until the next flush.
                    self.close_reply_held = true;
                    return Err(LinkError::Closed(frame.map(|f| u16::from(f.code))));
                }
                Ok(_) => {} // ping (answered), pong, raw frame
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(())
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err(LinkError::Gone("connection closed".into()))
                }
                Err(tungstenite::Error::Io(e)) => return Err(LinkError::Gone(e.to_string())),
                Err(e) => {
                    self.failed = Some(match e {
                        tungstenite::Error::Capacity(_) => Closing::TooLarge,
                        tungstenite::Error::Utf8(_) => Closing::InvalidPayload,
                        _ => Closing::ProtocolError,
                    });
                    return Err(LinkError::Protocol(e.to_string()));
                }
            }
        }
    }

    /// Whether frames may still be queued: not once a close frame is on its way.
    fn can_queue(&self) -> Result<(), LinkError> {
        if self.ws.can_write() || self.close_reply_held {
            Ok(())
        } else {
            Err(LinkError::Gone("the connection is closing".into()))
        }
    }

    /// Queue one text message, the UTF-8 text `write` appends to the buffer it is given
    /// (sent at the next [`flush`](Self::flush)).
    ///
    /// The frame is written straight into the output queue: a server's frames are not
    /// masked, so framing one is writing a header, and tungstenite's way (an owned
    /// message, its buffer, then ours) costs an allocation and two copies per event.
    /// Everything tungstenite writes itself (pongs, pings, close) lands in the same
    /// queue whole and in order, because it is configured to write through ([`ws_config`]).
    pub fn queue_text_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), LinkError> {
        self.can_queue()?;
        self.ws.get_mut().queue_frame_with(OPCODE_TEXT, write);
        Ok(())
    }

    /// Queue one binary message (sessions send none; the Autobahn echo does).
    pub fn queue_binary(&mut self, data: &[u8]) -> Result<(), LinkError> {
        self.can_queue()?;
        self.ws
            .get_mut()
            .queue_frame_with(OPCODE_BINARY, |out| out.extend_from_slice(data));
        Ok(())
    }

    /// Send a WebSocket ping (heartbeat).
    pub fn ping(&mut self) -> Result<(), LinkError> {
        self.ws
            .write(Message::Ping(Default::default()))
            .map_err(|e| LinkError::Gone(e.to_string()))
    }

    /// Push queued output to the socket, as far as it takes it without blocking, after
    /// queueing the close a protocol error or the peer's close calls for. If some is
    /// left, the watcher reports when the socket has room again (as input, on
    /// [`inbound`](Self::inbound)).
    pub fn flush(&mut self) -> Result<(), LinkError> {
        if let Some(why) = self.failed.take() {
            self.close(why);
        }
        let answering_close = std::mem::take(&mut self.close_reply_held);
        match self.ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The peer's close, answered: nothing more is sent.
            Err(tungstenite::Error::ConnectionClosed) if answering_close => {
                return Err(LinkError::Gone("client closed the connection".into()))
            }
            Err(e) => return Err(LinkError::Gone(e.to_string())),
        }
        // A backlog needs word of room; above the mark, input waits (an input report
        // meanwhile would only be set aside by `receive`).
        let rearm = match self.watch_needed() {
            Watch::Input => false,
            Watch::InputAndRoom => self.watching == Watch::Input,
            Watch::Room => self.watching != Watch::Room,
        };
        if rearm {
            self.rearm()?;
        }
        Ok(())
    }

    /// Give back buffer memory that only a busy link needs (call when idle).
    pub fn release_buffers(&mut self) {
        self.ws.get_mut().release_output();
    }

    /// Bytes queued but not yet taken by the socket.
    pub fn pending(&self) -> usize {
        self.ws.get_ref().pending()
    }

    /// How long the backlog has been above [`HIGH_WATER`] since it was last empty: the
    /// client reads (if at all) slower than its output grows.
    pub fn stalled_for(&self) -> Duration {
        self.ws.get_ref().stalled_for()
    }

    /// When a client that reads nothing more is given up (`timeout` of stall), if
    /// output waits for it. (Room in the socket wakes the session through `inbound`;
    /// this is the deadline of a client that reads nothing.)
    pub fn stall_deadline(&self, timeout: Duration) -> Option<Instant> {
        (self.pending() > 0).then(|| Instant::now() + timeout.saturating_sub(self.stalled_for()))
    }

    /// Send a close frame saying why (best effort).
    pub fn close(&mut self, why: Closing) {
        self.failed = None;
        let (code, reason) = why.frame();
        let _ = self.ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }));
        let _ = self.ws.flush();
    }

    /// Give queued output up to `limit` to reach the peer, then close gracefully:
    /// send FIN and read (discarding) what the peer still sends, until it closes too or
    /// `limit` is up. Closing a socket with unread input makes the kernel answer with a
    /// reset, which can destroy the close frame before the peer reads it (a client
    /// still sending a too-large message would never learn why it was cut off).
    pub fn finish(&mut self, limit: Duration) {
        // A close still owed (a protocol error, the peer's close) goes out first.
        let _ = self.flush();
        let deadline = Instant::now() + limit;
        while self.pending() > 0 && Instant::now() < deadline {
            if self.ws.get_mut().drain_output().is_err() {
                break;
            }
            if self.pending() > 0 {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let tcp = self.ws.get_ref().tcp.clone();
        let _ = self.watcher.epoll.forget(&*tcp);
        if tcp.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let mut sink = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match (&*tcp).read(&mut sink) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

impl Link {
    /// [`Link::finish`] on a short-lived thread of its own, for a session that goes on
    /// without this connection (detached, or taken over): the session's thread does
    /// not wait for the peer. Done here, at once, if no thread can be started.
    pub fn finish_elsewhere(mut self, limit: Duration) {
        let (tx, rx) = std::sync::mpsc::channel::<Link>();
        let spawned = thread::Builder::new()
            .name("linger".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Ok(mut link) = rx.recv() {
                    link.finish(limit);
                }
            });
        match spawned {
            Ok(_) => {
                if let Err(mut back) = tx.send(self) {
                    back.0.finish(limit);
                }
            }
            Err(_) => self.finish(limit),
        }
    }
}

impl Drop for Link {
    /// However the session ends (`finish`, or a panic), the watcher forgets the socket
    /// and the socket is shut so the peer learns at once.
    fn drop(&mut self) {
        let tcp = &self.ws.get_ref().tcp;
        let _ = self.watcher.epoll.forget(&**tcp);
        lock(&self.watcher.sessions).remove(&self.token);
        let _ = tcp.shutdown(Shutdown::Both);
    }
}

/// An echo server on the sessions' own link code — the same handshake, reads,
/// back-pressure, frame writing and close paths — sending each text or binary message
/// back as it came: what the Autobahn|Testsuite drives (`examples/autobahn-echo.rs`,
/// `scripts/autobahn.sh`). Serves one connection on `/ws` until it ends. Not part of
/// the embed API.
#[doc(hidden)]
pub fn serve_echo(tcp: TcpStream, max_message_bytes: usize) {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    let Ok(peer) = tcp.peer_addr() else { return };
    let _ = tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let duplex = Duplex::for_handshake(Arc::new(tcp), HANDSHAKE_TIMEOUT);
    // The closure's error type is fixed by tungstenite's handshake `Callback`.
    #[allow(clippy::result_large_err)]
    let ws = tungstenite::accept_hdr_with_config(
        duplex,
        |req: &tungstenite::handshake::server::Request, resp| {
            if req.uri().path() == WS_PATH {
                return Ok(resp);
            }
            let mut refusal = tungstenite::handshake::server::ErrorResponse::new(None);
            *refusal.status_mut() = tungstenite::http::StatusCode::NOT_FOUND;
            Err(refusal)
        },
        Some(ws_config(max_message_bytes)),
    );
    let Ok(ws) = ws else { return };
    let Ok(mut link) = Link::start(ws, peer) else {
        return;
    };
    // A session's loop without the child and the timers: on word from the watcher,
    // take the messages, queue their replies, flush.
    while link.inbound().recv().is_ok() {
        let mut messages = Vec::new();
        let read = link.receive(|_, m| messages.push(m));
        for m in messages {
            let queued = match m {
                Message::Text(text) => {
                    link.queue_text_with(|out| out.extend_from_slice(text.as_bytes()))
                }
                Message::Binary(data) => link.queue_binary(&data),
                _ => Ok(()),
            };
            if queued.is_err() {
                break;
            }
        }
        if link.flush().is_err() || read.is_err() {
            break;
        }
    }
    link.finish(Duration::from_secs(1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use tungstenite::protocol::Role;

    /// Frames of every header size read back whole and in order by a client, mixed with
    /// frames tungstenite writes itself.
    #[test]
    fn frames_written_in_place_read_back() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut duplex = Duplex::for_handshake(Arc::new(tcp), Duration::from_secs(1));
        duplex.handshake_deadline = None;
        let mut ws = WebSocket::from_raw_socket(duplex, Role::Server, Some(ws_config(1 << 20)));
        let sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 200_000];
        let text = |n: usize| "é".repeat(n / 2) + &"x".repeat(n % 2);
        for &n in &sizes {
            ws.get_mut()
                .queue_frame_with(OPCODE_TEXT, |out| out.extend_from_slice(text(n).as_bytes()));
            ws.write(Message::Ping(b"between".to_vec().into())).unwrap();
        }
        let bytes = std::mem::take(&mut ws.get_mut().output);
        // A read buffer as large as the stream: with its default one, tungstenite 0.30's
        // client misreads the 64 KiB frame from an in-memory cursor (a frame written by
        // tungstenite itself alike).
        let config = WebSocketConfig::default().read_buffer_size(1 << 20);
        let cursor = io::Cursor::new(bytes);
        let mut client = WebSocket::from_raw_socket(cursor, Role::Client, Some(config));
        for &n in &sizes {
            match client.read().unwrap() {
                Message::Text(t) => assert_eq!(t.as_str(), text(n), "{n}"),
                other => panic!("{other:?}"),
            }
            assert!(matches!(client.read().unwrap(), Message::Ping(p) if &p[..] == b"between"));
        }
    }
}
