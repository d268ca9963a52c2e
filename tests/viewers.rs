//! Issue 20: one session on several devices at once — viewers of a session, against the
//! REAL Claude Code CLI and the scripted Messages API (the stand-in only for a flood and
//! for what needs no child).

mod support;

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn seq(m: &Value) -> u64 {
    m["seq"].as_u64().expect("a seq")
}

/// Join session `id` as another viewer, having seen its messages up to `last_seq`:
/// the client and its `connection_established`.
fn join(s: &TestServer, id: &str, last_seq: u64) -> (Client, Value) {
    let url = format!("{}?session_id={id}&last_seq={last_seq}", s.ws_url);
    let mut c = s
        .try_connect(&url, &[])
        .unwrap_or_else(|e| panic!("join failed: {e}\nserver log:\n{}", s.logs()));
    let hello = c.recv();
    assert_eq!(hello["type"], "connection_established", "{hello}");
    c.session_id = id.to_string();
    (c, hello)
}

/// A first connection and a second one joined to its session, each past its
/// `viewer_joined`: (first, second, the second's viewer number).
fn two_viewers(s: &TestServer) -> (Client, Client, u64) {
    let mut a = s.connect();
    let (mut b, hello) = join(s, &a.session_id.clone(), 1);
    assert_eq!(hello["seq"], 0, "{hello}");
    assert_eq!(hello["data"]["viewers"], 2, "{hello}");
    let viewer = hello["data"]["viewer"].as_u64().expect("a viewer number");
    for c in [&mut a, &mut b] {
        let joined = c.recv();
        assert_eq!(joined["type"], "viewer_joined", "{joined}");
        assert_eq!(joined["data"]["viewers"], 2, "{joined}");
        assert_eq!(joined["data"]["viewer"], viewer, "{joined}");
    }
    (a, b, viewer)
}

/// The value of an unlabelled series in `/metrics`.
fn metric(s: &TestServer, name: &str) -> f64 {
    let (status, _, body) = http_request(&s.http_addr, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

fn viewers_listed(s: &TestServer) -> Value {
    s.sessions()
        .first()
        .map_or(Value::Null, |r| r["viewers"].clone())
}

#[test]
fn two_viewers_see_one_answer_with_equal_seqs() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut a = s.try_connect(&s.ws_url, &[]).unwrap();
    let hello = a.recv();
    assert_eq!(hello["data"]["viewers"], 1, "{hello}");
    assert_eq!(hello["data"]["viewer"], 1, "{hello}");
    let id = hello["data"]["session_id"].as_str().unwrap().to_string();
    let (mut b, hello) = join(&s, &id, seq(&hello));
    assert_eq!(hello["data"]["session_id"], id.as_str());
    assert_eq!(hello["data"]["viewers"], 2);
    let joined_a = a.recv();
    let joined_b = b.recv();
    assert_eq!(joined_a["type"], "viewer_joined");
    assert_eq!(joined_a, joined_b);
    assert!(
        eventually(WAIT, || viewers_listed(&s) == 2),
        "{:?}",
        s.sessions()
    );
    assert_eq!(s.sessions().len(), 1);
    assert!(eventually(WAIT, || metric(&s, "claude_ws_viewers") == 2.0));
    a.send(json!({"type": "query", "prompt": "slow 5 50"}));
    let seen_a = a.until("query_end");
    let seen_b = b.until("query_end");
    assert_eq!(
        only(&seen_a, "query_end")["outcome"],
        "completed",
        "{seen_a:?}"
    );
    // The same messages, the same seqs, in the same order.
    assert_eq!(seen_a, seen_b);
    assert_seq(&seen_a, seq(&joined_a) + 1);
    assert!(assistant_text(&seen_b).contains("word4"), "{seen_b:?}");
}

#[test]
fn the_second_viewer_interrupts_the_first_viewers_query() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let (mut a, mut b, _) = two_viewers(&s);
    a.send(json!({"type": "query", "prompt": "slow 200 100"}));
    b.until("assistant_message");
    b.send(json!({"type": "interrupt"}));
    let seen_a = a.until("query_end");
    let seen_b = b.until("query_end");
    for seen in [&seen_a, &seen_b] {
        assert_eq!(
            only(seen, "query_end")["outcome"],
            "interrupted",
            "{seen:?}"
        );
        assert!(types(seen).contains(&"interrupt_acknowledged".to_string()));
    }
    assert_eq!(seen_a.last(), seen_b.last());
    // Both go on: the first asks again and both see the answer.
    a.send(json!({"type": "query", "prompt": "after the interrupt"}));
    let seen_a = a.until("query_end");
    let seen_b = b.until("query_end");
    assert_eq!(seen_a, seen_b);
    assert!(assistant_text(&seen_a).contains("Echo: after the interrupt"));
}

#[test]
fn a_prompt_answered_on_one_device_is_resolved_on_the_other() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut a = s.connect();
    let id = a.session_id.clone();
    let file = s.workspace.join("allowed-on-the-phone");
    a.send(json!({
        "type": "query",
        "prompt": format!("bash touch {}", file.display()),
        "options": {"permission_prompts": true, "cwd": s.workspace},
    }));
    let asked = a.until("permission_request");
    let request = asked.last().unwrap().clone();
    let request_id = request["data"]["request_id"].clone();
    // A device that joins while the prompt waits is asked too (it says it has seen
    // everything so far, so only the waiting question comes, outside the stream).
    let (mut b, hello) = join(&s, &id, seq(&request));
    assert_eq!(hello["data"]["viewers"], 2);
    let b_viewer = hello["data"]["viewer"].clone();
    let again = b.recv();
    assert_eq!(again["type"], "permission_request", "{again}");
    assert_eq!(again["data"]["request_id"], request_id);
    assert_eq!(again["seq"], 0);
    assert_eq!(b.recv()["type"], "viewer_joined");
    assert_eq!(a.recv()["type"], "viewer_joined");
    assert!(!file.exists(), "the tool ran before it was allowed");
    // The phone answers; the laptop learns it was answered, and by whom.
    b.send(json!({"type": "permission_response", "request_id": request_id, "behavior": "allow"}));
    let seen_a = a.until("permission_resolved");
    let resolved = seen_a.last().unwrap();
    assert_eq!(resolved["data"]["request_id"], request_id, "{resolved}");
    assert_eq!(resolved["data"]["behavior"], "allow", "{resolved}");
    assert_eq!(resolved["data"]["viewer"], b_viewer, "{resolved}");
    // The laptop's answer comes too late.
    a.send(json!({"type": "permission_response", "request_id": request_id, "behavior": "deny"}));
    let rest_a = a.until("query_end");
    let late = rest_a
        .iter()
        .find(|m| m["type"] == "error")
        .unwrap_or_else(|| panic!("no error in {rest_a:?}"));
    assert_eq!(late["data"]["code"], "unknown_request", "{late}");
    assert_eq!(only(&rest_a, "query_end")["outcome"], "completed");
    let seen_b = b.until("query_end");
    assert_eq!(only(&seen_b, "permission_resolved")["viewer"], b_viewer);
    // The refusal of the laptop's late answer is the laptop's alone.
    assert!(!seen_b.iter().any(|m| m["type"] == "error"), "{seen_b:?}");
    assert!(file.exists(), "allowed, but the file was not made");
}

#[test]
fn a_client_tool_call_answered_on_one_device_is_resolved_on_the_other() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let (mut a, mut b, b_viewer) = two_viewers(&s);
    b.send(json!({"type": "define_tool", "tool": {
        "name": "Shout",
        "description": "Says it louder",
        "parameters": {"text": {"type": "string", "required": true}}
    }}));
    assert_eq!(a.until("tool_defined").len(), 1);
    assert_eq!(b.until("tool_defined").len(), 1);
    a.send(json!({"type": "query", "prompt": r#"tool mcp__ws__Shout {"text": "hi"}"#}));
    let call_a = a.until("tool_call").pop().unwrap();
    let call_b = b.until("tool_call").pop().unwrap();
    assert_eq!(call_a, call_b);
    let call_id = call_a["data"]["call_id"].clone();
    a.send(json!({"type": "tool_result", "call_id": call_id, "content": "HI"}));
    let resolved = b.until("tool_call_resolved").pop().unwrap();
    assert_eq!(resolved["data"]["call_id"], call_id, "{resolved}");
    assert_eq!(resolved["data"]["is_error"], false, "{resolved}");
    assert_eq!(resolved["data"]["viewer"], 1, "{resolved}");
    assert_ne!(b_viewer, 1);
    b.send(json!({"type": "tool_result", "call_id": call_id, "content": "too late"}));
    let rest_b = b.until("query_end");
    assert!(
        rest_b
            .iter()
            .any(|m| m["type"] == "error" && m["data"]["code"] == "unknown_request"),
        "{rest_b:?}"
    );
    let seen_a = a.until("query_end");
    assert_eq!(only(&seen_a, "query_end")["outcome"], "completed");
    assert!(assistant_text(&seen_a).contains("Done: HI"), "{seen_a:?}");
    assert!(!seen_a.iter().any(|m| m["type"] == "error"), "{seen_a:?}");
}

#[test]
fn a_normal_close_by_one_viewer_leaves_the_other_working() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let (mut a, mut b, b_viewer) = two_viewers(&s);
    a.send(json!({"type": "query", "prompt": "slow 20 100"}));
    b.until("assistant_message");
    b.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = b.closed();
    // (The answer may end before the close is seen: a CLI that sends the whole
    // message at once.)
    let mut seen = a.until("query_end");
    if !types(&seen).contains(&"viewer_left".to_string()) {
        seen.extend(a.until("viewer_left"));
    }
    let left = seen.iter().find(|m| m["type"] == "viewer_left").unwrap();
    assert_eq!(left["data"]["viewers"], 1, "{left}");
    assert_eq!(left["data"]["viewer"], b_viewer, "{left}");
    assert_eq!(only(&seen, "query_end")["outcome"], "completed");
    assert!(eventually(WAIT, || s.sessions()[0]["state"] == "idle"));
    assert!(
        eventually(WAIT, || viewers_listed(&s) == 1),
        "{:?}",
        s.sessions()
    );
    let msgs = a.query("still here", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: still here"));
    // The last viewer's normal close ends the session, as with one connection.
    a.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = a.closed();
    assert!(eventually(WAIT, || s.sessions().is_empty()));
}

#[test]
fn a_dropped_viewer_leaves_the_other_and_the_last_one_detaches() {
    let s = ServerOptions::fake().start();
    let (mut a, b, _) = two_viewers(&s);
    let _ = b.ws.get_ref().shutdown(std::net::Shutdown::Both);
    let left = a.until("viewer_left").pop().unwrap();
    assert_eq!(left["data"]["viewers"], 1);
    assert!(eventually(WAIT, || s.sessions()[0]["state"] == "idle"));
    let _ = a.ws.get_ref().shutdown(std::net::Shutdown::Both);
    assert!(eventually(WAIT, || s.sessions()[0]["state"] == "detached"));
    assert!(
        eventually(WAIT, || viewers_listed(&s) == 0),
        "{:?}",
        s.sessions()
    );
    assert!(eventually(WAIT, || metric(&s, "claude_ws_viewers") == 0.0));
}

#[test]
fn end_session_by_one_viewer_ends_it_for_all() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let (mut a, mut b, _) = two_viewers(&s);
    let msgs = a.query("hello", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    b.until("query_end");
    b.send(json!({"type": "end_session"}));
    assert!(a.closed().starts_with("close 1000"));
    assert!(b.closed().starts_with("close 1000"));
    assert!(eventually(WAIT, || s.sessions().is_empty()));
}

#[test]
fn max_viewers_bounds_the_connections_of_a_session() {
    let s = ServerOptions::fake().arg("--max-viewers=2").start();
    let (mut a, mut b, _) = two_viewers(&s);
    let url = format!("{}?session_id={}&last_seq=1", s.ws_url, a.session_id);
    let mut c = s.try_connect(&url, &[]).unwrap();
    let hello = c.recv();
    assert_eq!(hello["type"], "error", "{hello}");
    assert_eq!(hello["data"]["code"], "too_many_viewers", "{hello}");
    assert!(
        hello["data"]["error"]
            .as_str()
            .unwrap()
            .contains("--max-viewers"),
        "{hello}"
    );
    assert!(c.closed().starts_with("close 4004"));
    // The two go on, and nobody was told of a third. A ping is answered to the
    // viewer that sent it alone (seq 0: outside the stream the others share).
    a.send(json!({"type": "ping"}));
    let pong = a.recv();
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["seq"], 0, "{pong}");
    b.send(json!({"type": "ping"}));
    let pong = b.recv();
    assert_eq!(pong["type"], "pong", "{pong}");
    a.send(json!({"type": "get_tools"}));
    assert_eq!(
        a.recv()["type"],
        "tools_list",
        "the other's pong came here too"
    );
    assert_eq!(b.recv()["type"], "tools_list");
    assert!(
        eventually(WAIT, || viewers_listed(&s) == 2),
        "{:?}",
        s.sessions()
    );
    // A bad bound is refused at start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claude-ws"))
        .arg("--max-viewers=0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-viewers"));
}

#[test]
fn a_slow_viewer_is_dropped_without_slowing_the_other() {
    let s = ServerOptions::fake()
        .arg("--stall-timeout-secs=2")
        .arg("--ping-interval-secs=300")
        .start();
    let (mut fast, slow, slow_viewer) = two_viewers(&s);
    // The slow device reads nothing from here on; 64 MiB is far more than its socket
    // buffers, the high-water mark and the replay buffer hold.
    fast.send(json!({"type": "query", "prompt": "flood 1000 65536"}));
    let t0 = Instant::now();
    let seen = fast.until("query_end");
    let took = t0.elapsed();
    assert_eq!(only(&seen, "query_end")["outcome"], "completed");
    let left = seen
        .iter()
        .find(|m| m["type"] == "viewer_left")
        .unwrap_or_else(|| panic!("the slow viewer was not dropped: {:?}", types(&seen)));
    assert_eq!(left["data"]["viewer"], slow_viewer);
    assert_eq!(left["data"]["viewers"], 1);
    assert!(took < WAIT, "the fast viewer took {took:?}");
    assert!(
        eventually(WAIT, || viewers_listed(&s) == 1),
        "{:?}",
        s.sessions()
    );
    // The slow one finds its connection closed once it reads.
    let mut tcp = slow.ws.get_ref().try_clone().unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(
        total < 64 << 20,
        "the slow viewer got everything ({total} bytes)"
    );
}

#[test]
fn only_the_sessions_own_user_may_join_it() {
    const SECRET: &str = "viewers-test-secret";
    let s = ServerOptions::fake()
        .env("CLAUDE_WS_JWT_SECRET", SECRET)
        .start();
    let token = |sub: &str| support::jwt::user_jwt(SECRET, sub);
    let mut a = s
        .try_connect(&format!("{}?token={}", s.ws_url, token("alice")), &[])
        .unwrap();
    let id = a.recv()["data"]["session_id"].as_str().unwrap().to_string();
    let join_as = |sub: &str| {
        s.try_connect(
            &format!(
                "{}?token={}&session_id={id}&last_seq=1",
                s.ws_url,
                token(sub)
            ),
            &[],
        )
    };
    let e = join_as("bob").err().expect("bob is refused");
    assert!(e.starts_with("HTTP 403"), "{e}");
    // Alice's second device joins; Alice's first one hears of it, of nobody else.
    let mut phone = join_as("alice").unwrap();
    let hello = phone.recv();
    assert_eq!(hello["data"]["viewers"], 2, "{hello}");
    let joined = a.recv();
    assert_eq!(joined["type"], "viewer_joined", "{joined}");
    assert_eq!(joined["data"]["viewers"], 2, "{joined}");
}

/// Stand-in CLI (the real one withdraws a prompt only at an interrupt, when the server
/// has answered it already): a question the CLI withdraws is withdrawn from every
/// viewer that was asked, and a late answer from either is refused to that one alone.
#[test]
fn a_question_the_cli_withdraws_is_withdrawn_from_every_viewer() {
    let s = ServerOptions::fake().start();
    let (mut a, mut b, _) = two_viewers(&s);
    a.send(json!({"type": "define_tool", "tool": {"name": "Fmt", "input_schema": {"type": "object", "properties": {}}}}));
    assert_eq!(a.until("tool_defined").len(), 1);
    assert_eq!(b.until("tool_defined").len(), 1);
    a.send(json!({"type": "query", "prompt": "ask-then-cancel", "options": {"permission_prompts": true}}));
    for c in [&mut a, &mut b] {
        assert_asked_then_withdrawn(&c.until("query_end"));
    }
    b.send(json!({"type": "permission_response", "request_id": "perm-1", "behavior": "allow"}));
    assert_eq!(b.recv()["data"]["code"], "unknown_request");
    // Only b was told: a's next message is the answer to its own ping.
    a.send(json!({"type": "ping"}));
    assert_eq!(a.recv()["type"], "pong");
}
