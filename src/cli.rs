//! What the server writes to the CLI: the stream-json lines of its stdin, and the flags
//! every child starts with. (What the CLI writes back is read in `translate.rs`.)
//!
//! Only formats the real CLI speaks are written here (../shared/claude-cli/README.md):
//! `user` messages, and `control_request` / `control_response` objects.

use serde_json::{json, Value};

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

/// A user message: the query's prompt or more `input`.
pub fn user_message(text: &str) -> Value {
    json!({
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": null,
        "session_id": "default"
    })
}

/// The SDK's first message: the CLI answers control requests after it.
pub fn initialize() -> Value {
    control_request(
        "claude_ws_init",
        json!({"subtype": "initialize", "hooks": null}),
    )
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
            user_message("hi").to_string(),
            r#"{"message":{"content":"hi","role":"user"},"parent_tool_use_id":null,"session_id":"default","type":"user"}"#
        );
        assert_eq!(
            interrupt(3).to_string(),
            r#"{"request":{"subtype":"interrupt"},"request_id":"claude_ws_interrupt_3","type":"control_request"}"#
        );
        assert_eq!(initialize()["request"]["subtype"], "initialize");
        assert_eq!(
            control_error(&json!("r1"), "no")["response"],
            json!({"subtype": "error", "request_id": "r1", "error": "no"})
        );
    }
}
