//! Who may open a session: the checks run on the WebSocket upgrade request, before any
//! session or child exists, in this order: path (404), shutdown (503), a well-formed,
//! unambiguous request (400), Origin and Host (403), credentials (401), capacity (503,
//! 429). A refusal is a plain HTTP answer with a JSON body.

use std::net::SocketAddr;

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{HeaderValue, StatusCode};

use crate::auth;
use crate::protocol::{http_error_body, ErrorCode};
use crate::registry::{Slot, SlotRefusal};
use crate::state::Shared;

/// The only path that upgrades.
pub const WS_PATH: &str = "/ws";

/// What a successful handshake hands to the session.
pub struct Admission {
    /// Held for its `Drop`, which gives the session slot back.
    _slot: Slot,
    /// The authenticated user (a JWT's `sub`), if any.
    pub user: Option<String>,
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
    if req.uri().path() != WS_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            &format!("the WebSocket endpoint is {WS_PATH}"),
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
    let slot = match shared.registry.reserve(
        &peer.ip().to_string(),
        config.max_sessions,
        config.max_sessions_per_peer,
    ) {
        Ok(slot) => slot,
        Err(SlotRefusal::ServerFull) => {
            log::warn!("refused {peer}: {} sessions already", config.max_sessions);
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServerFull,
                &format!(
                    "the server holds its maximum of {} sessions",
                    config.max_sessions
                ),
            ));
        }
        Err(SlotRefusal::PeerFull) => {
            log::warn!("refused {peer}: too many sessions from this address");
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::PeerFull,
                &format!(
                    "this address holds its maximum of {} sessions",
                    config.max_sessions_per_peer
                ),
            ));
        }
    };
    *admitted = Some(Admission {
        _slot: slot,
        user: auth.user,
    });
    Ok(resp)
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(http_error_body(code, message)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    r
}
