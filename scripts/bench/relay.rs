//! `relay`: the benchmark of issue 4. It measures claude-ws side by side with websocketd
//! and the raw pipe on this machine and prints one table (also written to
//! `target/bench/report.md`). Run it through `scripts/bench.sh`, which installs
//! websocketd and builds everything first; or by hand:
//!
//! ```text
//! cargo build --release --bins --examples
//! cargo bench --bench relay -- [--quick] [--only relay,latency,idle,slow]
//! ```
//!
//! What it measures (each section is a function below):
//! 1. relay throughput: the stand-in replays a stream-json file of `assistant` events
//!    for one query; a native client (tungstenite) counts `assistant_message` frames
//!    until `query_end`. 1, 8 and 64 concurrent sessions; aggregate events/s.
//! 2. websocketd relaying the same lines (`cat FILE`), counting raw text frames; and
//!    the raw pipe (stand-in or cat → a line reader, no network).
//! 3. latency: many tiny queries on one session; query frame sent → `query_start`, and →
//!    the first child event (`system` init), minus the stand-in's own time to first
//!    byte when spawned directly and fed the same input.
//! 4. idle scale: 1,000 and 10,000 connected sessions: server RSS, threads, fds,
//!    children, time to connect them all (one client thread, plain sockets).
//! 5. slow consumer: a `flood` query whose client reads nothing; server RSS each second.
//!
//! Every process it starts is ended before it returns (and, should the benchmark die,
//! receives SIGTERM from the kernel: PR_SET_PDEATHSIG).

#[path = "../../tests/support/cli.rs"]
mod cli;
#[path = "../../tests/support/procs.rs"]
mod procs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use procs::{children_of, machine};

use serde_json::json;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

type Res<T> = Result<T, String>;
/// One part of the benchmark, adding its rows to the report.
type Section = fn(&Opts, &mut Report) -> Res<()>;

/// Size of one generated `assistant` line, newline excluded.
const LINE_BYTES: usize = 300;

struct Opts {
    server: PathBuf,
    fake: PathBuf,
    websocketd: Option<PathBuf>,
    out: PathBuf,
    quick: bool,
    only: Vec<String>,
    /// Events per relayed query.
    events: usize,
    /// Repetitions of each throughput measurement (the median is reported).
    reps: usize,
    sessions: Vec<usize>,
    latency_queries: usize,
    idle: Vec<usize>,
    slow_secs: u64,
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("relay: {e}");
        std::process::exit(1);
    }
}

fn parse_args() -> Res<Opts> {
    // target/release/deps/relay-HASH → target/release
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?
        .to_path_buf();
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut o = Opts {
        server: profile_dir.join("claude-ws"),
        fake: profile_dir.join("examples").join("fake-claude"),
        websocketd: which("websocketd"),
        out: profile_dir
            .parent()
            .map(|t| t.join("bench"))
            .unwrap_or_else(|| PathBuf::from("target/bench")),
        quick,
        only: Vec::new(),
        events: 100_000,
        reps: 5,
        sessions: vec![1, 8, 64],
        latency_queries: 500,
        idle: vec![1_000, 10_000],
        slow_secs: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = || -> Res<String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value"))
        };
        match name.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--quick" => o.quick = true,
            "--server" => o.server = value()?.into(),
            "--fake" => o.fake = value()?.into(),
            "--websocketd" => o.websocketd = Some(value()?.into()),
            "--out" => o.out = value()?.into(),
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            "--events" => o.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--reps" => o.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--sessions" => {
                o.sessions = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--sessions: {e}")))
                    .collect::<Res<_>>()?
            }
            "--no-websocketd" => o.websocketd = None,
            "--idle" => {
                o.idle = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--idle: {e}")))
                    .collect::<Res<_>>()?
            }
            "-h" | "--help" => {
                println!(
                    "relay [--quick] [--only relay,latency,idle,slow] [--events N] [--reps N]\n      \
                     [--sessions N,N] [--idle N,N] [--no-websocketd] [--server PATH] [--fake PATH] [--websocketd PATH] [--out DIR]\n\
                     BENCH_QUICK=1 is --quick."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if o.quick {
        o.events = o.events.min(25_000);
        o.reps = 1;
        o.latency_queries = 200;
        o.slow_secs = 5;
    }
    for (what, p) in [("server", &o.server), ("stand-in", &o.fake)] {
        if !p.exists() {
            return Err(format!(
                "{what} {} is missing: run `cargo build --release --bins --examples` first",
                p.display()
            ));
        }
    }
    Ok(o)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn wanted(o: &Opts, section: &str) -> bool {
    o.only.is_empty() || o.only.iter().any(|s| s == section)
}

// ---- the report ---------------------------------------------------------------------

/// One row of the table.
struct Row {
    what: String,
    value: String,
    compared: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    load_before: String,
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) -> &mut Row {
        self.rows.push(Row {
            what: what.into(),
            value: value.into(),
            compared: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: None,
        });
        let r = self.rows.last_mut().expect("just pushed");
        println!("  {}: {}", r.what, r.value);
        r
    }

    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("  note: {s}");
        self.notes.push(s);
    }

    fn render(&self, o: &Opts, started: Instant) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## claude-ws benchmark (issue 4)\n");
        let _ = writeln!(s, "Machine: {}\n", machine());
        let _ = writeln!(
            s,
            "Command: `scripts/bench.sh`{} (load average before / after: {} / {}; other \
             work on the machine skews the numbers).\n",
            if o.quick { " with BENCH_QUICK=1" } else { "" },
            self.load_before,
            loadavg()
        );
        let _ = writeln!(
            s,
            "Mode: {}; {} events/query, median of {} run(s); total run {:.0} s.\n",
            if o.quick { "quick" } else { "full" },
            o.events,
            o.reps,
            started.elapsed().as_secs_f64()
        );
        let _ = writeln!(
            s,
            "| measurement | claude-ws | compared with | ratio | target | met |"
        );
        let _ = writeln!(s, "|---|---:|---|---:|---|:-:|");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**NO**",
                None => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r.what, r.value, r.compared, r.ratio, r.target, met
            );
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

impl Row {
    fn vs(&mut self, compared: impl Into<String>, ratio: impl Into<String>) -> &mut Self {
        self.compared = compared.into();
        self.ratio = ratio.into();
        self
    }
    fn target(&mut self, target: impl Into<String>, met: bool) -> &mut Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

fn rate(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---- processes ----------------------------------------------------------------------

/// A process the benchmark started; ended (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "relay: {} pid {} ignored SIGTERM; SIGKILL",
            self.name,
            self.pid()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) only signals; it touches no memory of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Ask the kernel to SIGTERM the child should this (spawning) thread die first. Only
/// the main thread spawns, so the signal means "the benchmark is gone".
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}

/// A running claude-ws.
struct Server {
    proc: Proc,
    addr: String,
    _stdout: BufReader<ChildStdout>,
}

fn start_server(o: &Opts, name: &str, extra: &[&str]) -> Res<Server> {
    let log = std::fs::File::create(o.out.join(format!("server-{name}.log")))
        .map_err(|e| format!("server log: {e}"))?;
    let mut cmd = Command::new(&o.server);
    cmd.current_dir(&o.out)
        .args([
            "--port=0",
            "--http-port=0",
            &format!("--claude-bin={}", o.fake.display()),
            "--max-sessions=20000",
            "--max-sessions-per-peer=20000",
            "--max-running=1000",
            "--rate-limit=1000000/1",
            "--max-message-bytes=16777216",
            "--stop-grace-secs=1",
            // Children only where a section starts them (`settle` waits for none).
            "--warm-children=0",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {e}", o.server.display()))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let proc = Proc {
        child,
        name: "claude-ws",
    };
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .map_err(|e| format!("server ready line: {e}"))?;
    // ready ws=ws://HOST:PORT/ws http=http://HOST:PORT
    let addr = line
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.strip_prefix("ws=ws://"))
        .and_then(|w| w.strip_suffix("/ws"))
        .ok_or_else(|| {
            format!(
                "the server printed no ready line ({line:?}); see {}",
                o.out.join(format!("server-{name}.log")).display()
            )
        })?
        .to_string();
    Ok(Server {
        proc,
        addr,
        _stdout: stdout,
    })
}

impl Server {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Wait until the server has no children left and its thread count has held still
    /// for 100 ms (sessions of a previous run gone, their threads ended).
    fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !children_of(self.pid()).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let (mut threads, mut still) = (proc_stats(self.pid()).1, 0);
        while still < 5 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            let now = proc_stats(self.pid()).1;
            still = if now == threads { still + 1 } else { 0 };
            threads = now;
        }
    }
}

/// websocketd relaying `file` with `cat`.
fn start_websocketd(bin: &Path, file: &Path) -> Res<(Proc, String)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut cmd = Command::new(bin);
    cmd.args([
        &format!("--port={port}"),
        "--address=127.0.0.1",
        "--loglevel=error",
        "cat",
    ])
    .arg(file)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|e| format!("start websocketd: {e}"))?;
    let proc = Proc {
        child,
        name: "websocketd",
    };
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            return Err("websocketd did not start listening".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok((proc, addr))
}

/// A number field of /proc/PID/status (kB for memory), 0 if missing.
fn proc_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// VmRSS (kB), thread count and open fds of `pid`.
fn proc_stats(pid: u32) -> (u64, u64, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (proc_field(pid, "VmRSS:"), proc_field(pid, "Threads:"), fds)
}

/// CPU seconds of process `pid` so far, all its threads (ended ones too; not its
/// children), to the nanosecond: the process's CPU clock. (/proc counts in 10 ms
/// ticks, too coarse for runs of a few tenths of a second.)
fn proc_cpu_secs(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls write only into the values we own.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut t) == 0
    };
    if ok {
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    } else {
        0.0
    }
}

/// Raise this process's open-file soft limit to `want` (at most the hard limit).
fn raise_nofile(want: u64) -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let target = want.min(lim.rlim_max);
        if lim.rlim_cur < target {
            let new = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                lim.rlim_cur = new.rlim_cur;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

// ---- clients ------------------------------------------------------------------------

type Ws = WebSocket<TcpStream>;

fn connect(addr: &str, path: &str, config: Option<WebSocketConfig>) -> Res<Ws> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tungstenite::client::client_with_config(url.as_str(), tcp, config)
        .map_err(|e| format!("handshake with {url}: {e}"))?;
    Ok(ws)
}

/// Connect to claude-ws and read `connection_established`.
fn connect_session(addr: &str, config: Option<WebSocketConfig>) -> Res<Ws> {
    let mut ws = connect(addr, "/ws", config)?;
    let hello = next_text(&mut ws)?;
    if !hello.starts_with("{\"type\":\"connection_established\"") {
        return Err(format!("expected connection_established, got {hello}"));
    }
    Ok(ws)
}

fn next_text(ws: &mut Ws) -> Res<String> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(t.as_str().to_string()),
            Ok(Message::Close(c)) => return Err(format!("closed: {c:?}")),
            Ok(_) => continue,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn send_query(ws: &mut Ws, prompt: &str) -> Res<()> {
    let q = json!({"type": "query", "prompt": prompt, "options": {}});
    ws.send(Message::text(q.to_string()))
        .map_err(|e| format!("send: {e}"))
}

/// Read frames until `query_end`; the number of `assistant_message` frames.
fn count_until_end(ws: &mut Ws) -> Res<u64> {
    let mut n = 0;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let b = t.as_bytes();
                if b.starts_with(b"{\"type\":\"assistant_message\"") {
                    n += 1;
                } else if b.starts_with(b"{\"type\":\"query_end\"") {
                    if !t.contains("\"completed\"") {
                        return Err(format!("query did not complete: {t}"));
                    }
                    return Ok(n);
                } else if b.starts_with(b"{\"type\":\"error\"") {
                    return Err(format!("server error: {t}"));
                }
            }
            Ok(Message::Close(c)) => return Err(format!("closed mid-query: {c:?}")),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Count text frames until the server closes.
fn count_until_close(ws: &mut Ws) -> Res<u64> {
    let mut n = 0;
    loop {
        match ws.read() {
            Ok(Message::Text(_)) => n += 1,
            Ok(Message::Close(_)) => return Ok(n),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(n)
            }
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionReset
                    || e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                return Ok(n)
            }
            Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return Ok(n),
            Err(e) => return Err(format!("read after {n} frames: {e}")),
        }
    }
}

fn close(mut ws: Ws) {
    let _ = ws.close(None);
    let _ = ws.flush();
    let _ = ws.get_mut().set_read_timeout(Some(Duration::from_secs(2)));
    while ws.read().is_ok() {}
}

// ---- 1/2: relay throughput ----------------------------------------------------------

/// A stream-json file of `n` `assistant` lines of [`LINE_BYTES`] bytes each.
fn generate_events(path: &Path, n: usize) -> Res<()> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BufWriter::new(file);
    for i in 0..n {
        // `"type"` first, as the CLI writes it (serde_json sorts the other keys).
        let rest = json!({
            "message": {
                "id": format!("msg_bench_{i:08}"), "type": "message", "role": "assistant",
                "model": "claude-bench",
                "content": [{"type": "text", "text": ""}],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
            "parent_tool_use_id": null,
            "session_id": "be4c0000-0000-4000-8000-000000000000",
            "uuid": format!("be4c0000-0000-4000-8000-{i:012x}"),
        })
        .to_string();
        let mut line = format!("{{\"type\":\"assistant\",{}", &rest[1..]);
        let pad = LINE_BYTES.saturating_sub(line.len());
        let text: String = "word ".chars().cycle().take(pad).collect();
        line = line.replacen("\"text\":\"\"", &format!("\"text\":\"{text}\""), 1);
        out.write_all(line.as_bytes())
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// Run `n` clients at once: each prepares (untimed), waits at a barrier, then runs:
/// `run` returns how many events it counted and when the stream's last message
/// arrived (what it does after that, such as closing, is not timed). Returns the
/// seconds from the barrier to the last stream's end, and the total count; every client
/// must have counted `expect`.
fn run_clients<P: Send>(
    n: usize,
    expect: u64,
    what: &str,
    prepare: impl Fn() -> Res<P> + Sync,
    run: impl Fn(P) -> Res<(u64, Instant)> + Sync,
) -> Res<(f64, u64)> {
    let barrier = Barrier::new(n + 1);
    let (t0, results) = thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (barrier, prepare, run) = (&barrier, &prepare, &run);
                s.spawn(move || -> Res<(u64, Instant)> {
                    let prepared = prepare();
                    barrier.wait();
                    run(prepared?)
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let results: Vec<Res<(u64, Instant)>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect();
        (t0, results)
    });
    let mut total = 0;
    let mut last = t0;
    for r in results {
        let (count, end) = r?;
        if count != expect {
            return Err(format!(
                "a {what} counted {count} events, expected {expect}"
            ));
        }
        total += count;
        last = last.max(end);
    }
    Ok((last.duration_since(t0).as_secs_f64(), total))
}

/// For each session count: the median events/s over the repetitions of `run(n)`, which
/// returns (seconds, events); and the CPU seconds per event that process `pid` spent
/// in the one-session runs.
fn measure_rates(
    o: &Opts,
    pid: u32,
    expect: u64,
    who: &str,
    run: impl Fn(usize) -> Res<(f64, u64)>,
) -> Res<(BTreeMap<usize, f64>, Option<f64>)> {
    let mut medians = BTreeMap::new();
    let mut cpu = None;
    for &n in &o.sessions {
        let mut rates = Vec::new();
        let cpu0 = proc_cpu_secs(pid);
        for _ in 0..o.reps {
            let (secs, total) = run(n)?;
            rates.push(total as f64 / secs);
        }
        if n == 1 {
            let events = (o.reps as u64 * expect) as f64;
            let used = proc_cpu_secs(pid) - cpu0;
            cpu = (used > 0.0).then(|| used / events);
        }
        let r = median(rates);
        println!("  {who}, {n} at once: {} events/s", rate(r));
        medians.insert(n, r);
    }
    Ok((medians, cpu))
}

/// `n` claude-ws sessions at once, each replaying `file` in one query: (seconds, events).
fn relay_claude_ws(server: &Server, n: usize, file: &Path, expect: u64) -> Res<(f64, u64)> {
    let prompt = format!("replay {}", file.display());
    let result = run_clients(
        n,
        expect,
        "claude-ws session",
        || {
            let mut ws = connect_session(&server.addr, None)?;
            // Warm-up: the first query starts the session's child.
            send_query(&mut ws, "warm up")?;
            count_until_end(&mut ws)?;
            Ok(ws)
        },
        |mut ws| {
            send_query(&mut ws, &prompt)?;
            let count = count_until_end(&mut ws)?;
            let end = Instant::now(); // `query_end` arrived
            close(ws);
            Ok((count, end))
        },
    );
    server.settle(Duration::from_secs(10));
    result
}

/// A JSON frame's `type`, whatever its key order.
fn frame_type(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(v.get("type")?.as_str()?.to_string())
}

/// `n` `/sdk` sessions at once, each replaying `file` in one turn: (seconds, events).
/// The same stand-in and stream as [`relay_claude_ws`], its lines relayed untranslated.
fn relay_sdk(server: &Server, n: usize, file: &Path, expect: u64) -> Res<(f64, u64)> {
    let user = |text: &str| {
        let mut l = user_line(text);
        l.pop(); // a frame is one line, without its newline
        String::from_utf8(l)
            .map(Message::text)
            .map_err(|e| e.to_string())
    };
    let until_result = |ws: &mut Ws| -> Res<u64> {
        let mut n = 0;
        loop {
            let t = next_text(ws)?;
            // The stand-in writes `type` first; other lines (the CLI's result, the
            // server's own frames) may have their keys in any order.
            if t.starts_with("{\"type\":\"assistant\"") {
                n += 1;
            } else if frame_type(&t).as_deref() == Some("result") {
                return Ok(n);
            }
        }
    };
    let prompt = format!("replay {}", file.display());
    let result = run_clients(
        n,
        expect,
        "claude-ws /sdk session",
        || {
            let mut ws = connect(&server.addr, "/sdk", None)?;
            ws.send(Message::text(r#"{"type":"sdk_start","options":{}}"#))
                .map_err(|e| format!("send: {e}"))?;
            let started = next_text(&mut ws)?;
            if frame_type(&started).as_deref() != Some("sdk_started") {
                return Err(format!("expected sdk_started, got {started}"));
            }
            // Warm-up: the first turn, as the /ws sessions have one.
            ws.send(user("warm up")?)
                .map_err(|e| format!("send: {e}"))?;
            until_result(&mut ws)?;
            Ok(ws)
        },
        |mut ws| {
            ws.send(user(&prompt)?).map_err(|e| format!("send: {e}"))?;
            let count = until_result(&mut ws)?;
            let end = Instant::now(); // `result` arrived
            close(ws);
            Ok((count, end))
        },
    );
    server.settle(Duration::from_secs(10));
    result
}

/// `n` websocketd connections at once, each relaying the file: (seconds, frames).
fn relay_websocketd(addr: &str, n: usize, expect: u64) -> Res<(f64, u64)> {
    run_clients(
        n,
        expect,
        "websocketd client",
        || Ok(()),
        |()| {
            // websocketd starts `cat` per connection: the spawn is in the time.
            let mut ws = connect(addr, "/", None)?;
            let count = count_until_close(&mut ws)?;
            Ok((count, Instant::now())) // the close frame that ends the stream arrived
        },
    )
}

fn user_line(text: &str) -> Vec<u8> {
    let mut l = json!({
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": null,
        "session_id": "default"
    })
    .to_string()
    .into_bytes();
    l.push(b'\n');
    l
}

/// A stand-in spawned directly, speaking stream-json on its pipes.
struct Direct {
    proc: Proc,
    stdin: std::process::ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn spawn_direct(o: &Opts) -> Res<Direct> {
    let mut cmd = Command::new(&o.fake);
    cmd.args(cli::STREAM_JSON_ARGS)
        .current_dir(&o.out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start the stand-in: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    Ok(Direct {
        proc: Proc {
            child,
            name: "fake-claude",
        },
        stdin,
        stdout: BufReader::with_capacity(64 * 1024, stdout),
    })
}

impl Direct {
    fn ask(&mut self, prompt: &str) -> Res<()> {
        self.stdin
            .write_all(&user_line(prompt))
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("write to the stand-in: {e}"))
    }

    /// Read lines until the `result`: (assistant lines, when the first line arrived).
    fn until_result(&mut self, line: &mut Vec<u8>) -> Res<(u64, Option<Instant>)> {
        let mut n = 0;
        let mut first = None;
        loop {
            line.clear();
            match self.stdout.read_until(b'\n', line) {
                Ok(0) => return Err("the stand-in closed stdout".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read the stand-in: {e}")),
            }
            first.get_or_insert_with(Instant::now);
            if line.starts_with(b"{\"type\":\"assistant\"") {
                n += 1;
            } else if line.starts_with(b"{\"type\":\"result\"") {
                return Ok((n, first));
            }
        }
    }

    fn finish(mut self) {
        drop(self.stdin);
        let mut sink = Vec::new();
        let _ = self.stdout.read_to_end(&mut sink);
        self.proc.stop();
    }
}

/// The stand-in replaying the file straight into a line reader: (seconds, lines).
fn pipe_stand_in(o: &Opts, file: &Path) -> Res<(f64, u64)> {
    let mut d = spawn_direct(o)?;
    let mut line = Vec::new();
    d.ask("warm up")?;
    d.until_result(&mut line)?;
    let t0 = Instant::now();
    d.ask(&format!("replay {}", file.display()))?;
    let (n, _) = d.until_result(&mut line)?;
    let secs = t0.elapsed().as_secs_f64();
    d.finish();
    Ok((secs, n))
}

/// `cat FILE` into a line reader: (seconds, lines).
fn pipe_cat(file: &Path) -> Res<(f64, u64)> {
    let t0 = Instant::now();
    let mut cmd = Command::new("cat");
    cmd.arg(file).stdout(Stdio::piped()).stdin(Stdio::null());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("cat: {e}"))?;
    let mut out = BufReader::with_capacity(64 * 1024, child.stdout.take().ok_or("no stdout")?);
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        match out.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => n += 1,
            Err(e) => return Err(e.to_string()),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = child.wait();
    Ok((secs, n))
}

fn section_relay(o: &Opts, rep: &mut Report) -> Res<()> {
    let file = o.out.join(format!("events-{}.jsonl", o.events));
    generate_events(&file, o.events)?;
    let expect = o.events as u64;
    println!(
        "relay throughput ({} events of {LINE_BYTES} bytes per query)",
        o.events
    );

    let mut pipe = Vec::new();
    let mut cat = Vec::new();
    for _ in 0..o.reps {
        let (secs, n) = pipe_stand_in(o, &file)?;
        if n != expect {
            return Err(format!(
                "the stand-in replayed {n} lines, expected {expect}"
            ));
        }
        pipe.push(n as f64 / secs);
        let (secs, n) = pipe_cat(&file)?;
        cat.push(n as f64 / secs);
    }
    let pipe = median(pipe);
    let cat = median(cat);

    // Events/s per session count, and CPU seconds the server used per relayed event
    // in the 1-session runs.
    let (ours, our_cpu) = {
        let server = start_server(o, "relay", &[])?;
        let measured = measure_rates(o, server.pid(), expect, "claude-ws", |n| {
            relay_claude_ws(&server, n, &file, expect)
        })?;
        let (_, threads, _) = proc_stats(server.pid());
        rep.note(format!(
            "claude-ws during the relay runs: peak RSS {}, {threads} threads after them",
            mb(proc_field(server.pid(), "VmHWM:"))
        ));
        let (sdk, _) = measure_rates(o, server.pid(), expect, "claude-ws /sdk", |n| {
            relay_sdk(&server, n, &file, expect)
        })?;
        for (&n, &r) in &sdk {
            let ws = measured.0.get(&n).copied().unwrap_or(f64::NAN);
            rep.row(format!("relay /sdk, {n} session(s) (events/s)"), rate(r))
                .vs(format!("/ws {}", rate(ws)), format!("{:.2}×", r / ws))
                .target("≥ 1.0× /ws (nothing translated)", r >= ws);
        }
        measured
    };

    let mut theirs = BTreeMap::new();
    let mut their_cpu = None;
    match &o.websocketd {
        Some(bin) => {
            let (wsd, addr) = start_websocketd(bin, &file)?;
            (theirs, their_cpu) = measure_rates(o, wsd.pid(), expect, "websocketd", |n| {
                relay_websocketd(&addr, n, expect)
            })?;
        }
        None => {
            rep.note("websocketd not found: its rows are missing (scripts/bench.sh installs it)")
        }
    }

    for (&n, &r) in &ours {
        let what = if n == 1 {
            "relay, 1 session (events/s)".to_string()
        } else {
            format!("relay, {n} sessions aggregate (events/s)")
        };
        let row = rep.row(what, rate(r));
        if let Some(&w) = theirs.get(&n) {
            row.vs(format!("websocketd {}", rate(w)), format!("{:.2}×", r / w))
                .target("≥ 1.0× websocketd", r >= w);
        }
        if n == 1 {
            rep.row("relay, 1 session vs raw pipe", rate(r))
                .vs(
                    format!("stand-in → reader {}", rate(pipe)),
                    format!("{:.0}%", 100.0 * r / pipe),
                )
                .target("≥ 50% of the pipe", r >= pipe / 2.0);
        }
    }
    match our_cpu {
        Some(c) => {
            let row = rep.row(
                "server CPU per event, 1 session",
                format!("{:.2} µs", c * 1e6),
            );
            if let Some(w) = their_cpu {
                row.vs(
                    format!("websocketd {:.2} µs (no JSON work)", w * 1e6),
                    format!("{:.2}×", c / w),
                );
            }
        }
        None => {
            rep.row(
                "server CPU per event, 1 session",
                "not measured (the CPU clock of the process could not be read)".to_string(),
            );
        }
    }
    rep.row(
        "raw pipe: stand-in replay → line reader (lines/s)",
        rate(pipe),
    );
    rep.row("raw pipe: cat → line reader (lines/s)", rate(cat));
    rep.note(
        "relay: each claude-ws session first runs one warm-up query (its child starts then), \
         the timed query replays the file; websocketd runs `cat FILE` per connection, its \
         process start included in the time",
    );
    Ok(())
}

// ---- 3: latency ---------------------------------------------------------------------

fn section_latency(o: &Opts, rep: &mut Report) -> Res<()> {
    let q = o.latency_queries;
    let warm = 20;
    println!("latency ({q} echo queries on one session)");

    // The stand-in alone: user line written → first stdout line (its `system` init).
    let mut direct = Vec::with_capacity(q);
    {
        let mut d = spawn_direct(o)?;
        let mut line = Vec::new();
        for i in 0..warm + q {
            let t0 = Instant::now();
            d.ask("hi")?;
            let (_, first) = d.until_result(&mut line)?;
            if i >= warm {
                direct.push(first.ok_or("no output")?.duration_since(t0));
            }
        }
        d.finish();
    }

    let server = start_server(o, "latency", &[])?;
    let mut ws = connect_session(&server.addr, None)?;
    let mut start = Vec::with_capacity(q);
    let mut first = Vec::with_capacity(q);
    for i in 0..warm + q {
        let t0 = Instant::now();
        send_query(&mut ws, "hi")?;
        let a = next_text(&mut ws)?;
        let t_start = Instant::now();
        let b = next_text(&mut ws)?;
        let t_first = Instant::now();
        if !a.starts_with("{\"type\":\"query_start\"")
            || !b.starts_with("{\"type\":\"system_message\"")
        {
            return Err(format!("unexpected first frames: {a} / {b}"));
        }
        count_until_end(&mut ws)?;
        if i >= warm {
            start.push(t_start.duration_since(t0));
            first.push(t_first.duration_since(t0));
        }
    }
    close(ws);
    drop(server);

    direct.sort();
    start.sort();
    first.sort();
    let p = |v: &[Duration], q| percentile(v, q);
    let added = |q| p(&first, q).saturating_sub(p(&direct, q));
    rep.row(
        "latency: query → query_start, p50 / p99",
        format!("{} / {}", us(p(&start, 0.5)), us(p(&start, 0.99))),
    );
    rep.row(
        "latency: query → first child event, p50 / p99",
        format!("{} / {}", us(p(&first, 0.5)), us(p(&first, 0.99))),
    )
    .vs(
        format!(
            "stand-in alone {} / {}",
            us(p(&direct, 0.5)),
            us(p(&direct, 0.99))
        ),
        "",
    );
    rep.row(
        "latency added by claude-ws, p50 / p99",
        format!("{} / {}", us(added(0.5)), us(added(0.99))),
    )
    .target("p99 < 1 ms", added(0.99) < Duration::from_millis(1));
    rep.note(format!(
        "latency: {q} queries after {warm} warm-up ones; added = percentile of (query → first \
         child event) minus the same percentile of the stand-in's own time to first line"
    ));
    Ok(())
}

// ---- 4: idle scale ------------------------------------------------------------------

fn section_idle(o: &Opts, rep: &mut Report) -> Res<()> {
    let most = o.idle.iter().copied().max().unwrap_or(0) as u64;
    let (soft, hard) = raise_nofile(most + 256);
    for &n in &o.idle {
        println!("idle scale: {n} sessions");
        if soft < n as u64 + 64 {
            rep.row(format!("idle {n} sessions"), "not run").target(
                format!(
                    "the client's open-file limit is {soft} (hard {hard}), below the {} \
                         needed",
                    n + 64
                ),
                false,
            );
            continue;
        }
        let server = start_server(o, &format!("idle-{n}"), &[])?;
        let (rss0, threads0, fds0) = proc_stats(server.pid());
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let mut clients = Vec::with_capacity(n);
        let t0 = Instant::now();
        for i in 0..n {
            match connect_session(&server.addr, Some(config)) {
                Ok(ws) => clients.push(ws),
                Err(e) => {
                    return Err(format!("idle: session {} of {n} failed: {e}", i + 1));
                }
            }
        }
        let connect = t0.elapsed();
        thread::sleep(Duration::from_secs(1));
        let (rss, threads, fds) = proc_stats(server.pid());
        let children = children_of(server.pid()).len();
        drop(clients);
        let per = (rss.saturating_sub(rss0)) as f64 / n as f64;
        let row = rep.row(
            format!("idle {n} sessions: server RSS"),
            format!("{} ({per:.0} kB/session over {})", mb(rss), mb(rss0)),
        );
        if n >= 10_000 {
            row.target("< 256 MB", rss < 256 * 1024);
        }
        rep.row(
            format!("idle {n} sessions: threads / fds / children"),
            format!("{threads} / {fds} / {children} (idle server: {threads0} / {fds0})"),
        )
        .target("no child per idle session", children == 0);
        rep.row(
            format!("idle {n} sessions: time to connect all"),
            format!(
                "{:.2} s ({} sessions/s)",
                connect.as_secs_f64(),
                rate(n as f64 / connect.as_secs_f64())
            ),
        );
        drop(server);
    }
    rep.note(
        "idle: one client thread opens plain sockets and does each handshake in turn, reading \
         connection_established; measured 1 s after the last one connected",
    );
    Ok(())
}

// ---- 5: slow consumer ---------------------------------------------------------------

fn section_slow(o: &Opts, rep: &mut Report) -> Res<()> {
    let secs = o.slow_secs;
    println!("slow consumer ({secs} s)");
    let server = start_server(
        o,
        "slow",
        &["--stall-timeout-secs=600", "--ping-interval-secs=600"],
    )?;
    let mut ws = connect_session(&server.addr, None)?;
    let (before, _, _) = proc_stats(server.pid());
    // 1 GB of output: far more than any buffer on the way.
    send_query(&mut ws, "flood 3000000 300")?;
    let mut samples = Vec::new();
    for _ in 0..secs {
        thread::sleep(Duration::from_secs(1));
        samples.push(proc_stats(server.pid()).0);
    }
    let unread = unread_bytes(ws.get_ref());
    drop(ws);
    drop(server);
    let min = samples.iter().copied().min().unwrap_or(0);
    let max = samples.iter().copied().max().unwrap_or(0);
    rep.row(
        format!("slow consumer: server RSS over {secs} s, min / max"),
        format!(
            "{} / {} (before the query {})",
            mb(min),
            mb(max),
            mb(before)
        ),
    )
    .target("flat", max.saturating_sub(min) < 4 * 1024);
    rep.note(format!(
        "slow consumer: the client sent `flood 3000000 300` and read nothing; {} were waiting \
         unread in its socket at the end",
        mb(unread / 1024)
    ));
    Ok(())
}

fn unread_bytes(tcp: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int we own.
    if unsafe { libc::ioctl(tcp.as_raw_fd(), libc::FIONREAD, &mut n) } == 0 {
        n.max(0) as u64
    } else {
        0
    }
}

// ---- main ---------------------------------------------------------------------------

fn run(o: &Opts) -> Res<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let mut rep = Report {
        load_before: loadavg(),
        ..Report::default()
    };
    let sections: [(&str, Section); 4] = [
        ("relay", section_relay),
        ("latency", section_latency),
        ("idle", section_idle),
        ("slow", section_slow),
    ];
    let mut failed = Vec::new();
    for (name, f) in sections {
        if !wanted(o, name) {
            continue;
        }
        if let Err(e) = f(o, &mut rep) {
            eprintln!("relay: section {name} failed: {e}");
            rep.note(format!("section {name} FAILED: {e}"));
            failed.push(name);
        }
    }
    let text = rep.render(o, started);
    let path = o.out.join("report.md");
    std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("\n{text}\n(written to {})", path.display());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("sections failed: {}", failed.join(", ")))
    }
}
