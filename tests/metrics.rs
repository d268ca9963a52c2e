//! `GET /metrics` on the side port (issue 11): Prometheus text that a real Prometheus
//! parser reads (the reference Python client's, `prometheus_client`), whose counters
//! move with what happens: a query of the real CLI, an error, refusals, a detached
//! session.
//!
//! The parser runs in a virtual environment under the target directory
//! (`target/metrics-venv`), made and filled with a pinned `prometheus_client` from PyPI
//! the first time; when that cannot be done the test fails, it does not skip.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::{json, Value};
use support::*;
use tungstenite::Message;

/// The parser's version, pinned so the test reads the same way everywhere.
const PROMETHEUS_CLIENT: &str = "0.26.0";

/// A sample: its name and its labels, sorted (`name{k="v",…}`).
type Key = String;

/// What the reference parser read: family name → type, and every sample's value.
struct Parsed {
    types: BTreeMap<String, String>,
    samples: BTreeMap<Key, f64>,
}

impl Parsed {
    fn get(&self, key: &str) -> f64 {
        match self.samples.get(key) {
            Some(v) => *v,
            None => panic!(
                "no sample {key}; samples: {:#?}",
                self.samples.keys().collect::<Vec<_>>()
            ),
        }
    }
}

/// The venv's python, with the pinned `prometheus_client` in it (made on first use).
fn python() -> PathBuf {
    static ONCE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    // target/debug/claude-ws → target
    let target = Path::new(env!("CARGO_BIN_EXE_claude-ws"))
        .ancestors()
        .nth(2)
        .expect("the target directory")
        .to_path_buf();
    let venv = target.join("metrics-venv");
    let python = venv.join("bin/python");
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if !python.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (the test needs python3 with venv)",
        );
    }
    let installed = Command::new(&python)
        .args([
            "-c",
            "from importlib.metadata import version; print(version('prometheus_client'))",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if installed != PROMETHEUS_CLIENT {
        run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("prometheus_client=={PROMETHEUS_CLIENT}"),
            ]),
            "pip install prometheus_client (the test needs PyPI once)",
        );
    }
    python
}

/// Parse `text` with `prometheus_client.parser.text_string_to_metric_families`.
fn parse(text: &str) -> Parsed {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics_check.py");
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/metrics_check.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n---- text ----\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    assert_eq!(v["version"], PROMETHEUS_CLIENT);
    let mut parsed = Parsed {
        types: BTreeMap::new(),
        samples: BTreeMap::new(),
    };
    for f in v["families"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap().to_string();
        assert!(
            !f["help"].as_str().unwrap_or("").is_empty(),
            "{name} has no HELP"
        );
        parsed
            .types
            .insert(name, f["type"].as_str().unwrap().to_string());
        for s in f["samples"].as_array().unwrap() {
            let labels: Vec<String> = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let key = if labels.is_empty() {
                s["name"].as_str().unwrap().to_string()
            } else {
                format!("{}{{{}}}", s["name"].as_str().unwrap(), labels.join(","))
            };
            parsed.samples.insert(key, s["value"].as_f64().unwrap());
        }
    }
    parsed
}

/// `GET /metrics`: the Content-Type and the body.
fn scrape(s: &TestServer) -> (String, String) {
    let (status, head, body) = http_request(&s.http_addr, "GET", "/metrics", &[]);
    assert_eq!(status, 200, "{head}\n{body}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .expect("a Content-Type");
    (content_type, body)
}

/// Text frames up to and including the first whose `type` is `kind`.
fn texts_until(c: &mut Client, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match c.ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                out.push(t.to_string());
                if v["type"] == kind {
                    return out;
                }
            }
            Ok(_) => continue,
            Err(e) => panic!("connection ended before {kind}: {e}"),
        }
    }
}

#[test]
fn metrics_count_a_query_an_error_and_refusals_and_prometheus_parses_them() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let before = parse(&scrape(&s).1);
    assert_eq!(
        before.get("claude_ws_queries_total{outcome=\"completed\"}"),
        0.0
    );
    assert_eq!(
        before.get("claude_ws_refusals_total{reason=\"not_found\"}"),
        0.0
    );

    // A query, then an error, on one connection: every message it gets is counted.
    let mut c = s.try_connect(&s.ws_url, &[]).expect("connect");
    let mut texts = texts_until(&mut c, "connection_established");
    c.send(json!({"type": "query", "prompt": "hello", "options": {}}));
    texts.extend(texts_until(&mut c, "query_end"));
    let end: Value = serde_json::from_str(texts.last().unwrap()).unwrap();
    assert_eq!(end["data"]["outcome"], "completed", "{texts:?}");
    c.send_raw(Message::text("not json"));
    texts.extend(texts_until(&mut c, "error"));
    // Refusals: the wrong path, and a reattach to a session this server never held.
    let wrong = s.ws_url.replace("/ws", "/nope");
    let refused = s.try_connect(&wrong, &[]).err().expect("refused");
    assert!(refused.starts_with("HTTP 404"), "{refused}");
    let unknown = format!("{}?session_id=deadbeef&last_seq=0", s.ws_url);
    let refused = s.try_connect(&unknown, &[]).err().expect("refused");
    assert!(refused.contains("unknown_session"), "{refused}");

    let (content_type, text) = scrape(&s);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let m = parse(&text);
    for (family, kind) in [
        ("claude_ws_sessions", "gauge"),
        ("claude_ws_queries_running", "gauge"),
        ("claude_ws_queries", "counter"),
        ("claude_ws_query_duration_seconds", "histogram"),
        ("claude_ws_children", "gauge"),
        ("claude_ws_child_starts", "counter"),
        ("claude_ws_child_start_seconds", "histogram"),
        ("claude_ws_queue_length", "gauge"),
        ("claude_ws_events_relayed", "counter"),
        ("claude_ws_bytes_relayed", "counter"),
        ("claude_ws_errors", "counter"),
        ("claude_ws_refusals", "counter"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{family}: {:?}",
            m.types
        );
    }
    assert_eq!(m.get("claude_ws_queries_total{outcome=\"completed\"}"), 1.0);
    assert_eq!(m.get("claude_ws_queries_total{outcome=\"error\"}"), 0.0);
    assert_eq!(m.get("claude_ws_query_duration_seconds_count"), 1.0);
    assert_eq!(
        m.get("claude_ws_query_duration_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert!(m.get("claude_ws_query_duration_seconds_sum") > 0.0);
    assert_eq!(m.get("claude_ws_child_starts_total"), 1.0);
    assert_eq!(m.get("claude_ws_child_start_seconds_count"), 1.0);
    assert_eq!(m.get("claude_ws_errors_total{code=\"invalid_json\"}"), 1.0);
    assert_eq!(m.get("claude_ws_refusals_total{reason=\"not_found\"}"), 1.0);
    assert_eq!(
        m.get("claude_ws_refusals_total{reason=\"unknown_session\"}"),
        1.0
    );
    assert_eq!(
        m.get("claude_ws_refusals_total{reason=\"unauthorized\"}"),
        0.0
    );
    // Every message the client got, and their bytes, exactly.
    assert_eq!(
        m.get("claude_ws_events_relayed_total"),
        texts.len() as f64,
        "{texts:?}"
    );
    let bytes: usize = texts.iter().map(String::len).sum();
    assert_eq!(m.get("claude_ws_bytes_relayed_total"), bytes as f64);
    assert_eq!(m.get("claude_ws_sessions{state=\"connected\"}"), 1.0);
    assert_eq!(m.get("claude_ws_sessions{state=\"detached\"}"), 0.0);
    assert_eq!(m.get("claude_ws_children"), 1.0);
    assert_eq!(m.get("claude_ws_queue_length"), 0.0);
    assert_eq!(m.get("claude_ws_queries_running"), 0.0);

    // The client goes without ending its session: it is detached.
    drop(c);
    let mut last = String::new();
    assert!(
        eventually(WAIT, || {
            last = scrape(&s).1;
            last.contains("claude_ws_sessions{state=\"detached\"} 1")
        }),
        "{last}"
    );
    let m = parse(&last);
    assert_eq!(m.get("claude_ws_sessions{state=\"connected\"}"), 0.0);
}

#[test]
fn metrics_answer_only_get() {
    let s = ServerOptions::fake().start();
    let (status, _, body) = http_request(&s.http_addr, "POST", "/metrics", &[]);
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("method_not_allowed"), "{body}");
}
