//! [`ServerHandle`]: stops a running server from any thread, at once (shutdown) or
//! after letting running queries finish (drain). It sits beside [`Shared`], under both
//! the accept loop (`server.rs`) and the side port (`http.rs`, `POST /drain`), which
//! each hold one.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::state::Shared;

/// Stops a running server from another thread. Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> ServerHandle {
        ServerHandle { shared }
    }

    /// Begin a graceful shutdown; [`Server::run`] returns once it is done.
    pub fn shutdown(&self) {
        if self.shared.begin_shutdown() {
            log::info!("shutting down");
            // A drain waiting for sessions to end stops waiting.
            self.shared.registry.wake();
            // Wake the accept loop, blocked in accept(2).
            let _ = TcpStream::connect_timeout(
                &wake_addr(self.shared.ws_addr()),
                Duration::from_secs(1),
            );
        }
    }
}

impl ServerHandle {
    /// Begin a drain, as on SIGTERM: new sessions are refused (HTTP 503 `draining`,
    /// `/ready` 503); sessions without a running query close with 1012 at once and the
    /// others once their query has ended, for up to `Timeouts::drain_timeout`; then
    /// [`ServerHandle::shutdown`], whose closes say 1012 too. Children are stopped the way
    /// that keeps their conversations. [`Server::run`] returns once it is done.
    /// Returns at once; a second call does nothing.
    pub fn drain(&self) {
        let shared = &self.shared;
        if shared.is_shutting_down() || !shared.begin_drain() {
            return;
        }
        let timeout = shared.config.timeouts.drain_timeout;
        let r = &shared.registry;
        log::info!(
            "draining before shutting down: new sessions are refused; {} sessions, {} \
             queries running, {} detached; queries may finish within {timeout:?}",
            r.session_count(),
            r.running_count(),
            r.detached_count()
        );
        shared.registry.broadcast_drain();
        let handle = self.clone();
        let started = Instant::now();
        let spawned = thread::Builder::new()
            .name("drain".into())
            .spawn(move || handle.await_drain(started + timeout));
        if let Err(e) = spawned {
            log::error!("cannot start the drain thread: {e}; shutting down now");
            self.shutdown();
        }
    }

    /// Wait until every session has ended, or the deadline; then shut down.
    fn await_drain(&self, deadline: Instant) {
        let started = Instant::now();
        let r = &self.shared.registry;
        let left = r.wait_until_empty(deadline, || self.shared.is_shutting_down());
        if self.shared.is_shutting_down() {
            return; // cut short by `shutdown`
        }
        if left == 0 {
            log::info!(
                "drain: every session has ended after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        } else {
            log::warn!(
                "drain: the timeout (--drain-timeout-secs) passed with {left} sessions \
                 left, {} of them running a query: interrupting those, closing every \
                 client with 1012",
                r.running_count()
            );
        }
        self.shutdown();
    }
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}
