//! Issue 9: the client in the agent loop, against the REAL Claude Code CLI and the
//! scripted Messages API — permission prompts, client-defined tools, live settings,
//! image input.

mod support;

use serde_json::{json, Value};
use support::*;

/// Messages up to `kind`, answering nothing on the way.
fn until(c: &mut Client, kind: &str) -> (Vec<Value>, Value) {
    let msgs = c.until(kind);
    let last = msgs.last().cloned().expect("at least one message");
    (msgs, last)
}

/// All `tool_result` blocks relayed in `msgs`.
fn tool_results(msgs: &[Value]) -> Vec<Value> {
    msgs.iter()
        .filter(|m| m["type"] == "assistant_message")
        .flat_map(|m| m["data"]["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .collect()
}

/// The text of the `tool_result` blocks the model received in the API's last request.
fn api_tool_result(api: &MockApi) -> String {
    let last = api.requests().pop().expect("the API was called");
    last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| b["content"].to_string())
        .collect()
}

fn bash_touch(c: &mut Client, s: &TestServer, file: &std::path::Path) -> Value {
    c.send(json!({
        "type": "query",
        "prompt": format!("bash touch {}", file.display()),
        "options": {"permission_prompts": true, "cwd": s.workspace},
    }));
    let (_, request) = until(c, "permission_request");
    request
}

#[test]
fn an_allowed_permission_prompt_runs_the_tool() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    let file = s.workspace.join("made-by-bash");
    let request = bash_touch(&mut c, &s, &file);
    let data = &request["data"];
    assert_eq!(data["tool_name"], "Bash");
    assert!(data["input"]["command"]
        .as_str()
        .unwrap()
        .contains("made-by-bash"));
    assert!(data["tool_use_id"].is_string(), "{request}");
    assert!(data["suggestions"].is_array(), "{request}");
    assert!(!file.exists(), "the tool ran before it was allowed");
    c.send(json!({"type": "permission_response", "request_id": data["request_id"], "behavior": "allow"}));
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(file.exists(), "allowed, but the file was not made");
    assert_eq!(tool_results(&msgs)[0]["is_error"], false, "{msgs:?}");
    // The same answer again names no waiting request.
    c.send(json!({"type": "permission_response", "request_id": data["request_id"], "behavior": "allow"}));
    assert_eq!(c.recv()["data"]["code"], "unknown_request");
}

#[test]
fn a_denied_permission_prompt_tells_the_model_why() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    let file = s.workspace.join("never-made");
    let request = bash_touch(&mut c, &s, &file);
    c.send(json!({
        "type": "permission_response",
        "request_id": request["data"]["request_id"],
        "behavior": "deny",
        "message": "not on a Friday",
    }));
    let msgs = c.until("query_end");
    assert!(!file.exists(), "denied, but the file was made");
    assert!(api_tool_result(&api).contains("not on a Friday"));
    let result = only(&msgs, "result_message");
    let denials = result["permission_denials"]
        .as_array()
        .expect("denials relayed");
    assert_eq!(denials.len(), 1, "{result}");
    assert_eq!(denials[0]["tool_name"], "Bash");
}

#[test]
fn an_unanswered_permission_prompt_is_denied_after_the_timeout() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--permission-timeout-secs=1")
        .start();
    let mut c = s.connect();
    let file = s.workspace.join("never-made");
    bash_touch(&mut c, &s, &file);
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert!(!file.exists());
    assert!(
        api_tool_result(&api).contains("did not answer"),
        "{}",
        api_tool_result(&api)
    );
}

#[test]
fn an_interrupt_answers_a_pending_prompt_at_once() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    let file = s.workspace.join("never-made");
    bash_touch(&mut c, &s, &file);
    c.send(json!({"type": "interrupt"}));
    let msgs = c.until("query_end");
    assert_eq!(
        only(&msgs, "query_end")["outcome"],
        "interrupted",
        "{msgs:?}"
    );
    assert!(!file.exists());
    // The child honoured the interrupt (it was not killed) and takes the next query.
    let pid = s.sessions()[0]["child_pid"].as_u64();
    assert!(pid.is_some());
    let msgs = c.query("hello again", json!({"permission_prompts": true}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert_eq!(s.sessions()[0]["child_pid"].as_u64(), pid);
}

#[test]
fn bad_permission_responses_get_codes_and_reach_nothing() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    c.send(json!({"type": "permission_response", "request_id": "nope", "behavior": "allow"}));
    assert_eq!(c.recv()["data"]["code"], "unknown_request");
    c.send(json!({"type": "permission_response", "request_id": "x", "behavior": "maybe"}));
    assert_eq!(c.recv()["data"]["code"], "invalid_field");
    c.send(json!({"type": "permission_response", "behavior": "allow"}));
    assert_eq!(c.recv()["data"]["code"], "invalid_field");
}

#[test]
fn a_client_defined_tool_is_called_and_its_result_reaches_the_model() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    assert_eq!(c.capabilities["tool_definition"], true);
    c.send(json!({"type": "define_tool", "tool": {
        "name": "CustomFormatter",
        "description": "Formats text",
        "parameters": {
            "text": {"type": "string", "required": true},
            "style": {"type": "string", "enum": ["bold", "italic"]}
        }
    }}));
    let defined = c.recv();
    assert_eq!(defined["type"], "tool_defined", "{defined}");
    assert_eq!(defined["data"]["tool_name"], "CustomFormatter");
    assert_eq!(defined["data"]["status"], "success");
    c.send(json!({"type": "get_tools"}));
    let list = c.recv();
    assert_eq!(list["type"], "tools_list");
    assert_eq!(list["data"]["tools"][0]["name"], "CustomFormatter");
    assert_eq!(
        list["data"]["tools"][0]["input_schema"]["required"],
        json!(["text"])
    );
    c.send(json!({
        "type": "query",
        "prompt": r#"tool mcp__ws__CustomFormatter {"text": "hi", "style": "bold"}"#,
    }));
    let (_, call) = until(&mut c, "tool_call");
    assert_eq!(call["data"]["name"], "CustomFormatter");
    assert_eq!(
        call["data"]["input"],
        json!({"text": "hi", "style": "bold"})
    );
    c.send(json!({"type": "tool_result", "call_id": call["data"]["call_id"], "content": "**hi**"}));
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(api_tool_result(&api).contains("**hi**"));
    assert!(assistant_text(&msgs).contains("Done: **hi**"), "{msgs:?}");
    // Offered to the model directly, not deferred behind tool search (newer CLIs defer
    // MCP tools unless the server entry says `alwaysLoad`): the first request already
    // names it.
    let first = &api.requests()[0];
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        offered.contains(&"mcp__ws__CustomFormatter"),
        "tools offered to the model: {offered:?}"
    );
}

#[test]
fn an_unanswered_tool_call_gets_an_error_result() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--tool-timeout-secs=1")
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "define_tool", "tool": {"name": "Slow", "input_schema": {"type": "object", "properties": {}}}}));
    assert_eq!(c.recv()["type"], "tool_defined");
    c.send(json!({"type": "query", "prompt": "tool mcp__ws__Slow {}"}));
    let (_, call) = until(&mut c, "tool_call");
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert!(api_tool_result(&api).contains("did not answer"));
    // A late answer names no waiting call.
    c.send(json!({"type": "tool_result", "call_id": call["data"]["call_id"], "content": "late"}));
    assert_eq!(c.recv()["data"]["code"], "unknown_request");
}

#[test]
fn bad_tool_definitions_are_refused() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    for tool in [
        json!({"name": "has space"}),
        json!({"name": "t", "input_schema": {"type": "string"}}),
        json!({"name": "t", "parameters": {"a": 5}}),
    ] {
        c.send(json!({"type": "define_tool", "tool": tool}));
        assert_eq!(c.recv()["data"]["code"], "invalid_field", "{tool}");
    }
    c.send(json!({"type": "get_tools"}));
    assert_eq!(c.recv()["data"]["tools"], json!([]));
}

#[test]
fn live_settings_switch_the_running_child() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    // No child yet: remembered for the next query.
    c.send(json!({"type": "set_max_thinking_tokens", "tokens": 2000}));
    let m = c.recv();
    assert_eq!(m["type"], "settings_updated", "{m}");
    assert_eq!(m["data"]["applied"], "next_query");
    c.query("first", json!({}));
    let pid = s.sessions()[0]["child_pid"].as_u64();
    // (The CLI may say more meanwhile, e.g. a `system` status line.)
    c.send(json!({"type": "set_model", "model": "claude-haiku-4-5"}));
    let (_, m) = until(&mut c, "settings_updated");
    assert_eq!(
        m["data"],
        json!({"setting": "model", "value": "claude-haiku-4-5", "applied": "live"})
    );
    c.send(json!({"type": "set_permission_mode", "mode": "plan"}));
    let (_, m) = until(&mut c, "settings_updated");
    assert_eq!(m["data"]["applied"], "live");
    c.send(json!({"type": "set_permission_mode", "mode": "bypassPermissions"}));
    let (_, m) = until(&mut c, "error");
    assert_eq!(m["data"]["code"], "permission_mode_not_allowed");
    let msgs = c.query("second", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let last = api.requests().pop().unwrap();
    assert_eq!(last["model"], "claude-haiku-4-5");
    // Switched live: the same child answered.
    assert_eq!(s.sessions()[0]["child_pid"].as_u64(), pid);
}

#[test]
fn an_image_prompt_reaches_the_model() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    let png =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAACAAFUok9dAAAAAElFTkSuQmCC";
    let prompt = json!([
        {"type": "text", "text": "describe the image"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    ]);
    c.send(json!({"type": "query", "prompt": prompt}));
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "query_start")["prompt"], prompt);
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    let last = api.requests().pop().unwrap();
    let sent = last["messages"].to_string();
    assert!(sent.contains(png), "the image did not reach the API");
    for bad in [
        json!([]),
        json!([{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": png}}]),
        json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}]),
        json!([{"type": "video"}]),
        json!(7),
    ] {
        c.send(json!({"type": "query", "prompt": bad}));
        assert_eq!(c.recv()["data"]["code"], "invalid_field", "{bad}");
    }
}

/// A tool registry on loopback: stores what is POSTed, lists one tool of its own.
/// `slow`: accept requests and never answer.
struct Registry {
    url: String,
    posted: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _server: std::sync::Arc<tiny_http::Server>,
}

fn registry(slow: bool) -> Registry {
    let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, p) = (server.clone(), posted.clone());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut req in s.incoming_requests() {
            if slow {
                held.push(req); // never answered
                continue;
            }
            let mut body = String::new();
            let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
            let answer = match (req.method(), req.url()) {
                (tiny_http::Method::Post, "/tools") => {
                    p.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                    json!({"id": "reg-1"})
                }
                (tiny_http::Method::Get, "/tools") => json!({"tools": [
                    {"id": 9, "name": "Remote", "description": "from the registry",
                     "input_schema": {"type": "object", "properties": {}}}
                ]}),
                _ => json!({}),
            };
            let _ = req.respond(tiny_http::Response::from_string(answer.to_string()));
        }
    });
    Registry {
        url,
        posted,
        _server: server,
    }
}

#[test]
fn tools_are_stored_in_and_listed_from_the_registry() {
    let reg = registry(false);
    let s = ServerOptions::fake()
        .arg(&format!("--tool-registry-url={}", reg.url))
        .start();
    let mut c = s.connect();
    c.send(json!({"type": "define_tool", "tool": {"name": "Local", "description": "d"}}));
    let m = c.recv();
    assert_eq!(m["type"], "tool_defined", "{m}");
    assert_eq!(m["data"]["tool_id"], "reg-1");
    let posted = reg.posted.lock().unwrap().clone();
    assert_eq!(posted[0]["tool"]["name"], "Local");
    assert_eq!(posted[0]["agent_id"], c.session_id.as_str());
    c.send(json!({"type": "get_tools"}));
    let m = c.recv();
    assert_eq!(m["data"]["source"], "session+registry", "{m}");
    let names: Vec<&str> = m["data"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Local", "Remote"]);
    assert_eq!(m["data"]["tools"][1]["source"], "registry");
}

#[test]
fn a_registry_that_is_down_or_slow_is_an_error_and_the_session_goes_on() {
    for reg in [None, Some(registry(true))] {
        let url = match &reg {
            Some(r) => r.url.clone(),
            None => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                format!("http://{}", l.local_addr().unwrap())
            }
        };
        let s = ServerOptions::fake()
            .arg(&format!("--tool-registry-url={url}"))
            .start();
        let mut c = s.connect();
        let started = std::time::Instant::now();
        c.send(json!({"type": "define_tool", "tool": {"name": "Local"}}));
        c.send(json!({"type": "ping"}));
        // The session answers meanwhile (a refused connection may answer first).
        let msgs: Vec<Value> = (0..3).map(|_| c.recv()).collect();
        let kinds = types(&msgs);
        assert!(kinds.contains(&"pong".to_string()), "{kinds:?}");
        let kinds: Vec<&String> = kinds.iter().filter(|k| *k != "pong").collect();
        assert_eq!(kinds, ["error", "tool_defined"], "{msgs:?}");
        assert_eq!(only(&msgs, "error")["code"], "tool_registry_error");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        c.send(json!({"type": "get_tools"}));
        assert_eq!(c.recv()["data"]["code"], "tool_registry_error");
        let m = c.recv();
        assert_eq!(m["data"]["source"], "session");
        assert_eq!(m["data"]["tools"][0]["name"], "Local");
        // Still usable for queries.
        let msgs = c.query("hello", json!({}));
        assert!(assistant_text(&msgs).contains("Echo: hello"));
    }
}

/// Stand-in CLI: a child that asks and then dies leaves no question waiting.
#[test]
fn a_question_of_a_child_that_died_cannot_be_answered() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "ask-then-exit", "options": {"permission_prompts": true}}));
    let (_, request) = until(&mut c, "permission_request");
    assert_eq!(request["data"]["request_id"], "perm-1");
    let msgs = c.until("query_end");
    assert_eq!(only(&msgs, "error")["code"], "claude_exited", "{msgs:?}");
    assert_eq!(only(&msgs, "query_end")["outcome"], "error");
    c.send(json!({"type": "permission_response", "request_id": "perm-1", "behavior": "allow"}));
    assert_eq!(c.recv()["data"]["code"], "unknown_request");
}

/// Stand-in CLI (the real 2.1.332 withdraws a prompt only at an interrupt, when the
/// server has answered it already): a question the CLI withdraws is withdrawn from the
/// client, and an answer sent after that names no waiting request.
#[test]
fn a_question_the_cli_withdraws_is_withdrawn_from_the_client() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.send(json!({"type": "define_tool", "tool": {"name": "Fmt", "input_schema": {"type": "object", "properties": {}}}}));
    assert_eq!(c.recv()["type"], "tool_defined");
    c.send(json!({"type": "query", "prompt": "ask-then-cancel", "options": {"permission_prompts": true}}));
    assert_asked_then_withdrawn(&c.until("query_end"));
    c.send(json!({"type": "permission_response", "request_id": "perm-1", "behavior": "allow"}));
    assert_eq!(c.recv()["data"]["code"], "unknown_request");
    c.send(json!({"type": "tool_result", "call_id": "mcp-1", "content": "late"}));
    assert_eq!(c.recv()["data"]["code"], "unknown_request");
}

/// Stand-in CLI: an MCP call for a tool nobody defined gets an error result at once.
#[test]
fn an_mcp_call_for_an_unknown_tool_gets_an_error_result() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    let msgs = c.query("mcp-unknown", json!({}));
    assert!(!types(&msgs).contains(&"tool_call".to_string()), "{msgs:?}");
    let text = assistant_text(&msgs);
    assert!(text.contains("no tool named"), "{text}");
    assert!(text.contains(r#""isError":true"#), "{text}");
}
