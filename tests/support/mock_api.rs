//! A scripted Anthropic Messages API on loopback, so the real `claude` CLI runs offline.
//!
//! Every `POST /v1/messages` is answered with a Server-Sent Events stream chosen by the
//! newest user text of the conversation (see [`Script`] for the prompts it understands);
//! anything else (e.g. `count_tokens`) gets `200 {"input_tokens": 10}`.
//!
//! Each request is served on its own thread, so a slow stream never delays another one.
//! SSE responses are written straight to the socket as chunked HTTP/1.1, flushed after
//! every event: tiny_http's own `Response` path buffers up to 8 KiB per chunk and never
//! flushes in between, which would hold back a slow stream.

// Shared by several test crates (and the `mock-api` example); each uses a different
// subset of this API, so unused items are expected.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Size of each text delta of a `big` reply.
const BIG_DELTA_BYTES: usize = 16 * 1024;
/// Default pause between the deltas of a `slow` reply.
const SLOW_DEFAULT_MS: u64 = 100;
/// Prefixes of the text blocks the CLI adds to user messages on its own: context
/// reminders, and the marker it records after an interrupted turn.
const CLI_ADDED_PREFIXES: [&str; 2] = ["<system-reminder>", "[Request interrupted by user"];

/// A running scripted Messages API. Dropping it stops serving and joins its threads.
pub struct MockApi {
    server: Arc<tiny_http::Server>,
    url: String,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// State shared between the handle, the accept loop and the per-request threads.
struct Shared {
    /// Bodies of every `POST /v1/messages`, in arrival order.
    requests: Mutex<Vec<Value>>,
    /// Per-request threads, joined on drop.
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Set on drop: streams in progress end early.
    stopping: AtomicBool,
    /// Source of unique ids for messages and tool uses.
    next_id: AtomicU64,
}

/// Locks a mutex, ignoring poisoning: a panicked worker must not wedge the mock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MockApi {
    /// Binds `127.0.0.1:0` and serves on background threads.
    pub fn start() -> MockApi {
        MockApi::start_on(0)
    }

    /// Binds `127.0.0.1:port` (0 = any free port) and serves on background threads.
    pub fn start_on(port: u16) -> MockApi {
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("mock api: cannot bind 127.0.0.1:{port}: {e}"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("mock api: a TCP listener has an IP address");
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        let acceptor = {
            let server = Arc::clone(&server);
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("mock-api-accept".into())
                .spawn(move || accept_loop(&server, &shared))
                .expect("mock api: cannot spawn the accept thread")
        };
        MockApi {
            server,
            url: format!("http://{addr}"),
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Base URL for `ANTHROPIC_BASE_URL`, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Bodies of every `POST /v1/messages` received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).clone()
    }

    /// The user's prompt texts in the conversation of the last `/v1/messages` request,
    /// oldest first, without the CLI's `<system-reminder>` and
    /// `[Request interrupted by user]` blocks. Empty if none arrived yet.
    pub fn user_texts(&self) -> Vec<String> {
        lock(&self.shared.requests)
            .last()
            .map(prompt_texts)
            .unwrap_or_default()
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// Receives requests until `unblock`, handing each to its own thread.
fn accept_loop(server: &tiny_http::Server, shared: &Arc<Shared>) {
    loop {
        let received = server.recv();
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let request = match received {
            Ok(request) => request,
            Err(e) => {
                // E.g. accept failing for lack of fds: keep serving, without spinning.
                eprintln!("mock api: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let worker_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("mock-api-request".into())
            .spawn(move || handle(request, &worker_shared));
        let mut workers = lock(&shared.workers);
        workers.retain(|w| !w.is_finished());
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(e) => eprintln!("mock api: cannot spawn a request thread: {e}"),
        }
    }
}

/// Serves one request. Errors (mostly clients hanging up) end the request quietly.
fn handle(mut request: tiny_http::Request, shared: &Shared) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let is_messages = *request.method() == tiny_http::Method::Post && path == "/v1/messages";
    let mut body = String::new();
    if let Err(e) = request.as_reader().read_to_string(&mut body) {
        eprintln!("mock api: cannot read the body of {path}: {e}");
        return;
    }
    if !is_messages {
        let _ = request.respond(json_response(&json!({"input_tokens": 10})));
        return;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    lock(&shared.requests).push(body.clone());

    let script = Script::for_request(&body);
    let msg_id = format!("msg_mock_{}", shared.next_id.fetch_add(1, Ordering::SeqCst));
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-mock")
        .to_string();
    let reply = script.reply(shared);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let writer = request.into_writer();
        // A write error means the client went away: nothing more to do.
        let _ = stream_sse(writer, &msg_id, &model, &reply, shared);
    } else {
        let _ = request.respond(json_response(&reply.as_message(&msg_id, &model)));
    }
}

fn json_response(value: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("static header is valid");
    tiny_http::Response::from_data(value.to_string().into_bytes()).with_header(header)
}

/// What the scripted model does, chosen from the newest user message.
#[derive(Debug, Clone, PartialEq)]
enum Script {
    /// Anything unrecognised: `Echo: <prompt> `.
    Echo(String),
    /// `write <path> <content...>`: a `Write` tool use.
    Write { path: String, content: String },
    /// `bash <command...>`: a `Bash` tool use.
    Bash(String),
    /// `tool <name> <json input>`: a use of any tool (e.g. a client-defined
    /// `mcp__ws__CustomFormatter`), as transcript 09's prompt does.
    Tool { name: String, input: Value },
    /// `slow <N> [ms]`: N deltas `wordI ` with a pause between them.
    Slow { count: usize, pause: Duration },
    /// `big <BYTES>`: one text reply of exactly that many bytes.
    Big(usize),
    /// `recall`: every prompt of the conversation, to prove the context survived.
    Recall(Vec<String>),
    /// The newest user message carries tool results: `Done: <first result text>`.
    AfterTool(String),
    /// `lone-surrogate`: text holding half of a UTF-16 surrogate pair, as a model's
    /// text cut inside an emoji would be. The event carries the escape `\ud83d`; the
    /// CLI (JavaScript) keeps the lone half in its string and writes it out the same way.
    LoneSurrogate,
}

/// The streamed answer: content blocks plus the stop reason.
struct Reply {
    blocks: Vec<ReplyBlock>,
    stop_reason: &'static str,
}

enum ReplyBlock {
    /// Text sent as these deltas, `pause` apart.
    Text {
        deltas: Vec<String>,
        pause: Duration,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// Text given as the inside of a JSON string literal, sent in one delta exactly as
    /// written: it can hold escapes no Rust string can (a lone surrogate).
    EscapedText(&'static str),
}

/// The text of [`Script::LoneSurrogate`], escaped as the SSE event carries it.
pub const LONE_SURROGATE_TEXT: &str = r"half an emoji: \ud83d, then more";

impl Script {
    /// Picks the script for a `/v1/messages` body.
    fn for_request(body: &Value) -> Script {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        if let Some(text) = last_user.and_then(first_tool_result_text) {
            return Script::AfterTool(text);
        }
        let prompt = prompt_texts(body).pop().unwrap_or_default();
        Script::parse(&prompt, || prompt_texts(body))
    }

    /// Parses a prompt; `history` yields the conversation's prompts for `recall`.
    fn parse(prompt: &str, history: impl FnOnce() -> Vec<String>) -> Script {
        let trimmed = prompt.trim();
        let (word, rest) = match trimmed.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim_start()),
            None => (trimmed, ""),
        };
        let echo = || Script::Echo(prompt.to_string());
        match word {
            "write" => match rest.split_once(char::is_whitespace) {
                Some((path, content)) => Script::Write {
                    path: path.to_string(),
                    content: content.trim_start().to_string(),
                },
                None if !rest.is_empty() => Script::Write {
                    path: rest.to_string(),
                    content: String::new(),
                },
                None => echo(),
            },
            "bash" if !rest.is_empty() => Script::Bash(rest.to_string()),
            "tool" => match rest.split_once(char::is_whitespace) {
                Some((name, input)) => match serde_json::from_str(input) {
                    Ok(input) => Script::Tool {
                        name: name.to_string(),
                        input,
                    },
                    Err(_) => echo(),
                },
                None => echo(),
            },
            "slow" => {
                let mut args = rest.split_whitespace().map(str::parse::<u64>);
                match (args.next(), args.next()) {
                    (Some(Ok(n)), None) => Script::Slow {
                        count: n as usize,
                        pause: Duration::from_millis(SLOW_DEFAULT_MS),
                    },
                    (Some(Ok(n)), Some(Ok(ms))) => Script::Slow {
                        count: n as usize,
                        pause: Duration::from_millis(ms),
                    },
                    _ => echo(),
                }
            }
            "big" => match rest.parse::<usize>() {
                Ok(n) => Script::Big(n),
                Err(_) => echo(),
            },
            "recall" => Script::Recall(history()),
            "lone-surrogate" => Script::LoneSurrogate,
            _ => echo(),
        }
    }

    fn reply(&self, shared: &Shared) -> Reply {
        let text = |s: String| Reply {
            blocks: vec![ReplyBlock::Text {
                deltas: vec![s],
                pause: Duration::ZERO,
            }],
            stop_reason: "end_turn",
        };
        let tool = |name: &str, input: Value| Reply {
            blocks: vec![ReplyBlock::ToolUse {
                id: format!(
                    "toolu_mock_{}",
                    shared.next_id.fetch_add(1, Ordering::SeqCst)
                ),
                name: name.to_string(),
                input,
            }],
            stop_reason: "tool_use",
        };
        match self {
            Script::Echo(prompt) => text(format!("Echo: {prompt} ")),
            Script::AfterTool(result) => text(format!("Done: {result}")),
            Script::Recall(history) => text(format!("History: {}", history.join(" | "))),
            Script::LoneSurrogate => Reply {
                blocks: vec![ReplyBlock::EscapedText(LONE_SURROGATE_TEXT)],
                stop_reason: "end_turn",
            },
            Script::Write { path, content } => {
                tool("Write", json!({"file_path": path, "content": content}))
            }
            Script::Bash(command) => {
                tool("Bash", json!({"command": command, "description": "run"}))
            }
            Script::Tool { name, input } => tool(name, input.clone()),
            Script::Slow { count, pause } => Reply {
                blocks: vec![ReplyBlock::Text {
                    deltas: (0..*count).map(|i| format!("word{i} ")).collect(),
                    pause: *pause,
                }],
                stop_reason: "end_turn",
            },
            Script::Big(bytes) => {
                let pattern = b"0123456789abcdefghijklmnopqrstuvwxyz\n";
                let all: Vec<u8> = pattern.iter().copied().cycle().take(*bytes).collect();
                let deltas = all
                    .chunks(BIG_DELTA_BYTES)
                    .map(|c| String::from_utf8(c.to_vec()).expect("the pattern is ASCII"))
                    .collect();
                Reply {
                    blocks: vec![ReplyBlock::Text {
                        deltas,
                        pause: Duration::ZERO,
                    }],
                    stop_reason: "end_turn",
                }
            }
        }
    }
}

impl Reply {
    /// The whole reply as one non-streaming Messages API response.
    fn as_message(&self, id: &str, model: &str) -> Value {
        let content: Vec<Value> = self
            .blocks
            .iter()
            .map(|b| match b {
                ReplyBlock::Text { deltas, .. } => json!({"type": "text", "text": deltas.concat()}),
                ReplyBlock::ToolUse { id, name, input } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": input})
                }
                // A Rust string cannot hold a lone surrogate: U+FFFD in its place.
                ReplyBlock::EscapedText(escaped) => json!({"type": "text",
                    "text": escaped.replace(r"\ud83d", "\u{fffd}")}),
            })
            .collect();
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": self.stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 20},
        })
    }
}

/// Writes the reply as an SSE stream in chunked transfer encoding, flushing every event.
fn stream_sse(
    writer: Box<dyn Write + Send>,
    msg_id: &str,
    model: &str,
    reply: &Reply,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut out = SseWriter { inner: writer };
    out.inner.write_all(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: text/event-stream\r\n\
          Cache-Control: no-cache\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n",
    )?;
    out.inner.flush()?;
    out.event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        }}),
    )?;
    for (index, block) in reply.blocks.iter().enumerate() {
        match block {
            ReplyBlock::Text { deltas, pause } => {
                out.event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "text", "text": ""}}),
                )?;
                for (i, delta) in deltas.iter().enumerate() {
                    if i > 0 && !pause.is_zero() && !sleep_unless_stopping(*pause, shared) {
                        return out.end();
                    }
                    out.event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "text_delta", "text": delta}}),
                    )?;
                }
            }
            ReplyBlock::EscapedText(escaped) => {
                out.event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "text", "text": ""}}),
                )?;
                out.event_text(
                    "content_block_delta",
                    &format!(
                        r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"text_delta","text":"{escaped}"}}}}"#
                    ),
                )?;
            }
            ReplyBlock::ToolUse { id, name, input } => {
                out.event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "tool_use", "id": id, "name": name,
                                              "input": {}}}),
                )?;
                out.event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta",
                                      "partial_json": input.to_string()}}),
                )?;
            }
        }
        out.event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        )?;
    }
    out.event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": 20}}),
    )?;
    out.event("message_stop", &json!({"type": "message_stop"}))?;
    out.end()
}

/// One HTTP chunk per SSE event, flushed at once.
struct SseWriter {
    inner: Box<dyn Write + Send>,
}

impl SseWriter {
    fn event(&mut self, name: &str, data: &Value) -> std::io::Result<()> {
        self.event_text(name, &data.to_string())
    }

    /// An event whose data is this JSON text.
    fn event_text(&mut self, name: &str, data: &str) -> std::io::Result<()> {
        let payload = format!("event: {name}\ndata: {data}\n\n");
        write!(self.inner, "{:x}\r\n", payload.len())?;
        self.inner.write_all(payload.as_bytes())?;
        self.inner.write_all(b"\r\n")?;
        self.inner.flush()
    }

    /// Ends the chunked body (also used to cut a stream short when the mock stops).
    fn end(mut self) -> std::io::Result<()> {
        self.inner.write_all(b"0\r\n\r\n")?;
        self.inner.flush()
    }
}

/// Sleeps for `pause` in short slices; false if the mock started stopping meanwhile.
fn sleep_unless_stopping(pause: Duration, shared: &Shared) -> bool {
    let deadline = Instant::now() + pause;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}

/// Text of the first `tool_result` block of a user message, if it has one.
fn first_tool_result_text(message: &Value) -> Option<String> {
    let blocks = message.get("content")?.as_array()?;
    let result = blocks
        .iter()
        .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))?;
    Some(match result.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    })
}

/// The user's own texts in a `/v1/messages` body, oldest first: string contents and
/// `text` blocks of `user` messages, minus the blocks the CLI adds itself
/// (`<system-reminder>`, `[Request interrupted by user]`). Prompts the CLI queued
/// during a turn arrive merged into one text, joined by newlines.
fn prompt_texts(body: &Value) -> Vec<String> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut texts = Vec::new();
    for message in messages {
        if message.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        match message.get("content") {
            Some(Value::String(s)) => push_prompt(&mut texts, s),
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    if block.get("type").and_then(Value::as_str) == Some("text") {
                        if let Some(s) = block.get("text").and_then(Value::as_str) {
                            push_prompt(&mut texts, s);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    texts
}

fn push_prompt(texts: &mut Vec<String>, text: &str) {
    let start = text.trim_start();
    if !CLI_ADDED_PREFIXES.iter().any(|p| start.starts_with(p)) {
        texts.push(text.to_string());
    }
}
