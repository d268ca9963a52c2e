//! The optional tool registry (`--tool-registry-url`, `TOOL_REGISTRY_URL`): a small HTTP
//! service where client-defined tools are also stored, and from which `get_tools`
//! lists more.
//!
//! The contract (plain `http://`, JSON bodies):
//! - `POST {url}/tools` with `{"tool": {"name", "description", "input_schema"},
//!   "agent_id": "<session id>"}` → any 2xx; a JSON body with a string `id` or
//!   `tool_id` gives the tool's registry id.
//! - `GET {url}/tools` → 2xx with `{"tools": [ {"name", "description",
//!   "input_schema"|"parameters"} … ]}` or the bare array.
//!
//! Requests run on a thread of their own, never the session's: a registry that is down
//! or slow answers within [`TIMEOUT`] with an error, and the session goes on meanwhile.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use crate::tools::{self, Tool};

/// The most a registry request may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest registry response read.
const MAX_RESPONSE: usize = 1 << 20;

/// A registry request's outcome, for the session.
#[derive(Debug)]
pub enum Reply {
    /// `POST /tools` for `tool`: the registry's id for it, if it gave one.
    Stored {
        tool: String,
        result: Result<Option<String>, String>,
    },
    /// `GET /tools`: the registry's tools, checked.
    Listed { result: Result<Vec<Tool>, String> },
}

/// Store `tool` in the registry at `url` on a thread; the reply arrives on `to`.
pub fn store(url: &str, tool: &Tool, agent_id: &str, to: Sender<Reply>) {
    let (url, name) = (url.to_string(), tool.name.clone());
    let body = json!({"tool": tool.definition(), "agent_id": agent_id}).to_string();
    spawn(to, move || {
        let result = request(&url, "POST", Some(&body)).map(|v| {
            ["id", "tool_id"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_str))
                .map(str::to_string)
        });
        Reply::Stored { tool: name, result }
    });
}

/// List the registry's tools on a thread; the reply arrives on `to`.
pub fn list(url: &str, to: Sender<Reply>) {
    let url = url.to_string();
    spawn(to, move || {
        let result = request(&url, "GET", None).and_then(|v| {
            let items = match v {
                Value::Array(a) => a,
                Value::Object(mut o) => match o.remove("tools") {
                    Some(Value::Array(a)) => a,
                    _ => return Err("the answer has no \"tools\" array".to_string()),
                },
                _ => return Err("the answer is not a list of tools".to_string()),
            };
            // A registry tool that would not pass as a definition is skipped.
            Ok(items
                .into_iter()
                .filter_map(|t| tools::parse_registry_tool(t).ok())
                .collect())
        });
        Reply::Listed { result }
    });
}

fn spawn(to: Sender<Reply>, work: impl FnOnce() -> Reply + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("tool-registry".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let _ = to.send(work());
        });
    if let Err(e) = spawned {
        log::warn!("cannot start a tool-registry request: {e}");
    }
}

/// One HTTP/1.1 request to `{url}/tools`; the JSON body of a 2xx answer.
fn request(url: &str, method: &str, body: Option<&str>) -> Result<Value, String> {
    let deadline = Instant::now() + TIMEOUT;
    let rest = url
        .strip_prefix("http://")
        .ok_or("the registry URL is not http://")?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} {url}: {e}");
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| fail("cannot resolve", &e))?
        .next()
        .ok_or_else(|| fail("cannot resolve", &"no address"))?;
    let mut tcp =
        TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|e| fail("cannot connect to", &e))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    tcp.set_write_timeout(Some(left()))
        .and_then(|()| tcp.set_read_timeout(Some(left())))
        .map_err(|e| fail("cannot talk to", &e))?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {base}/tools HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes())
        .and_then(|()| tcp.write_all(body.as_bytes()))
        .map_err(|e| fail("cannot send to", &e))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(fail("no answer in time from", &format!("{TIMEOUT:?}")));
        }
        tcp.set_read_timeout(Some(left()))
            .map_err(|e| fail("cannot read from", &e))?;
        match tcp.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail("no answer in time from", &e)),
        }
        if raw.len() > MAX_RESPONSE {
            return Err(fail("an answer too large from", &"over 1 MiB"));
        }
    }
    let (status, body) =
        parse_response(&raw).ok_or_else(|| fail("no HTTP answer from", &"malformed"))?;
    if !(200..300).contains(&status) {
        return Err(fail(
            &format!("HTTP {status} from"),
            &String::from_utf8_lossy(&body[..body.len().min(200)]),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| fail("no JSON from", &e))
}

/// The status and body of a whole HTTP/1.1 response (chunked or not).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let (mut out, mut rest) = (Vec::new(), body);
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let (s, b) =
            parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (201, &b"{}"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"[1,2]"[..]));
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn a_registry_that_is_not_there_fails_fast() {
        // A port nobody listens on: refused at once, a clear error, no hang.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let started = Instant::now();
        let e = request(&format!("http://127.0.0.1:{port}"), "GET", None).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        assert!(started.elapsed() < TIMEOUT * 2);
    }
}
