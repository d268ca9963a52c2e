//! How a client that breaks the WebSocket protocol is closed (issue 8, item 5): with the
//! close code RFC 6455 names for what it did, and only after what its valid messages
//! before the bad frame earned has been sent.

mod support;

use std::io::Write;

use serde_json::json;
use support::frames::{frame, frame_with, CLOSE, TEXT};
use support::*;

fn ping_then(bad: &[u8]) -> Vec<u8> {
    let mut bytes = frame(TEXT, json!({"type": "ping"}).to_string().as_bytes());
    bytes.extend_from_slice(bad);
    bytes
}

#[test]
fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.ws.get_mut()
        .write_all(&frame(
            TEXT,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        ))
        .unwrap();
    let end = c.closed();
    assert!(end.starts_with("close 1007"), "{end}");
}

#[test]
fn a_bad_frame_after_a_valid_message_in_one_read_still_gets_the_reply_first() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    // RSV1 set without an extension that defines it.
    c.ws.get_mut()
        .write_all(&ping_then(&frame_with(0x80 | 0x40 | TEXT, b"x")))
        .unwrap();
    assert_eq!(c.next_event().map(|m| m["type"].clone()), Ok(json!("pong")));
    let end = c.closed();
    assert!(end.starts_with("close 1002"), "{end}");
}

#[test]
fn invalid_utf8_after_a_valid_message_in_one_read_still_gets_the_reply_first() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.ws.get_mut()
        .write_all(&ping_then(&frame(TEXT, b"\xff")))
        .unwrap();
    assert_eq!(c.next_event().map(|m| m["type"].clone()), Ok(json!("pong")));
    let end = c.closed();
    assert!(end.starts_with("close 1007"), "{end}");
}

#[test]
fn a_too_large_frame_after_a_valid_message_in_one_read_still_gets_the_reply_first() {
    let s = ServerOptions::fake()
        .arg("--max-message-bytes=1024")
        .start();
    let mut c = s.connect();
    c.ws.get_mut()
        .write_all(&ping_then(&frame(TEXT, &[b'x'; 2048])))
        .unwrap();
    assert_eq!(c.next_event().map(|m| m["type"].clone()), Ok(json!("pong")));
    let end = c.closed();
    assert!(end.starts_with("close 1009"), "{end}");
}

#[test]
fn a_close_after_a_valid_message_in_one_read_still_gets_the_reply_first() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.ws.get_mut()
        .write_all(&ping_then(&frame(CLOSE, &1000u16.to_be_bytes())))
        .unwrap();
    assert_eq!(c.next_event().map(|m| m["type"].clone()), Ok(json!("pong")));
    let end = c.closed();
    assert!(end.starts_with("close 1000"), "{end}");
}
