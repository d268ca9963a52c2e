//! Embedding: another Rust program builds the server from a `Config`, runs it on a
//! thread of its own and shuts it down from another.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[test]
fn a_program_can_embed_run_and_stop_the_server() {
    let home = TempDir::new("embed");
    let mut config = claude_ws::Config::default();
    config.port = 0;
    config.http_port = 0;
    config.claude_bin = fake_claude();
    config.workspace_roots = vec![home.path().to_path_buf()];
    let server = claude_ws::Server::bind(config).expect("bind");
    let ws_addr = server.ws_addr();
    assert!(server
        .ready_line()
        .starts_with(&format!("ready ws=ws://{ws_addr}/ws http=")));
    let handle = server.handle();
    let running = std::thread::spawn(move || server.run());

    let tcp = TcpStream::connect(ws_addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{ws_addr}/ws"), tcp).expect("handshake");
    let mut c = Client {
        ws,
        session_id: String::new(),
        capabilities: serde_json::Value::Null,
        protocol: None,
    };
    assert_eq!(c.recv()["type"], "connection_established");
    let msgs = c.query("hello from the embedder", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: hello from the embedder"));

    let started = Instant::now();
    handle.shutdown();
    let end = c.closed();
    assert!(end.starts_with("close 1001"), "{end}");
    running.join().expect("run returns after shutdown");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(TcpStream::connect(ws_addr).is_err(), "still listening");
    // Its child is gone with it.
    assert!(children_of(std::process::id())
        .iter()
        .all(
            |pid| !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("fake-claude")
        ));
}
