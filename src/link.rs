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
//! [`Duplex`]'s own queue, whose size is the back-pressure signal the session uses to
//! stop taking child output (see `session.rs`), and the watcher then also reports when
//! the socket has room again. A stalled client therefore never blocks the session
//! thread, and a slow one is fed as fast as it reads.

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
use crate::registry::lock;
use crate::sys;

/// tungstenite's read buffer, which every session holds (it grows for a larger frame,
/// read from memory this much at a time).
const READ_CHUNK: usize = 1024;
/// Most bytes asked of the socket in one `recv`.
const RECV_CHUNK: usize = 16 * 1024;
/// Most bytes taken from the socket per wake-up: the bound on a flooding client. More
/// waiting input wakes the session again at once, after it has looked at the rest.
const READ_LIMIT: usize = 64 * 1024;
/// Above this much unsent output the session stops taking child events.
pub const HIGH_WATER: usize = 256 * 1024;
/// The opcode of a text frame (RFC 6455 5.2).
const OPCODE_TEXT: u8 = 0x1;

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
    /// When the socket last took bytes while output was waiting.
    last_progress: Instant,
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
            last_progress: Instant::now(),
        }
    }

    /// Bytes written but not yet taken by the socket.
    pub fn pending(&self) -> usize {
        self.output.len()
    }

    /// How long output has been waiting without the socket taking any.
    pub fn stalled_for(&self) -> Duration {
        if self.output.is_empty() {
            Duration::ZERO
        } else {
            self.last_progress.elapsed()
        }
    }

    /// Move what the socket has, up to [`READ_LIMIT`], into the input buffer without
    /// blocking. `Ok(true)` at end of file.
    fn fill_input(&mut self) -> io::Result<bool> {
        if self.read_pos == self.input.len() {
            self.input.clear();
            self.read_pos = 0;
        }
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
        if self.output.is_empty() {
            self.last_progress = Instant::now();
        }
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
            self.last_progress = Instant::now();
            if self.output.is_empty() && self.output.capacity() > 1 << 20 {
                self.output = Vec::new(); // give back the memory of a huge message
            }
        }
        Ok(())
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.handshake_deadline {
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
        if self.output.is_empty() {
            self.last_progress = Instant::now();
        }
        self.output.extend_from_slice(buf);
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
    /// The peer closed, reset or vanished.
    Gone(String),
    /// The peer broke the protocol (the close code sent tells which way).
    Protocol(String),
}

/// One client connection after the handshake.
pub struct Link {
    ws: WebSocket<Duplex>,
    /// A word from the watcher: the socket has input (or the peer hung up).
    inbound: Receiver<()>,
    watcher: &'static Watcher,
    token: u64,
    peer: std::net::SocketAddr,
    peer_ip: String,
    /// When the peer last sent anything (for the heartbeat).
    pub last_heard: Instant,
    /// The watch includes room for output: a report comes when the socket drains.
    awaiting_room: bool,
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
        let (tx, inbound) = bounded(1);
        lock(&watcher.sessions).insert(token, tx);
        // From here on the link's drop undoes the registration.
        let link = Link {
            ws,
            inbound,
            watcher,
            token,
            peer_ip: peer.ip().to_string(),
            peer,
            last_heard: Instant::now(),
            awaiting_room: false,
        };
        watcher.epoll.watch(&*tcp, token)?;
        Ok(link)
    }

    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }

    /// The peer's IP address, the key of per-peer limits.
    pub fn peer_ip(&self) -> &str {
        &self.peer_ip
    }

    /// Word that the socket has input (or room for output that is waiting), for the
    /// session's `select!`: then call [`receive`](Self::receive) (and flush).
    pub fn inbound(&self) -> &Receiver<()> {
        &self.inbound
    }

    /// Read what the socket has without blocking and hand every complete message to
    /// `on_message`; send what output the socket takes; then ask the watcher to report
    /// the next input (or room). Pings are answered by tungstenite; pongs only refresh
    /// the heartbeat.
    pub fn receive(&mut self, on_message: impl FnMut(&mut Self, Message)) -> Result<(), LinkError> {
        let eof = match self.ws.get_mut().fill_input() {
            Ok(eof) => eof,
            Err(e) => return Err(LinkError::Gone(e.to_string())),
        };
        if self.ws.get_ref().input.len() > self.ws.get_ref().read_pos {
            self.last_heard = Instant::now();
        }
        let read = self.read_messages(on_message);
        self.ws.get_mut().release_input();
        read?;
        if eof {
            return Err(LinkError::Gone("connection closed".into()));
        }
        // The report may have been room for output: send what waits before re-arming,
        // so the watch asks for room only if it is still needed.
        if let Err(e) = self.ws.get_mut().drain_output() {
            return Err(LinkError::Gone(e.to_string()));
        }
        self.rearm()
    }

    /// Have the watcher report the socket's next input, and room for output if some
    /// is waiting (the watch is one-shot: each report needs this).
    fn rearm(&mut self) -> Result<(), LinkError> {
        let writable_too = self.pending() > 0;
        let tcp = &self.ws.get_ref().tcp;
        self.watcher
            .epoll
            .rearm(&**tcp, self.token, writable_too)
            .map_err(|e| LinkError::Gone(e.to_string()))?;
        self.awaiting_room = writable_too;
        Ok(())
    }

    /// Hand every complete message tungstenite has to `on_message`.
    fn read_messages(
        &mut self,
        mut on_message: impl FnMut(&mut Self, Message),
    ) -> Result<(), LinkError> {
        loop {
            match self.ws.read() {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => on_message(self, m),
                Ok(Message::Close(_)) => {
                    // tungstenite queued the close reply; send it.
                    let _ = self.ws.flush();
                    return Err(LinkError::Gone("client closed the connection".into()));
                }
                Ok(_) => {} // ping (answered), pong, raw frame
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(())
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    self.close(Closing::TooLarge);
                    return Err(LinkError::Protocol(e.to_string()));
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err(LinkError::Gone("connection closed".into()))
                }
                Err(tungstenite::Error::Io(e)) => return Err(LinkError::Gone(e.to_string())),
                Err(e) => {
                    self.close(Closing::ProtocolError);
                    return Err(LinkError::Protocol(e.to_string()));
                }
            }
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
        if !self.ws.can_write() {
            return Err(LinkError::Gone("the connection is closing".into()));
        }
        self.ws.get_mut().queue_frame_with(OPCODE_TEXT, write);
        Ok(())
    }

    /// Send a WebSocket ping (heartbeat).
    pub fn ping(&mut self) -> Result<(), LinkError> {
        self.ws
            .write(Message::Ping(Default::default()))
            .map_err(|e| LinkError::Gone(e.to_string()))
    }

    /// Push queued output to the socket, as far as it takes it without blocking. If
    /// some is left, the watcher reports when the socket has room again (as input, on
    /// [`inbound`](Self::inbound)).
    pub fn flush(&mut self) -> Result<(), LinkError> {
        match self.ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(LinkError::Gone(e.to_string())),
        }
        if self.pending() > 0 && !self.awaiting_room {
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

    /// How long queued output has waited without progress.
    pub fn stalled_for(&self) -> Duration {
        self.ws.get_ref().stalled_for()
    }

    /// Send a close frame saying why (best effort).
    pub fn close(&mut self, why: Closing) {
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
