//! Every message a client and the server exchange, and every error code.
//!
//! This file is the protocol reference in code: each client-visible message type is
//! defined here once. Client frames are parsed in two steps (JSON object → `type` →
//! the variant's fields) so that each way a frame can be wrong gets its own stable code.

use serde::{Deserialize, Serialize};

use serde_json::{Map, Value};

pub use crate::json::Raw;

/// The path that upgrades to the WebSocket of claude-ws's own protocol.
pub const WS_PATH: &str = "/ws";

/// The path that upgrades to the CLI's own stream-json, for the Agent SDKs (`sdk/`).
pub const SDK_PATH: &str = "/sdk";

/// A stable, machine-readable reason carried by every `error` message.
///
/// The string forms never change once released; clients may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    InvalidJson,
    /// The JSON is valid but not an object.
    InvalidMessage,
    /// The object has no `type` field, or it is not a string.
    MissingType,
    /// The `type` is not one this server understands.
    UnknownType,
    /// A field is missing or has the wrong type.
    InvalidField,
    /// An option in `query.options` is unknown or has a bad value.
    InvalidOption,
    /// A binary frame arrived; the protocol is JSON text frames only.
    BinaryNotSupported,
    /// A `query` arrived while another query of this session was running.
    QueryInProgress,
    /// An `interrupt` or `input` arrived with no query running.
    NoActiveQuery,
    /// The `claude` binary could not be started (missing, not executable).
    ClaudeSpawnFailed,
    /// The `claude` child exited or crashed before the query finished.
    ClaudeExited,
    /// The `claude` child printed a stdout line that is not a JSON object.
    ClaudeOutputInvalid,
    /// The child is not reading its stdin; the message was not delivered.
    ClaudeBusy,
    /// The requested working directory is outside the allowed workspace roots.
    CwdNotAllowed,
    /// The requested permission mode is not allowed by the operator.
    PermissionModeNotAllowed,
    /// The session sent too many queries too fast.
    RateLimited,
    /// Too many children are running on this server right now.
    ServerBusy,
    /// Authentication is required and was missing or wrong.
    Unauthorized,
    /// The server is shutting down and takes no new queries.
    ShuttingDown,
    /// A `permission_response` or `tool_result` names no request that is waiting
    /// (unknown, already answered, or timed out).
    UnknownRequest,
    /// A connection to a session that has `--max-viewers` connections already.
    TooManyViewers,
    /// The tool registry (`--tool-registry-url`) did not answer, or answered an error.
    ToolRegistryError,
    /// The CLI refused a live setting (`set_model`, …).
    SettingFailed,
    /// A `resume` named a conversation the CLI does not have (here, for this user).
    /// The query ends; the session forgets it, so its next query starts fresh.
    ConversationNotFound,
    /// A `delete_conversation` named a conversation a session is holding right now.
    ConversationLive,
    // The codes below answer HTTP requests (a refused handshake, the side port).
    /// The upgrade request is malformed or ambiguous: no valid `Host`, a `Host`,
    /// `Origin` or `Authorization` field given twice, or a token presented twice.
    BadRequest,
    /// No such path.
    NotFound,
    /// The method is not supported on this path.
    MethodNotAllowed,
    /// The request's `Origin` or `Host` is not allowed.
    Forbidden,
    /// The server holds its maximum number of sessions.
    ServerFull,
    /// The instance drains (SIGTERM, `POST /drain`) and takes no new sessions: connect
    /// again through the balancer to reach another instance.
    Draining,
    /// A reattach names a session this server does not hold.
    UnknownSession,
    /// A reattaching client asked for messages the session no longer holds.
    ReplayGap,
    /// This peer address holds its maximum number of sessions.
    PeerFull,
    /// A bug: the handler failed.
    InternalError,
}

impl ErrorCode {
    /// Whether an error of this code only refuses the one client message it answers
    /// (it was malformed, or came at the wrong time), changing nothing for anybody
    /// else: a session with several viewers tells the sender alone.
    pub fn refuses_one_message(self) -> bool {
        matches!(
            self,
            ErrorCode::InvalidJson
                | ErrorCode::InvalidMessage
                | ErrorCode::MissingType
                | ErrorCode::UnknownType
                | ErrorCode::BinaryNotSupported
                | ErrorCode::QueryInProgress
                | ErrorCode::NoActiveQuery
                | ErrorCode::UnknownRequest
        )
    }

    /// The stable wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MissingType => "missing_type",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidOption => "invalid_option",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::QueryInProgress => "query_in_progress",
            ErrorCode::NoActiveQuery => "no_active_query",
            ErrorCode::ClaudeSpawnFailed => "claude_spawn_failed",
            ErrorCode::ClaudeExited => "claude_exited",
            ErrorCode::ClaudeOutputInvalid => "claude_output_invalid",
            ErrorCode::ClaudeBusy => "claude_busy",
            ErrorCode::CwdNotAllowed => "cwd_not_allowed",
            ErrorCode::PermissionModeNotAllowed => "permission_mode_not_allowed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::TooManyViewers => "too_many_viewers",
            ErrorCode::ToolRegistryError => "tool_registry_error",
            ErrorCode::SettingFailed => "setting_failed",
            ErrorCode::ConversationNotFound => "conversation_not_found",
            ErrorCode::ConversationLive => "conversation_live",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::Draining => "draining",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::ReplayGap => "replay_gap",
            ErrorCode::PeerFull => "peer_full",
            ErrorCode::InternalError => "internal_error",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error to report to the client: a code and a plain sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
}

impl ClientError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError {
            code,
            message: message.into(),
        }
    }
}

/// The JSON body of an HTTP refusal: `{"error": "...", "code": "..."}`.
pub fn http_error_body(code: ErrorCode, message: &str) -> String {
    serde_json::json!({"error": message, "code": code.as_str()}).to_string()
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// Why the server closes a connection: the close code and reason it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The session ended as the client asked (`end_session`) (1000).
    Normal,
    /// A message over the size limit (1009).
    TooLarge,
    /// A frame that breaks the WebSocket protocol (1002).
    ProtocolError,
    /// A text message (or close reason) that is not valid UTF-8 (1007).
    InvalidPayload,
    /// The server is shutting down (1001).
    ShuttingDown,
    /// The instance drained (1012, service restart): reconnect, through the balancer,
    /// with the session id to resume the conversation on another instance.
    Restarting,
    /// No query and no client message for the session timeout (4000).
    IdleTimeout,
    /// The client read none of its pending output for the stall timeout (4001).
    NotReading,
    /// `/sdk`: another connection of the same client took the session over (4002).
    Replaced,
    /// A reattach came too late: the session ended meanwhile (4003).
    SessionGone,
    /// The session has `--max-viewers` connections already (4004).
    TooManyViewers,
    /// `/sdk`: the start was refused, or a frame is not one the CLI reads (1008).
    Refused,
}

impl Closing {
    /// The close code and reason sent.
    pub fn frame(self) -> (u16, &'static str) {
        match self {
            Closing::Normal => (1000, "session ended"),
            Closing::TooLarge => (1009, "message too large"),
            Closing::ProtocolError => (1002, "protocol error"),
            Closing::InvalidPayload => (1007, "invalid UTF-8"),
            Closing::ShuttingDown => (1001, "server shutting down"),
            Closing::Restarting => (1012, "service restart: reconnect to resume"),
            Closing::IdleTimeout => (4000, "session idle timeout"),
            Closing::NotReading => (4001, "client is not reading"),
            Closing::Replaced => (4002, "session taken over by a new connection"),
            Closing::SessionGone => (4003, "the session has ended"),
            Closing::TooManyViewers => (4004, "the session has --max-viewers connections"),
            Closing::Refused => (1008, "refused"),
        }
    }
}

/// Options of a `query`, each mapped to one `claude` flag (see `child::ChildSpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryOptions {
    pub allowed_tools: Option<Vec<String>>,
    pub disallowed_tools: Option<Vec<String>>,
    pub permission_mode: Option<String>,
    pub max_thinking_tokens: Option<u32>,
    pub model: Option<String>,
    pub cwd: Option<String>,
    pub continue_conversation: Option<bool>,
    pub resume: Option<String>,
    pub max_turns: Option<u32>,
    pub system_prompt: Option<String>,
    pub append_system_prompt: Option<String>,
    pub include_partial_messages: Option<bool>,
    /// Ask the client before a tool runs (`permission_request`); the server's
    /// `--permission-prompts` is the default.
    pub permission_prompts: Option<bool>,
}

/// A prompt or more input: text, or content blocks as the Messages API takes them
/// (`text` and base64 `image` blocks), so a browser can send a screenshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Blocks(Vec<Value>),
}

/// Image types the Messages API takes.
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The `text` of content blocks, joined by newlines (how the CLI echoes a prompt of
/// blocks; images and other blocks have none).
pub fn blocks_text(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Prompt {
    /// Check a `prompt` or `text` field's value.
    fn parse(value: Value, field: &str) -> Result<Prompt, ClientError> {
        let bad =
            |why: String| ClientError::new(ErrorCode::InvalidField, format!("{field}: {why}"));
        let blocks = match value {
            Value::String(s) => return Ok(Prompt::Text(s)),
            Value::Array(blocks) => blocks,
            _ => return Err(bad("must be a string or an array of content blocks".into())),
        };
        if blocks.is_empty() {
            return Err(bad("has no content blocks".into()));
        }
        for (i, b) in blocks.iter().enumerate() {
            let kind = b.get("type").and_then(Value::as_str);
            let ok = match kind {
                Some("text") => {
                    b.get("text").is_some_and(Value::is_string)
                        && b.as_object()
                            .is_some_and(|m| m.keys().all(|k| k == "type" || k == "text"))
                }
                Some("image") => {
                    let source = b.get("source");
                    let str_of = |k: &str| source.and_then(|s| s.get(k)).and_then(Value::as_str);
                    str_of("type") == Some("base64")
                        && str_of("media_type").is_some_and(|t| IMAGE_TYPES.contains(&t))
                        && str_of("data").is_some_and(is_base64)
                }
                _ => false,
            };
            if !ok {
                return Err(bad(format!(
                    "block {i} is not a text block {{\"type\":\"text\",\"text\":…}} or a base64 image block \
                     {{\"type\":\"image\",\"source\":{{\"type\":\"base64\",\"media_type\":\"image/png\"|…,\"data\":…}}}}"
                )));
            }
        }
        Ok(Prompt::Blocks(blocks))
    }

    /// The text of the prompt: its text blocks joined by newlines, as the CLI echoes it.
    pub fn text(&self) -> String {
        match self {
            Prompt::Text(s) => s.clone(),
            Prompt::Blocks(blocks) => blocks_text(blocks),
        }
    }

    /// The Messages API `content`: the string, or the blocks.
    pub fn content(&self) -> Value {
        match self {
            Prompt::Text(s) => Value::String(s.clone()),
            Prompt::Blocks(b) => Value::Array(b.clone()),
        }
    }

    /// Its size as it would be sent, for the prompt size limit.
    pub fn size(&self) -> usize {
        match self {
            Prompt::Text(s) => s.len(),
            Prompt::Blocks(b) => b.iter().map(|b| b.to_string().len()).sum(),
        }
    }
}

/// Strict standard base64 (with padding), as image `data` must be.
fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && data_encoding::BASE64.decode_len(s.len()).is_ok()
        && data_encoding::BASE64.decode(s.as_bytes()).is_ok()
}

/// A client's answer to a `permission_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    Allow,
    Deny,
}

/// A live setting the client may change during a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    PermissionMode(String),
    Model(String),
    MaxThinkingTokens(u32),
}

impl Setting {
    /// The setting's name, as `settings_updated` carries it.
    pub fn name(&self) -> &'static str {
        match self {
            Setting::PermissionMode(_) => "permission_mode",
            Setting::Model(_) => "model",
            Setting::MaxThinkingTokens(_) => "max_thinking_tokens",
        }
    }

    /// The value, as `settings_updated` carries it.
    pub fn value(&self) -> Value {
        match self {
            Setting::PermissionMode(s) | Setting::Model(s) => Value::String(s.clone()),
            Setting::MaxThinkingTokens(n) => Value::from(*n),
        }
    }
}

/// A message from the client.
// Parsed and handled one at a time; boxing the query's options would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Start a query: `{"type":"query","prompt":"…","options":{…}}`.
    Query {
        prompt: Prompt,
        options: QueryOptions,
    },
    /// Stop the running query: `{"type":"interrupt"}`.
    Interrupt,
    /// More user text for the running query: `{"type":"input","text":"…"}`.
    Input { text: Prompt },
    /// The answer to a `permission_request`:
    /// `{"type":"permission_response","request_id":"…","behavior":"allow"|"deny","updated_input":{…}?,"message":"…"?}`.
    PermissionResponse {
        request_id: String,
        behavior: Behavior,
        updated_input: Option<Map<String, Value>>,
        message: Option<String>,
    },
    /// Define a tool the model may call and this client executes:
    /// `{"type":"define_tool","tool":{"name","description","parameters"|"input_schema"}}`.
    /// The definition is checked in `tools.rs`.
    DefineTool { tool: Value },
    /// List the tools defined: `{"type":"get_tools"}`.
    GetTools,
    /// The answer to a `tool_call`:
    /// `{"type":"tool_result","call_id":"…","content":"text"|[blocks],"is_error":false}`.
    ToolResult {
        call_id: String,
        content: Value,
        is_error: bool,
    },
    /// Change a setting during the session: `set_permission_mode`, `set_model`,
    /// `set_max_thinking_tokens`.
    Set(Setting),
    /// End the session now, child and all: `{"type":"end_session"}` (a close with code
    /// 1000 does the same; any other way a connection ends leaves the session waiting
    /// for its client to reattach).
    EndSession,
    /// Application-level liveness check: `{"type":"ping"}` → `pong`.
    Ping,
    /// Several messages handled in order: `{"type":"batch","messages":[…]}`.
    /// Each element is parsed on its own when its turn comes, so one bad element
    /// yields one `error` and the rest still run.
    Batch { messages: Vec<Value> },
    /// The principal's conversations: `list_conversations`, `load_conversation`,
    /// `rename_conversation`, `delete_conversation` (answered by `history.rs`).
    History(HistoryRequest),
}

/// A request about the principal's earlier and live conversations.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryRequest {
    /// `{"type":"list_conversations","limit":N?,"before":T|"session id"?}`: newest
    /// first; `before` (a time in Unix seconds, or the last session id of the previous
    /// page) pages on.
    List {
        limit: Option<u64>,
        before: Option<Value>,
    },
    /// `{"type":"load_conversation","session_id":"…"}`.
    Load { session_id: String },
    /// `{"type":"rename_conversation","session_id":"…","title":"…"}`.
    Rename { session_id: String, title: String },
    /// `{"type":"delete_conversation","session_id":"…"}`.
    Delete { session_id: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListConversationsFields {
    #[serde(rename = "type")]
    _type: String,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    before: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationFields {
    #[serde(rename = "type")]
    _type: String,
    session_id: String,
    #[serde(default)]
    title: Option<String>,
}

/// The most messages one `batch` may hold.
pub const MAX_BATCH: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryFields {
    #[serde(rename = "type")]
    _type: String,
    prompt: Value,
    #[serde(default)]
    options: QueryOptionsValue,
}

/// `options` kept as a raw value so its errors get the `invalid_option` code.
#[derive(Deserialize, Default)]
#[serde(transparent)]
struct QueryOptionsValue(Option<Value>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFields {
    #[serde(rename = "type")]
    _type: String,
    text: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionResponseFields {
    #[serde(rename = "type")]
    _type: String,
    request_id: String,
    behavior: Behavior,
    #[serde(default)]
    updated_input: Option<Map<String, Value>>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefineToolFields {
    #[serde(rename = "type")]
    _type: String,
    tool: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolResultFields {
    #[serde(rename = "type")]
    _type: String,
    call_id: String,
    content: Value,
    #[serde(default)]
    is_error: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPermissionModeFields {
    #[serde(rename = "type")]
    _type: String,
    mode: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetModelFields {
    #[serde(rename = "type")]
    _type: String,
    model: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMaxThinkingTokensFields {
    #[serde(rename = "type")]
    _type: String,
    tokens: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFields {
    #[serde(rename = "type")]
    _type: String,
    messages: Vec<Value>,
}

/// Parse one text frame.
pub fn parse_client_text(text: &str) -> Result<ClientMessage, ClientError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ClientError::new(
            ErrorCode::InvalidJson,
            format!("the message is not valid JSON ({e})"),
        )
    })?;
    parse_client_value(value)
}

/// Parse one message already decoded as JSON (a frame, or an element of a batch).
pub fn parse_client_value(value: Value) -> Result<ClientMessage, ClientError> {
    let Value::Object(map) = &value else {
        return Err(ClientError::new(
            ErrorCode::InvalidMessage,
            "a message must be a JSON object with a \"type\" field",
        ));
    };
    let kind = match map.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ClientError::new(
                ErrorCode::MissingType,
                "the \"type\" field must be a string",
            ))
        }
        None => {
            return Err(ClientError::new(
                ErrorCode::MissingType,
                "the message has no \"type\" field",
            ))
        }
    };
    match kind.as_str() {
        "query" => {
            let q: QueryFields = fields(value, "query")?;
            let options = match q.options.0 {
                None | Some(Value::Null) => QueryOptions::default(),
                Some(v) => serde_json::from_value(v).map_err(|e| {
                    ClientError::new(ErrorCode::InvalidOption, format!("bad query options: {e}"))
                })?,
            };
            Ok(ClientMessage::Query {
                prompt: Prompt::parse(q.prompt, "prompt")?,
                options,
            })
        }
        "input" => {
            let i: InputFields = fields(value, "input")?;
            Ok(ClientMessage::Input {
                text: Prompt::parse(i.text, "text")?,
            })
        }
        "permission_response" => {
            let r: PermissionResponseFields = fields(value, "permission_response")?;
            Ok(ClientMessage::PermissionResponse {
                request_id: r.request_id,
                behavior: r.behavior,
                updated_input: r.updated_input,
                message: r.message,
            })
        }
        "define_tool" => {
            let d: DefineToolFields = fields(value, "define_tool")?;
            Ok(ClientMessage::DefineTool { tool: d.tool })
        }
        "tool_result" => {
            let r: ToolResultFields = fields(value, "tool_result")?;
            Ok(ClientMessage::ToolResult {
                call_id: r.call_id,
                content: r.content,
                is_error: r.is_error,
            })
        }
        "set_permission_mode" => {
            let f: SetPermissionModeFields = fields(value, "set_permission_mode")?;
            Ok(ClientMessage::Set(Setting::PermissionMode(f.mode)))
        }
        "set_model" => {
            let f: SetModelFields = fields(value, "set_model")?;
            Ok(ClientMessage::Set(Setting::Model(f.model)))
        }
        "set_max_thinking_tokens" => {
            let f: SetMaxThinkingTokensFields = fields(value, "set_max_thinking_tokens")?;
            Ok(ClientMessage::Set(Setting::MaxThinkingTokens(f.tokens)))
        }
        "batch" => {
            let b: BatchFields = fields(value, "batch")?;
            if b.messages.len() > MAX_BATCH {
                return Err(ClientError::new(
                    ErrorCode::InvalidField,
                    format!("a batch holds at most {MAX_BATCH} messages"),
                ));
            }
            Ok(ClientMessage::Batch {
                messages: b.messages,
            })
        }
        "list_conversations" => {
            let f: ListConversationsFields = fields(value, "list_conversations")?;
            Ok(ClientMessage::History(HistoryRequest::List {
                limit: f.limit,
                before: f.before.filter(|b| !b.is_null()),
            }))
        }
        "load_conversation" | "rename_conversation" | "delete_conversation" => {
            let f: ConversationFields = fields(value, &kind)?;
            let session_id = f.session_id;
            Ok(ClientMessage::History(match (kind.as_str(), f.title) {
                ("rename_conversation", Some(title)) => {
                    HistoryRequest::Rename { session_id, title }
                }
                ("rename_conversation", None) => {
                    return Err(ClientError::new(
                        ErrorCode::InvalidField,
                        "bad \"rename_conversation\" message: missing field `title`",
                    ))
                }
                (_, Some(_)) => {
                    return Err(ClientError::new(
                        ErrorCode::InvalidField,
                        format!("bad \"{kind}\" message: unknown field `title`"),
                    ))
                }
                ("load_conversation", None) => HistoryRequest::Load { session_id },
                _ => HistoryRequest::Delete { session_id },
            }))
        }
        "interrupt" | "ping" | "get_tools" | "end_session" => {
            if map.len() > 1 {
                return Err(ClientError::new(
                    ErrorCode::InvalidField,
                    format!("\"{kind}\" takes no fields besides \"type\""),
                ));
            }
            Ok(match kind.as_str() {
                "ping" => ClientMessage::Ping,
                "get_tools" => ClientMessage::GetTools,
                "end_session" => ClientMessage::EndSession,
                _ => ClientMessage::Interrupt,
            })
        }
        other => Err(ClientError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {:?}; expected query, interrupt, input, ping, batch, \
                 permission_response, define_tool, get_tools, tool_result, set_permission_mode, \
                 set_model, set_max_thinking_tokens, end_session, list_conversations, \
                 load_conversation, rename_conversation or delete_conversation",
                crate::util::truncate(other, 64)
            ),
        )),
    }
}

fn fields<T: serde::de::DeserializeOwned>(value: Value, kind: &str) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| {
        ClientError::new(
            ErrorCode::InvalidField,
            format!("bad \"{kind}\" message: {e}"),
        )
    })
}

/// What the server can do, announced in `connection_established`.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// `input` is accepted while a query runs.
    pub concurrent_input: bool,
    /// `interrupt` stops a running query.
    pub interrupt_query: bool,
    /// Clients may define their own tools (`define_tool`, `tool_call`, `tool_result`).
    pub tool_definition: bool,
    /// Queries may ask the client before a tool runs (`permission_request`).
    pub permission_prompts: bool,
    /// `set_permission_mode`, `set_model` and `set_max_thinking_tokens` are taken.
    pub live_settings: bool,
    /// `prompt` and `input.text` may be arrays of text and image blocks.
    pub image_input: bool,
    /// A dropped client may reattach (`/ws?session_id=…&last_seq=…`).
    pub reattach: bool,
    /// The `permission_mode`s a query may ask for (`--allowed-permission-modes`);
    /// any other is refused with `permission_mode_not_allowed`.
    pub permission_modes: Vec<String>,
    /// A query may choose its `cwd` (inside the workspace roots; else
    /// `cwd_not_allowed`).
    pub choose_cwd: bool,
}

/// How a query ended, carried by `query_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryOutcome {
    /// Every result arrived and the last one was not an error.
    Completed,
    /// The last result reported an error (`is_error`).
    Failed,
    /// The client interrupted it.
    Interrupted,
    /// The child died or could not be started; an `error` preceded this.
    Error,
}

/// A message from the server. Serialized as `{"type": …, "seq": …, "data": {…}}`
/// by [`ServerMessage::write_frame`]: the variants that carry the CLI's own JSON text
/// ([`Raw`]) are written by hand there, every other one by serde.
// Messages are built and serialized at once, never stored in bulk, so the size of the
// largest variant (a result's ten fields) costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ServerMessage<'a> {
    ConnectionEstablished {
        session_id: String,
        capabilities: Capabilities,
        /// On a reattach: `true` (the same session, messages after `last_seq` follow).
        /// On a session resumed from the state directory, its instance gone:
        /// `"conversation"` (the same session id and conversation; nothing is replayed
        /// and `seq` starts again at 1).
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed: Option<Value>,
        /// How many connections (viewers) the session has now, this one included.
        viewers: usize,
        /// This connection's number among the session's viewers (as `viewer_joined`,
        /// `permission_resolved` … name it).
        viewer: u64,
    },
    /// Another connection joined the session (`/ws?session_id=S`): `viewers` now.
    ViewerJoined {
        viewer: u64,
        viewers: usize,
    },
    /// A connection of the session went: `viewers` now.
    ViewerLeft {
        viewer: u64,
        viewers: usize,
    },
    /// A `permission_request` was answered by viewer `viewer` (sent while the session
    /// has more than one viewer): no other answer is wanted.
    PermissionResolved {
        request_id: String,
        behavior: Behavior,
        viewer: u64,
    },
    /// A `tool_call` was answered by viewer `viewer` (sent while the session has more
    /// than one viewer): no other `tool_result` is wanted.
    ToolCallResolved {
        call_id: String,
        is_error: bool,
        viewer: u64,
    },
    QueryStart {
        prompt: Value,
    },
    /// An `assistant` line of the CLI (text, tool_use, thinking blocks), or a `user`
    /// line carrying `tool_result` blocks.
    ///
    /// Its parts are kept as the CLI's own JSON text: relayed, never rebuilt.
    #[serde(skip)]
    AssistantMessage {
        content: Raw<'a>,
        model: Option<Raw<'a>>,
        parent_tool_use_id: Option<Raw<'a>>,
        /// On a `user` line carrying an edit's result: the CLI's `structuredPatch`
        /// (hunks with `oldStart`, `newStart` and `lines`), sent as `structured_patch`
        /// so a client can show the diff with its line numbers.
        structured_patch: Option<Raw<'a>>,
    },
    /// A `system` line of the CLI, all its fields (including `subtype`) kept.
    SystemMessage(Map<String, Value>),
    /// A `result` line of the CLI, all its fields kept (`permission_denials` among
    /// them), plus `cost_usd`, which repeats `total_cost_usd`.
    ResultMessage(Map<String, Value>),
    /// A `stream_event` line (with `--include-partial-messages`), its event relayed.
    #[serde(skip)]
    StreamEvent {
        event: Raw<'a>,
        session_id: Option<Raw<'a>>,
        parent_tool_use_id: Option<Raw<'a>>,
    },
    /// Every `--max-running` place is busy: the query waits at `position` (1 = next);
    /// sent again when the position changes.
    QueryQueued {
        position: usize,
    },
    QueryEnd {
        outcome: QueryOutcome,
    },
    InterruptAcknowledged {},
    QueryInterrupted {},
    InputAcknowledged {
        text: Value,
    },
    /// The CLI asks whether a tool may run; answered by `permission_response`.
    PermissionRequest {
        request_id: String,
        tool_name: Value,
        input: Value,
        tool_use_id: Value,
        suggestions: Value,
    },
    /// A `define_tool` was taken.
    ToolDefined {
        tool_name: String,
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_id: Option<String>,
    },
    /// The answer to `get_tools`.
    ToolsList {
        tools: Vec<Value>,
        source: &'static str,
    },
    /// The model called a tool the client defined; answered by `tool_result`.
    ToolCall {
        call_id: String,
        name: String,
        input: Value,
    },
    /// The CLI withdrew a `permission_request` it had asked (`control_cancel_request`):
    /// no `permission_response` is wanted for `request_id` any more.
    PermissionCancelled {
        request_id: String,
    },
    /// The CLI withdrew a `tool_call` (`control_cancel_request`): no `tool_result` is
    /// wanted for `call_id` any more.
    ToolCallCancelled {
        call_id: String,
    },
    /// A live setting took effect (`applied`: `live`, or `next_query` when no child runs).
    SettingsUpdated {
        setting: &'static str,
        value: Value,
        applied: &'static str,
    },
    /// The answer to `list_conversations`: the principal's conversations, newest
    /// first, each `{session_id, title, created_at, updated_at, turns, cwd, live}`;
    /// `more` when an older page follows.
    Conversations {
        conversations: Vec<Value>,
        more: bool,
    },
    /// The answer to `load_conversation`: its turns as this protocol's messages
    /// (`query_start`, `assistant_message`, `result_message`), each `{type, data}`.
    Conversation {
        session_id: String,
        messages: Vec<Value>,
        /// The oldest turns were left out to keep the answer under its bound
        /// (`history::MAX_LOAD_BYTES`).
        truncated: bool,
    },
    /// A `rename_conversation` was taken.
    ConversationRenamed {
        session_id: String,
        title: String,
    },
    /// A `delete_conversation` was taken: the record and the CLI's transcript are gone.
    ConversationDeleted {
        session_id: String,
    },
    Pong {},
    Error {
        error: String,
        code: ErrorCode,
    },
}

impl ServerMessage<'_> {
    /// The wire `type` of this message.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::ConnectionEstablished { .. } => "connection_established",
            ServerMessage::ViewerJoined { .. } => "viewer_joined",
            ServerMessage::ViewerLeft { .. } => "viewer_left",
            ServerMessage::PermissionResolved { .. } => "permission_resolved",
            ServerMessage::ToolCallResolved { .. } => "tool_call_resolved",
            ServerMessage::QueryStart { .. } => "query_start",
            ServerMessage::AssistantMessage { .. } => "assistant_message",
            ServerMessage::SystemMessage(_) => "system_message",
            ServerMessage::ResultMessage { .. } => "result_message",
            ServerMessage::StreamEvent { .. } => "stream_event",
            ServerMessage::QueryQueued { .. } => "query_queued",
            ServerMessage::QueryEnd { .. } => "query_end",
            ServerMessage::InterruptAcknowledged {} => "interrupt_acknowledged",
            ServerMessage::QueryInterrupted {} => "query_interrupted",
            ServerMessage::InputAcknowledged { .. } => "input_acknowledged",
            ServerMessage::PermissionRequest { .. } => "permission_request",
            ServerMessage::ToolDefined { .. } => "tool_defined",
            ServerMessage::ToolsList { .. } => "tools_list",
            ServerMessage::ToolCall { .. } => "tool_call",
            ServerMessage::PermissionCancelled { .. } => "permission_cancelled",
            ServerMessage::ToolCallCancelled { .. } => "tool_call_cancelled",
            ServerMessage::SettingsUpdated { .. } => "settings_updated",
            ServerMessage::Conversations { .. } => "conversations",
            ServerMessage::Conversation { .. } => "conversation",
            ServerMessage::ConversationRenamed { .. } => "conversation_renamed",
            ServerMessage::ConversationDeleted { .. } => "conversation_deleted",
            ServerMessage::Pong {} => "pong",
            ServerMessage::Error { .. } => "error",
        }
    }

    /// Room for the frame of this message, so it is written without regrowing.
    fn size_hint(&self) -> usize {
        let raw = |r: &Option<Raw>| r.as_ref().map_or(0, |r| r.get().len());
        96 + match self {
            ServerMessage::AssistantMessage {
                content,
                model,
                parent_tool_use_id,
                structured_patch,
            } => content.get().len() + raw(model) + raw(parent_tool_use_id) + raw(structured_patch),
            ServerMessage::StreamEvent {
                event,
                session_id,
                parent_tool_use_id,
            } => event.get().len() + raw(session_id) + raw(parent_tool_use_id),
            _ => 64,
        }
    }

    /// Append the JSON text of this message as sent, numbered `seq`, to `out`.
    pub fn write_frame(&self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(self.size_hint());
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(self.kind().as_bytes());
        out.extend_from_slice(br#"","seq":"#);
        push_decimal(out, seq);
        out.extend_from_slice(br#","data":"#);
        match self {
            ServerMessage::AssistantMessage {
                content,
                model,
                parent_tool_use_id,
                structured_patch,
            } => raw_object(
                out,
                [
                    ("content", Some(content)),
                    ("model", model.as_ref()),
                    ("parent_tool_use_id", parent_tool_use_id.as_ref()),
                    ("structured_patch", structured_patch.as_ref()),
                ],
            ),
            ServerMessage::StreamEvent {
                event,
                session_id,
                parent_tool_use_id,
            } => raw_object(
                out,
                [
                    ("event", Some(event)),
                    ("session_id", session_id.as_ref()),
                    ("parent_tool_use_id", parent_tool_use_id.as_ref()),
                ],
            ),
            // Serializing plain structs and `Value`s cannot fail.
            other => {
                if let Err(e) = serde_json::to_writer(&mut *out, other) {
                    out.truncate(start);
                    let error = ServerMessage::Error {
                        error: format!("could not encode a {} message: {e}", self.kind()),
                        code: ErrorCode::InvalidMessage,
                    };
                    return error.write_frame(seq, out);
                }
            }
        }
        out.push(b'}');
    }

    /// The JSON text of this message as sent, numbered `seq`.
    #[cfg(test)]
    pub fn to_frame(&self, seq: u64) -> String {
        let mut out = Vec::new();
        self.write_frame(seq, &mut out);
        // Only serde_json output and checked JSON text were written.
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// `{"name":<json>,…}` of the members present. Names are plain identifiers: no escaping.
fn raw_object<const N: usize>(out: &mut Vec<u8>, members: [(&str, Option<&Raw>); N]) {
    out.push(b'{');
    let mut first = true;
    for (name, value) in members {
        if let Some(value) = value {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(value.get());
        }
    }
    out.push(b'}');
}

/// `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The `/sdk` endpoint's own frames (docs/protocol.md, "`/sdk`"); everything else on it is the CLI's
/// stdout as written.
pub mod sdk {
    use serde_json::json;

    use super::ClientError;

    /// `{"type":"sdk_started","session_id":S}` (`"resumed":true` on a reattach).
    pub fn started(session_id: &str, resumed: bool) -> String {
        let mut v = json!({"type": "sdk_started", "session_id": session_id});
        if resumed {
            v["resumed"] = true.into();
        }
        v.to_string()
    }

    /// `{"type":"sdk_queued","position":N}`: waiting for a `--max-running` place.
    pub fn queued(position: usize) -> String {
        json!({"type": "sdk_queued", "position": position}).to_string()
    }

    /// `{"type":"error","data":{"code":…,"error":…}}`.
    pub fn error(e: &ClientError) -> String {
        json!({"type": "error", "data": {"code": e.code.as_str(), "error": e.message}}).to_string()
    }
}

impl From<ClientError> for ServerMessage<'static> {
    fn from(e: ClientError) -> Self {
        ServerMessage::Error {
            error: e.message,
            code: e.code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse_client_text(text).unwrap_err().code
    }

    #[test]
    fn each_kind_of_bad_frame_has_its_own_code() {
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code("\"query\""), ErrorCode::InvalidMessage);
        assert_eq!(code("{}"), ErrorCode::MissingType);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::MissingType);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"query"}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(r#"{"type":"query","prompt":5}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"input","text":null}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(code(r#"{"type":"ping","x":1}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(r#"{"type":"query","prompt":"p","options":{"colour":1}}"#),
            ErrorCode::InvalidOption
        );
        assert_eq!(
            code(r#"{"type":"query","prompt":"p","options":{"max_turns":"x"}}"#),
            ErrorCode::InvalidOption
        );
    }

    #[test]
    fn good_frames_parse() {
        let m = parse_client_text(
            r#"{"type":"query","prompt":"hi","options":{"model":"m","max_turns":2,"allowed_tools":["Write"]}}"#,
        )
        .unwrap();
        let ClientMessage::Query { prompt, options } = m else {
            panic!("not a query")
        };
        assert_eq!(prompt, Prompt::Text("hi".into()));
        assert_eq!(options.model.as_deref(), Some("m"));
        assert_eq!(options.max_turns, Some(2));
        assert_eq!(
            parse_client_text(r#"{"type":"query","prompt":"x","options":null}"#).unwrap(),
            ClientMessage::Query {
                prompt: Prompt::Text("x".into()),
                options: QueryOptions::default()
            }
        );
        assert_eq!(
            parse_client_text(r#"{"type":"interrupt"}"#).unwrap(),
            ClientMessage::Interrupt
        );
        assert_eq!(
            parse_client_text(r#"{"type":"batch","messages":[{"type":"ping"}]}"#).unwrap(),
            ClientMessage::Batch {
                messages: vec![serde_json::json!({"type":"ping"})]
            }
        );
    }

    #[test]
    fn frames_have_type_seq_and_data() {
        let f = ServerMessage::InputAcknowledged {
            text: Value::from("t"),
        }
        .to_frame(7);
        assert_eq!(
            f,
            r#"{"type":"input_acknowledged","seq":7,"data":{"text":"t"}}"#
        );
        let f = ServerMessage::Pong {}.to_frame(1);
        assert_eq!(f, r#"{"type":"pong","seq":1,"data":{}}"#);
        let e: ServerMessage = ClientError::new(ErrorCode::NoActiveQuery, "nothing runs").into();
        assert_eq!(
            e.to_frame(2),
            r#"{"type":"error","seq":2,"data":{"error":"nothing runs","code":"no_active_query"}}"#
        );
    }

    /// A property test over the parser: for many random and mutated frames, parsing
    /// never panics, and every refusal carries a code and a non-empty sentence.
    #[test]
    fn parser_never_panics_on_random_or_mutated_input() {
        let seeds = [
            r#"{"type":"query","prompt":"hi","options":{"cwd":"/tmp","max_turns":3,"allowed_tools":["Write"]}}"#,
            r#"{"type":"batch","messages":[{"type":"ping"},{"type":"input","text":"x"}]}"#,
            r#"{"type":"interrupt"}"#,
            r#"{"type":"input","text":"\u00e9\ud83d\ude00"}"#,
        ];
        let alphabet: &[u8] = b"{}[]\":,.-+eE0123456789 \t\n\\u00tfnrlsaqyp\xff\x00";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64*: deterministic, so a failure reproduces.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut accepted = 0;
        for i in 0..20_000 {
            let mut bytes: Vec<u8> = if i % 2 == 0 {
                seeds[(next() % seeds.len() as u64) as usize]
                    .as_bytes()
                    .to_vec()
            } else {
                (0..next() % 64)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            for _ in 0..(next() % 4) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            match parse_client_text(&text) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert!(!e.message.is_empty());
                    assert!(!e.code.as_str().is_empty());
                }
            }
        }
        assert!(
            accepted > 100,
            "the generator should also produce valid frames"
        );
    }
}
