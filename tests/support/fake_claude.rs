//! `fake-claude`: a stand-in for the `claude` CLI that speaks the same stream-json
//! protocol (`-p --output-format stream-json --verbose --input-format stream-json`),
//! for the faults and loads the real CLI will not produce on demand: crashes, hangs,
//! garbage output, stderr floods, huge lines, stray grandchildren, throughput floods.
//!
//! Protocol, as observed from the real CLI 2.1.197:
//! - `control_request` `initialize` (or any other subtype but `interrupt`) gets a
//!   `control_response` success at once.
//! - `control_request` `interrupt` gets a `control_response` success at once; a running
//!   turn then ends with a `user` "[Request interrupted by user]" line and a `result`
//!   with subtype `error_during_execution`. When idle, only the response is sent.
//! - Each turn prints a `system`/`init` line, the mode's output, then one `result`.
//! - User messages that arrive while a turn runs are queued; when it ends they are all
//!   answered by ONE more turn, their texts joined with "\n" (the real CLI merges them).
//! - On stdin EOF the current turn (and any queued messages) finish, then it exits 0,
//!   first writing the file named by `FAKE_CLAUDE_EXIT_MARKER`, if that is set.
//!
//! The first word of the prompt picks the behaviour; see [`Mode`]. Unknown flags are
//! ignored, except that `--fake-exit-at-start` makes it exit 1 at once like the real CLI
//! rejecting an option, and `--version` prints a version line and exits. `--resume ID` (or `--session-id ID`) sets the session id;
//! `--model` and `--permission-mode` are echoed in the init line. Like newer CLIs it
//! takes `--await-claim` (it ignores it), and `claim_session` moves it to the claim's `cwd`.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The option that makes the fake fail at startup like a rejected flag.
const EXIT_AT_START_FLAG: &str = "--fake-exit-at-start";
/// Pause between the lines of `slow` and `die-after` when none is given.
const SLOW_DEFAULT_MS: u64 = 100;
/// Text the real CLI records when a turn is interrupted.
const INTERRUPTED_TEXT: &str = "[Request interrupted by user]";
/// Output buffer of the bulk modes (`flood`, `replay`).
const BULK_BUFFER_BYTES: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // As the real CLI does; the server asks at start (its exit must not count as a
    // session child's, e.g. for FAKE_CLAUDE_EXIT_MARKER).
    if args.iter().any(|a| a == "--version") {
        println!("0.0.0-fake (Claude Code)");
        return;
    }
    if args.iter().any(|a| a == EXIT_AT_START_FLAG) {
        eprintln!("error: unknown option '{EXIT_AT_START_FLAG}'");
        std::process::exit(1);
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || read_stdin(&tx))
        .expect("fake-claude: cannot spawn the stdin reader");
    Fake::new(&args, rx).run();
}

/// What the stdin reader hands to the turn runner.
enum Input {
    /// A `user` message's text.
    User(String),
    /// `control_request` `interrupt` with its request id.
    Interrupt(String),
    /// Any other `control_request` (e.g. `initialize`) with its request id.
    Control(String),
    /// `claim_session` (a parked spare of newer CLIs, `--await-claim`): its request id
    /// and `cwd`, where the stand-in moves, as the real CLI does.
    Claim(String, String),
    /// A `control_response` (to one of our own control requests): its `response`.
    Response(Value),
    /// Stdin reached EOF (or failed).
    Eof,
}

/// Set by the `stubborn` mode: stdin's EOF no longer ends the process.
static STUBBORN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set by the `deaf` mode: stdin is no longer read, so the pipe fills up.
static DEAF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reads stdin lines until EOF, turning the ones that matter into [`Input`]s.
fn read_stdin(tx: &Sender<Input>) {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        if DEAF.load(std::sync::atomic::Ordering::SeqCst) {
            hang();
        }
        line.clear();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("fake-claude: ignoring a stdin line that is not JSON: {e}");
                continue;
            }
        };
        let input = match msg.get("type").and_then(Value::as_str) {
            Some("user") => match user_text(&msg) {
                Some(text) => Input::User(text),
                None => continue,
            },
            Some("control_response") => Input::Response(msg["response"].clone()),
            Some("control_request") => {
                let id = msg
                    .get("request_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                match msg.pointer("/request/subtype").and_then(Value::as_str) {
                    Some("interrupt") => Input::Interrupt(id),
                    Some("claim_session") => match msg.pointer("/request/cwd") {
                        Some(Value::String(cwd)) => Input::Claim(id, cwd.clone()),
                        _ => Input::Control(id),
                    },
                    _ => Input::Control(id),
                }
            }
            _ => continue,
        };
        if tx.send(input).is_err() {
            return;
        }
    }
    let _ = tx.send(Input::Eof);
}

/// The text of a `user` stdin message: a string content, or its `text` blocks joined.
fn user_text(msg: &Value) -> Option<String> {
    match msg.pointer("/message/content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// The behaviour of one turn, chosen by the prompt's first word.
#[derive(Debug)]
enum Mode {
    /// Anything else: one `assistant` "Echo: <prompt>".
    Echo,
    /// `slow N [ms]`: N `assistant` lines "wordI", ms apart; interruptible.
    Slow { count: u64, pause: Duration },
    /// `crash`: half a JSON line on stdout, then exit 3 (a CLI dying mid-write).
    Crash,
    /// `hang`: never answers, not even interrupts (needs a kill).
    Hang,
    /// `deaf`: like `hang`, and stops reading stdin, so the pipe to it fills up.
    Deaf,
    /// `deaf-turns`: stops reading stdin, waits until the file named by
    /// `FAKE_CLAUDE_RELEASE` exists, ends the turn, then runs one more (empty) turn, as
    /// the CLI does for input queued during a turn: with `FAKE_CLAUDE_NO_REPLAY` set (no
    /// echoes), the query ends while the pipe is full.
    DeafTurns,
    /// `ask-then-exit`: asks `can_use_tool` (as with `--permission-prompt-tool stdio`),
    /// then exits 4 without waiting for the answer.
    AskThenExit,
    /// `ask-then-cancel`: asks `can_use_tool` (`perm-1`) and calls the client tool `Fmt`
    /// (`mcp-1`), then withdraws both with `control_cancel_request` (the shape 2.1.332
    /// writes for a prompt pending at an interrupt) and ends the turn.
    AskThenCancel,
    /// `mcp-unknown`: calls an MCP tool `Nope` of the `ws` server, waits for the
    /// answer and says it.
    McpUnknown,
    /// `ignore-signals`: ignores SIGINT/SIGTERM/SIGHUP, EOF and interrupts: only SIGKILL ends it.
    IgnoreSignals,
    /// `stubborn`: an echo, but from then on SIGINT/SIGTERM/SIGHUP are ignored and stdin's
    /// EOF makes it hang instead of exit: stopping it takes the whole ladder.
    Stubborn,
    /// `garbage`: three non-JSON stdout lines, then a normal echo.
    Garbage,
    /// `stderr-flood BYTES`: that much stderr (blocking if nobody drains it), then an echo.
    StderrFlood(usize),
    /// `huge BYTES`: one `assistant` line whose text holds BYTES bytes.
    Huge(usize),
    /// `grandchild`: spawns `sleep 1000` in its own process group, says its pid, then hangs.
    Grandchild,
    /// `dump-env`: replies with its argv, environment and cwd as JSON.
    DumpEnv,
    /// `die-after N`: N `assistant` lines, then exit 2 without a result.
    DieAfter(u64),
    /// `flood N BYTES`: N `assistant` lines of about BYTES text each, as fast as possible.
    Flood { lines: u64, bytes: usize },
    /// `replay PATH`: copies a stream-json file to stdout as fast as possible
    /// (skipping blank lines and the `//` comment lines of the transcripts).
    Replay(PathBuf),
    /// `raw-result TEXT`: an echo, then TEXT as the turn's `result` line, written as it
    /// is (odd lines: a number beyond f64, a line cut short).
    RawResult(String),
}

impl Mode {
    fn parse(prompt: &str) -> Mode {
        let mut words = prompt.split_whitespace();
        let first = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
        match (first, args.len(), num(0), num(1)) {
            ("slow", 1 | 2, Some(count), ms) => Mode::Slow {
                count,
                pause: Duration::from_millis(ms.unwrap_or(SLOW_DEFAULT_MS)),
            },
            ("crash", 0, ..) => Mode::Crash,
            ("hang", 0, ..) => Mode::Hang,
            ("deaf", 0, ..) => Mode::Deaf,
            ("deaf-turns", 0, ..) => Mode::DeafTurns,
            ("ask-then-exit", 0, ..) => Mode::AskThenExit,
            ("ask-then-cancel", 0, ..) => Mode::AskThenCancel,
            ("mcp-unknown", 0, ..) => Mode::McpUnknown,
            ("ignore-signals", 0, ..) => Mode::IgnoreSignals,
            ("stubborn", 0, ..) => Mode::Stubborn,
            ("garbage", 0, ..) => Mode::Garbage,
            ("stderr-flood", 1, Some(bytes), _) => Mode::StderrFlood(bytes as usize),
            ("huge", 1, Some(bytes), _) => Mode::Huge(bytes as usize),
            ("grandchild", 0, ..) => Mode::Grandchild,
            ("dump-env", 0, ..) => Mode::DumpEnv,
            ("die-after", 1, Some(count), _) => Mode::DieAfter(count),
            ("flood", 2, Some(lines), Some(bytes)) => Mode::Flood {
                lines,
                bytes: bytes as usize,
            },
            ("replay", 1.., ..) => {
                let path = prompt.trim_start()["replay".len()..].trim();
                Mode::Replay(PathBuf::from(path))
            }
            ("raw-result", 1.., ..) => {
                Mode::RawResult(prompt.trim_start()["raw-result".len()..].trim().to_string())
            }
            _ => Mode::Echo,
        }
    }
}

/// How a turn ended.
enum Outcome {
    /// Normal end: the `result` text.
    Done(String),
    /// An interrupt arrived mid-turn.
    Interrupted,
    /// Normal end, with this text for the `result` line.
    RawResult(String),
}

/// The fake CLI: session identity, the input channel and the queue of prompts.
struct Fake {
    args: Vec<String>,
    session_id: String,
    model: String,
    permission_mode: String,
    cwd: String,
    inputs: Receiver<Input>,
    /// Prompts that arrived during the current turn.
    queued: Vec<String>,
    /// Answers to our own control requests.
    responses: Vec<Value>,
    stdin_closed: bool,
    /// Counter behind message ids and uuids.
    serial: u64,
}

impl Fake {
    fn new(args: &[String], inputs: Receiver<Input>) -> Fake {
        let flag = |name: &str| -> Option<String> {
            let prefix = format!("{name}=");
            args.iter().enumerate().find_map(|(i, a)| {
                if a == name {
                    args.get(i + 1).cloned()
                } else {
                    a.strip_prefix(&prefix).map(str::to_string)
                }
            })
        };
        let pid = std::process::id();
        Fake {
            args: args.to_vec(),
            session_id: flag("--resume")
                .or_else(|| flag("--session-id"))
                .unwrap_or_else(|| format!("fa4ec1a0-0000-4000-8000-{pid:012x}")),
            model: flag("--model").unwrap_or_else(|| "claude-fake".to_string()),
            permission_mode: flag("--permission-mode").unwrap_or_else(|| "default".to_string()),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            inputs,
            queued: Vec::new(),
            responses: Vec::new(),
            stdin_closed: false,
            serial: 0,
        }
    }

    /// Answers inputs until stdin closes and nothing is left to answer.
    fn run(mut self) -> ! {
        loop {
            if !self.queued.is_empty() {
                let prompt = std::mem::take(&mut self.queued).join("\n");
                self.turn(&prompt);
                continue;
            }
            if self.stdin_closed {
                self.exit_gracefully();
            }
            match self.inputs.recv() {
                Ok(Input::User(prompt)) => self.turn(&prompt),
                Ok(other) => {
                    self.handle_input(other);
                }
                Err(_) => self.stdin_closed = true,
            }
        }
    }

    /// Stdin closed and all work is done: leave the marker (if asked) and exit 0.
    fn exit_gracefully(&self) -> ! {
        if STUBBORN.load(std::sync::atomic::Ordering::SeqCst) {
            hang();
        }
        if let Some(marker) = std::env::var_os("FAKE_CLAUDE_EXIT_MARKER") {
            if let Err(e) = std::fs::write(&marker, format!("{}\n", std::process::id())) {
                eprintln!("fake-claude: cannot write the exit marker: {e}");
            }
        }
        std::process::exit(0)
    }

    /// Handles one input: queues a prompt, answers a control request at once, notes
    /// EOF. True if it was an interrupt (which the caller applies to its turn, if any).
    fn handle_input(&mut self, input: Input) -> bool {
        match input {
            Input::User(prompt) => self.queued.push(prompt),
            Input::Control(id) => self.control_success(&id),
            Input::Claim(id, cwd) => {
                if std::env::set_current_dir(&cwd).is_ok() {
                    self.cwd = cwd;
                }
                self.control_success(&id)
            }
            Input::Response(r) => self.responses.push(r),
            Input::Interrupt(id) => {
                self.control_success(&id);
                return true;
            }
            Input::Eof => self.stdin_closed = true,
        }
        false
    }

    /// Waits up to `pause` while handling inputs; true if an interrupt arrived.
    fn wait(&mut self, pause: Duration) -> bool {
        let deadline = Instant::now() + pause;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.inputs.recv_timeout(left) {
                Ok(input) => {
                    if self.handle_input(input) {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => {
                    self.stdin_closed = true;
                    std::thread::sleep(left);
                    return false;
                }
            }
        }
    }

    /// Handles every input already received, without waiting. An interrupt found here
    /// is answered but has no turn left to stop.
    fn drain_inputs(&mut self) {
        loop {
            match self.inputs.try_recv() {
                Ok(input) => {
                    self.handle_input(input);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.stdin_closed = true;
                    return;
                }
            }
        }
    }

    /// One turn: init line, the mode's output, result.
    fn turn(&mut self, prompt: &str) {
        let started = Instant::now();
        self.emit(&self.init_line());
        let replay = std::env::var_os("FAKE_CLAUDE_NO_REPLAY").is_none();
        if replay && self.args.iter().any(|a| a == "--replay-user-messages") {
            // As the real CLI does with this flag: the turn's (merged) user message,
            // echoed back with isReplay.
            let line = json!({
                "type": "user",
                "message": {"role": "user", "content": prompt},
                "session_id": self.session_id, "parent_tool_use_id": null,
                "uuid": self.uuid(), "isReplay": true,
            });
            self.emit(&line);
        }
        let outcome = match Mode::parse(prompt) {
            Mode::Echo => self.say(format!("Echo: {prompt}")),
            Mode::Slow { count, pause } => self.slow(count, pause),
            Mode::Crash => crash(),
            Mode::Hang => hang(),
            Mode::Deaf => {
                DEAF.store(true, std::sync::atomic::Ordering::SeqCst);
                hang()
            }
            Mode::DeafTurns => {
                DEAF.store(true, std::sync::atomic::Ordering::SeqCst);
                let release = std::env::var_os("FAKE_CLAUDE_RELEASE").map(PathBuf::from);
                let deadline = Instant::now() + Duration::from_secs(60);
                while release.as_ref().is_some_and(|r| !r.exists()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let line = self.result_success("deaf", started);
                self.emit(&line);
                self.emit(&self.init_line());
                self.say("queued input not read".into())
            }
            Mode::AskThenExit => {
                self.emit(&json!({"type": "control_request", "request_id": "perm-1",
                    "request": {"subtype": "can_use_tool", "tool_name": "Bash",
                        "input": {"command": "ls"}, "tool_use_id": "toolu_fake",
                        "permission_suggestions": []}}));
                std::process::exit(4)
            }
            Mode::AskThenCancel => {
                self.emit(&json!({"type": "control_request", "request_id": "perm-1",
                    "request": {"subtype": "can_use_tool", "tool_name": "Bash",
                        "input": {"command": "ls"}, "tool_use_id": "toolu_fake",
                        "permission_suggestions": []}}));
                self.emit(&json!({"type": "control_request", "request_id": "mcp-1",
                    "request": {"subtype": "mcp_message", "server_name": "ws",
                        "message": {"method": "tools/call", "params": {"name": "Fmt",
                            "arguments": {}}, "jsonrpc": "2.0", "id": 6}}}));
                for id in ["perm-1", "mcp-1"] {
                    self.emit(&json!({"type": "control_cancel_request", "request_id": id}));
                }
                self.say("withdrawn".into())
            }
            Mode::McpUnknown => {
                self.emit(&json!({"type": "control_request", "request_id": "mcp-1",
                    "request": {"subtype": "mcp_message", "server_name": "ws",
                        "message": {"method": "tools/call", "params": {"name": "Nope",
                            "arguments": {}}, "jsonrpc": "2.0", "id": 5}}}));
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.responses.is_empty() && Instant::now() < deadline {
                    self.wait(Duration::from_millis(50));
                }
                let answer = self.responses.pop().unwrap_or(Value::Null);
                self.say(format!("MCP answer: {answer}"))
            }
            Mode::IgnoreSignals => {
                ignore_signals();
                hang()
            }
            Mode::Stubborn => {
                ignore_signals();
                STUBBORN.store(true, std::sync::atomic::Ordering::SeqCst);
                self.say(format!("Echo: {prompt}"))
            }
            Mode::Garbage => {
                for i in 1..=3 {
                    write_stdout(format!("this is not json {i}\n").as_bytes());
                }
                self.say(format!("Echo: {prompt}"))
            }
            Mode::StderrFlood(bytes) => {
                flood_stderr(bytes);
                self.say(format!("Echo: {prompt}"))
            }
            Mode::Huge(bytes) => self.say(pattern_text(bytes)),
            Mode::Grandchild => self.grandchild(),
            Mode::DumpEnv => self.say(self.dump_env()),
            Mode::DieAfter(count) => self.die_after(count),
            Mode::Flood { lines, bytes } => self.flood(lines, bytes),
            Mode::Replay(path) => self.replay(&path),
            Mode::RawResult(line) => {
                self.say(format!("Echo: {prompt}"));
                Outcome::RawResult(line)
            }
        };
        // Prompts that arrived while the turn ran are queued before its result.
        self.drain_inputs();
        let line = match outcome {
            Outcome::Done(text) => self.result_success(&text, started),
            Outcome::Interrupted => self.interrupted(started),
            Outcome::RawResult(line) => return write_stdout(format!("{line}\n").as_bytes()),
        };
        self.emit(&line);
    }

    /// One `assistant` text line; the turn's result is that text.
    fn say(&mut self, text: String) -> Outcome {
        let line = self.assistant_line(&text);
        self.emit(&line);
        Outcome::Done(text)
    }

    fn slow(&mut self, count: u64, pause: Duration) -> Outcome {
        let mut words = Vec::new();
        for i in 0..count {
            if i > 0 && self.wait(pause) {
                return Outcome::Interrupted;
            }
            let word = format!("word{i}");
            let line = self.assistant_line(&word);
            self.emit(&line);
            words.push(word);
        }
        Outcome::Done(words.join(" "))
    }

    fn grandchild(&mut self) -> Outcome {
        // Stdio is detached from ours so only the process, not a pipe, outlives us.
        let child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                let line = self.assistant_line(&format!("grandchild {}", child.id()));
                self.emit(&line);
                // The child handle is leaked on purpose: it must stay running.
                std::mem::forget(child);
                hang()
            }
            Err(e) => self.say(format!("fake-claude: cannot spawn sleep: {e}")),
        }
    }

    fn dump_env(&self) -> String {
        let env: serde_json::Map<String, Value> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    Value::String(v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        json!({"argv": self.args, "env": env, "cwd": self.cwd}).to_string()
    }

    fn die_after(&mut self, count: u64) -> ! {
        for i in 0..count {
            let line = self.assistant_line(&format!("word{i}"));
            self.emit(&line);
        }
        eprintln!("fake-claude: died");
        std::process::exit(2)
    }

    /// Writes `lines` identical assistant lines through one big buffer, flushed once.
    fn flood(&mut self, lines: u64, bytes: usize) -> Outcome {
        let line = json_line(&self.assistant_line(&pattern_text(bytes)));
        write_bulk(|out| {
            for _ in 0..lines {
                out.write_all(&line)?;
            }
            Ok(())
        });
        Outcome::Done(format!("flooded {lines} lines"))
    }

    /// Copies a stream-json file to stdout through one big buffer, flushed once.
    fn replay(&mut self, path: &std::path::Path) -> Outcome {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return self.say(format!("fake-claude: cannot open {}: {e}", path.display())),
        };
        let mut reader = BufReader::with_capacity(BULK_BUFFER_BYTES, file);
        let mut count = 0u64;
        write_bulk(|out| {
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Ok(());
                }
                let body = line.trim_ascii();
                if body.is_empty() || body.starts_with(b"//") {
                    continue;
                }
                out.write_all(body)?;
                out.write_all(b"\n")?;
                count += 1;
            }
        });
        Outcome::Done(format!("replayed {count} lines"))
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn uuid(&mut self) -> String {
        let n = self.next_serial();
        format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
    }

    fn init_line(&self) -> Value {
        json!({
            "type": "system", "subtype": "init", "cwd": self.cwd,
            "session_id": self.session_id,
            "tools": ["Bash", "Edit", "Read", "Write"],
            "mcp_servers": [], "model": self.model, "permissionMode": self.permission_mode,
            "apiKeySource": "none", "claude_code_version": "fake",
            "uuid": format!("{:08x}-0000-4000-8000-000000000000", std::process::id()),
        })
    }

    fn assistant_line(&mut self, text: &str) -> Value {
        let id = format!("msg_fake_{}", self.next_serial());
        json!({
            "type": "assistant",
            "message": {
                "id": id, "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
            "parent_tool_use_id": null, "session_id": self.session_id, "uuid": self.uuid(),
        })
    }

    fn result_success(&mut self, text: &str, started: Instant) -> Value {
        let ms = started.elapsed().as_millis() as u64;
        json!({
            "type": "result", "subtype": "success", "is_error": false,
            "duration_ms": ms, "duration_api_ms": ms, "num_turns": 1,
            "result": text, "stop_reason": "end_turn", "session_id": self.session_id,
            "total_cost_usd": 0.00056, "usage": usage(12, 20),
            "modelUsage": {}, "permission_denials": [], "terminal_reason": "completed",
            "uuid": self.uuid(),
        })
    }

    /// Prints the interrupted-turn `user` line and returns the error `result`.
    fn interrupted(&mut self, started: Instant) -> Value {
        let user = json!({
            "type": "user",
            "message": {"role": "user", "content": [{"type": "text", "text": INTERRUPTED_TEXT}]},
            "parent_tool_use_id": null, "session_id": self.session_id, "uuid": self.uuid(),
        });
        self.emit(&user);
        json!({
            "type": "result", "subtype": "error_during_execution",
            "duration_ms": started.elapsed().as_millis() as u64, "duration_api_ms": 0,
            "is_error": true, "num_turns": 2, "stop_reason": null,
            "session_id": self.session_id, "total_cost_usd": 0, "usage": usage(0, 0),
            "modelUsage": {}, "permission_denials": [], "terminal_reason": "aborted_streaming",
            "uuid": self.uuid(),
        })
    }

    fn control_success(&self, request_id: &str) {
        self.emit(&json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": {}},
        }));
    }

    /// Writes one JSON line to stdout and flushes it.
    fn emit(&self, value: &Value) {
        write_stdout(&json_line(value));
    }
}

/// `value` as one newline-terminated JSON line with `"type"` first, as the real CLI
/// writes it (serde_json sorts the other keys; readers that sniff a line's
/// beginning for its type still work).
fn json_line(value: &Value) -> Vec<u8> {
    let mut rest = value.clone();
    let kind = rest.as_object_mut().and_then(|o| o.remove("type"));
    let body = serde_json::to_string(&rest).expect("a JSON value serializes");
    let mut line = match kind {
        Some(kind) if body == "{}" => format!("{{\"type\":{kind}}}"),
        Some(kind) => format!("{{\"type\":{kind},{}", &body[1..]),
        None => body,
    };
    line.push('\n');
    line.into_bytes()
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0, "output_tokens": output, "service_tier": "standard",
    })
}

/// Writes and flushes raw bytes on stdout; a closed stdout ends the process.
fn write_stdout(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        stdout_failed(&e);
    }
}

fn stdout_failed(e: &io::Error) -> ! {
    eprintln!("fake-claude: cannot write stdout: {e}");
    std::process::exit(1)
}

/// Runs `body` over a large stdout buffer and flushes once at the end.
fn write_bulk(body: impl FnOnce(&mut BufWriter<io::StdoutLock<'static>>) -> io::Result<()>) {
    let mut out = BufWriter::with_capacity(BULK_BUFFER_BYTES, io::stdout().lock());
    if let Err(e) = body(&mut out).and_then(|()| out.flush()) {
        stdout_failed(&e);
    }
}

/// ASCII text of exactly `bytes` bytes, no newlines.
fn pattern_text(bytes: usize) -> String {
    let pattern = b"0123456789abcdefghijklmnopqrstuvwxyz ";
    let raw: Vec<u8> = pattern.iter().copied().cycle().take(bytes).collect();
    String::from_utf8(raw).expect("the pattern is ASCII")
}

/// Writes `bytes` bytes of 100-byte lines to stderr, blocking while nobody reads it.
fn flood_stderr(bytes: usize) {
    let mut line = b"fake-claude: stderr flood ".to_vec();
    line.resize(99, b'.');
    line.push(b'\n');
    let mut err = io::stderr().lock();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(line.len());
        let chunk = if n == line.len() {
            &line[..]
        } else {
            &line[line.len() - n..]
        };
        if err.write_all(chunk).is_err() {
            return;
        }
        left -= n;
    }
}

fn crash() -> ! {
    write_stdout(br#"{"type":"assistant","message":{"id":"msg_crash","content":[{"type":"te"#);
    eprintln!("fake-claude: crashing on purpose");
    std::process::exit(3)
}

/// Never answers again: not interrupts, not stdin EOF. A signal ends it.
fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn ignore_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing SIG_IGN has no handler code to race with.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}
