//! Flags and environment values (issue 8 item 6, issue 11): a bad value is refused
//! with one line that names the flag (or variable) and the accepted form, exit code 2;
//! values that would break the server (zero timeouts, counts that overflow, durations
//! too large for a deadline) are refused, or mean "off" where documented. An embedder's
//! `Config` meets the same bounds through `Server::bind`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Run the binary with `args` and `env` (nothing else in its environment): (exit
/// code, stderr). One that is still running after a few seconds accepted its flags:
/// it is killed and its code is `None`.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = TempDir::new("flags");
    let mut proc = Command::new(env!("CARGO_BIN_EXE_claude-ws"))
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run claude-ws");
    let mut code = None;
    let exited = eventually(Duration::from_secs(5), || match proc.try_wait() {
        Ok(Some(status)) => {
            code = status.code();
            true
        }
        _ => false,
    });
    if !exited {
        let _ = proc.kill();
    }
    let out = proc.wait_with_output().expect("wait for claude-ws");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `args` are refused: exit code 2 and one line on stderr that contains every piece
/// of `names`.
fn refused(args: &[&str], env: &[(&str, &str)], names: &[&str]) {
    let (code, stderr) = run(args, env);
    assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for n in names {
        assert!(stderr.contains(n), "{args:?}: {n:?} missing from {stderr}");
    }
}

#[test]
fn numbers_out_of_range_name_the_flag_and_the_accepted_range() {
    refused(
        &["--max-sessions", "99999999999999999999999"],
        &[],
        &["--max-sessions", "from 1 to 100000"],
    );
    refused(
        &["--max-sessions=18446744073709551615"],
        &[],
        &["--max-sessions", "from 1 to 100000"],
    );
    refused(&["--max-sessions=0"], &[], &["--max-sessions", "from 1 to"]);
    refused(&["--port=x"], &[], &["--port", "0 to 65535"]);
    refused(&["--port=70000"], &[], &["--port", "0 to 65535"]);
    refused(
        &["--max-running=-1"],
        &[],
        &["--max-running", "whole number"],
    );
    refused(&["--max-prompt-bytes=0"], &[], &["--max-prompt-bytes"]);
    refused(
        &["--max-message-bytes=10"],
        &[],
        &["--max-message-bytes", "1024"],
    );
    refused(
        &[],
        &[("MAX_SESSIONS", "abc")],
        &["MAX_SESSIONS", "whole number"],
    );
    refused(
        &[],
        &[("MAX_SESSIONS_PER_PEER", "4294967296000")],
        &["MAX_SESSIONS_PER_PEER", "from 1 to"],
    );
}

#[test]
fn zero_timeouts_are_refused_and_durations_are_bounded() {
    for flag in [
        "stall-timeout-secs",
        "handshake-timeout-secs",
        "ping-interval-secs",
        "interrupt-grace-secs",
        "stop-grace-secs",
        "session-timeout-minutes",
    ] {
        refused(
            &[&format!("--{flag}=0")],
            &[],
            &[&format!("--{flag}"), "above 0"],
        );
        // Large enough that `Instant::now() + d` would panic, or beyond a year.
        for huge in ["1e30", "18446744073709551615", "inf", "NaN", "-1"] {
            refused(&[&format!("--{flag}={huge}")], &[], &[&format!("--{flag}")]);
        }
    }
    refused(
        &["--stall-timeout-secs=31536001"],
        &[],
        &["at most 31536000"],
    );
    refused(
        &["--child-idle-secs=1e30"],
        &[],
        &["--child-idle-secs", "0 (off)"],
    );
}

#[test]
fn rate_limits_origins_and_ports_are_checked() {
    refused(&["--rate-limit=5/0"], &[], &["--rate-limit", "N/SECONDS"]);
    refused(&["--rate-limit=0/10"], &[], &["--rate-limit", "N/SECONDS"]);
    refused(&["--rate-limit=5000000000/10"], &[], &["--rate-limit"]);
    refused(&["--rate-limit=5/1e30"], &[], &["--rate-limit"]);
    refused(
        &["--allowed-origins=app.example.com"],
        &[],
        &["--allowed-origins", "scheme://host[:port]"],
    );
    refused(
        &[],
        &[("ALLOWED_ORIGINS", "https://ok.example,ftp//bad")],
        &["ALLOWED_ORIGINS", "\"ftp//bad\""],
    );
    refused(
        &["--port=18000", "--http-port=18000"],
        &[],
        &["--http-port", "must differ"],
    );
    refused(
        &[],
        &[("WEBSOCKET_PORT", "18000"), ("HTTP_PORT", "18000")],
        &["HTTP_PORT"],
    );
    refused(
        &["--log-format=xml"],
        &[],
        &["--log-format", "text or json"],
    );
}

/// Values at the edges that are fine start a server: both ports 0, `--child-idle-secs
/// 0` (off), origins with ports or `*`, the largest counts and durations.
#[test]
fn zero_child_idle_is_off_and_good_values_start() {
    let s = ServerOptions::fake()
        .args(&[
            "--child-idle-secs=0",
            "--rate-limit=5/0.5",
            "--allowed-origins=https://a.example:8443,http://[::1]:3000,*",
            "--max-sessions=100000",
            "--stall-timeout-secs=31536000",
        ])
        .start();
    let (status, _) = s.get("/health");
    assert_eq!(status, 200);
}

#[test]
fn an_embedders_config_meets_the_same_bounds() {
    use claude_ws::{Config, Server};
    let base = || {
        let mut c = Config::default();
        c.port = 0;
        c.http_port = 0;
        c
    };
    let refused = |c: Config, field: &str| match Server::bind(c) {
        Ok(_) => panic!("{field}: accepted"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    };
    let mut c = base();
    c.max_sessions = usize::MAX; // `max_sessions * 4` and `+ 64` would overflow
    refused(c, "max_sessions");
    let mut c = base();
    c.timeouts.stall_timeout = Duration::ZERO;
    refused(c, "stall_timeout");
    let mut c = base();
    c.timeouts.handshake_timeout = Duration::MAX; // `Instant::now() + d` would panic
    refused(c, "handshake_timeout");
    let mut c = base();
    c.timeouts.child_idle = Some(Duration::ZERO);
    refused(c, "child_idle");
    let mut c = base();
    c.rate_limit = (5, Duration::ZERO);
    refused(c, "rate_limit");
    let mut c = base();
    c.max_prompt_bytes = 0;
    refused(c, "max_prompt_bytes");
    let mut c = base();
    c.auth_token = Some(String::new());
    refused(c, "auth_token");
    let mut c = base();
    c.allowed_origins = vec!["example.com".into()];
    refused(c, "allowed_origins");
    let mut c = base();
    c.port = 18001;
    c.http_port = 18001;
    refused(c, "http_port");
}
