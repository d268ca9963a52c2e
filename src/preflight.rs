//! Start-up checks: say what is wrong before a client finds out. None of them stops the
//! server (tests and embedders run it with stand-in binaries); each logs a warning
//! naming the fix.
//!
//! - `claude --version` runs on a thread of its own with a time limit ([`PROBE_LIMIT`]),
//!   so neither readiness nor `/health` waits for it; `/health` reports its answer.
//! - No credentials for the model in the children's environment.
//! - Listening beyond loopback with authentication off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::features::HelpFlags;
use crate::state::Shared;
use crate::sys;

/// How long `claude --version` may take before it is killed and reported as failing.
pub const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// Environment variables that give the CLI credentials (or send it to a cloud provider
/// with credentials of its own).
const CREDENTIAL_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
];

/// Log the warnings that need nothing slow, and start the `claude` probe, which stores
/// its answer in `shared.claude_version` and logs it.
pub fn start(shared: &Arc<Shared>) {
    if let Some(why) = missing_credentials(&shared.child_env) {
        log::warn!("{why}: queries will fail unless claude finds credentials another way");
    }
    let config = &shared.config;
    let ip = shared.ws_addr().ip();
    if !ip.is_loopback() && config.auth_token.is_none() && config.jwt_secret.is_none() {
        log::warn!(
            "listening on {ip}, beyond loopback, with authentication off: anyone who can \
             reach the port can run an agent with tools here; set --auth-token or \
             --jwt-secret (CLAUDE_WS_AUTH_TOKEN / CLAUDE_WS_JWT_SECRET)"
        );
    }
    let for_probe = shared.clone();
    let spawned = thread::Builder::new()
        .name("claude-probe".into())
        .spawn(move || {
            let shared = for_probe;
            let bin = &shared.config.claude_bin;
            let answer = probe(bin, &shared.child_env, "--version", PROBE_LIMIT);
            let help = match &answer {
                Ok(version) => {
                    log::info!("claude at {}: {version}", bin.display());
                    probe(bin, &shared.child_env, "--help", PROBE_LIMIT)
                        .map(|text| HelpFlags::parse(&text))
                }
                Err(why) => {
                    log::error!(
                        "claude cannot run: {why}; install Claude Code or set --claude-bin \
                         (CLAUDE_BIN) to its path"
                    );
                    Err(why.clone())
                }
            };
            // Before the version: readiness waits for the version, so the features are
            // known by the time a client is let in.
            match &help {
                Ok(f) => log::info!(
                    "claude offers {} flags; parked spares {}",
                    f.len(),
                    if shared.features.parked_spares_in(f) {
                        "on"
                    } else {
                        "off (no --await-claim in --help)"
                    }
                ),
                Err(why) => log::warn!("cannot read claude --help: {why}"),
            }
            let _ = shared.features.help.set(help);
            let _ = shared.claude_version.set(answer);
        });
    if let Err(e) = spawned {
        let _ = shared
            .claude_version
            .set(Err(format!("cannot start the check of claude: {e}")));
    }
}

/// Why the children's environment (`env`) gives the CLI no credentials, if it gives
/// none (`/health` and `/ready` report it; checked on each request, since a stored
/// login may appear later).
pub fn missing_credentials(env: &[(String, String)]) -> Option<String> {
    (!has_credentials(env)).then(|| {
        format!(
            "no credentials for the model: none of {} is set for the children, and there \
             is no stored login (.credentials.json) in ~/.claude or $CLAUDE_CONFIG_DIR",
            CREDENTIAL_VARS[..3].join(", ")
        )
    })
}

/// Whether the children's environment (`env`) gives the CLI any credentials.
fn has_credentials(env: &[(String, String)]) -> bool {
    let get = |name: &str| {
        env.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    if CREDENTIAL_VARS.iter().any(|v| get(v).is_some()) {
        return true;
    }
    let dirs: [Option<PathBuf>; 2] = [
        get("CLAUDE_CONFIG_DIR").map(PathBuf::from),
        get("HOME").map(|h| Path::new(h).join(".claude")),
    ];
    dirs.iter()
        .flatten()
        .any(|d| d.join(".credentials.json").is_file())
}

/// `BIN ARG` (`--version`, `--help`) with the children's environment: its output, or
/// why it failed. After `limit` the probe's process group is killed (by its pid: the
/// group is its own).
fn probe(
    bin: &Path,
    env: &[(String, String)],
    arg: &str,
    limit: Duration,
) -> Result<String, String> {
    let mut cmd = Command::new(bin);
    cmd.arg(arg)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    sys::terminate_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let pid = child.id();
    let (tx, rx) = crossbeam_channel::bounded::<std::io::Result<Output>>(1);
    // `wait_with_output` reads both pipes to their end and reaps the child; waiting on
    // a channel gives it a time limit without polling.
    let waiter = thread::Builder::new()
        .name("claude-probe-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
    if let Err(e) = waiter {
        let _ = sys::signal_group(pid, sys::Signal::Kill);
        return Err(format!("cannot wait for {} {arg}: {e}", bin.display()));
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(o)) if o.status.success() => {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        Ok(Ok(o)) => Err(format!(
            "{} {arg} failed ({}): {}",
            bin.display(),
            o.status,
            crate::util::truncate(String::from_utf8_lossy(&o.stderr).trim(), 500)
        )),
        Ok(Err(e)) => Err(format!("cannot read {} {arg}: {e}", bin.display())),
        Err(_) => {
            let _ = sys::signal_group(pid, sys::Signal::Kill);
            Err(format!(
                "{} {arg} did not answer within {} s",
                bin.display(),
                limit.as_secs()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credentials_come_from_a_variable_or_a_credentials_file() {
        let nowhere = std::env::temp_dir().join("claude-ws-no-such-home");
        let home = nowhere.display().to_string();
        assert!(!has_credentials(&env(&[("HOME", &home)])));
        assert!(!has_credentials(&env(&[
            ("HOME", &home),
            ("ANTHROPIC_API_KEY", "")
        ])));
        assert!(has_credentials(&env(&[
            ("HOME", &home),
            ("ANTHROPIC_API_KEY", "k")
        ])));
        assert!(has_credentials(&env(&[("CLAUDE_CODE_OAUTH_TOKEN", "t")])));
        let dir = std::env::temp_dir().join(format!("claude-ws-creds-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".claude")).unwrap();
        std::fs::write(dir.join(".claude/.credentials.json"), "{}").unwrap();
        let found = has_credentials(&env(&[("HOME", &dir.display().to_string())]));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(found);
    }

    #[test]
    fn a_missing_binary_is_reported_at_once() {
        let e = probe(Path::new("/no/such/claude"), &[], "--version", PROBE_LIMIT).unwrap_err();
        assert!(e.contains("cannot run /no/such/claude"), "{e}");
    }
}
