//! Warm children (issue 12): `claude` processes started ahead of need, so a new
//! session's first query does not wait for the CLI to start.
//!
//! Most tests use the stand-in CLI (whose pid the session row shows); one runs the
//! real CLI end to end. A warm child is recognised by its pid: started before the
//! session existed, then listed as the session's child.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn health(s: &TestServer) -> Value {
    let (status, v) = s.get("/health");
    assert_eq!(status, 200, "{v}");
    v
}

/// Wait for the start-up probe (`claude --version`, a child of its own) to be done
/// and for `n` warm children to be ready; their pids.
fn warm_ready(s: &TestServer, n: u64) -> BTreeSet<u32> {
    let ok = eventually(WAIT, || {
        let h = health(s);
        h["claude"]["status"] != "checking" && h["warm"]["ready"] == n
    });
    assert!(ok, "{n} warm children never ready: {}", health(s));
    let pids: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    assert_eq!(pids.len() as u64, n, "children {pids:?}: {}", health(s));
    pids
}

fn session_child(s: &TestServer) -> Option<u32> {
    s.sessions()
        .first()
        .and_then(|row| row["child_pid"].as_u64())
        .map(|p| p as u32)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) only sends a signal, to a child of the server this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[test]
fn a_new_session_is_answered_by_the_warm_child_and_a_replacement_starts() {
    let s = ServerOptions::fake().arg("--warm-children=1").start();
    let warm = warm_ready(&s, 1);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    assert!(assistant_text(&msgs).contains("Echo: hello"), "{msgs:?}");
    let child = session_child(&s).expect("the session has a child");
    assert!(
        warm.contains(&child),
        "the session's child {child} is not the warm one {warm:?}"
    );
    // A replacement is started and becomes ready; the session keeps its child.
    assert!(
        eventually(WAIT, || health(&s)["warm"]["ready"] == 1),
        "{}",
        health(&s)
    );
    let now: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&child));
    assert_eq!(health(&s)["warm"]["taken"], 1);
    // /metrics says so too.
    let (_, _, metrics) = http_request(&s.http_addr, "GET", "/metrics", &[]);
    for line in [
        "claude_ws_warm_children_target 1",
        "claude_ws_warm_children_ready 1",
        "claude_ws_warm_children_taken_total 1",
        "claude_ws_warm_failing 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    // The second query goes to the same (formerly warm) child.
    let msgs = c.query("again", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: again"));
    assert_eq!(session_child(&s), Some(child));
}

#[test]
fn options_that_change_the_spec_start_a_fresh_child() {
    let s = ServerOptions::fake().arg("--warm-children=1").start();
    let warm = warm_ready(&s, 1);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({"model": "claude-other"}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let child = session_child(&s).expect("a child");
    assert!(!warm.contains(&child), "a warm child served other options");
    // The warm child still waits.
    let h = health(&s);
    assert_eq!(h["warm"]["ready"], 1, "{h}");
    assert_eq!(h["warm"]["taken"], 0, "{h}");
    assert!(warm.iter().all(|&p| pid_alive(p)));
}

#[test]
fn a_warm_child_that_dies_is_replaced() {
    let s = ServerOptions::fake().arg("--warm-children=1").start();
    let warm = warm_ready(&s, 1);
    let old = *warm.iter().next().unwrap();
    signal(old, libc::SIGKILL);
    assert!(
        eventually(WAIT, || {
            let now = children_of(s.pid());
            health(&s)["warm"]["ready"] == 1 && now.len() == 1 && now[0] != old
        }),
        "no replacement: {}",
        health(&s)
    );
    let h = health(&s);
    // It had been ready: not a broken CLI.
    assert_eq!(h["warm"]["failing"], false, "{h}");
    assert!(
        h["warm"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("pid={old}"))),
        "{h}"
    );
    // The replacement answers.
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: hello"));
}

#[test]
fn a_cli_that_always_dies_is_retried_with_backoff() {
    let dir = TempDir::new("warm-broken");
    let count = dir.path().join("starts");
    let script = dir.path().join("claude");
    // Answers the start-up check; every other start says so and dies at once.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '0.0.0 (Claude Code)'; exit 0; fi\n\
             echo start >> '{}'\necho 'broken on purpose' >&2\nexit 7\n",
            count.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let mut opts = ServerOptions::fake().arg("--warm-children=1");
    opts.claude = script.clone();
    let s = opts.start();
    let starts = || {
        std::fs::read_to_string(&count)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(
        eventually(WAIT, || health(&s)["warm"]["failing"] == true),
        "{}",
        health(&s)
    );
    let first = Instant::now();
    // A measurement window, not a wait for a condition: without the backoff (1 s, 2 s,
    // 4 s, …) the pool would start hundreds of children in it.
    thread::sleep(Duration::from_secs(5));
    let n = starts();
    assert!(
        (2..=5).contains(&n),
        "{n} starts in {:?}: the backoff should allow about 3",
        first.elapsed()
    );
    let h = health(&s);
    assert_eq!(h["warm"]["failing"], true, "{h}");
    assert_eq!(h["warm"]["ready"], 0, "{h}");
    let error = h["warm"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("broken on purpose"), "{h}");
}

#[test]
fn with_one_place_a_query_with_other_options_takes_the_warm_childs_place() {
    let s = ServerOptions::fake()
        .args(&["--max-running=1", "--warm-children=1"])
        .start();
    let warm = warm_ready(&s, 1);
    // Count the server's children all along: never more than the one place.
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (most, done, pid) = (most.clone(), done.clone(), s.pid());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(children_of(pid).len(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut c = s.connect();
    let msgs = c.query("hello", json!({"model": "claude-other"}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    let child = session_child(&s).expect("a child");
    assert!(!warm.contains(&child));
    assert!(
        warm.iter().all(|&p| !pid_alive(p)),
        "the warm child lives on"
    );
    assert!(s.logs().contains("a queued query needs its place"));
    // The session's idle child holds the place: no warm child meanwhile.
    assert_eq!(health(&s)["warm"]["ready"], 0);
    // The default options take a warm child when there is one; a second session
    // with them waits for the first one's child to be evicted instead.
    let mut d = s.connect();
    let msgs = d.query("second", json!({}));
    assert!(assistant_text(&msgs).contains("Echo: second"), "{msgs:?}");
    // When the place comes free (the session ends), a warm child is started again.
    d.ws.close(Some(NORMAL_CLOSE)).unwrap();
    d.closed();
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    c.closed();
    assert!(
        eventually(WAIT, || health(&s)["warm"]["ready"] == 1),
        "{}",
        health(&s)
    );
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(most.load(Ordering::SeqCst), 1, "more children than places");
}

#[test]
fn with_one_place_a_new_session_takes_the_warm_child_itself() {
    let s = ServerOptions::fake()
        .args(&["--max-running=1", "--warm-children=1"])
        .start();
    let warm = warm_ready(&s, 1);
    let mut c = s.connect();
    let msgs = c.query("hello", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed");
    let child = session_child(&s).expect("a child");
    assert!(warm.contains(&child));
    // No room for a replacement while the session holds its child.
    assert_eq!(children_of(s.pid()), vec![child]);
    assert_eq!(health(&s)["warm"]["ready"], 0);
}

#[test]
fn shutdown_stops_warm_children() {
    let s = ServerOptions::fake()
        .args(&["--max-running=4", "--warm-children=2"])
        .start();
    let warm = warm_ready(&s, 2);
    signal(s.pid(), libc::SIGTERM);
    assert!(eventually(WAIT, || !pid_alive(s.pid())), "no exit");
    for &pid in &warm {
        assert!(!pid_alive(pid), "warm child {pid} outlived the server");
    }
    // Stopped by the server (stdin closed, reaped), not left to die with it.
    for pid in warm {
        let line = format!("[warm] claude pid={pid} exited after stdin closed");
        assert!(eventually(WAIT, || s.logs().contains(&line)), "{line}");
    }
    assert!(s.stop().success());
}

/// What the start-up check found about parked spares, and the path it picked; checked
/// against the versions this project tests (2.1.332 takes `--await-claim` hidden,
/// 2.1.197 does not know it).
fn parked_spares(s: &TestServer) -> bool {
    let h = health(s);
    let version = h["claude"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let probe = h["claude"]["features"]["await_claim"]["status"].clone();
    let path = h["claude"]["features"]["paths"]["warm"].clone();
    if version.starts_with("2.1.197") {
        assert_eq!(probe, "unknown_option", "{h}");
    }
    if version.starts_with("2.1.332") {
        assert_eq!(probe, "accepted", "{h}");
    }
    assert!(probe == "accepted" || probe == "unknown_option", "{h}");
    let parked = probe == "accepted";
    assert_eq!(
        path,
        if parked {
            "initialize_ahead+parked_spare"
        } else {
            "initialize_ahead"
        },
        "{h}"
    );
    parked
}

/// The `cwd` of the `system/init` among `msgs`.
fn init_cwd(msgs: &[Value]) -> String {
    msgs.iter()
        .find(|m| m["type"] == "system_message" && m["data"]["subtype"] == "init")
        .and_then(|m| m["data"]["cwd"].as_str())
        .unwrap_or_else(|| panic!("no system/init in {msgs:?}"))
        .to_string()
}

#[test]
fn the_real_cli_answers_from_a_warm_child() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg("--warm-children=2").start();
    let warm = warm_ready(&s, 2);
    let parked = parked_spares(&s);
    // The first is started ahead; the second parked where the CLI can park it.
    assert_eq!(health(&s)["warm"]["parked"], u64::from(parked));
    let mut c = s.connect();
    let msgs = c.query("hello warm", json!({}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(
        assistant_text(&msgs).contains("Echo: hello warm"),
        "{msgs:?}"
    );
    let child = session_child(&s).expect("a child");
    assert!(warm.contains(&child), "{child} not in {warm:?}");
    assert_eq!(api.user_texts().len(), 1, "{:?}", api.user_texts());
    // The default query takes the child started ahead (it answers sooner), not the
    // parked spare; it runs in the workspace.
    let h = health(&s);
    assert_eq!(h["warm"]["claimed"], 0, "{h}");
    assert_eq!(
        std::fs::canonicalize(init_cwd(&msgs)).unwrap(),
        std::fs::canonicalize(&s.workspace).unwrap()
    );
}

/// `prompt` with `options` and the `cwd` of a new directory in the workspace, from a
/// new connection: it completes, answered in that directory. Its messages.
fn query_in_sub(s: &TestServer, prompt: &str, mut options: Value) -> Vec<Value> {
    let sub = s.workspace.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    options["cwd"] = json!(sub.display().to_string());
    let msgs = s.connect().query(prompt, options);
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    let echo = format!("Echo: {prompt}");
    assert!(assistant_text(&msgs).contains(&echo), "{msgs:?}");
    assert_eq!(
        std::fs::canonicalize(init_cwd(&msgs)).unwrap(),
        std::fs::canonicalize(&sub).unwrap()
    );
    msgs
}

#[test]
fn a_parked_spare_is_claimed_for_another_directory_and_permission_mode() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg("--warm-children=2").start();
    let warm = warm_ready(&s, 2);
    let parked = parked_spares(&s);
    let msgs = query_in_sub(
        &s,
        "hello elsewhere",
        json!({"permission_mode": "acceptEdits"}),
    );
    let init = msgs
        .iter()
        .find(|m| m["type"] == "system_message" && m["data"]["subtype"] == "init")
        .unwrap();
    assert_eq!(init["data"]["permissionMode"], "acceptEdits", "{init}");
    // Only a parked spare can move; a child started ahead serves only its own spec.
    let child = session_child(&s).expect("a child");
    assert_eq!(warm.contains(&child), parked, "{child} / {warm:?}");
    assert_eq!(health(&s)["warm"]["claimed"], u64::from(parked));
    let (_, _, metrics) = http_request(&s.http_addr, "GET", "/metrics", &[]);
    let line = format!(
        "claude_ws_warm_children_claimed_total {}",
        u64::from(parked)
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in\n{metrics}"
    );
}

/// A claim the CLI refuses (here: the claimed directory is gone, which 2.1.332 answers
/// with `cwd_not_found`; a wrapper rewrites the claim's `cwd` on its way in): the spare
/// is stopped, the query starts a child of its own and completes, nothing of it lost.
#[test]
fn a_refused_claim_leaves_the_query_to_a_child_of_its_own() {
    let api = MockApi::start();
    let dir = TempDir::new("warm-claim");
    let wrapper = dir.path().join("claude");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             case \" $* \" in *' --await-claim '*)\n\
               sed -u '/claim_session/ s|\"cwd\":\"[^\"]*\"|\"cwd\":\"/nonexistent-claim-dir\"|' \
               | {real} \"$@\"; exit $? ;;\n\
             esac\n\
             exec {real} \"$@\"\n",
            real = cli::real_claude().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut options = ServerOptions::real(&api).arg("--warm-children=2");
    options.claude = wrapper;
    let s = options.start();
    let warm = warm_ready(&s, 2);
    let parked = parked_spares(&s);
    query_in_sub(&s, "hello despite the claim", json!({}));
    assert_eq!(api.user_texts().len(), 1, "{:?}", api.user_texts());
    // A child of its own, not a warm one; the refused spare is stopped and not counted.
    let child = session_child(&s).expect("a child");
    assert!(!warm.contains(&child), "{child} / {warm:?}");
    let h = health(&s);
    assert_eq!(h["warm"]["claimed"], 0, "{h}");
    assert_eq!(h["warm"]["taken"], 0, "{h}");
    if parked {
        let gone = eventually(WAIT, || {
            let now: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
            warm.iter().filter(|p| now.contains(p)).count() == 1
        });
        assert!(gone, "the refused spare was not stopped: {}", health(&s));
    }
}

// ---- a warm child per principal (authentication on: each in its own sandbox) ----------

const SECRET: &str = "warm-jwt-secret";

/// A server with JWT users (so a CLI state and a bubblewrap sandbox per principal).
fn users_server(api: &MockApi, extra: &[&str]) -> (TestServer, TempDir) {
    let secrets = TempDir::new("warm-secrets");
    let file = secrets.path().join("jwt-secret");
    std::fs::write(&file, SECRET).unwrap();
    let s = ServerOptions::real(api)
        .arg(&format!("--jwt-secret-file={}", file.display()))
        .args(extra)
        .start();
    assert_eq!(health(&s)["sandbox"], "bubblewrap");
    (s, secrets)
}

/// The server's children (sandboxes) that are not `known`, once `n` warm children
/// are ready for `principals` principals.
fn new_warm(s: &TestServer, n: u64, principals: u64, known: &BTreeSet<u32>) -> BTreeSet<u32> {
    let ok = eventually(WAIT, || {
        let h = health(s);
        h["warm"]["ready"] == n && h["warm"]["principals"] == principals
    });
    assert!(ok, "{n} warm children never ready: {}", health(s));
    children_of(s.pid())
        .into_iter()
        .filter(|p| !known.contains(p))
        .collect()
}

fn session_child_of(s: &TestServer, session: &str) -> u32 {
    let (status, v) = s.get_with("/sessions", &[("Authorization", "Bearer adm")]);
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .and_then(|rows| rows.iter().find(|r| r["session_id"] == session))
        .and_then(|r| r["child_pid"].as_u64())
        .unwrap_or_else(|| panic!("no child for {session}: {v}")) as u32
}

fn end(mut c: Client) {
    c.ws.close(Some(NORMAL_CLOSE)).unwrap();
    c.closed();
}

#[test]
fn a_returning_user_is_answered_by_a_warm_child_of_their_own() {
    let api = MockApi::start();
    let (s, _secrets) = users_server(
        &api,
        &["--warm-children=2", "--max-running=4", "--admin-token=adm"],
    );
    let h = health(&s);
    assert_eq!(h["warm"]["serves"], "each_principal", "{h}");
    assert_eq!(
        h["warm"]["ready"], 0,
        "nothing is started before anybody comes"
    );
    // alice connects: a child is started for her before she asks anything.
    let alice = s.login(SECRET, "alice");
    let alices = new_warm(&s, 1, 1, &BTreeSet::new());
    assert_eq!(alices.len(), 1, "{alices:?}");
    // bob comes and asks at once: whatever serves him, never alice's child.
    let mut bob = s.login(SECRET, "bob");
    let msgs = bob.query("hello from bob", json!({}));
    assert!(
        assistant_text(&msgs).contains("Echo: hello from bob"),
        "{msgs:?}"
    );
    let bobs = session_child_of(&s, &bob.session_id);
    assert!(!alices.contains(&bobs), "bob got alice's warm child");
    assert!(alices.iter().all(|&p| pid_alive(p)));
    end(bob);
    // alice's first query is answered by hers, in her own workspace.
    let mut alice = alice;
    let msgs = alice.query("hello from alice", json!({}));
    assert!(
        assistant_text(&msgs).contains("Echo: hello from alice"),
        "{msgs:?}"
    );
    let hers = session_child_of(&s, &alice.session_id);
    assert!(
        alices.contains(&hers),
        "{hers} is not alice's warm {alices:?}"
    );
    let cwd = PathBuf::from(init_cwd(&msgs));
    assert_eq!(cwd.parent(), Some(s.workspace.as_path()), "{cwd:?}");
    end(alice);
    // She comes back later: a new session, answered by the child kept for her.
    let known: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    let again = new_warm(&s, 2, 2, &known);
    let mut alice = s.login(SECRET, "alice");
    let msgs = alice.query("alice again", json!({}));
    assert!(
        assistant_text(&msgs).contains("Echo: alice again"),
        "{msgs:?}"
    );
    let hers = session_child_of(&s, &alice.session_id);
    assert!(again.contains(&hers) || known.contains(&hers), "{hers}");
    assert_eq!(PathBuf::from(init_cwd(&msgs)), cwd, "not her workspace");
    let h = health(&s);
    assert!(h["warm"]["taken"].as_u64().unwrap() >= 2, "{h}");
    end(alice);
}

#[test]
fn the_least_recently_active_principals_warm_child_gives_its_place_up_first() {
    let api = MockApi::start();
    let (s, _secrets) = users_server(
        &api,
        &["--warm-children=2", "--max-running=2", "--admin-token=adm"],
    );
    // alice, then bob: each gets a warm child, and the two hold both places.
    let alice = s.login(SECRET, "alice");
    let alices = new_warm(&s, 1, 1, &BTreeSet::new());
    let mut bob = s.login(SECRET, "bob");
    let bobs = new_warm(&s, 2, 2, &alices);
    assert_eq!((alices.len(), bobs.len()), (1, 1), "{alices:?} {bobs:?}");
    // bob asks with options no warm child has: his query needs a place of its own,
    // and the warm child of alice (the less recently active) gives hers up.
    let msgs = bob.query("bob needs a place", json!({"model": "claude-haiku-4-5"}));
    assert_eq!(only(&msgs, "query_end")["outcome"], "completed", "{msgs:?}");
    assert!(assistant_text(&msgs).contains("Echo: bob needs a place"));
    let his = session_child_of(&s, &bob.session_id);
    assert!(!bobs.contains(&his) && !alices.contains(&his), "{his}");
    let alice_gone = eventually(WAIT, || alices.iter().all(|&p| !pid_alive(p)));
    assert!(alice_gone, "alice's warm child still runs: {}", health(&s));
    assert!(
        bobs.iter().all(|&p| pid_alive(p)),
        "bob's warm child was stopped"
    );
    // Never more children than places.
    assert!(
        children_of(s.pid()).len() <= 2,
        "{:?}",
        children_of(s.pid())
    );
    end(bob);
    end(alice);
}
