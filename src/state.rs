//! What every thread of the server shares: the configuration, the session registry,
//! the rate limits, and whether the server is draining or shutting down.
//!
//! It lives apart from `server.rs` so the pieces that read it (the handshake, the side
//! port, the sessions) depend on it, not on the accept loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::child::Reaper;
use crate::config::Config;
use crate::limits::PeerRates;
use crate::places::Places;
use crate::registry::Registry;
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
    pub connections: AtomicUsize,
    ws_addr: SocketAddr,
    /// `claude --version`, filled once by the start-up check (`preflight.rs`).
    pub claude_version: OnceLock<Result<String, String>>,
    /// What that CLI offers (`features.rs`): its `--help` flags, its first `system/init`.
    pub features: crate::features::Detected,
}

impl Shared {
    pub fn new(config: Config, child_env: Vec<(String, String)>, ws_addr: SocketAddr) -> Shared {
        let (n, window) = config.rate_limit;
        let state_dir = config.state_dir.clone().or_else(|| {
            // With authentication there are several principals: keep them apart even
            // when no directory was named.
            let home = child_env.iter().find(|(k, _)| k == "HOME").map(|(_, v)| v);
            crate::auth::enabled(&config)
                .then(|| home.map(|h| PathBuf::from(h).join(".local/state/claude-ws")))
                .flatten()
        });
        let places = Places::new(config.max_running);
        let reaper = Reaper::default();
        let warm = Warm::new(
            config.warm_children,
            crate::warm::default_spec(&config, &child_env, state_dir.is_some()),
            places.clone(),
            reaper.clone(),
            config.stop_grace,
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
            connections: AtomicUsize::new(0),
            ws_addr,
            claude_version: OnceLock::new(),
            features: Default::default(),
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
