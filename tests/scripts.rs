//! Every script in `scripts/` answers `--help` and `-h` with its usage and does nothing
//! else: it exits 0 at once, prints a `Usage:` line, and runs none of the programs a
//! script builds, installs or starts with (each is replaced on PATH by a stub that
//! records being called).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the scripts run to build, install or start something. A script that reaches
/// any of them while asked for `--help` did more than print its usage.
const STARTERS: &[&str] = &[
    "cargo",
    "rustc",
    "npm",
    "npx",
    "node",
    "apt-get",
    "sudo",
    "pip",
    "pip3",
    "python",
    "python2",
    "python3",
    "pyenv",
    "nginx",
    "websocketd",
    "chromium",
    "claude",
    "wstest",
    "curl",
    "wget",
    "git",
];

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scripts/")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 8, "{scripts:?}");
    scripts
}

/// A directory of stubs, one per [`STARTERS`] entry, each appending its name to `log`.
fn stubs(dir: &Path, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("stub dir");
    for name in STARTERS {
        let stub = dir.join(name);
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho {name} \"$@\" >> '{}'\nexit 1\n",
                log.display()
            ),
        )
        .expect("write a stub");
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn every_script_answers_help_with_its_usage_and_starts_nothing() {
    let work = std::env::temp_dir().join(format!("claude-ws-scripts-help-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let bin = work.join("bin");
    let log = work.join("called.log");
    stubs(&bin, &log);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    for script in scripts() {
        let name = script
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .to_string();
        for flag in ["--help", "-h"] {
            let started = Instant::now();
            let out = Command::new("bash")
                .arg(&script)
                .arg(flag)
                .env("PATH", &path)
                // demo.sh would run binaries from here rather than build them.
                .env("DEMO_BIN_DIR", &bin)
                .stdin(Stdio::null())
                .output()
                .expect("run bash");
            let took = started.elapsed();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let called = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            let usage = format!("Usage: scripts/{name}");
            if !out.status.success() {
                failures.push(format!("{name} {flag}: exit {:?}", out.status));
            }
            if !stdout.lines().any(|l| l.starts_with(&usage)) {
                failures.push(format!(
                    "{name} {flag}: no line starting {usage:?}:\n{stdout}"
                ));
            }
            if !called.is_empty() {
                failures.push(format!("{name} {flag}: ran {called}"));
            }
            if took > Duration::from_secs(10) {
                failures.push(format!("{name} {flag}: took {took:?}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
