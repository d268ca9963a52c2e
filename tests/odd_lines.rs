//! Lines of the CLI that are valid JSON but odd (issue 8, item 2): text holding half a
//! UTF-16 surrogate pair, numbers beyond f64. Each is relayed (lossily, as docs/protocol.md
//! says) and, above all, a turn's `result` ends the query whatever it holds.

mod support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tungstenite::Message;

/// Send a query and collect its messages up to `query_end`; fails, rather than hangs
/// (the server's pings would keep a plain read alive), if that does not come within
/// [`WAIT`]: a query that never ends is the bug these tests guard against.
fn query(c: &mut Client, prompt: &str) -> Vec<Value> {
    c.send(json!({"type": "query", "prompt": prompt, "options": {}}));
    let socket = c.ws.get_ref();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut msgs = Vec::new();
    loop {
        match c.ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                let done = v["type"] == "query_end";
                msgs.push(v);
                if done {
                    break;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}, after {:?}", types(&msgs)),
        }
        assert!(
            Instant::now() < deadline,
            "no query_end within {WAIT:?}, after {:?}",
            types(&msgs)
        );
    }
    c.ws.get_ref().set_read_timeout(Some(WAIT)).unwrap();
    msgs
}

/// The real CLI writes the model's lone surrogate as `\ud83d` in both its `assistant`
/// and its `result` line (checked by hand against the scripted model). The client gets
/// U+FFFD in its place, one `result_message`, one `query_end`, and the session goes on.
#[test]
fn a_lone_surrogate_in_the_models_text_ends_the_turn() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let mut c = s.connect();
    let msgs = query(&mut c, "lone-surrogate");
    let expected = "half an emoji: \u{fffd}, then more";
    assert_eq!(assistant_text(&msgs), expected, "{msgs:?}");
    let result = only(&msgs, "result_message");
    assert_eq!(result["result"], expected);
    assert_eq!(result["subtype"], "success");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert!(
        !msgs.iter().any(|m| m["type"] == "error"),
        "{:?}",
        types(&msgs)
    );
    let msgs = query(&mut c, "hello again");
    assert_eq!(assistant_text(&msgs).trim(), "Echo: hello again");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

/// A number beyond f64 in a `result` (the stand-in CLI: JavaScript writes none) is
/// relayed as its JSON text, and the query completes.
#[test]
fn a_number_beyond_f64_in_a_result_is_relayed_as_text() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    let line = r#"{"type":"result","subtype":"success","is_error":false,"result":"big","total_cost_usd":1e400,"usage":{"output_tokens":-2E+999}}"#;
    let msgs = query(&mut c, &format!("raw-result {line}"));
    let result = only(&msgs, "result_message");
    assert_eq!(result["total_cost_usd"], "1e400", "{result}");
    assert_eq!(result["usage"]["output_tokens"], "-2E+999", "{result}");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let msgs = query(&mut c, "hello");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

/// A `result` line cut short is no JSON, but it is still the turn's end: an error,
/// then `query_end` (failed), and the next query works.
#[test]
fn a_result_line_cut_short_still_ends_the_query() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    let line = r#"{"type":"result","subtype":"success","is_error":false,"result":"cut sh"#;
    let msgs = query(&mut c, &format!("raw-result {line}"));
    assert_eq!(only(&msgs, "error")["code"], "claude_output_invalid");
    assert!(!msgs.iter().any(|m| m["type"] == "result_message"));
    assert_eq!(only(&msgs, "query_end")["outcome"], "failed");
    let msgs = query(&mut c, "hello");
    assert_eq!(assistant_text(&msgs), "Echo: hello");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}
