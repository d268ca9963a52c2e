//! What an `/sdk` client may write to the CLI's stdin: the control-request filter.
//!
//! The relay is raw, but the operator's policy still holds: a `control_request` whose
//! subtype could widen what the operator allows is answered by the server with the
//! CLI's own error shape and never reaches the child. Everything else the SDKs use for
//! ordinary work passes unchanged. Unknown subtypes are refused: a newer SDK's request
//! the server has not judged may be one that widens the policy.

use serde_json::{json, Value};

use crate::config::Config;

/// Subtypes passed as they are (docs/protocol.md, "Control requests", says why each is safe).
pub const PASSED: &[&str] = &[
    "initialize",
    "interrupt",
    "set_model",
    "set_max_thinking_tokens",
    "mcp_status",
    "get_context_usage",
    "rewind_files",
    "mcp_reconnect",
    "mcp_toggle",
    "stop_task",
];

/// Subtypes refused whatever they carry, and why.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "apply_flag_settings",
        "it changes the CLI's flags, which the server sets from its policy",
    ),
    (
        "update_settings",
        "it changes the CLI's settings (permissions, hooks, sandbox), which the server sets",
    ),
    (
        "mcp_set_servers",
        "it can add MCP servers that start processes; declare in-process servers in sdk_start's sdk_mcp_servers",
    ),
    (
        "claim_session",
        "it rebinds the process (cwd, model, permission mode) outside the server's checks",
    ),
];

/// What to do with one client frame (a parsed JSON object).
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Write it to the child's stdin.
    Pass,
    /// Answer it with this line instead (a `control_response` error).
    Answer(Value),
    /// Not a line the CLI takes: the connection is refused with this reason.
    Invalid(String),
}

/// Judge one frame the client sent after `sdk_start`.
pub fn judge(config: &Config, frame: &Value) -> Verdict {
    let Some(obj) = frame.as_object() else {
        return Verdict::Invalid("a frame must be a JSON object".into());
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("user") | Some("control_response") | Some("control_cancel_request") => Verdict::Pass,
        Some("control_request") => judge_request(config, frame),
        Some(other) => Verdict::Invalid(format!(
            "type {:?} is not one the CLI reads (user, control_request, control_response) or sdk_end_input",
            crate::util::truncate(other, 64)
        )),
        None => Verdict::Invalid("a frame needs a string field \"type\"".into()),
    }
}

fn judge_request(config: &Config, frame: &Value) -> Verdict {
    let id = frame.get("request_id").cloned().unwrap_or(Value::Null);
    let subtype = frame
        .pointer("/request/subtype")
        .and_then(Value::as_str)
        .unwrap_or("");
    if PASSED.contains(&subtype) {
        return Verdict::Pass;
    }
    if subtype == "set_permission_mode" {
        let mode = frame
            .pointer("/request/mode")
            .and_then(Value::as_str)
            .unwrap_or("");
        return match crate::spec::permission_mode(config, mode) {
            Ok(_) => Verdict::Pass,
            Err(e) => refuse(id, &e.message),
        };
    }
    if let Some((_, why)) = REFUSED.iter().find(|(s, _)| *s == subtype) {
        return refuse(id, &format!("claude-ws refuses {subtype}: {why}"));
    }
    refuse(
        id,
        &format!(
            "claude-ws does not pass control request subtype {:?} (not on its list of safe subtypes)",
            crate::util::truncate(subtype, 64)
        ),
    )
}

/// The CLI's error answer to request `id`.
fn refuse(id: Value, why: &str) -> Verdict {
    Verdict::Answer(json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": id, "error": why},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            allowed_permission_modes: vec!["default".into(), "acceptEdits".into()],
            ..Config::default()
        }
    }

    fn request(req: Value) -> Value {
        json!({"type": "control_request", "request_id": "r1", "request": req})
    }

    fn refused(v: Verdict) -> String {
        match v {
            Verdict::Answer(a) => {
                assert_eq!(a["type"], "control_response");
                assert_eq!(a["response"]["subtype"], "error");
                assert_eq!(a["response"]["request_id"], "r1");
                a["response"]["error"].as_str().unwrap().to_string()
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn ordinary_work_passes() {
        let c = config();
        for s in PASSED {
            assert_eq!(
                judge(&c, &request(json!({"subtype": s}))),
                Verdict::Pass,
                "{s}"
            );
        }
        for t in ["user", "control_response"] {
            assert_eq!(judge(&c, &json!({"type": t})), Verdict::Pass);
        }
    }

    #[test]
    fn permission_mode_follows_the_operator() {
        let c = config();
        let ok = request(json!({"subtype": "set_permission_mode", "mode": "acceptEdits"}));
        assert_eq!(judge(&c, &ok), Verdict::Pass);
        let wide = request(json!({"subtype": "set_permission_mode", "mode": "bypassPermissions"}));
        assert!(refused(judge(&c, &wide)).contains("not allowed"));
        let bogus = request(json!({"subtype": "set_permission_mode", "mode": "yolo"}));
        assert!(refused(judge(&c, &bogus)).contains("unknown"));
    }

    #[test]
    fn widening_subtypes_are_answered_by_the_server() {
        let c = config();
        for (s, _) in REFUSED {
            assert!(refused(judge(&c, &request(json!({"subtype": s})))).contains(s));
        }
        assert!(
            refused(judge(&c, &request(json!({"subtype": "brand_new"})))).contains("brand_new")
        );
        assert!(refused(judge(&c, &request(json!({})))).contains("subtype"));
    }

    #[test]
    fn other_frames_are_invalid() {
        let c = config();
        assert!(matches!(judge(&c, &json!([1])), Verdict::Invalid(_)));
        assert!(matches!(
            judge(&c, &json!({"type": "system"})),
            Verdict::Invalid(_)
        ));
        assert!(matches!(judge(&c, &json!({"x": 1})), Verdict::Invalid(_)));
    }
}
