//! Failure rules, driven through a real WebSocket client against the real server binary,
//! with the stand-in CLI (tests/support/fake_claude.rs) producing the faults the real
//! CLI will not produce on demand.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tungstenite::Message;

fn fake() -> TestServer {
    ServerOptions::fake().start()
}

#[test]
fn echo_query_round_trip_has_the_protocol_shape() {
    let s = fake();
    let mut c = s.connect();
    let msgs = c.query("hello there", json!({}));
    assert_eq!(
        types(&msgs),
        [
            "query_start",
            "system_message",
            "assistant_message",
            "result_message",
            "query_end"
        ]
    );
    assert_eq!(only(&msgs, "query_start")["prompt"], "hello there");
    assert_eq!(only(&msgs, "system_message")["subtype"], "init");
    assert!(assistant_text(&msgs).contains("Echo: hello there"));
    let r = only(&msgs, "result_message");
    assert_eq!(r["subtype"], "success");
    assert_eq!(r["is_error"], false);
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    // connection_established was seq 1.
    assert_seq(&msgs, 2);
    let mut more = c.query("again", json!({}));
    assert_eq!(more.remove(0)["seq"], 7);
}

#[test]
fn bad_client_input_gets_specific_codes_and_the_session_survives() {
    let s = fake();
    let mut c = s.connect();
    let cases: &[(&str, &str)] = &[
        ("not json", "invalid_json"),
        ("[1,2,3]", "invalid_message"),
        ("42", "invalid_message"),
        ("{}", "missing_type"),
        (r#"{"type":["query"]}"#, "missing_type"),
        (r#"{"type":"launch_missiles"}"#, "unknown_type"),
        (r#"{"type":"query"}"#, "invalid_field"),
        (r#"{"type":"query","prompt":{"a":1}}"#, "invalid_field"),
        (r#"{"type":"input","text":5}"#, "invalid_field"),
        (r#"{"type":"batch","messages":"x"}"#, "invalid_field"),
        (
            r#"{"type":"query","prompt":"p","options":{"nope":1}}"#,
            "invalid_option",
        ),
        (
            r#"{"type":"query","prompt":"p","options":[1]}"#,
            "invalid_option",
        ),
        (r#"{"type":"interrupt"}"#, "no_active_query"),
        (r#"{"type":"input","text":"more"}"#, "no_active_query"),
    ];
    for (frame, code) in cases {
        c.send_raw(Message::text(*frame));
        let e = c.recv();
        assert_eq!(e["type"], "error", "{frame} -> {e}");
        assert_eq!(e["data"]["code"], *code, "{frame} -> {e}");
        assert!(!e["data"]["error"].as_str().unwrap().is_empty());
    }
    c.send_raw(Message::binary(vec![1u8, 2, 3]));
    assert_eq!(c.recv()["data"]["code"], "binary_not_supported");
    // Still usable, and nothing was spawned by any of it.
    assert_eq!(s.sessions()[0]["child_pid"], serde_json::Value::Null);
    c.send(json!({"type": "ping"}));
    assert_eq!(c.recv()["type"], "pong");
    let msgs = c.query("still here", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: still here"));
}

#[test]
fn batch_runs_each_message_in_order() {
    let s = fake();
    let mut c = s.connect();
    c.send(json!({"type": "batch", "messages": [
        {"type": "ping"},
        {"type": "nonsense"},
        {"type": "query", "prompt": "in a batch"},
        {"type": "batch", "messages": []}
    ]}));
    let msgs = c.until("query_end");
    let t = types(&msgs);
    assert_eq!(t[0], "pong");
    assert_eq!(msgs[1]["data"]["code"], "unknown_type");
    assert_eq!(t[2], "query_start");
    // The nested batch was refused before the query's output arrived.
    assert_eq!(msgs[3]["data"]["code"], "invalid_field");
    assert!(assistant_text(&msgs).contains("Echo: in a batch"));
}

#[test]
fn query_while_running_is_refused() {
    let s = fake();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 10 50"}));
    assert_eq!(c.recv()["type"], "query_start");
    c.send(json!({"type": "query", "prompt": "second"}));
    let msgs = c.until("query_end");
    let errors: Vec<_> = msgs.iter().filter(|m| m["type"] == "error").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["data"]["code"], "query_in_progress");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn missing_binary_reports_and_session_survives() {
    let s = ServerOptions {
        claude: "/nonexistent/claude".into(),
        args: vec![],
        env: vec![],
        wait_for_check: true,
    }
    .start();
    let mut c = s.connect();
    let msgs = c.query("hi", json!({}));
    assert_eq!(types(&msgs), ["query_start", "error", "query_end"]);
    let e = only(&msgs, "error");
    assert_eq!(e["code"], "claude_spawn_failed");
    assert!(
        e["error"].as_str().unwrap().contains("/nonexistent/claude"),
        "{e}"
    );
    assert_eq!(only(&msgs, "query_end")["outcome"], "error");
    c.send(json!({"type": "ping"}));
    assert_eq!(c.recv()["type"], "pong");
}

#[test]
fn child_exiting_at_start_shows_its_stderr() {
    // A wrapper adds an argument the stand-in rejects the way the CLI rejects an
    // unknown option: it prints the reason to stderr and exits 1 at once.
    let dir = TempDir::new("exit-at-start");
    let wrapper = dir.path().join("claude");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --fake-exit-at-start \"$@\"\n",
            fake_claude().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = ServerOptions {
        claude: wrapper,
        args: vec![],
        env: vec![],
        wait_for_check: true,
    }
    .start();
    let mut c = s.connect();
    for _ in 0..2 {
        let msgs = c.query("hi", json!({}));
        assert_eq!(
            types(&msgs),
            ["query_start", "error", "query_end"],
            "{msgs:?}"
        );
        let e = only(&msgs, "error");
        assert_eq!(e["code"], "claude_exited");
        let text = e["error"].as_str().unwrap();
        assert!(text.contains("exit status: 1"), "{text}");
        assert!(text.contains("unknown option"), "{text}");
    }
}

#[test]
fn crash_mid_stream_gives_error_with_stderr_tail_then_next_query_works() {
    let s = fake();
    let mut c = s.connect();
    let msgs = c.query("crash", json!({}));
    let errors: Vec<_> = msgs.iter().filter(|m| m["type"] == "error").collect();
    assert_eq!(errors.len(), 2, "{msgs:?}");
    // The half-written last line is reported as what it is...
    assert_eq!(errors[0]["data"]["code"], "claude_output_invalid");
    // ...then the exit, with the reason from stderr.
    let e = &errors[1]["data"];
    assert_eq!(e["code"], "claude_exited");
    let text = e["error"].as_str().unwrap();
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("crashing on purpose"), "{text}");
    assert_eq!(only(&msgs, "query_end")["outcome"], "error");
    // A fresh child, resumed with the session id the crashed one announced.
    let msgs = c.query("after the crash", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: after the crash"));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn die_after_some_output_ends_the_query_once() {
    let s = fake();
    let mut c = s.connect();
    let msgs = c.query("die-after 3", json!({}));
    let n = msgs
        .iter()
        .filter(|m| m["type"] == "assistant_message")
        .count();
    assert_eq!(n, 3);
    assert!(only(&msgs, "error")["error"]
        .as_str()
        .unwrap()
        .contains("died"));
    assert_eq!(msgs.iter().filter(|m| m["type"] == "query_end").count(), 1);
}

#[test]
fn garbage_lines_are_reported_and_the_query_continues() {
    let s = fake();
    let mut c = s.connect();
    let msgs = c.query("garbage", json!({}));
    let errors: Vec<_> = msgs.iter().filter(|m| m["type"] == "error").collect();
    assert_eq!(errors.len(), 3, "{msgs:?}");
    for e in &errors {
        assert_eq!(e["data"]["code"], "claude_output_invalid");
        assert!(e["data"]["error"]
            .as_str()
            .unwrap()
            .contains("this is not json"));
    }
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn stderr_flood_does_not_block_the_child() {
    let s = fake();
    let mut c = s.connect();
    // 4 MiB of stderr: far past the 64 KiB pipe buffer.
    let msgs = c.query("stderr-flood 4194304", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert!(assistant_text(&msgs).contains("Echo"));
}

#[test]
fn a_single_huge_line_is_relayed_intact() {
    let s = fake();
    let mut c = s.connect();
    let size = 12 * 1024 * 1024;
    let msgs = c.query(&format!("huge {size}"), json!({}));
    let text = assistant_text(&msgs);
    assert_eq!(text.len(), size, "relayed {} bytes", text.len());
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn interrupt_of_a_hung_child_kills_its_group_and_the_session_goes_on() {
    let s = ServerOptions::fake()
        .arg("--interrupt-grace-secs=0.5")
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "hang"}));
    c.until("system_message");
    let pid = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    c.send(json!({"type": "interrupt"}));
    let msgs = c.until("query_end");
    assert_eq!(
        types(&msgs),
        ["interrupt_acknowledged", "query_interrupted", "query_end"]
    );
    assert_eq!(only(&msgs, "query_end")["outcome"], "interrupted");
    assert!(
        eventually(WAIT, || !pid_alive(pid)),
        "child {pid} still alive"
    );
    let msgs = c.query("next", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: next"));
}

#[test]
fn interrupt_of_a_slow_turn_is_honoured_by_the_child() {
    let s = fake();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 100 50"}));
    c.until("assistant_message");
    let pid = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    c.send(json!({"type": "interrupt"}));
    let msgs = c.until("query_end");
    assert!(msgs.iter().any(|m| m["type"] == "interrupt_acknowledged"));
    let r = only(&msgs, "result_message");
    assert_eq!(r["subtype"], "error_during_execution");
    let t = types(&msgs);
    assert_eq!(&t[t.len() - 2..], ["query_interrupted", "query_end"]);
    // The same child answers the next query: no kill was needed.
    let msgs = c.query("next", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: next"));
    assert_eq!(s.sessions()[0]["child_pid"].as_u64(), Some(pid as u64));
}

#[test]
fn input_during_a_query_gets_its_own_result_and_one_query_end() {
    let s = fake();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 5 40"}));
    c.until("query_start");
    c.send(json!({"type": "input", "text": "and this too"}));
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "input_acknowledged")["text"], "and this too");
    let results = msgs
        .iter()
        .filter(|m| m["type"] == "result_message")
        .count();
    assert_eq!(results, 2);
    assert!(assistant_text(&msgs).contains("Echo: and this too"));
    assert_eq!(types(&msgs).last().unwrap(), "query_end");
}

/// A server whose session runs a child that ignores stdin closing and SIGTERM, so its
/// stop ladder takes 2 × `grace`: (server, client, child pid).
fn stubborn_child(grace: &str) -> (TestServer, Client, u32) {
    let s = ServerOptions::fake()
        .arg(&format!("--stop-grace-secs={grace}"))
        .arg(NO_REATTACH)
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "ignore-signals"}));
    c.until("system_message");
    let pid = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    (s, c, pid)
}

#[test]
fn disconnect_with_a_child_ignoring_signals_escalates_to_sigkill() {
    let (s, c, pid) = stubborn_child("0.3");
    drop(c);
    assert!(eventually(WAIT, || !pid_alive(pid)), "child {pid} survived");
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    assert!(s.logged("SIGKILL"), "{}", s.logs());
}

/// The client's close completes at once, not after the child's stop ladder: the
/// server sends its FIN first and stops the child afterwards.
#[test]
fn a_client_close_does_not_wait_for_the_child_to_stop() {
    let (_server, mut c, pid) = stubborn_child("2"); // a ladder of 4 s or more
    let started = Instant::now();
    c.ws.close(Some(NORMAL_CLOSE)).expect("close");
    c.ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The client's side of the handshake ends when the server has closed the TCP
    // connection: tungstenite waits for that after the close reply.
    while c.ws.read().is_ok() {}
    let closed_after = started.elapsed();
    assert!(pid_alive(pid), "the child should still be on its ladder");
    assert!(
        closed_after < Duration::from_secs(2),
        "closing took {closed_after:?}: it waited for the child"
    );
    assert!(eventually(WAIT, || !pid_alive(pid)), "child {pid} survived");
}

#[test]
fn disconnect_kills_bash_style_grandchildren() {
    let s = ServerOptions::fake()
        .arg("--stop-grace-secs=0.3")
        .arg(NO_REATTACH)
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "grandchild"}));
    let msgs = c.until("assistant_message");
    let text = assistant_text(&msgs);
    let grandchild: u32 = text
        .split_whitespace()
        .last()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    assert!(pid_alive(grandchild));
    drop(c);
    assert!(
        eventually(WAIT, || !pid_alive(grandchild)),
        "grandchild {grandchild} survived"
    );
}

#[test]
fn graceful_disconnect_closes_stdin_first() {
    let dir = TempDir::new("marker");
    let marker = dir.path().join("exited");
    let s2 = ServerOptions::fake()
        .env("FAKE_CLAUDE_EXIT_MARKER", marker.to_str().unwrap())
        .arg("--pass-env=FAKE_CLAUDE_EXIT_MARKER")
        .start();
    let mut c = s2.connect();
    c.query("hi", json!({}));
    let pid = s2.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let _ = c.closed();
    assert!(eventually(WAIT, || !pid_alive(pid)));
    assert!(
        eventually(WAIT, || marker.exists()),
        "the child did not exit gracefully"
    );
    assert!(!s2.logs().contains("SIGTERM"), "{}", s2.logs());
}

#[test]
fn oversized_frame_closes_with_1009() {
    let s = ServerOptions::fake()
        .arg("--max-message-bytes=65536")
        .arg(NO_REATTACH)
        .start();
    let mut c = s.connect();
    let big = "x".repeat(70_000);
    c.send(json!({"type": "query", "prompt": big}));
    let end = c.closed();
    assert!(end.starts_with("close 1009"), "{end}");
    assert!(eventually(WAIT, || s.sessions().is_empty()));
}

#[test]
fn wrong_path_is_404_and_over_capacity_is_503() {
    let s = ServerOptions::fake()
        .arg("--max-sessions=1")
        .arg(NO_REATTACH)
        .start();
    let url = s.ws_url.replace("/ws", "/other");
    let e = s.try_connect(&url, &[]).err().unwrap();
    assert!(e.starts_with("HTTP 404"), "{e}");
    let _first = s.connect();
    let e = s.try_connect(&s.ws_url, &[]).err().unwrap();
    assert!(e.starts_with("HTTP 503"), "{e}");
    drop(_first);
    assert!(eventually(WAIT, || s.try_connect(&s.ws_url, &[]).is_ok()));
}

#[test]
fn idle_session_is_closed_with_a_code_and_reason() {
    let s = ServerOptions::fake()
        .arg("--session-timeout-minutes=0.02") // 1.2 s
        .start();
    let mut c = s.connect();
    c.query("hi", json!({}));
    let pid = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    let end = c.closed();
    assert_eq!(end, "close 4000 session idle timeout");
    assert!(eventually(WAIT, || !pid_alive(pid)));
}

#[test]
fn silent_peer_is_dropped_by_the_heartbeat() {
    let s = ServerOptions::fake()
        .arg("--ping-interval-secs=0.3")
        .arg(NO_REATTACH)
        .start();
    let c = s.connect();
    assert_eq!(s.sessions().len(), 1);
    // Never read again: pings go unanswered (tungstenite answers only while reading).
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    assert!(s.logged("no answer to pings"), "{}", s.logs());
    drop(c);
}

#[test]
fn sigterm_drains_closes_clients_with_1012_stops_children_and_exits_0() {
    // The running query outlasts the drain timeout: it is interrupted.
    let s = ServerOptions::fake()
        .arg("--stop-grace-secs=0.5")
        .arg("--drain-timeout-secs=0.5")
        .start();
    let mut a = s.connect();
    let mut b = s.connect();
    a.query("hi", json!({}));
    b.send(json!({"type": "query", "prompt": "slow 1000 50"}));
    b.until("assistant_message");
    let server_pid = s.pid();
    let kids = children_of(server_pid);
    assert_eq!(kids.len(), 2, "{kids:?}");
    let status = s.stop();
    assert!(status.success(), "{status}");
    let end_a = a.closed();
    assert!(end_a.starts_with("close 1012"), "{end_a}");
    let msgs: Vec<_> = std::iter::from_fn(|| b.next_event().ok()).collect();
    assert_eq!(
        msgs.iter().filter(|m| m["type"] == "query_end").count(),
        1,
        "{msgs:?}"
    );
    for k in kids {
        assert!(!pid_alive(k), "child {k} outlived the server");
    }
}

#[test]
fn a_client_that_stops_reading_is_disconnected_and_others_are_unaffected() {
    let s = ServerOptions::fake()
        .arg("--stall-timeout-secs=1")
        .arg(NO_REATTACH)
        .start();
    let mut slow = s.connect();
    // 2,000 lines of 64 KiB: far more than socket buffers and the high-water mark.
    slow.send(json!({"type": "query", "prompt": "flood 2000 65536"}));
    let mut other = s.connect();
    let msgs = other.query("meanwhile", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: meanwhile"));
    assert!(
        eventually(WAIT, || s.sessions().len() == 1),
        "stalled client not dropped: {:?}",
        s.sessions()
    );
    assert!(
        s.logs()
            .contains("client kept its backlog above the high-water mark"),
        "{}",
        s.logs()
    );
    std::thread::sleep(Duration::from_millis(100));
    drop(slow);
}

/// Back-pressure lets go as soon as the client reads again: the socket having room
/// wakes the session (nothing else would: it takes no child output meanwhile).
#[test]
fn a_client_that_pauses_reading_gets_every_event_when_it_resumes() {
    // No timer wakes it either: heartbeat and stall limit far away.
    let s = ServerOptions::fake()
        .arg("--stall-timeout-secs=300")
        .arg("--ping-interval-secs=300")
        .start();
    let mut c = s.connect();
    // 1,000 lines of 32 KiB: far more than socket buffers and the high-water mark.
    c.send(json!({"type": "query", "prompt": "flood 1000 32768"}));
    std::thread::sleep(Duration::from_secs(1));
    let mut events = 0;
    let t0 = Instant::now();
    loop {
        let m = c.recv();
        match m["type"].as_str() {
            Some("assistant_message") => events += 1,
            Some("query_end") => break,
            _ => {}
        }
        // Generous: the whole stream takes well under a second once read.
        let waited = t0.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "stuck after {events} events"
        );
    }
    assert_eq!(events, 1000);
}

#[test]
fn inputs_queued_during_a_turn_are_answered_together_and_end_the_query_once() {
    let s = fake();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 10 50"}));
    c.until("assistant_message");
    c.send(json!({"type": "input", "text": "one"}));
    c.send(json!({"type": "input", "text": "two"}));
    let msgs = c.until("query_end");
    // The CLI merges queued messages into one further turn: two results, not three.
    let results = msgs
        .iter()
        .filter(|m| m["type"] == "result_message")
        .count();
    assert_eq!(results, 2, "{:?}", types(&msgs));
    assert!(assistant_text(&msgs).contains("Echo: one\ntwo"));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    // Nothing trails the query.
    c.send(json!({"type": "ping"}));
    assert_eq!(c.recv()["type"], "pong");
}

#[test]
fn interrupt_also_stops_input_queued_before_it() {
    let s = fake();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "slow 100 50"}));
    c.until("assistant_message");
    let pid = s.sessions()[0]["child_pid"].as_u64();
    c.send(json!({"type": "input", "text": "slow 100 50"}));
    c.until("input_acknowledged");
    c.send(json!({"type": "interrupt"}));
    // Input after the interrupt would be stopped too: it is refused instead.
    c.send(json!({"type": "input", "text": "too late"}));
    let mut msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "interrupted");
    // The child may honour the interrupt before the session reads "too late": then
    // the refusal follows query_end instead of preceding it.
    if !msgs.iter().any(|m| m["type"] == "error") {
        msgs.push(c.recv());
    }
    assert_eq!(only(&msgs, "error")["code"], "no_active_query");
    let interrupted = msgs
        .iter()
        .filter(|m| m["type"] == "result_message")
        .all(|m| m["data"]["subtype"] == "error_during_execution");
    assert!(interrupted, "{msgs:?}");
    // The child honoured both interrupts: it was not killed.
    assert_eq!(s.sessions()[0]["child_pid"].as_u64(), pid);
    c.send(json!({"type": "ping"}));
    assert_eq!(c.recv()["type"], "pong");
    let msgs = c.query("after", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: after"));
}

/// Send inputs of `bytes` each until the server says the child is not reading (at
/// most 200).
fn inputs_until_busy(c: &mut Client, bytes: usize) {
    let text = "i".repeat(bytes);
    for _ in 0..200 {
        c.send(json!({"type": "input", "text": text}));
        let m = c.recv();
        if m["type"] == "error" {
            assert_eq!(m["data"]["code"], "claude_busy", "{m}");
            return;
        }
        assert_eq!(m["type"], "input_acknowledged", "{m}");
    }
    panic!("the server never said the child is not reading");
}

#[test]
fn a_child_that_stops_reading_stdin_cannot_stall_the_session() {
    let s = ServerOptions::fake()
        .arg("--interrupt-grace-secs=0.5")
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "deaf"}));
    c.until("system_message");
    // Up to 200 inputs of 200 KB: far more than the pipe and the stdin queue hold.
    inputs_until_busy(&mut c, 200_000);
    // The session still answers at once, and interrupt still works (by kill).
    c.send(json!({"type": "ping"}));
    assert_eq!(c.recv()["type"], "pong");
    c.send(json!({"type": "interrupt"}));
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "interrupted");
    let msgs = c.query("after", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: after"));
}

#[test]
fn a_child_flooding_a_gone_client_still_stops_gracefully() {
    let dir = TempDir::new("flood-marker");
    let marker = dir.path().join("exited");
    let s = ServerOptions::fake()
        .env("FAKE_CLAUDE_EXIT_MARKER", marker.to_str().unwrap())
        .arg("--pass-env=FAKE_CLAUDE_EXIT_MARKER")
        .arg(NO_REATTACH)
        .start();
    let mut c = s.connect();
    // 200,000 lines of 300 bytes: the client reads none of it, so pipes fill up.
    c.send(json!({"type": "query", "prompt": "flood 200000 300"}));
    assert!(eventually(WAIT, || s.sessions()[0]["child_pid"].is_u64()));
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    assert!(
        eventually(WAIT, || marker.exists()),
        "the child was not let finish: {}",
        s.logs()
    );
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    assert!(!s.logs().contains("SIGTERM"), "{}", s.logs());
}

#[test]
fn a_client_that_is_not_reading_can_still_interrupt() {
    let s = ServerOptions::fake()
        .arg("--interrupt-grace-secs=0.5")
        .start();
    let mut c = s.connect();
    // Far more output than the socket, the server's backlog and the pipe hold: the
    // session stops taking it and the child blocks writing.
    c.send(json!({"type": "query", "prompt": "flood 5000 65536"}));
    assert!(eventually(WAIT, || s.sessions()[0]["child_pid"].is_u64()));
    std::thread::sleep(Duration::from_millis(500));
    c.send(json!({"type": "interrupt"}));
    let msgs = c.until("query_end");
    assert!(msgs.iter().any(|m| m["type"] == "interrupt_acknowledged"));
    assert_eq!(only(&msgs, "query_end")["outcome"], "interrupted");
    let msgs = c.query("after", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: after"));
}

#[test]
fn children_do_not_outlive_a_killed_server() {
    let s = fake();
    let mut c = s.connect();
    // A child that neither writes (no broken pipe to end it) nor minds its stdin closing.
    c.send(json!({"type": "query", "prompt": "hang"}));
    c.until("system_message");
    let kids = children_of(s.pid());
    assert_eq!(kids.len(), 1);
    // SIGKILL: no shutdown path runs at all.
    // SAFETY: kill(2) only sends a signal, to the server this test started.
    unsafe {
        libc::kill(s.pid() as libc::pid_t, libc::SIGKILL);
    }
    assert!(
        eventually(WAIT, || !pid_alive(kids[0])),
        "child {} outlived the killed server",
        kids[0]
    );
}

/// Issue 8, defect 3: a fresh query whose prompt cannot be written (the child's stdin
/// queue is full) used to get an error and never a `query_end`.
#[test]
fn a_query_whose_prompt_cannot_be_written_still_ends() {
    let dir = TempDir::new("release");
    let release = dir.path().join("release");
    let s = ServerOptions::fake()
        .env("FAKE_CLAUDE_NO_REPLAY", "1")
        .env("FAKE_CLAUDE_RELEASE", release.to_str().unwrap())
        .arg("--pass-env=FAKE_CLAUDE_NO_REPLAY,FAKE_CLAUDE_RELEASE")
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "deaf-turns"}));
    c.until("system_message");
    inputs_until_busy(&mut c, 20_000);
    // The child ends that query's turns without reading the input.
    std::fs::write(&release, "go").unwrap();
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    // Its stdin is still full: the next prompt cannot be delivered.
    c.send(json!({"type": "query", "prompt": "after"}));
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "error")["code"], "claude_busy", "{msgs:?}");
    assert_eq!(only(&msgs, "query_end")["outcome"], "error", "{msgs:?}");
    // The session goes on. (The stand-in read one input before it went deaf, and may
    // still answer it: its late output is relayed before the pong.)
    c.send(json!({"type": "ping"}));
    c.until("pong");
}
