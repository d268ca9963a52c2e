//! The on-disk records of conversations: which CLI conversation a server session id
//! holds, kept under a principal's state directory (`claude-ws-sessions/<session id>`),
//! so `resume` by a session id works after the session ended, here or on another
//! instance sharing `--state-dir`; and which of them a session holds now, on any
//! instance (`claude-ws-sessions/<session id>.live`, a lease its session refreshes).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::spec::create_private_dir;

/// The CLI's own state directory, where its children keep their conversations when
/// no per-principal one is set: `CLAUDE_CONFIG_DIR` of their environment, else
/// `$HOME/.claude`. The records (and history) then live there too.
pub fn cli_own_dir(child_env: &[(String, String)]) -> Option<PathBuf> {
    let get = |key: &str| {
        child_env
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    };
    get("CLAUDE_CONFIG_DIR").or_else(|| get("HOME").map(|h| h.join(".claude")))
}

/// The directory of the records, under a principal's directory (titles and first
/// prompts of `history.rs` and the leases below live beside them).
pub const RECORDS: &str = "claude-ws-sessions";

/// Where the conversation of a server session id is recorded, under a principal's
/// directory.
fn record_file(dir: &Path, session_id: &str) -> Option<PathBuf> {
    crate::util::is_session_id(session_id).then(|| dir.join(RECORDS).join(session_id))
}

/// How often a session that holds a conversation refreshes its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(20);
/// A lease not refreshed for this long is stale: its instance is gone (killed, or
/// its host down) without removing it.
pub const LEASE_TTL: Duration = Duration::from_secs(75);

fn lease_file(dir: &Path, session_id: &str) -> Option<PathBuf> {
    let file = record_file(dir, session_id)?;
    Some(file.with_file_name(format!("{session_id}.live")))
}

/// Server session `session_id` is alive (on this instance): write or refresh its
/// lease, which tells every instance sharing the state directory that the session's
/// conversation is live ([`is_held`]).
pub fn hold(dir: &Path, session_id: &str) {
    let Some(file) = lease_file(dir, session_id) else {
        return;
    };
    let write = || -> std::io::Result<()> {
        if let Some(parent) = file.parent() {
            create_private_dir(parent)?;
        }
        std::fs::write(&file, holder())
    };
    if let Err(e) = write() {
        log::warn!("cannot keep the lease of session {session_id}: {e}");
    }
}

/// Server session `session_id` ends: its lease goes.
pub fn release(dir: &Path, session_id: &str) {
    if let Some(file) = lease_file(dir, session_id) {
        let _ = std::fs::remove_file(file);
    }
}

/// What a lease says of the instance holding it: `<pid>@<host>`.
fn holder() -> String {
    format!("{}@{}", std::process::id(), host())
}

/// This host's name, read once (every lease written and every live one read needs it).
fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

/// Whether server session `session_id` is alive on some instance sharing `dir`: its
/// lease was refreshed within [`LEASE_TTL`], and, written on this host, by a process
/// that still runs (an instance killed here frees its sessions at once; one on
/// another host, once its lease is stale).
pub fn is_held(dir: &Path, session_id: &str) -> bool {
    let Some(file) = lease_file(dir, session_id) else {
        return false;
    };
    let age = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
    if !age.is_ok_and(|a| a < LEASE_TTL) {
        return false;
    }
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    match text.trim().split_once('@') {
        Some((pid, at)) if at == host() => pid
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists()),
        _ => true,
    }
}

/// Remember that server session `session_id` holds CLI conversation `conversation`.
pub fn record_conversation(
    dir: &Path,
    session_id: &str,
    conversation: &str,
) -> std::io::Result<()> {
    let file =
        record_file(dir, session_id).ok_or_else(|| std::io::Error::other("not a session id"))?;
    if let Some(parent) = file.parent() {
        create_private_dir(parent)?;
    }
    std::fs::write(file, conversation)
}

/// The CLI conversation recorded for server session `session_id`, if any.
pub fn recorded_conversation(dir: &Path, session_id: &str) -> Option<String> {
    let text = std::fs::read_to_string(record_file(dir, session_id)?).ok()?;
    let id = text.trim();
    (!id.is_empty() && id.len() <= 256 && !id.starts_with('-') && !id.contains(char::is_whitespace))
        .then(|| id.to_string())
}

/// What the CLI says when `--resume` names a conversation it does not have (in a
/// `result`'s `errors`, or on stderr before it exits).
const NOT_FOUND: &str = "No conversation found";

/// Whether `text` is the CLI saying that the conversation to resume does not exist.
pub fn says_not_found(text: &str) -> bool {
    text.contains(NOT_FOUND)
}

/// The CLI's own words, when a `result` line (its fields) reports a resume of a
/// conversation it does not have.
pub fn result_not_found(result: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let errors = result.get("errors")?.as_array()?;
    errors
        .iter()
        .filter_map(serde_json::Value::as_str)
        .find(|e| says_not_found(e))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_odd_ids_are_refused() {
        let dir = std::env::temp_dir().join(format!("claude-ws-records-{}", std::process::id()));
        record_conversation(&dir, "ab-12", "conv-1").unwrap();
        assert_eq!(
            recorded_conversation(&dir, "ab-12").as_deref(),
            Some("conv-1")
        );
        assert_eq!(recorded_conversation(&dir, "cd-34"), None);
        assert!(record_conversation(&dir, "../x", "c").is_err());
        assert_eq!(recorded_conversation(&dir, "../x"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
