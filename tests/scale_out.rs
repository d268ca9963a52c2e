//! Issue 13: two instances behind Debian's nginx, run with `deploy/nginx.conf` itself
//! (its instance addresses and listen port replaced): new sessions spread over both, a
//! reattach returns to its instance, and SIGTERM drains one instance mid-query — the
//! query finishes, its client gets 1012, reconnects through nginx, lands on the other
//! instance and recalls its conversation from the shared state directory. Against the
//! REAL Claude Code CLI and the scripted Messages API.
//!
//! nginx is installed by `scripts/install-nginx.sh` when missing (apt-get, as root).
//! `bench_sessions_and_queries_through_nginx` (ignored; `scripts/bench-nginx.sh` runs it)
//! measures one instance against two through nginx, with the stand-in CLI.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use support::*;

/// nginx in front of two instances, from a generated configuration in a temp dir.
struct Nginx {
    proc: Child,
    port: u16,
    dir: TempDir,
}

impl Nginx {
    /// Start nginx routing by `deploy/nginx.conf` to instances `a` and `b` (their
    /// `host:port` WebSocket addresses).
    fn start(a: &str, b: &str) -> Nginx {
        Nginx::with_site(|port, _| {
            let site = std::fs::read_to_string(repo().join("deploy/nginx.conf"))
                .expect("deploy/nginx.conf")
                .replace("127.0.0.1:8101", a)
                .replace("127.0.0.1:8102", b)
                .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
            assert!(site.contains(a) && site.contains(b), "{site}");
            site
        })
    }

    /// Start nginx with the site `make(port, dir)` returns: an http-context file, given
    /// the port to listen on and the directory nginx runs in.
    fn with_site(make: impl FnOnce(u16, &Path) -> String) -> Nginx {
        let nginx = install_nginx();
        let dir = TempDir::new("nginx");
        let port = free_port();
        let site = make(port, dir.path());
        std::fs::write(dir.path().join("claude-ws.conf"), site).unwrap();
        let d = dir.path().display();
        // As root nginx's workers would switch to `nobody`; stay who we are.
        let user = if unsafe_getuid() == 0 {
            "user root;"
        } else {
            ""
        };
        let main = format!(
            "{user}\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             include {d}/claude-ws.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let proc = Command::new(&nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let n = Nginx { proc, port, dir };
        assert!(
            eventually(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "nginx did not listen; error.log:\n{}",
            n.error_log()
        );
        n
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Open a WebSocket through nginx (`query` after `/ws`, e.g. `?session_id=…`) and
    /// read `connection_established`.
    fn connect(&self, query: &str) -> (Client, Value) {
        connect_via(self.port, query).unwrap_or_else(|e| {
            panic!("through nginx: {e}\nnginx error.log:\n{}", self.error_log())
        })
    }
}

/// A client through nginx on `port`, with its `connection_established`.
fn connect_via(port: u16, query: &str) -> Result<(Client, Value), String> {
    let url = format!("ws://127.0.0.1:{port}/ws{query}");
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, _) = tungstenite::client(url.as_str(), tcp).map_err(|e| format!("{e:?}"))?;
    let mut c = Client {
        ws,
        session_id: String::new(),
        capabilities: Value::Null,
        protocol: None,
    };
    let hello = c.recv();
    assert_eq!(hello["type"], "connection_established", "{hello}");
    c.session_id = hello["data"]["session_id"].as_str().unwrap().to_string();
    Ok((c, hello))
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown, by the pid of the nginx this test started.
        signal(self.proc.id(), libc::SIGTERM);
        let _ = self.proc.wait();
        if std::thread::panicking() {
            eprintln!("---- nginx error.log ----\n{}", self.error_log());
        }
    }
}

fn unsafe_getuid() -> u32 {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) only sends a signal, to a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/install-nginx.sh`: the nginx binary, installed when missing.
fn install_nginx() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/install-nginx.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-nginx.sh");
    assert!(out.status.success(), "scripts/install-nginx.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A port nothing listens on right now (for nginx, which cannot report the one it got).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An instance `id` sharing `state` (the CLI state directory) and `work` (the directory
/// every query runs in: the CLI keeps conversations per directory).
fn instance(opts: ServerOptions, id: &str, state: &Path, work: &Path) -> TestServer {
    opts.arg(&format!("--instance-id={id}"))
        .arg(&format!("--state-dir={}", state.display()))
        .arg(&format!("--workspace-root={}", work.display()))
        .arg("--drain-timeout-secs=60")
        .start()
}

fn ready(s: &TestServer) -> (u16, Value) {
    s.get("/ready")
}

#[test]
fn two_instances_behind_nginx_spread_stick_and_hand_over_on_drain() {
    let api = MockApi::start();
    let shared = TempDir::new("shared");
    let (state, work) = (shared.subdir("state"), shared.subdir("work"));
    let a = instance(ServerOptions::real(&api), "a", &state, &work);
    let b = instance(ServerOptions::real(&api), "b", &state, &work);
    let nginx = Nginx::start(&a.ws_authority(), &b.ws_authority());
    assert!(eventually(WAIT, || ready(&a).0 == 200 && ready(&b).0 == 200));
    let cwd = json!({"cwd": work.display().to_string()});

    // New sessions spread over both instances (round robin).
    let mut clients: Vec<Client> = (0..4).map(|_| nginx.connect("").0).collect();
    let on = |prefix: &str, cs: &[Client]| {
        cs.iter()
            .filter(|c| c.session_id.starts_with(prefix))
            .count()
    };
    assert_eq!(on("a-", &clients), 2, "{:?}", ids(&clients));
    assert_eq!(on("b-", &clients), 2, "{:?}", ids(&clients));
    assert_eq!(a.sessions().len(), 2);
    assert_eq!(b.sessions().len(), 2);

    // A client of each instance drops its connection and reattaches through nginx:
    // it returns to its own instance (`resumed: true` only the holder can say).
    for prefix in ["a-", "b-"] {
        let i = clients
            .iter()
            .position(|c| c.session_id.starts_with(prefix))
            .unwrap();
        let mut c = clients.remove(i);
        let msgs = c.query(&format!("remember the word {prefix}zebra"), cwd.clone());
        assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
        let last = msgs.last().unwrap()["seq"].as_u64().unwrap();
        let id = c.session_id.clone();
        drop(c); // no close frame: the session waits for its client
        let (c, hello) = nginx.connect(&format!("?session_id={id}&last_seq={last}"));
        assert_eq!(hello["data"]["resumed"], true, "{hello}");
        assert_eq!(c.session_id, id);
        clients.push(c);
    }

    // SIGTERM instance a while its client's query runs (the client that reattached,
    // whose conversation holds the zebra).
    let i = clients
        .iter()
        .rposition(|c| c.session_id.starts_with("a-"))
        .unwrap();
    let mut c = clients.remove(i);
    let id = c.session_id.clone();
    c.send(json!({"type": "query", "prompt": "slow 30 100", "options": cwd}));
    let mut msgs = c.until("system_message");
    signal(a.pid(), libc::SIGTERM);
    // While it drains: not ready, and new sessions are refused.
    assert!(eventually(WAIT, || ready(&a).0 == 503), "{:?}", ready(&a));
    let (_, why) = ready(&a);
    assert_eq!(why["reason"], "draining", "{why}");
    let refused = a.try_connect(&a.ws_url, &[]).err().unwrap();
    assert!(refused.starts_with("HTTP 503"), "{refused}");
    assert!(refused.contains("draining"), "{refused}");
    assert_eq!(ready(&b).0, 200);
    // The running query finishes, then the client is closed with 1012.
    let end = loop {
        match c.next_event() {
            Ok(m) => msgs.push(m),
            Err(e) => break e,
        }
    };
    assert!(end.starts_with("close 1012"), "{end}\n{msgs:?}");
    let query_end = only(&msgs, "query_end");
    assert_eq!(query_end["outcome"], "completed", "{msgs:?}");
    assert!(assistant_text(&msgs).contains("word29"), "{msgs:?}");
    assert!(
        a.logs().contains("draining before shutting down"),
        "{}",
        a.logs()
    );

    // It reconnects with its session id through nginx, lands on b and goes on with
    // its conversation.
    let (mut c, hello) = nginx.connect(&format!("?session_id={id}&last_seq=0"));
    assert_eq!(hello["data"]["resumed"], "conversation", "{hello}");
    assert_eq!(hello["data"]["session_id"], id.as_str());
    assert_eq!(hello["seq"], 1, "{hello}");
    assert!(b.sessions().iter().any(|r| r["session_id"] == id.as_str()));
    let msgs = c.query("recall", cwd.clone());
    assert!(
        assistant_text(&msgs).contains("remember the word a-zebra"),
        "{}",
        assistant_text(&msgs)
    );
    assert!(b.logs().contains("resuming conversation"), "{}", b.logs());
    let status = a.stop();
    assert!(status.success(), "{status}");
    drop(clients);
}

fn ids(cs: &[Client]) -> Vec<&str> {
    cs.iter().map(|c| c.session_id.as_str()).collect()
}

/// Sessions and queries per second through nginx, to one instance and to two (the
/// stand-in CLI answers at once, so this measures the relay, nginx and the server).
/// `scripts/bench-nginx.sh` runs it; docs/operations.md quotes its figures.
#[test]
#[ignore]
fn bench_sessions_and_queries_through_nginx() {
    let sessions: usize = env_or("BENCH_SESSIONS", 50);
    let queries: usize = env_or("BENCH_QUERIES", 20);
    let shared = TempDir::new("bench");
    let (state, work) = (shared.subdir("state"), shared.subdir("work"));
    let start = |id: &str| {
        ServerOptions::fake()
            .env("RUST_LOG", "warn")
            .arg(&format!("--max-running={sessions}"))
            .arg("--rate-limit=1000000/1")
            .arg(&format!("--max-sessions-per-peer={}", sessions.max(1)))
            .arg(&format!("--max-sessions={}", sessions.max(1)))
            .arg(&format!("--instance-id={id}"))
            .arg(&format!("--state-dir={}", state.display()))
            .arg(&format!("--workspace-root={}", work.display()))
            .start()
    };
    let a = start("a");
    let b = start("b");
    for (label, second) in [("one instance", None), ("two instances", Some(&b))] {
        // One instance: both upstream addresses are the same server.
        let other = second.map_or(a.ws_authority(), |s| s.ws_authority());
        let nginx = Nginx::start(&a.ws_authority(), &other);
        let t0 = Instant::now();
        let threads: Vec<_> = (0..sessions)
            .map(|_| {
                let port = nginx.port;
                std::thread::spawn(move || {
                    let (mut c, _) = connect_via(port, "").expect("through nginx");
                    for q in 0..queries {
                        let msgs = c.query(&format!("q{q}"), json!({}));
                        assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
                    }
                    c.ws.close(Some(NORMAL_CLOSE)).ok();
                    let _ = c.closed();
                })
            })
            .collect();
        for t in threads {
            t.join().expect("bench client");
        }
        let took = t0.elapsed();
        let total = (sessions * queries) as f64;
        println!(
            "BENCH {label}: {sessions} sessions x {queries} queries in {:.2} s: \
             {:.0} queries/s, {:.1} sessions/s",
            took.as_secs_f64(),
            total / took.as_secs_f64(),
            sessions as f64 / took.as_secs_f64()
        );
        drop(nginx);
        assert!(eventually(WAIT, || a.sessions().is_empty() && b.sessions().is_empty()));
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// deploy/nginx-tls.conf: the page, /health and a WebSocket upgrade through TLS to one
/// instance on loopback.
#[test]
fn the_tls_example_serves_the_page_health_and_the_websocket() {
    let s = ServerOptions::fake()
        .args(&[
            "--allowed-origins=https://claude.example.com",
            "--trusted-proxies=127.0.0.1",
        ])
        .start();
    let upstream = s.ws_authority();
    let nginx = Nginx::with_site(|port, dir| {
        let (crt, key) = (dir.join("tls.pem"), dir.join("tls.key"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=claude.example.com", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("run openssl");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let site = std::fs::read_to_string(repo().join("deploy/nginx-tls.conf"))
            .expect("deploy/nginx-tls.conf")
            .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
            .replace("127.0.0.1:8000", &upstream)
            .replace(
                "/etc/ssl/certs/claude.example.com.pem",
                &crt.display().to_string(),
            )
            .replace(
                "/etc/ssl/private/claude.example.com.key",
                &key.display().to_string(),
            );
        assert!(site.contains(&upstream), "{site}");
        site
    });
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", nginx.port);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5"])
            .args(args)
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let health = curl(&[&url("/health")]);
    assert!(
        health.contains(r#""status":"ok""#),
        "{health}\n{}",
        nginx.error_log()
    );
    let page = curl(&[&url("/")]);
    assert!(page.contains("<meta charset=\"utf-8\">"), "{page}");
    let upgrade = curl(&[
        "-i",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H",
        "Origin: https://claude.example.com",
        &url("/ws"),
    ]);
    assert!(
        upgrade.starts_with("HTTP/1.1 101"),
        "{upgrade}\n{}",
        nginx.error_log()
    );
    // The session saw the client's address, forwarded by a trusted proxy.
    assert!(eventually(WAIT, || s
        .sessions()
        .iter()
        .any(|r| r["peer"] == "127.0.0.1")));
}
