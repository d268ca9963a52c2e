//! Authentication (static bearer token, HS256 JWT) and the browser checks (Origin,
//! Host) applied to every upgrade; `/sessions` on the side port takes the same tokens.
//!
//! An upgrade is first read strictly ([`parse_upgrade`], a 400 on failure): one `Host`,
//! at most one `Origin` and `Authorization`, one token in one carrier. Tokens are
//! compared in constant time and never logged.

use std::net::IpAddr;

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use http::uri::{Authority, Uri};
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

/// What the checks read from an upgrade request, each found at most once. Building it
/// is the 400 check: a request that names its `Host`, `Origin` or `Authorization`
/// twice, or presents a token twice (two carriers, or one carrier twice, even with
/// equal values), is ambiguous, and the server must not pick one reading of it.
#[derive(Debug)]
pub struct Upgrade {
    host: Host,
    /// The `Host` field as sent, for log lines.
    host_text: String,
    /// The raw `Origin` value, parsed when compared (`null` and others that are not a
    /// URI are simply not allowed).
    origin: Option<String>,
    /// The one token presented, in whichever carrier.
    token: Option<String>,
    subprotocol: Option<String>,
}

/// Whether any authentication is configured.
pub fn enabled(config: &Config) -> bool {
    config.auth_token.is_some() || config.jwt_secret.is_some()
}

/// Read an upgrade request; the error (a 400) says which rule it broke and never
/// contains a token.
pub fn parse_upgrade<B>(req: &tungstenite::http::Request<B>) -> Result<Upgrade, String> {
    // RFC 9112 §3.2: no Host, two Host lines, or an invalid one: 400.
    let host = single_header(req, "Host")?.ok_or("no Host field")?;
    let host_text = host.to_string();
    let host = Host::parse(host).ok_or_else(|| {
        format!(
            "Host {:?} is not a host and port",
            crate::util::truncate(&host_text, 100)
        )
    })?;
    let origin = single_header(req, "Origin")?.map(str::to_string);
    let offered: Vec<&str> = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol_tokens: Vec<&str> = offered
        .iter()
        .filter_map(|p| p.strip_prefix(SUBPROTOCOL_TOKEN_PREFIX))
        .collect();
    let mut tokens: Vec<String> = bearer(single_header(req, "Authorization")?)
        .into_iter()
        .chain(query_tokens(req.uri().query()))
        .chain(protocol_tokens.iter().map(|t| t.to_string()))
        .collect();
    if tokens.len() > 1 {
        return Err(format!(
            "a token is presented {} times (Authorization, ?token=, bearer. subprotocol: \
             use one)",
            tokens.len()
        ));
    }
    // Answer with our own name when offered; otherwise the token entry (a browser
    // fails the connection unless one offered protocol is chosen).
    let subprotocol = if offered.contains(&SUBPROTOCOL) {
        Some(SUBPROTOCOL.to_string())
    } else {
        protocol_tokens
            .first()
            .map(|t| format!("{SUBPROTOCOL_TOKEN_PREFIX}{t}"))
    };
    Ok(Upgrade {
        host,
        host_text,
        origin,
        token: tokens.pop(),
        subprotocol,
    })
}

/// The value of a header that may appear at most once.
fn single_header<'r, B>(
    req: &'r tungstenite::http::Request<B>,
    name: &str,
) -> Result<Option<&'r str>, String> {
    let mut values = req.headers().get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(format!("more than one {name} field"));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| format!("the {name} field is not visible ASCII"))
        })
        .transpose()
}

/// Authenticate a parsed upgrade. The reason on failure is safe to log (it never
/// contains the token).
pub fn authenticate(config: &Config, upgrade: &Upgrade) -> Result<Auth, String> {
    let subprotocol = upgrade.subprotocol.clone();
    if !enabled(config) {
        return Ok(Auth {
            user: None,
            subprotocol,
        });
    }
    let token = upgrade.token.as_deref().ok_or("no credentials presented")?;
    let user = check_token(config, token)?;
    Ok(Auth { user, subprotocol })
}

/// Whom a side-port request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The operator (`--admin-token`): sees every principal's sessions.
    Admin,
    /// A principal: sees its own sessions.
    Principal(String),
}

/// Authenticate a side-port request (header or `?token=`, exactly one token).
pub fn authenticate_http(
    config: &Config,
    authorization: Option<&str>,
    url: &str,
) -> Result<Viewer, String> {
    let query = url.split_once('?').map(|(_, q)| q);
    let tokens: Vec<String> = bearer(authorization)
        .into_iter()
        .chain(query_tokens(query))
        .collect();
    let token = match tokens.as_slice() {
        [] => None,
        [token] => Some(token),
        _ => return Err("a token is presented more than once".into()),
    };
    if let (Some(admin), Some(token)) = (&config.admin_token, token) {
        if bool::from(token.as_bytes().ct_eq(admin.as_bytes())) {
            return Ok(Viewer::Admin);
        }
    }
    if !enabled(config) {
        return Ok(Viewer::Principal(principal(config, None)));
    }
    let token = token.ok_or("no credentials presented")?;
    let user = check_token(config, token)?;
    Ok(Viewer::Principal(principal(config, user.as_deref())))
}

/// Whom a session belongs to — its conversations, its reattach, its `/sessions` rows:
/// `user:<sub>` for a JWT with a subject, `token` for the static token (and a JWT
/// without one), `local` when authentication is off (every client is one principal).
pub fn principal(config: &Config, user: Option<&str>) -> String {
    match (enabled(config), user) {
        (false, _) => "local".into(),
        (true, Some(sub)) => format!("user:{sub}"),
        (true, None) => "token".into(),
    }
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

/// Every non-empty `token=` parameter of a query.
fn query_tokens(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
        .filter(|t| !t.is_empty())
        .collect()
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

/// The name part of a `Host` or of an origin's authority.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    /// An IPv4 or (bracketed in the text) IPv6 literal, compared as an address.
    Ip(IpAddr),
    /// A registered name, lowercased.
    Name(String),
}

/// A `Host` field (RFC 9112 §3.2: `uri-host [ ":" port ]`), or an origin's authority.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    name: HostName,
    port: Option<u16>,
}

impl Host {
    fn parse(text: &str) -> Option<Host> {
        let authority: Authority = text.parse().ok()?;
        let all = authority.as_str();
        // No userinfo in a Host; `http` accepts it in an authority.
        if all.contains('@') {
            return None;
        }
        let host = authority.host();
        // `http` leaves out a port it cannot read ("x:abc", "x:99999"): read it here.
        let port = match all.get(host.len()..)? {
            "" | ":" => None,
            rest => Some(rest.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        let name = if let Some(v6) = host.strip_prefix('[') {
            HostName::Ip(v6.strip_suffix(']')?.parse().ok()?)
        } else if let Ok(ip) = host.parse() {
            HostName::Ip(ip)
        } else if host.is_empty() {
            return None;
        } else {
            HostName::Name(host.to_ascii_lowercase())
        };
        Some(Host { name, port })
    }

    fn is_loopback(&self) -> bool {
        match &self.name {
            HostName::Ip(ip) => ip.is_loopback(),
            HostName::Name(n) => n == "localhost" || n.ends_with(".localhost"),
        }
    }
}

/// A serialized origin (RFC 6454): `http` or `https`, a host, a port (the scheme's
/// default when absent), no userinfo, no path beyond `/`, no query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: HostName,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let uri: Uri = text.trim().parse().ok()?;
        let https = match uri.scheme_str()? {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        if uri.path_and_query().map(|p| p.as_str()) != Some("/") {
            return None;
        }
        let host = Host::parse(uri.authority()?.as_str())?;
        let default = if https { 443 } else { 80 };
        Some(Origin {
            https,
            host: host.name,
            port: host.port.unwrap_or(default),
        })
    }

    /// Whether this origin is the server addressed by `host`. A `Host` without a port
    /// means the default port of the scheme the client used, which the server (maybe
    /// behind a TLS proxy) cannot see: take the origin's.
    fn is_host(&self, host: &Host) -> bool {
        let default = if self.https { 443 } else { 80 };
        self.host == host.name && self.port == host.port.unwrap_or(default)
    }
}

/// Refuse cross-site WebSocket hijacking and DNS rebinding: an `Origin` must be the
/// server's own or listed; when listening on loopback, `Host` must name loopback.
pub fn check_origin(
    config: &Config,
    bound: std::net::SocketAddr,
    upgrade: &Upgrade,
) -> Result<(), String> {
    if bound.ip().is_loopback() && !upgrade.host.is_loopback() {
        return Err(format!(
            "Host {:?} is not this loopback server",
            crate::util::truncate(&upgrade.host_text, 100)
        ));
    }
    let Some(text) = &upgrade.origin else {
        return Ok(()); // not a browser (wscat, scripts)
    };
    let origin = Origin::parse(text);
    let same = origin.as_ref().is_some_and(|o| o.is_host(&upgrade.host));
    let listed = config.allowed_origins.iter().any(|allowed| {
        allowed == "*"
            || match (&origin, Origin::parse(allowed)) {
                (Some(o), Some(a)) => *o == a,
                // Neither is a URI (`null`, say): the same text.
                (None, None) => allowed
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(text.trim().trim_end_matches('/')),
                _ => false,
            }
    });
    if same || listed {
        Ok(())
    } else {
        Err(format!(
            "Origin {:?} is not allowed",
            crate::util::truncate(text, 100)
        ))
    }
}

fn now_unix() -> u64 {
    crate::util::now_unix()
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

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn hosts_parse_strictly() {
        for bad in [
            "", "a b", ":80", "x:abc", "x:99999", "user@x", "[::1", "[zz]:80", "x/y",
        ] {
            assert_eq!(Host::parse(bad), None, "{bad}");
        }
        assert_eq!(host("LocalHost:80"), host("localhost:80"));
        assert_eq!(host("[::1]:80"), host("[0:0::1]:80"));
        assert_eq!(host("x:").port, None);
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8000",
            "LOCALHOST",
            "127.0.0.1:1",
            "[::1]:80",
            "a.localhost",
        ] {
            assert!(host(h).is_loopback(), "{h}");
        }
        for h in ["evil.com", "evil.com:8000", "127.0.0.1.evil.com", "[::2]"] {
            assert!(!host(h).is_loopback(), "{h}");
        }
    }

    #[test]
    fn origins_match_hosts_by_scheme_default_port() {
        let same = |o: &str, h: &str| Origin::parse(o).is_some_and(|o| o.is_host(&host(h)));
        for (o, h) in [
            ("http://x", "x:80"),
            ("http://x", "x"),
            ("http://x:80", "x"),
            ("https://x", "x:443"),
            ("https://x", "x"),
            ("HTTPS://X:443/", "x"),
            ("http://x:8080", "x:8080"),
            ("http://[::1]", "[::1]:80"),
            ("http://[::1]:9", "[0::1]:9"),
        ] {
            assert!(same(o, h), "{o} vs {h}");
        }
        for (o, h) in [
            ("http://x", "x:443"),
            ("https://x", "x:80"),
            ("http://x:8080", "x"),
            ("http://x", "y:80"),
            ("http://x/app", "x:80"),
            ("http://x?a", "x:80"),
            ("http://u@x", "x:80"),
            ("ws://x", "x:80"),
            ("null", "x:80"),
        ] {
            assert!(!same(o, h), "{o} vs {h}");
        }
    }

    fn request(target: &str, headers: &[(&str, &str)]) -> tungstenite::http::Request<()> {
        let mut b = tungstenite::http::Request::get(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn one_token_in_one_carrier() {
        let h = ("Host", "localhost");
        let u = parse_upgrade(&request("/ws?a=1&token=x%2By", &[h])).unwrap();
        assert_eq!(u.token.as_deref(), Some("x+y"));
        let u = parse_upgrade(&request("/ws?token=", &[h])).unwrap();
        assert_eq!(u.token, None);
        let u = parse_upgrade(&request(
            "/ws",
            &[h, ("Sec-WebSocket-Protocol", "bearer.t")],
        ))
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("t"));
        assert_eq!(u.subprotocol.as_deref(), Some("bearer.t"));
        for (target, extra) in [
            ("/ws?token=a", ("Authorization", "Bearer a")),
            ("/ws?token=a&token=a", ("X", "")),
            ("/ws", ("Sec-WebSocket-Protocol", "bearer.a, bearer.b")),
            ("/ws?token=a", ("Sec-WebSocket-Protocol", "bearer.a")),
        ] {
            let r = parse_upgrade(&request(target, &[h, extra]));
            let err = r.expect_err(target);
            assert!(!err.contains("a,") && err.contains("2 times"), "{err}");
        }
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
