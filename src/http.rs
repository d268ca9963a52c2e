//! The side port: `GET /health`, `GET /ready`, `GET /sessions` and `POST /drain`, JSON;
//! `GET /metrics`, Prometheus text (`metrics.rs`); 404 elsewhere. `/sessions` needs the
//! same credentials as the WebSocket, `/drain` the admin token; `/health` ("the process
//! is alive"), `/ready` ("it takes new sessions", for a balancer) and `/metrics`
//! (counts, durations, error codes: no session ids, users, peers or prompts) tell
//! nothing secret, so they need none.

use std::sync::Arc;
use std::thread;

use serde_json::json;
use tiny_http::{Header, Method, Request, Response};

use crate::protocol::{http_error_body, ErrorCode};
use crate::state::Shared;

/// Threads answering side-port requests: a slow request (a client slow to take its
/// answer) leaves the others to be served.
const WORKERS: usize = 4;

/// Start the start-up checks (whose `claude` probe `/health` reports), then answer
/// requests on [`WORKERS`] threads until the server is unblocked while shutting down.
pub fn serve(server: &Arc<tiny_http::Server>, shared: &Arc<Shared>) {
    crate::preflight::start(shared);
    let workers: Vec<_> = (0..WORKERS)
        .filter_map(|i| {
            let (server, shared) = (server.clone(), shared.clone());
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || work(&server, &shared))
                .map_err(|e| log::error!("cannot start a side-port thread: {e}"))
                .ok()
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

/// One worker: take requests from tiny_http's queue until shutdown.
fn work(server: &tiny_http::Server, shared: &Arc<Shared>) {
    loop {
        let req = match server.recv() {
            Ok(r) => r,
            // `unblock` wakes one waiting thread: pass it on to the next worker.
            Err(_) if shared.is_shutting_down() => {
                server.unblock();
                return;
            }
            Err(e) => {
                log::debug!("side port: {e}");
                continue;
            }
        };
        answer(req, shared);
    }
}

fn answer(req: Request, shared: &Arc<Shared>) {
    // A panic in a handler must not take the side port down.
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| route(&req, shared)));
    let (status, body) = answered.unwrap_or_else(|_| {
        (
            500,
            http_error_body(ErrorCode::InternalError, "internal error"),
        )
    });
    let metrics = status == 200 && req.url().split('?').next() == Some("/metrics");
    let content_type = if metrics {
        crate::metrics::CONTENT_TYPE
    } else {
        "application/json"
    };
    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(content_type_header(content_type));
    let _ = req.respond(response);
}

fn content_type_header(value: &'static str) -> Header {
    Header::from_bytes(&b"Content-Type"[..], value.as_bytes())
        .unwrap_or_else(|_| unreachable!("static header is valid"))
}

/// Who a side-port request speaks for (its `Authorization` header or `?token=`).
fn viewer(req: &Request, shared: &Shared) -> Result<crate::auth::Viewer, String> {
    let authorization = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str());
    crate::auth::authenticate_http(&shared.config, authorization, req.url())
}

fn route(req: &Request, shared: &Arc<Shared>) -> (u16, String) {
    let path = req.url().split('?').next().unwrap_or("");
    match (req.method(), path) {
        (Method::Get, "/health") => (200, health(shared).to_string()),
        (Method::Get, "/metrics") => (200, crate::metrics::render(&gauges(shared))),
        (Method::Get, "/ready") => match unready(shared) {
            None => (200, json!({"ready": true}).to_string()),
            Some(reason)
                if crate::preflight::missing_credentials(&shared.child_env).as_ref()
                    == Some(&reason) =>
            {
                (
                    503,
                    json!({"ready": false, "status": "degraded", "reason": reason}).to_string(),
                )
            }
            Some(reason) => (503, json!({"ready": false, "reason": reason}).to_string()),
        },
        (Method::Post, "/drain") => drain(req, shared),
        (Method::Get, "/sessions") => match viewer(req, shared) {
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
        },
        (_, "/drain") => (
            405,
            http_error_body(ErrorCode::MethodNotAllowed, "only POST is supported"),
        ),
        (_, "/health" | "/ready" | "/sessions" | "/metrics") => (
            405,
            http_error_body(ErrorCode::MethodNotAllowed, "only GET is supported"),
        ),
        _ => (404, http_error_body(ErrorCode::NotFound, "not found")),
    }
}

/// Why the instance takes no new sessions now, if it does not.
fn unready(shared: &Shared) -> Option<String> {
    let max = shared.config.max_sessions;
    if shared.is_shutting_down() {
        Some("shutting down".into())
    } else if shared.is_draining() {
        Some("draining".into())
    } else if shared.registry.unreclaimable_count() >= max {
        // Detached sessions with nothing running make room for new ones.
        Some(format!("at its maximum of {max} sessions (--max-sessions)"))
    } else {
        match shared.claude_version.get() {
            None => Some("checking that claude runs".into()),
            Some(Err(e)) => Some(format!("claude cannot run: {e}")),
            Some(Ok(_)) => crate::preflight::missing_credentials(&shared.child_env),
        }
    }
}

/// `POST /drain` with the admin token: begin the drain SIGTERM begins (202).
fn drain(req: &Request, shared: &Arc<Shared>) -> (u16, String) {
    if shared.config.admin_token.is_none() {
        return (
            403,
            http_error_body(ErrorCode::Forbidden, "draining needs --admin-token"),
        );
    }
    match viewer(req, shared) {
        Ok(crate::auth::Viewer::Admin) => {
            log::info!(
                "drain asked for on the side port by {:?}",
                req.remote_addr()
            );
            crate::handle::ServerHandle::new(shared.clone()).drain();
            (202, json!({"status": "draining"}).to_string())
        }
        _ => {
            log::warn!("refused POST /drain from {:?}", req.remote_addr());
            (
                401,
                http_error_body(ErrorCode::Unauthorized, "the admin token is needed"),
            )
        }
    }
}

/// `status` is `ok`, or `degraded` with a `reason` once the `claude` check failed or
/// when the children have no credentials for the model;
/// `claude.status` is `checking` until that check has answered.
pub(crate) fn health(shared: &Shared) -> serde_json::Value {
    let r = &shared.registry;
    let path = shared.config.claude_bin.display().to_string();
    let (claude, problem) = match shared.claude_version.get() {
        None => (json!({"path": path, "status": "checking"}), None),
        Some(Ok(version)) => (
            json!({"path": path, "status": "ok", "version": version}),
            None,
        ),
        Some(Err(error)) => (
            json!({"path": path, "status": "error", "error": error}),
            Some(format!("claude cannot run: {error}")),
        ),
    };
    let problem = problem.or_else(|| crate::preflight::missing_credentials(&shared.child_env));
    let mut v = json!({
        "status": if problem.is_some() { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": r.uptime_s(),
        "sessions": r.session_count(),
        "active_queries": r.running_count(),
        "children": shared.places.used(),
        "queued_queries": shared.places.queued(),
        "detached_sessions": r.detached_count(),
        "warm": shared.warm.health(),
        "sandbox": if shared.sandbox.is_some() { "bubblewrap" } else { "off" },
        "claude": claude,
    });
    v["claude"]["features"] = shared.features.health();
    if let Some(reason) = problem {
        v["reason"] = reason.into();
    }
    v
}

/// The gauges `/metrics` reports, read from the same counts as `/health`.
fn gauges(shared: &Shared) -> crate::metrics::Gauges {
    let r = &shared.registry;
    let warm = shared.warm.health();
    crate::metrics::Gauges {
        sessions: r.session_count(),
        sdk_sessions: r.endpoint_count(crate::registry::Endpoint::Sdk),
        detached: r.detached_count(),
        viewers: r.viewer_count(),
        running: r.running_count(),
        children: shared.places.used(),
        queued: shared.places.queued(),
        warm: crate::metrics::WarmGauges {
            target: warm.target,
            ready: warm.ready,
            starting: warm.starting,
            failing: warm.failing,
            started: warm.started,
            taken: warm.taken,
            parked: warm.parked,
            claimed: warm.claimed,
        },
    }
}
