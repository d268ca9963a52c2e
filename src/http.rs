//! The side port: `GET /health` and `GET /sessions`, JSON, and 404 elsewhere.
//! `/sessions` needs the same credentials as the WebSocket; `/health` tells nothing
//! secret.

use std::process::Command;

use serde_json::json;
use tiny_http::{Header, Method, Request, Response};

use crate::protocol::{http_error_body, ErrorCode};
use crate::state::Shared;

/// Answer requests until the server is unblocked.
pub fn serve(server: &tiny_http::Server, shared: &Shared) {
    for req in server.incoming_requests() {
        // A panic in a handler must not take the side port down.
        let answered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| route(&req, shared)));
        let (status, body) = answered.unwrap_or_else(|_| {
            (
                500,
                http_error_body(ErrorCode::InternalError, "internal error"),
            )
        });
        let response = Response::from_string(body)
            .with_status_code(status)
            .with_header(json_header());
        let _ = req.respond(response);
    }
}

fn json_header() -> Header {
    Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .unwrap_or_else(|_| unreachable!("static header is valid"))
}

fn route(req: &Request, shared: &Shared) -> (u16, String) {
    let path = req.url().split('?').next().unwrap_or("");
    match (req.method(), path) {
        (Method::Get, "/health") => (200, health(shared).to_string()),
        (Method::Get, "/sessions") => {
            let authorization = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.as_str());
            match crate::auth::authenticate_http(&shared.config, authorization, req.url()) {
                Ok(viewer) => {
                    let principal = match &viewer {
                        crate::auth::Viewer::Admin => None,
                        crate::auth::Viewer::Principal(p) => Some(p.as_str()),
                    };
                    (
                        200,
                        serde_json::to_string(&shared.registry.snapshot(principal))
                            .unwrap_or_else(|_| "[]".into()),
                    )
                }
                Err(why) => {
                    log::warn!("refused /sessions from {:?}: {why}", req.remote_addr());
                    (
                        401,
                        http_error_body(ErrorCode::Unauthorized, "missing or invalid credentials"),
                    )
                }
            }
        }
        (_, "/health" | "/sessions") => (
            405,
            http_error_body(ErrorCode::MethodNotAllowed, "only GET is supported"),
        ),
        _ => (404, http_error_body(ErrorCode::NotFound, "not found")),
    }
}

fn health(shared: &Shared) -> serde_json::Value {
    let r = &shared.registry;
    json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": r.uptime_s(),
        "sessions": r.session_count(),
        "active_queries": r.running_count(),
        "children": shared.places.used(),
        "queued_queries": shared.places.queued(),
        "detached_sessions": r.detached_count(),
        "claude": claude_version(shared),
    })
}

/// `claude --version`, asked once (it takes a moment) and remembered.
fn claude_version(shared: &Shared) -> serde_json::Value {
    let bin = &shared.config.claude_bin;
    let v = shared.claude_version.get_or_init(|| {
        match Command::new(bin)
            .arg("--version")
            .env_clear()
            .envs(shared.child_env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            Ok(o) => Err(format!(
                "{} --version failed ({}): {}",
                bin.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {}: {e}", bin.display())),
        }
    });
    match v {
        Ok(version) => json!({"path": bin.display().to_string(), "version": version}),
        Err(error) => json!({"path": bin.display().to_string(), "error": error}),
    }
}
