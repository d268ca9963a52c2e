//! claude-ws: Claude Code on a WebSocket, one session per connection.
//!
//! The thread model, in a paragraph: a blocking accept loop ([`Server::run`]) hands each
//! socket to a short-lived thread for the handshake, which then starts the session's
//! own thread (`session/`) on a fresh stack. One thread watches every connection's
//! socket (epoll) and tells the session when its client sent something, so a quiet
//! connection costs one thread; a session's `claude` child has three pipe threads
//! (stdout reader, stderr drain, stdin writer). Client input, child events, control
//! messages and timers all reach the session through one crossbeam `select!`, so one
//! thread decides everything for a session without locks or polling.
//!
//! Every thread, what it blocks on, and the bounds:
//!
//! | thread | blocks on | bound |
//! |---|---|---|
//! | accept loop (1) | `accept(2)` | woken by a connection to itself at shutdown |
//! | handshake (1 per new connection) | socket reads | `--handshake-timeout-secs` in all; at most `--max-sessions` + 64 at once |
//! | session (1 per session) | one `select!` with a timeout | never on a socket (non-blocking; a connection it lets go of lingers on a thread of its own) or a pipe (stdin goes through a queue, `try_send`); only once the session ends, up to 1 s for its last close frame |
//! | socket watcher (1) | `epoll_wait` | tells sessions with `try_send` into a channel of 1 |
//! | child stdout reader (1 per child) | pipe reads; sending a chunk to its session | channel of 2 chunks: the back-pressure on the child; drains and discards once the session lets go |
//! | child stderr drain (1 per child) | pipe reads | keeps the last 4 KiB |
//! | child stdin writer (1 per child) | its queue; pipe writes | queue of 64 lines, filled with `try_send` |
//! | spawner (1) | its queue of spawns | a session waits for its own fork and exec only |
//! | linger (1 per connection a live session lets go of: detached, a viewer gone, or taken over) | socket reads, to let the close frame reach the peer | 200 ms |
//! | reaper (1 per stopping child) | the child's pidfd, with the stop ladder's deadlines | one per `--max-running` place |
//! | tool-registry request (≤ 4 per session) | one HTTP exchange | 3 s |
//! | side port (4 workers + tiny_http's accept thread): `/health`, `/sessions`, `/metrics` | requests | `/health` never waits for the start-up check |
//! | start-up check (1, once) | `claude --version` | 5 s, then its process group is killed |
//!
//! Why no cycle of waits can form: a session waits only in its `select!`, which has a
//! deadline, and for its own fork and exec. Nothing waits for a session without a bound:
//! every sender into a session uses `try_send` on a bounded channel (the watcher, the
//! places queue, the registry broadcast) or a timed send (a reattaching connection,
//! 5 s), and the child's stdout reader, the one thread that does wait for its session,
//! is waited for by nobody but the reaper, which lets go of the channel first. A session
//! never waits for another session: places are handed on through a channel of one that
//! is only written with `try_send`. Shutdown and the reaper wait with deadlines; shutdown
//! and a drain are woken by the last connection or session to end (condition
//! variables), not by polling.
//!
//! Embedding:
//! ```no_run
//! let mut config = claude_ws::Config::default();
//! config.port = 0; // any free port
//! config.http_port = 0;
//! let server = claude_ws::Server::bind(config).expect("bind");
//! println!("{}", server.ready_line());
//! let handle = server.handle();
//! let t = std::thread::spawn(move || server.run());
//! // ... later, from any thread:
//! handle.shutdown();
//! t.join().unwrap();
//! ```
#![deny(unsafe_code)]
// Denied everywhere but `sys`, the one module allowed `unsafe` (libc calls std has
// no API for); `forbid` would not let it opt in.

mod auth;
mod child;
mod cli;
pub mod config;
mod conversations;
mod features;
mod handle;
mod handshake;
mod history;
mod http;
mod json;
mod limits;
mod link;
mod metrics;
mod pending;
mod places;
mod preflight;
pub mod protocol;
mod proxy;
mod query;
mod registry;
mod replay;
mod sandbox;
mod sdk;
mod server;
mod session;
mod spec;
mod state;
#[allow(unsafe_code)]
mod sys;
mod tool_registry;
mod tools;
mod util;
mod warm;
mod web;
mod workspace;

pub use config::{Config, ConfigError, Invocation, Timeouts};
pub use handle::ServerHandle;
pub use server::{Error, Server};

#[doc(hidden)] // for examples/autobahn-echo.rs only: not part of the embed API
pub use link::serve_echo;

/// Compile-time checks: the embed API can cross threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Server>();
    send_sync::<ServerHandle>();
    send_sync::<Config>();
};
