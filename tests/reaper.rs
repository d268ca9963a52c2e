//! Stopping children off the session's thread (issue 8, item 7): a child on its stop
//! ladder neither blocks its session nor gives up its place among `--max-running`
//! before it is reaped, and shutdown still waits for every stop.
//!
//! The stand-in CLI's `stubborn` mode answers one query, then ignores stdin's end and
//! SIGTERM, so only the last step of the ladder (SIGKILL, after 2 × the stop grace)
//! ends it.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// The stop grace of these tests: a stubborn child's ladder takes twice this.
const GRACE: &str = "--stop-grace-secs=3";
/// A generous bound for answering a ping, far below the 6 s ladder.
const PROMPT: Duration = Duration::from_secs(2);

/// The child pid of the first listed session, if it has one.
fn child_pid(s: &TestServer) -> Option<u32> {
    s.sessions()
        .first()
        .and_then(|row| row["child_pid"].as_u64())
        .map(|p| p as u32)
}

/// Send a ping and return how long the pong took, and the messages that came before
/// it.
fn ping_time(c: &mut Client) -> (Duration, Vec<serde_json::Value>) {
    let started = Instant::now();
    c.send(json!({"type": "ping"}));
    let msgs = c.until("pong");
    (started.elapsed(), msgs)
}

#[test]
fn a_restart_on_changed_options_does_not_block_the_session() {
    let s = ServerOptions::fake().arg(GRACE).start();
    let mut c = s.connect();
    let msgs = c.query("stubborn", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let old = child_pid(&s).expect("a child");
    // Other options: the stubborn child is stopped and a new one started.
    let started = Instant::now();
    c.send(json!({"type": "query", "prompt": "next", "options": {"model": "m2"}}));
    c.until("query_start");
    let waited = started.elapsed();
    let (pong, mut msgs) = ping_time(&mut c);
    assert!(
        pid_alive(old),
        "the old child should still be on its ladder"
    );
    assert!(
        waited < PROMPT && pong < PROMPT,
        "query_start after {waited:?}, pong after {pong:?}: the session waited for the stop"
    );
    // (The answer may have come before the pong.)
    if !types(&msgs).contains(&"query_end".to_string()) {
        msgs.extend(c.until("query_end"));
    }
    assert!(assistant_text(&msgs).contains("Echo: next"));
    assert!(eventually(WAIT, || !pid_alive(old)), "child {old} survived");
    assert!(s.logged("SIGKILL"), "{}", s.logs());
}

#[test]
fn an_idle_stop_does_not_block_the_session() {
    let s = ServerOptions::fake()
        .arg(GRACE)
        .arg("--child-idle-secs=0.3")
        .start();
    let mut c = s.connect();
    c.query("stubborn", json!({}));
    let pid = child_pid(&s).expect("a child");
    // The session lets go of the child when the idle stop begins.
    assert!(eventually(WAIT, || child_pid(&s).is_none()));
    let (pong, _) = ping_time(&mut c);
    assert!(pid_alive(pid), "the child should still be on its ladder");
    assert!(
        pong < PROMPT,
        "pong after {pong:?}: the session waited for the stop"
    );
    assert!(eventually(WAIT, || !pid_alive(pid)), "child {pid} survived");
}

/// Send a query that must wait for a place: `query_start`, then `query_queued`.
fn queued(c: &mut Client, options: serde_json::Value) {
    c.send(json!({"type": "query", "prompt": "hello", "options": options}));
    assert_eq!(c.recv()["type"], "query_start");
    let m = c.recv();
    assert_eq!(m["type"], "query_queued", "{m}");
}

#[test]
fn a_child_being_stopped_keeps_its_place_among_max_running() {
    let s = ServerOptions::fake()
        .arg(GRACE)
        .arg("--max-running=1")
        .start();
    let mut a = s.connect();
    a.query("stubborn", json!({}));
    let pid = child_pid(&s).expect("a child");
    // A restart cannot start a second child while the first is being stopped: the
    // query waits for the place.
    queued(&mut a, json!({"model": "m2"}));
    assert!(pid_alive(pid));
    assert_eq!(children_of(s.pid()).len(), 1, "a second child was started");
    a.send(json!({"type": "interrupt"}));
    assert_eq!(
        only(&a.until("query_end"), "query_end")["outcome"],
        "interrupted"
    );
    // Nor can another session.
    let mut b = s.connect();
    queued(&mut b, json!({}));
    assert!(pid_alive(pid), "the child should still be on its ladder");
    assert_eq!(children_of(s.pid()).len(), 1, "a second child was started");
    // Once it is reaped, the place goes to the waiting query.
    assert!(eventually(WAIT, || !pid_alive(pid)), "child {pid} survived");
    let msgs = b.until("query_end");
    assert!(assistant_text(&msgs).contains("Echo: hello"), "{msgs:?}");
}

#[test]
fn shutdown_waits_for_children_being_stopped() {
    let s = ServerOptions::fake()
        .arg("--stop-grace-secs=0.5")
        .arg("--child-idle-secs=0.2")
        .start();
    let mut c = s.connect();
    c.query("stubborn", json!({}));
    let pid = child_pid(&s).expect("a child");
    assert!(eventually(WAIT, || child_pid(&s).is_none()));
    assert!(pid_alive(pid), "the child should be on its ladder");
    let status = s.stop();
    assert!(status.success(), "{status}");
    assert!(!pid_alive(pid), "child {pid} outlived the server");
}

#[test]
fn a_child_exiting_by_itself_is_still_reported_with_its_status() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    let msgs = c.query("die-after 1", json!({}));
    let e = only(&msgs, "error");
    assert_eq!(e["code"], "claude_exited");
    assert!(
        e["error"].as_str().unwrap().contains("exit status: 2"),
        "{e}"
    );
    assert_eq!(only(&msgs, "query_end")["outcome"], "error");
}
