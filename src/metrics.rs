//! The numbers `GET /metrics` reports on the side port, in Prometheus' text exposition
//! format (version 0.0.4), every name prefixed `claude_ws_`.
//!
//! Two kinds of number:
//! - Counters and histograms: process-wide atomics, bumped where the thing happens
//!   (each a call into this file, one relaxed atomic add or a few). The hot one, a
//!   message relayed to a client, costs two adds.
//! - Gauges (sessions, children, the queue): [`Gauges`], read by the side port
//!   (`http.rs`) from the same counts `/health` reports when scraped, so nothing has to
//!   keep them in step.
//!
//! Label values come from small fixed sets: query outcomes (`query_end`'s), error
//! codes (the `code` of `error` messages), refusal reasons (the `code` of a refused
//! upgrade, or [`TOO_MANY_CONNECTIONS`]). Outcomes and reasons are all reported from
//! the start, at 0; an error code appears once it has been sent.
//!
//! The counters are one set per process: servers embedded side by side in one process
//! share them (their gauges are their own).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::protocol::{ErrorCode, QueryOutcome};
use crate::util::lock;

/// The Content-Type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The refusal reason of a connection answered 503 before its handshake, because
/// `--max-sessions` plus the handshake headroom are all connected (`server.rs`).
pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

/// Every refusal reason: the error codes a refused upgrade carries (`handshake.rs`),
/// then [`TOO_MANY_CONNECTIONS`], then `other` for a reason missing here (a bug).
const REFUSALS: [&str; 12] = [
    "not_found",
    "shutting_down",
    "draining",
    "bad_request",
    "forbidden",
    "unauthorized",
    "unknown_session",
    "conversation_live",
    "server_full",
    "peer_full",
    TOO_MANY_CONNECTIONS,
    "other",
];

/// Query outcomes as `query_end` names them, in the order of [`outcome_index`].
const OUTCOMES: [&str; 4] = ["completed", "failed", "interrupted", "error"];

fn outcome_index(o: QueryOutcome) -> usize {
    match o {
        QueryOutcome::Completed => 0,
        QueryOutcome::Failed => 1,
        QueryOutcome::Interrupted => 2,
        QueryOutcome::Error => 3,
    }
}

static QUERIES: [AtomicU64; OUTCOMES.len()] = [const { AtomicU64::new(0) }; OUTCOMES.len()];
/// From `query_start` to `query_end`, as the client sees it: a wait in the queue for
/// a `--max-running` place and a child's start count too. Queries last seconds to
/// minutes.
static QUERY_SECONDS: Histogram<12> = Histogram::new([
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
]);
static CHILD_STARTS: AtomicU64 = AtomicU64::new(0);
/// From asking for a child to its first output. The CLI prints nothing before it
/// answers the `initialize` request the session sends right away, so this is how
/// long a child takes to be ready (the real CLI: about 0.7 s on an idle machine). A
/// child that exits before printing anything is counted in `child_starts_total` only.
static CHILD_START_SECONDS: Histogram<10> =
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0]);
static EVENTS_RELAYED: AtomicU64 = AtomicU64::new(0);
/// Of [`EVENTS_RELAYED`], the frames of `/sdk` sessions (the rest are `/ws`'s).
static SDK_EVENTS_RELAYED: AtomicU64 = AtomicU64::new(0);
static BYTES_RELAYED: AtomicU64 = AtomicU64::new(0);
/// Rare (one per `error` message): a map under a lock is plenty.
static ERRORS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());
static REFUSED: [AtomicU64; REFUSALS.len()] = [const { AtomicU64::new(0) }; REFUSALS.len()];

/// A query ended (`query_end`) with `outcome`, `took` after its `query_start`.
pub fn query_ended(outcome: QueryOutcome, took: Duration) {
    QUERIES[outcome_index(outcome)].fetch_add(1, Relaxed);
    QUERY_SECONDS.observe(took);
}

/// A `claude` child was started.
pub fn child_started() {
    CHILD_STARTS.fetch_add(1, Relaxed);
}

/// A child printed its first output `took` after it was asked for.
pub fn child_ready(took: Duration) {
    CHILD_START_SECONDS.observe(took);
}

/// A message of `bytes` bytes of JSON went to a client (or was kept for its return,
/// while it is detached).
pub fn relayed(bytes: usize) {
    EVENTS_RELAYED.fetch_add(1, Relaxed);
    BYTES_RELAYED.fetch_add(bytes as u64, Relaxed);
}

/// A frame of `bytes` bytes went to an `/sdk` client (or was kept for its return):
/// counted as [`relayed`] and apart, for the `endpoint` label.
pub fn relayed_sdk(bytes: usize) {
    relayed(bytes);
    SDK_EVENTS_RELAYED.fetch_add(1, Relaxed);
}

/// An `error` message with `code` went to a client.
pub fn error_sent(code: ErrorCode) {
    *lock(&ERRORS).entry(code.as_str()).or_default() += 1;
}

/// A WebSocket upgrade was refused, for `reason` (the error code of the answer, or
/// [`TOO_MANY_CONNECTIONS`]).
pub fn refused(reason: &str) {
    let i = REFUSALS
        .iter()
        .position(|&r| r == reason)
        .unwrap_or(REFUSALS.len() - 1);
    if REFUSALS[i] != reason {
        log::warn!("metrics: refusal reason {reason:?} is not listed; counted as other");
    }
    REFUSED[i].fetch_add(1, Relaxed);
}

/// A histogram of durations with `N` fixed upper bounds (seconds), and `+Inf`.
struct Histogram<const N: usize> {
    bounds: [f64; N],
    /// Observations per bucket (not cumulative): `counts[i]` ≤ `bounds[i]`, above
    /// the one before.
    counts: [AtomicU64; N],
    over: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: [f64; N]) -> Self {
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        match self.bounds.iter().position(|&b| s <= b) {
            Some(i) => self.counts[i].fetch_add(1, Relaxed),
            None => self.over.fetch_add(1, Relaxed),
        };
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// `_bucket` lines (cumulative), `_sum` and `_count`. The count is the `+Inf`
    /// bucket's, so the two agree even while observations land during the scrape.
    fn write(&self, out: &mut String, name: &str, help: &str) {
        family(out, name, "histogram", help);
        let mut seen = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            seen += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound:?}\"}} {seen}");
        }
        seen += self.over.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {seen}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum:?}");
        let _ = writeln!(out, "{name}_count {seen}");
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One family of a single unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// One family with a sample per value of `label`.
fn labelled<'v>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'v str, u64)>,
) {
    family(out, name, kind, help);
    for (value, n) in samples {
        // Label values are fixed identifiers: nothing to escape.
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// The gauges of one server, read by the side port when `/metrics` is scraped.
pub struct Gauges {
    pub sessions: usize,
    /// Of `sessions`, those that came to `/sdk`.
    pub sdk_sessions: usize,
    pub detached: usize,
    /// Connections to sessions (a session may have several viewers).
    pub viewers: usize,
    pub running: usize,
    pub children: usize,
    pub queued: usize,
    pub warm: WarmGauges,
}

/// The warm pool's numbers (`warm.rs`).
pub struct WarmGauges {
    pub target: usize,
    pub ready: usize,
    pub starting: usize,
    pub failing: bool,
    pub started: u64,
    pub taken: u64,
    /// Of the waiting children, parked spares.
    pub parked: usize,
    /// Of those taken, parked spares bound by `claim_session`.
    pub claimed: u64,
}

/// Everything, as the text `/metrics` answers: these gauges and the process's counters.
pub fn render(gauges: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let (sessions, detached) = (gauges.sessions, gauges.detached);
    labelled(
        &mut out,
        "claude_ws_sessions",
        "gauge",
        "Open sessions, by whether a client is connected to them (their sum: all open sessions).",
        "state",
        [
            ("connected", sessions.saturating_sub(detached) as u64),
            ("detached", detached as u64),
        ],
    );
    labelled(
        &mut out,
        "claude_ws_endpoint_sessions",
        "gauge",
        "Open sessions, by the WebSocket endpoint they came to (/ws or /sdk).",
        "endpoint",
        [
            ("ws", sessions.saturating_sub(gauges.sdk_sessions) as u64),
            ("sdk", gauges.sdk_sessions as u64),
        ],
    );
    single(
        &mut out,
        "claude_ws_viewers",
        "gauge",
        "Connections to open sessions (a session may have several viewers).",
        gauges.viewers as u64,
    );
    single(
        &mut out,
        "claude_ws_queries_running",
        "gauge",
        "Queries between their query_start and query_end.",
        gauges.running as u64,
    );
    labelled(
        &mut out,
        "claude_ws_queries_total",
        "counter",
        "Queries ended, by the outcome in their query_end.",
        "outcome",
        OUTCOMES
            .iter()
            .zip(&QUERIES)
            .map(|(&o, n)| (o, n.load(Relaxed))),
    );
    QUERY_SECONDS.write(
        &mut out,
        "claude_ws_query_duration_seconds",
        "Time from a query's query_start to its query_end (a wait for a --max-running place included).",
    );
    single(
        &mut out,
        "claude_ws_children",
        "gauge",
        "claude children holding a --max-running place: running, or being stopped.",
        gauges.children as u64,
    );
    single(
        &mut out,
        "claude_ws_child_starts_total",
        "counter",
        "claude children started.",
        CHILD_STARTS.load(Relaxed),
    );
    CHILD_START_SECONDS.write(
        &mut out,
        "claude_ws_child_start_seconds",
        "Time from asking for a claude child to its first output (it answers initialize once ready).",
    );
    single(
        &mut out,
        "claude_ws_queue_length",
        "gauge",
        "Queries waiting for a --max-running place.",
        gauges.queued as u64,
    );
    let warm = &gauges.warm;
    single(
        &mut out,
        "claude_ws_warm_children_target",
        "gauge",
        "--warm-children (0 while the pool is off).",
        warm.target as u64,
    );
    single(
        &mut out,
        "claude_ws_warm_children_ready",
        "gauge",
        "Warm children that answered initialize and wait for a session.",
        warm.ready as u64,
    );
    single(
        &mut out,
        "claude_ws_warm_children_starting",
        "gauge",
        "Warm children started and not yet answering.",
        warm.starting as u64,
    );
    single(
        &mut out,
        "claude_ws_warm_failing",
        "gauge",
        "1 while warm children die before they are ready (the pool backs off).",
        u64::from(warm.failing),
    );
    single(
        &mut out,
        "claude_ws_warm_children_started_total",
        "counter",
        "Warm children started.",
        warm.started,
    );
    single(
        &mut out,
        "claude_ws_warm_children_taken_total",
        "counter",
        "Warm children taken by a new session's first query.",
        warm.taken,
    );
    single(
        &mut out,
        "claude_ws_warm_children_parked",
        "gauge",
        "Of the waiting warm children, parked spares (--await-claim).",
        warm.parked as u64,
    );
    single(
        &mut out,
        "claude_ws_warm_children_claimed_total",
        "counter",
        "Of the warm children taken, parked spares bound by claim_session.",
        warm.claimed,
    );
    single(
        &mut out,
        "claude_ws_events_relayed_total",
        "counter",
        "Messages sent to clients (or kept for a detached client's return).",
        EVENTS_RELAYED.load(Relaxed),
    );
    let (all, sdk) = (
        EVENTS_RELAYED.load(Relaxed),
        SDK_EVENTS_RELAYED.load(Relaxed),
    );
    labelled(
        &mut out,
        "claude_ws_endpoint_events_relayed_total",
        "counter",
        "The messages of claude_ws_events_relayed_total, by endpoint (/sdk: lines of the CLI as it wrote them).",
        "endpoint",
        [("ws", all.saturating_sub(sdk)), ("sdk", sdk)],
    );
    single(
        &mut out,
        "claude_ws_bytes_relayed_total",
        "counter",
        "Bytes of JSON text in the messages counted by claude_ws_events_relayed_total.",
        BYTES_RELAYED.load(Relaxed),
    );
    let errors: Vec<(&str, u64)> = lock(&ERRORS).iter().map(|(&c, &n)| (c, n)).collect();
    labelled(
        &mut out,
        "claude_ws_errors_total",
        "counter",
        "error messages sent to clients, by code.",
        "code",
        errors,
    );
    labelled(
        &mut out,
        "claude_ws_refusals_total",
        "counter",
        "WebSocket connections refused before a session, by reason (the error code of the answer).",
        "reason",
        REFUSALS
            .iter()
            .zip(&REFUSED)
            .map(|(&r, n)| (r, n.load(Relaxed))),
    );
    out
}

#[cfg(test)]
mod tests {

    /// Every code a refused upgrade can carry has its own label (handshake.rs).
    #[test]
    fn every_refusal_code_of_the_handshake_is_listed() {
        let source = include_str!("handshake.rs");
        let mut seen = 0;
        for name in source.split("ErrorCode::").skip(1) {
            let name: String = name.chars().take_while(|c| c.is_alphanumeric()).collect();
            let mut snake = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            assert!(
                REFUSALS.contains(&snake.as_str()),
                "{snake} is not a refusal label"
            );
            seen += 1;
        }
        assert!(seen > 5);
    }
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_is_the_inf_bucket() {
        let h = Histogram::new([0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(100)); // on the bound: `le` is inclusive
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "help");
        assert_eq!(
            out,
            "# HELP x_seconds help\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.1\"} 2\nx_seconds_bucket{le=\"1.0\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 4\nx_seconds_sum 5.65\nx_seconds_count 4\n"
        );
    }

    #[test]
    fn outcomes_are_named_as_query_end_names_them() {
        use QueryOutcome::*;
        for o in [Completed, Failed, Interrupted, Error] {
            let wire = serde_json::to_value(o).unwrap();
            assert_eq!(wire, OUTCOMES[outcome_index(o)], "{o:?}");
        }
    }

    #[test]
    fn every_handshake_refusal_code_is_a_listed_reason() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::ShuttingDown,
            ErrorCode::BadRequest,
            ErrorCode::Forbidden,
            ErrorCode::Unauthorized,
            ErrorCode::UnknownSession,
            ErrorCode::ServerFull,
            ErrorCode::PeerFull,
        ] {
            assert!(REFUSALS.contains(&code.as_str()), "{code:?}");
        }
    }
}
