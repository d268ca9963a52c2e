//! Issue 19: the official Agent SDKs, remote. The REAL `claude-agent-sdk` (Python) and
//! `@anthropic-ai/claude-agent-sdk` (TypeScript), at the pins of examples/, drive the
//! REAL CLI through claude-ws's `/sdk` with the transports of examples/
//! (`claude_ws_sdk.py`, `claude-ws-sdk.mjs`) and the scripted model. Each scenario is a
//! function of tests/sdk/scenarios.py or scenarios.mjs; this file starts the server,
//! runs it, and checks what the server and the machine saw. The SDKs come from
//! scripts/install-example-deps.sh: when they cannot be installed, these tests fail.
//! The `/sdk` contract itself, frame by frame, is checked with a plain WebSocket.

mod support;

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use support::examples::{install_deps, repo};
use support::*;
use tungstenite::Message;

/// A scenario's run: what it printed and how it ended.
struct Run {
    what: String,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed after 150 s".into(),
        };
        write!(
            f,
            "{}\n  {status}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

#[derive(Clone, Copy, Debug)]
enum Sdk {
    Python,
    Js,
}

/// Run scenario `name` of the `sdk`'s script against `server`; panics unless it held.
fn scenario(sdk: Sdk, name: &str, server: &TestServer, token: Option<&str>) -> Run {
    install_deps();
    let (program, script) = match sdk {
        Sdk::Python => (
            repo().join(".examples-venv/bin/python"),
            repo().join("tests/sdk/scenarios.py"),
        ),
        Sdk::Js => (
            PathBuf::from("node"),
            repo().join("tests/sdk/scenarios.mjs"),
        ),
    };
    let url = server.ws_url.replace("/ws", "/sdk");
    let mut child = Command::new(&program)
        .arg(&script)
        .arg(name)
        .env("SDK_URL", &url)
        .env("SDK_TOKEN", token.unwrap_or(""))
        .env("SDK_WORK", &server.workspace)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let mut status = None;
    if !eventually(Duration::from_secs(150), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let run = Run {
        what: format!("{sdk:?} scenario {name}"),
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    let ok = run.status.is_some_and(|s| s.success())
        && run.stdout.lines().last().map(str::trim) == Some("ok");
    assert!(ok, "{run}\n---- server log ----\n{}", server.logs());
    run
}

fn real_server(api: &MockApi) -> TestServer {
    ServerOptions::real(api).start()
}

// ---- the SDKs ---------------------------------------------------------------------

fn query_and_follow_up(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "query_and_follow_up", &s, None);
    // One child served both turns: the context is the CLI's own.
    assert_eq!(api.user_texts(), vec!["hello from the sdk", "recall"]);
}

fn can_use_tool(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "can_use_tool", &s, None);
    assert_eq!(read(&s.workspace.join("allowed.txt")), "yes");
    assert!(!s.workspace.join("denied.txt").exists());
}

fn hook_denies_bash(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "hook_denies_bash", &s, None);
    assert!(!s.workspace.join("hook-marker").exists(), "Bash ran");
}

fn mcp_tool(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "mcp_tool", &s, None);
    // The model was offered the client's tool itself (not behind tool search), and its
    // result came back to the model.
    let requests = api.requests();
    let offered = requests.iter().any(|r| {
        r["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "mcp__calc__add"))
    });
    assert!(offered, "mcp__calc__add was not offered to the model");
    let last = requests.last().expect("requests").to_string();
    assert!(last.contains("sum=5"), "{last}");
}

fn interrupt(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "interrupt", &s, None);
    assert_eq!(
        api.user_texts().last().map(String::as_str),
        Some("after the interrupt")
    );
}

fn set_model(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "set_model", &s, None);
    let last = api.requests().last().cloned().expect("requests");
    assert_eq!(last["model"], "claude-haiku-4-5");
}

fn refusals(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "refused_start", &s, None);
    scenario(sdk, "refused_set_permission_mode", &s, None);
    assert!(s.logged("control request refused by policy"));
}

fn authentication(sdk: Sdk) {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--auth-token=sdk-token-1")
        .start();
    scenario(sdk, "authentication", &s, Some("sdk-token-1"));
}

fn resume(sdk: Sdk) {
    let api = MockApi::start();
    let s = real_server(&api);
    scenario(sdk, "resume", &s, None);
    assert!(s.logged("client reattached after frame"), "{}", s.logs());
}

#[test]
fn python_query_and_follow_up_keep_context() {
    query_and_follow_up(Sdk::Python);
}
#[test]
fn python_can_use_tool_allows_and_denies_a_write() {
    can_use_tool(Sdk::Python);
}
#[test]
fn python_pre_tool_use_hook_denies_bash() {
    hook_denies_bash(Sdk::Python);
}
#[test]
fn python_in_process_mcp_tool_is_called() {
    mcp_tool(Sdk::Python);
}
#[test]
fn python_interrupt_then_next_turn() {
    interrupt(Sdk::Python);
}
#[test]
fn python_set_model_reaches_the_api() {
    set_model(Sdk::Python);
}
#[test]
fn python_refused_start_and_set_permission_mode() {
    refusals(Sdk::Python);
}
#[test]
fn python_authentication() {
    authentication(Sdk::Python);
}
#[test]
fn python_dropped_connection_resumes_with_last_frame() {
    resume(Sdk::Python);
}

#[test]
fn js_query_and_follow_up_keep_context() {
    query_and_follow_up(Sdk::Js);
}
#[test]
fn js_can_use_tool_allows_and_denies_a_write() {
    can_use_tool(Sdk::Js);
}
#[test]
fn js_pre_tool_use_hook_denies_bash() {
    hook_denies_bash(Sdk::Js);
}
#[test]
fn js_in_process_mcp_tool_is_called() {
    mcp_tool(Sdk::Js);
}
#[test]
fn js_interrupt_then_next_turn() {
    interrupt(Sdk::Js);
}
#[test]
fn js_set_model_reaches_the_api() {
    set_model(Sdk::Js);
}
#[test]
fn js_refused_start_and_set_permission_mode() {
    refusals(Sdk::Js);
}
#[test]
fn js_authentication() {
    authentication(Sdk::Js);
}
#[test]
fn js_dropped_connection_resumes_with_last_frame() {
    resume(Sdk::Js);
}

// ---- the contract, frame by frame ---------------------------------------------------

fn sdk_connect(s: &TestServer, query: &str) -> Client {
    let url = format!("{}{query}", s.ws_url.replace("/ws", "/sdk"));
    s.try_connect(&url, &[])
        .unwrap_or_else(|e| panic!("connect {url}: {e}\n{}", s.logs()))
}

fn user(text: &str) -> Value {
    json!({"type": "user", "message": {"role": "user", "content": text},
           "parent_tool_use_id": null, "session_id": "default"})
}

#[test]
fn raw_lines_both_ways_and_the_session_is_listed_with_its_endpoint() {
    let api = MockApi::start();
    let s = real_server(&api);
    let mut c = sdk_connect(&s, "");
    c.send(json!({"type": "sdk_start", "options": {"model": "claude-sonnet-4-5"}}));
    let started = c.recv();
    assert_eq!(started["type"], "sdk_started", "{started}");
    let id = started["session_id"]
        .as_str()
        .expect("session_id")
        .to_string();
    c.send(json!({"type": "control_request", "request_id": "req_1",
                  "request": {"subtype": "initialize", "hooks": null}}));
    let answer = c.until("control_response");
    assert_eq!(answer.last().unwrap()["response"]["request_id"], "req_1");
    c.send(user("hello raw"));
    let turn = c.until("result");
    // The CLI's own lines: system/init, assistant, result; no claude-ws envelope.
    assert!(turn
        .iter()
        .any(|f| f["type"] == "system" && f["subtype"] == "init"));
    assert!(turn.iter().all(|f| f.get("seq").is_none()));
    let text = turn
        .iter()
        .find(|f| f["type"] == "assistant")
        .expect("assistant");
    assert_eq!(text["message"]["content"][0]["text"], "Echo: hello raw ");
    let rows = s.sessions();
    let row = rows
        .iter()
        .find(|r| r["session_id"] == id.as_str())
        .expect("listed");
    assert_eq!(row["endpoint"], "sdk");
    assert!(row["claude_session_id"].is_string(), "{row}");
    let (_, _, metrics) = http_request(&s.http_addr, "GET", "/metrics", &[]);
    assert!(
        metrics.contains("claude_ws_endpoint_sessions{endpoint=\"sdk\"} 1"),
        "{metrics}"
    );
    let relayed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("claude_ws_endpoint_events_relayed_total{endpoint=\"sdk\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the sdk relay counter");
    assert!(relayed >= 4, "{relayed}");
    // sdk_end_input closes the CLI's stdin: it ends, and so does the session (1000).
    c.send(json!({"type": "sdk_end_input"}));
    assert!(c.closed().contains("1000"), "not a normal close");
    assert!(eventually(WAIT, || s.sessions().is_empty()));
}

#[test]
fn refused_starts_say_why_and_close_1008() {
    let api = MockApi::start();
    let s = real_server(&api);
    for (start, code) in [
        (
            json!({"type": "sdk_start", "options": {"permission_mode": "bypassPermissions"}}),
            "permission_mode_not_allowed",
        ),
        (
            json!({"type": "sdk_start", "options": {"cwd": "/etc"}}),
            "cwd_not_allowed",
        ),
        (
            json!({"type": "sdk_start", "options": {"no_such_option": 1}}),
            "invalid_option",
        ),
        (json!({"type": "query", "prompt": "hi"}), "unknown_type"),
    ] {
        let mut c = sdk_connect(&s, "");
        c.send(start.clone());
        let e = c.recv();
        assert_eq!(e["type"], "error", "{start}: {e}");
        assert_eq!(e["data"]["code"], code, "{start}: {e}");
        assert!(e["data"]["error"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(c.closed().contains("1008"), "{start}");
    }
    assert!(eventually(WAIT, || s.sessions().is_empty()));
}

#[test]
fn control_requests_that_widen_the_policy_are_answered_by_the_server() {
    let api = MockApi::start();
    let s = real_server(&api);
    let mut c = sdk_connect(&s, "");
    c.send(json!({"type": "sdk_start", "options": {}}));
    assert_eq!(c.recv()["type"], "sdk_started");
    for (i, request) in [
        json!({"subtype": "set_permission_mode", "mode": "bypassPermissions"}),
        json!({"subtype": "apply_flag_settings", "settings": {}}),
        json!({"subtype": "update_settings", "settings": {}}),
        json!({"subtype": "mcp_set_servers", "servers": {"x": {"command": "touch"}}}),
        json!({"subtype": "some_future_subtype"}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("req_{i}");
        c.send(json!({"type": "control_request", "request_id": id, "request": request}));
        let r = c.recv();
        assert_eq!(r["type"], "control_response", "{r}");
        assert_eq!(r["response"]["subtype"], "error", "{r}");
        assert_eq!(r["response"]["request_id"], id.as_str(), "{r}");
        assert!(r["response"]["error"].is_string(), "{r}");
    }
    // An allowed mode reaches the CLI, which answers it.
    c.send(json!({"type": "control_request", "request_id": "ok_1",
                  "request": {"subtype": "set_permission_mode", "mode": "acceptEdits"}}));
    let answer = c.until("control_response");
    assert_eq!(answer.last().unwrap()["response"]["subtype"], "success");
    // Not JSON: error, close 1008.
    c.send_raw(Message::text("not json"));
    let e = c.until("error").pop().unwrap();
    assert_eq!(e["data"]["code"], "invalid_json", "{e}");
    assert!(c.closed().contains("1008"));
}

#[test]
fn a_dropped_connection_resumes_with_last_frame_exactly_once() {
    let api = MockApi::start();
    let s = real_server(&api);
    let mut c = sdk_connect(&s, "");
    c.send(json!({"type": "sdk_start", "options": {"include_partial_messages": true}}));
    let id = c.recv()["session_id"].as_str().unwrap().to_string();
    c.send(user("slow 30 40"));
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(c.recv());
    }
    drop(c); // no close frame: a drop
    assert!(eventually(WAIT, || s
        .sessions()
        .iter()
        .any(|r| r["state"] == "detached")));
    // A /ws reattach does not reach an /sdk session.
    let wrong = s.try_connect(&format!("{}?session_id={id}", s.ws_url), &[]);
    assert!(wrong.err().is_some_and(|e| e.contains("404")));
    let mut c = sdk_connect(&s, &format!("?session_id={id}&last_frame={}", seen.len()));
    let hello = c.recv();
    assert_eq!(
        hello,
        json!({"type": "sdk_started", "session_id": id, "resumed": true})
    );
    seen.extend(c.until("result"));
    let deltas: Vec<&str> = seen
        .iter()
        .filter(|f| f["type"] == "stream_event" && f["event"]["type"] == "content_block_delta")
        .filter_map(|f| f["event"]["delta"]["text"].as_str())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("word{i} ")).collect();
    assert_eq!(deltas, expected);
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    assert!(eventually(WAIT, || s.sessions().is_empty()));
}

#[test]
fn a_drain_closes_an_sdk_session_with_1012_once_its_turn_is_over() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--drain-timeout-secs=60")
        .start();
    let mut c = sdk_connect(&s, "");
    c.send(json!({"type": "sdk_start", "options": {}}));
    assert_eq!(c.recv()["type"], "sdk_started");
    c.send(user("slow 10 50"));
    // SIGTERM drains: the turn finishes first, then 1012.
    let pid = s.pid();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let turn = c.until("result");
    assert_eq!(turn.last().unwrap()["subtype"], "success");
    let started = std::time::Instant::now();
    assert!(c.closed().contains("1012"));
    // Closed for the turn's end, not by the drain's timeout (60 s).
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_start_waits_for_a_place_with_sdk_queued() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg("--max-running=1").start();
    let mut first = sdk_connect(&s, "");
    first.send(json!({"type": "sdk_start", "options": {}}));
    assert_eq!(first.recv()["type"], "sdk_started");
    let mut second = sdk_connect(&s, "");
    second.send(json!({"type": "sdk_start", "options": {}}));
    assert_eq!(second.recv(), json!({"type": "sdk_queued", "position": 1}));
    // The first session ends (1000): its place goes to the second, which starts.
    first.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let started = second.recv();
    assert_eq!(started["type"], "sdk_started", "{started}");
    second.send(user("after the wait"));
    let turn = second.until("result");
    assert_eq!(turn.last().unwrap()["subtype"], "success");
    second.ws.close(Some(NORMAL_CLOSE)).unwrap();
    assert!(eventually(WAIT, || s.sessions().is_empty()));
}

#[test]
fn frames_above_max_message_bytes_close_1009_before_and_after_the_start() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--max-message-bytes=1024")
        .start();
    let big = format!(
        r#"{{"type":"sdk_start","options":{{"model":"{}"}}}}"#,
        "m".repeat(2048)
    );
    let mut c = sdk_connect(&s, "");
    c.send_raw(Message::text(big));
    assert!(c.closed().contains("1009"), "before the start");
    let mut c = sdk_connect(&s, "");
    c.send(json!({"type": "sdk_start", "options": {}}));
    assert_eq!(c.recv()["type"], "sdk_started");
    c.send(user(&"x".repeat(2048)));
    assert!(c.closed().contains("1009"), "after the start");
    // As on /ws, a connection closed for a protocol error leaves its session
    // detached, to be resumed.
    assert!(eventually(WAIT, || s
        .sessions()
        .iter()
        .any(|r| r["state"] == "detached")));
}

/// What Bash in an `/sdk` session's child reads of the server's command line.
fn servers_command_line_seen_from_bash(s: &TestServer) -> String {
    let mut c = sdk_connect(s, "");
    c.send(json!({"type": "sdk_start", "options": {"allowed_tools": ["Bash"]}}));
    assert_eq!(c.recv()["type"], "sdk_started");
    c.send(user(&format!(
        "bash tr '\\0' ' ' < /proc/{}/cmdline; echo END",
        s.pid()
    )));
    let turn = c.until("result");
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    let text: Vec<&str> = turn
        .iter()
        .filter(|f| f["type"] == "assistant")
        .filter_map(|f| f["message"]["content"][0]["text"].as_str())
        .collect();
    let text = text.join("\n");
    assert!(text.contains("END"), "the command ran: {turn:?}");
    text
}

#[test]
fn an_sdk_child_runs_in_the_sandbox_as_a_ws_one_does() {
    let api = MockApi::start();
    // Without the sandbox, the child reads the server's command line in /proc ...
    let open = ServerOptions::real(&api).arg("--sandbox=off").start();
    let seen = servers_command_line_seen_from_bash(&open);
    assert!(seen.contains("--sandbox=off"), "{seen}");
    drop(open);
    // ... in bubblewrap, the server's process is not there at all.
    let boxed = ServerOptions::real(&api)
        .arg("--sandbox=bubblewrap")
        .start();
    assert_eq!(boxed.get("/health").1["sandbox"], "bubblewrap");
    let seen = servers_command_line_seen_from_bash(&boxed);
    assert!(!seen.contains("--sandbox"), "{seen}");
}
