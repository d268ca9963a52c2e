//! Issue 11: the client examples (examples/python, examples/js, examples/browser) run
//! as they are against a live server driving the REAL Claude Code CLI and the scripted
//! Messages API. Their dependencies come from scripts/install-example-deps.sh; when it
//! cannot install them these tests fail, never skip.

mod support;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

use support::examples::{install_deps, repo};
use support::*;

fn python() -> PathBuf {
    repo().join(".examples-venv/bin/python")
}

/// A finished example: what it printed and how it exited.
struct Run {
    what: String,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {} s", WAIT.as_secs()),
        };
        write!(
            f,
            "{}\n  {status}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

/// Runs `program args` from the repository with `env`, killed after [`WAIT`].
fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    install_deps();
    let mut child = Command::new(program)
        .args(args)
        .env_remove("CLAUDE_WS_URL")
        .env_remove("CLAUDE_WS_AUTH_TOKEN")
        .envs(env.iter().copied())
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let mut status = None;
    if !eventually(WAIT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
    }
    Run {
        what: format!("{} {args:?}", program.display()),
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn run_python(example: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let script = repo().join("examples/python").join(example);
    let script = script.to_str().expect("a UTF-8 path");
    let all: Vec<&str> = std::iter::once(script)
        .chain(args.iter().copied())
        .collect();
    run(&python(), &all, env)
}

#[test]
fn the_python_client_streams_the_answer_and_its_cost() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let r = run_python("client.py", &["hello"], &[("CLAUDE_WS_URL", &s.ws_url)]);
    assert!(r.ok(), "{r}");
    // Streamed as deltas and then sent whole: printed once.
    assert_eq!(r.stdout.trim(), "Echo: hello", "{r}");
    assert!(r.stderr.contains("[connected] session "), "{r}");
    assert!(r.stderr.contains("[result] success, cost $"), "{r}");
    assert!(r.stderr.contains("[end] completed"), "{r}");
}

#[test]
fn the_node_client_streams_the_answer_and_its_cost() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let r = run(
        Path::new("node"),
        &["examples/js/client.mjs", "--url", &s.ws_url, "hello"],
        &[],
    );
    assert!(r.ok(), "{r}");
    assert_eq!(r.stdout.trim(), "Echo: hello", "{r}");
    assert!(r.stderr.contains("[connected: session "), "{r}");
    assert!(r.stderr.contains("[result: success, cost $"), "{r}");
}

#[test]
fn the_clients_send_a_token_and_fail_without_one() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api)
        .arg("--auth-token=example-token-1")
        .start();
    let url = s.ws_url.as_str();
    let refused = run_python("client.py", &["hello"], &[("CLAUDE_WS_URL", url)]);
    assert!(!refused.ok(), "{refused}");
    assert!(refused.stderr.contains("401"), "{refused}");
    let token = [
        ("CLAUDE_WS_URL", url),
        ("CLAUDE_WS_AUTH_TOKEN", "example-token-1"),
    ];
    // Python sends the header, Node (and so the browser page) the subprotocol.
    let r = run_python("client.py", &["hello"], &token);
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("Echo: hello"), "{r}");
    let r = run(
        Path::new("node"),
        &["examples/js/client.mjs", "hello"],
        &token,
    );
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("Echo: hello"), "{r}");
    let refused = run(
        Path::new("node"),
        &["examples/js/client.mjs", "--url", url],
        &[],
    );
    assert!(!refused.ok(), "{refused}");
}

/// The browser page runs the module the Node test ran: it must import it, and the
/// module must need nothing a browser lacks.
#[test]
fn the_browser_page_runs_the_same_module_as_the_node_client() {
    let page = read(&repo().join("examples/browser/index.html"));
    assert!(page.contains(r#"<meta charset="utf-8">"#));
    assert!(page.contains(r#"import { ask } from "../js/claude-ws.mjs";"#));
    let module = read(&repo().join("examples/js/claude-ws.mjs"));
    for node_only in ["import ", "require(", "process.", "Buffer"] {
        assert!(
            !module.contains(node_only),
            "claude-ws.mjs uses {node_only:?}, which a browser lacks"
        );
    }
    assert!(module.contains("export function ask("));
}

#[test]
fn the_permission_example_allows_and_the_tool_runs() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let file = s.workspace.join("made-by-example");
    let prompt = format!("bash touch {}", file.display());
    let cwd = s.workspace.to_str().expect("a UTF-8 path");
    let r = run_python(
        "permissions.py",
        &["--cwd", cwd, &prompt],
        &[("CLAUDE_WS_URL", &s.ws_url)],
    );
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("permission: Bash {"), "{r}");
    assert!(r.stdout.contains("-> allow"), "{r}");
    assert!(r.stdout.contains("tool ran: "), "{r}");
    assert!(r.stdout.contains("outcome: completed"), "{r}");
    assert!(file.exists(), "allowed, but the file was not made\n{r}");
}

#[test]
fn the_permission_example_denies_and_the_tool_does_not_run() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let file = s.workspace.join("never-made");
    let prompt = format!("bash touch {}", file.display());
    let r = run_python(
        "permissions.py",
        &["--deny", &prompt],
        &[("CLAUDE_WS_URL", &s.ws_url)],
    );
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("-> deny"), "{r}");
    assert!(r.stdout.contains("denied: Bash"), "{r}");
    assert!(!file.exists(), "denied, but the file was made\n{r}");
}

#[test]
fn the_custom_tool_example_answers_the_models_call() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).start();
    let r = run_python(
        "custom_tool.py",
        &[r#"tool mcp__ws__CustomFormatter {"text":"hi","style":"bold"}"#],
        &[("CLAUDE_WS_URL", &s.ws_url)],
    );
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("defined: CustomFormatter"), "{r}");
    let call = r
        .stdout
        .lines()
        .find(|l| l.starts_with("call: CustomFormatter("));
    assert!(call.is_some_and(|c| c.ends_with(") -> **hi**")), "{r}");
    assert!(r.stdout.contains("claude: Done: **hi**"), "{r}");
}

/// scripts/demo.sh in its own process group, stopped as Ctrl-C stops it (SIGINT to the
/// group) by `stop` or on drop.
struct Demo {
    proc: std::process::Child,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Demo {
    /// Interrupt the demo, wait for it to end; what it printed on stderr.
    fn stop(&mut self) -> String {
        let group = -(self.proc.id() as libc::pid_t);
        // SAFETY: kill(2) only sends a signal, to the process group this test started.
        unsafe { libc::kill(group, libc::SIGINT) };
        if !eventually(WAIT, || matches!(self.proc.try_wait(), Ok(Some(_)))) {
            // SAFETY: as above.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = self.proc.wait();
        }
        self.stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let stderr = self.stop();
            if thread::panicking() {
                eprintln!("---- scripts/demo.sh stderr ----\n{stderr}");
            }
        }
    }
}

#[test]
fn the_demo_passes_its_flags_and_the_servers_environment_through() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    install_deps();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_claude-ws"))
        .parent()
        .expect("binary has a directory");
    let mut proc = Command::new(repo().join("scripts/demo.sh"))
        .args(["--port", "0", "--http-port=0"])
        .env("DEMO_BIN_DIR", bin_dir)
        .env("CLAUDE_BIN", support::cli::real_claude())
        .env("CLAUDE_WS_AUTH_TOKEN", "demo-token-1")
        .env_remove("WEBSOCKET_PORT")
        .env_remove("HTTP_PORT")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scripts/demo.sh");
    let stdout = proc.stdout.take().expect("piped");
    let mut stderr = proc.stderr.take().expect("piped");
    let mut demo = Demo {
        proc,
        stderr: Some(thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        })),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(ready) = line.strip_prefix("ready ws=") {
                let _ = tx.send(ready.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let ws_url = rx
        .recv_timeout(WAIT)
        .expect("the demo printed a ready line");
    // --port 0 reached the server: not the default 8000.
    assert!(!ws_url.contains(":8000/"), "{ws_url}");
    // CLAUDE_WS_AUTH_TOKEN reached it: no token, no session.
    let refused = run_python("client.py", &["hello"], &[("CLAUDE_WS_URL", &ws_url)]);
    assert!(!refused.ok(), "{refused}");
    assert!(refused.stderr.contains("401"), "{refused}");
    // The quick start: the first example against the demo.
    let r = run_python(
        "client.py",
        &["hello"],
        &[
            ("CLAUDE_WS_URL", &ws_url),
            ("CLAUDE_WS_AUTH_TOKEN", "demo-token-1"),
        ],
    );
    assert!(r.ok(), "{r}");
    assert_eq!(r.stdout.trim(), "Echo: hello", "{r}");
    // Ctrl-C stops the server with the script.
    let stderr = demo.stop();
    assert!(stderr.contains("connect with: "), "{stderr}");
    let authority = ws_url.trim_start_matches("ws://").trim_end_matches("/ws");
    assert!(
        std::net::TcpStream::connect(authority).is_err(),
        "the server outlived the demo\n{stderr}"
    );
}
