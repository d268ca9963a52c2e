//! Questions the CLI asked that wait for the client: permission prompts
//! (`can_use_tool`) and calls of client-defined tools (`mcp_message` `tools/call`).
//!
//! The CLI blocks its turn until each is answered, so every one is answered exactly
//! once, whatever happens: by the client's `permission_response` / `tool_result`, or
//! by the server on the client's behalf — a refusal when the deadline passes, the
//! query is interrupted, or the client is gone. The answer is a `control_response`
//! for the CLI's `request_id`.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::protocol::{Behavior, ServerMessage};
use crate::tools;

/// What was asked.
#[derive(Debug, Clone)]
pub enum Ask {
    /// `can_use_tool`: the tool's input, used when the client allows it unchanged.
    Permission { input: Value },
    /// A tool call; `id` is the MCP JSON-RPC id.
    ToolCall { id: Value },
}

/// One question waiting for the client.
#[derive(Debug)]
struct Waiting {
    /// The CLI's `request_id`, also the id the client answers with.
    id: String,
    ask: Ask,
    deadline: Instant,
    /// What the client was sent, and its `seq`, to send again to a client that
    /// reattaches.
    message: ServerMessage<'static>,
    seq: u64,
}

/// The questions waiting, oldest first.
#[derive(Debug, Default)]
pub struct Pending {
    waiting: Vec<Waiting>,
}

/// Why the server answered for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    TimedOut,
    Interrupted,
    ClientGone,
}

impl Unanswered {
    fn reason(self) -> &'static str {
        match self {
            Unanswered::TimedOut => "the client did not answer in time",
            Unanswered::Interrupted => "the query was interrupted",
            Unanswered::ClientGone => "the client disconnected",
        }
    }
}

impl Pending {
    /// Remember a question sent to the client as `message`, numbered `seq`.
    pub fn add(
        &mut self,
        id: String,
        ask: Ask,
        deadline: Instant,
        message: ServerMessage<'static>,
        seq: u64,
    ) {
        self.waiting.push(Waiting {
            id,
            ask,
            deadline,
            message,
            seq,
        });
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The earliest deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting.iter().map(|w| w.deadline).min()
    }

    /// The questions still waiting that the client was sent as `seq` `last_seq` or
    /// before, to send again to a client that reattaches (later ones are replayed).
    pub fn messages_up_to(&self, last_seq: u64) -> impl Iterator<Item = &ServerMessage<'static>> {
        self.waiting
            .iter()
            .filter(move |w| w.seq <= last_seq)
            .map(|w| &w.message)
    }

    /// Take the question `id` if it is a permission prompt: the CLI's response to the
    /// client's answer. `None`: no such prompt waits.
    pub fn answer_permission(
        &mut self,
        id: &str,
        behavior: Behavior,
        updated_input: Option<Map<String, Value>>,
        message: Option<String>,
    ) -> Option<(String, Value)> {
        let i = self
            .waiting
            .iter()
            .position(|w| w.id == id && matches!(w.ask, Ask::Permission { .. }))?;
        let w = self.waiting.remove(i);
        let Ask::Permission { input } = w.ask else {
            return None;
        };
        let response = match behavior {
            Behavior::Allow => json!({
                "behavior": "allow",
                "updatedInput": updated_input.map(Value::Object).unwrap_or(input),
            }),
            Behavior::Deny => json!({
                "behavior": "deny",
                "message": message.unwrap_or_else(|| "The user denied this tool use.".into()),
            }),
        };
        Some((w.id, response))
    }

    /// Take the tool call `id`: the CLI's response carrying the client's result.
    pub fn answer_tool_call(
        &mut self,
        id: &str,
        content: Value,
        is_error: bool,
    ) -> Option<(String, Value)> {
        let i = self
            .waiting
            .iter()
            .position(|w| w.id == id && matches!(w.ask, Ask::ToolCall { .. }))?;
        let w = self.waiting.remove(i);
        let Ask::ToolCall { id: rpc } = w.ask else {
            return None;
        };
        let result = tools::call_result(rpc, content, is_error);
        Some((w.id, json!({"mcp_response": result})))
    }

    /// Take the question `id` without answering it: the CLI withdrew it
    /// (`control_cancel_request`). What it was, or `None` if no such question waits.
    pub fn withdraw(&mut self, id: &str) -> Option<Ask> {
        let i = self.waiting.iter().position(|w| w.id == id)?;
        Some(self.waiting.remove(i).ask)
    }

    /// Answer for the client every question whose deadline has passed (`now`), or
    /// all of them (`None`): the CLI's responses.
    pub fn refuse(&mut self, now: Option<Instant>, why: Unanswered) -> Vec<(String, Value)> {
        let (due, keep): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| now.is_none_or(|now| now >= w.deadline));
        self.waiting = keep;
        due.into_iter()
            .map(|w| {
                let response = match w.ask {
                    Ask::Permission { .. } => json!({
                        "behavior": "deny",
                        "message": format!("Permission denied: {}.", why.reason()),
                    }),
                    Ask::ToolCall { id } => json!({"mcp_response": tools::call_result(
                        id,
                        Value::String(format!("The tool did not run: {}.", why.reason())),
                        true,
                    )}),
                };
                (w.id, response)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ask(p: &mut Pending, id: &str, ask: Ask, deadline: Instant) {
        p.add(id.into(), ask, deadline, ServerMessage::Pong {}, 1);
    }

    #[test]
    fn a_withdrawn_question_is_gone_unanswered() {
        let now = Instant::now();
        let mut p = Pending::default();
        ask(&mut p, "a", Ask::Permission { input: json!({}) }, now);
        ask(&mut p, "b", Ask::ToolCall { id: json!(7) }, now);
        assert!(matches!(p.withdraw("b"), Some(Ask::ToolCall { .. })));
        assert!(p.withdraw("b").is_none());
        assert!(p.answer_tool_call("b", json!("late"), false).is_none());
        assert!(matches!(p.withdraw("a"), Some(Ask::Permission { .. })));
        assert!(p.is_empty());
        assert!(p.refuse(None, Unanswered::ClientGone).is_empty());
    }

    #[test]
    fn each_question_is_answered_once() {
        let now = Instant::now();
        let mut p = Pending::default();
        ask(
            &mut p,
            "a",
            Ask::Permission {
                input: json!({"x": 1}),
            },
            now,
        );
        ask(&mut p, "b", Ask::ToolCall { id: json!(7) }, now);
        // The wrong kind of answer does not take a question.
        assert!(p.answer_tool_call("a", json!("r"), false).is_none());
        let (id, r) = p
            .answer_permission("a", Behavior::Allow, None, None)
            .unwrap();
        assert_eq!(id, "a");
        assert_eq!(r, json!({"behavior": "allow", "updatedInput": {"x": 1}}));
        assert!(p
            .answer_permission("a", Behavior::Deny, None, None)
            .is_none());
        let (_, r) = p.answer_tool_call("b", json!("out"), false).unwrap();
        assert_eq!(r["mcp_response"]["id"], 7);
        assert_eq!(r["mcp_response"]["result"]["content"][0]["text"], "out");
        assert!(p.is_empty());
    }

    #[test]
    fn a_deny_carries_the_clients_message_and_updated_input_replaces() {
        let mut p = Pending::default();
        let later = Instant::now() + Duration::from_secs(9);
        ask(&mut p, "a", Ask::Permission { input: json!({}) }, later);
        ask(&mut p, "b", Ask::Permission { input: json!({}) }, later);
        let (_, r) = p
            .answer_permission("a", Behavior::Deny, None, Some("not today".into()))
            .unwrap();
        assert_eq!(r, json!({"behavior": "deny", "message": "not today"}));
        let mut m = Map::new();
        m.insert("command".into(), json!("ls"));
        let (_, r) = p
            .answer_permission("b", Behavior::Allow, Some(m), None)
            .unwrap();
        assert_eq!(r["updatedInput"], json!({"command": "ls"}));
    }

    #[test]
    fn overdue_questions_are_refused_and_the_rest_wait() {
        let now = Instant::now();
        let mut p = Pending::default();
        ask(&mut p, "soon", Ask::Permission { input: json!({}) }, now);
        ask(
            &mut p,
            "late",
            Ask::ToolCall { id: json!(1) },
            now + Duration::from_secs(60),
        );
        assert_eq!(p.deadline(), Some(now));
        let refused = p.refuse(Some(now), Unanswered::TimedOut);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].1["behavior"], "deny");
        assert!(refused[0].1["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"));
        let refused = p.refuse(None, Unanswered::ClientGone);
        assert_eq!(refused[0].1["mcp_response"]["result"]["isError"], true);
        assert!(p.is_empty());
    }
}
