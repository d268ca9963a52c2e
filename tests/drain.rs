//! Issue 13 on one instance: `/ready` (and why not), `POST /drain` with the admin token,
//! what a drain does to idle and busy sessions, and resuming a session's conversation
//! from the state directory once the instance no longer holds it. Against the REAL
//! Claude Code CLI and the scripted Messages API.

mod support;

use serde_json::json;
use support::*;

fn post(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = http_request(&s.http_addr, "POST", path, headers);
    (status, body)
}

#[test]
fn post_drain_lets_the_running_query_finish_and_closes_with_1012() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .args(&["--admin-token=operator-token", "--drain-timeout-secs=60"])
        .start();
    assert!(
        eventually(WAIT, || s.get("/ready").0 == 200),
        "{:?}",
        s.get("/ready")
    );
    let mut idle = s.connect();
    let mut busy = s.connect();
    busy.send(json!({"type": "query", "prompt": "slow 20 100"}));
    let mut msgs = busy.until("system_message");

    assert_eq!(post(&s, "/drain", &[]).0, 401);
    assert_eq!(
        post(&s, "/drain", &[("Authorization", "Bearer nope")]).0,
        401
    );
    assert_eq!(s.get("/drain").0, 405);
    assert_eq!(s.get("/ready").0, 200, "no drain yet");
    let (status, body) = post(&s, "/drain", &[("Authorization", "Bearer operator-token")]);
    assert_eq!(status, 202, "{body}");

    let (status, why) = s.get("/ready");
    assert_eq!((status, why["reason"].as_str()), (503, Some("draining")));
    assert!(s.get("/health").0 == 200, "still alive");
    let refused = s.try_connect(&s.ws_url, &[]).err().unwrap();
    assert!(refused.starts_with("HTTP 503"), "{refused}");
    assert!(refused.contains("\"draining\""), "{refused}");
    // The idle session goes at once; the busy one once its query is over.
    assert!(idle.closed().starts_with("close 1012"));
    let end = loop {
        match busy.next_event() {
            Ok(m) => msgs.push(m),
            Err(e) => break e,
        }
    };
    assert!(end.starts_with("close 1012"), "{end}");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(assistant_text(&msgs).contains("word19"), "{msgs:?}");
    // Then the server ends by itself, and says so.
    let pid = s.pid();
    assert!(eventually(WAIT, || !pid_alive(pid)), "{}", s.logs());
    let logs = s.logs();
    assert!(logs.contains("drain: every session has ended"), "{logs}");
    assert!(s.stop().success());
}

#[test]
fn drain_needs_an_admin_token_configured() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let (status, body) = post(&s, "/drain", &[("Authorization", "Bearer anything")]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--admin-token"), "{body}");
}

#[test]
fn ready_says_why_it_takes_no_sessions() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg("--max-sessions=1").start();
    assert!(eventually(WAIT, || s.get("/ready").0 == 200));
    let _c = s.connect();
    let (status, why) = s.get("/ready");
    assert_eq!(status, 503);
    assert!(
        why["reason"].as_str().unwrap().contains("--max-sessions"),
        "{why}"
    );
    assert_eq!(s.get("/health").0, 200);

    let broken = ServerOptions::fake()
        .arg("--claude-bin=/nonexistent/claude")
        .start();
    assert!(eventually(WAIT, || broken.get("/ready").1["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("claude cannot run"))));
    assert_eq!(broken.get("/ready").0, 503);
}

#[test]
fn a_session_no_longer_held_resumes_its_conversation_from_the_state_directory() {
    let api = MockApi::start();
    let state = TempDir::new("state");
    let s = ServerOptions::real(&api)
        .arg(&format!("--state-dir={}", state.path().display()))
        .arg("--instance-id=c0ffee")
        .start();
    let mut c = s.connect();
    assert!(c.session_id.starts_with("c0ffee-"), "{}", c.session_id);
    c.query("remember the kiwi", json!({}));
    let id = c.session_id.clone();
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = c.closed();
    assert!(eventually(WAIT, || s.sessions().is_empty()));

    let url = format!("{}?session_id={id}&last_seq=7", s.ws_url);
    let mut c = s.try_connect(&url, &[]).unwrap();
    let hello = c.recv();
    assert_eq!(hello["data"]["resumed"], "conversation", "{hello}");
    assert_eq!(hello["data"]["session_id"], id.as_str());
    assert_eq!(hello["seq"], 1);
    let msgs = c.query("recall", json!({}));
    assert!(
        assistant_text(&msgs).contains("remember the kiwi"),
        "{msgs:?}"
    );
    // A session never recorded is still unknown.
    let url = format!("{}?session_id=c0ffee-0000&last_seq=0", s.ws_url);
    let e = s.try_connect(&url, &[]).err().unwrap();
    assert!(e.starts_with("HTTP 404"), "{e}");
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--drain-timeout-secs=60")
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 600 100"}));
    c.until("system_message");
    let pid = s.pid();
    let term = || {
        // SAFETY: kill(2) only sends a signal, to the server this test started.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    };
    term();
    assert!(eventually(WAIT, || s.get("/ready").0 == 503));
    assert!(pid_alive(pid), "the query holds the drain open");
    term();
    assert!(eventually(WAIT, || !pid_alive(pid)), "{}", s.logs());
    assert!(s.logs().contains("second signal"), "{}", s.logs());
    assert_eq!(s.stop().code(), Some(130));
}
