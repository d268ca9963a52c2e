//! The client side of a session: one WebSocket over one TCP socket, shaped so that a
//! single thread (the session's) can own it without ever blocking on it.
//!
//! Why a reader thread and an in-memory stream: tungstenite's `WebSocket<S>` works
//! over any `Read + Write` and keeps partial frames across `WouldBlock`. A small
//! reader thread moves raw socket bytes into the session's channel (so the session's
//! one `select!` sees client traffic, child output and timers alike, with no polling
//! and no added latency), and the session feeds them to tungstenite from memory. The
//! alternative — a short read timeout and checking channels between reads — delays
//! every child event by up to the timeout and wakes every idle session periodically.
//!
//! Writes go out with non-blocking `send`; what the socket does not take waits in
//! [`Duplex`]'s own queue, whose size is the back-pressure signal the session uses to
//! stop taking child output (see `session.rs`). A stalled client therefore never
//! blocks the session thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::sys;

/// Bytes read from the socket per chunk.
const READ_CHUNK: usize = 4096;
/// Chunks that may wait for the session: the back-pressure bound on a flooding client.
const INBOUND_QUEUE: usize = 16;
/// Above this much unsent output the session stops taking child events.
pub const HIGH_WATER: usize = 256 * 1024;

/// What the socket reader thread reports.
#[derive(Debug)]
pub enum Inbound {
    Bytes(Vec<u8>),
    /// EOF or a read error: the peer is gone.
    Closed,
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

    fn push_input(&mut self, bytes: &[u8]) {
        if self.read_pos == self.input.len() {
            self.input.clear();
            self.read_pos = 0;
        }
        self.input.extend_from_slice(bytes);
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
    inbound: Receiver<Inbound>,
    reader: Option<thread::JoinHandle<()>>,
    peer: std::net::SocketAddr,
    peer_ip: String,
    /// When the peer last sent anything (for the heartbeat).
    pub last_heard: Instant,
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
    /// Take over a handshaken WebSocket: switch its stream to in-memory reads and start
    /// the socket reader thread.
    pub fn start(
        mut ws: WebSocket<Duplex>,
        peer: std::net::SocketAddr,
        label: &str,
    ) -> io::Result<Link> {
        let tcp = ws.get_ref().tcp.clone();
        tcp.set_read_timeout(None)?;
        tcp.set_nodelay(true)?;
        ws.get_mut().handshake_deadline = None;
        let (tx, inbound) = bounded(INBOUND_QUEUE);
        let reader = thread::Builder::new()
            .name(format!("sock-{label}"))
            .stack_size(64 * 1024)
            .spawn(move || read_socket(tcp, tx))?;
        Ok(Link {
            ws,
            inbound,
            reader: Some(reader),
            peer_ip: peer.ip().to_string(),
            peer,
            last_heard: Instant::now(),
        })
    }

    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }

    /// The peer's IP address, the key of per-peer limits.
    pub fn peer_ip(&self) -> &str {
        &self.peer_ip
    }

    /// The channel of raw socket input, for the session's `select!`.
    pub fn inbound(&self) -> &Receiver<Inbound> {
        &self.inbound
    }

    /// Feed bytes from the reader thread and hand every complete message to `on_message`.
    /// Pings are answered by tungstenite; pongs only refresh the heartbeat.
    pub fn receive(
        &mut self,
        bytes: Vec<u8>,
        mut on_message: impl FnMut(&mut Self, Message),
    ) -> Result<(), LinkError> {
        self.last_heard = Instant::now();
        self.ws.get_mut().push_input(&bytes);
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
                    self.close(CloseCode::Size, "message too large");
                    return Err(LinkError::Protocol(e.to_string()));
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err(LinkError::Gone("connection closed".into()))
                }
                Err(tungstenite::Error::Io(e)) => return Err(LinkError::Gone(e.to_string())),
                Err(e) => {
                    self.close(CloseCode::Protocol, "protocol error");
                    return Err(LinkError::Protocol(e.to_string()));
                }
            }
        }
    }

    /// Queue one text message (sent at the next [`flush`](Self::flush)).
    pub fn queue_text(&mut self, text: String) -> Result<(), LinkError> {
        self.ws
            .write(Message::text(text))
            .map_err(|e| LinkError::Gone(e.to_string()))
    }

    /// Send a WebSocket ping (heartbeat).
    pub fn ping(&mut self) -> Result<(), LinkError> {
        self.ws
            .write(Message::Ping(Default::default()))
            .map_err(|e| LinkError::Gone(e.to_string()))
    }

    /// Push queued output to the socket, as far as it takes it without blocking.
    pub fn flush(&mut self) -> Result<(), LinkError> {
        match self.ws.flush() {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(LinkError::Gone(e.to_string())),
        }
    }

    /// Bytes queued but not yet taken by the socket.
    pub fn pending(&self) -> usize {
        self.ws.get_ref().pending()
    }

    /// How long queued output has waited without progress.
    pub fn stalled_for(&self) -> Duration {
        self.ws.get_ref().stalled_for()
    }

    /// Send a close frame with `code` and `reason` (best effort).
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        let _ = self.ws.close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        }));
        let _ = self.ws.flush();
    }

    /// Give queued output up to `limit` to reach the peer, then shut the socket down so
    /// the reader thread ends, and join it.
    pub fn finish(mut self, limit: Duration) {
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
        let _ = tcp.shutdown(Shutdown::Both);
        // Let go of the channel so a reader blocked on a full queue wakes and ends.
        self.inbound = crossbeam_channel::never();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Link {
    /// Even if the session ends without `finish` (a panic), the socket is shut so the
    /// reader thread and the peer learn at once.
    fn drop(&mut self) {
        let _ = self.ws.get_ref().tcp.shutdown(Shutdown::Both);
    }
}

fn read_socket(tcp: Arc<TcpStream>, tx: Sender<Inbound>) {
    let mut buf = [0u8; READ_CHUNK];
    loop {
        match (&*tcp).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(Inbound::Bytes(buf[..n].to_vec())).is_err() {
                    return; // the session is gone
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = tx.send(Inbound::Closed);
}
