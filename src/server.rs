//! The server: both listeners, the blocking accept loop that gives each connection its
//! own thread, and the one shutdown path.
//!
//! Shutdown (from [`ServerHandle::shutdown`], e.g. on SIGINT/SIGTERM): stop accepting
//! (a flag, then a connection to ourselves to wake the blocked `accept`), tell every
//! session (each closes its client with 1001, interrupts its child and hands it to the
//! reaper), wait for them and then for the reaper's stops, with one deadline, stop the
//! side port, return.
//!
//! Drain (from [`ServerHandle::drain`]: SIGTERM, `POST /drain`), for an instance behind
//! a balancer: new sessions are refused (503 `draining`, `/ready` 503), sessions without
//! a query close with 1012 at once and the others once their query is over, for up to
//! `--drain-timeout-secs`; then the shutdown above, whose closes say 1012 too, so
//! clients reconnect through the balancer and resume elsewhere. Children are stopped
//! the graceful way (stdin closed first), which keeps their conversations on disk.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::handle::ServerHandle;
use crate::handshake::{self, Admission};
use crate::link::{self, Duplex, Link};
use crate::protocol::{http_error_body, ErrorCode};
use crate::registry::Control;
use crate::state::Shared;
use crate::{http, session, spec, sys, web};

/// Connections that may be in their handshake beyond `max_sessions`; more are answered
/// 503 at once.
const HANDSHAKE_HEADROOM: usize = 64;

/// Stack size of a connection's first thread, which does the handshake (tungstenite's
/// HTTP parsing and the auth checks go deeper than a session ever does while idle).
/// It ends once the session's thread is started.
const HANDSHAKE_STACK: usize = 256 * 1024;

/// Stack size of a session's thread, which starts fresh after the handshake: an idle
/// session then keeps only the few pages its loop touches, not the handshake's.
/// Only touched pages cost memory (idle-scale benchmark, 10,000 sessions: 182 MB, was
/// 202 MB with one thread giving back its handshake pages); the size is the ceiling
/// for a query's deepest work, parsing and writing JSON nested up to serde_json's 128
/// levels, and is the one the connection thread had before.
const SESSION_STACK: usize = 256 * 1024;

/// Why the server could not start or run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent.
    Config(crate::config::ConfigError),
    /// The sandbox was asked for (or implied by authentication) and cannot be had.
    Sandbox(String),
    /// A listener could not be bound.
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(e) => write!(f, "bad configuration: {e}"),
            Error::Sandbox(e) => write!(f, "refusing to start: {e}"),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    http: Arc<tiny_http::Server>,
    http_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Server {
    /// Check the config and bind both listeners (port 0 picks a free port).
    pub fn bind(config: Config) -> Result<Server, Error> {
        config.validate().map_err(Error::Config)?;
        let sandbox = crate::sandbox::prepare(&config).map_err(Error::Sandbox)?;
        crate::sandbox::announce(&config, sandbox.as_deref());
        // Each session holds one socket, and a live child three pipes; children outlive
        // queries, so count them per session too.
        let want = (config.max_sessions as u64) * 4 + 256;
        match sys::raise_fd_limit(want) {
            Ok(n) if n < want => log::warn!(
                "open-file limit is {n}, below the {want} that {} sessions may need (hard limit)",
                config.max_sessions
            ),
            Ok(_) => {}
            Err(e) => log::warn!("cannot read or raise the open-file limit: {e}"),
        }
        let ws_bind = host_port(&config.host, config.port);
        let listener = TcpListener::bind(&ws_bind).map_err(|source| Error::Bind {
            addr: ws_bind.clone(),
            source,
        })?;
        let ws_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: ws_bind,
            source,
        })?;
        let http_bind = host_port(&config.host, config.http_port);
        let http = tiny_http::Server::http(&http_bind).map_err(|e| Error::Bind {
            addr: http_bind.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let http_addr = http.server_addr().to_ip().ok_or_else(|| Error::Bind {
            addr: http_bind,
            source: std::io::Error::other("not an IP listener"),
        })?;
        let child_env = spec::child_env(std::env::vars(), &config.pass_env);
        let shared = Arc::new(Shared::new(config, child_env, ws_addr, sandbox));
        if shared.sandbox.is_some() && shared.state_dir.is_none() {
            return Err(Error::Sandbox(
                "the sandbox needs a state directory for each principal: set --state-dir \
                 (or HOME)"
                    .into(),
            ));
        }
        Ok(Server {
            listener,
            http: Arc::new(http),
            http_addr,
            shared,
        })
    }

    /// The WebSocket listener's address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.shared.ws_addr()
    }

    /// The side port's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The line printed once both listeners are bound.
    pub fn ready_line(&self) -> String {
        format!(
            "ready ws=ws://{}{} http=http://{}",
            self.ws_addr(),
            crate::protocol::WS_PATH,
            self.http_addr
        )
    }

    /// A handle that can stop the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::new(self.shared.clone())
    }

    /// Serve until [`ServerHandle::shutdown`], then shut down gracefully.
    pub fn run(self) {
        let http_thread = {
            let (server, shared) = (self.http.clone(), self.shared.clone());
            thread::Builder::new()
                .name("http".into())
                .spawn(move || http::serve(&server, &shared))
        };
        self.shared.warm.start();
        let mut next_id: u64 = 0;
        for stream in self.listener.incoming() {
            if self.shared.is_shutting_down() {
                break;
            }
            let tcp = match stream {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            // Connections still in their handshake hold a thread but no session slot
            // yet: bound them too, or idle sockets could exhaust threads.
            let cap = self.shared.config.max_sessions + HANDSHAKE_HEADROOM;
            if self.shared.connections.count() >= cap {
                log::debug!("{cap} connections open; refusing one at once");
                refuse_busy(tcp);
                continue;
            }
            next_id += 1;
            let shared = self.shared.clone();
            shared.connections.enter();
            let guard = ConnectionGuard(shared.clone());
            let spawned = thread::Builder::new()
                .name(format!("conn-{next_id}"))
                .stack_size(HANDSHAKE_STACK)
                .spawn(move || serve_connection(guard, next_id, tcp));
            if let Err(e) = spawned {
                // The guard went with the closure and gave the count back.
                log::error!("cannot start a connection thread: {e}");
            }
        }
        drop(self.listener);
        self.shared.registry.broadcast_shutdown();
        // Warm children go to the reaper with the sessions' children; its wait covers them.
        self.shared.warm.stop();
        let config = &self.shared.config;
        let deadline = Instant::now() + config.timeouts.stop_grace * 2 + Duration::from_secs(3);
        // The last connection to end wakes this wait. Sessions listed after the broadcast
        // see the flag themselves; the broadcast is repeated now and then for a session
        // whose control channel was full (`try_send` dropped the message).
        let registry = &self.shared.registry;
        let left = self
            .shared
            .connections
            .wait_gone(deadline, Duration::from_millis(100), || {
                registry.broadcast_shutdown()
            });
        if left > 0 {
            log::warn!("{left} connections still open at the shutdown deadline");
        }
        // Sessions hand their children to the reaper and end at once; wait for the
        // stops too, so nothing the server started is left running when it returns.
        let stopping = self.shared.reaper.wait(deadline);
        if stopping > 0 {
            log::warn!("{stopping} claude processes still being stopped at the shutdown deadline");
        }
        self.http.unblock();
        if let Ok(h) = http_thread {
            let _ = h.join();
        }
        log::info!("stopped");
    }
}

/// Answer a connection the server has no room for with HTTP 503, without blocking
/// the accept loop, and close it.
fn refuse_busy(tcp: TcpStream) {
    crate::metrics::refused(crate::metrics::TOO_MANY_CONNECTIONS);
    let body = http_error_body(
        ErrorCode::ServerFull,
        "the server has no room for more connections",
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if tcp.set_nonblocking(true).is_ok() {
        let _ = (&tcp).write(response.as_bytes());
    }
}

/// `host:port`, with an IPv6 literal in brackets (`[::1]:8000`).
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Counts one connection (in its handshake or in its session) while it lives; it moves
/// from the handshake's thread to the session's.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.leave();
    }
}

/// One connection: the handshake on this thread, then its session on a fresh one.
fn serve_connection(guard: ConnectionGuard, n: u64, tcp: TcpStream) {
    let shared = &*guard.0;
    let Ok(peer) = tcp.peer_addr() else { return };
    let config = &shared.config;
    let _ = tcp.set_write_timeout(Some(config.timeouts.handshake_timeout));
    // Plain HTTP (the page, `/health`) is answered by `web`; an upgrade goes on to the
    // handshake with the head already read, within the same time limit.
    let deadline = Instant::now() + config.timeouts.handshake_timeout;
    let head = match web::read_head(&tcp, deadline) {
        Ok(head) => head,
        Err(web::HeadError::TooLarge) => {
            web::refuse_large_head(&tcp);
            return;
        }
        Err(e) => {
            log::debug!("{peer}: {e}");
            return;
        }
    };
    if !web::is_upgrade(&head) {
        web::answer(shared, &tcp, &head, peer);
        return;
    }
    let tcp = Arc::new(tcp);
    let left = deadline.saturating_duration_since(Instant::now());
    let duplex = Duplex::for_handshake(tcp.clone(), left).already_read(head);
    let mut admitted: Option<Admission> = None;
    // The closure's error type is fixed by tungstenite's handshake `Callback`.
    #[allow(clippy::result_large_err)]
    let ws = tungstenite::accept_hdr_with_config(
        duplex,
        |req: &tungstenite::handshake::server::Request, resp| {
            handshake::check(shared, peer, req, resp, &mut admitted)
        },
        Some(link::ws_config(config.max_message_bytes)),
    );
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            log::debug!("handshake with {peer} failed: {e}");
            return;
        }
    };
    let Some(admission) = admitted else { return };
    let link = match Link::start(ws, peer) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot watch the socket of {peer}: {e}");
            return;
        }
    };
    match admission {
        Admission::New(newcomer) => {
            // The session gets a thread of its own, whose stack has none of the
            // handshake's deep frames in it; this one ends. (Everything the closure
            // holds is dropped, and the connection counted off, if it cannot start.)
            let spawned = thread::Builder::new()
                .name(format!("session-{n}"))
                .stack_size(SESSION_STACK)
                .spawn(move || {
                    if newcomer.sdk {
                        crate::sdk::serve(&guard.0, link, peer, newcomer);
                    } else {
                        session::serve(&guard.0, link, peer, newcomer);
                    }
                    drop(guard);
                });
            if let Err(e) = spawned {
                log::error!("cannot start the session thread of {peer}: {e}");
            }
        }
        Admission::Reattach {
            session_id,
            control,
            last_seq,
        } => {
            // The session's own thread carries on over this link; this one is done.
            let label: String = session_id.chars().take(8).collect();
            log::info!("[{label}] client reattaching from {peer} after seq {last_seq}");
            if let Err(e) = control.send_timeout(
                Control::Attach(Box::new(link), last_seq),
                Duration::from_secs(5),
            ) {
                log::warn!("[{label}] the session ended before the client reattached");
                if let Control::Attach(mut link, _) = e.into_inner() {
                    link.close(crate::protocol::Closing::SessionGone);
                    link.finish(Duration::from_secs(1));
                }
            }
        }
    }
}
