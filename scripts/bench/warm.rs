//! `warm`: the benchmark of issue 12, warm children. The real `claude` CLI against the
//! scripted Messages API (`mock-api`), through claude-ws; printed as one table and
//! written to `target/bench/warm.md`. Run it through `scripts/bench.sh --warm`, or:
//!
//! ```text
//! cargo build --release --bins --examples
//! cargo bench --bench warm -- [--quick]
//! ```
//!
//! What it measures:
//! 1. new-session time to the first `assistant_message` (query sent → first answer),
//!    p50 and p99 over 20 sessions one after another, with `--warm-children 0` and 1.
//!    Each session starts once the previous one's child is gone and the pool is full
//!    again (sessions arriving further apart than a CLI start).
//! 2. 10 new sessions sending their first query at once, with N = 0, 2, 10 warm
//!    children (`--max-running 10`): time to the last session's first
//!    `assistant_message`; RSS of the server and all its descendants, idle (pool full,
//!    no session) and at its peak during the burst.
//! 3. authentication on (JWT users: a CLI state and a bubblewrap sandbox per principal):
//!    a returning user's new sessions, one after another (p50 over the sessions after
//!    the first, which makes the user known), with `--warm-children 0` and 1 (a child
//!    kept for the recently active user, in their sandbox); and the same with
//!    `--sandbox off` and no warm children: what the sandbox itself adds to a start.
//! 4. the CLI alone (no server): first answer of a process started by the message, of
//!    one started ahead (answered `initialize`), and of one started ahead and switched
//!    with `set_model` + `set_permission_mode` before the message: whether a warm child
//!    could serve other models or modes by switching live.
//!
//! Every process it starts is ended before it returns (and, should the benchmark die,
//! receives SIGTERM from the kernel: PR_SET_PDEATHSIG).

#[path = "../../tests/support/cli.rs"]
mod cli;
#[path = "../../tests/support/jwt.rs"]
mod jwt;
#[path = "../../tests/support/procs.rs"]
mod procs;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

type Res<T> = Result<T, String>;
type Ws = WebSocket<TcpStream>;

/// The longest any one step may take.
const WAIT: Duration = Duration::from_secs(60);
/// The JWT secret of the authentication runs.
const SECRET: &str = "bench-warm-jwt-secret";

struct Opts {
    server: PathBuf,
    mock: PathBuf,
    claude: PathBuf,
    out: PathBuf,
    quick: bool,
    /// Sessions one after another, per setting.
    sessions: usize,
    /// Sessions of the burst.
    burst: usize,
    /// Warm children of each burst run.
    levels: Vec<usize>,
    /// Repetitions of each CLI-alone measurement.
    direct: usize,
    /// The sections to run (`--only a,b`; all by default).
    only: Vec<String>,
}

impl Opts {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("warm: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("warm: {e}");
        std::process::exit(1);
    }
}

fn parse_args() -> Res<Opts> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?
        .to_path_buf();
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
        || std::env::args().any(|a| a == "--quick");
    Ok(Opts {
        server: profile_dir.join("claude-ws"),
        mock: profile_dir.join("examples").join("mock-api"),
        claude: cli::real_claude(),
        out: profile_dir
            .parent()
            .map(|t| t.join("bench"))
            .unwrap_or_else(|| PathBuf::from("target/bench")),
        quick,
        sessions: if quick { 8 } else { 20 },
        burst: 10,
        levels: vec![0, 2, 10],
        direct: if quick { 3 } else { 5 },
        only: std::env::args()
            .skip_while(|a| a != "--only")
            .nth(1)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

// ---- processes ----------------------------------------------------------------------

/// A process the benchmark started; ended (SIGTERM, then SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        // SAFETY: kill(2) only signals a process this benchmark started.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}

/// The scripted Messages API; it ends when its stdin closes (or with us).
struct Mock {
    _proc: Proc,
    _stdin: ChildStdin,
    url: String,
}

fn start_mock(o: &Opts) -> Res<Mock> {
    let mut cmd = Command::new(&o.mock);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {e}", o.mock.display()))?;
    let stdin = child.stdin.take().ok_or("no mock stdin")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no mock stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let url = line
        .trim()
        .strip_prefix("mock-api url=")
        .ok_or(format!("mock-api said {line:?}"))?
        .to_string();
    Ok(Mock {
        _proc: Proc(child),
        _stdin: stdin,
        url,
    })
}

/// A running claude-ws with the real CLI.
struct Server {
    proc: Proc,
    ws: String,
    http: String,
    _home: cli::TempDir,
}

fn start_server(
    o: &Opts,
    api: &Mock,
    name: &str,
    (warm, max): (usize, usize),
    extra: &[String],
) -> Res<Server> {
    let home = cli::TempDir::new("bench-warm");
    let work = home.subdir("work");
    let secret = home.path().join("jwt-secret");
    std::fs::write(&secret, SECRET).map_err(|e| format!("jwt secret: {e}"))?;
    let extra: Vec<String> = extra
        .iter()
        .map(|a| a.replace("{secret}", &secret.display().to_string()))
        .collect();
    let log = std::fs::File::create(o.out.join(format!("server-warm-{name}.log")))
        .map_err(|e| format!("server log: {e}"))?;
    let mut cmd = Command::new(&o.server);
    cmd.env_clear()
        .envs(cli::cli_env(home.path(), &api.url))
        .env("RUST_LOG", "info")
        .current_dir(&work)
        .args([
            "--port=0",
            "--http-port=0",
            &format!("--claude-bin={}", o.claude.display()),
            &format!("--max-running={max}"),
            &format!("--warm-children={warm}"),
            "--rate-limit=1000000/1",
            "--stop-grace-secs=1",
        ])
        .args(&extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {e}", o.server.display()))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let mut words = line.split_whitespace().skip(1);
    let ws = words
        .next()
        .and_then(|w| w.strip_prefix("ws="))
        .ok_or(format!("no ready line: {line:?}"))?
        .to_string();
    let http = words
        .next()
        .and_then(|w| w.strip_prefix("http=http://"))
        .ok_or(format!("no ready line: {line:?}"))?
        .to_string();
    Ok(Server {
        proc,
        ws,
        http,
        _home: home,
    })
}

impl Server {
    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn health(&self) -> Res<Value> {
        let mut s = TcpStream::connect(&self.http).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .map_err(|e| e.to_string())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).map_err(|e| format!("/health: {e}: {body:?}"))
    }

    /// Until the start-up check is done, `warm` warm children are ready, and nothing
    /// else runs (a previous session's child is gone).
    fn settle(&self, warm: usize) -> Res<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let h = self.health()?;
            let ready = h["claude"]["status"] != "checking"
                && h["warm"]["ready"] == warm
                && procs::children_of(self.pid()).len() == warm;
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("server never settled with {warm} warm: {h}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// RSS of `pid` and all its descendants, in KiB.
fn tree_rss_kb(pid: u32) -> u64 {
    let rss = |p: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    };
    let mut total = rss(pid);
    for c in procs::children_of(pid) {
        total += tree_rss_kb(c);
    }
    total
}

// ---- sessions -----------------------------------------------------------------------

fn connect(url: &str) -> Res<Ws> {
    connect_as(url, None)
}

/// Connect, as `user` (a JWT signed with [`SECRET`]) when given.
fn connect_as(url: &str, user: Option<&str>) -> Res<Ws> {
    use tungstenite::client::IntoClientRequest;
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();
    let tcp = TcpStream::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(user) = user {
        let token = format!("Bearer {}", jwt::user_jwt(SECRET, user));
        req.headers_mut().insert(
            "Authorization",
            token.parse().map_err(|e| format!("header: {e}"))?,
        );
    }
    let (mut ws, _) = tungstenite::client(req, tcp).map_err(|e| format!("handshake: {e}"))?;
    let hello = next(&mut ws)?;
    if hello["type"] != "connection_established" {
        return Err(format!("expected connection_established, got {hello}"));
    }
    Ok(ws)
}

fn next(ws: &mut Ws) -> Res<Value> {
    loop {
        match ws.read().map_err(|e| format!("read: {e}"))? {
            Message::Text(t) => return serde_json::from_str(&t).map_err(|e| e.to_string()),
            Message::Close(f) => return Err(format!("closed: {f:?}")),
            _ => continue,
        }
    }
}

/// Send a first query; the time to its first `assistant_message`. Reads on to
/// `query_end`, then ends the session (its child is stopped).
fn first_answer(mut ws: Ws, sent: impl FnOnce(&mut Ws) -> Res<Instant>) -> Res<Duration> {
    let start = sent(&mut ws)?;
    let mut first = None;
    loop {
        let m = next(&mut ws)?;
        match m["type"].as_str() {
            Some("assistant_message") if first.is_none() => first = Some(start.elapsed()),
            Some("error") => return Err(format!("error: {m}")),
            Some("query_end") => break,
            _ => {}
        }
    }
    // Code 1000 ends the session (another close would detach it for a reattach).
    let _ = ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }));
    while ws.read().is_ok() {}
    first.ok_or_else(|| "no assistant_message".to_string())
}

fn send_query(ws: &mut Ws) -> Res<Instant> {
    let q = json!({"type": "query", "prompt": "hello", "options": {}});
    let start = Instant::now();
    ws.send(Message::text(q.to_string()))
        .map_err(|e| format!("send: {e}"))?;
    Ok(start)
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn mb(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

// ---- sections -----------------------------------------------------------------------

/// Sessions one after another: p50 and p99 of the time to the first answer, and the
/// warm path `/health` names (`parked_spare`, `initialize_ahead`).
fn sequential(o: &Opts, api: &Mock, warm: usize) -> Res<(Duration, Duration, String)> {
    let server = start_server(o, api, &format!("seq-{warm}"), (warm, 4), &[])?;
    let mut times = Vec::with_capacity(o.sessions);
    for _ in 0..o.sessions {
        server.settle(warm)?;
        let ws = connect(&server.ws)?;
        times.push(first_answer(ws, send_query)?);
    }
    times.sort();
    let (p50, p99) = (pct(&times, 0.5), pct(&times, 0.99));
    println!(
        "  sequential, {warm} warm: p50 {} p99 {} (all: {:?})",
        ms(p50),
        ms(p99),
        times.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    let path = server.health()?["claude"]["features"]["paths"]["warm"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    Ok((p50, p99, path))
}

/// With authentication on: a returning user's new sessions one after another (the
/// first makes the user known and is not counted), `warm` warm children, `sandbox`
/// or not. The p50 and p99, and the warm path `/health` names.
fn returning_user(
    o: &Opts,
    api: &Mock,
    warm: usize,
    sandbox: bool,
) -> Res<(Duration, Duration, String)> {
    let name = format!("auth-{warm}{}", if sandbox { "" } else { "-nosandbox" });
    let mut extra = vec!["--jwt-secret-file={secret}".to_string()];
    if !sandbox {
        extra.push("--sandbox=off".into());
    }
    let server = start_server(o, api, &name, (warm, 4), &extra)?;
    let h = server.health()?;
    let want = if sandbox { "bubblewrap" } else { "off" };
    if h["sandbox"] != want {
        return Err(format!("sandbox {} (wanted {want}): {h}", h["sandbox"]));
    }
    server.settle(0)?;
    first_answer(connect_as(&server.ws, Some("returning"))?, send_query)?;
    let mut times = Vec::with_capacity(o.sessions);
    for _ in 0..o.sessions {
        server.settle(warm)?;
        let ws = connect_as(&server.ws, Some("returning"))?;
        times.push(first_answer(ws, send_query)?);
    }
    let path = server.health()?["claude"]["features"]["paths"]["warm"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    times.sort();
    let (p50, p99) = (pct(&times, 0.5), pct(&times, 0.99));
    println!(
        "  authenticated, {warm} warm, sandbox {want}: p50 {} p99 {} (all: {:?})",
        ms(p50),
        ms(p99),
        times.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    Ok((p50, p99, path))
}

struct Burst {
    last: Duration,
    median: Duration,
    idle_kb: u64,
    peak_kb: u64,
}

/// `o.burst` sessions sending their first query at once, with `warm` warm children.
fn burst(o: &Opts, api: &Mock, warm: usize) -> Res<Burst> {
    let max = o.burst.max(warm);
    let server = start_server(o, api, &format!("burst-{warm}"), (warm, max), &[])?;
    server.settle(warm)?;
    let idle_kb = tree_rss_kb(server.pid());
    let clients = (0..o.burst)
        .map(|_| connect(&server.ws))
        .collect::<Res<Vec<Ws>>>()?;
    let peak = Arc::new(AtomicU64::new(idle_kb));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), server.pid());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(tree_rss_kb(pid), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let barrier = Arc::new(Barrier::new(o.burst + 1));
    let workers: Vec<_> = clients
        .into_iter()
        .map(|ws| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                first_answer(ws, send_query)
            })
        })
        .collect();
    let start = Instant::now();
    barrier.wait();
    let mut times = Vec::new();
    for w in workers {
        times.push(w.join().map_err(|_| "a client panicked")??);
    }
    done.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    // (Each session's own clock starts at its send, a few µs after `start`.)
    let _ = start;
    times.sort();
    let b = Burst {
        last: *times.last().ok_or("no sessions")?,
        median: pct(&times, 0.5),
        idle_kb,
        peak_kb: peak.load(Ordering::SeqCst),
    };
    println!(
        "  burst of {}, {warm} warm: last {} median {}; RSS idle {} peak {}",
        o.burst,
        ms(b.last),
        ms(b.median),
        mb(b.idle_kb),
        mb(b.peak_kb)
    );
    Ok(b)
}

/// The CLI alone, spawned the way claude-ws spawns it.
struct Direct {
    _proc: Proc,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

/// `parked`: a parked spare (`--await-claim`), started in `park`.
fn spawn_cli(o: &Opts, api: &Mock, home: &Path, parked: Option<&Path>) -> Res<Direct> {
    let mut cmd = Command::new(&o.claude);
    cmd.args(cli::STREAM_JSON_ARGS)
        .args(parked.map(|_| "--await-claim"))
        .env_clear()
        .envs(cli::cli_env(home, &api.url))
        .current_dir(parked.unwrap_or(home))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("start claude: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut d = Direct {
        _proc: Proc(child),
        stdin,
        lines: BufReader::new(stdout).lines(),
    };
    d.write(&json!({"type": "control_request", "request_id": "init",
                    "request": {"subtype": "initialize", "hooks": null}}))?;
    Ok(d)
}

impl Direct {
    fn write(&mut self, v: &Value) -> Res<()> {
        writeln!(self.stdin, "{v}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| e.to_string())
    }

    /// Read lines until one of `kind`; the lines of other kinds seen before it.
    fn until(&mut self, kind: &str) -> Res<Vec<String>> {
        let mut others = Vec::new();
        loop {
            let line = self
                .lines
                .next()
                .ok_or("claude closed stdout")?
                .map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            let t = v["type"].as_str().unwrap_or("?");
            if t == kind {
                return Ok(others);
            }
            let sub = v["subtype"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            others.push(format!("{t}{sub}"));
        }
    }

    fn ask(&mut self) -> Res<Instant> {
        let start = Instant::now();
        self.write(
            &json!({"type": "user", "message": {"role": "user", "content": "hello"},
                           "parent_tool_use_id": null, "session_id": "default"}),
        )?;
        Ok(start)
    }
}

/// The CLI alone: (cold, started ahead, started ahead and switched), medians, and what
/// the switch printed before the answer; and a parked spare's (claim sent → first
/// answer), where the CLI takes `--await-claim`.
#[allow(clippy::type_complexity)]
fn direct(o: &Opts, api: &Mock) -> Res<([Duration; 4], Vec<String>, Option<Duration>)> {
    let home = cli::TempDir::new("bench-warm-direct");
    let park = home.subdir("park");
    let mut runs: [Vec<Duration>; 4] = Default::default();
    let mut extra = Vec::new();
    let mut parked = Vec::new();
    for _ in 0..o.direct {
        let mut d = spawn_cli(o, api, home.path(), Some(&park))?;
        if d.until("control_response").is_ok() {
            let start = Instant::now();
            d.write(&json!({"type": "control_request", "request_id": "claim",
                            "request": {"subtype": "claim_session",
                                        "cwd": home.path().display().to_string()}}))?;
            d.until("control_response")?;
            d.ask()?;
            d.until("assistant")?;
            parked.push(start.elapsed());
            d.until("result")?;
        }
        for (i, run) in runs.iter_mut().enumerate() {
            let mut d = spawn_cli(o, api, home.path(), None)?;
            if i > 0 {
                d.until("control_response")?; // the answer to `initialize`: it is up
            }
            if i == 2 {
                d.write(&json!({"type": "control_request", "request_id": "m",
                                "request": {"subtype": "set_model", "model": "claude-haiku-4-5"}}))?;
                d.write(&json!({"type": "control_request", "request_id": "p",
                                "request": {"subtype": "set_permission_mode", "mode": "plan"}}))?;
            }
            if i == 3 {
                d.write(&json!({"type": "control_request", "request_id": "u",
                                "request": {"subtype": "get_context_usage"}}))?;
                d.until("control_response")?;
            }
            let start = d.ask()?;
            let before = d.until("assistant")?;
            run.push(start.elapsed());
            d.until("result")?;
            if i == 2 {
                extra = before;
            }
        }
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        pct(v, 0.5)
    };
    let [a, b, c, u] = &mut runs;
    let parked = (!parked.is_empty()).then(|| med(&mut parked));
    Ok(([med(a), med(b), med(c), med(u)], extra, parked))
}

fn machine() -> String {
    let version = Command::new(cli::real_claude())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{}; claude {version}", procs::machine())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The head of a cold-vs-warm table.
fn table_head(s: &mut String) {
    let _ = writeln!(
        s,
        "\n| measurement | no warm children | with warm children | target | met |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|:-:|");
}

/// A cold-vs-warm row, with the ratio and whether it meets the 25% target.
fn row(s: &mut String, what: &str, cold: Duration, warm: Duration) {
    let ratio = warm.as_secs_f64() / cold.as_secs_f64();
    let _ = writeln!(
        s,
        "| {what} | {} | {} ({:.0}%) | warm ≤ 25% of cold | {} |",
        ms(cold),
        ms(warm),
        ratio * 100.0,
        if ratio <= 0.25 { "yes" } else { "**NO**" }
    );
}

fn run(o: &Opts) -> Res<()> {
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let load_before = loadavg();
    let api = start_mock(o)?;
    let mut s = String::new();
    let _ = writeln!(s, "## Warm children (issues 12, 17, 18)\n");
    let _ = writeln!(s, "Machine: {}\n", machine());

    if o.runs("sequential") {
        println!("== new sessions one after another ({} each)", o.sessions);
        let (cold50, cold99, _) = sequential(o, &api, 0)?;
        let (warm50, warm99, path) = sequential(o, &api, 1)?;
        table_head(&mut s);
        row(
            &mut s,
            &format!(
                "new session → first `assistant_message`, p50 ({} sessions, one warm; \
                 warm path `{path}`)",
                o.sessions
            ),
            cold50,
            warm50,
        );
        let _ = writeln!(s, "| same, p99 | {} | {} | | |", ms(cold99), ms(warm99));
    }

    if o.runs("auth") {
        println!(
            "== authentication on: a returning user's new sessions ({} each)",
            o.sessions
        );
        let (cold50, cold99, _) = returning_user(o, &api, 0, true)?;
        let (warm50, warm99, path) = returning_user(o, &api, 1, true)?;
        let (open50, open99, _) = returning_user(o, &api, 0, false)?;
        table_head(&mut s);
        row(
            &mut s,
            &format!(
                "authenticated, sandboxed: a returning user's new session → first \
                 `assistant_message`, p50 ({} sessions; warm path `{path}`)",
                o.sessions
            ),
            cold50,
            warm50,
        );
        let _ = writeln!(s, "| same, p99 | {} | {} | | |", ms(cold99), ms(warm99));
        let _ = writeln!(
            s,
            "\n| authenticated, no warm children, first `assistant_message` | p50 | p99 |\n\
             |---|---:|---:|\n| in bubblewrap | {} | {} |\n| `--sandbox off` | {} | {} |\n\
             | the sandbox's own start-up cost (p50) | {:+.0} ms | |",
            ms(cold50),
            ms(cold99),
            ms(open50),
            ms(open99),
            (cold50.as_secs_f64() - open50.as_secs_f64()) * 1000.0
        );
    }

    if o.runs("burst") {
        println!("== {} sessions at once", o.burst);
        let mut bursts = Vec::new();
        for &n in &o.levels {
            bursts.push((n, burst(o, &api, n)?));
        }
        let _ = writeln!(
            s,
            "\n| {} new sessions at once | last session's first `assistant_message` | median | RSS idle (server + children) | RSS peak in the burst |",
            o.burst
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for (n, b) in &bursts {
            let _ = writeln!(
                s,
                "| {n} warm children | {} | {} | {} | {} |",
                ms(b.last),
                ms(b.median),
                mb(b.idle_kb),
                mb(b.peak_kb)
            );
        }
    }

    if o.runs("direct") {
        println!("== the CLI alone ({} runs each)", o.direct);
        let ([cold, ahead, switched, primed], extra, parked) = direct(o, &api)?;
        let _ = writeln!(
            s,
            "\n| the CLI alone, message → first `assistant` (median of {}) | |\n|---|---:|\n\
             | started by the message | {} |\n| started ahead (answered `initialize`) | {} |\n\
             | started ahead, then `set_model` + `set_permission_mode` | {} |\n\
             | started ahead, then `get_context_usage` answered | {} |",
            o.direct,
            ms(cold),
            ms(ahead),
            ms(switched),
            ms(primed)
        );
        let _ = writeln!(
            s,
            "| parked (`--await-claim`), `claim_session` sent → first `assistant` | {} |",
            parked.map_or("this CLI has no parked spares".into(), ms)
        );
        let _ = writeln!(
            s,
            "\nThe switched child printed before its answer: {}.",
            extra.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\nCommand: `scripts/bench.sh --warm`{}; load average before / after: {} / {} \
         (other work on the machine skews the numbers). Scripted model (`mock-api`), \
         `--max-running` 4 for the sequential runs and 10 for the bursts.",
        if o.quick { " with BENCH_QUICK=1" } else { "" },
        load_before,
        loadavg()
    );
    let path = o.out.join("warm.md");
    std::fs::write(&path, &s).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("\n{s}\n(written to {})", path.display());
    Ok(())
}
