//! Issue 18: each user's agent in its own bubblewrap sandbox. Two JWT users on one
//! server, the real CLI driven by the scripted model: what one user's tools can see
//! of the other, of the server and of the machine; that a sandboxed child is stopped,
//! interrupted, evicted and reaped like any other, and that nothing of it outlives a
//! server killed with SIGKILL; the start-up refusal; the secret files.
//!
//! Run on both CLIs: `cargo test --test sandbox`, and with
//! `CLAUDE_WS_TEST_CLAUDE=/work/cli/2.1.332/node_modules/.bin/claude`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const SECRET: &str = "jwt-secret-NEVER-SEEN-INSIDE";
const ADMIN: &str = "admin-token-NEVER-SEEN-INSIDE";
/// In the server's environment only.
const SERVER_ENV: &str = "server-env-NEVER-SEEN-INSIDE";

fn jwt(secret: &str, user: &str) -> String {
    support::jwt::user_jwt(secret, user)
}

/// A server of the real CLI with JWT authentication (the secret in a file): the
/// sandbox is on by default.
fn two_user_server(api: &MockApi, extra: &[&str]) -> (TestServer, TempDir) {
    let secrets = TempDir::new("secrets");
    let file = secrets.path().join("jwt-secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let s = ServerOptions::real(api)
        .arg(&format!("--jwt-secret-file={}", file.display()))
        .arg(&format!("--admin-token={ADMIN}"))
        .env("SERVER_ONLY", SERVER_ENV)
        .args(extra)
        .start();
    (s, secrets)
}

const TOOLS: &str = r#"{"allowed_tools": ["Bash", "Write", "Read"]}"#;

/// Run one scripted prompt; the text the model answered (`Done: <tool result>`).
fn ask(c: &mut Client, prompt: &str) -> String {
    let options: Value = serde_json::from_str(TOOLS).unwrap();
    let msgs = c.query(prompt, options);
    assert_eq!(
        only(&msgs, "query_end")["outcome"],
        "completed",
        "{prompt}: {msgs:?}"
    );
    assistant_text(&msgs)
}

/// Rows of `/sessions`, every principal's (the admin token).
fn sessions(s: &TestServer) -> Vec<Value> {
    let (status, v) = s.get_with(
        "/sessions",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    );
    assert_eq!(status, 200, "{v}");
    v.as_array().expect("a list").clone()
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn one_user_sees_nothing_of_the_other_nor_of_the_server() {
    let api = MockApi::start();
    let (s, _secrets) = two_user_server(&api, &[]);
    assert_eq!(s.get("/health").1["sandbox"], "bubblewrap");
    assert!(s.logged("--admin-token was given on the command line"));
    let mut alice = s.login(SECRET, "alice");
    let mut bob = s.login(SECRET, "bob");

    // Alice works in a workspace of her own, inside the server's root, 0700.
    let home = ask(&mut alice, "bash pwd");
    let alice_dir = PathBuf::from(home.trim().trim_start_matches("Done: ").trim());
    assert_eq!(alice_dir.parent(), Some(s.workspace.as_path()), "{home}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&alice_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{alice_dir:?}");
    let alice_file = alice_dir.join("alice.txt");
    ask(
        &mut alice,
        &format!("write {} ALICE-FILE-MARKER", alice_file.display()),
    );
    assert_eq!(read(&alice_file), "ALICE-FILE-MARKER");
    ask(&mut alice, "remember ALICE-TRANSCRIPT-MARKER");
    let state_root = s.home.path().join(".local/state/claude-ws");
    // The CLI writes its transcript a little after the answer.
    let mut transcript = Vec::new();
    assert!(
        eventually(WAIT, || {
            transcript = grep_files(&state_root, "ALICE-TRANSCRIPT-MARKER");
            !transcript.is_empty()
        }),
        "alice's transcript is on disk"
    );

    // Bob's own tools work: Bash runs, Write writes in his workspace.
    let pwd = ask(&mut bob, "bash echo BOB-BASH-OK; pwd");
    assert!(pwd.contains("BOB-BASH-OK"), "{pwd}");
    let bob_dir = PathBuf::from(pwd.lines().last().unwrap().trim());
    assert_ne!(bob_dir, alice_dir);
    ask(
        &mut bob,
        &format!("write {}/bob.txt BOB-WROTE", bob_dir.display()),
    );
    assert_eq!(read(&bob_dir.join("bob.txt")), "BOB-WROTE");

    // Bob's Bash: the server's command line and environment, other processes, alice's
    // files and transcripts, the secret file.
    let server = s.pid();
    let seen = ask(
        &mut bob,
        &format!(
            "bash cat /proc/*/cmdline /proc/*/environ | tr '\\0' ' '; env; ps -eo pid,args; \
             ls /proc/{server}; grep -rl ALICE {} {} {} 2>&1; cat {} {} 2>&1; \
             kill -0 {server} && echo SIG''NALLED",
            s.workspace.display(),
            state_root.display(),
            s.home.path().display(),
            alice_file.display(),
            transcript[0].display(),
        ),
    );
    for secret in [
        SECRET,
        ADMIN,
        SERVER_ENV,
        "ALICE-FILE-MARKER",
        "ALICE-TRANSCRIPT-MARKER",
        "--drain-timeout-secs",
        "SIGNALLED",
    ] {
        assert!(!seen.contains(secret), "bob saw {secret:?}:\n{seen}");
    }
    assert!(seen.contains("No such file"), "{seen}");
    // Only the sandbox's own processes: its init, claude, the shell and its commands.
    let pids: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| p.parse::<u32>().is_ok())
        .collect();
    assert!(
        pids.len() < 12,
        "bob sees {} processes:\n{seen}",
        pids.len()
    );

    // Bob's Read tool: alice's file and transcript are not there for it either.
    for path in [&alice_file, &transcript[0]] {
        let text = ask(
            &mut bob,
            &format!("tool Read {}", json!({"file_path": path})),
        );
        assert!(!text.contains("ALICE"), "{text}");
    }
    // Writing outside his workspace fails: the system is read-only, other places absent.
    let text = ask(
        &mut bob,
        "bash touch /usr/bob 2>&1; touch /etc/bob 2>&1; echo END",
    );
    assert!(text.contains("Read-only file system"), "{text}");
}

/// The files under `dir` that contain `text`.
fn grep_files(dir: &Path, text: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(text)) {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_sandboxed_child_is_stopped_interrupted_evicted_and_reaped() {
    let api = MockApi::start();
    let (s, _secrets) = two_user_server(
        &api,
        &["--max-running=1", "--stop-grace-secs=1", NO_REATTACH],
    );
    let mut alice = s.login(SECRET, "alice");
    // Interrupted like any other: the interrupt reaches claude inside through stdin.
    alice.query("remember delta", json!({}));
    alice.send(json!({"type": "query", "prompt": "slow 100 100"}));
    alice.until("system_message");
    std::thread::sleep(Duration::from_millis(500));
    alice.send(json!({"type": "interrupt"}));
    let msgs = alice.until("query_end");
    assert_eq!(
        only(&msgs, "query_end")["outcome"],
        "interrupted",
        "{msgs:?}"
    );
    let outer = sessions(&s)[0]["child_pid"].as_u64().unwrap() as u32;
    assert!(cmdline(outer).contains("bwrap"), "{}", cmdline(outer));
    let inside = descendants(outer);
    assert!(inside.len() >= 2, "init and claude: {inside:?}");

    // Evicted: with one place, bob's query waits until alice's idle child is stopped
    // (stdin closed: it exits by itself) and reaped with everything in its sandbox.
    let mut bob = s.login(SECRET, "bob");
    let msgs = bob.query("hi", json!({}));
    assert!(
        types(&msgs).contains(&"query_queued".to_string()),
        "{msgs:?}"
    );
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert!(s.logged(&format!("claude pid={outer} exited after stdin closed")));
    // When the sandbox's init ends, the kernel kills what is left inside; those
    // exits complete a moment later (an exiting process has no cmdline yet).
    for p in std::iter::once(outer).chain(inside) {
        let gone = eventually(WAIT, || !pid_alive(p));
        assert!(gone, "{p} ({}) outlived the stop", cmdline(p));
    }

    // Stopped while a tool runs: closing stdin does not end the turn, so the ladder
    // goes on to SIGTERM, which reaches claude and the tool inside the sandbox.
    bob.send(json!({"type": "query", "prompt": "bash tail -f /dev/null",
                    "options": {"allowed_tools": ["Bash"]}}));
    let mut outer = 0;
    let sleeping = eventually(WAIT, || {
        let rows = sessions(&s);
        let pids = rows.iter().filter_map(|r| r["child_pid"].as_u64());
        let found = pids.map(|p| p as u32).find(|&p| {
            descendants(p)
                .iter()
                .any(|d| cmdline(*d).starts_with("tail -f /dev/null"))
        });
        outer = found.unwrap_or(0);
        found.is_some()
    });
    assert!(sleeping, "the tool never ran: {}", s.logs());
    let inside = descendants(outer);
    bob.ws.close(Some(NORMAL_CLOSE)).unwrap();
    assert!(
        eventually(WAIT, || !pid_alive(outer)),
        "the sandbox was not stopped"
    );
    // The CLI may end on stdin's close even with a tool running (it does); a step of
    // the ladder ended it, and nothing of its sandbox is left (the ladder's later steps
    // inside a sandbox: `a_sandboxed_child_ignoring_signals_is_killed_whole`).
    assert!(
        s.logged(&format!("claude pid={outer} exited after stdin closed"))
            || s.logged(&format!("claude pid={outer} ended by SIGTERM")),
        "{}",
        s.logs()
    );
    for p in inside {
        let gone = eventually(WAIT, || !pid_alive(p));
        assert!(gone, "{p} ({}) outlived the stop", cmdline(p));
    }
    assert!(eventually(WAIT, || s.get("/health").1["children"] == 0));
}

#[test]
fn a_server_killed_with_sigkill_leaves_no_sandboxed_process() {
    let api = MockApi::start();
    let (mut s, _secrets) = two_user_server(&api, &[]);
    let mut alice = s.login(SECRET, "alice");
    alice.send(json!({"type": "query", "prompt": "bash tail -f /dev/null",
                      "options": {"allowed_tools": ["Bash"]}}));
    let server = s.pid();
    assert!(
        eventually(WAIT, || descendants(server)
            .iter()
            .any(|p| cmdline(*p).starts_with("tail -f /dev/null"))),
        "the tool never ran"
    );
    let all = descendants(server);
    assert!(
        all.len() >= 4,
        "bwrap, its init, claude, the shell: {all:?}"
    );
    s.kill();
    for p in all {
        assert!(
            eventually(Duration::from_secs(10), || !pid_alive(p)),
            "{p} ({}) outlived the server",
            cmdline(p)
        );
    }
}

/// Run the server binary with `args` and `env` (no child ever starts): its exit
/// status and stderr, or `None` if it started (and was stopped).
fn start_or_refuse(args: &[&str], env: &[(&str, &str)]) -> Option<(i32, String)> {
    let home = TempDir::new("refuse-home");
    let mut p = Command::new(env!("CARGO_BIN_EXE_claude-ws"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .args(["--port=0", "--http-port=0", "--warm-children=0"])
        .args(args)
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = eventually(Duration::from_secs(10), || {
        matches!(p.try_wait(), Ok(Some(_)))
    });
    if !started {
        let _ = p.kill();
        let _ = p.wait();
        return None;
    }
    let out = p.wait_with_output().unwrap();
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn auto_without_bwrap_refuses_to_start_and_off_warns() {
    let jwt = format!("--jwt-secret={SECRET}");
    let (code, err) = start_or_refuse(&[&jwt], &[("CLAUDE_WS_BWRAP", "/no/such/bwrap")])
        .expect("the server started without bwrap");
    assert_ne!(code, 0);
    let line = err
        .lines()
        .find(|l| l.contains("refusing to start"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("bubblewrap") && line.contains("--sandbox off"),
        "{line}"
    );
    assert!(line.contains("/no/such/bwrap"), "{line}");
    // The same with --bwrap and --sandbox bubblewrap, and without authentication.
    let refused = start_or_refuse(&["--sandbox=bubblewrap", "--bwrap=/no/such/bwrap"], &[]);
    assert!(refused.is_some_and(|(c, e)| c != 0 && e.contains("bubblewrap")));

    // Off with authentication starts, and says what that means.
    let s = ServerOptions::fake()
        .args(&[&jwt, "--sandbox=off", "--bwrap=/no/such/bwrap"])
        .start();
    assert_eq!(s.get("/health").1["sandbox"], "off");
    assert!(s.logged("authentication is on but --sandbox is off"));
    // Auto without authentication needs no bwrap: one local user.
    let s = ServerOptions::fake().arg("--bwrap=/no/such/bwrap").start();
    assert_eq!(s.get("/health").1["sandbox"], "off");
    // A shared workspace is announced.
    let s = ServerOptions::fake()
        .args(&[&jwt, "--shared-workspace=true"])
        .start();
    assert_eq!(s.get("/health").1["sandbox"], "bubblewrap");
    assert!(s.logged("--shared-workspace: every principal works in the same workspace"));
}

#[test]
fn secrets_are_read_from_files() {
    let dir = TempDir::new("secret-files");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let jwt_file = write("jwt", &format!("{SECRET}\n"));
    let token_file = write("token", "static-token\r\n");
    let admin_file = write("admin", ADMIN);
    let s = ServerOptions::fake()
        .arg(&format!("--jwt-secret-file={jwt_file}"))
        .env("CLAUDE_WS_AUTH_TOKEN_FILE", &token_file)
        .arg(&format!("--admin-token-file={admin_file}"))
        .start();
    assert!(
        !s.logs().contains("was given on the command line"),
        "{}",
        s.logs()
    );
    let ok = |auth: &str| s.try_connect(&s.ws_url, &[("Authorization", auth)]).is_ok();
    assert!(ok(&format!("Bearer {}", jwt(SECRET, "carol"))));
    assert!(!ok(&format!("Bearer {}", jwt("another-secret", "carol"))));
    assert!(
        ok("Bearer static-token"),
        "the line ending is not part of it"
    );
    assert!(!ok("Bearer static-toke"), "a wrong token is refused");
    let (status, _) = s.get_with(
        "/sessions",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
    );
    assert_eq!(status, 200);
    drop(s);

    // A missing or empty file, or the secret given twice, stops the start.
    let empty = write("empty", "\n");
    for (args, want) in [
        (
            vec!["--jwt-secret-file=/no/such/file".to_string()],
            "cannot read /no/such/file",
        ),
        (vec![format!("--jwt-secret-file={empty}")], "is empty"),
        (
            vec![
                format!("--jwt-secret-file={jwt_file}"),
                "--jwt-secret=x".into(),
            ],
            "give one of the two",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = start_or_refuse(&args, &[]).expect("started");
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "{err}");
    }
}

/// The stop ladder's later steps reach into a sandbox: the stand-in ignores stdin's end
/// and SIGTERM (and runs a grandchild), so only SIGKILL ends it, and with it the whole
/// sandbox.
#[test]
fn a_sandboxed_child_ignoring_signals_is_killed_whole() {
    let s = ServerOptions::fake()
        .arg("--sandbox=bubblewrap")
        .arg("--stop-grace-secs=0.3")
        .arg(NO_REATTACH)
        .start();
    assert_eq!(s.get("/health").1["sandbox"], "bubblewrap");
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "ignore-signals"}));
    c.until("system_message");
    let outer = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    assert!(cmdline(outer).contains("bwrap"), "{}", cmdline(outer));
    let inside = descendants(outer);
    assert!(inside.len() >= 2, "init and the child: {inside:?}");
    drop(c);
    assert!(
        eventually(WAIT, || !pid_alive(outer)),
        "the sandbox {outer} survived"
    );
    assert!(s.logged("SIGKILL"), "{}", s.logs());
    for p in inside {
        let gone = eventually(WAIT, || !pid_alive(p));
        assert!(gone, "{p} ({}) outlived the stop", cmdline(p));
    }
}

/// The claude install may live under /tmp (a checkout there): the sandbox's private
/// /tmp must not hide it.
#[test]
fn a_claude_installed_under_tmp_runs_in_the_sandbox() {
    let dir = TempDir::new("claude-under-tmp");
    let copy = dir.path().join("bin").join("claude");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(fake_claude(), &copy).unwrap();
    assert!(copy.starts_with(std::env::temp_dir()), "{copy:?}");
    let s = ServerOptions::fake()
        .arg("--sandbox=bubblewrap")
        .arg(&format!("--claude-bin={}", copy.display()))
        .start();
    assert_eq!(s.get("/health").1["sandbox"], "bubblewrap");
    let mut c = s.connect();
    let msgs = c.query("hi", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
}
