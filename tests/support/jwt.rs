//! Making HS256 JWTs and base64url text for tests: shared by tests/security.rs and the
//! unit tests of src/auth.rs (which include this file).
#![allow(dead_code)] // each includer uses a different part

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Unpadded base64url.
pub fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An HS256 JWT with these claims (JSON text), signed with `secret`.
pub fn make_jwt(secret: &[u8], claims: &str) -> String {
    let h = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64url(claims.as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", b64url(&mac.finalize().into_bytes()))
}

/// A token for user `sub`, signed with `secret`, valid for an hour.
pub fn user_jwt(secret: &str, sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
        + 3600;
    let claims = format!(r#"{{"sub":{},"exp":{exp}}}"#, escape_json(sub));
    make_jwt(secret.as_bytes(), &claims)
}

/// `s` as a JSON string literal (the tests' subjects are plain, but be exact).
fn escape_json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
