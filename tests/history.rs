//! Conversations across sessions, with the REAL Claude Code CLI against the scripted
//! Messages API: a resume of a conversation that does not exist, and what follows it.
//! These fail (never skip) when the CLI is missing: run scripts/install-claude.sh.

mod support;

use serde_json::{json, Value};
use support::*;

#[test]
fn a_failed_resume_ends_with_conversation_not_found_and_the_next_query_starts_fresh() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    let missing = "0b0b0b0b-0000-4000-8000-000000000000";
    let msgs = c.query("remember kilo", json!({"resume": missing}));
    let errors: Vec<_> = msgs.iter().filter(|m| m["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "{msgs:?}");
    assert_eq!(
        errors[0]["data"]["code"], "conversation_not_found",
        "{msgs:?}"
    );
    assert_eq!(only(&msgs, "query_end")["outcome"], "error");
    // The next query of the session does not try that conversation again.
    let msgs = c.query("remember lima", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m["type"] == "error"),
        "the failed target stuck: {msgs:?}"
    );
    assert!(assistant_text(&msgs).contains("remember lima"));
    // And the conversation it started goes on.
    let msgs = c.query("recall", json!({}));
    let text = assistant_text(&msgs);
    assert!(text.contains("remember lima"), "{text}");
}

const SECRET: &str = "history-test-secret";

/// A server with users (JWT) whose state lives in `state`.
fn server(api: &MockApi, state: &std::path::Path, extra: &[&str]) -> TestServer {
    ServerOptions::real(api)
        .env("CLAUDE_WS_JWT_SECRET", SECRET)
        .arg(&format!("--state-dir={}", state.display()))
        .arg("--admin-token=operator-token")
        .args(extra)
        .start()
}

/// Every session's `/sessions` row (as the operator).
fn rows(s: &TestServer) -> Vec<Value> {
    let (_, rows) = s.get_with("/sessions", &[("Authorization", "Bearer operator-token")]);
    rows.as_array().expect("rows").clone()
}

/// Connect as `sub` and read `connection_established`.
fn connect_as(s: &TestServer, sub: &str) -> Client {
    let token = support::jwt::user_jwt(SECRET, sub);
    s.connect_with(&format!("{}?token={token}", s.ws_url), &[])
}

/// Send `request` and read up to its answer of type `kind` (or an `error`).
fn ask(c: &mut Client, request: Value, kind: &str) -> Value {
    c.send(request);
    loop {
        let m = c.recv();
        if m["type"] == kind || m["type"] == "error" {
            return m;
        }
    }
}

fn list(c: &mut Client) -> Vec<Value> {
    let m = ask(c, json!({"type": "list_conversations"}), "conversations");
    assert_eq!(m["type"], "conversations", "{m}");
    m["data"]["conversations"].as_array().unwrap().clone()
}

fn code(m: &Value) -> &str {
    assert_eq!(m["type"], "error", "{m}");
    m["data"]["code"].as_str().unwrap()
}

/// The messages of `msgs` a loaded conversation holds again, as `{type, data}`.
fn as_history(msgs: &[Value]) -> Vec<Value> {
    msgs.iter()
        .filter(|m| ["assistant_message", "result_message"].contains(&m["type"].as_str().unwrap()))
        .map(|m| json!({"type": m["type"], "data": m["data"]}))
        .collect()
}

#[test]
fn conversations_are_listed_newest_first_loaded_as_sent_and_continued_and_nobody_else_sees_them() {
    let api = MockApi::start();
    let state = TempDir::new("history-state");
    let s = server(&api, state.path(), &[]);
    let mut a = connect_as(&s, "alice");
    let apples = a.query("remember apples", json!({}));
    assert_eq!(
        only(&apples, "query_end")["outcome"],
        "completed",
        "{apples:?}"
    );
    let apples_id = a.session_id.clone();
    a.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = a.closed();
    assert!(eventually(WAIT, || rows(&s).is_empty()));
    let mut b = connect_as(&s, "alice");
    let pears = b.query("remember pears", json!({}));
    assert_eq!(only(&pears, "query_end")["outcome"], "completed");

    // Newest first: the live one, then the ended one.
    let mut c = connect_as(&s, "alice");
    let rows = list(&mut c);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["session_id"], b.session_id.as_str());
    assert_eq!(rows[0]["title"], "remember pears");
    assert_eq!(rows[0]["live"], true);
    assert_eq!(rows[1]["session_id"], apples_id.as_str());
    assert_eq!(rows[1]["title"], "remember apples");
    assert_eq!(rows[1]["live"], false);
    for r in &rows {
        assert_eq!(r["turns"], 1, "{r}");
        assert!(r["cwd"].as_str().is_some_and(|d| !d.is_empty()), "{r}");
        let (created, updated) = (
            r["created_at"].as_u64().unwrap(),
            r["updated_at"].as_u64().unwrap(),
        );
        assert!(created > 1_700_000_000 && created <= updated, "{r}");
    }
    // Paging: one at a time, `before` the last one seen.
    let page = ask(
        &mut c,
        json!({"type": "list_conversations", "limit": 1}),
        "conversations",
    );
    assert_eq!(page["data"]["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"]["more"], true);
    let next = ask(
        &mut c,
        json!({"type": "list_conversations", "limit": 1, "before": b.session_id}),
        "conversations",
    );
    assert_eq!(
        next["data"]["conversations"][0]["session_id"],
        apples_id.as_str()
    );
    assert_eq!(next["data"]["more"], false);
    // Bad input has its code.
    let huge = ask(
        &mut c,
        json!({"type": "list_conversations", "limit": 100000}),
        "conversations",
    );
    assert_eq!(code(&huge), "invalid_field");
    let unknown = "0c0c0c0c-0000-4000-8000-000000000000";
    let m = ask(
        &mut c,
        json!({"type": "load_conversation", "session_id": unknown}),
        "conversation",
    );
    assert_eq!(code(&m), "conversation_not_found");

    // Loaded: the prompt, then the assistant_messages and result_message as they were sent.
    let loaded = ask(
        &mut c,
        json!({"type": "load_conversation", "session_id": apples_id}),
        "conversation",
    );
    assert_eq!(loaded["type"], "conversation", "{loaded}");
    assert_eq!(loaded["data"]["session_id"], apples_id.as_str());
    let messages = loaded["data"]["messages"].as_array().unwrap();
    assert_eq!(messages[0]["type"], "query_start", "{messages:?}");
    assert_eq!(messages[0]["data"]["prompt"], "remember apples");
    assert_eq!(
        &messages[1..],
        &as_history(&apples)[..],
        "live and loaded differ"
    );

    // Continued by a query with `resume`: the model sees the old conversation.
    let msgs = c.query("recall", json!({"resume": apples_id}));
    let text = assistant_text(&msgs);
    assert!(
        text.contains("remember apples") && !text.contains("pears"),
        "{text}"
    );
    // One conversation, one row: the session now holding it, live. (2.1.197 writes
    // its transcript up to ~0.5 s after the turn's result: the turns are counted from
    // it, so the list catches up.)
    let mut rows = list(&mut c);
    eventually(WAIT, || {
        rows = list(&mut c);
        rows.first().is_some_and(|r| r["turns"] == 2)
    });
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["session_id"], c.session_id.as_str());
    assert_eq!(
        (&rows[0]["title"], &rows[0]["turns"], &rows[0]["live"]),
        (&json!("remember apples"), &json!(2), &json!(true))
    );

    // Another user sees none of it, and gets the same error as for an unknown id.
    let mut eve = connect_as(&s, "eve");
    assert!(list(&mut eve).is_empty());
    for request in [
        json!({"type": "load_conversation", "session_id": apples_id}),
        json!({"type": "rename_conversation", "session_id": apples_id, "title": "mine"}),
        json!({"type": "delete_conversation", "session_id": apples_id}),
    ] {
        let m = ask(&mut eve, request, "conversation");
        assert_eq!(code(&m), "conversation_not_found", "{m}");
    }

    // Another instance sharing the state directory lists the same conversations.
    let s2 = server(&api, state.path(), &[]);
    let mut d = connect_as(&s2, "alice");
    let there: Vec<_> = list(&mut d)
        .iter()
        .map(|r| r["session_id"].clone())
        .collect();
    assert_eq!(there, [json!(c.session_id), json!(b.session_id)]);
}

#[test]
fn a_conversation_is_renamed_and_deleted_with_its_transcript_but_not_while_live() {
    let api = MockApi::start();
    let state = TempDir::new("history-state");
    let s = server(&api, state.path(), &[]);
    let mut a = connect_as(&s, "alice");
    a.query("remember plums", json!({}));
    let id = a.session_id.clone();
    let conversation = rows(&s)[0]["claude_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let transcripts = |dir: &std::path::Path| {
        let name = format!("{conversation}.jsonl");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().join(&name).is_file())
    };
    // The principal's directory: the one holding the records.
    let principal_dir = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("claude-ws-sessions").is_dir())
        .expect("the principal's state directory");
    let projects = principal_dir.join("projects");

    let mut c = connect_as(&s, "alice");
    let m = ask(
        &mut c,
        json!({"type": "rename_conversation", "session_id": id, "title": "Plums"}),
        "conversation_renamed",
    );
    assert_eq!(m["data"]["title"], "Plums", "{m}");
    assert_eq!(
        list(&mut c)
            .iter()
            .find(|r| r["session_id"] == id.as_str())
            .unwrap()["title"],
        "Plums"
    );
    let long = "x".repeat(1000);
    let m = ask(
        &mut c,
        json!({"type": "rename_conversation", "session_id": id, "title": long}),
        "conversation_renamed",
    );
    assert_eq!(code(&m), "invalid_field");
    // Live: refused.
    let m = ask(
        &mut c,
        json!({"type": "delete_conversation", "session_id": id}),
        "conversation_deleted",
    );
    assert_eq!(code(&m), "conversation_live");
    a.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = a.closed();
    assert!(eventually(WAIT, || rows(&s).len() == 1), "{:?}", rows(&s));
    // (CLIs before 2.1.332 write the transcript when they exit.)
    assert!(eventually(WAIT, || transcripts(&projects)), "no transcript");
    let m = ask(
        &mut c,
        json!({"type": "delete_conversation", "session_id": id}),
        "conversation_deleted",
    );
    assert_eq!(m["type"], "conversation_deleted", "{m}");
    assert!(!transcripts(&projects), "the transcript is still there");
    assert!(list(&mut c).iter().all(|r| r["session_id"] != id.as_str()));
    let m = ask(
        &mut c,
        json!({"type": "load_conversation", "session_id": id}),
        "conversation",
    );
    assert_eq!(code(&m), "conversation_not_found");
}

#[test]
fn two_dropped_clients_at_max_sessions_2_do_not_block_a_third() {
    let api = MockApi::start();
    let state = TempDir::new("history-state");
    let s = server(&api, state.path(), &["--max-sessions=2"]);
    let mut ids = Vec::new();
    for word in ["figs", "dates"] {
        let mut c = connect_as(&s, "alice");
        let msgs = c.query(&format!("remember {word}"), json!({}));
        assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
        ids.push(c.session_id.clone());
        // Gone without a close frame, as wscat leaves.
        let _ = c.ws.get_ref().shutdown(std::net::Shutdown::Both);
    }
    assert!(eventually(WAIT, || rows(&s)
        .iter()
        .filter(|r| r["state"] == "detached")
        .count()
        == 2));
    // The balancer may still send new sessions here.
    let (status, why) = s.get("/ready");
    assert_eq!(status, 200, "{why}");
    // A third is served: a detached one made room (the least recently used; both
    // were last used within the same second here, which `/sessions` cannot tell apart).
    let mut c = connect_as(&s, "bob");
    let msgs = c.query("hello", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let left: Vec<_> = rows(&s).iter().map(|r| r["session_id"].clone()).collect();
    let gone: Vec<usize> = (0..2).filter(|i| !left.contains(&json!(ids[*i]))).collect();
    assert_eq!(gone.len(), 1, "{left:?}");
    // And the conversation of the one ended is still resumable.
    let word = ["figs", "dates"][gone[0]];
    let mut a = connect_as(&s, "alice");
    let msgs = a.query("recall", json!({"resume": ids[gone[0]]}));
    assert!(
        assistant_text(&msgs).contains(&format!("remember {word}")),
        "{msgs:?}"
    );
}

#[test]
fn on_default_flags_history_lives_beside_the_clis_own_transcripts() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut a = s.connect();
    a.query("remember cherries", json!({}));
    let id = a.session_id.clone();
    a.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = a.closed();
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    let mut c = s.connect();
    let rows = list(&mut c);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["session_id"], &rows[0]["live"]),
        (&json!(id), &json!(false))
    );
    let loaded = ask(
        &mut c,
        json!({"type": "load_conversation", "session_id": id}),
        "conversation",
    );
    assert_eq!(
        loaded["data"]["messages"][0]["data"]["prompt"], "remember cherries",
        "{loaded}"
    );
    let msgs = c.query("recall", json!({"resume": id}));
    assert!(
        assistant_text(&msgs).contains("remember cherries"),
        "{msgs:?}"
    );
}

#[test]
fn at_the_per_user_cap_a_dropped_session_of_that_user_makes_room_and_nobody_elses() {
    let api = MockApi::start();
    let state = TempDir::new("history-state");
    let s = server(&api, state.path(), &["--max-sessions-per-peer=1"]);
    let mut bob = connect_as(&s, "bob");
    bob.query("hello", json!({}));
    let _ = bob.ws.get_ref().shutdown(std::net::Shutdown::Both);
    let mut a = connect_as(&s, "alice");
    a.query("remember kiwis", json!({}));
    let first = a.session_id.clone();
    let _ = a.ws.get_ref().shutdown(std::net::Shutdown::Both);
    assert!(eventually(WAIT, || rows(&s)
        .iter()
        .all(|r| r["state"] == "detached")));
    // Alice is at her cap: her own dropped session makes room, Bob's stays.
    let mut a = connect_as(&s, "alice");
    let left: Vec<_> = rows(&s).iter().map(|r| r["session_id"].clone()).collect();
    assert!(
        !left.contains(&json!(first)) && left.contains(&json!(bob.session_id)),
        "{left:?}"
    );
    // A session of hers that is attached is never ended for another of hers.
    let token = support::jwt::user_jwt(SECRET, "alice");
    let refused = s
        .try_connect(&format!("{}?token={token}", s.ws_url), &[])
        .err();
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("429")),
        "{refused:?}"
    );
    let msgs = a.query("recall", json!({"resume": first}));
    assert!(assistant_text(&msgs).contains("remember kiwis"), "{msgs:?}");
}

/// Two instances sharing `--state-dir` (as behind nginx): a conversation a session
/// holds on one is listed live on the other and cannot be deleted there; once that
/// session ends it is neither; a lease its instance never removed (killed) stops
/// counting once it is stale.
#[test]
fn a_conversation_live_on_another_instance_is_live_here_too() {
    let api = MockApi::start();
    let state = TempDir::new("history-state");
    let one = server(&api, state.path(), &[]);
    let two = server(&api, state.path(), &[]);
    let mut a = connect_as(&one, "alice");
    let figs = a.query("remember figs", json!({}));
    assert_eq!(only(&figs, "query_end")["outcome"], "completed");
    let id = a.session_id.clone();
    let mut c = connect_as(&two, "alice");
    let row_of = |c: &mut Client| {
        list(c)
            .into_iter()
            .find(|r| r["session_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} is not listed"))
    };
    assert_eq!(row_of(&mut c)["live"], true);
    let delete = json!({"type": "delete_conversation", "session_id": id});
    let m = ask(&mut c, delete.clone(), "conversation_deleted");
    assert_eq!(code(&m), "conversation_live");
    // A reattach that reaches this instance instead of the one holding the session is
    // refused: resumed here, the conversation would have two CLIs.
    let token = support::jwt::user_jwt(SECRET, "alice");
    let url = format!("{}?token={token}&session_id={id}&last_seq=1", two.ws_url);
    let refused = two.try_connect(&url, &[]).map(|_| ()).unwrap_err();
    assert!(
        refused.contains("409") && refused.contains("conversation_live"),
        "{refused}"
    );
    let (_, _, metrics) = http_request(&two.http_addr, "GET", "/metrics", &[]);
    let counted = "claude_ws_refusals_total{reason=\"conversation_live\"} 1";
    assert!(
        metrics.lines().any(|l| l == counted),
        "no {counted:?} in\n{metrics}"
    );

    // Its session ends on the first instance: its lease goes with it.
    a.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = a.closed();
    assert!(eventually(WAIT, || rows(&one).is_empty()));
    assert_eq!(row_of(&mut c)["live"], false);
    let lease = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .map(|e| e.path().join("claude-ws-sessions"))
        .find(|p| p.is_dir())
        .expect("the principal's records")
        .join(format!("{id}.live"));
    assert!(!lease.exists(), "{} is left", lease.display());

    // A lease left by an instance that was killed on this host: not live.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    let _ = { gone }.wait();
    std::fs::write(&lease, format!("{dead}@{}", host.trim())).unwrap();
    assert_eq!(row_of(&mut c)["live"], false);
    // One left by an instance on another host: live while fresh, not once stale.
    std::fs::write(&lease, "1@another-host").unwrap();
    assert_eq!(row_of(&mut c)["live"], true);
    let stale = std::process::Command::new("touch")
        .args(["-d", "2 minutes ago"])
        .arg(&lease)
        .status()
        .unwrap();
    assert!(stale.success());
    assert_eq!(row_of(&mut c)["live"], false);
    let m = ask(&mut c, delete, "conversation_deleted");
    assert_eq!(m["type"], "conversation_deleted", "{m}");
    assert!(!lease.exists(), "the stale lease outlived its conversation");
}
