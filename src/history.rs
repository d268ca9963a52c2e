//! A principal's history: its earlier and live conversations, listed, read back as
//! this protocol's own messages, renamed and deleted (`list_conversations`,
//! `load_conversation`, `rename_conversation`, `delete_conversation`).
//!
//! Everything is read from the principal's state directory, so every instance sharing
//! `--state-dir` sees the same history: the records of `conversations.rs`
//! (`claude-ws-sessions/<session id>` → the CLI's conversation id), a title given by
//! `rename_conversation` (`claude-ws-sessions/<session id>.title`), the CLI's own
//! transcript (`projects/<cwd slug>/<conversation>.jsonl`, written by the CLI), and the
//! `result_message`s as they were sent (`claude-ws-results/<conversation>.jsonl`,
//! appended by the session: the transcript holds no `result` lines). Transcript lines
//! become messages through the same translation as the CLI's stdout
//! ([`crate::cli::translate`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::{json, Map, Value};

use crate::cli::{self, CliEvent};
use crate::conversations::RECORDS;
use crate::protocol::{ClientError, ErrorCode, HistoryRequest, ServerMessage};
use crate::registry::{Endpoint, Registry, SessionInfo};

/// The page size when `list_conversations` names no `limit`.
pub const DEFAULT_LIMIT: u64 = 50;
/// The largest `limit` a `list_conversations` may ask for.
pub const MAX_LIMIT: u64 = 500;
/// The longest title `rename_conversation` takes (characters).
pub const MAX_TITLE: usize = 200;
/// The most JSON text a `conversation` answer holds; the oldest turns are left out
/// beyond it (`truncated`).
pub const MAX_LOAD_BYTES: usize = 8 << 20;
/// How long a title taken from the first prompt is (characters).
const AUTO_TITLE: usize = 80;

const RESULTS: &str = "claude-ws-results";

/// Answer one history request of `principal`, whose state directory is `dir` (none:
/// no history is kept, only live sessions are known).
pub fn answer(
    registry: &Registry,
    dir: Option<&Path>,
    principal: &str,
    request: HistoryRequest,
) -> ServerMessage<'static> {
    let live = live_sessions(registry, principal);
    let result = match request {
        HistoryRequest::List { limit, before } => list(dir, &live, limit, before.as_ref()),
        HistoryRequest::Load { session_id } => load(dir, &session_id),
        HistoryRequest::Rename { session_id, title } => rename(dir, &session_id, &title),
        HistoryRequest::Delete { session_id } => delete(dir, &session_id, &live),
    };
    result.unwrap_or_else(ServerMessage::from)
}

/// `principal`'s `/ws` sessions held here, by id.
fn live_sessions(registry: &Registry, principal: &str) -> HashMap<String, SessionInfo> {
    registry
        .snapshot(Some(principal))
        .into_iter()
        .filter(|s| s.endpoint == Endpoint::Ws)
        .map(|s| (s.session_id.clone(), s))
        .collect()
}

fn not_found(session_id: &str) -> ClientError {
    ClientError::new(
        ErrorCode::ConversationNotFound,
        format!(
            "no conversation {:?} here: it never was, it was deleted, or it is another user's",
            crate::util::truncate(session_id, 64)
        ),
    )
}

/// The CLI conversation of record `session_id`, or `conversation_not_found`.
fn conversation_of(dir: Option<&Path>, session_id: &str) -> Result<String, ClientError> {
    dir.and_then(|d| crate::conversations::recorded_conversation(d, session_id))
        .ok_or_else(|| not_found(session_id))
}

/// Where the CLI keeps the transcript of `conversation`: under `projects/`, in the
/// directory named for the cwd it ran in.
fn transcript_of(dir: &Path, conversation: &str) -> Option<PathBuf> {
    let name = format!("{conversation}.jsonl");
    std::fs::read_dir(dir.join("projects"))
        .ok()?
        .flatten()
        .map(|e| e.path().join(&name))
        .find(|p| p.is_file())
}

fn results_file(dir: &Path, conversation: &str) -> Option<PathBuf> {
    crate::util::is_session_id(conversation)
        .then(|| dir.join(RESULTS).join(format!("{conversation}.jsonl")))
}

/// The first prompt of a session, kept by the server: the title while the CLI has
/// not written its transcript yet (CLIs before 2.1.332 write it at exit).
fn prompt_file(dir: &Path, session_id: &str) -> Option<PathBuf> {
    crate::util::is_session_id(session_id)
        .then(|| dir.join(RECORDS).join(format!("{session_id}.prompt")))
}

/// Keep the first prompt of session `session_id` (a later one changes nothing).
pub fn note_prompt(dir: &Path, session_id: &str, prompt: &str) {
    let Some(file) = prompt_file(dir, session_id) else {
        return;
    };
    if file.exists() || prompt.trim().is_empty() {
        return;
    }
    let text = crate::util::truncate(prompt, 4 * AUTO_TITLE);
    let write = || -> std::io::Result<()> {
        if let Some(parent) = file.parent() {
            crate::spec::create_private_dir(parent)?;
        }
        std::fs::write(&file, text)
    };
    if let Err(e) = write() {
        log::warn!("cannot keep the first prompt of {session_id}: {e}");
    }
}

fn title_file(dir: &Path, session_id: &str) -> Option<PathBuf> {
    crate::util::is_session_id(session_id)
        .then(|| dir.join(RECORDS).join(format!("{session_id}.title")))
}

/// Keep a `result_message` of `conversation` as it was sent, for `load_conversation`,
/// with the time it was sent (`{"at_ms": …, "result": {…}}`): what places it in its
/// turn of the transcript ([`results_before`]).
pub fn note_result(dir: &Path, conversation: &str, fields: &Map<String, Value>) {
    let Some(file) = results_file(dir, conversation) else {
        return;
    };
    let write = || -> std::io::Result<()> {
        if let Some(parent) = file.parent() {
            crate::spec::create_private_dir(parent)?;
        }
        let at_ms = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let kept = json!({"at_ms": at_ms, "result": fields});
        let mut line = serde_json::to_vec(&kept).map_err(std::io::Error::other)?;
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)?
            .write_all(&line)
    };
    if let Err(e) = write() {
        log::warn!("cannot keep a result of {conversation}: {e}");
    }
}

/// When a conversation resumed as `from` goes on as `to` (a CLI that forks on
/// `--resume`), its earlier results go with it.
pub fn carry_results(dir: &Path, from: &str, to: &str) {
    if let (Some(a), Some(b)) = (results_file(dir, from), results_file(dir, to)) {
        if a != b && a.is_file() && !b.exists() {
            if let Err(e) = std::fs::copy(&a, &b) {
                log::warn!("cannot carry the results of {from} to {to}: {e}");
            }
        }
    }
}

/// Every record in `dir`: session id → CLI conversation.
fn records(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_dir(dir.join(RECORDS))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            let conversation = crate::conversations::recorded_conversation(dir, &id)?;
            Some((id, conversation))
        })
        .collect()
}

/// The records that share `conversation` (the one named first).
fn records_of(dir: &Path, session_id: &str, conversation: &str) -> Vec<String> {
    let mut ids = vec![session_id.to_string()];
    ids.extend(
        records(dir)
            .into_iter()
            .filter(|(id, c)| c == conversation && id != session_id)
            .map(|(id, _)| id),
    );
    ids
}

/// One transcript read: its turns as messages, and what the list shows of it.
#[derive(Default, Clone)]
struct Transcript {
    messages: Vec<Value>,
    turns: u64,
    first_prompt: Option<String>,
    cwd: Option<String>,
    created_at: Option<u64>,
}

/// What a prompt line of the transcript says, if it is one the user wrote (not a tool
/// result, an interrupt marker, a command or a meta line the CLI added).
fn prompt_of(line: &Map<String, Value>) -> Option<Value> {
    if line.get("isMeta").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let content = line.get("message")?.get("content")?;
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            if blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            {
                return None;
            }
            crate::protocol::blocks_text(blocks)
        }
        _ => return None,
    };
    let t = text.trim_start();
    if t.starts_with('<') || t.starts_with("[Request interrupted") {
        return None;
    }
    Some(content.clone())
}

/// The text of a prompt, for a title (its whitespace is folded there).
fn prompt_text(prompt: &Value) -> String {
    match prompt {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => crate::protocol::blocks_text(blocks),
        _ => String::new(),
    }
}

/// `{type, data}` of a message as it is sent (its data as the wire has it).
fn wire(message: &ServerMessage) -> Option<Value> {
    let mut frame = Vec::new();
    message.write_frame(0, &mut frame);
    let mut v: Value = serde_json::from_slice(&frame).ok()?;
    Some(json!({"type": message.kind(), "data": v.get_mut("data")?.take()}))
}

/// Read the transcript at `file`, with the results kept for it; only the summary
/// when `messages` is false.
fn read_transcript(file: &Path, results: Vec<Kept>, messages: bool) -> Transcript {
    let mut t = Transcript::default();
    let Ok(f) = std::fs::File::open(file) else {
        return t;
    };
    let mut results: VecDeque<Kept> = results.into();
    let mut push_results = |t: &mut Transcript, end: TurnEnd| {
        for r in results_before(&mut results, end) {
            t.messages
                .push(json!({"type": "result_message", "data": r}));
        }
    };
    for line in BufReader::new(f).split(b'\n').map_while(Result::ok) {
        // The list needs only the prompts: no other line is parsed for it (a tool's
        // result can be megabytes; a quote inside a prompt's text is escaped).
        if !messages
            && (!contains(&line, br#""type":"user""#) || contains(&line, br#""tool_use_id":"#))
        {
            continue;
        }
        let Ok(Value::Object(mut line)) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let kind = line.get("type").and_then(Value::as_str).unwrap_or("");
        if !(kind == "user" || kind == "assistant")
            || line.get("isSidechain").and_then(Value::as_bool) == Some(true)
        {
            continue;
        }
        if t.cwd.is_none() {
            t.cwd = line.get("cwd").and_then(Value::as_str).map(str::to_string);
        }
        if t.created_at.is_none() {
            t.created_at = line
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(unix_seconds);
        }
        if kind == "user" {
            if let Some(prompt) = prompt_of(&line) {
                if t.turns > 0 && messages {
                    let at = line.get("timestamp").and_then(Value::as_str);
                    let end = at.and_then(unix_ms).map_or(TurnEnd::Unknown, TurnEnd::At);
                    push_results(&mut t, end);
                }
                t.turns += 1;
                if t.first_prompt.is_none() {
                    t.first_prompt = Some(prompt_text(&prompt));
                }
                if messages {
                    t.messages
                        .push(json!({"type": "query_start", "data": {"prompt": prompt}}));
                }
                continue;
            }
            // The transcript names a tool's full result as stdout does, in camelCase.
            if let Some(r) = line.remove("toolUseResult") {
                line.insert("tool_use_result".into(), r);
            }
        }
        if !messages {
            continue;
        }
        if let CliEvent::Forward(m) = cli::translate(line) {
            t.messages.extend(wire(&m));
        }
    }
    if t.turns > 0 && messages {
        push_results(&mut t, TurnEnd::Last);
    }
    t
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The most transcript summaries [`summary_of`] keeps.
const MAX_SUMMARIES: usize = 10_000;

/// What the list shows of the transcript at `file` (no messages): read again only
/// when the file changed (its size or time), so a long history lists fast.
fn summary_of(file: &Path) -> Transcript {
    type Cache = HashMap<PathBuf, ((u64, u64), Transcript)>;
    static SUMMARIES: std::sync::Mutex<Option<Cache>> = std::sync::Mutex::new(None);
    let stamp = std::fs::metadata(file)
        .ok()
        .map(|m| (m.len(), modified_ms(file).unwrap_or(0)));
    if let Some(stamp) = stamp {
        let cache = crate::util::lock(&SUMMARIES);
        if let Some((s, t)) = cache.as_ref().and_then(|c| c.get(file)) {
            if *s == stamp {
                return t.clone();
            }
        }
    }
    let summary = read_transcript(file, Vec::new(), false);
    if let Some(stamp) = stamp {
        let mut cache = crate::util::lock(&SUMMARIES);
        let cache = cache.get_or_insert_with(HashMap::new);
        if cache.len() >= MAX_SUMMARIES {
            cache.clear();
        }
        cache.insert(file.to_path_buf(), (stamp, summary.clone()));
    }
    summary
}

/// A `result_message` kept for a conversation.
#[derive(Debug)]
struct Kept {
    /// Its fields, as they were sent.
    result: Value,
    /// When it was sent (milliseconds since the epoch); `None` in records written
    /// before the time was kept.
    at_ms: Option<u64>,
}

impl Kept {
    fn of(line: Value) -> Kept {
        match line {
            Value::Object(mut o) if o.get("result").is_some_and(Value::is_object) => Kept {
                at_ms: o.get("at_ms").and_then(Value::as_u64),
                result: o.remove("result").unwrap_or_default(),
            },
            // The first records: the result's own fields, nothing else.
            other => Kept {
                result: other,
                at_ms: None,
            },
        }
    }

    /// About when the turn it ends started: the time it was sent less the turn's
    /// `duration_ms` (the CLI's own clock of the turn).
    fn turn_started_ms(&self) -> Option<u64> {
        let took = self.result.get("duration_ms").and_then(Value::as_u64);
        Some(self.at_ms?.saturating_sub(took.unwrap_or(0)))
    }
}

/// The results kept for `conversation`, oldest first.
fn results_of(dir: &Path, conversation: &str) -> Vec<Kept> {
    let Some(text) = results_file(dir, conversation).and_then(|f| std::fs::read(f).ok()) else {
        return Vec::new();
    };
    text.split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .map(Kept::of)
        .collect()
}

/// Where the turn whose results are wanted ends.
#[derive(Clone, Copy)]
enum TurnEnd {
    /// The next prompt, written at this time (milliseconds since the epoch).
    At(u64),
    /// The next prompt, with no time.
    Unknown,
    /// The transcript's end: the rest are the last turn's.
    Last,
}

/// The results of the turn that ends at `end`: those kept with their time whose turn
/// started before the next prompt, so a turn that ended without one (its child died)
/// takes none and the later turns still get theirs. A record without its time (or a
/// prompt without one) goes one to a turn, in order, as before times were kept.
fn results_before(results: &mut VecDeque<Kept>, end: TurnEnd) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(front) = results.front() {
        let timed = front.turn_started_ms();
        let take = match (end, timed) {
            (TurnEnd::Last, _) => true,
            (TurnEnd::At(next), Some(started)) => started < next,
            (TurnEnd::At(_), None) | (TurnEnd::Unknown, _) => out.is_empty(),
        };
        if !take {
            break;
        }
        out.extend(results.pop_front().map(|k| k.result));
        if timed.is_none() && !matches!(end, TurnEnd::Last) {
            break;
        }
    }
    out
}

/// An ISO 8601 UTC time (`2026-12-07T01:08:44.945Z`) in Unix milliseconds (the
/// fraction's first three digits; none: `.000`).
fn unix_ms(t: &str) -> Option<u64> {
    let ms = match t.get(19..20) {
        Some(".") => {
            let digits: String = t[20..].chars().take_while(char::is_ascii_digit).collect();
            format!("{digits:0<3}").get(..3)?.parse::<u64>().ok()?
        }
        _ => 0,
    };
    Some(unix_seconds(t)? * 1000 + ms)
}

/// An ISO 8601 UTC time (`2026-12-07T01:08:44.945Z`) in Unix seconds.
fn unix_seconds(t: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Milliseconds since the epoch of a file's last change.
fn modified_ms(file: &Path) -> Option<u64> {
    let t = std::fs::metadata(file).ok()?.modified().ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// One row of the list, and the time it sorts by (milliseconds).
fn row(dir: &Path, session_id: &str, live: Option<&SessionInfo>) -> Option<(u64, Value)> {
    let conversation = crate::conversations::recorded_conversation(dir, session_id)?;
    let transcript = transcript_of(dir, &conversation);
    let summary = transcript.as_deref().map(summary_of).unwrap_or_default();
    let record = dir.join(RECORDS).join(session_id);
    let updated_ms = transcript
        .as_deref()
        .and_then(modified_ms)
        .or_else(|| modified_ms(&record))?
        .max(live.map_or(0, |i| i.last_activity * 1000));
    let auto = || {
        summary
            .first_prompt
            .clone()
            .or_else(|| prompt_file(dir, session_id).and_then(|f| std::fs::read_to_string(f).ok()))
            .map(|p| shorten(p.split_whitespace().collect::<Vec<_>>().join(" ")))
    };
    let title = title_file(dir, session_id)
        .and_then(|f| std::fs::read_to_string(f).ok())
        .filter(|t| !t.is_empty())
        .or_else(auto);
    // A live session whose CLI has not written its transcript yet: what it did so far.
    let (turns, cwd) = match (&transcript, live) {
        (None, Some(info)) => (info.queries, info.cwd.clone()),
        _ => (summary.turns, summary.cwd.clone()),
    };
    let updated_at = updated_ms / 1000;
    Some((
        updated_ms,
        json!({
            "session_id": session_id,
            "title": title,
            "created_at": summary.created_at.unwrap_or(updated_at).min(updated_at),
            "updated_at": updated_at,
            "turns": turns,
            "cwd": cwd,
            // Held here, or by a session on another instance sharing the directory.
            "live": live.is_some() || crate::conversations::is_held(dir, session_id),
        }),
    ))
}

fn shorten(text: String) -> String {
    if text.chars().count() <= AUTO_TITLE {
        return text;
    }
    format!(
        "{}…",
        crate::util::truncate(&text, AUTO_TITLE - 1).trim_end()
    )
}

fn list(
    dir: Option<&Path>,
    live: &HashMap<String, SessionInfo>,
    limit: Option<u64>,
    before: Option<&Value>,
) -> Result<ServerMessage<'static>, ClientError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ClientError::new(
            ErrorCode::InvalidField,
            format!("\"limit\" must be 1 to {MAX_LIMIT}"),
        ));
    }
    let before = match before {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => Some(Err(n.as_u64().unwrap_or(0))),
        Some(Value::String(s)) if crate::util::is_session_id(s) => Some(Ok(s.clone())),
        Some(_) => {
            return Err(ClientError::new(
                ErrorCode::InvalidField,
                "\"before\" must be a time (Unix seconds) or a session id from the list",
            ))
        }
    };
    let mut rows: Vec<(u64, Value)> = Vec::new();
    if let Some(dir) = dir {
        // A conversation continued by another session (`resume`) has a record for
        // each: one row, the live one's, else the latest record's.
        let mut best: HashMap<String, (bool, u64, String)> = HashMap::new();
        for (id, conversation) in records(dir) {
            let rank = (
                live.contains_key(&id) || crate::conversations::is_held(dir, &id),
                modified_ms(&dir.join(RECORDS).join(&id)).unwrap_or(0),
                id,
            );
            match best.get(&conversation) {
                Some(b) if *b >= rank => {}
                _ => {
                    best.insert(conversation, rank);
                }
            }
        }
        for (_, _, id) in best.into_values() {
            rows.extend(row(dir, &id, live.get(&id)));
        }
    }
    // Newest first; the same time in the order of the ids, so pages are stable.
    rows.sort_by(|(a, x), (b, y)| {
        b.cmp(a)
            .then_with(|| x["session_id"].as_str().cmp(&y["session_id"].as_str()))
    });
    let start = match &before {
        None => 0,
        Some(Ok(id)) => match rows
            .iter()
            .position(|(_, r)| r["session_id"] == id.as_str())
        {
            Some(i) => i + 1,
            None => return Err(not_found(id)),
        },
        Some(Err(secs)) => rows
            .iter()
            .position(|(ms, _)| ms / 1000 < *secs)
            .unwrap_or(rows.len()),
    };
    let page: Vec<Value> = rows
        .iter()
        .skip(start)
        .take(limit as usize)
        .map(|(_, r)| r.clone())
        .collect();
    let more = rows.len() > start + page.len();
    Ok(ServerMessage::Conversations {
        conversations: page,
        more,
    })
}

fn load(dir: Option<&Path>, session_id: &str) -> Result<ServerMessage<'static>, ClientError> {
    let conversation = conversation_of(dir, session_id)?;
    let dir = dir.ok_or_else(|| not_found(session_id))?;
    let mut messages = match transcript_of(dir, &conversation) {
        Some(file) => read_transcript(&file, results_of(dir, &conversation), true).messages,
        // Recorded, but the CLI wrote nothing yet.
        None => Vec::new(),
    };
    let truncated = keep_newest(&mut messages, MAX_LOAD_BYTES);
    Ok(ServerMessage::Conversation {
        session_id: session_id.to_string(),
        messages,
        truncated,
    })
}

/// Leave out the oldest turns of `messages` (each from its `query_start`) until their
/// JSON text is at most `max` bytes; whether any were left out.
fn keep_newest(messages: &mut Vec<Value>, max: usize) -> bool {
    let mut total = 0;
    let mut cut = 0;
    for (i, m) in messages.iter().enumerate().rev() {
        total += m.to_string().len() + 1;
        if total > max {
            break;
        }
        if m["type"] == "query_start" {
            cut = i;
        }
        if i == 0 {
            return false;
        }
    }
    if cut == 0 && total <= max {
        return false;
    }
    // Not even the newest turn fits: it is sent alone.
    if cut == 0 {
        cut = messages
            .iter()
            .rposition(|m| m["type"] == "query_start")
            .unwrap_or(0);
    }
    messages.drain(..cut);
    cut > 0
}

fn rename(
    dir: Option<&Path>,
    session_id: &str,
    title: &str,
) -> Result<ServerMessage<'static>, ClientError> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE || title.contains(char::is_control) {
        return Err(ClientError::new(
            ErrorCode::InvalidField,
            format!("a title is 1 to {MAX_TITLE} characters, with no control characters"),
        ));
    }
    let conversation = conversation_of(dir, session_id)?;
    let dir = dir.ok_or_else(|| not_found(session_id))?;
    for id in records_of(dir, session_id, &conversation) {
        let Some(file) = title_file(dir, &id) else {
            continue;
        };
        std::fs::write(&file, title).map_err(|e| {
            log::warn!("cannot write {}: {e}", file.display());
            ClientError::new(ErrorCode::InternalError, "the title could not be saved")
        })?;
    }
    Ok(ServerMessage::ConversationRenamed {
        session_id: session_id.to_string(),
        title: title.to_string(),
    })
}

fn delete(
    dir: Option<&Path>,
    session_id: &str,
    live: &HashMap<String, SessionInfo>,
) -> Result<ServerMessage<'static>, ClientError> {
    let conversation = conversation_of(dir, session_id)?;
    let dir = dir.ok_or_else(|| not_found(session_id))?;
    let ids = records_of(dir, session_id, &conversation);
    let held = |id: &String| live.contains_key(id) || crate::conversations::is_held(dir, id);
    if ids.iter().any(held) {
        return Err(ClientError::new(
            ErrorCode::ConversationLive,
            "a session holds this conversation now: end it (end_session) before deleting it",
        ));
    }
    // Every record of the conversation goes (a `resume` by another session made one).
    let mut files = Vec::new();
    for id in &ids {
        crate::conversations::release(dir, id); // a stale lease, if any
        files.push(dir.join(RECORDS).join(id));
        files.extend(title_file(dir, id));
        files.extend(prompt_file(dir, id));
    }
    files.extend(transcript_of(dir, &conversation));
    files.extend(results_file(dir, &conversation));
    for f in files {
        if let Err(e) = std::fs::remove_file(&f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove {}: {e}", f.display());
                return Err(ClientError::new(
                    ErrorCode::InternalError,
                    "the conversation could not be deleted",
                ));
            }
        }
    }
    Ok(ServerMessage::ConversationDeleted {
        session_id: session_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_conversation_keeps_its_newest_turns() {
        let turn = |n: usize| {
            vec![
                json!({"type": "query_start", "data": {"prompt": format!("p{n}")}}),
                json!({"type": "assistant_message", "data": {"content": "x".repeat(100)}}),
            ]
        };
        let mut all: Vec<Value> = (0..5).flat_map(turn).collect();
        assert!(!keep_newest(&mut all.clone(), 10_000));
        assert!(keep_newest(&mut all, 400));
        assert_eq!(all.len(), 4);
        assert_eq!(all[0]["data"]["prompt"], "p3");
        let mut one = turn(9);
        assert!(!keep_newest(&mut one, 10), "a lone turn is sent whole");
        assert_eq!(one.len(), 2);
    }

    #[test]
    fn results_go_to_the_turns_they_end() {
        let dir = std::env::temp_dir().join(format!("claude-ws-results-{}", std::process::id()));
        let file = dir.join("t.jsonl");
        std::fs::create_dir_all(&dir).unwrap();
        let prompt = |text: &str, at: &str| json!({"type":"user","message":{"role":"user","content":text},"timestamp":at});
        let lines = [
            prompt("one", "2026-12-07T01:00:00.000Z"),
            prompt("two", "2026-12-07T01:00:10.000Z"),
            prompt("three", "2026-12-07T01:00:20.500Z"),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, text).unwrap();
        let t0 = unix_ms("2026-12-07T01:00:00.000Z").unwrap();
        // Turn two's child died: it has no result. Each was sent a little after its
        // turn's end, which came `duration_ms` after its start.
        let kept = |n: u64, at: u64, took: u64| Kept {
            result: json!({"n": n, "duration_ms": took}),
            at_ms: Some(at),
        };
        let results = vec![kept(1, t0 + 9_000, 8_990), kept(3, t0 + 29_000, 8_000)];
        let t = read_transcript(&file, results, true);
        let seen: Vec<String> = t
            .messages
            .iter()
            .map(|m| match m["type"].as_str().unwrap() {
                "query_start" => m["data"]["prompt"].as_str().unwrap().to_string(),
                _ => format!("r{}", m["data"]["n"]),
            })
            .collect();
        assert_eq!(seen, ["one", "r1", "two", "three", "r3"]);
        // Records without their time: one a turn, in order.
        let old = vec![Kept::of(json!({"n": 1})), Kept::of(json!({"n": 2}))];
        let t = read_transcript(&file, old, true);
        let n_after = |i: usize| t.messages[i]["data"]["n"].clone();
        assert_eq!((n_after(1), n_after(3)), (json!(1), json!(2)));
        assert_eq!(t.messages.len(), 5);
        // The kept form reads back.
        let k = Kept::of(json!({"at_ms": 5, "result": {"result": "text", "duration_ms": 2}}));
        assert_eq!((k.at_ms, k.turn_started_ms()), (Some(5), Some(3)));
        assert_eq!(k.result["result"], "text");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn iso_times_read_as_unix_milliseconds() {
        assert_eq!(unix_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(unix_ms("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(unix_ms("2026-12-07T01:08:44.945Z"), Some(1_796_605_724_945));
        assert_eq!(unix_ms("2026-12-07T01:08:44.Z"), Some(1_796_605_724_000));
    }

    #[test]
    fn iso_times_read_as_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-12-07T01:08:44.945Z"),
            Some(1_796_605_724)
        );
        assert_eq!(unix_seconds("yesterday"), None);
    }

    #[test]
    fn a_transcript_reads_as_turns_of_protocol_messages() {
        let dir = std::env::temp_dir().join(format!("claude-ws-history-{}", std::process::id()));
        let file = dir.join("t.jsonl");
        std::fs::create_dir_all(&dir).unwrap();
        let lines = [
            json!({"type":"queue-operation","operation":"enqueue","content":"hi"}),
            json!({"type":"user","message":{"role":"user","content":"hi there"},"cwd":"/w","timestamp":"2026-12-07T01:08:44.945Z"}),
            json!({"type":"attachment","attachment":{"type":"skill_listing"}}),
            json!({"parentUuid":"x","message":{"content":[{"type":"tool_use","id":"t1","name":"Bash","input":{}}],"model":"m"},"type":"assistant"}),
            json!({"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]},"toolUseResult":{"structuredPatch":[{"oldStart":1}]}}),
            json!({"type":"assistant","isSidechain":true,"message":{"content":[{"type":"text","text":"sub"}]}}),
            json!({"type":"assistant","message":{"content":[{"type":"text","text":"done"}]}}),
            json!({"type":"user","message":{"role":"user","content":"[Request interrupted by user]"}}),
            json!({"type":"user","message":{"role":"user","content":[{"type":"text","text":"again"}]}}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, text).unwrap();
        let t = read_transcript(&file, vec![Kept::of(json!({"n": 1}))], true);
        let types: Vec<_> = t
            .messages
            .iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "query_start",
                "assistant_message",
                "assistant_message",
                "assistant_message",
                "result_message",
                "query_start"
            ]
        );
        assert_eq!(t.messages[2]["data"]["structured_patch"][0]["oldStart"], 1);
        assert_eq!(t.messages[3]["data"]["content"][0]["text"], "done");
        assert_eq!((t.turns, t.cwd.as_deref()), (2, Some("/w")));
        assert_eq!(t.first_prompt.as_deref(), Some("hi there"));
        let summary = read_transcript(&file, Vec::new(), false);
        assert!(summary.messages.is_empty());
        assert_eq!((summary.turns, summary.cwd.as_deref()), (2, Some("/w")));
        assert_eq!(summary.created_at, Some(1_796_605_724));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
