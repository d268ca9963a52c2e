//! The on-disk records of conversations: which CLI conversation a server session id
//! holds, kept under a principal's state directory (`claude-ws-sessions/<session id>`),
//! so `resume` by a session id works after the session ended, here or on another
//! instance sharing `--state-dir`.

use std::path::{Path, PathBuf};

use crate::spec::create_private_dir;

/// Where the conversation of a server session id is recorded, under a principal's
/// directory.
fn record_file(dir: &Path, session_id: &str) -> Option<PathBuf> {
    crate::util::is_session_id(session_id).then(|| dir.join("claude-ws-sessions").join(session_id))
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
