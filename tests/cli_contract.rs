//! Contract tests for the real Claude Code CLI, driven directly (no server) against
//! the scripted Messages API: they prove the test support works and pin the CLI
//! behaviour the server relies on. They need the pinned CLI: run
//! scripts/install-claude.sh (or set CLAUDE_WS_TEST_CLAUDE); without it they fail.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/mock_api.rs"]
mod mock_api;

use cli::TempDir;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use mock_api::MockApi;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for any single wait on the CLI (startup is ~0.5 s; turns are short).
const WAIT: Duration = Duration::from_secs(30);

/// A running real CLI in stream-json mode. Dropping it kills its whole process group
/// and reaps it, so a failed assertion never leaves a process behind.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// Every stdout line read so far, for failure messages.
    seen: Vec<Value>,
}

impl Cli {
    /// Starts the CLI in `cwd` with a private `home`, talking to `api`, and sends
    /// `initialize` (as the SDKs do).
    fn start(api: &MockApi, home: &Path, cwd: &Path, extra_args: &[&str]) -> Cli {
        let mut child = Command::new(cli::real_claude())
            .args(cli::STREAM_JSON_ARGS)
            .args(extra_args)
            .env_clear()
            .envs(cli::cli_env(home, &api.url()))
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so Drop can kill anything it started too.
            .process_group(0)
            .spawn()
            .expect("cannot start the claude CLI");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"type": "<not json>", "line": line}));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
        });
        let mut cli = Cli {
            stdin: child.stdin.take(),
            child,
            stdout: rx,
            stderr: stderr_text,
            seen: Vec::new(),
        };
        cli.send(&json!({"type": "control_request", "request_id": "req_init",
                         "request": {"subtype": "initialize", "hooks": null}}));
        cli
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        let mut line = message.to_string();
        line.push('\n');
        if let Err(e) = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            self.fail(&format!("cannot write to the CLI's stdin: {e}"));
        }
    }

    fn prompt(&mut self, text: &str) {
        self.send(
            &json!({"type": "user", "message": {"role": "user", "content": text},
                          "parent_tool_use_id": null, "session_id": "default"}),
        );
    }

    fn interrupt(&mut self, request_id: &str) {
        self.send(&json!({"type": "control_request", "request_id": request_id,
                          "request": {"subtype": "interrupt"}}));
    }

    /// The next stdout line, within [`WAIT`].
    fn next(&mut self) -> Value {
        match self.stdout.recv_timeout(WAIT) {
            Ok(value) => {
                self.seen.push(value.clone());
                value
            }
            Err(RecvTimeoutError::Timeout) => self.fail("no stdout line within 30 s"),
            Err(RecvTimeoutError::Disconnected) => self.fail("stdout closed"),
        }
    }

    /// Lines up to and including the next `result`, skipping `control_response`s to
    /// `initialize` and `system` lines other than `init`.
    fn turn(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let line = self.next();
            let skip = (kind(&line) == "control_response"
                && line.pointer("/response/request_id") == Some(&json!("req_init")))
                || (kind(&line) == "system" && line["subtype"] != "init");
            if skip {
                continue;
            }
            let done = kind(&line) == "result";
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Closes stdin and waits (bounded) for the process to exit on its own.
    fn close_and_wait(&mut self) -> ExitStatus {
        self.stdin = None;
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => self.fail("did not exit within 30 s of stdin closing"),
                Err(e) => self.fail(&format!("cannot wait for the CLI: {e}")),
            }
        }
    }

    /// Panics with `why`, the stdout lines seen and the stderr so far.
    fn fail(&self, why: &str) -> ! {
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let seen: Vec<String> = self.seen.iter().map(|v| abbreviate(v, 300)).collect();
        panic!(
            "{why}\n--- stdout lines seen:\n{}\n--- stderr:\n{stderr}",
            seen.join("\n")
        );
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the group we created at spawn; no memory involved.
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kind(line: &Value) -> &str {
    line["type"].as_str().unwrap_or_default()
}

fn abbreviate(value: &Value, max: usize) -> String {
    let text = value.to_string();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The text of an `assistant` line's text blocks.
fn assistant_text(line: &Value) -> String {
    line.pointer("/message/content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

fn of_kind<'a>(lines: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| kind(l) == wanted).collect()
}

fn brief(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| abbreviate(l, 200))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `cond` every 10 ms for up to [`WAIT`].
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fresh dirs, the mock API and a started CLI. Field order is drop order: the CLI is
/// killed before the mock stops and the dirs go.
struct Setup {
    cli: Cli,
    api: MockApi,
    cwd: std::path::PathBuf,
    home: std::path::PathBuf,
    dir: TempDir,
}

fn setup(label: &str, extra_args: &[&str]) -> Setup {
    let dir = TempDir::new(label);
    let home = dir.subdir("home");
    let cwd = dir.subdir("work");
    let api = MockApi::start();
    let cli = Cli::start(&api, &home, &cwd, extra_args);
    Setup {
        cli,
        api,
        cwd,
        home,
        dir,
    }
}

#[test]
fn hello_gives_init_assistant_and_success_result() {
    let mut s = setup("hello", &[]);
    s.cli.prompt("hello");
    let lines = s.cli.turn();
    let kinds: Vec<&str> = lines.iter().map(kind).collect();
    assert_eq!(
        kinds,
        ["system", "assistant", "result"],
        "{}",
        brief(&lines)
    );

    let init = &lines[0];
    assert_eq!(init["subtype"], "init");
    let session_id = init["session_id"].as_str().expect("init has a session_id");
    assert_eq!(session_id.len(), 36, "a UUID: {session_id}");
    let init_cwd = init["cwd"].as_str().expect("init has a cwd");
    assert_eq!(
        Path::new(init_cwd).canonicalize().expect("init cwd exists"),
        s.cwd.canonicalize().expect("test cwd exists")
    );
    assert_eq!(init["permissionMode"], "default");
    assert!(init["tools"]
        .as_array()
        .is_some_and(|t| t.contains(&json!("Write"))));

    assert_eq!(assistant_text(&lines[1]), "Echo: hello ");
    let result = &lines[2];
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Echo: hello ");
    assert_eq!(result["num_turns"], 1);
    assert_eq!(result["session_id"], session_id);
    for field in ["duration_ms", "duration_api_ms", "total_cost_usd", "usage"] {
        assert!(!result[field].is_null(), "result lacks {field}");
    }

    assert_eq!(s.api.user_texts(), ["hello"]);
    let status = s.cli.close_and_wait();
    assert!(
        status.success(),
        "closing stdin ends the CLI cleanly: {status}"
    );
}

#[test]
fn write_tool_creates_the_file() {
    let mut s = setup(
        "write",
        &[
            "--allowedTools",
            "Write",
            "--permission-mode",
            "acceptEdits",
        ],
    );
    let target = s.cwd.join("hello.txt");
    s.cli
        .prompt(&format!("write {} hello from the mock", target.display()));
    let lines = s.cli.turn();

    let tool_use = lines
        .iter()
        .filter(|l| kind(l) == "assistant")
        .flat_map(|l| {
            l["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|b| b["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use:\n{}", brief(&lines)));
    assert_eq!(tool_use["name"], "Write");
    let tool_result = of_kind(&lines, "user")
        .into_iter()
        .flat_map(|l| {
            l["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|b| b["type"] == "tool_result")
        .unwrap_or_else(|| panic!("no tool_result:\n{}", brief(&lines)));
    assert_eq!(tool_result["tool_use_id"], tool_use["id"]);
    assert_ne!(tool_result["is_error"], true, "{tool_result}");

    let result = lines.last().expect("turn() ends with a result");
    assert_eq!(result["subtype"], "success", "{}", brief(&lines));
    assert_eq!(result["num_turns"], 2);
    assert!(
        result["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("Done: File created successfully")),
        "{result}"
    );
    let written = std::fs::read_to_string(&target).expect("the Write tool created the file");
    assert_eq!(written, "hello from the mock");
    assert_eq!(s.api.requests().len(), 2, "one API call per model step");
}

#[test]
fn recall_sees_every_prompt_of_the_process() {
    let mut s = setup("recall", &[]);
    s.cli.prompt("first prompt");
    s.cli.turn();
    s.cli.prompt("second prompt");
    s.cli.turn();
    s.cli.prompt("recall");
    let lines = s.cli.turn();
    let result = lines.last().expect("turn() ends with a result");
    assert_eq!(
        result["result"],
        "History: first prompt | second prompt | recall",
        "{}",
        brief(&lines)
    );
    assert_eq!(
        s.api.user_texts(),
        ["first prompt", "second prompt", "recall"]
    );
}

#[test]
fn interrupt_ends_the_turn_and_the_process_takes_the_next_prompt() {
    let mut s = setup("interrupt", &[]);
    s.cli.prompt("slow 50");
    // The CLI prints nothing while the reply streams: wait for the API call instead,
    // then let a few deltas arrive.
    wait_for("the API request", || !s.api.requests().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    s.cli.interrupt("req_stop");
    let lines = s.cli.turn();
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "a 5 s reply ended {took:?} after the interrupt"
    );

    // Observed order: init, control_response, partial assistant, user marker, result.
    let kinds: Vec<&str> = lines.iter().map(kind).collect();
    assert_eq!(
        kinds,
        ["system", "control_response", "assistant", "user", "result"],
        "{}",
        brief(&lines)
    );
    assert_eq!(lines[1]["response"]["subtype"], "success");
    assert_eq!(lines[1]["response"]["request_id"], "req_stop");
    assert!(
        assistant_text(&lines[2]).starts_with("word0 "),
        "the partial reply is kept: {}",
        lines[2]
    );
    assert_eq!(
        lines[3]["message"]["content"][0]["text"],
        "[Request interrupted by user]"
    );
    let result = &lines[4];
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(result["is_error"], true);

    s.cli.prompt("hello again");
    let lines = s.cli.turn();
    let result = lines.last().expect("turn() ends with a result");
    assert_eq!(result["subtype"], "success", "{}", brief(&lines));
    assert_eq!(result["result"], "Echo: hello again ");
    // The interrupted prompt stays in the conversation.
    assert_eq!(s.api.user_texts(), ["slow 50", "hello again"]);
}

/// Not one result per prompt: prompts written while a turn runs are merged (joined
/// by "\n") into ONE follow-up turn with one result.
#[test]
fn prompts_sent_during_a_turn_are_merged_into_one_turn() {
    let mut s = setup("queued", &[]);
    s.cli.prompt("slow 10 100");
    wait_for("the API request", || !s.api.requests().is_empty());
    s.cli.prompt("queued one");
    std::thread::sleep(Duration::from_millis(200));
    s.cli.prompt("queued two");
    let first = s.cli.turn();
    let result = first.last().expect("turn() ends with a result");
    assert!(
        result["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("word0 ")),
        "{}",
        brief(&first)
    );
    let second = s.cli.turn();
    let result = second.last().expect("turn() ends with a result");
    assert_eq!(
        result["result"],
        "Echo: queued one\nqueued two ",
        "{}",
        brief(&second)
    );
    // Nothing else is pending: closing stdin now ends the process without more output.
    let status = s.cli.close_and_wait();
    assert!(status.success(), "{status}");
    let mut extra = Vec::new();
    while let Ok(line) = s.cli.stdout.recv_timeout(WAIT) {
        extra.push(line);
    }
    assert!(
        of_kind(&extra, "result").is_empty(),
        "no third result: {}",
        brief(&extra)
    );
}

/// `--resume <session_id>` in a new process (same HOME and cwd) continues the
/// conversation under the same session id; from another cwd the session is not found.
#[test]
fn resume_continues_the_session_in_a_new_process() {
    let mut s = setup("resume", &[]);
    s.cli.prompt("remember me");
    let lines = s.cli.turn();
    let session_id = lines.last().expect("turn() ends with a result")["session_id"]
        .as_str()
        .expect("result has a session_id")
        .to_string();
    assert!(s.cli.close_and_wait().success());

    let mut resumed = Cli::start(&s.api, &s.home, &s.cwd, &["--resume", &session_id]);
    resumed.prompt("recall");
    let lines = resumed.turn();
    assert_eq!(
        lines[0]["session_id"],
        session_id.as_str(),
        "{}",
        brief(&lines)
    );
    let result = lines.last().expect("turn() ends with a result");
    assert_eq!(result["result"], "History: remember me | recall");
    assert_eq!(result["session_id"], session_id.as_str());
    assert!(resumed.close_and_wait().success());

    let elsewhere = s.dir.subdir("elsewhere");
    // From another cwd the versions differ: 2.1.197 fails at startup, without waiting
    // for a prompt; 2.1.332 finds the conversation under any project and goes on.
    // Either way the answer is one `result` (docs/cli-versions.md).
    let mut lost = Cli::start(&s.api, &s.home, &elsewhere, &["--resume", &session_id]);
    lost.prompt("recall again");
    let lines = lost.turn();
    let result = lines.last().expect("turn() ends with a result");
    if result["subtype"] == "success" {
        assert_eq!(
            result["result"],
            "History: remember me | recall | recall again"
        );
        assert!(lost.close_and_wait().success());
        return;
    }
    assert_eq!(
        result["subtype"],
        "error_during_execution",
        "{}",
        brief(&lines)
    );
    assert_eq!(result["is_error"], true);
    assert_eq!(result["num_turns"], 0);
    let status = lost.close_and_wait();
    assert_eq!(status.code(), Some(1), "{status}");
    wait_for("'No conversation found' on stderr", || {
        let stderr = lost.stderr.lock().unwrap_or_else(|e| e.into_inner());
        stderr.contains("No conversation found")
    });
}
