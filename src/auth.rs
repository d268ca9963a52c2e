//! Authentication (static bearer token, HS256 JWT) and the browser checks (Origin,
//! Host) applied to every upgrade, and to `/sessions` on the side port.
//!
//! Tokens are compared in constant time and never logged.

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Config;

/// The subprotocol name clients may offer; answered when offered.
pub const SUBPROTOCOL: &str = "claude-ws";
/// Prefix of a `Sec-WebSocket-Protocol` entry carrying a token (browsers cannot set
/// an Authorization header on a WebSocket): `bearer.<token>`.
pub const SUBPROTOCOL_TOKEN_PREFIX: &str = "bearer.";

/// Who was let in, and the subprotocol to answer with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Auth {
    /// A JWT's `sub`.
    pub user: Option<String>,
    pub subprotocol: Option<String>,
}

/// Whether any authentication is configured.
pub fn enabled(config: &Config) -> bool {
    config.auth_token.is_some() || config.jwt_secret.is_some()
}

/// Authenticate an upgrade request. The reason on failure is safe to log (it never
/// contains the token).
pub fn authenticate<B>(
    config: &Config,
    req: &tungstenite::http::Request<B>,
) -> Result<Auth, String> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let offered: Vec<&str> = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol_token = offered
        .iter()
        .find_map(|p| p.strip_prefix(SUBPROTOCOL_TOKEN_PREFIX));
    // Answer with our own name when offered; otherwise the token entry (a browser
    // fails the connection unless one offered protocol is chosen).
    let subprotocol = if offered.contains(&SUBPROTOCOL) {
        Some(SUBPROTOCOL.to_string())
    } else {
        protocol_token.map(|t| format!("{SUBPROTOCOL_TOKEN_PREFIX}{t}"))
    };
    if !enabled(config) {
        return Ok(Auth {
            user: None,
            subprotocol,
        });
    }
    let token = bearer(header("Authorization"))
        .or_else(|| query_token(req.uri().query()))
        .or(protocol_token.map(str::to_string))
        .ok_or("no credentials presented")?;
    let user = check_token(config, &token)?;
    Ok(Auth { user, subprotocol })
}

/// Authenticate a side-port request (header or `?token=`).
pub fn authenticate_http(
    config: &Config,
    authorization: Option<&str>,
    url: &str,
) -> Result<(), String> {
    if !enabled(config) {
        return Ok(());
    }
    let query = url.split_once('?').map(|(_, q)| q);
    let token = bearer(authorization)
        .or_else(|| query_token(query))
        .ok_or("no credentials presented")?;
    check_token(config, &token).map(|_| ())
}

/// Check one presented token against the static token and the JWT secret. Returns the
/// JWT's `sub`, if any.
pub fn check_token(config: &Config, token: &str) -> Result<Option<String>, String> {
    if let Some(expected) = &config.auth_token {
        // Time depends only on the lengths, not on where the bytes differ.
        if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
            return Ok(None);
        }
    }
    if let Some(secret) = &config.jwt_secret {
        return verify_jwt(secret.as_bytes(), token, now_unix());
    }
    Err("wrong token".into())
}

fn bearer(header: Option<&str>) -> Option<String> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
        .filter(|t| !t.is_empty())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Verify an HS256 JWT: signature, `alg`, `exp` (required) and `nbf` (if present).
/// Every part must be canonical unpadded base64url, so a token has one spelling;
/// `exp` and `nbf` are JSON numbers (NumericDate, RFC 7519 §2: fractions allowed).
pub fn verify_jwt(secret: &[u8], token: &str, now: u64) -> Result<Option<String>, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT".into());
    };
    let header: Value = decode_json(h).ok_or("bad JWT header")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err("JWT alg must be HS256".into());
    }
    let sig = base64url_decode(s).ok_or("bad JWT signature encoding")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| "bad JWT secret")?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig).map_err(|_| "bad JWT signature")?;
    let claims: Value = decode_json(p).ok_or("bad JWT payload")?;
    let now = now as f64;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or("JWT has no numeric exp")?;
    if now >= exp {
        return Err("JWT expired".into());
    }
    match claims.get("nbf").map(Value::as_f64) {
        None => {}
        Some(None) => return Err("JWT nbf is not a number".into()),
        Some(Some(nbf)) if now < nbf => return Err("JWT not yet valid".into()),
        Some(Some(_)) => {}
    }
    Ok(claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_string))
}

fn decode_json(part: &str) -> Option<Value> {
    serde_json::from_slice(&base64url_decode(part)?).ok()
}

/// Decode canonical unpadded base64url (RFC 7515 §2): no `=`, no other alphabet, and
/// the unused bits of the last character zero (`AA` is `[0]`; `AB` is refused).
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    BASE64URL_NOPAD.decode(s.as_bytes()).ok()
}

/// Refuse cross-site WebSocket hijacking and DNS rebinding: an `Origin` must be the
/// server's own or listed; when listening on loopback, `Host` must name loopback.
pub fn check_origin<B>(
    config: &Config,
    bound: std::net::SocketAddr,
    req: &tungstenite::http::Request<B>,
) -> Result<(), String> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header("Host").unwrap_or("");
    if bound.ip().is_loopback() && !is_loopback_host(host) {
        return Err(format!(
            "Host {:?} is not this loopback server",
            crate::protocol::truncate(host, 100)
        ));
    }
    let Some(origin) = header("Origin") else {
        return Ok(()); // not a browser (wscat, scripts)
    };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let same = origin.split_once("://").is_some_and(|(scheme, authority)| {
        matches!(scheme, "http" | "https") && authority == host.to_ascii_lowercase()
    });
    let listed = config
        .allowed_origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(&origin));
    if same || listed {
        Ok(())
    } else {
        Err(format!(
            "Origin {:?} is not allowed",
            crate::protocol::truncate(&origin, 100)
        ))
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn now_unix() -> u64 {
    crate::registry::now_unix()
}

#[cfg(test)]
#[path = "../tests/support/jwt.rs"]
mod jwt;

#[cfg(test)]
mod tests {
    use super::jwt::{b64url as b64, make_jwt};
    use super::*;

    #[test]
    fn jwt_checks_signature_and_expiry() {
        let t = make_jwt(b"s3cret", r#"{"sub":"ana","exp":2000}"#);
        assert_eq!(verify_jwt(b"s3cret", &t, 1000), Ok(Some("ana".into())));
        assert_eq!(verify_jwt(b"s3cret", &t, 2000), Err("JWT expired".into()));
        assert!(verify_jwt(b"other", &t, 1000).is_err());
        let no_exp = make_jwt(b"s3cret", r#"{"sub":"ana"}"#);
        assert!(verify_jwt(b"s3cret", &no_exp, 1000).is_err());
        let mut tampered = t.clone();
        tampered.pop();
        assert!(verify_jwt(b"s3cret", &tampered, 1000).is_err());
        assert!(verify_jwt(b"s3cret", "a.b", 1000).is_err());
    }

    #[test]
    fn base64url_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00"] {
            assert_eq!(base64url_decode(&b64(data)).unwrap(), data);
        }
        assert!(base64url_decode("a+b").is_none());
    }

    #[test]
    fn base64url_has_one_spelling() {
        assert_eq!(base64url_decode("AA"), Some(vec![0]));
        // The unused low bits of the last character must be zero.
        for lax in ["AB", "AC", "AD", "AAB", "AAC"] {
            assert_eq!(base64url_decode(lax), None, "{lax}");
        }
        // No padding, no standard alphabet, no stray length.
        for bad in ["AA==", "AA=", "A", "+/8", "/w", "A A"] {
            assert_eq!(base64url_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn jwt_signature_must_be_canonical() {
        let t = make_jwt(b"s3cret", r#"{"sub":"ana","exp":2000}"#);
        assert!(verify_jwt(b"s3cret", &t, 1000).is_ok());
        // A 32-byte MAC is 43 characters: the last one has 2 unused bits.
        const T: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (rest, last) = t.split_at(t.len() - 1);
        let v = T.find(last).unwrap();
        assert_eq!(v & 3, 0);
        for other in 1..4 {
            let respelled = format!("{rest}{}", &T[v | other..=v | other]);
            assert_eq!(
                verify_jwt(b"s3cret", &respelled, 1000),
                Err("bad JWT signature encoding".into())
            );
        }
        assert!(verify_jwt(b"s3cret", &format!("{t}="), 1000).is_err());
        // The header and the payload too (the MAC covers their text, so a respelled
        // part also fails the MAC; decoding refuses it first).
        let (h, _) = t.split_once('.').unwrap();
        let padded_header = t.replacen(h, &format!("{h}="), 1);
        assert_eq!(
            verify_jwt(b"s3cret", &padded_header, 1000),
            Err("bad JWT header".into())
        );
    }

    #[test]
    fn jwt_times_are_json_numbers() {
        let t = make_jwt(b"k", r#"{"exp":1.8e9}"#);
        assert_eq!(verify_jwt(b"k", &t, 1_799_999_999), Ok(None));
        assert_eq!(
            verify_jwt(b"k", &t, 1_800_000_000),
            Err("JWT expired".into())
        );
        let t = make_jwt(b"k", r#"{"exp":2000.5,"nbf":1000.5}"#);
        assert_eq!(verify_jwt(b"k", &t, 2000), Ok(None));
        assert_eq!(verify_jwt(b"k", &t, 1000), Err("JWT not yet valid".into()));
        for bad in [
            r#"{"exp":"2000"}"#,
            r#"{"exp":null}"#,
            r#"{"exp":2000,"nbf":"1"}"#,
        ] {
            assert!(
                verify_jwt(b"k", &make_jwt(b"k", bad), 1000).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8000",
            "127.0.0.1:1",
            "[::1]:80",
            "a.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["evil.com", "evil.com:8000", "", "127.0.0.1.evil.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn tokens_from_query_are_decoded() {
        assert_eq!(query_token(Some("a=1&token=x%2By+z")), Some("x+y z".into()));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn static_token_compare() {
        let config = Config {
            auth_token: Some("abc".into()),
            ..Config::default()
        };
        assert_eq!(check_token(&config, "abc"), Ok(None));
        assert!(check_token(&config, "abd").is_err());
        assert!(check_token(&config, "ab").is_err());
        assert!(check_token(&config, "abcd").is_err());
    }
}
