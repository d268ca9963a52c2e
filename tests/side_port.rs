//! The side port and the start-up checks (issue 8 item 10, issue 11): `/health` never
//! waits for `claude --version`, which runs once at start with a time limit and makes
//! `/health` report `degraded` when the CLI cannot run; warnings at start-up for
//! missing credentials and for listening beyond loopback without authentication;
//! `--log-format json`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A `claude` that never answers `--version` (it becomes `sleep 60`, so killing its pid
/// ends it), written into `dir`.
fn sleeping_claude(dir: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("claude");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `GET /health` that must be answered within `limit`: (elapsed, body).
fn health_within(addr: &str, limit: Duration) -> (Duration, Value) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect to side port");
    s.set_read_timeout(Some(limit)).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    if let Err(e) = s.read_to_string(&mut raw) {
        panic!("/health did not answer within {limit:?}: {e}");
    }
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (started.elapsed(), serde_json::from_str(body).expect("JSON"))
}

#[test]
fn health_does_not_wait_for_a_claude_that_never_answers() {
    let dir = TempDir::new("sleepy-claude");
    let s = ServerOptions {
        claude: sleeping_claude(&dir),
        args: Vec::new(),
        env: Vec::new(),
        wait_for_check: false,
    }
    .start();
    for _ in 0..3 {
        let (took, health) = health_within(&s.http_addr, Duration::from_secs(2));
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["claude"]["status"], "checking", "{health}");
    }
    // The probe is running (for 5 s): its `sleep` is the server's child.
    let server_pid = s.pid();
    assert!(eventually(WAIT, || !children_of(server_pid).is_empty()));
    // Other requests are served meanwhile.
    assert!(s.sessions().is_empty());
    // After the time limit the probe is killed and /health says why.
    let mut last = Value::Null;
    assert!(
        eventually(WAIT, || {
            last = s.get("/health").1;
            last["status"] == "degraded"
        }),
        "{last}"
    );
    assert_eq!(last["claude"]["status"], "error");
    let reason = last["reason"].as_str().unwrap();
    assert!(reason.contains("did not answer"), "{reason}");
    assert!(
        eventually(WAIT, || children_of(server_pid).is_empty()),
        "the probe was not killed"
    );
    assert!(s.logged("--claude-bin"), "{}", s.logs());
}

#[test]
fn a_missing_claude_is_reported_at_start_and_by_health() {
    let s = ServerOptions {
        claude: PathBuf::from("/no/such/dir/claude"),
        args: Vec::new(),
        env: Vec::new(),
        wait_for_check: false,
    }
    .start();
    let mut last = Value::Null;
    assert!(
        eventually(WAIT, || {
            last = s.get("/health").1;
            last["status"] == "degraded"
        }),
        "{last}"
    );
    assert!(
        last["reason"].as_str().unwrap().contains("cannot run"),
        "{last}"
    );
    assert_eq!(last["claude"]["path"], "/no/such/dir/claude");
    // The log line reaches the test through a pipe, a little after /health flips.
    assert!(
        s.logged("claude cannot run") && s.logged("--claude-bin"),
        "{}",
        s.logs()
    );
}

#[test]
fn a_runnable_claude_is_reported_ok_with_its_version() {
    let s = ServerOptions::fake().start();
    let mut last = Value::Null;
    assert!(
        eventually(WAIT, || {
            last = s.get("/health").1;
            last["claude"]["status"] == "ok"
        }),
        "{last}"
    );
    assert_eq!(last["status"], "ok");
    assert_eq!(last["claude"]["version"], "0.0.0-fake (Claude Code)");
    assert!(last.get("reason").is_none(), "{last}");
}

#[test]
fn listening_beyond_loopback_without_auth_is_warned_about() {
    let open = ServerOptions::fake().arg("--host=0.0.0.0").start();
    let guarded = ServerOptions::fake()
        .args(&["--host=0.0.0.0", "--auth-token=sesame"])
        .start();
    let local = ServerOptions::fake().start();
    for s in [&open, &guarded, &local] {
        // Start-up checks are logged before the probe answers.
        assert!(s.logged("claude at"), "{}", s.logs());
    }
    let logs = open.logs();
    assert!(
        logs.contains("beyond loopback")
            && logs.contains("--auth-token")
            && logs.contains("--jwt-secret"),
        "{logs}"
    );
    assert!(
        !guarded.logs().contains("beyond loopback"),
        "{}",
        guarded.logs()
    );
    assert!(
        !local.logs().contains("beyond loopback"),
        "{}",
        local.logs()
    );
}

#[test]
fn missing_credentials_are_warned_about() {
    // The test environment sets ANTHROPIC_API_KEY; an empty one counts as none, and the
    // server's HOME is an empty temp dir.
    let without = ServerOptions::fake().env("ANTHROPIC_API_KEY", "").start();
    let with = ServerOptions::fake().start();
    for s in [&without, &with] {
        assert!(s.logged("claude at"), "{}", s.logs());
    }
    let logs = without.logs();
    assert!(
        logs.contains("no credentials") && logs.contains("ANTHROPIC_API_KEY"),
        "{logs}"
    );
    assert!(!with.logs().contains("no credentials"), "{}", with.logs());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = ServerOptions::fake()
        .arg("--log-format=json")
        .arg(NO_REATTACH)
        .start();
    // Lines with quotes and other characters to escape: a refused origin is logged
    // with its value quoted.
    let refused = s.try_connect(&s.ws_url, &[("Origin", "https://evil.example/\"\\")]);
    assert!(refused.is_err());
    let mut c = s.connect();
    c.query("hello \"quoted\"\ttab", serde_json::json!({}));
    drop(c);
    assert!(eventually(WAIT, || s.sessions().is_empty()));
    let logs = s.logs();
    let mut levels = Vec::new();
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nall:\n{logs}"));
        for key in ["time", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} missing: {line}");
        }
        levels.push(v["level"].as_str().unwrap().to_string());
    }
    assert!(levels.iter().any(|l| l == "INFO"), "{logs}");
    assert!(logs.contains("evil.example"), "{logs}");
}

#[test]
fn health_and_ready_say_degraded_without_credentials() {
    // No key, no token, no stored login in the server's (private) HOME.
    let s = ServerOptions::fake().env("ANTHROPIC_API_KEY", "").start();
    let (status, health) = s.get("/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["claude"]["status"], "ok", "{health}");
    let reason = health["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("no credentials") && reason.contains("ANTHROPIC_API_KEY"),
        "{reason}"
    );
    let (status, ready) = s.get("/ready");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["reason"], reason, "{ready}");
    // A stored login counts: the CLI's config dir under HOME.
    let dir = s.home.subdir(".claude");
    std::fs::write(dir.join(".credentials.json"), "{}").unwrap();
    let (_, health) = s.get("/health");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(s.get("/ready").0, 200);
}
