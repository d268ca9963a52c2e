//! What the server writes to the CLI: the stream-json lines of its stdin, and the flags
//! every child starts with. (What the CLI writes back is read in `translate.rs`.)
//!
//! Only formats the real CLI speaks are written here (../shared/claude-cli/README.md):
//! `user` messages, and `control_request` / `control_response` objects.

use serde_json::{json, Value};

use crate::protocol::Setting;

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

#[cfg(test)]
mod tests {
    use super::*;

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
