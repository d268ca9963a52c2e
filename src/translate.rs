//! The CLI's stream-json output turned into protocol messages.
//!
//! Only formats the real CLI speaks are read here (see ../shared/claude-cli/README.md):
//! `system`, `assistant`, `user` (tool results), `result`, `stream_event`,
//! `control_request` and `control_response`. A line of any other type is relayed as a
//! `system_message` whose `subtype` is `cli_<type>`, so nothing the CLI says is lost.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use std::borrow::Cow;

use crate::protocol::{truncate, Raw, ServerMessage};

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
    /// `result`: a turn has ended.
    Result {
        session_id: Option<String>,
        is_error: bool,
        message: ServerMessage<'a>,
    },
    /// The CLI asks its driver something (e.g. `can_use_tool`); it waits for an answer.
    ControlRequest { request_id: Value, subtype: String },
    /// Meant for the server only (answers to our control requests, echoes of user text).
    Internal,
    /// A line that is not a JSON object (lossily decoded, at most 200 characters).
    Invalid(String),
}

/// The fields of a stdout line the fast path needs, borrowed from the line's text.
/// Everything else is skipped, not built.
#[derive(Deserialize)]
struct Fast<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a RawValue,
    /// Parsed in the same pass; a line whose `message` does not fit (no `content`)
    /// fails the fast path and is parsed whole.
    #[serde(borrow, default)]
    message: Option<FastMessage<'a>>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parent_tool_use_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FastMessage<'a> {
    #[serde(borrow)]
    content: &'a RawValue,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
}

/// Translate one stdout line (without its newline).
///
/// The events that make up the bulk of a stream — `assistant` and `stream_event` —
/// take a fast path: their parts are relayed as the CLI's own JSON text, so no tree is
/// built and re-encoded. Every other line (and any line the fast path does not fit)
/// is parsed whole and handled by [`translate`].
pub fn translate_line(line: &[u8]) -> CliEvent<'_> {
    if let Ok(f) = serde_json::from_slice::<Fast>(line) {
        match (f.kind.get(), f.message, f.event) {
            ("\"assistant\"", Some(m), _) => {
                return CliEvent::Forward(ServerMessage::AssistantMessage {
                    content: Cow::Borrowed(m.content),
                    model: m.model.map(Cow::Borrowed),
                    parent_tool_use_id: f.parent_tool_use_id.map(Cow::Borrowed),
                });
            }
            ("\"stream_event\"", _, Some(event)) => {
                return CliEvent::Forward(ServerMessage::StreamEvent {
                    event: Cow::Borrowed(event),
                    session_id: f.session_id.map(Cow::Borrowed),
                    parent_tool_use_id: f.parent_tool_use_id.map(Cow::Borrowed),
                });
            }
            _ => {}
        }
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => translate(map),
        _ => CliEvent::Invalid(truncate(&String::from_utf8_lossy(line), 200).to_string()),
    }
}

/// A value as JSON text (a `Value` always serializes).
fn raw(v: &Value) -> Raw<'static> {
    Cow::Owned(serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned()))
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
                content: raw(message.get("content").unwrap_or(&Value::Array(vec![]))),
                model: message.get("model").map(raw),
                parent_tool_use_id: non_null(line.remove("parent_tool_use_id")),
            })
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
                CliEvent::Forward(ServerMessage::AssistantMessage {
                    content: raw(&Value::Array(results)),
                    model: None,
                    parent_tool_use_id: non_null(line.remove("parent_tool_use_id")),
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
            let is_error = line
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut take = |k: &str| line.remove(k).unwrap_or(Value::Null);
            let total_cost_usd = take("total_cost_usd");
            let message = ServerMessage::ResultMessage {
                subtype: take("subtype"),
                cost_usd: total_cost_usd.clone(),
                duration_ms: take("duration_ms"),
                duration_api_ms: take("duration_api_ms"),
                session_id: take("session_id"),
                total_cost_usd,
                num_turns: take("num_turns"),
                usage: take("usage"),
                is_error: take("is_error"),
                result: take("result"),
            };
            CliEvent::Result {
                session_id,
                is_error,
                message,
            }
        }
        "stream_event" => CliEvent::Forward(ServerMessage::StreamEvent {
            event: raw(line.get("event").unwrap_or(&Value::Null)),
            session_id: line.get("session_id").map(raw),
            parent_tool_use_id: non_null(line.remove("parent_tool_use_id")),
        }),
        "control_request" => {
            let subtype = line
                .get("request")
                .and_then(|r| r.get("subtype"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            CliEvent::ControlRequest {
                request_id: line.remove("request_id").unwrap_or(Value::Null),
                subtype,
            }
        }
        "control_response" | "keep_alive" => CliEvent::Internal,
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
    v.filter(|v| !v.is_null()).map(|v| raw(&v))
}

fn string(line: &Map<String, Value>, key: &str) -> Option<String> {
    line.get(key).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::CliEvent::Forward;
    use super::*;
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
                subtype,
            } => {
                assert_eq!(request_id, "r1");
                assert_eq!(subtype, "can_use_tool");
            }
            other => panic!("{other:?}"),
        }
    }
}
