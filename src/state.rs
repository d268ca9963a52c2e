//! What every thread of the server shares: the configuration, the session registry,
//! the rate limits, and whether the server is draining or shutting down.
//!
//! It lives apart from `server.rs` so the pieces that read it (the handshake, the side
//! port, the sessions) depend on it, not on the accept loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use crate::child::Reaper;
use crate::config::Config;
use crate::limits::PeerRates;
use crate::places::Places;
use crate::registry::Registry;
use crate::util::lock;
use crate::warm::Warm;

/// State every thread of the server shares.
pub struct Shared {
    pub config: Config,
    /// The allow-listed environment children get, computed once.
    pub child_env: Vec<(String, String)>,
    pub registry: Arc<Registry>,
    /// The `--max-running` places for children, and the queue for them.
    pub places: Arc<Places>,
    /// Query rates per principal (the limit key of `handshake::Newcomer`).
    pub peer_rates: PeerRates,
    /// Where each principal's CLI state lives (`None`: the CLI's own location).
    pub state_dir: Option<PathBuf>,
    /// Stops children that sessions let go of; shutdown waits for it.
    pub reaper: Reaper,
    /// Children started ahead of need (`--warm-children`).
    pub warm: Arc<Warm>,
    shutting_down: AtomicBool,
    /// Set once a drain begins (SIGTERM, `POST /drain`): no new sessions; sessions end
    /// with 1012 once their query is over.
    draining: AtomicBool,
    /// Connections with a thread of their own (in their handshake or session).
    pub connections: Connections,
    ws_addr: SocketAddr,
    /// `claude --version`, filled once by the start-up check (`preflight.rs`).
    pub claude_version: OnceLock<Result<String, String>>,
    /// The sandbox children run in (`sandbox.rs`); `None`: off.
    pub sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    /// What that CLI offers (`features.rs`): its `--help` flags, its first `system/init`.
    pub features: Arc<crate::features::Detected>,
}

impl Shared {
    pub fn new(
        config: Config,
        child_env: Vec<(String, String)>,
        ws_addr: SocketAddr,
        sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    ) -> Shared {
        let (n, window) = config.rate_limit;
        let home = child_env.iter().find(|(k, _)| k == "HOME").map(|(_, v)| v);
        // With authentication there are several principals: keep them apart even when
        // no directory was named (a sandbox, too, keeps each to its own).
        let state_dir = config.state_dir_or_default(
            home.map(String::as_str),
            crate::auth::enabled(&config) || sandbox.is_some(),
        );
        let places = Places::new(config.max_running);
        let reaper = Reaper::default();
        let features = Arc::new(crate::features::Detected::default());
        let warm = Warm::new(
            (config.warm_children, config.timeouts.child_idle),
            crate::warm::serves(&config, &child_env, state_dir.is_some()),
            places.clone(),
            reaper.clone(),
            (features.clone(), config.timeouts.stop_grace),
        );
        Shared {
            places,
            warm,
            child_env,
            registry: Arc::new(Registry::default()),
            peer_rates: PeerRates::new(n, window),
            state_dir,
            reaper,
            config,
            shutting_down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            connections: Connections::default(),
            ws_addr,
            claude_version: OnceLock::new(),
            sandbox,
            features,
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Mark the server as shutting down; true for the first caller only.
    pub fn begin_shutdown(&self) -> bool {
        !self.shutting_down.swap(true, Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Mark the server as draining; true for the first caller only.
    pub fn begin_drain(&self) -> bool {
        !self.draining.swap(true, Ordering::SeqCst)
    }

    /// The WebSocket listener's address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }
}

/// How many connections have a thread of their own, and a wait for them all to be gone
/// (shutdown), woken by the last one to leave rather than polled.
#[derive(Default)]
pub struct Connections {
    open: Mutex<usize>,
    left: Condvar,
}

impl Connections {
    pub fn count(&self) -> usize {
        *lock(&self.open)
    }

    pub fn enter(&self) {
        *lock(&self.open) += 1;
    }

    pub fn leave(&self) {
        let mut open = lock(&self.open);
        *open = open.saturating_sub(1);
        if *open == 0 {
            self.left.notify_all();
        }
    }

    /// Wait until no connection is open, or `deadline`; returns how many are still
    /// open. `every` runs at least every `tick` while it waits.
    pub fn wait_gone(
        &self,
        deadline: Instant,
        tick: std::time::Duration,
        mut every: impl FnMut(),
    ) -> usize {
        let mut open = lock(&self.open);
        loop {
            let now = Instant::now();
            if *open == 0 || now >= deadline {
                return *open;
            }
            let wait = tick.min(deadline - now);
            open = self
                .left
                .wait_timeout(open, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            if *open > 0 {
                drop(open);
                every();
                open = lock(&self.open);
            }
        }
    }
}
