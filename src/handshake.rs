//! Who may open a session: the checks run on the WebSocket upgrade request, before any
//! session or child exists, in this order: path (404), shutdown (503), a well-formed,
//! unambiguous request (400), Origin and Host (403), credentials (401), a reattach to a
//! session held here, draining (503), capacity (503, 429). A refusal is a plain HTTP
//! answer with a JSON body.
//!
//! Resume anywhere: a reattach naming a session this instance does not hold, whose
//! conversation is recorded in the principal's state directory (`--state-dir`, shared
//! by the instances), opens a new session that keeps the client's session id and goes
//! on with that conversation (`connection_established` says `resumed:
//! "conversation"`; nothing is replayed, `seq` starts again at 1) — unless a session
//! of that id is live on another instance (its lease, `conversations.rs`): 409.

use std::net::{IpAddr, SocketAddr};

use crossbeam_channel::Sender;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{HeaderValue, StatusCode};

use crate::auth;
use crate::protocol::{http_error_body, ErrorCode};
use crate::protocol::{SDK_PATH, WS_PATH};
use crate::registry::{AttachRefusal, Control, Endpoint, Slot, SlotRefusal};
use crate::state::Shared;

/// How long a new connection waits for a detached session it had ended to give its
/// slot back (it ends at once; its child is stopped by the reaper meanwhile).
const RECLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a successful handshake hands on.
pub enum Admission {
    /// A new session.
    New(Newcomer),
    /// A client reattaching to its session (`?session_id=S&last_seq=N`).
    Reattach {
        session_id: String,
        control: Sender<Control>,
        last_seq: u64,
    },
}

/// Who opens a new session.
pub struct Newcomer {
    /// Held for its `Drop`, which gives the session slot back.
    _slot: Slot,
    /// The authenticated user (a JWT's `sub`), if any.
    pub user: Option<String>,
    /// Whom the session belongs to (see `auth::principal`).
    pub principal: String,
    /// The client's address (behind a trusted proxy, the one it forwarded).
    pub client_ip: IpAddr,
    /// What rate and session limits count against: the principal when authentication
    /// is on, else the client's address.
    pub limit_key: String,
    /// Set when the client resumes a session another instance (or an earlier life of
    /// this one) held: the session keeps this id and conversation.
    pub resumed: Option<Resumed>,
    /// It came to `/sdk` (the CLI's stream-json relayed, `sdk/`), not `/ws`.
    pub sdk: bool,
}

/// A session resumed from the state directory.
pub struct Resumed {
    /// The id the client knows it by.
    pub session_id: String,
    /// Its CLI conversation, recorded in the principal's state directory.
    pub conversation: String,
}

/// Check an upgrade request. On success `admitted` holds the session's slot.
// The error type is fixed by tungstenite's handshake `Callback`.
#[allow(clippy::result_large_err)]
pub fn check(
    shared: &Shared,
    peer: SocketAddr,
    req: &Request,
    mut resp: Response,
    admitted: &mut Option<Admission>,
) -> Result<Response, ErrorResponse> {
    let config = &shared.config;
    let sdk = req.uri().path() == SDK_PATH;
    if req.uri().path() != WS_PATH && !sdk {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            &format!("the WebSocket endpoints are {WS_PATH} and {}", SDK_PATH),
        ));
    }
    if shared.is_shutting_down() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "the server is shutting down",
        ));
    }
    let upgrade = match auth::parse_upgrade(req) {
        Ok(u) => u,
        Err(why) => {
            log::warn!("refused {peer}: {why}");
            return Err(refuse(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &why));
        }
    };
    if let Err(why) = auth::check_origin(config, shared.ws_addr(), &upgrade) {
        log::warn!("refused {peer}: {why}");
        return Err(refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &why));
    }
    let auth = match auth::authenticate(config, &upgrade) {
        Ok(a) => a,
        Err(why) => {
            log::warn!("refused {peer}: {why}");
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "missing or invalid credentials",
            ));
        }
    };
    if let Some(p) = &auth.subprotocol {
        if let Ok(v) = HeaderValue::from_str(p) {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
    }
    let principal = auth::principal(config, auth.user.as_deref());
    // `/sdk` counts frames, not `seq`s (docs/protocol.md, "`/sdk`").
    let seq_key = if sdk { "last_frame" } else { "last_seq" };
    let reattach = match reattach_params(req.uri().query(), seq_key) {
        Ok(r) => r,
        Err(why) => {
            log::warn!("refused {peer}: {why}");
            return Err(refuse(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &why));
        }
    };
    let mut resumed = None;
    if let Some((session_id, last_seq)) = reattach {
        // A session held here takes its client back even while the server drains: its
        // query goes on, and the drain closes it with 1012 once that is over.
        let endpoint = if sdk { Endpoint::Sdk } else { Endpoint::Ws };
        match shared.registry.attach(&session_id, &principal, endpoint) {
            Ok(control) => {
                *admitted = Some(Admission::Reattach {
                    session_id,
                    control,
                    last_seq,
                });
                return Ok(resp);
            }
            Err(AttachRefusal::Unknown) => {
                // `/sdk` resumes a conversation on disk with `options.resume` instead.
                let dir = shared.state_dir.as_ref().filter(|_| !sdk);
                let dir = dir.map(|d| crate::spec::principal_dir(d, &principal));
                let recorded = dir
                    .as_ref()
                    .and_then(|dir| crate::conversations::recorded_conversation(dir, &session_id));
                if dir.is_some_and(|d| crate::conversations::is_held(&d, &session_id)) {
                    // Resumed here, its conversation would have two CLIs writing it.
                    log::warn!("refused {peer}: session {session_id} is live on another instance");
                    return Err(refuse(
                        StatusCode::CONFLICT,
                        ErrorCode::ConversationLive,
                        "that session is live on another instance sharing the state directory: \
                         reach it through the balancer, which routes it by its id",
                    ));
                }
                let Some(conversation) = recorded else {
                    return Err(refuse(
                        StatusCode::NOT_FOUND,
                        ErrorCode::UnknownSession,
                        "no such session here: it ended, its reconnect grace passed, or it lives on another instance",
                    ));
                };
                resumed = Some(Resumed {
                    session_id,
                    conversation,
                });
            }
            Err(AttachRefusal::NotYours) => {
                log::warn!("refused {peer}: reattach to another principal's session");
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    "that session belongs to someone else",
                ));
            }
        }
    }
    if shared.is_draining() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Draining,
            "this instance is draining and takes no new sessions; connect again to reach another",
        ));
    }
    let headers = |name: &str| -> Vec<&str> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let client_ip = crate::proxy::client_ip(
        peer.ip(),
        &config.trusted_proxies,
        &headers("Forwarded"),
        &headers("X-Forwarded-For"),
    );
    let limit_key = if auth::enabled(config) {
        principal.clone()
    } else {
        client_ip.to_string()
    };
    // A detached session with nothing running never blocks a new one: the least
    // recently used is ended (its conversation stays resumable) to make room.
    let slot = match shared.registry.reserve_or_reclaim(
        &limit_key,
        (config.max_sessions, config.max_sessions_per_peer),
        RECLAIM_WAIT,
    ) {
        Ok(slot) => slot,
        Err(SlotRefusal::ServerFull) => {
            log::warn!("refused {peer}: {} sessions already", config.max_sessions);
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServerFull,
                &format!(
                    "the server holds its maximum of {} sessions (--max-sessions)",
                    config.max_sessions
                ),
            ));
        }
        Err(SlotRefusal::PeerFull) => {
            log::warn!("refused {peer}: {limit_key} holds its maximum of sessions");
            let who = if auth::enabled(config) {
                "this user"
            } else {
                "this address"
            };
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::PeerFull,
                &format!(
                    "{who} holds its maximum of {} sessions (--max-sessions-per-peer)",
                    config.max_sessions_per_peer
                ),
            ));
        }
    };
    *admitted = Some(Admission::New(Newcomer {
        _slot: slot,
        user: auth.user,
        principal,
        client_ip,
        limit_key,
        resumed,
        sdk,
    }));
    Ok(resp)
}

/// `session_id` and `last_seq` of a reattach (`/ws?session_id=S&last_seq=N`), each at
/// most once; `last_seq` defaults to 0 (send again everything still held).
fn reattach_params(query: Option<&str>, seq_key: &str) -> Result<Option<(String, u64)>, String> {
    let (mut id, mut seq) = (None, None);
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "session_id" => &mut id,
            k if k == seq_key => &mut seq,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(format!("{k} is given more than once"));
        }
    }
    let Some(id) = id else {
        return match seq {
            Some(_) => Err(format!("{seq_key} needs a session_id")),
            None => Ok(None),
        };
    };
    if !crate::util::is_session_id(id) {
        return Err("session_id must be the session_id of connection_established".into());
    }
    let seq = match seq {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| format!("{seq_key} must be a whole number (the last one received)"))?,
    };
    Ok(Some((id.to_string(), seq)))
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> ErrorResponse {
    crate::metrics::refused(code.as_str());
    let mut r = ErrorResponse::new(Some(http_error_body(code, message)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    r
}
