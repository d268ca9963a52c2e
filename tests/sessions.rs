//! Issue 10: sessions that survive a dropped connection, belong to their user, and
//! never refuse a local client for nothing — against the REAL Claude Code CLI and the
//! scripted Messages API (the stand-in only where noted).

mod support;

use std::net::TcpStream;

use serde_json::{json, Value};
use support::*;

const SECRET: &str = "sessions-test-secret";

fn jwt(sub: &str) -> String {
    support::jwt::user_jwt(SECRET, sub)
}

/// Connect with `?token=` (and more query) and read `connection_established`.
fn connect_as(s: &TestServer, token: &str, query: &str) -> Result<(Client, Value), String> {
    let mut c = s.try_connect(&format!("{}?token={token}{query}", s.ws_url), &[])?;
    let hello = c.recv();
    assert_eq!(hello["type"], "connection_established", "{hello}");
    c.session_id = hello["data"]["session_id"].as_str().unwrap().to_string();
    Ok((c, hello))
}

/// Drop the TCP connection without a close frame, as a phone losing signal does.
fn drop_connection(c: Client) {
    let _ = c.ws.get_ref().shutdown(std::net::Shutdown::Both);
}

fn seq(m: &Value) -> u64 {
    m["seq"].as_u64().expect("a seq")
}

#[test]
fn twenty_local_clients_at_once_all_get_their_answer_on_default_flags() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let clients: Vec<Client> = (0..20).map(|_| s.connect()).collect();
    let answers: Vec<std::thread::JoinHandle<Vec<Value>>> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                let msgs = c.query(&format!("client {i}"), json!({}));
                // Let go of the child's place for the ones still waiting.
                c.send(json!({"type": "end_session"}));
                msgs
            })
        })
        .collect();
    for (i, a) in answers.into_iter().enumerate() {
        let msgs = a.join().expect("client thread");
        assert_eq!(
            only(&msgs, "query_end")["outcome"],
            "completed",
            "client {i}: {:?}",
            types(&msgs)
        );
        assert!(assistant_text(&msgs).contains(&format!("Echo: client {i}")));
    }
}

#[test]
fn thirty_quick_queries_in_a_row_in_one_session() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    for i in 0..30 {
        let msgs = c.query(&format!("q{i}"), json!({}));
        assert_eq!(
            only(&msgs, "query_end")["outcome"],
            "completed",
            "query {i}: {msgs:?}"
        );
    }
}

#[test]
fn the_least_recently_used_idle_child_makes_room_and_its_conversation_resumes() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg("--max-running=2").start();
    let mut a = s.connect();
    let mut b = s.connect();
    let mut c = s.connect();
    a.query("remember alpha", json!({}));
    b.query("remember bravo", json!({}));
    // Both places are held by idle children; a's is the older: it goes.
    let msgs = c.query("hello from c", json!({}));
    assert!(
        !types(&msgs).contains(&"error".to_string()),
        "{:?}",
        types(&msgs)
    );
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let rows = s.sessions();
    let row = |id: &str| rows.iter().find(|r| r["session_id"] == id).unwrap().clone();
    assert!(row(&a.session_id)["child_pid"].is_null(), "{rows:?}");
    assert!(row(&b.session_id)["child_pid"].is_u64(), "{rows:?}");
    // a's next query gets a child again (b's, the oldest idle now, makes room) and
    // its conversation is the same.
    let msgs = a.query("recall", json!({}));
    let text = assistant_text(&msgs);
    assert!(text.contains("remember alpha"), "{text}");
}

#[test]
fn a_dropped_connection_reattaches_and_gets_the_whole_answer_once() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    let id = c.session_id.clone();
    c.send(json!({"type": "query", "prompt": "slow 30 100"}));
    // Read a little of the answer, then lose the connection mid-answer.
    let mut seen = c.until("assistant_message");
    let last_seq = seq(seen.last().unwrap());
    drop_connection(c);
    assert!(eventually(WAIT, || s.sessions()[0]["state"] == "detached"));
    assert_eq!(s.get("/health").1["detached_sessions"], 1);
    std::thread::sleep(std::time::Duration::from_millis(500)); // the answer goes on
    let (mut c, hello) =
        connect_as(&s, "", &format!("&session_id={id}&last_seq={last_seq}")).unwrap();
    assert_eq!(hello["data"]["session_id"], id.as_str());
    assert_eq!(hello["data"]["resumed"], true);
    assert_eq!(hello["seq"], 0);
    let rest = c.until("query_end");
    // Every seq once, no gap, from the first message to the end.
    assert_eq!(seq(&rest[0]), last_seq + 1, "{:?}", types(&rest));
    seen.extend(rest);
    assert_seq(&seen, 2);
    let text = assistant_text(&seen);
    for i in 0..30 {
        assert_eq!(
            text.matches(&format!("word{i} ")).count(),
            1,
            "word{i} in {text}"
        );
    }
    assert_eq!(only(&seen, "query_end")["outcome"], "completed");
    // The live stream goes on in the same session.
    let msgs = c.query("after", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: after"));
    assert_eq!(seq(&msgs[0]), seq(seen.last().unwrap()) + 1);
}

#[test]
fn a_gap_the_buffer_no_longer_holds_is_said() {
    let s = ServerOptions::fake()
        .arg("--replay-buffer-bytes=2000")
        .start();
    let mut c = s.connect();
    let id = c.session_id.clone();
    c.query("flood 50 200", json!({}));
    drop_connection(c);
    assert!(eventually(WAIT, || s.sessions()[0]["state"] == "detached"));
    let (mut c, _) = connect_as(&s, "", &format!("&session_id={id}&last_seq=1")).unwrap();
    let gap = c.recv();
    assert_eq!(gap["data"]["code"], "replay_gap", "{gap}");
    assert!(gap["data"]["error"]
        .as_str()
        .unwrap()
        .contains("first still held"));
    // The rest still comes, and the session goes on.
    c.send(json!({"type": "ping"}));
    let msgs = c.until("pong");
    assert!(msgs.len() > 1);
}

#[test]
fn reattach_is_refused_to_another_user_and_for_unknown_sessions() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .env("CLAUDE_WS_JWT_SECRET", SECRET)
        .start();
    let (a, _) = connect_as(&s, &jwt("alice"), "").unwrap();
    let id = a.session_id.clone();
    drop_connection(a);
    assert!(eventually(WAIT, || s
        .get_with(
            "/sessions",
            &[("Authorization", &format!("Bearer {}", jwt("alice")))]
        )
        .1[0]["state"]
        == "detached"));
    let e = connect_as(&s, &jwt("bob"), &format!("&session_id={id}&last_seq=0"))
        .err()
        .unwrap();
    assert!(e.starts_with("HTTP 403"), "{e}");
    let e = connect_as(
        &s,
        &jwt("alice"),
        "&session_id=00000000-0000-4000-8000-000000000000&last_seq=0",
    )
    .err()
    .unwrap();
    assert!(e.starts_with("HTTP 404"), "{e}");
    assert!(e.contains("unknown_session"), "{e}");
    // Bob sees none of Alice's sessions; Alice sees hers.
    let (_, rows) = s.get_with(
        "/sessions",
        &[("Authorization", &format!("Bearer {}", jwt("bob")))],
    );
    assert_eq!(rows, json!([]));
    let (mut a, hello) =
        connect_as(&s, &jwt("alice"), &format!("&session_id={id}&last_seq=1")).unwrap();
    assert_eq!(hello["data"]["resumed"], true);
    a.send(json!({"type": "ping"}));
    assert_eq!(a.recv()["type"], "pong");
}

#[test]
fn one_user_cannot_continue_or_resume_anothers_conversation() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .env("CLAUDE_WS_JWT_SECRET", SECRET)
        .arg("--admin-token=operator-token")
        .start();
    let (mut a, _) = connect_as(&s, &jwt("alice"), "").unwrap();
    let msgs = a.query("remember the secret plan", json!({}));
    let conversation = only(&msgs, "result_message")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let alice_session = a.session_id.clone();
    let (mut b, _) = connect_as(&s, &jwt("bob"), "").unwrap();
    let msgs = b.query("recall", json!({"continue_conversation": true}));
    assert!(!assistant_text(&msgs).contains("secret plan"), "{msgs:?}");
    let msgs = b.query("recall", json!({"resume": conversation}));
    assert!(!assistant_text(&msgs).contains("secret plan"), "{msgs:?}");
    let msgs = b.query("recall", json!({"resume": alice_session}));
    assert!(!assistant_text(&msgs).contains("secret plan"), "{msgs:?}");
    // Alice, in a new session, reaches her own by the server's session id.
    let (mut a2, _) = connect_as(&s, &jwt("alice"), "").unwrap();
    let msgs = a2.query("recall", json!({"resume": alice_session}));
    assert!(assistant_text(&msgs).contains("secret plan"), "{msgs:?}");
    // The operator sees everyone's sessions.
    let (_, rows) = s.get_with("/sessions", &[("Authorization", "Bearer operator-token")]);
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limits() {
    let s = ServerOptions::fake()
        .args(&["--trusted-proxies=127.0.0.1", "--max-sessions-per-peer=1"])
        .start();
    let as_client = |addr: &str| s.try_connect(&s.ws_url, &[("X-Forwarded-For", addr)]);
    let _one = as_client("203.0.113.1").unwrap();
    let _two = as_client("203.0.113.2").unwrap();
    let e = as_client("203.0.113.1").err().unwrap();
    assert!(e.starts_with("HTTP 429"), "{e}");
    assert!(e.contains("--max-sessions-per-peer"), "{e}");
    // From a peer that is not a trusted proxy the header is ignored: the address is
    // the peer's own, whatever it forwards.
    let s = ServerOptions::fake()
        .args(&["--max-sessions-per-peer=1"])
        .start();
    let _one = s
        .try_connect(&s.ws_url, &[("X-Forwarded-For", "203.0.113.1")])
        .unwrap();
    let e = s
        .try_connect(&s.ws_url, &[("X-Forwarded-For", "203.0.113.2")])
        .err()
        .unwrap();
    assert!(e.starts_with("HTTP 429"), "{e}");
}

#[test]
fn end_session_and_a_normal_close_end_the_session_at_once() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.query("hi", json!({}));
    c.send(json!({"type": "end_session"}));
    assert!(c.closed().starts_with("close 1000"));
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    let mut c = s.connect();
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = c.closed();
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    // Anything else leaves it detached until the grace passes.
    let s = ServerOptions::fake()
        .arg("--reconnect-grace-secs=1")
        .start();
    let c = s.connect();
    drop_connection(c);
    assert!(eventually(WAIT, || s
        .sessions()
        .first()
        .is_some_and(|r| r["state"] == "detached")));
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    let _ = TcpStream::connect(s.ws_authority()); // the server is still there
}
