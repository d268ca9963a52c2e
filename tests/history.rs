//! Conversations across sessions, with the REAL Claude Code CLI against the scripted
//! Messages API: a resume of a conversation that does not exist, and what follows it.
//! These fail (never skip) when the CLI is missing: run scripts/install-claude.sh.

mod support;

use serde_json::json;
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
