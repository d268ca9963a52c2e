//! Shared by the integration tests: start the real `claude-ws` binary on free ports,
//! talk to it with a real WebSocket client (tungstenite's) and a raw HTTP client, and
//! make sure everything started is ended.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod cli;
pub mod examples;
pub mod frames;
pub mod jwt;
pub mod mock_api;
pub mod procs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

pub use cli::TempDir;
pub use mock_api::MockApi;
#[allow(unused_imports)] // each test crate uses a different part
pub use procs::{children_of, pid_alive, rss_kib};

/// For tests of what happens when a session ends with its connection: no grace for
/// the client to reattach (sessions otherwise outlive a dropped connection).
pub const NO_REATTACH: &str = "--reconnect-grace-secs=0";

/// A close frame with code 1000: the client ends its session.
pub const NORMAL_CLOSE: tungstenite::protocol::CloseFrame = tungstenite::protocol::CloseFrame {
    code: tungstenite::protocol::frame::coding::CloseCode::Normal,
    reason: tungstenite::Utf8Bytes::from_static(""),
};

/// The longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The stand-in CLI (built by `cargo test` as an example).
pub fn fake_claude() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_claude-ws"));
    let p = exe
        .parent()
        .expect("binary has a directory")
        .join("examples")
        .join("fake-claude");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test` (it builds examples)",
        p.display()
    );
    p
}

/// Wait until `f` holds, up to `limit`; false if it never did.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running `claude-ws` process.
pub struct TestServer {
    proc: Option<Child>,
    pub ws_url: String,
    pub http_addr: String,
    stderr: Arc<Mutex<String>>,
    pub home: TempDir,
    pub workspace: PathBuf,
}

/// How to start a server.
pub struct ServerOptions {
    pub claude: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Whether `start` waits for the start-up check of `claude` (its probe is a child
    /// of the server while it runs). Off only for tests of that check.
    pub wait_for_check: bool,
}

impl ServerOptions {
    /// A server whose children are the stand-in CLI.
    pub fn fake() -> Self {
        ServerOptions {
            claude: fake_claude(),
            args: Vec::new(),
            env: Vec::new(),
            wait_for_check: true,
        }
    }

    /// A server whose children are the real CLI, talking to `api`.
    pub fn real(api: &MockApi) -> Self {
        ServerOptions {
            claude: cli::real_claude(),
            args: Vec::new(),
            env: vec![("ANTHROPIC_BASE_URL".into(), api.url())],
            wait_for_check: true,
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn start(self) -> TestServer {
        TestServer::start(self)
    }
}

impl TestServer {
    pub fn start(opts: ServerOptions) -> TestServer {
        let home = TempDir::new("server-home");
        let workspace = home.subdir("work");
        let api_url = opts
            .env
            .iter()
            .find(|(k, _)| k == "ANTHROPIC_BASE_URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "http://127.0.0.1:9".into());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_claude-ws"));
        cmd.env_clear()
            .envs(cli::cli_env(home.path(), &api_url))
            .env("RUST_LOG", "debug")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&workspace)
            .arg("--port=0")
            .arg("--http-port=0")
            .arg(format!("--claude-bin={}", opts.claude.display()))
            // SIGTERM drains (issue 13): by default a test's server, stopped or dropped
            // with a query still running, closes at once; a test may set its own.
            .arg("--drain-timeout-secs=0")
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // No warm children unless a test asks (tests/warm.rs): other tests count the
        // children their sessions start.
        if !opts.args.iter().any(|a| a.starts_with("--warm-children")) {
            cmd.arg("--warm-children=0");
        }
        let mut proc = cmd.spawn().expect("start claude-ws");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = proc.stderr.take().expect("stderr piped");
            let sink = stderr.clone();
            // For a test that hangs: CLAUDE_WS_TEST_LOG_DIR keeps each server's log in
            // a file as it is written.
            let mut copy = std::env::var_os("CLAUDE_WS_TEST_LOG_DIR").and_then(|d| {
                std::fs::File::create(PathBuf::from(d).join(format!("server-{}.log", proc.id())))
                    .ok()
            });
            thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Some(f) = &mut copy {
                        let _ = std::io::Write::write_all(f, &buf[..n]);
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdout = proc.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {} // keep draining
        });
        let mut server = TestServer {
            proc: Some(proc),
            ws_url: String::new(),
            http_addr: String::new(),
            stderr,
            home,
            workspace,
        };
        let line = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(_) => panic!("server printed no ready line; stderr:\n{}", server.logs()),
        };
        // ready ws=ws://HOST:PORT/ws http=http://HOST:PORT
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("ready"), "ready line: {line}");
        server.ws_url = parts
            .next()
            .and_then(|p| p.strip_prefix("ws="))
            .expect("ws= in ready line")
            .to_string();
        server.http_addr = parts
            .next()
            .and_then(|p| p.strip_prefix("http=http://"))
            .expect("http= in ready line")
            .to_string();
        // The start-up check runs `claude --version` as a child of the server: let it
        // finish, so tests that count the server's children see only their own.
        if opts.wait_for_check {
            let checked = eventually(WAIT, || {
                let (status, health) = server.get("/health");
                status != 200 || health["claude"]["status"] != "checking"
            });
            assert!(
                checked,
                "the start-up check did not finish: {}",
                server.logs()
            );
        }
        server
    }

    /// Whether the server logs `text` (waiting for it, up to [`WAIT`]: its log reaches
    /// the test through a pipe and a thread, a little after the server wrote it).
    pub fn logged(&self, text: &str) -> bool {
        eventually(WAIT, || self.logs().contains(text))
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").id()
    }

    /// `host:port` of the WebSocket listener.
    pub fn ws_authority(&self) -> String {
        self.ws_url
            .trim_start_matches("ws://")
            .trim_end_matches("/ws")
            .to_string()
    }

    /// Connect and read `connection_established`.
    pub fn connect(&self) -> Client {
        self.connect_with(&self.ws_url, &[])
    }

    /// Connect as JWT user `user` (an HS256 token signed with `secret`, sent in the
    /// `Authorization` header) and read `connection_established`.
    pub fn login(&self, secret: &str, user: &str) -> Client {
        let token = format!("Bearer {}", jwt::user_jwt(secret, user));
        self.connect_with(&self.ws_url, &[("Authorization", &token)])
    }

    /// Connect to `url` with extra headers and read `connection_established`.
    pub fn connect_with(&self, url: &str, headers: &[(&str, &str)]) -> Client {
        let mut c = self
            .try_connect(url, headers)
            .unwrap_or_else(|e| panic!("connect failed: {e}\nserver log:\n{}", self.logs()));
        let hello = c.recv();
        assert_eq!(hello["type"], "connection_established", "{hello}");
        c.session_id = hello["data"]["session_id"].as_str().unwrap().to_string();
        c.capabilities = hello["data"]["capabilities"].clone();
        c
    }

    /// Connect to `url` with extra headers; the handshake error (with the HTTP status)
    /// on refusal.
    pub fn try_connect(&self, url: &str, headers: &[(&str, &str)]) -> Result<Client, String> {
        use tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let tcp = TcpStream::connect(self.ws_authority()).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        match tungstenite::client(req, tcp) {
            Ok((ws, resp)) => Ok(Client {
                ws,
                session_id: String::new(),
                capabilities: Value::Null,
                protocol: resp
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(format!(
                "HTTP {} {}",
                r.status().as_u16(),
                r.body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A GET on the side port: (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let (status, _, body) = http_request(&self.http_addr, "GET", path, headers);
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, v)
    }

    /// Rows of `/sessions`.
    pub fn sessions(&self) -> Vec<Value> {
        let (status, v) = self.get("/sessions");
        assert_eq!(status, 200, "{v}");
        v.as_array().expect("a list").clone()
    }

    /// SIGKILL the server (nothing of its own shutdown runs) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// SIGTERM the server and wait for it to exit.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate().expect("server exits after SIGTERM")
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut proc = self.proc.take()?;
        // SAFETY: kill(2) only sends a signal, to the server this struct started.
        unsafe {
            libc::kill(proc.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(s)) = proc.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = proc.kill();
                let _ = proc.wait();
                eprintln!("server did not exit after SIGTERM; log:\n{}", self.logs());
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.proc.is_some() {
            self.terminate();
        }
        if thread::panicking() {
            eprintln!("---- server log ----\n{}", self.logs());
        }
    }
}

/// A minimal HTTP/1.1 request: (status, headers, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to side port");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A WebSocket client of the server under test.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub session_id: String,
    /// `connection_established.capabilities` (after `connect`).
    pub capabilities: Value,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

impl Client {
    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    pub fn send_raw(&mut self, m: Message) {
        self.ws.send(m).expect("send");
    }

    /// The next JSON message (pings are answered by tungstenite); panics on close or
    /// after [`WAIT`].
    pub fn recv(&mut self) -> Value {
        match self.next_event() {
            Ok(v) => v,
            Err(e) => panic!("expected a message, got {e}"),
        }
    }

    /// The next JSON message, or how the connection ended (`close CODE REASON`).
    pub fn next_event(&mut self) -> Result<Value, String> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Ok(serde_json::from_str(&t).expect("server sends JSON"))
                }
                Ok(Message::Close(Some(f))) => {
                    return Err(format!("close {} {}", u16::from(f.code), f.reason))
                }
                Ok(Message::Close(None)) => return Err("close".into()),
                Ok(_) => continue,
                Err(e) => return Err(format!("error {e}")),
            }
        }
    }

    /// Messages up to and including the first of type `kind`.
    pub fn until(&mut self, kind: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.recv();
            let done = v["type"] == kind;
            out.push(v);
            if done {
                return out;
            }
        }
    }

    /// Send a query and collect its messages up to `query_end`.
    pub fn query(&mut self, prompt: &str, options: Value) -> Vec<Value> {
        self.send(json!({"type": "query", "prompt": prompt, "options": options}));
        self.until("query_end")
    }

    /// How the server ends the connection (reading and dropping messages until then).
    pub fn closed(&mut self) -> String {
        loop {
            match self.next_event() {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    }
}

/// The types of `msgs`, in order.
pub fn types(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// All text of `assistant_message` text blocks in `msgs`, concatenated.
pub fn assistant_text(msgs: &[Value]) -> String {
    msgs.iter()
        .filter(|m| m["type"] == "assistant_message")
        .flat_map(|m| m["data"]["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "text")
        .map(|b| b["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The `data` of the single message of type `kind`.
pub fn only<'a>(msgs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = msgs.iter().filter(|m| m["type"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} in {:?}", types(msgs));
    &found[0]["data"]
}

/// Check `seq` goes up by one per message from `first`.
pub fn assert_seq(msgs: &[Value], first: u64) {
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"].as_u64(), Some(first + i as u64), "seq of {m}");
    }
}

/// Read a file, for tests that check what a tool wrote.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The stand-in's `ask-then-cancel` query, seen by a client: a completed query in
/// which the permission prompt `perm-1` and the tool call `mcp-1` were asked, then
/// withdrawn by the CLI (`permission_cancelled`, `tool_call_cancelled`).
pub fn assert_asked_then_withdrawn(msgs: &[Value]) {
    assert_eq!(only(msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    let kinds = types(msgs);
    let at = |k: &str| kinds.iter().position(|t| t == k).unwrap_or(usize::MAX);
    assert!(
        at("permission_request") < at("permission_cancelled"),
        "{kinds:?}"
    );
    assert!(at("tool_call") < at("tool_call_cancelled"), "{kinds:?}");
    assert_eq!(only(msgs, "permission_cancelled")["request_id"], "perm-1");
    assert_eq!(only(msgs, "tool_call_cancelled")["call_id"], "mcp-1");
}
