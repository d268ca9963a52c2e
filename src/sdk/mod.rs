//! `/sdk`: the CLI's own stream-json on a WebSocket, for the official Agent SDKs
//! (docs/protocol.md, "`/sdk`").
//!
//! The first client frame is `sdk_start` with `query.options`' names (plus
//! `sdk_mcp_servers`); they are checked by the same policy as `/ws` (`spec::build`) and
//! start one child in a `--max-running` place. The server says `sdk_started`, and from
//! then on relays raw lines both ways: each client text frame is one stdin line (after
//! the control-request filter of `policy.rs`), each stdout line one text frame, as the
//! CLI wrote it. The SDK sends its own `initialize` (hooks, in-process MCP servers), so
//! the child must be a fresh one: warm children (already initialised by the server)
//! are never used here.
//!
//! Like a `/ws` session it is listed in `/sessions`, detaches when its connection drops
//! (a close other than 1000), keeps what it sends for `--reconnect-grace-secs`
//! (`replay.rs`, numbered by frames after `sdk_started`), and takes its client back on
//! `/sdk?session_id=S&last_frame=N`. A drain closes it with 1012 once no turn runs.

pub mod policy;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, never, select, Receiver, Sender};
use serde_json::Value;
use tungstenite::Message;

use crate::child::{Child, ChildEvent, ChildSpec, Stop, Undelivered};
use crate::handshake::Newcomer;
use crate::link::{Link, LinkError, HIGH_WATER};
use crate::places::{Acquired, ChildSlot};
use crate::protocol::{sdk as frames, ClientError, Closing, ErrorCode, QueryOptions};
use crate::registry::{Control, Endpoint, Listing, SessionInfo, SessionState};
use crate::replay::{Replay, Since};
use crate::state::Shared;
use crate::tools::{self, Tools};
use crate::util::{last_chars, new_session_id, now_unix, truncate};
use crate::workspace;
use policy::Verdict;

pub use crate::protocol::SDK_PATH;

/// Longest name of an in-process MCP server.
const MAX_SERVER_NAME: usize = 64;

/// `sdk_start`'s options: `query.options` plus the client's in-process MCP servers.
#[derive(Debug, Default, PartialEq)]
pub struct StartOptions {
    pub query: QueryOptions,
    pub sdk_mcp_servers: Vec<String>,
}

/// Read a client's first frame: `{"type":"sdk_start","options":{...}}`.
pub fn parse_start(text: &str) -> Result<StartOptions, ClientError> {
    let bad = |code, why: String| ClientError::new(code, why);
    let v: Value = serde_json::from_str(text).map_err(|e| {
        bad(
            ErrorCode::InvalidJson,
            format!("the frame is not JSON: {e}"),
        )
    })?;
    match v.get("type").and_then(Value::as_str) {
        Some("sdk_start") => {}
        Some(t) => {
            return Err(bad(
                ErrorCode::UnknownType,
                format!(
                    "the first frame on {SDK_PATH} must be sdk_start, not {:?}",
                    truncate(t, 64)
                ),
            ))
        }
        None => {
            return Err(bad(
                ErrorCode::MissingType,
                "the first frame must be {\"type\":\"sdk_start\",\"options\":{...}}".into(),
            ))
        }
    }
    let mut options = match v.get("options") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(bad(
                ErrorCode::InvalidField,
                "options must be an object".into(),
            ))
        }
    };
    let servers = match options.remove("sdk_mcp_servers") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value::<Vec<String>>(v).map_err(|_| {
            bad(
                ErrorCode::InvalidOption,
                "sdk_mcp_servers must be a list of names".into(),
            )
        })?,
    };
    for name in &servers {
        let ok = !name.is_empty()
            && name.len() <= MAX_SERVER_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(bad(
                ErrorCode::InvalidOption,
                format!(
                    "sdk_mcp_servers entries must be names of letters, digits, _ and - (at most {MAX_SERVER_NAME}), not {:?}",
                    truncate(name, 64)
                ),
            ));
        }
    }
    let query: QueryOptions = serde_json::from_value(Value::Object(options))
        .map_err(|e| bad(ErrorCode::InvalidOption, format!("bad options: {e}")))?;
    Ok(StartOptions {
        query,
        sdk_mcp_servers: servers,
    })
}

/// The child's argv for `sdk_start`, from `/ws`'s (`spec::build`, workspace and
/// sandbox applied): without the server's own echo of user messages (the SDKs do not
/// ask the CLI for it), with the client's in-process MCP servers.
pub fn for_sdk(mut spec: ChildSpec, options: &StartOptions) -> ChildSpec {
    spec.args.retain(|a| a != "--replay-user-messages");
    if !options.sdk_mcp_servers.is_empty() {
        spec.args.push(format!(
            "--mcp-config={}",
            tools::mcp_config_for(&options.sdk_mcp_servers)
        ));
    }
    spec
}

/// A stdout line's `type` and `subtype`: all the relay reads of it. The CLI mostly
/// writes `type` first (read from the prefix, no parse); 2.1.332's `result` lines have
/// their keys sorted, so any other line is parsed for the two fields.
#[derive(Debug, Default, serde::Deserialize)]
struct LineKind<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow)]
    subtype: Option<&'a str>,
}

impl<'a> LineKind<'a> {
    fn of(line: &'a [u8]) -> LineKind<'a> {
        const TYPE: &[u8] = br#"{"type":""#;
        if let Some(rest) = line.strip_prefix(TYPE) {
            let Some(end) = rest.iter().position(|&b| b == b'"') else {
                return LineKind::default();
            };
            let kind = std::str::from_utf8(&rest[..end]).ok();
            // `subtype` matters only for `system` lines (init), which are rare.
            if kind != Some("system") {
                return LineKind {
                    kind,
                    subtype: None,
                };
            }
        }
        serde_json::from_slice(line).unwrap_or_default()
    }

    fn is(&self, kind: &str, subtype: Option<&str>) -> bool {
        self.kind == Some(kind) && (subtype.is_none() || self.subtype == subtype)
    }
}

/// Why the relay ended.
#[derive(Debug)]
enum End {
    /// The client closed with 1000 (or the child ended after `sdk_end_input`).
    ClientEnded,
    /// The start was refused (`error` sent).
    Refused,
    GraceExpired,
    IdleTimeout,
    Shutdown,
    Drained,
    /// The child exited on its own.
    ChildExited,
}

struct Relay<'a> {
    shared: &'a Shared,
    id: String,
    label: String,
    principal: String,
    state_dir: Option<std::path::PathBuf>,
    link: Option<Link>,
    detached_until: Option<Instant>,
    listing: Listing,
    control: Receiver<Control>,
    control_tx: Sender<Control>,
    grant: (Sender<ChildSlot>, Receiver<ChildSlot>),
    number: u64,
    /// Waiting for a place: the spec, the deadline and the position last told.
    queued: Option<(ChildSpec, Instant, usize)>,
    child: Option<(Child, ChildSlot)>,
    started: bool,
    /// Frames sent since `sdk_started` (what `last_frame` counts).
    frames: u64,
    replay: Replay,
    /// User messages written whose `result` has not come yet.
    turns: usize,
    input_closed: bool,
    last_activity: Instant,
    next_ping: Instant,
    draining: bool,
    ending: Option<End>,
}

/// Run an `/sdk` connection's session on this thread until it ends.
pub fn serve(shared: &Shared, link: Link, peer: SocketAddr, newcomer: Newcomer) {
    let id = match &shared.config.instance_id {
        Some(instance) => format!("{instance}-{}", new_session_id()),
        None => new_session_id(),
    };
    let (control_tx, control) = bounded(16);
    let now = now_unix();
    let listing = shared.registry.list(
        SessionInfo {
            session_id: id.clone(),
            endpoint: Endpoint::Sdk,
            claude_session_id: None,
            state: SessionState::Idle,
            created_at: now,
            last_activity: now,
            queries: 0,
            peer: newcomer.client_ip.to_string(),
            cwd: None,
            user: newcomer.user.clone(),
            child_pid: None,
            viewers: 1,
            principal: newcomer.principal.clone(),
            query_running: false,
        },
        control_tx.clone(),
    );
    if shared.is_shutting_down() {
        let _ = control_tx.try_send(Control::Shutdown);
    } else if shared.is_draining() {
        let _ = control_tx.try_send(Control::Drain);
    }
    let at = Instant::now();
    let relay = Relay {
        shared,
        label: id.chars().take(8).collect(),
        id,
        state_dir: shared
            .state_dir
            .as_ref()
            .map(|d| crate::spec::principal_dir(d, &newcomer.principal)),
        principal: newcomer.principal.clone(),
        link: Some(link),
        detached_until: None,
        listing,
        control,
        control_tx,
        grant: bounded(1),
        number: next_number(),
        queued: None,
        child: None,
        started: false,
        frames: 0,
        replay: Replay::new(shared.config.replay_buffer_bytes),
        turns: 0,
        input_closed: false,
        last_activity: at,
        next_ping: at + shared.config.timeouts.ping_interval,
        draining: false,
        ending: None,
    };
    log::info!("[{}] sdk session open, peer {peer}", relay.label);
    relay.run();
    drop(newcomer);
}

/// A number for each session among `places`' waiters, apart from `/ws`'s.
fn next_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 62);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Relay<'_> {
    fn run(mut self) {
        self.on_client_input();
        self.flush();
        let end = loop {
            if let Some(end) = self.ending.take() {
                break end;
            }
            let inbound = match &self.link {
                Some(l) => l.inbound().clone(),
                None => never(),
            };
            let events = match &self.child {
                Some((c, _)) if self.pending_output() <= HIGH_WATER => c.events().clone(),
                _ => never(),
            };
            let control = self.control.clone();
            let grant = self.grant.1.clone();
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            select! {
                recv(inbound) -> m => match m {
                    Ok(()) => self.on_client_input(),
                    Err(_) => self.lose(None),
                },
                recv(events) -> ev => match ev {
                    Ok(ev) => {
                        self.on_child_event(ev);
                        while self.pending_output() <= HIGH_WATER && self.ending.is_none() {
                            let Some((c, _)) = &self.child else { break };
                            match c.events().try_recv() {
                                Ok(ev) => self.on_child_event(ev),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => self.on_child_exit(),
                },
                recv(control) -> c => if let Ok(c) = c { self.on_control(c) },
                recv(grant) -> slot => if let Ok(slot) = slot { self.on_place(slot) },
                default(wait) => {}
            }
            self.on_timers(Instant::now());
            if self.draining && self.turns == 0 {
                self.end(End::Drained);
            }
            self.flush();
        };
        self.finish(end);
    }

    // ---- client side ------------------------------------------------------------

    fn on_client_input(&mut self) {
        let Some(link) = &mut self.link else { return };
        let mut messages = Vec::new();
        let result = link.receive(|_, m| messages.push(m));
        for m in messages {
            if self.ending.is_some() {
                break;
            }
            self.last_activity = Instant::now();
            match m {
                Message::Text(text) if !self.started && self.queued.is_none() => {
                    self.start(text.as_str())
                }
                Message::Text(text) => self.relay_in(text.as_str()),
                _ => self.protocol_error(ClientError::new(
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not supported; send JSON text frames",
                )),
            }
        }
        self.listing.update(|i| i.last_activity = now_unix());
        match result {
            Ok(()) => {}
            Err(LinkError::Closed(code)) => self.lose(code),
            Err(LinkError::Gone(_)) | Err(LinkError::Protocol(_)) => self.lose(None),
        }
    }

    /// The client's `sdk_start`.
    fn start(&mut self, text: &str) {
        let config = &self.shared.config;
        if self.draining {
            return self.refuse(ClientError::new(
                ErrorCode::Draining,
                "this instance is draining; connect again to reach another",
            ));
        }
        let mut options = match parse_start(text) {
            Ok(o) => o,
            Err(e) => return self.refuse(e),
        };
        let dir = self.state_dir.as_deref();
        options.query =
            workspace::own_conversation(self.shared, &self.principal, dir, options.query);
        let spec = match workspace::child_spec(
            self.shared,
            &self.principal,
            dir,
            &options.query,
            &Tools::default(),
        ) {
            Ok(plan) => for_sdk(plan.spec(), &options),
            Err(e) => return self.refuse(e),
        };
        let cwd = spec.cwd.as_ref().map(|p| p.display().to_string());
        self.listing.update(|i| i.cwd = cwd);
        match self
            .shared
            .places
            .acquire(self.number, &self.grant.0, &self.control_tx)
        {
            Acquired::Now(slot) => self.launch(spec, slot),
            Acquired::Queued(position) => {
                log::info!(
                    "[{}] all claude places taken; queued at {position}",
                    self.label
                );
                let deadline = Instant::now() + config.timeouts.queue_timeout;
                self.queued = Some((spec, deadline, position));
                self.listing.update(|i| i.state = SessionState::Queued);
                self.send_raw(frames::queued(position).as_bytes());
            }
        }
    }

    fn on_place(&mut self, slot: ChildSlot) {
        if let Some((spec, ..)) = self.queued.take() {
            self.launch(spec, slot);
        }
    }

    fn launch(&mut self, spec: ChildSpec, slot: ChildSlot) {
        let child = match Child::spawn(&spec, &self.label) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("[{}] {e}", self.label);
                return self.refuse(ClientError::new(
                    ErrorCode::ClaudeSpawnFailed,
                    e.to_string(),
                ));
            }
        };
        let pid = child.pid();
        log::info!(
            "[{}] claude pid={pid} started for the sdk relay",
            self.label
        );
        self.child = Some((child, slot));
        self.started = true;
        self.listing.update(|i| {
            i.child_pid = Some(pid);
            i.state = SessionState::Idle;
        });
        self.send_raw(frames::started(&self.id, false).as_bytes());
    }

    /// Refuse the start: `error`, then close with 1008; the session ends.
    fn refuse(&mut self, e: ClientError) {
        log::info!("[{}] sdk start refused: {e}", self.label);
        crate::metrics::error_sent(e.code);
        self.send_raw(frames::error(&e).as_bytes());
        if let Some(link) = &mut self.link {
            link.close(Closing::Refused);
        }
        self.end(End::Refused);
    }

    /// A frame that breaks the contract: `error`, close 1008; the session detaches.
    fn protocol_error(&mut self, e: ClientError) {
        crate::metrics::error_sent(e.code);
        self.emit(frames::error(&e).as_bytes());
        if let Some(link) = &mut self.link {
            link.close(Closing::Refused);
        }
        self.lose(None);
    }

    /// One client frame after the start: a line for the child, unless the filter
    /// answers it.
    fn relay_in(&mut self, text: &str) {
        if !self.started {
            return self.protocol_error(ClientError::new(
                ErrorCode::InvalidMessage,
                "wait for sdk_started before sending more",
            ));
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self.protocol_error(ClientError::new(
                    ErrorCode::InvalidJson,
                    format!("the frame is not JSON: {e}"),
                ))
            }
        };
        if value.get("type").and_then(Value::as_str) == Some("sdk_end_input") {
            log::info!(
                "[{}] client ended its input; closing claude's stdin",
                self.label
            );
            self.input_closed = true;
            if let Some((c, _)) = &mut self.child {
                c.close_stdin();
            }
            return;
        }
        match policy::judge(&self.shared.config, &value) {
            Verdict::Pass => {}
            Verdict::Answer(answer) => {
                log::info!("[{}] control request refused by policy", self.label);
                return self.emit(answer.to_string().as_bytes());
            }
            Verdict::Invalid(why) => {
                return self.protocol_error(ClientError::new(ErrorCode::InvalidMessage, why))
            }
        }
        let is_user = value.get("type").and_then(Value::as_str) == Some("user");
        let sent = match &self.child {
            // As the client wrote it (serde_json's compact form has no newline in it
            // either; a frame of pretty-printed JSON is written compact).
            Some((c, _)) if text.contains('\n') => c.send_line(&value),
            Some((c, _)) => c.send_text(text.to_string()),
            None => Err(Undelivered::Closed),
        };
        match sent {
            Ok(()) if is_user => {
                self.turns += 1;
                self.listing.update(|i| {
                    i.state = SessionState::Running;
                    i.queries += 1;
                });
            }
            Ok(()) => {}
            Err(Undelivered::Busy) => self.emit(
                frames::error(&ClientError::new(
                    ErrorCode::ClaudeBusy,
                    "claude is not reading its input; the line was not delivered",
                ))
                .as_bytes(),
            ),
            Err(Undelivered::Closed) => self.emit(
                frames::error(&ClientError::new(
                    ErrorCode::ClaudeExited,
                    "claude's input is closed; the line was not delivered",
                ))
                .as_bytes(),
            ),
        }
    }

    // ---- child side -------------------------------------------------------------

    fn on_child_event(&mut self, ev: ChildEvent) {
        match ev {
            ChildEvent::Lines(chunk) => {
                for line in chunk.split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() {
                        continue;
                    }
                    self.on_child_line(line);
                }
            }
            ChildEvent::Closed => self.on_child_exit(),
        }
    }

    fn on_child_line(&mut self, line: &[u8]) {
        let kind = LineKind::of(line);
        if kind.is("result", None) {
            self.turns = self.turns.saturating_sub(1);
            if self.turns == 0 {
                self.last_activity = Instant::now();
                self.listing.update(|i| i.state = SessionState::Idle);
            }
        } else if kind.is("system", Some("init")) {
            self.learn_conversation(line);
        }
        match std::str::from_utf8(line) {
            Ok(_) => self.emit(line),
            // A text frame must be UTF-8: the line goes on, its odd bytes replaced.
            Err(_) => self.emit(String::from_utf8_lossy(line).as_bytes()),
        }
    }

    fn learn_conversation(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let Some(id) = v.get("session_id").and_then(Value::as_str) else {
            return;
        };
        if let Some(dir) = &self.state_dir {
            if let Err(e) = crate::conversations::record_conversation(dir, &self.id, id) {
                log::warn!("[{}] cannot record the conversation id: {e}", self.label);
            }
        }
        let id = id.to_string();
        self.listing.update(|i| i.claude_session_id = Some(id));
    }

    fn on_child_exit(&mut self) {
        let Some((mut child, slot)) = self.child.take() else {
            return;
        };
        let status = child.try_wait();
        let tail = child.stderr_tail();
        log::info!(
            "[{}] claude pid={} ended ({status:?})",
            self.label,
            child.pid()
        );
        self.listing.update(|i| i.child_pid = None);
        self.shared.reaper.stop(
            child,
            Stop::Graceful(self.shared.config.timeouts.stop_grace),
            slot,
            &self.label,
        );
        if self.input_closed {
            return self.end(End::ClientEnded);
        }
        let mut message = match status {
            Some(s) => format!("claude exited ({s})"),
            None => "claude closed its output".to_string(),
        };
        if !tail.is_empty() {
            message.push_str("; its stderr ends with: ");
            message.push_str(last_chars(&tail, 1000));
        }
        let e = ClientError::new(ErrorCode::ClaudeExited, message);
        crate::metrics::error_sent(e.code);
        self.emit(frames::error(&e).as_bytes());
        self.end(End::ChildExited);
    }

    // ---- output -----------------------------------------------------------------

    /// A frame of the stream (numbered, kept for a client that reattaches).
    fn emit(&mut self, frame: &[u8]) {
        self.frames += 1;
        self.replay.push(self.frames, frame);
        crate::metrics::relayed_sdk(frame.len());
        self.send_raw(frame);
    }

    /// A frame outside the numbered stream (or one kept already).
    fn send_raw(&mut self, frame: &[u8]) {
        let Some(link) = &mut self.link else { return };
        if link
            .queue_text_with(|out| out.extend_from_slice(frame))
            .is_err()
        {
            self.lose(None);
        }
    }

    fn pending_output(&self) -> usize {
        self.link.as_ref().map_or(0, Link::pending)
    }

    fn flush(&mut self) {
        let Some(link) = &mut self.link else { return };
        if link.flush().is_err() {
            self.lose(None);
        }
    }

    // ---- connection -------------------------------------------------------------

    /// The connection ended: a close with 1000 ends the session, anything else
    /// detaches it (once started) for the reconnect grace.
    fn lose(&mut self, code: Option<u16>) {
        if self.link.is_none() || self.ending.is_some() {
            return;
        }
        if code == Some(1000) || !self.started {
            return self.end(End::ClientEnded);
        }
        if let Some(link) = self.link.take() {
            link.finish_elsewhere(Duration::from_millis(200));
        }
        let grace = self.shared.config.timeouts.reconnect_grace;
        if grace.is_zero() {
            return self.end(End::GraceExpired);
        }
        log::info!(
            "[{}] connection lost ({code:?}); the sdk session waits {grace:?} for its client",
            self.label
        );
        self.detached_until = Some(Instant::now() + grace);
        self.listing.update(|i| {
            i.state = SessionState::Detached;
            i.viewers = 0;
        });
    }

    /// The client is back, having seen `last_frame` frames after `sdk_started`.
    fn attach(&mut self, link: Link, last_frame: u64) {
        if let Some(mut old) = self.link.replace(link) {
            old.close(Closing::Replaced);
            old.finish_elsewhere(Duration::from_millis(200));
        }
        log::info!(
            "[{}] client reattached after frame {last_frame}",
            self.label
        );
        self.detached_until = None;
        self.last_activity = Instant::now();
        let state = if self.turns > 0 {
            SessionState::Running
        } else {
            SessionState::Idle
        };
        self.listing.update(|i| {
            i.state = state;
            i.viewers = 1;
        });
        self.send_raw(frames::started(&self.id, true).as_bytes());
        let (gap, held): (Option<u64>, Vec<Vec<u8>>) = match self.replay.since(last_frame) {
            Since::All(f) => (None, f.iter().map(|b| b.to_vec()).collect()),
            Since::Gap { first, frames } => {
                (Some(first), frames.iter().map(|b| b.to_vec()).collect())
            }
        };
        if let Some(first) = gap {
            let e = ClientError::new(
                ErrorCode::ReplayGap,
                format!(
                    "frames {} to {} are no longer held (--replay-buffer-bytes); the first still held is {first}",
                    last_frame + 1,
                    first - 1
                ),
            );
            crate::metrics::error_sent(e.code);
            self.send_raw(frames::error(&e).as_bytes());
        }
        for frame in &held {
            self.send_raw(frame);
        }
        self.on_client_input();
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Shutdown => self.end(End::Shutdown),
            Control::Drain => self.draining = true,
            // Its child holds what the SDK's `initialize` set up (hooks, servers): it is
            // not stopped to make room.
            Control::Evict => self.shared.places.evicted(),
            Control::QueueMoved => {
                let now = self.shared.places.position(self.number);
                if let (Some((_, _, position)), Some(p)) = (&mut self.queued, now) {
                    if *position != p {
                        *position = p;
                        self.send_raw(frames::queued(p).as_bytes());
                    }
                }
            }
            Control::Attach(link, last) => self.attach(*link, last),
            // Only `/ws` sessions are asked (`Registry::reserve_or_reclaim`).
            Control::Reclaim => {}
        }
    }

    // ---- timers -----------------------------------------------------------------

    fn next_deadline(&self) -> Instant {
        let config = &self.shared.config;
        let mut next = self.next_ping;
        if self.turns == 0 {
            next = next.min(self.last_activity + config.timeouts.session_timeout);
        }
        if let Some((_, d, _)) = &self.queued {
            next = next.min(*d);
        }
        if let Some(d) = self.detached_until {
            next = next.min(d);
        }
        if let Some(d) = self
            .link
            .as_ref()
            .and_then(|l| l.stall_deadline(config.timeouts.stall_timeout))
        {
            next = next.min(d);
        }
        next
    }

    fn on_timers(&mut self, now: Instant) {
        let config = &self.shared.config;
        if now >= self.next_ping {
            self.next_ping = now + config.timeouts.ping_interval;
            if let Some(link) = &mut self.link {
                if now.duration_since(link.last_heard) > config.timeouts.ping_interval * 2
                    || link.ping().is_err()
                {
                    return self.lose(None);
                }
            }
        }
        if self.detached_until.is_some_and(|d| now >= d) {
            return self.end(End::GraceExpired);
        }
        if self.turns == 0 && now >= self.last_activity + config.timeouts.session_timeout {
            return self.end(End::IdleTimeout);
        }
        if self.queued.as_ref().is_some_and(|(_, d, _)| now >= *d) {
            self.queued = None;
            self.shared.places.leave_queue(self.number);
            return self.refuse(ClientError::new(
                ErrorCode::ServerBusy,
                format!(
                    "no claude place came free within {} s: all {} are busy (--max-running, --queue-timeout-secs)",
                    config.timeouts.queue_timeout.as_secs_f64(),
                    config.max_running
                ),
            ));
        }
        if self
            .link
            .as_ref()
            .is_some_and(|l| l.stalled_for() >= config.timeouts.stall_timeout)
        {
            if let Some(link) = &mut self.link {
                link.close(Closing::NotReading);
            }
            self.lose(None);
        }
    }

    fn end(&mut self, why: End) {
        if self.ending.is_none() {
            self.ending = Some(why);
        }
    }

    fn finish(mut self, end: End) {
        log::info!("[{}] sdk session ending: {end:?}", self.label);
        if self.queued.take().is_some() {
            self.shared.places.leave_queue(self.number);
        }
        self.listing.update(|i| i.state = SessionState::Closing);
        let draining = self.shared.is_draining();
        if let Some(link) = &mut self.link {
            match end {
                End::Shutdown if draining => link.close(Closing::Restarting),
                End::Drained => link.close(Closing::Restarting),
                End::Shutdown => link.close(Closing::ShuttingDown),
                End::IdleTimeout => link.close(Closing::IdleTimeout),
                End::ClientEnded | End::ChildExited => link.close(Closing::Normal),
                End::Refused | End::GraceExpired => {}
            }
            link.finish(Duration::from_secs(1));
        }
        if let Some((child, slot)) = self.child.take() {
            let how = match end {
                // A turn still running is cut short; the conversation is on disk.
                End::Shutdown if self.turns > 0 => Stop::Now,
                _ => Stop::Graceful(self.shared.config.timeouts.stop_grace),
            };
            self.shared.reaper.stop(child, how, slot, &self.label);
        }
        log::info!("[{}] sdk session closed", self.label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_kinds_whatever_the_key_order() {
        let k = |l: &str| {
            let k = LineKind::of(l.as_bytes());
            (k.kind.map(str::to_string), k.subtype.map(str::to_string))
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            k(r#"{"type":"result","subtype":"success"}"#),
            (s("result"), None)
        );
        assert_eq!(
            k(r#"{"duration_ms":1,"type":"result"}"#),
            (s("result"), None)
        );
        assert_eq!(
            k(r#"{"type":"system","subtype":"init"}"#),
            (s("system"), s("init"))
        );
        assert_eq!(
            k(r#"{"subtype":"init","type":"system"}"#),
            (s("system"), s("init"))
        );
        assert_eq!(k("not json"), (None, None));
    }

    #[test]
    fn start_reads_query_options_and_servers() {
        let o = parse_start(
            r#"{"type":"sdk_start","options":{"model":"m","permission_prompts":true,"sdk_mcp_servers":["tools"]}}"#,
        )
        .unwrap();
        assert_eq!(o.query.model.as_deref(), Some("m"));
        assert_eq!(o.query.permission_prompts, Some(true));
        assert_eq!(o.sdk_mcp_servers, vec!["tools".to_string()]);
        assert_eq!(
            parse_start(r#"{"type":"sdk_start"}"#).unwrap(),
            StartOptions::default()
        );
    }

    #[test]
    fn start_refuses_what_it_does_not_know() {
        let code = |t: &str| parse_start(t).unwrap_err().code;
        assert_eq!(code("nope"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"type":"user"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"options":{}}"#), ErrorCode::MissingType);
        assert_eq!(
            code(r#"{"type":"sdk_start","options":{"bogus":1}}"#),
            ErrorCode::InvalidOption
        );
        assert_eq!(
            code(r#"{"type":"sdk_start","options":{"sdk_mcp_servers":["a b"]}}"#),
            ErrorCode::InvalidOption
        );
    }

    #[test]
    fn spec_has_sdk_servers_and_no_echo() {
        let config = crate::config::Config::default();
        let o = parse_start(
            r#"{"type":"sdk_start","options":{"permission_prompts":true,"sdk_mcp_servers":["calc"]}}"#,
        )
        .unwrap();
        let build = |o: &StartOptions| {
            let s = crate::spec::build(&config, &[], &o.query, &Tools::default(), &[])?;
            Ok::<_, ClientError>(for_sdk(s.spec(), o))
        };
        let spec = build(&o).unwrap();
        assert!(!spec.args.iter().any(|a| a == "--replay-user-messages"));
        assert!(spec
            .args
            .iter()
            .any(|a| a == "--permission-prompt-tool=stdio"));
        let mcp = spec
            .args
            .iter()
            .find_map(|a| a.strip_prefix("--mcp-config="))
            .unwrap();
        let v: Value = serde_json::from_str(mcp).unwrap();
        assert_eq!(v["mcpServers"]["calc"]["type"], "sdk");
        assert_eq!(v["mcpServers"]["calc"]["alwaysLoad"], true);
        let o = parse_start(
            r#"{"type":"sdk_start","options":{"permission_mode":"bypassPermissions"}}"#,
        )
        .unwrap();
        assert_eq!(
            build(&o).unwrap_err().code,
            ErrorCode::PermissionModeNotAllowed
        );
    }
}
