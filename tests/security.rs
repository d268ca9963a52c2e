//! Security and abuse resistance, each rule attacked through a real WebSocket or HTTP
//! client against the real server binary. Where a request is refused, the test also
//! checks that no child was spawned (the stand-in CLI is the child; /health counts
//! children and the server's process tree shows them).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use tungstenite::Message;

const TOKEN: &str = "correct-horse-battery-staple";
const SECRET: &str = "jwt-signing-secret";

fn jwt(secret: &str, claims: Value) -> String {
    support::jwt::make_jwt(secret.as_bytes(), &claims.to_string())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Run the stand-in's `dump-env` with `options`: its report and its argv.
fn dump_env(c: &mut Client, options: Value) -> (Value, Vec<String>) {
    let msgs = c.query("dump-env", options);
    let dump: Value = serde_json::from_str(assistant_text(&msgs).trim()).unwrap();
    let argv = dump["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (dump, argv)
}

/// No `claude` child exists under the server.
fn assert_no_child(s: &TestServer) {
    assert!(children_of(s.pid()).is_empty(), "a child was spawned");
    assert_eq!(s.get("/health").1["children"], 0);
}

fn assert_refused(r: Result<Client, String>, status: &str) {
    match r {
        Ok(_) => panic!("connection was accepted; expected HTTP {status}"),
        Err(e) => assert!(e.starts_with(&format!("HTTP {status}")), "{e}"),
    }
}

fn authed() -> TestServer {
    ServerOptions::fake()
        .arg(&format!("--auth-token={TOKEN}"))
        .env("CLAUDE_WS_JWT_SECRET", SECRET)
        .start()
}

#[test]
fn missing_wrong_and_near_miss_tokens_are_refused_before_any_session() {
    let s = authed();
    let url = s.ws_url.clone();
    assert_refused(s.try_connect(&url, &[]), "401");
    assert_refused(
        s.try_connect(&url, &[("Authorization", "Bearer wrong")]),
        "401",
    );
    let mut near = TOKEN.to_string();
    near.pop();
    near.push('f');
    assert_refused(
        s.try_connect(&url, &[("Authorization", &format!("Bearer {near}"))]),
        "401",
    );
    assert_refused(s.try_connect(&format!("{url}?token={near}"), &[]), "401");
    assert_refused(
        s.try_connect(&format!("{url}?token={}x", TOKEN), &[]),
        "401",
    );
    assert_refused(
        s.try_connect(&url, &[("Authorization", &format!("Basic {TOKEN}"))]),
        "401",
    );
    let (status, _) = s.get("/sessions");
    assert_eq!(status, 401);
    assert_no_child(&s);
    assert!(!s.logs().contains(TOKEN), "a token reached the log");
    assert!(
        !s.logs().contains(&near),
        "a presented token reached the log"
    );
}

#[test]
fn each_token_carrier_works() {
    let s = authed();
    let url = s.ws_url.clone();
    let mut c = s
        .try_connect(&url, &[("Authorization", &format!("Bearer {TOKEN}"))])
        .unwrap();
    assert_eq!(c.recv()["type"], "connection_established");
    let mut c2 = s.try_connect(&format!("{url}?token={TOKEN}"), &[]).unwrap();
    assert_eq!(c2.recv()["type"], "connection_established");
    // Browsers: the token as a subprotocol entry; the server answers with a protocol
    // the client offered (its own name, not the token, when offered).
    let mut c3 = s
        .try_connect(
            &url,
            &[(
                "Sec-WebSocket-Protocol",
                &format!("claude-ws, bearer.{TOKEN}"),
            )],
        )
        .unwrap();
    assert_eq!(c3.protocol.as_deref(), Some("claude-ws"));
    // Listed once its session runs (the handshake's end alone does not say so).
    assert_eq!(c3.recv()["type"], "connection_established");
    let (status, rows) = s.get_with(
        "/sessions",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(status, 200);
    assert_eq!(rows.as_array().unwrap().len(), 3);
    let (status, _) = s.get(&format!("/sessions?token={TOKEN}"));
    assert_eq!(status, 200);
    // /health needs nothing and tells nothing secret.
    let (status, health) = s.get("/health");
    assert_eq!(status, 200);
    assert!(!health.to_string().contains(TOKEN));
    assert!(!s.logs().contains(TOKEN), "a token reached the log");
}

#[test]
fn jwt_is_checked_for_signature_and_expiry_and_names_the_user() {
    let s = authed();
    let url = s.ws_url.clone();
    let good = jwt(SECRET, json!({"sub": "ana", "exp": now() + 600}));
    let expired = jwt(SECRET, json!({"sub": "ana", "exp": now() - 10}));
    let forged = jwt(
        "not-the-secret",
        json!({"sub": "mallory", "exp": now() + 600}),
    );
    let no_exp = jwt(SECRET, json!({"sub": "ana"}));
    for bad in [&expired, &forged, &no_exp] {
        assert_refused(
            s.try_connect(&url, &[("Authorization", &format!("Bearer {bad}"))]),
            "401",
        );
    }
    let mut c = s
        .try_connect(&url, &[("Authorization", &format!("Bearer {good}"))])
        .unwrap();
    assert_eq!(c.recv()["type"], "connection_established");
    let (_, rows) = s.get_with("/sessions", &[("Authorization", &format!("Bearer {good}"))]);
    assert_eq!(rows[0]["user"], "ana");
    assert!(!s.logs().contains(&good));
}

#[test]
fn hostile_origin_and_host_are_refused() {
    let s = ServerOptions::fake()
        .arg("--allowed-origins=https://app.example.com")
        .start();
    let url = s.ws_url.clone();
    let own = format!("http://{}", s.ws_authority());
    assert_refused(
        s.try_connect(&url, &[("Origin", "https://evil.example")]),
        "403",
    );
    assert_refused(s.try_connect(&url, &[("Origin", "null")]), "403");
    // DNS rebinding: a page on evil.example resolved to 127.0.0.1.
    assert_refused(
        s.try_connect(
            &url,
            &[
                ("Host", "evil.example:8000"),
                ("Origin", "http://evil.example:8000"),
            ],
        ),
        "403",
    );
    assert_refused(s.try_connect(&url, &[("Host", "evil.example")]), "403");
    assert_no_child(&s);
    assert!(s.try_connect(&url, &[("Origin", &own)]).is_ok());
    assert!(s
        .try_connect(&url, &[("Origin", "https://app.example.com")])
        .is_ok());
    assert!(
        s.try_connect(&url, &[]).is_ok(),
        "no Origin (wscat, scripts)"
    );
}

#[test]
fn cwd_escapes_are_refused_without_spawning() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    let root = s.workspace.clone();
    std::fs::create_dir_all(root.join("inside")).unwrap();
    let sibling = root.parent().unwrap().join("work-evil");
    std::fs::create_dir_all(&sibling).unwrap();
    std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
    let long = format!("{}/{}", root.display(), "a/".repeat(2048));
    let cases = [
        "..".to_string(),
        "inside/../..".to_string(),
        "/etc".to_string(),
        sibling.display().to_string(),
        "escape".to_string(),
        "escape/etc".to_string(),
        "inside\u{0}".to_string(),
        long,
        "does-not-exist".to_string(),
    ];
    for cwd in &cases {
        c.send(json!({"type": "query", "prompt": "hi", "options": {"cwd": cwd}}));
        let e = c.recv();
        assert_eq!(e["type"], "error", "{cwd}");
        assert_eq!(e["data"]["code"], "cwd_not_allowed", "{cwd}: {e}");
    }
    assert_no_child(&s);
    // Inside is fine, relative or absolute.
    let (dump, _) = dump_env(&mut c, json!({"cwd": "inside"}));
    assert_eq!(
        dump["cwd"],
        std::fs::canonicalize(root.join("inside"))
            .unwrap()
            .display()
            .to_string()
    );
}

#[test]
fn permission_modes_and_flag_lookalikes() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    for (options, code) in [
        (
            json!({"permission_mode": "bypassPermissions"}),
            "permission_mode_not_allowed",
        ),
        (
            json!({"permission_mode": "dontAsk"}),
            "permission_mode_not_allowed",
        ),
        (
            json!({"permission_mode": "auto"}),
            "permission_mode_not_allowed",
        ),
        (json!({"permission_mode": "sudo"}), "invalid_option"),
        (
            json!({"model": "--dangerously-skip-permissions"}),
            "invalid_option",
        ),
        (json!({"resume": "--mcp-config=/tmp/x"}), "invalid_option"),
        (
            json!({"allowed_tools": ["Read", "--add-dir"]}),
            "invalid_option",
        ),
        (json!({"disallowed_tools": ["-x"]}), "invalid_option"),
    ] {
        c.send(json!({"type": "query", "prompt": "hi", "options": options}));
        let e = c.recv();
        assert_eq!(e["data"]["code"], code, "{options}: {e}");
    }
    assert_no_child(&s);
    // Free text that starts with dashes is passed as one `--flag=value` argument.
    let (_, argv) = dump_env(
        &mut c,
        json!({"system_prompt": "--be brief", "permission_mode": "plan"}),
    );
    assert!(
        argv.iter().any(|a| a == "--system-prompt=--be brief"),
        "{argv:?}"
    );
    assert!(
        argv.iter().any(|a| a == "--permission-mode=plan"),
        "{argv:?}"
    );
    // The operator may open bypassPermissions.
    let s2 = ServerOptions::fake()
        .arg("--allowed-permission-modes=default,bypassPermissions")
        .start();
    let mut c2 = s2.connect();
    let msgs = c2.query("hi", json!({"permission_mode": "bypassPermissions"}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn child_environment_is_the_allow_list_and_operator_tools_are_always_disallowed() {
    let s = ServerOptions::fake()
        .env("AWS_SECRET_ACCESS_KEY", "server-secret")
        .env("CLAUDECODE", "1")
        .env("EXTRA_VAR", "passed")
        .env("OTHER_VAR", "kept-back")
        .env("CLAUDE_WS_AUTH_TOKEN", TOKEN)
        .args(&["--pass-env=EXTRA_VAR", "--disallowed-tools=Bash,WebFetch"])
        // The server's own allow-list, unsandboxed: a sandbox adds TMPDIR and PWD
        // (tests/sandbox.rs checks what a sandboxed child sees).
        .arg("--sandbox=off")
        .start();
    let mut c = s
        .try_connect(&format!("{}?token={TOKEN}", s.ws_url), &[])
        .unwrap();
    assert_eq!(c.recv()["type"], "connection_established");
    let (dump, argv) = dump_env(&mut c, json!({"disallowed_tools": ["Write"]}));
    let env = dump["env"].as_object().unwrap();
    let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            // Authentication is on: the principal's own state directory.
            "CLAUDE_CONFIG_DIR",
            "DISABLE_AUTOUPDATER",
            "DISABLE_TELEMETRY",
            "EXTRA_VAR",
            "HOME",
            "PATH",
        ],
        "child env"
    );
    let i = argv
        .iter()
        .position(|a| *a == "--disallowedTools")
        .expect("--disallowedTools passed");
    assert_eq!(&argv[i + 1..i + 4], ["Bash", "WebFetch", "Write"]);
    assert_eq!(
        &argv[1..7],
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--input-format",
            "stream-json"
        ]
    );
}

#[test]
fn a_2_mib_frame_closes_with_1009() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.send_raw(Message::text("x".repeat(2 << 20)));
    let end = c.closed();
    assert!(end.starts_with("close 1009"), "{end}");
    assert_no_child(&s);
}

#[test]
fn prompt_length_is_limited() {
    let s = ServerOptions::fake().arg("--max-prompt-bytes=1000").start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "p".repeat(1001)}));
    assert_eq!(c.recv()["data"]["code"], "invalid_field");
    assert_no_child(&s);
}

#[test]
fn a_one_byte_at_a_time_handshake_cannot_hold_a_thread() {
    let s = ServerOptions::fake()
        .arg("--handshake-timeout-secs=1")
        .start();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.ws_authority()
    );
    let mut loris = TcpStream::connect(s.ws_authority()).unwrap();
    loris.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    // Another client is served meanwhile.
    let mut other = s.connect();
    other.send(json!({"type": "ping"}));
    assert_eq!(other.recv()["type"], "pong");
    let mut cut = false;
    for b in request.bytes() {
        if loris.write_all(&[b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let mut buf = [0u8; 64];
    let n = loris.read(&mut buf).unwrap_or(0);
    assert!(
        cut || n == 0 || !String::from_utf8_lossy(&buf[..n]).contains("101"),
        "slow handshake was accepted"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn rate_limit_trips_and_recovers() {
    let s = ServerOptions::fake().arg("--rate-limit=2/1.5").start();
    let mut c = s.connect();
    c.query("one", json!({}));
    c.query("two", json!({}));
    c.send(json!({"type": "query", "prompt": "three"}));
    let e = c.recv();
    assert_eq!(e["data"]["code"], "rate_limited", "{e}");
    assert!(e["data"]["error"].as_str().unwrap().contains("retry in"));
    // Per peer too: a new connection from the same address does not reset it.
    let mut c2 = s.connect();
    c2.send(json!({"type": "query", "prompt": "three"}));
    assert_eq!(c2.recv()["data"]["code"], "rate_limited");
    std::thread::sleep(Duration::from_millis(1600));
    let msgs = c.query("four", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

/// Issue 10: with every place taken, a query waits its turn instead of failing, and
/// an idle child gives its place up to it.
#[test]
fn a_query_waits_for_a_place_and_an_idle_child_makes_room() {
    let s = ServerOptions::fake().args(&["--max-running=1"]).start();
    let mut a = s.connect();
    let mut b = s.connect();
    a.send(json!({"type": "query", "prompt": "slow 20 50"}));
    a.until("query_start");
    b.send(json!({"type": "query", "prompt": "hi"}));
    assert_eq!(b.recv()["type"], "query_start");
    let q = b.recv();
    assert_eq!(q["type"], "query_queued", "{q}");
    assert_eq!(q["data"]["position"], 1);
    assert_eq!(children_of(s.pid()).len(), 1, "b spawned a child");
    assert_eq!(s.get("/health").1["queued_queries"], 1);
    // a's query ends; its child, idle now, is stopped to make room for b's.
    a.until("query_end");
    let msgs = b.until("query_end");
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(assistant_text(&msgs).contains("Echo: hi"));
    assert!(s.logged("a queued query needs its place"), "{}", s.logs());
    assert!(children_of(s.pid()).len() <= 1);
    // a's conversation resumes in a new child when it asks again (b's goes idle).
    let msgs = a.query("again", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
}

#[test]
fn a_queued_query_can_be_interrupted_or_time_out() {
    let s = ServerOptions::fake()
        .args(&["--max-running=1", "--queue-timeout-secs=1"])
        .start();
    let mut a = s.connect();
    let mut b = s.connect();
    a.send(json!({"type": "query", "prompt": "slow 200 50"}));
    a.until("query_start");
    b.send(json!({"type": "query", "prompt": "hi"}));
    b.until("query_queued");
    b.send(json!({"type": "interrupt"}));
    let msgs = b.until("query_end");
    assert_eq!(
        only(&msgs, "query_end")["outcome"],
        "interrupted",
        "{msgs:?}"
    );
    assert_eq!(s.get("/health").1["queued_queries"], 0);
    // Waiting past --queue-timeout-secs: server_busy naming the flags, then the end.
    b.send(json!({"type": "query", "prompt": "hi"}));
    b.until("query_queued");
    let msgs = b.until("query_end");
    let e = only(&msgs, "error");
    assert_eq!(e["code"], "server_busy", "{msgs:?}");
    assert!(
        e["error"].as_str().unwrap().contains("--max-running"),
        "{e}"
    );
    assert_eq!(only(&msgs, "query_end")["outcome"], "error");
    a.send(json!({"type": "interrupt"}));
    a.until("query_end");
}

#[test]
fn sessions_per_peer_are_limited() {
    let s = ServerOptions::fake()
        .arg("--max-sessions-per-peer=2")
        .start();
    let _a = s.connect();
    let _b = s.connect();
    assert_refused(s.try_connect(&s.ws_url, &[]), "429");
}

#[test]
fn a_non_reading_client_with_a_flooding_child_keeps_memory_bounded() {
    let s = ServerOptions::fake().arg("--stall-timeout-secs=60").start();
    let mut flooder = s.connect();
    let before = rss_kib(s.pid());
    // 4,000 lines of 64 KiB: 256 MiB the client never reads.
    flooder.send(json!({"type": "query", "prompt": "flood 4000 65536"}));
    let mut peak = before;
    let mut other = s.connect();
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(3) {
        let q = Instant::now();
        other.send(json!({"type": "ping"}));
        assert_eq!(other.recv()["type"], "pong");
        slowest = slowest.max(q.elapsed());
        peak = peak.max(rss_kib(s.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Generous bounds: no timing beyond "not stuck", memory far below the 256 MiB.
    assert!(
        slowest < Duration::from_secs(2),
        "other session slowed: {slowest:?}"
    );
    assert!(
        peak - before < 64 * 1024,
        "server RSS grew {} KiB while a client read nothing",
        peak - before
    );
    drop(flooder);
}

#[test]
fn client_strings_cannot_forge_log_lines() {
    let s = ServerOptions::fake().start();
    let mut c = s.connect();
    c.send(json!({"type": "query\n[2026-01-01T00:00:00Z ERROR forged] pwned", "prompt": "x"}));
    assert_eq!(c.recv()["data"]["code"], "unknown_type");
    c.query(
        "line one\n[2026-01-01T00:00:00Z ERROR forged] pwned",
        json!({}),
    );
    assert!(eventually(WAIT, || s.logs().contains("prompt:")));
    for line in s.logs().lines() {
        assert!(!line.starts_with("[2026-01-01"), "forged line: {line}");
    }
}

#[test]
fn sockets_that_never_handshake_cannot_exhaust_threads() {
    let s = ServerOptions::fake().arg("--max-sessions=1").start();
    // max-sessions plus 64 connections may sit in their handshake; these send nothing.
    let idle: Vec<TcpStream> = (0..65)
        .map(|_| TcpStream::connect(s.ws_authority()).unwrap())
        .collect();
    assert!(
        eventually(WAIT, || {
            let mut extra = TcpStream::connect(s.ws_authority()).unwrap();
            extra.set_read_timeout(Some(WAIT)).unwrap();
            let mut answer = String::new();
            let _ = extra.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.1 503")
        }),
        "no immediate 503 for a connection beyond the cap"
    );
    drop(idle);
    // Room again once they are gone.
    assert!(eventually(WAIT, || s.try_connect(&s.ws_url, &[]).is_ok()));
}
