//! The server driving the REAL Claude Code CLI, offline, against the scripted Messages
//! API in tests/support/mock_api.rs. These fail (never skip) when the CLI is missing:
//! run scripts/install-claude.sh.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn real(api: &MockApi) -> TestServer {
    ServerOptions::real(api).start()
}

fn result_session_id(msgs: &[Value]) -> String {
    only(msgs, "result_message")["session_id"]
        .as_str()
        .expect("result has a session id")
        .to_string()
}

#[test]
fn hello() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert_eq!(types(&msgs)[0], "query_start");
    let init = msgs
        .iter()
        .find(|m| m["type"] == "system_message" && m["data"]["subtype"] == "init")
        .expect("system init relayed");
    assert!(init["data"]["tools"].is_array());
    assert_eq!(assistant_text(&msgs).trim(), "Echo: hello");
    let r = only(&msgs, "result_message");
    assert_eq!(r["subtype"], "success");
    assert_eq!(r["is_error"], false);
    assert!(r["total_cost_usd"].is_number());
    assert_eq!(r["cost_usd"], r["total_cost_usd"]);
    assert!(r["usage"].is_object());
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert_seq(&msgs, 2);
    let rows = s.sessions();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["session_id"], c.session_id.as_str());
    assert_eq!(rows[0]["claude_session_id"], r["session_id"]);
    assert_eq!(rows[0]["state"], "idle");
    assert_eq!(rows[0]["queries"], 1);
    let (status, health) = s.get("/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["sessions"], 1);
    assert!(health["claude"]["version"]
        .as_str()
        .unwrap()
        .contains("Claude Code"));
    // What the CLI offers, asked of it (docs/cli-versions.md), and the paths in use.
    let features = &health["claude"]["features"];
    assert_eq!(features["help"]["status"], "ok", "{features}");
    assert!(features["help"]["flags"].as_u64() > Some(20), "{features}");
    assert_eq!(
        features["init"]["tool_search"],
        init["data"]["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("ToolSearch"))),
        "{features}"
    );
    assert!(features["init"]["capabilities"].is_array(), "{features}");
    assert_eq!(features["paths"]["client_tools"], "always_load");
    assert_eq!(features["paths"]["warm"], "initialize_ahead");
}

#[test]
fn write_tool_creates_the_file() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    let target = s.workspace.join("created.txt");
    let msgs = c.query(
        &format!("write {} hello from the tool", target.display()),
        json!({"allowed_tools": ["Write"], "permission_mode": "acceptEdits", "cwd": s.workspace}),
    );
    let blocks: Vec<Value> = msgs
        .iter()
        .filter(|m| m["type"] == "assistant_message")
        .flat_map(|m| m["data"]["content"].as_array().cloned().unwrap())
        .collect();
    let tool_use = blocks
        .iter()
        .find(|b| b["type"] == "tool_use")
        .expect("tool_use relayed");
    assert_eq!(tool_use["name"], "Write");
    let tool_result = blocks
        .iter()
        .find(|b| b["type"] == "tool_result")
        .expect("tool_result relayed as assistant_message content");
    assert_eq!(tool_result["tool_use_id"], tool_use["id"]);
    assert_ne!(tool_result["is_error"], true, "{tool_result}");
    assert_eq!(read(&target), "hello from the tool");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn context_survives_across_queries() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    c.query("remember alpha", json!({}));
    let msgs = c.query("recall", json!({}));
    let text = assistant_text(&msgs);
    assert!(text.contains("remember alpha"), "{text}");
}

#[test]
fn interrupt_then_a_further_query() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    c.query("remember delta", json!({}));
    c.send(json!({"type": "query", "prompt": "slow 100 100"}));
    c.until("system_message");
    std::thread::sleep(Duration::from_millis(500));
    c.send(json!({"type": "interrupt"}));
    let msgs = c.until("query_end");
    assert_eq!(types(&msgs)[0], "interrupt_acknowledged");
    let t = types(&msgs);
    assert_eq!(&t[t.len() - 2..], ["query_interrupted", "query_end"]);
    assert_eq!(only(&msgs, "query_end")["outcome"], "interrupted");
    let msgs = c.query("recall", json!({}));
    let text = assistant_text(&msgs);
    assert!(text.contains("remember delta"), "{text}");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn input_during_a_query_reaches_the_model() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 15 100"}));
    c.until("system_message");
    c.send(json!({"type": "input", "text": "make it TypeScript"}));
    let msgs = c.until("query_end");
    assert_eq!(
        only(&msgs, "input_acknowledged")["text"],
        "make it TypeScript"
    );
    let results = msgs
        .iter()
        .filter(|m| m["type"] == "result_message")
        .count();
    assert_eq!(results, 2, "{:?}", types(&msgs));
    assert!(assistant_text(&msgs).contains("Echo: make it TypeScript"));
    assert!(api
        .user_texts()
        .iter()
        .any(|t| t.contains("make it TypeScript")));
}

#[test]
fn resume_after_reconnect_keeps_the_conversation() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg(NO_REATTACH).start();
    let mut first = s.connect();
    let msgs = first.query("remember bravo", json!({}));
    let claude_id = result_session_id(&msgs);
    let pid = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    drop(first);
    assert!(eventually(WAIT, || !pid_alive(pid)), "child not stopped");
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    assert!(!s.logs().contains("SIGTERM"), "stop was not graceful");
    let mut second = s.connect();
    let msgs = second.query("recall", json!({"resume": claude_id}));
    let text = assistant_text(&msgs);
    assert!(text.contains("remember bravo"), "{text}");
}

#[test]
fn changed_options_restart_the_child_and_keep_context() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    c.query("remember charlie", json!({}));
    let pid1 = s.sessions()[0]["child_pid"].as_u64().unwrap();
    let msgs = c.query("recall", json!({"max_turns": 5}));
    let pid2 = s.sessions()[0]["child_pid"].as_u64().unwrap();
    assert_ne!(pid1, pid2, "the child was not restarted");
    assert!(assistant_text(&msgs).contains("remember charlie"));
}

#[test]
fn partial_messages_arrive_as_stream_events() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({"include_partial_messages": true}));
    let events: Vec<_> = msgs
        .iter()
        .filter(|m| m["type"] == "stream_event")
        .collect();
    assert!(!events.is_empty(), "{:?}", types(&msgs));
    assert!(events
        .iter()
        .any(|e| e["data"]["event"]["type"] == "content_block_delta"));
}

#[test]
fn idle_child_is_stopped_and_resumed_transparently() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--child-idle-secs=0.5")
        .start();
    let mut c = s.connect();
    c.query("remember echo", json!({}));
    let pid = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    assert!(
        eventually(WAIT, || !pid_alive(pid)),
        "idle child not stopped"
    );
    assert!(eventually(WAIT, || s.get("/health").1["children"] == 0));
    assert_eq!(s.sessions()[0]["child_pid"], Value::Null);
    let msgs = c.query("recall", json!({}));
    assert!(assistant_text(&msgs).contains("remember echo"));
}

#[test]
fn an_explicit_resume_switches_conversation_within_a_session() {
    let api = MockApi::start();
    let s = real(&api);
    let mut other = s.connect();
    let golf = result_session_id(&other.query("remember golf", json!({})));
    drop(other);
    let mut c = s.connect();
    c.query("remember foxtrot", json!({}));
    let msgs = c.query("recall", json!({"resume": golf}));
    let text = assistant_text(&msgs);
    assert!(text.contains("remember golf"), "{text}");
    assert!(!text.contains("foxtrot"), "{text}");
    // The same options again continue that conversation, not restart it.
    let msgs = c.query("recall", json!({"resume": golf}));
    assert!(assistant_text(&msgs).contains("remember golf"));
}

#[test]
fn several_inputs_during_a_turn_end_the_query_once() {
    let api = MockApi::start();
    let s = real(&api);
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 15 100"}));
    c.until("system_message");
    c.send(json!({"type": "input", "text": "first extra"}));
    c.send(json!({"type": "input", "text": "second extra"}));
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let text = assistant_text(&msgs);
    assert!(text.contains("first extra"), "{text}");
    assert!(text.contains("second extra"), "{text}");
    // Nothing of the query trails its query_end.
    c.send(json!({"type": "ping"}));
    assert_eq!(c.recv()["type"], "pong");
}

#[test]
fn a_new_cwd_starts_a_new_conversation_instead_of_failing() {
    let api = MockApi::start();
    let s = real(&api);
    std::fs::create_dir_all(s.workspace.join("sub")).unwrap();
    let mut c = s.connect();
    c.query("remember india", json!({}));
    // The CLI keeps conversations per directory: resuming this one from "sub" would
    // fail ("No conversation found"), so the server starts a fresh one there.
    let msgs = c.query("recall", json!({"cwd": "sub"}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(!assistant_text(&msgs).contains("india"));
    // Moving back works the same way (an earlier conversation is one `resume` away).
    let msgs = c.query("recall", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
}
