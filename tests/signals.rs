//! Signals (issue 8 item 10): the first SIGINT/SIGTERM starts a graceful shutdown; a
//! second one during it exits at once, even while a child is still on its stop ladder.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) only sends a signal, to a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[test]
fn a_second_sigint_during_shutdown_exits_at_once() {
    // A child that ignores stdin closing and SIGTERM keeps the graceful shutdown busy
    // for two stop graces (40 s) before SIGKILL.
    let s = ServerOptions::fake().arg("--stop-grace-secs=20").start();
    let mut c = s.connect();
    c.send(json!({"type": "query", "prompt": "ignore-signals"}));
    c.until("system_message");
    let child = s.sessions()[0]["child_pid"].as_u64().unwrap() as u32;
    let server = s.pid();

    signal(server, libc::SIGINT);
    assert!(eventually(WAIT, || s.logs().contains("shutting down")));
    // The first signal alone does not end the server while the child holds out.
    assert!(pid_alive(server));
    let second = Instant::now();
    signal(server, libc::SIGINT);
    let exited = eventually(Duration::from_secs(10), || !pid_alive(server));
    let took = second.elapsed();
    let logs = s.logs();
    // The child ignores the parent-death SIGTERM too: end it here, whatever happened.
    // SAFETY: SIGKILL to the process group of the child this test made the server start.
    unsafe {
        libc::kill(-(child as libc::pid_t), libc::SIGKILL);
    }
    assert!(
        exited,
        "still running {took:?} after the second SIGINT:\n{logs}"
    );
    // The last log lines may still be in the pipe when the exit is seen.
    assert!(
        eventually(WAIT, || s.logs().contains("second signal")),
        "{}",
        s.logs()
    );
    let status = s.stop();
    assert_eq!(status.code(), Some(130), "{logs}");
    drop(c);
}
