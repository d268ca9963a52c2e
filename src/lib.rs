//! claude-ws: Claude Code on a WebSocket, one session per connection.
//!
//! The thread model, in a paragraph: a blocking accept loop ([`Server::run`]) hands each
//! socket to its own OS thread, which does the handshake and then runs the session's
//! loop (`session.rs`). One thread watches every connection's socket (epoll) and tells
//! the session when its client sent something, so a quiet connection costs one thread;
//! a session's `claude` child has three pipe threads (stdout reader, stderr drain,
//! stdin writer). Client input, child events, shutdown and timers all
//! reach the session through one crossbeam `select!`, so one thread decides everything
//! for a session without locks or polling. A few tiny_http threads serve `/health`
//! and `/sessions` on a side port; `claude --version` is checked once at start, on a
//! thread of its own with a time limit.
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
mod handshake;
mod http;
mod json;
mod limits;
mod link;
mod pending;
mod places;
mod preflight;
pub mod protocol;
mod proxy;
mod query;
mod registry;
mod replay;
mod server;
mod session;
mod spec;
mod state;
#[allow(unsafe_code)]
mod sys;
mod tool_registry;
mod tools;
mod warm;

pub use config::{Config, ConfigError, Invocation};
pub use server::{Error, Server, ServerHandle};

#[doc(hidden)] // for examples/autobahn-echo.rs only: not part of the embed API
pub use link::serve_echo;

/// Compile-time checks: the embed API can cross threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Server>();
    send_sync::<ServerHandle>();
    send_sync::<Config>();
};
