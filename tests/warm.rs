//! Warm children (issue 12): `claude` processes started ahead of need, so a new
//! session's first query does not wait for the CLI to start.
//!
//! Most tests use the stand-in CLI (whose pid the session row shows); one runs the
//! real CLI end to end. A warm child is recognised by its pid: started before the
//! session existed, then listed as the session's child.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn health(s: &TestServer) -> Value {
    let (status, v) = s.get("/health");
    assert_eq!(status, 200, "{v}");
    v
}

/// Wait for the start-up probe (`claude --version`, a child of its own) to be done
/// and for `n` warm children to be ready; their pids.
fn warm_ready(s: &TestServer, n: u64) -> BTreeSet<u32> {
    let ok = eventually(WAIT, || {
        let h = health(s);
        h["claude"]["status"] != "checking" && h["warm"]["ready"] == n
    });
    assert!(ok, "{n} warm children never ready: {}", health(s));
    let pids: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    assert_eq!(pids.len() as u64, n, "children {pids:?}: {}", health(s));
    pids
}

fn session_child(s: &TestServer) -> Option<u32> {
    s.sessions()
        .first()
        .and_then(|row| row["child_pid"].as_u64())
        .map(|p| p as u32)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) only sends a signal, to a child of the server this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[test]
fn a_new_session_is_answered_by_the_warm_child_and_a_replacement_starts() {
    let s = ServerOptions::fake().arg("--warm-children=1").start();
    let warm = warm_ready(&s, 1);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert!(assistant_text(&msgs).contains("Echo: hello"), "{msgs:?}");
    let child = session_child(&s).expect("the session has a child");
    assert!(
        warm.contains(&child),
        "the session's child {child} is not the warm one {warm:?}"
    );
    // A replacement is started and becomes ready; the session keeps its child.
    assert!(
        eventually(WAIT, || health(&s)["warm"]["ready"] == 1),
        "{}",
        health(&s)
    );
    let now: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&child));
    assert_eq!(health(&s)["warm"]["taken"], 1);
    // /metrics says so too.
    let (_, _, metrics) = http_request(&s.http_addr, "GET", "/metrics", &[]);
    for line in [
        "claude_ws_warm_children_target 1",
        "claude_ws_warm_children_ready 1",
        "claude_ws_warm_children_taken_total 1",
        "claude_ws_warm_failing 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    // The second query goes to the same (formerly warm) child.
    let msgs = c.query("again", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: again"));
    assert_eq!(session_child(&s), Some(child));
}

#[test]
fn options_that_change_the_spec_start_a_fresh_child() {
    let s = ServerOptions::fake().arg("--warm-children=1").start();
    let warm = warm_ready(&s, 1);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({"model": "claude-other"}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let child = session_child(&s).expect("a child");
    assert!(!warm.contains(&child), "a warm child served other options");
    // The warm child still waits.
    let h = health(&s);
    assert_eq!(h["warm"]["ready"], 1, "{h}");
    assert_eq!(h["warm"]["taken"], 0, "{h}");
    assert!(warm.iter().all(|&p| pid_alive(p)));
}

#[test]
fn a_warm_child_that_dies_is_replaced() {
    let s = ServerOptions::fake().arg("--warm-children=1").start();
    let warm = warm_ready(&s, 1);
    let old = *warm.iter().next().unwrap();
    signal(old, libc::SIGKILL);
    assert!(
        eventually(WAIT, || {
            let now = children_of(s.pid());
            health(&s)["warm"]["ready"] == 1 && now.len() == 1 && now[0] != old
        }),
        "no replacement: {}",
        health(&s)
    );
    let h = health(&s);
    // It had been ready: not a broken CLI.
    assert_eq!(h["warm"]["failing"], false, "{h}");
    assert!(
        h["warm"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("pid={old}"))),
        "{h}"
    );
    // The replacement answers.
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: hello"));
}

#[test]
fn a_cli_that_always_dies_is_retried_with_backoff() {
    let dir = TempDir::new("warm-broken");
    let count = dir.path().join("starts");
    let script = dir.path().join("claude");
    // Answers the start-up check; every other start says so and dies at once.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '0.0.0 (Claude Code)'; exit 0; fi\n\
             echo start >> '{}'\necho 'broken on purpose' >&2\nexit 7\n",
            count.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let mut opts = ServerOptions::fake().arg("--warm-children=1");
    opts.claude = script.clone();
    let s = opts.start();
    let starts = || {
        std::fs::read_to_string(&count)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(
        eventually(WAIT, || health(&s)["warm"]["failing"] == true),
        "{}",
        health(&s)
    );
    let first = Instant::now();
    // A measurement window, not a wait for a condition: without the backoff (1 s, 2 s,
    // 4 s, …) the pool would start hundreds of children in it.
    thread::sleep(Duration::from_secs(5));
    let n = starts();
    assert!(
        (2..=5).contains(&n),
        "{n} starts in {:?}: the backoff should allow about 3",
        first.elapsed()
    );
    let h = health(&s);
    assert_eq!(h["warm"]["failing"], true, "{h}");
    assert_eq!(h["warm"]["ready"], 0, "{h}");
    let error = h["warm"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("broken on purpose"), "{h}");
}

#[test]
fn with_one_place_a_query_with_other_options_takes_the_warm_childs_place() {
    let s = ServerOptions::fake()
        .args(&["--max-running=1", "--warm-children=1"])
        .start();
    let warm = warm_ready(&s, 1);
    // Count the server's children all along: never more than the one place.
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (most, done, pid) = (most.clone(), done.clone(), s.pid());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(children_of(pid).len(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut c = s.connect();
    let msgs = c.query("hello", json!({"model": "claude-other"}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    let child = session_child(&s).expect("a child");
    assert!(!warm.contains(&child));
    assert!(
        warm.iter().all(|&p| !pid_alive(p)),
        "the warm child lives on"
    );
    assert!(s.logs().contains("a queued query needs its place"));
    // The session's idle child holds the place: no warm child meanwhile.
    assert_eq!(health(&s)["warm"]["ready"], 0);
    // The default options take a warm child when there is one; a second session
    // with them waits for the first one's child to be evicted instead.
    let mut d = s.connect();
    let msgs = d.query("second", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: second"), "{msgs:?}");
    // When the place comes free (the session ends), a warm child is started again.
    d.ws.close(Some(NORMAL_CLOSE)).unwrap();
    d.closed();
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    c.closed();
    assert!(
        eventually(WAIT, || health(&s)["warm"]["ready"] == 1),
        "{}",
        health(&s)
    );
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(most.load(Ordering::SeqCst), 1, "more children than places");
}

#[test]
fn with_one_place_a_new_session_takes_the_warm_child_itself() {
    let s = ServerOptions::fake()
        .args(&["--max-running=1", "--warm-children=1"])
        .start();
    let warm = warm_ready(&s, 1);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let child = session_child(&s).expect("a child");
    assert!(warm.contains(&child));
    // No room for a replacement while the session holds its child.
    assert_eq!(children_of(s.pid()), vec![child]);
    assert_eq!(health(&s)["warm"]["ready"], 0);
}

#[test]
fn shutdown_stops_warm_children() {
    let s = ServerOptions::fake()
        .args(&["--max-running=4", "--warm-children=2"])
        .start();
    let warm = warm_ready(&s, 2);
    signal(s.pid(), libc::SIGTERM);
    assert!(eventually(WAIT, || !pid_alive(s.pid())), "no exit");
    for &pid in &warm {
        assert!(!pid_alive(pid), "warm child {pid} outlived the server");
    }
    // Stopped by the server (stdin closed, reaped), not left to die with it.
    for pid in warm {
        let line = format!("[warm] claude pid={pid} exited after stdin closed");
        assert!(eventually(WAIT, || s.logs().contains(&line)), "{line}");
    }
    assert!(s.stop().success());
}

#[test]
fn the_real_cli_answers_from_a_warm_child() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg("--warm-children=1").start();
    let warm = warm_ready(&s, 1);
    let mut c = s.connect();
    let msgs = c.query("hello warm", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(
        assistant_text(&msgs).contains("Echo: hello warm"),
        "{msgs:?}"
    );
    let child = session_child(&s).expect("a child");
    assert!(warm.contains(&child), "{child} not in {warm:?}");
    assert_eq!(api.user_texts().len(), 1, "{:?}", api.user_texts());
}

#[test]
fn per_principal_state_directories_turn_the_pool_off() {
    let dir = TempDir::new("warm-state");
    let s = ServerOptions::fake()
        .arg("--warm-children=1")
        .arg(&format!("--state-dir={}", dir.path().display()))
        .start();
    assert!(eventually(WAIT, || health(&s)["claude"]["status"] != "checking"));
    let h = health(&s);
    assert_eq!(h["warm"]["target"], 0, "{h}");
    assert!(
        h["warm"]["disabled"]
            .as_str()
            .is_some_and(|d| d.contains("state directory")),
        "{h}"
    );
    assert!(children_of(s.pid()).is_empty());
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: hello"));
}
