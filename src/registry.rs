//! What the server knows about its sessions: the listing behind `/sessions`, the
//! counters behind `/health` and the limits, and a way to tell every session to stop.
//!
//! Counters are held by drop guards, so a session that ends any way at all (including
//! a panic) gives its slot back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;
use serde::Serialize;

use crate::link::Link;
use crate::util::lock;

/// What a session is doing, as `/sessions` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Connected, no query running.
    Idle,
    /// A query is running.
    Running,
    /// A query waits for a `--max-running` place.
    Queued,
    /// Its client went away without ending it: it waits `--reconnect-grace-secs` for
    /// the client to reattach, its query (if any) still running.
    Detached,
    /// The session is ending (its child is being stopped).
    Closing,
}

/// The WebSocket endpoint a session came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `/ws`: claude-ws's own protocol.
    Ws,
    /// `/sdk`: the CLI's stream-json relayed for the Agent SDKs (`sdk/`).
    Sdk,
}

/// One row of `/sessions`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub endpoint: Endpoint,
    pub claude_session_id: Option<String>,
    pub state: SessionState,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub last_activity: u64,
    pub queries: u64,
    pub peer: String,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// The pid of the session's live `claude` child, if it has one.
    pub child_pid: Option<u32>,
    /// How many connections (viewers) the session has (0 while detached).
    pub viewers: usize,
    /// Whom the session belongs to (see `auth::Principal`); not shown.
    #[serde(skip)]
    pub principal: String,
    /// A query runs (or waits for a place): a detached session is not ended to make
    /// room then. Not shown (`state` says `running`/`queued` while attached).
    #[serde(skip)]
    pub query_running: bool,
}

/// A message the server sends a session from outside.
pub enum Control {
    /// The server is shutting down: close with 1001 and stop the child.
    Shutdown,
    /// The server drains: end with 1012 once no query is running.
    Drain,
    /// A queued query needs a place: stop the idle child (see `places.rs`).
    Evict,
    /// The queue for places moved: the session's position may have changed.
    QueueMoved,
    /// Its client reconnected (`/ws?session_id=…&last_seq=N`): carry on over this link,
    /// sending again what came after `last_seq`.
    Attach(Box<Link>, u64),
    /// A new connection needs its slot: end now if still detached with no query
    /// running, the way that keeps the conversation resumable.
    Reclaim,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Shutdown => f.write_str("Shutdown"),
            Control::Drain => f.write_str("Drain"),
            Control::Evict => f.write_str("Evict"),
            Control::QueueMoved => f.write_str("QueueMoved"),
            Control::Attach(_, seq) => write!(f, "Attach(after {seq})"),
            Control::Reclaim => f.write_str("Reclaim"),
        }
    }
}

impl PartialEq for Control {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// Why a session cannot be reattached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachRefusal {
    /// No such session (it ended, or never was).
    Unknown,
    /// It belongs to another principal.
    NotYours,
}

struct Entry {
    info: SessionInfo,
    control: Sender<Control>,
}

/// Shared by the accept loop, every session and the side port.
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
    per_peer: Mutex<HashMap<String, usize>>,
    reserved: AtomicUsize,
    started: Instant,
    /// Notified when a session is unlisted, and by [`Registry::wake`].
    changed: Condvar,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            per_peer: Mutex::new(HashMap::new()),
            reserved: AtomicUsize::new(0),
            started: Instant::now(),
            changed: Condvar::new(),
        }
    }
}

/// Holds one session slot; gives it back when dropped.
pub struct Slot {
    registry: Arc<Registry>,
    peer_ip: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.reserved.fetch_sub(1, Ordering::SeqCst);
        let mut per_peer = lock(&self.registry.per_peer);
        if let Some(n) = per_peer.get_mut(&self.peer_ip) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.peer_ip);
            }
        }
    }
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    ServerFull,
    PeerFull,
}

/// Whether a session may be ended to make room: a detached `/ws` one with no query
/// running.
fn reclaimable(info: &SessionInfo) -> bool {
    info.endpoint == Endpoint::Ws && info.state == SessionState::Detached && !info.query_running
}

/// Keeps a session listed; removes it when dropped.
pub struct Listing {
    registry: Arc<Registry>,
    id: String,
}

impl Listing {
    /// Change this session's row.
    pub fn update(&self, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(e) = lock(&self.registry.sessions).get_mut(&self.id) {
            f(&mut e.info);
        }
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        lock(&self.registry.sessions).remove(&self.id);
        self.registry.changed.notify_all();
    }
}

impl Registry {
    /// Reserve a session slot for a connection of `peer_ip` (the principal's key for
    /// limits: see `auth::Principal`), unless the server or that key is at its limit.
    pub fn reserve(
        self: &Arc<Self>,
        peer_ip: &str,
        max: usize,
        max_per_peer: usize,
    ) -> Result<Slot, SlotRefusal> {
        let mut per_peer = lock(&self.per_peer);
        let mine = per_peer.get(peer_ip).copied().unwrap_or(0);
        if mine >= max_per_peer {
            return Err(SlotRefusal::PeerFull);
        }
        if self
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(SlotRefusal::ServerFull);
        }
        per_peer.insert(peer_ip.to_string(), mine + 1);
        Ok(Slot {
            registry: self.clone(),
            peer_ip: peer_ip.to_string(),
        })
    }

    /// Reserve a slot as [`Registry::reserve`] does; when the server or the key is at
    /// its limit, end the least recently used detached `/ws` session with no query
    /// running (of that key, for the key's limit) to make room, and wait up to `wait`
    /// for its slot. Refused only when no such session is left.
    pub fn reserve_or_reclaim(
        self: &Arc<Self>,
        key: &str,
        (max, max_per_peer): (usize, usize),
        wait: std::time::Duration,
    ) -> Result<Slot, SlotRefusal> {
        let deadline = Instant::now() + wait;
        let mut asked: Vec<String> = Vec::new();
        loop {
            let why = match self.reserve(key, max, max_per_peer) {
                Ok(slot) => return Ok(slot),
                Err(why) => why,
            };
            let mut sessions = lock(&self.sessions);
            // The last one asked: gone (its slot comes back just after its listing),
            // still ending, or taken back by its client (then another is asked).
            let refused = asked.last().map(|id| {
                sessions
                    .get(id)
                    .is_some_and(|e| e.info.state != SessionState::Detached || e.info.query_running)
            });
            if refused.unwrap_or(true) {
                let victim = sessions
                    .values()
                    .filter(|e| {
                        reclaimable(&e.info)
                            && !asked.contains(&e.info.session_id)
                            && (why == SlotRefusal::ServerFull
                                || e.info.principal == key
                                || e.info.peer == key)
                    })
                    .min_by_key(|e| (e.info.last_activity, e.info.created_at));
                match victim {
                    Some(v) if v.control.try_send(Control::Reclaim).is_ok() => {
                        log::info!(
                            "ending detached session {} to make room ({why:?})",
                            v.info.session_id
                        );
                        asked.push(v.info.session_id.clone());
                    }
                    _ => return Err(why),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(why);
            }
            // The slot is given back just after the listing goes: look again soon.
            let slice = (deadline - now).min(std::time::Duration::from_millis(50));
            sessions = self
                .changed
                .wait_timeout(sessions, slice)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            drop(sessions);
        }
    }

    /// List a session; it stays listed while the returned guard lives.
    pub fn list(self: &Arc<Self>, info: SessionInfo, control: Sender<Control>) -> Listing {
        let id = info.session_id.clone();
        lock(&self.sessions).insert(id.clone(), Entry { info, control });
        Listing {
            registry: self.clone(),
            id,
        }
    }

    /// The rows of `principal`'s sessions (every session's for `None`), oldest first.
    pub fn snapshot(&self, principal: Option<&str>) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = lock(&self.sessions)
            .values()
            .filter(|e| principal.is_none_or(|p| e.info.principal == p))
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.session_id).cmp(&(b.created_at, &b.session_id)));
        v
    }

    /// Sessions currently listed.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Queries running right now.
    pub fn running_count(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|e| e.info.state == SessionState::Running)
            .count()
    }

    /// Sessions listed that came to `endpoint`.
    pub fn endpoint_count(&self, endpoint: Endpoint) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|e| e.info.endpoint == endpoint)
            .count()
    }

    /// Sessions listed but the detached `/ws` ones with no query running (each of
    /// those is ended to make room when a new one needs its slot:
    /// [`Registry::reserve_or_reclaim`]).
    pub fn unreclaimable_count(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|e| !reclaimable(&e.info))
            .count()
    }

    /// Sessions waiting for their client to reattach.
    /// Connections to sessions (viewers), over every session.
    pub fn viewer_count(&self) -> usize {
        lock(&self.sessions).values().map(|e| e.info.viewers).sum()
    }

    pub fn detached_count(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|e| e.info.state == SessionState::Detached)
            .count()
    }

    /// The control channel of session `id`, for a client of `principal` reattaching.
    /// A session of the other endpoint is unknown here.
    pub fn attach(
        &self,
        id: &str,
        principal: &str,
        endpoint: Endpoint,
    ) -> Result<Sender<Control>, AttachRefusal> {
        let sessions = lock(&self.sessions);
        let e = sessions
            .get(id)
            .filter(|e| e.info.endpoint == endpoint)
            .ok_or(AttachRefusal::Unknown)?;
        if e.info.principal != principal {
            return Err(AttachRefusal::NotYours);
        }
        Ok(e.control.clone())
    }

    /// The CLI conversation of session `id`, if it belongs to `principal` (so a client
    /// may `resume` by the server's session id).
    pub fn conversation_of(&self, id: &str, principal: &str) -> Option<String> {
        let sessions = lock(&self.sessions);
        let e = sessions.get(id).filter(|e| e.info.principal == principal)?;
        e.info.claude_session_id.clone()
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Wait until no session is listed, `deadline` passes, or `cut_short` says so
    /// (checked whenever [`Registry::wake`] is called); returns the sessions left.
    /// Woken by each session that ends, not polled.
    pub fn wait_until_empty(&self, deadline: Instant, cut_short: impl Fn() -> bool) -> usize {
        let mut sessions = lock(&self.sessions);
        loop {
            let now = Instant::now();
            if sessions.is_empty() || now >= deadline || cut_short() {
                return sessions.len();
            }
            // Sessions are removed and `cut_short` is set before the notification,
            // which takes this lock: no wake-up is lost between the check and the wait.
            sessions = self
                .changed
                .wait_timeout(sessions, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Wake [`Registry::wait_until_empty`] to check its `cut_short`.
    pub fn wake(&self) {
        let _guard = lock(&self.sessions);
        self.changed.notify_all();
    }

    /// Tell every session the server is shutting down.
    pub fn broadcast_shutdown(&self) {
        for e in lock(&self.sessions).values() {
            let _ = e.control.try_send(Control::Shutdown);
        }
    }

    /// Tell every session the server drains.
    pub fn broadcast_drain(&self) {
        for e in lock(&self.sessions).values() {
            let _ = e.control.try_send(Control::Drain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_given_back() {
        let r = Arc::new(Registry::default());
        let a = r.reserve("1.1.1.1", 2, 1).unwrap();
        assert_eq!(
            r.reserve("1.1.1.1", 2, 1).err(),
            Some(SlotRefusal::PeerFull)
        );
        let b = r.reserve("2.2.2.2", 2, 1).unwrap();
        assert_eq!(
            r.reserve("3.3.3.3", 2, 1).err(),
            Some(SlotRefusal::ServerFull)
        );
        drop(a);
        assert!(r.reserve("1.1.1.1", 2, 1).is_ok());
        drop(b);
        assert_eq!(r.reserved.load(Ordering::SeqCst), 0);
    }

    fn row(id: &str, principal: &str, state: SessionState, last: u64, busy: bool) -> SessionInfo {
        SessionInfo {
            session_id: id.into(),
            endpoint: Endpoint::Ws,
            claude_session_id: None,
            state,
            created_at: 1,
            last_activity: last,
            queries: 0,
            peer: "127.0.0.1".into(),
            cwd: None,
            user: None,
            child_pid: None,
            principal: principal.into(),
            query_running: busy,
            viewers: usize::from(state != SessionState::Detached),
        }
    }

    #[test]
    fn a_full_server_ends_the_least_recently_used_idle_detached_session_for_a_newcomer() {
        use std::time::Duration;
        let r = Arc::new(Registry::default());
        let mut held = Vec::new();
        let mut inboxes = Vec::new();
        for (id, state, last, busy) in [
            ("a1", SessionState::Detached, 10, true), // a query runs: kept
            ("b2", SessionState::Idle, 5, false),     // attached: kept
            ("c3", SessionState::Detached, 20, false),
            ("d4", SessionState::Detached, 30, false),
        ] {
            let slot = r.reserve("k", 4, 10).unwrap();
            let (tx, rx) = crossbeam_channel::bounded(4);
            held.push((slot, r.list(row(id, "p", state, last, busy), tx)));
            inboxes.push(rx);
        }
        // The session asked ends (its listing, then its slot, go) on its own thread.
        let victim = inboxes[2].clone();
        let (slot, listing) = held.remove(2);
        let ender = std::thread::spawn(move || {
            assert_eq!(
                victim.recv_timeout(Duration::from_secs(5)).ok(),
                Some(Control::Reclaim)
            );
            drop(listing);
            std::thread::sleep(Duration::from_millis(20));
            drop(slot);
        });
        let got = r.reserve_or_reclaim("k", (4, 10), Duration::from_secs(5));
        assert!(got.is_ok());
        ender.join().unwrap();
        for (i, rx) in inboxes.iter().enumerate() {
            if i != 2 {
                assert!(rx.try_recv().is_err(), "session {i} was asked");
            }
        }
        // No idle detached session of another key for a key at its own cap.
        let _full = r.reserve("solo", 10, 1).unwrap();
        assert_eq!(
            r.reserve_or_reclaim("solo", (10, 1), Duration::from_millis(100))
                .err(),
            Some(SlotRefusal::PeerFull)
        );
        assert!(inboxes[3].try_recv().is_err());
    }
}
