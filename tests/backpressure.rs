//! Back-pressure toward the client (issue 8, item 1): a client that sends but does not
//! read must not make the server queue replies without bound, and one that keeps its
//! backlog full is dropped after the stall timeout, even if it reads a trickle.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use support::frames::{frame, set_receive_buffer, BINARY, PING, TEXT};
use support::*;

/// About 64 KiB of what earns replies: WebSocket pings, batches of 100 `ping`
/// messages, garbage text, binary frames.
fn flood_bytes() -> Vec<u8> {
    let batch = json!({
        "type": "batch",
        "messages": vec![json!({"type": "ping"}); 100],
    })
    .to_string();
    let mut cycle = frame(PING, &[b'p'; 125]);
    for _ in 0..10 {
        cycle.extend(frame(TEXT, batch.as_bytes()));
    }
    cycle.extend(frame(TEXT, b"x"));
    cycle.extend(frame(BINARY, b"x"));
    cycle.repeat(64 * 1024 / cycle.len() + 1)
}

/// Write `bytes` over and over until `until`, whatever the server takes (frames stay
/// whole across partial writes).
fn flood(mut tcp: TcpStream, bytes: Vec<u8>, until: Instant) -> u64 {
    tcp.set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut at, mut sent) = (0, 0u64);
    while Instant::now() < until {
        match tcp.write(&bytes[at..]) {
            Ok(n) => {
                at = (at + n) % bytes.len();
                sent += n as u64;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    sent
}

#[test]
fn a_client_that_sends_but_never_reads_keeps_memory_bounded() {
    let s = ServerOptions::fake().arg("--stall-timeout-secs=60").start();
    let flooder = s.connect();
    let tcp = flooder.ws.get_ref().try_clone().unwrap();
    set_receive_buffer(&tcp, 4096);
    let mut other = s.connect();
    let before = rss_kib(s.pid());
    let until = Instant::now() + Duration::from_secs(8);
    let writer = thread::spawn(move || flood(tcp, flood_bytes(), until));
    let (mut peak, mut slowest) = (before, Duration::ZERO);
    while Instant::now() < until {
        let t = Instant::now();
        other.send(json!({"type": "ping"}));
        assert_eq!(other.recv()["type"], "pong");
        slowest = slowest.max(t.elapsed());
        peak = peak.max(rss_kib(s.pid()));
        thread::sleep(Duration::from_millis(100));
    }
    let sent = writer.join().unwrap();
    peak = peak.max(rss_kib(s.pid()));
    assert!(sent > 0);
    assert!(
        peak - before < 64 * 1024,
        "server RSS grew {} KiB while a client sent {sent} bytes and read none",
        peak - before
    );
    assert!(
        slowest < Duration::from_millis(500),
        "another session's ping took {slowest:?}"
    );
    drop(flooder);
}

#[test]
fn a_client_that_reads_a_trickle_of_a_full_backlog_is_dropped() {
    let s = ServerOptions::fake()
        .arg("--stall-timeout-secs=1")
        .arg("--ping-interval-secs=300")
        .start();
    let mut c = s.connect();
    // 2,000 lines of 64 KiB: far more than socket buffers and the high-water mark.
    c.send(json!({"type": "query", "prompt": "flood 2000 65536"}));
    let mut tcp = c.ws.get_ref().try_clone().unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // 64 KiB every 20 ms: the server's sends keep making progress, yet the client
    // reads far slower than the child writes.
    let mut buf = vec![0; 64 * 1024];
    let t0 = Instant::now();
    let mut read = 0;
    let dropped = loop {
        match tcp.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => read += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
        if s.sessions().is_empty() {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break false;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        dropped,
        "a client reading a trickle ({read} bytes in {:?}) was not dropped",
        t0.elapsed()
    );
    assert!(s.logged("disconnecting"), "{}", s.logs());
}
