//! An upgrade request that says one thing twice is refused with 400 before any session
//! exists (RFC 9112 §3.2 for `Host`; the same rule for `Origin`, `Authorization` and a
//! token given in two carriers), and `Origin` matches `Host` by scheme, host and port
//! (default ports included). Each request is written byte for byte on a raw TCP
//! connection to the real server binary, since a client library would not send a
//! header twice.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value};
use support::*;

const TOKEN: &str = "correct-horse-battery-staple";
const SECRET: &str = "jwt-signing-secret";

/// A server with both a static token and a JWT secret, whose children would be the
/// real CLI (no test here gets as far as starting one).
fn authed(api: &MockApi) -> TestServer {
    ServerOptions::real(api)
        .arg(&format!("--auth-token={TOKEN}"))
        .arg(NO_REATTACH)
        .env("CLAUDE_WS_JWT_SECRET", SECRET)
        .start()
}

/// Send an upgrade of `target` with exactly these extra header lines (in order, repeats
/// kept) and return the status code and, for a refusal, the JSON body.
fn raw_upgrade(s: &TestServer, target: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut tcp = TcpStream::connect(s.ws_authority()).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(req.as_bytes()).unwrap();
    // Read the head; an accepted upgrade keeps the connection open, a refusal closes it
    // after the body.
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => panic!(
                "connection ended inside the response head: {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    if status == 101 {
        return (status, Value::Null);
    }
    let mut body = String::new();
    let _ = tcp.read_to_string(&mut body);
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, body)
}

/// A request that must be refused with 400 and the stable code.
fn assert_bad_request(s: &TestServer, target: &str, headers: &[(&str, &str)]) {
    let (status, body) = raw_upgrade(s, target, headers);
    assert_eq!(status, 400, "{headers:?} was answered {status} {body}");
    assert_eq!(body["code"], "bad_request", "{headers:?}: {body}");
}

/// The session an accepted upgrade opened has closed (its raw client is gone). Its
/// listing comes a little after the 101, so "no sessions" alone could be seen before
/// it was listed: wait for its end in the log first.
fn accepted_session_is_gone(s: &TestServer) {
    assert!(s.logged("session closed"), "{}", s.logs());
    assert!(eventually(WAIT, || s.get("/health").1["sessions"] == 0));
}

/// Nothing was started for any refused request.
fn assert_no_session(s: &TestServer) {
    let (_, health) = s.get("/health");
    assert_eq!(health["sessions"], 0, "{health}");
    assert_eq!(health["children"], 0, "{health}");
    assert!(children_of(s.pid()).is_empty(), "a child was spawned");
}

#[test]
fn two_host_fields_are_a_bad_request() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg(NO_REATTACH).start();
    let host = s.ws_authority();
    // The same request with one Host is accepted, so the refusal is about the repeat.
    assert_eq!(raw_upgrade(&s, "/ws", &[("Host", &host)]).0, 101);
    accepted_session_is_gone(&s);
    assert_bad_request(&s, "/ws", &[("Host", &host), ("Host", &host)]);
    assert_bad_request(&s, "/ws", &[("Host", &host), ("Host", "evil.example")]);
    assert_bad_request(&s, "/ws", &[("Host", "evil.example"), ("Host", &host)]);
    // A Host that is not an authority, or none at all.
    assert_bad_request(&s, "/ws", &[("Host", "a b")]);
    assert_bad_request(&s, "/ws", &[]);
    assert_no_session(&s);
}

#[test]
fn two_origin_fields_are_a_bad_request() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg(NO_REATTACH).start();
    let host = s.ws_authority();
    let own = format!("http://{host}");
    assert_eq!(
        raw_upgrade(&s, "/ws", &[("Host", &host), ("Origin", &own)]).0,
        101
    );
    accepted_session_is_gone(&s);
    assert_bad_request(
        &s,
        "/ws",
        &[("Host", &host), ("Origin", &own), ("Origin", &own)],
    );
    assert_bad_request(
        &s,
        "/ws",
        &[
            ("Host", &host),
            ("Origin", &own),
            ("Origin", "https://evil.example"),
        ],
    );
    assert_no_session(&s);
}

#[test]
fn two_authorization_fields_are_a_bad_request() {
    let api = MockApi::start();
    let s = authed(&api);
    let host = s.ws_authority();
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        raw_upgrade(&s, "/ws", &[("Host", &host), ("Authorization", &bearer)]).0,
        101
    );
    accepted_session_is_gone(&s);
    assert_bad_request(
        &s,
        "/ws",
        &[
            ("Host", &host),
            ("Authorization", &bearer),
            ("Authorization", &bearer),
        ],
    );
    assert_bad_request(
        &s,
        "/ws",
        &[
            ("Host", &host),
            ("Authorization", &bearer),
            ("Authorization", "Bearer wrong"),
        ],
    );
    assert_no_session(&s);
    assert!(!s.logs().contains(TOKEN), "a token reached the log");
}

#[test]
fn a_token_in_two_carriers_is_a_bad_request_even_when_equal() {
    let api = MockApi::start();
    let s = authed(&api);
    let host = s.ws_authority();
    let bearer = format!("Bearer {TOKEN}");
    let query = format!("/ws?token={TOKEN}");
    let protocol = format!("claude-ws, bearer.{TOKEN}");
    // Each carrier alone is accepted.
    for (target, headers) in [
        ("/ws", vec![("Authorization", bearer.as_str())]),
        (query.as_str(), vec![]),
        ("/ws", vec![("Sec-WebSocket-Protocol", protocol.as_str())]),
    ] {
        let mut h = vec![("Host", host.as_str())];
        h.extend(headers);
        assert_eq!(raw_upgrade(&s, target, &h).0, 101, "{target} {h:?}");
    }
    accepted_session_is_gone(&s);
    // Header and query.
    assert_bad_request(&s, &query, &[("Host", &host), ("Authorization", &bearer)]);
    // Header and subprotocol.
    assert_bad_request(
        &s,
        "/ws",
        &[
            ("Host", &host),
            ("Authorization", &bearer),
            ("Sec-WebSocket-Protocol", &protocol),
        ],
    );
    // Query and subprotocol.
    assert_bad_request(
        &s,
        &query,
        &[("Host", &host), ("Sec-WebSocket-Protocol", &protocol)],
    );
    // Twice in one carrier.
    assert_bad_request(&s, &format!("{query}&token={TOKEN}"), &[("Host", &host)]);
    assert_bad_request(
        &s,
        "/ws",
        &[
            ("Host", &host),
            (
                "Sec-WebSocket-Protocol",
                &format!("bearer.{TOKEN}, bearer.{TOKEN}"),
            ),
        ],
    );
    assert_no_session(&s);
    // The side port: header and query together are refused like a wrong token.
    let side = format!("/sessions?token={TOKEN}");
    assert_eq!(s.get_with(&side, &[]).0, 200);
    assert_eq!(s.get_with(&side, &[("Authorization", &bearer)]).0, 401);
    assert!(!s.logs().contains(TOKEN), "a token reached the log");
}

#[test]
fn origin_matches_host_with_default_ports() {
    let api = MockApi::start();
    let s = ServerOptions::real(&api).arg(NO_REATTACH).start();
    // The server listens on loopback, so Host must name loopback; the port in Host is
    // what the browser addressed (a proxy in front may listen on 80 or 443).
    for (host, origin) in [
        ("localhost:80", "http://localhost"),
        ("localhost", "http://localhost:80"),
        ("LocalHost:443", "https://localhost"),
        ("localhost:8080", "http://LOCALHOST:8080/"),
        ("[::1]:80", "http://[::1]"),
        ("[::1]:9000", "http://[0:0::1]:9000"),
        ("127.0.0.1:443", "https://127.0.0.1:443"),
    ] {
        let (status, body) = raw_upgrade(&s, "/ws", &[("Host", host), ("Origin", origin)]);
        assert_eq!(status, 101, "Host {host} Origin {origin}: {body}");
    }
    for (host, origin) in [
        ("localhost:80", "https://localhost"),
        ("localhost:443", "http://localhost"),
        ("localhost:8080", "http://localhost"),
        ("[::1]:80", "http://[::2]"),
        ("localhost:80", "ftp://localhost"),
        ("localhost:80", "http://user@localhost"),
    ] {
        let (status, body) = raw_upgrade(&s, "/ws", &[("Host", host), ("Origin", origin)]);
        assert_eq!(status, 403, "Host {host} Origin {origin}: {body}");
        assert_eq!(body["code"], "forbidden", "{body}");
    }
}

#[test]
fn jwt_spellings_and_numeric_claims_through_the_server() {
    let api = MockApi::start();
    let s = authed(&api);
    let url = s.ws_url.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let jwt = |claims: Value| jwt::make_jwt(SECRET.as_bytes(), &claims.to_string());
    // `exp` as a JSON number with a fraction or an exponent.
    let float_exp = jwt(json!({"sub": "ana", "exp": now + 600.5}));
    assert!(float_exp.contains('.'));
    let mut c = s
        .try_connect(&url, &[("Authorization", &format!("Bearer {float_exp}"))])
        .unwrap_or_else(|e| panic!("float exp refused: {e}"));
    assert_eq!(c.recv()["type"], "connection_established");
    let expired = jwt(json!({"sub": "ana", "exp": now - 10.5}));
    let future_nbf = jwt(json!({"sub": "ana", "exp": 1.0e12, "nbf": now + 600.0}));
    // The signature spelled with non-zero trailing bits, and with padding.
    let good = jwt(json!({"sub": "ana", "exp": now as u64 + 600}));
    let non_canonical = respell_last_char(&good);
    let padded = format!("{good}=");
    for bad in [&expired, &future_nbf, &non_canonical, &padded] {
        let r = s.try_connect(&url, &[("Authorization", &format!("Bearer {bad}"))]);
        match r {
            Ok(_) => panic!("accepted {bad}"),
            Err(e) => assert!(e.starts_with("HTTP 401"), "{e}"),
        }
    }
    assert!(s
        .try_connect(&url, &[("Authorization", &format!("Bearer {good}"))])
        .is_ok());
}

/// The same JWT with the last signature character replaced by one that decodes to the
/// same bytes under a lax decoder (only the unused trailing bits differ).
fn respell_last_char(token: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (rest, last) = token.split_at(token.len() - 1);
    let v = T.iter().position(|&c| c == last.as_bytes()[0]).unwrap();
    // A 32-byte HMAC is 43 characters: the last carries 4 bits and 2 unused ones.
    assert_eq!(v & 3, 0, "canonical spelling has zero trailing bits");
    format!("{rest}{}", T[v | 1] as char)
}
