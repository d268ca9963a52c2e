//! The stream-json protocol of the `claude` CLI, both directions: the lines the server
//! writes to its stdin, the flags every child starts with, and its stdout turned into
//! protocol messages.
//!
//! Only formats the real CLI speaks are written or read here (see
//! ../shared/claude-cli/README.md). Written: `user` messages, and `control_request` /
//! `control_response` objects. Read: `system`, `assistant`, `user` (tool results),
//! `result`, `stream_event`, `control_request` and `control_response`. A line of any
//! other type is relayed as a `system_message` whose `subtype` is `cli_<type>`, so
//! nothing the CLI says is lost.
//!
//! No line is lost for being odd either: every line that is JSON to the grammar is
//! read ([`json::parse`] mends, lossily, what serde_json would refuse), and a `result`
//! line ends the turn whatever it holds, even when it is no JSON at all.

use serde_json::{json, Map, Value};

use crate::json::{self, find_newline, Declined, Raw, Scanner};
use crate::protocol::{ClientError, ErrorCode, ServerMessage, Setting};
use crate::util::truncate;

// ---- writing: the child's stdin and argv ----------------------------------------

/// The flags every child gets: print mode, stream-json both ways, and our own user
/// messages echoed back when the CLI takes them into a turn — the only way to know
/// when a query is over, since messages queued during a turn are answered together.
pub const BASE_ARGS: [&str; 7] = [
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--input-format",
    "stream-json",
    "--replay-user-messages",
];

/// A user message: the query's prompt or more `input` (a string, or content blocks).
pub fn user_message(content: Value) -> Value {
    json!({
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": null,
        "session_id": "default"
    })
}

/// The SDK's first message: the CLI answers control requests after it. With
/// `client_tools` it also names our SDK MCP server (see `tools.rs`).
pub fn initialize(client_tools: bool) -> Value {
    let mut request = json!({"subtype": "initialize", "hooks": null});
    if client_tools {
        request["sdkMcpServers"] = json!([crate::tools::MCP_SERVER]);
    }
    control_request("claude_ws_init", request)
}

/// Change a setting of the running CLI (transcript 10).
pub fn setting(id: &str, setting: &Setting) -> Value {
    let request = match setting {
        Setting::PermissionMode(mode) => json!({"subtype": "set_permission_mode", "mode": mode}),
        Setting::Model(model) => json!({"subtype": "set_model", "model": model}),
        Setting::MaxThinkingTokens(n) => {
            json!({"subtype": "set_max_thinking_tokens", "max_thinking_tokens": n})
        }
    };
    control_request(id, request)
}

/// Answer a control request of the CLI's (a permission decision, an MCP response).
pub fn control_success(request_id: &Value, response: Value) -> Value {
    json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response}
    })
}

/// Stop the running turn. `n` tells one query's requests from another's.
pub fn interrupt(n: u64) -> Value {
    control_request(
        &format!("claude_ws_interrupt_{n}"),
        json!({"subtype": "interrupt"}),
    )
}

/// Refuse a control request of the CLI's, so it does not wait for an answer.
pub fn control_error(request_id: &Value, error: &str) -> Value {
    json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error}
    })
}

fn control_request(id: &str, request: Value) -> Value {
    json!({"type": "control_request", "request_id": id, "request": request})
}

// ---- reading: the child's stdout ----------------------------------------------

/// The fields of `result_message` the original protocol promises.
const RESULT_FIELDS: [&str; 9] = [
    "subtype",
    "duration_ms",
    "duration_api_ms",
    "session_id",
    "total_cost_usd",
    "num_turns",
    "usage",
    "is_error",
    "result",
];

/// What one stdout line means to the session.
#[derive(Debug)]
pub enum CliEvent<'a> {
    /// Relay to the client.
    Forward(ServerMessage<'a>),
    /// `system/init`: the CLI's session id is known.
    Init {
        session_id: Option<String>,
        message: ServerMessage<'a>,
    },
    /// A user message of ours echoed back (`--replay-user-messages`): the CLI has taken
    /// it into a turn. Messages queued during a turn come back merged, joined by `\n`.
    Replay { text: String },
    /// `result`: a turn has ended. `is_error` is true unless the line says `false`.
    /// A line that starts as a `result` but is no JSON still ends the turn: its
    /// `message` is then a `claude_output_invalid` error.
    Result {
        session_id: Option<String>,
        is_error: bool,
        message: ServerMessage<'a>,
    },
    /// The CLI asks its driver something (e.g. `can_use_tool`); it waits for an answer.
    ControlRequest {
        request_id: Value,
        request: Map<String, Value>,
    },
    /// The CLI answered a control request of ours: `error` unless it succeeded.
    ControlResponse {
        request_id: String,
        error: Option<String>,
    },
    /// `control_cancel_request`: the CLI withdraws a control request it asked (newer
    /// CLIs; e.g. a permission prompt that no longer needs an answer).
    CancelRequest { request_id: String },
    /// Meant for the server only (answers to our control requests, echoes of user text,
    /// `keep_alive`).
    Internal,
    /// A line that is not a JSON object and not recognisably a `result` (lossily
    /// decoded, at most 200 characters).
    Invalid(String),
}

/// The events of a chunk of the child's stdout (whole lines), in order; blank lines
/// (nothing but whitespace) are skipped.
///
/// The events that make up the bulk of a stream — `assistant` and `stream_event` —
/// take a fast path: [`Scanner`] checks the line, finding where it ends as it goes, and
/// its parts are relayed as the CLI's own JSON text, so no tree is built and
/// re-encoded. Every other line (and any line the scanner declines) is parsed whole by
/// serde_json and handled by [`translate`].
pub fn events(chunk: &[u8]) -> impl Iterator<Item = CliEvent<'_>> {
    let mut rest = chunk;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let line_len = match fast(rest) {
            Ok((Some(event), len)) => {
                rest = &rest[len..];
                return Some(event);
            }
            Ok((None, len)) => len,
            Err(Declined) => find_newline(rest).map_or(rest.len(), |i| i + 1),
        };
        let (line, after) = rest.split_at(line_len);
        rest = after;
        let body = line.trim_ascii_end();
        if !body.is_empty() {
            return Some(whole(body));
        }
    })
}

/// Translate one stdout line (without its newline).
#[cfg(test)]
fn translate_line(line: &[u8]) -> CliEvent<'_> {
    let mut events = events(line);
    let event = events.next().expect("a line that is not blank");
    assert!(events.next().is_none(), "more than one line");
    event
}

/// A line parsed whole.
fn whole(line: &[u8]) -> CliEvent<'static> {
    match json::parse(line) {
        Ok(Value::Object(map)) => translate(map),
        _ => {
            let text = truncate(&String::from_utf8_lossy(line), 200).to_string();
            match leading_type(line) {
                // The turn's end, unreadable: still its end, or the query would wait
                // for ever.
                Some(kind) if kind.get() == br#""result""# => CliEvent::Result {
                    session_id: None,
                    is_error: true,
                    message: ClientError::new(
                        ErrorCode::ClaudeOutputInvalid,
                        format!(
                            "claude printed a result line that cannot be read as JSON: {text:?}"
                        ),
                    )
                    .into(),
                },
                _ => CliEvent::Invalid(text),
            }
        }
    }
}

/// The `type` of a line that is no JSON, if it has one before the point where it
/// breaks (the CLI writes `type` first): the first top-level member so named.
fn leading_type(line: &[u8]) -> Option<Raw<'_>> {
    let mut kind = None;
    // Reads members until the line breaks, or until the type is known.
    let _ = Scanner::new(line).members(|s, key| {
        let value = s.value()?;
        if key == b"type" {
            kind = Some(value);
            return Err(Declined);
        }
        Ok(())
    });
    kind
}

/// The fast path, reading the line at the start of `text`: its event (`None` for a
/// valid line it has no event for, such as one without a `type`) and its length with
/// its newline. Lines of other types are declined as soon as their `type` is read.
fn fast(text: &[u8]) -> Result<(Option<CliEvent<'_>>, usize), Declined> {
    /// Keep the first sighting of a member; a second one is for serde to judge.
    fn once<'a>(slot: &mut Option<Raw<'a>>, value: Raw<'a>) -> Result<(), Declined> {
        match slot {
            Some(_) => Err(Declined),
            None => {
                *slot = Some(value);
                Ok(())
            }
        }
    }
    let (mut kind, mut content, mut model, mut event, mut session_id, mut parent) =
        (None, None, None, None, None, None);
    let mut has_message = false;
    let mut scan = Scanner::new(text);
    scan.members(|s, key| match key {
        b"type" => match s.value()? {
            // Any other line is read by serde_json anyway: stop checking it here (the
            // CLI writes `type` first; a tool result's line can be megabytes).
            k if k.get() == br#""assistant""# || k.get() == br#""stream_event""# => {
                once(&mut kind, k)
            }
            _ => Err(Declined),
        },
        b"message" if !has_message => {
            has_message = true;
            s.members(|s, key| match key {
                b"content" => once(&mut content, s.value()?),
                b"model" => once(&mut model, s.value()?),
                _ => s.value().map(drop),
            })
        }
        b"message" => Err(Declined),
        b"event" => once(&mut event, s.value()?),
        b"session_id" => once(&mut session_id, s.value()?),
        b"parent_tool_use_id" => once(&mut parent, s.value()?),
        _ => s.value().map(drop),
    })?;
    let len = scan.end_of_line()?;
    let parent_tool_use_id = parent.filter(|p| !p.is_null());
    let event = match (kind.as_ref().map(Raw::get), content, event) {
        (Some(br#""assistant""#), Some(content), _) => {
            Some(CliEvent::Forward(ServerMessage::AssistantMessage {
                content,
                model,
                parent_tool_use_id,
                structured_patch: None,
            }))
        }
        (Some(br#""stream_event""#), _, Some(event)) => {
            Some(CliEvent::Forward(ServerMessage::StreamEvent {
                event,
                session_id: session_id.filter(|s| !s.is_null()),
                parent_tool_use_id,
            }))
        }
        _ => None,
    };
    Ok((event, len))
}

/// Translate one stdout line parsed whole.
fn translate(mut line: Map<String, Value>) -> CliEvent<'static> {
    let kind = match line.remove("type") {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    match kind.as_str() {
        "assistant" => {
            let message = take_object(&mut line, "message");
            CliEvent::Forward(ServerMessage::AssistantMessage {
                content: Raw::of(message.get("content").unwrap_or(&Value::Array(vec![]))),
                model: message.get("model").map(Raw::of),
                parent_tool_use_id: non_null(line.remove("parent_tool_use_id")),
                structured_patch: None,
            })
        }
        // The CLI reports a live setting change as a replayed local command: not an
        // echo of a message of ours.
        "user"
            if line.get("isReplay").and_then(Value::as_bool) == Some(true)
                && line
                    .get("message")
                    .and_then(|m| m.get("content"))
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.starts_with("<local-command-stdout>")) =>
        {
            CliEvent::Internal
        }
        "user" if line.get("isReplay").and_then(Value::as_bool) == Some(true) => {
            let content = line
                .get_mut("message")
                .and_then(|m| m.get_mut("content"))
                .map(Value::take);
            let text = match content {
                Some(Value::String(s)) => s,
                Some(Value::Array(blocks)) => blocks
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            CliEvent::Replay { text }
        }
        "user" => {
            let mut message = take_object(&mut line, "message");
            let results: Vec<Value> = match message.remove("content") {
                Some(Value::Array(blocks)) => blocks
                    .into_iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                    .collect(),
                _ => Vec::new(),
            };
            if results.is_empty() {
                // The CLI echoing user text ("[Request interrupted by user]", replays).
                CliEvent::Internal
            } else {
                // An edit's result also says where, as hunks: kept, the rest of
                // `tool_use_result` (it can hold the whole original file) is not.
                let structured_patch = line
                    .get("tool_use_result")
                    .and_then(|r| r.get("structuredPatch"))
                    .filter(|p| p.as_array().is_some_and(|hunks| !hunks.is_empty()))
                    .map(Raw::of);
                CliEvent::Forward(ServerMessage::AssistantMessage {
                    content: Raw::of(&Value::Array(results)),
                    model: None,
                    parent_tool_use_id: non_null(line.remove("parent_tool_use_id")),
                    structured_patch,
                })
            }
        }
        "system" => {
            let is_init = line.get("subtype").and_then(Value::as_str) == Some("init");
            let session_id = string(&line, "session_id");
            let message = ServerMessage::SystemMessage(line);
            if is_init {
                CliEvent::Init {
                    session_id,
                    message,
                }
            } else {
                CliEvent::Forward(message)
            }
        }
        "result" => {
            let session_id = string(&line, "session_id");
            // Missing or of another type: unknown, so not a success.
            let is_error = line
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            // Everything the CLI says is relayed (`permission_denials` among it); the
            // fields the original protocol promises are there even if the CLI left
            // them out, and `cost_usd` repeats `total_cost_usd`.
            for key in RESULT_FIELDS {
                line.entry(key).or_insert(Value::Null);
            }
            let cost = line.get("total_cost_usd").cloned().unwrap_or(Value::Null);
            line.insert("cost_usd".into(), cost);
            let message = ServerMessage::ResultMessage(line);
            CliEvent::Result {
                session_id,
                is_error,
                message,
            }
        }
        "stream_event" => CliEvent::Forward(ServerMessage::StreamEvent {
            event: Raw::of(line.get("event").unwrap_or(&Value::Null)),
            session_id: non_null(line.remove("session_id")),
            parent_tool_use_id: non_null(line.remove("parent_tool_use_id")),
        }),
        "control_request" => CliEvent::ControlRequest {
            request_id: line.remove("request_id").unwrap_or(Value::Null),
            request: take_object(&mut line, "request"),
        },
        "control_response" => {
            let response = take_object(&mut line, "response");
            match response.get("request_id").and_then(Value::as_str) {
                Some(id) => CliEvent::ControlResponse {
                    request_id: id.to_string(),
                    error: (response.get("subtype").and_then(Value::as_str) != Some("success"))
                        .then(|| {
                            response
                                .get("error")
                                .and_then(Value::as_str)
                                .unwrap_or("no reason given")
                                .to_string()
                        }),
                },
                None => CliEvent::Internal,
            }
        }
        "keep_alive" => CliEvent::Internal,
        "control_cancel_request" => match line.get("request_id").and_then(Value::as_str) {
            Some(id) => CliEvent::CancelRequest {
                request_id: id.to_string(),
            },
            None => CliEvent::Internal,
        },
        other => {
            let subtype = if other.is_empty() {
                "cli_untyped".to_string()
            } else {
                format!("cli_{other}")
            };
            line.insert("subtype".into(), Value::String(subtype));
            CliEvent::Forward(ServerMessage::SystemMessage(line))
        }
    }
}

fn take_object(line: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match line.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn non_null(v: Option<Value>) -> Option<Raw<'static>> {
    v.filter(|v| !v.is_null()).map(|v| Raw::of(&v))
}

fn string(line: &Map<String, Value>, key: &str) -> Option<String> {
    line.get(key).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::CliEvent::Forward;
    use super::*;
    use crate::json::tests::grammar_accepts;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn frame(e: CliEvent) -> Value {
        let m = match e {
            CliEvent::Forward(m) => m,
            CliEvent::Init { message, .. } | CliEvent::Result { message, .. } => message,
            other => panic!("nothing to send: {other:?}"),
        };
        serde_json::from_str(&m.to_frame(1)).unwrap()
    }

    /// An edit's result carries the CLI's hunks as `structured_patch`; the rest of
    /// `tool_use_result` (the original file among it) stays behind, and a result
    /// without hunks gets no such field.
    #[test]
    fn an_edit_result_keeps_its_structured_patch() {
        let hunks = json!([{"oldStart": 2, "oldLines": 1, "newStart": 2, "newLines": 2,
                            "lines": ["-b", "+B", "+c"]}]);
        let line = json!({"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "updated"}]},
            "parent_tool_use_id": null,
            "tool_use_result": {"filePath": "/f", "originalFile": "a\nb\n",
                                "structuredPatch": hunks}});
        let sent = frame(translate(obj(line)));
        assert_eq!(sent["data"]["structured_patch"], hunks, "{sent}");
        assert!(!sent.to_string().contains("originalFile"), "{sent}");
        let line = json!({"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t2", "content": "created"}]},
            "tool_use_result": {"type": "create", "structuredPatch": []}});
        let sent = frame(translate(obj(line)));
        assert!(sent["data"].get("structured_patch").is_none(), "{sent}");
    }

    /// Lines newer CLIs write (2.1.332) are never relayed as errors nor dropped
    /// silently where they matter: `keep_alive` is the server's, a cancel is an event.
    #[test]
    fn newer_cli_lines_translate() {
        let mut all = events(
            b"{\"type\":\"keep_alive\"}\n\
              {\"type\":\"control_cancel_request\",\"request_id\":\"r1\"}\n\
              {\"type\":\"control_cancel_request\"}\n",
        );
        assert!(matches!(all.next(), Some(CliEvent::Internal)));
        match all.next() {
            Some(CliEvent::CancelRequest { request_id }) => assert_eq!(request_id, "r1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(all.next(), Some(CliEvent::Internal)));
        assert!(all.next().is_none());
    }

    /// Every line of the real transcripts translates without loss of the parts a
    /// client needs.
    #[test]
    fn real_transcripts_translate() {
        // Copies of real CLI 2.1.197 output (see tests/fixtures/transcripts).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/transcripts");
        let entries = std::fs::read_dir(dir).expect("transcripts are in the repo");
        let mut seen = 0;
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            for line in text.lines().filter(|l| l.starts_with('{')) {
                let v: Value = serde_json::from_str(line).unwrap();
                let kind = v["type"].as_str().unwrap().to_string();
                let e = translate_line(line.as_bytes());
                if kind == "assistant" {
                    // Relayed as the CLI wrote it, byte for byte.
                    let content = serde_json::to_string(&v["message"]["content"]).unwrap();
                    let Forward(m) = translate_line(line.as_bytes()) else {
                        panic!("not forwarded: {line}")
                    };
                    let sent = m.to_frame(1);
                    let original = &line[line.find("\"content\":").unwrap() + 10..];
                    assert!(
                        sent.contains(&original[..content.len().min(original.len())]),
                        "{sent}"
                    );
                }
                if matches!(kind.as_str(), "assistant" | "stream_event") {
                    // The fast path says exactly what the whole parse says.
                    assert_eq!(
                        frame(translate_line(line.as_bytes())),
                        frame(translate(obj(v.clone()))),
                        "{line}"
                    );
                }
                match kind.as_str() {
                    "assistant" => {
                        let f = frame(e);
                        assert_eq!(f["type"], "assistant_message");
                        assert_eq!(f["data"]["content"], v["message"]["content"]);
                    }
                    "result" => {
                        let f = frame(e);
                        assert_eq!(f["data"]["subtype"], v["subtype"]);
                        assert_eq!(f["data"]["session_id"], v["session_id"]);
                    }
                    "system" => assert_eq!(frame(e)["data"]["subtype"], v["subtype"]),
                    _ => {}
                }
                seen += 1;
            }
        }
        assert!(seen > 20, "read only {seen} lines");
    }

    #[test]
    fn text_beyond_ascii_and_escapes_are_relayed_byte_for_byte() {
        let content =
            r#"[{"type":"text","text":"é — 😀 漢字 \"q\" \\ \n \u00e9 \ud83d\ude00 \u0000"}]"#;
        for line in [
            format!(r#"{{"type":"assistant","message":{{"model":"m","content":{content}}}}}"#),
            format!(r#"{{"type":"stream_event","event":{{"delta":{content}}},"session_id":"s"}}"#),
            // Non-ASCII before the relayed part, then ASCII only.
            r#"{"type":"assistant","uuid":"ü","message":{"content":[{"text":"plain"}]}}"#
                .to_string(),
        ] {
            assert!(matches!(fast(line.as_bytes()), Ok((Some(_), _))), "{line}");
            let relayed = frame(translate_line(line.as_bytes()));
            let whole = frame(translate(obj(serde_json::from_str(&line).unwrap())));
            assert_eq!(relayed, whole, "{line}");
            if line.contains(content) {
                let Forward(m) = translate_line(line.as_bytes()) else {
                    panic!("not forwarded: {line}")
                };
                assert!(m.to_frame(1).contains(content), "{line}");
            }
        }
        // Invalid UTF-8 in a string: not relayed, reported.
        let bad = b"{\"type\":\"assistant\",\"message\":{\"content\":\"\xc3\x28\"}}";
        assert!(matches!(translate_line(bad), CliEvent::Invalid(_)));
    }

    /// On many changed CLI lines, whatever the fast path relays is what the whole parse
    /// (the one production uses) relays; no line that is a JSON object to the grammar
    /// is lost; and every line that starts as a `result` ends the turn.
    #[test]
    fn the_fast_path_says_what_the_whole_parse_says_on_mutated_lines() {
        let mut fast_taken = 0;
        for line in crate::json::tests::mutated_cli_lines(40_000) {
            let text = String::from_utf8_lossy(&line);
            if let Ok((Some(event), len)) = fast(&line) {
                fast_taken += 1;
                let taken = line[..len].trim_ascii_end();
                assert_eq!(frame(event), frame(whole(taken)), "{text}");
                continue;
            }
            let body = line.strip_suffix(b"\n").unwrap_or(&line).trim_ascii_end();
            let one_line = !body.contains(&b'\n');
            if one_line && body.first() == Some(&b'{') && grammar_accepts(body) {
                let event = whole(body);
                assert!(!matches!(event, CliEvent::Invalid(_)), "lost: {text}");
            }
            if one_line && body.starts_with(br#"{"type":"result","#) {
                let event = whole(body);
                assert!(
                    matches!(event, CliEvent::Result { .. }),
                    "{event:?}: {text}"
                );
            }
        }
        assert!(
            fast_taken > 1_000,
            "only {fast_taken} lines took the fast path"
        );
    }

    /// Half a surrogate pair in the model's text (JavaScript writes `\ud83d`): both
    /// lines relayed with U+FFFD in its place, on either path, and the turn ends.
    #[test]
    fn a_lone_surrogate_is_relayed_as_a_replacement_character() {
        let assistant = br#"{"type":"assistant","message":{"model":"m","content":[{"type":"text","text":"cut \ud83d"}]},"parent_tool_use_id":null}"#;
        let f = frame(translate_line(assistant));
        assert_eq!(f["data"]["content"][0]["text"], "cut \u{fffd}");
        let stream_event =
            br#"{"type":"stream_event","event":{"delta":{"text":"\udc00"}},"session_id":"s"}"#;
        let f = frame(translate_line(stream_event));
        assert_eq!(f["data"]["event"]["delta"]["text"], "\u{fffd}");
        let result = br#"{"type":"result","subtype":"success","is_error":false,"result":"cut \ud83d","session_id":"s1"}"#;
        match translate_line(result) {
            CliEvent::Result {
                session_id,
                is_error,
                message,
            } => {
                assert_eq!(session_id.as_deref(), Some("s1"));
                assert!(!is_error);
                let f = frame(Forward(message));
                assert_eq!(f["type"], "result_message");
                assert_eq!(f["data"]["result"], "cut \u{fffd}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A number beyond f64 (no JavaScript CLI writes one): relayed as its text.
    #[test]
    fn a_number_beyond_f64_is_relayed_as_its_text() {
        let result = br#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":1e400,"usage":{"input_tokens":-2E+999}}"#;
        match translate_line(result) {
            CliEvent::Result {
                is_error, message, ..
            } => {
                assert!(!is_error);
                let f = frame(Forward(message));
                assert_eq!(f["data"]["total_cost_usd"], "1e400");
                assert_eq!(f["data"]["usage"]["input_tokens"], "-2E+999");
            }
            other => panic!("{other:?}"),
        }
        let assistant = br#"{"type":"assistant","message":{"content":[{"n":1e999}]}}"#;
        assert_eq!(
            frame(translate_line(assistant))["data"]["content"][0]["n"],
            "1e999"
        );
    }

    /// A `result` ends the turn whatever it holds: fields of other types are relayed as
    /// they are (an `is_error` that is no boolean counts as an error), and a line that
    /// starts as a result but is no JSON ends the turn with `claude_output_invalid`.
    #[test]
    fn every_result_line_ends_the_turn() {
        let odd =
            br#"{"type":"result","subtype":7,"is_error":"no","session_id":["x"],"usage":"none"}"#;
        match translate_line(odd) {
            CliEvent::Result {
                session_id,
                is_error,
                message,
            } => {
                assert_eq!(session_id, None);
                assert!(is_error);
                let f = frame(Forward(message));
                assert_eq!(f["data"]["subtype"], 7);
                assert_eq!(f["data"]["usage"], "none");
            }
            other => panic!("{other:?}"),
        }
        let without = translate_line(br#"{"type":"result"}"#);
        assert!(matches!(without, CliEvent::Result { is_error: true, .. }));
        for broken in [
            &br#"{"type":"result","subtype":"success","is_error":false,"result":"cut sh"#[..],
            br#"{"type":"result","subtype":"success","is_error":false,,}"#,
            br#"{ "type" : "result" , "result":"\ud83d" "#,
            b"{\"type\":\"result\",\"result\":\"bad utf-8 \xff\"}",
            br#"{"session_id":"s","type":"result","x":}"#,
        ] {
            let shown = String::from_utf8_lossy(broken);
            match translate_line(broken) {
                CliEvent::Result {
                    session_id,
                    is_error,
                    message,
                } => {
                    assert_eq!(session_id, None, "{shown}");
                    assert!(is_error, "{shown}");
                    let f = frame(Forward(message));
                    assert_eq!(f["type"], "error", "{shown}");
                    assert_eq!(f["data"]["code"], "claude_output_invalid", "{shown}");
                }
                other => panic!("{other:?}: {shown}"),
            }
        }
        // Not a result, or not recognisably one: an error, and the turn goes on.
        for broken in [
            &br#"{"type":"assistant","message":{"content":"#[..],
            br#"{"type":"res"#,
            br#"{"typ\u0065":"result",}"#,
            b"result",
        ] {
            let shown = String::from_utf8_lossy(broken);
            let event = translate_line(broken);
            assert!(matches!(event, CliEvent::Invalid(_)), "{event:?}: {shown}");
        }
    }

    #[test]
    fn a_chunk_yields_one_event_per_line() {
        let assistant = r#"{"type":"assistant","message":{"content":[]}}"#;
        let chunk = format!(
            "{assistant}\r\n\n  \n{{\"type\":\"system\",\"subtype\":\"x\"}}\nnot json\n\
             {assistant} \n[1]\n{{\"type\":\"assistant\",\n\"message\":{{}}}}\n{assistant}"
        );
        let kinds: Vec<String> = events(chunk.as_bytes())
            .map(|e| match e {
                Forward(m) => m.kind().to_string(),
                CliEvent::Invalid(text) => format!("invalid {text}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "assistant_message",
                "system_message",
                "invalid not json",
                "assistant_message",
                "invalid [1]",
                // A newline inside a line's JSON ends the line: two broken lines.
                r#"invalid {"type":"assistant","#,
                r#"invalid "message":{}}"#,
                "assistant_message", // the last line has no newline
            ]
        );
    }

    #[test]
    fn lines_the_fast_path_does_not_fit_still_translate() {
        // Escaped type, content missing, not an object, not JSON.
        let f = frame(translate_line(
            br#"{"type":"assist\u0061nt","message":{"content":[{"type":"text","text":"x"}]}}"#,
        ));
        assert_eq!(f["data"]["content"][0]["text"], "x");
        let f = frame(translate_line(br#"{"type":"assistant","message":{}}"#));
        assert_eq!(f["data"]["content"], serde_json::json!([]));
        assert!(matches!(translate_line(b"[1,2]"), CliEvent::Invalid(_)));
        match translate_line(b"not json \xff") {
            CliEvent::Invalid(t) => assert!(t.starts_with("not json")),
            other => panic!("{other:?}"),
        }
        let f = frame(translate_line(
            br#"{"type":"assistant","message":{"content":[],"model":"m"},"parent_tool_use_id":null}"#,
        ));
        assert!(f["data"].get("parent_tool_use_id").is_none());
        assert_eq!(f["data"]["model"], "m");
    }

    #[test]
    fn tool_results_become_assistant_messages_and_echoes_are_dropped() {
        let e = translate(obj(
            json!({"type":"user","message":{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t1","content":"ok","is_error":false}]},
            "parent_tool_use_id":null}),
        ));
        let f = frame(e);
        assert_eq!(f["type"], "assistant_message");
        assert_eq!(f["data"]["content"][0]["tool_use_id"], "t1");
        assert!(f["data"].get("parent_tool_use_id").is_none());
        let e = translate(obj(
            json!({"type":"user","message":{"role":"user","content":[
            {"type":"text","text":"[Request interrupted by user]"}]}}),
        ));
        assert!(matches!(e, CliEvent::Internal));
    }

    #[test]
    fn replays_of_our_messages_are_recognised() {
        let e = translate(obj(json!({"type":"user","message":{"role":"user",
            "content":"first\nsecond"},"isReplay":true})));
        match e {
            CliEvent::Replay { text } => assert_eq!(text, "first\nsecond"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_lines_are_relayed_not_lost() {
        let f = frame(translate(obj(json!({"type":"rate_limit_event","x":1}))));
        assert_eq!(f["type"], "system_message");
        assert_eq!(f["data"]["subtype"], "cli_rate_limit_event");
        assert_eq!(f["data"]["x"], 1);
    }

    #[test]
    fn control_requests_are_surfaced() {
        let e = translate(obj(json!({"type":"control_request","request_id":"r1",
            "request":{"subtype":"can_use_tool"}})));
        match e {
            CliEvent::ControlRequest {
                request_id,
                request,
            } => {
                assert_eq!(request_id, "r1");
                assert_eq!(request["subtype"], "can_use_tool");
            }
            other => panic!("{other:?}"),
        }
        let e = translate(obj(json!({"type":"control_response",
            "response":{"subtype":"error","request_id":"claude_ws_set_3","error":"no such model"}})));
        match e {
            CliEvent::ControlResponse { request_id, error } => {
                assert_eq!(request_id, "claude_ws_set_3");
                assert_eq!(error.as_deref(), Some("no such model"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_result_keeps_every_field_the_cli_wrote() {
        let f = frame(translate(obj(json!({"type":"result","subtype":"success",
            "is_error":false,"total_cost_usd":0.5,"permission_denials":[{"tool_name":"Bash"}],
            "new_field":{"x":1}}))));
        assert_eq!(f["type"], "result_message");
        assert_eq!(f["data"]["permission_denials"][0]["tool_name"], "Bash");
        assert_eq!(f["data"]["new_field"], json!({"x": 1}));
        assert_eq!(f["data"]["cost_usd"], 0.5);
        // The original protocol's fields are always there.
        assert!(f["data"]["num_turns"].is_null());
        assert!(f["data"].get("usage").is_some());
        assert!(f["data"].get("type").is_none());
    }

    #[test]
    fn a_local_command_echo_is_not_an_echo_of_ours() {
        let e = translate(obj(
            json!({"type":"user","isReplay":true,"message":{"role":"user",
            "content":"<local-command-stdout>Set model to claude-haiku-4-5</local-command-stdout>"}}),
        ));
        assert!(matches!(e, CliEvent::Internal), "{e:?}");
    }

    /// The shapes the real CLI was seen to take (transcripts 01 and 03).
    #[test]
    fn lines_have_the_shapes_the_cli_takes() {
        assert_eq!(
            user_message(json!("hi")).to_string(),
            r#"{"message":{"content":"hi","role":"user"},"parent_tool_use_id":null,"session_id":"default","type":"user"}"#
        );
        assert_eq!(
            interrupt(3).to_string(),
            r#"{"request":{"subtype":"interrupt"},"request_id":"claude_ws_interrupt_3","type":"control_request"}"#
        );
        assert_eq!(initialize(false)["request"]["subtype"], "initialize");
        assert_eq!(initialize(true)["request"]["sdkMcpServers"], json!(["ws"]));
        assert_eq!(
            setting("s1", &Setting::MaxThinkingTokens(2000))["request"],
            json!({"subtype": "set_max_thinking_tokens", "max_thinking_tokens": 2000})
        );
        assert_eq!(
            control_success(&json!("r"), json!({"behavior": "allow"}))["response"]["response"],
            json!({"behavior": "allow"})
        );
        assert_eq!(
            control_error(&json!("r1"), "no")["response"],
            json!({"subtype": "error", "request_id": "r1", "error": "no"})
        );
    }
}
