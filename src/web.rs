//! Plain HTTP on the WebSocket port: `GET /` serves the built-in chat page (`page.html`,
//! embedded), `GET /health` the side port's health report, and every other path a JSON
//! 404 that names the endpoints. One request per connection (`Connection: close`).
//!
//! The accept loop's connection thread reads the request head first ([`read_head`]):
//! a WebSocket upgrade goes on to the handshake with the bytes already read, anything
//! else is answered here ([`answer`]) and the connection closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::protocol::WS_PATH;
use crate::protocol::{http_error_body, ErrorCode};
use crate::state::Shared;

/// The chat page's own HTML, CSS and JS, in one file, no build step.
const PAGE_HTML: &str = include_str!("page.html");

/// Where in [`PAGE_HTML`] the vendored libraries go, each in a `<script>` of its own.
const LIBS_MARKER: &str = "<!-- page-libs -->";

/// The libraries the page uses (src/page-libs/, vendored from npm by
/// scripts/update-page-libs.sh, licences in src/page-libs/THIRD-PARTY.md): Markdown,
/// sanitising what it makes, and highlighting code.
const PAGE_LIBS: [(&str, &str); 3] = [
    ("marked", include_str!("page-libs/marked.js")),
    ("DOMPurify", include_str!("page-libs/purify.js")),
    ("highlight.js", include_str!("page-libs/highlight.js")),
];

/// The page as served: [`PAGE_HTML`] with [`PAGE_LIBS`] inlined at [`LIBS_MARKER`], so
/// it still loads nothing from anywhere.
static PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let libs: String = PAGE_LIBS
        .iter()
        .map(|(name, js)| format!("<script data-lib=\"{name}\">\n{js}</script>\n"))
        .collect();
    PAGE_HTML.replacen(LIBS_MARKER, &libs, 1)
});

/// The most bytes a request head may take (request line and header fields); browsers
/// send a few hundred, tungstenite takes at most 124 header fields.
pub const MAX_HEAD: usize = 16 * 1024;

/// How long a closed answer waits for the client to finish sending (and then to close),
/// so that unread input does not turn the close into a reset that loses the answer.
const LINGER: Duration = Duration::from_secs(1);

/// The page's own restrictions: only its inline script and style run, it may talk only
/// to its own origin (`ws:`/`wss:` listed because some browsers do not count a
/// WebSocket to the same host as `'self'`), and no other site may frame it.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; img-src data:; connect-src 'self' ws: wss:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The client closed, failed, or did not finish the head by the deadline.
    Io(io::Error),
    /// The head is longer than [`MAX_HEAD`].
    TooLarge,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Io(e) => write!(f, "reading the request head: {e}"),
            HeadError::TooLarge => write!(f, "the request head is over {MAX_HEAD} bytes"),
        }
    }
}

/// Read the request head, through its blank line and not a byte further (what follows
/// belongs to the WebSocket), by `deadline` however slowly it comes.
///
/// Each round peeks at what the socket holds and takes it up to the head's end.
pub fn read_head(tcp: &TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut peeked = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Io(io::ErrorKind::TimedOut.into()));
        }
        tcp.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let room = (MAX_HEAD + 1 - head.len()).min(peeked.len());
        let n = match tcp.peek(&mut peeked[..room]) {
            Ok(0) => return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        // The blank line may straddle what was taken before and what is peeked now.
        let before = head.len().min(2);
        let mut window = head[head.len() - before..].to_vec();
        window.extend_from_slice(&peeked[..n]);
        let end = head_end(&window);
        let take = end.map_or(n, |end| end - before);
        let start = head.len();
        head.resize(start + take, 0);
        // The bytes were peeked, so this read returns them at once.
        (&*tcp)
            .read_exact(&mut head[start..])
            .map_err(HeadError::Io)?;
        if end.is_some() {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Where the head in `bytes` ends: just after its blank line (`\r\n\r\n`, or with bare
/// `\n`s, which the handshake's parser takes too).
fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| match &bytes[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// The lines of a head, without their line ends.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// Whether the head asks for a WebSocket (`Upgrade: websocket`): the handshake then
/// judges it; anything else is plain HTTP, answered here.
pub fn is_upgrade(head: &[u8]) -> bool {
    lines(head)
        .skip(1)
        .map(String::from_utf8_lossy)
        .any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("upgrade")
                    && value
                        .split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
            })
        })
}

/// One answer: status, content type, body, extra header lines.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: Vec<(&'static str, &'static str)>,
}

impl Answer {
    fn json(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body,
            extra: Vec::new(),
        }
    }

    fn error(status: u16, code: ErrorCode, message: &str) -> Answer {
        Answer::json(status, http_error_body(code, message))
    }
}

/// Answer the plain HTTP request whose head is `head`, then close the connection.
pub fn answer(shared: &Shared, tcp: &TcpStream, head: &[u8], peer: SocketAddr) {
    let (method, answer) = route(shared, head);
    log::debug!(
        "{peer}: {} {} answered {}",
        method.unwrap_or("?"),
        request_target(head).unwrap_or("?"),
        answer.status
    );
    send(tcp, &answer, method == Some("HEAD"));
}

/// The answer to the head of a request that is not an upgrade.
fn route<'h>(shared: &Shared, head: &'h [u8]) -> (Option<&'h str>, Answer) {
    let line = request_line(head);
    let Some((method, target)) = line else {
        return (
            None,
            Answer::error(400, ErrorCode::BadRequest, "not an HTTP/1.x request"),
        );
    };
    if method != "GET" && method != "HEAD" {
        let mut a = Answer::error(
            405,
            ErrorCode::MethodNotAllowed,
            "only GET and HEAD are supported on this port (besides the WebSocket upgrade)",
        );
        a.extra.push(("Allow", "GET, HEAD"));
        return (Some(method), a);
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    let answer = match path {
        "/" => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: PAGE.clone(),
            extra: vec![
                ("Content-Security-Policy", PAGE_CSP),
                ("Referrer-Policy", "no-referrer"),
                ("X-Frame-Options", "DENY"),
            ],
        },
        "/health" => Answer::json(200, crate::http::health(shared).to_string()),
        p if p == WS_PATH => {
            let mut a = Answer::error(
                426,
                ErrorCode::BadRequest,
                &format!("{WS_PATH} is the WebSocket endpoint: send a WebSocket upgrade"),
            );
            a.extra.push(("Upgrade", "websocket"));
            a
        }
        _ => Answer::json(
            404,
            json!({
                "error": "not found",
                "code": ErrorCode::NotFound.as_str(),
                "endpoints": {
                    "/": "GET: the chat page",
                    "/health": "GET: the server's health (as on the side port)",
                    WS_PATH: "the WebSocket endpoint (an upgrade request)",
                },
            })
            .to_string(),
        ),
    };
    (Some(method), answer)
}

/// `(method, target)` of an HTTP/1.x request line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(lines(head).next()?).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    (parts.next().is_none()
        && token(method)
        && target.starts_with('/')
        && version.starts_with("HTTP/1."))
    .then_some((method, target))
}

fn request_target(head: &[u8]) -> Option<&str> {
    request_line(head).map(|(_, t)| crate::util::truncate(t, 200))
}

/// Write the answer (headers only for HEAD), close for writing, and linger briefly so
/// the client reads it all.
fn send(tcp: &TcpStream, answer: &Answer, head_only: bool) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len()
    );
    for (name, value) in &answer.extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&answer.body);
    }
    // The write timeout (the handshake's) bounds a client that does not read.
    let mut w = tcp;
    if w.write_all(out.as_bytes())
        .and_then(|()| w.flush())
        .is_err()
    {
        return;
    }
    let _ = tcp.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut r = tcp;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match r.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "",
    }
}

/// Answer a head over [`MAX_HEAD`] with 431 and close.
pub fn refuse_large_head(tcp: &TcpStream) {
    let answer = Answer::error(
        431,
        ErrorCode::BadRequest,
        &format!("the request head is over {MAX_HEAD} bytes"),
    );
    send(tcp, &answer, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_is_told_by_its_upgrade_field() {
        let up =
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nupgrade:  WebSocket \r\n\r\n";
        assert!(is_upgrade(up));
        let listed = b"GET /ws HTTP/1.1\r\nUpgrade: h2c, websocket\r\n\r\n";
        assert!(is_upgrade(listed));
        assert!(!is_upgrade(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!is_upgrade(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"));
        // The request line is not a field.
        assert!(!is_upgrade(b"GET /Upgrade:websocket HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn a_head_ends_at_its_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nrest"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"\r\n"), None);
        assert_eq!(head_end(b"\n\r\n"), Some(3));
    }

    #[test]
    fn request_lines_are_read_strictly() {
        assert_eq!(
            request_line(b"GET /health?x=1 HTTP/1.1\r\n\r\n"),
            Some(("GET", "/health?x=1"))
        );
        assert_eq!(
            request_line(b"HEAD / HTTP/1.0\r\n\r\n"),
            Some(("HEAD", "/"))
        );
        assert_eq!(request_line(b"GET / HTTP/2\r\n\r\n"), None);
        assert_eq!(request_line(b"GET  / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"GET http://x/ HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"\x16\x03\x01\x02\x00\r\n\r\n"), None);
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.contains(r#"<meta charset="utf-8">"#));
        // Nothing fetched from elsewhere: no external script, style or font. (The
        // libraries name their home pages in comments, namespaces in strings, and
        // highlight.js knows CSS's `@import` as a keyword.)
        for banned in ["<script src", "<link rel=\"stylesheet\""] {
            assert!(!PAGE.contains(banned), "the page contains {banned:?}");
        }
        for banned in ["@import", "http://", "https://"] {
            assert!(!PAGE_HTML.contains(banned), "page.html contains {banned:?}");
        }
    }

    #[test]
    fn the_libraries_are_inlined_whole() {
        assert_eq!(PAGE_HTML.matches(LIBS_MARKER).count(), 1);
        assert!(!PAGE.contains(LIBS_MARKER));
        for (name, js) in PAGE_LIBS {
            // Inside a <script> element none of these may appear, or the HTML parser
            // would end (or stop ending) the element early.
            let lower = js.to_ascii_lowercase();
            for opener in ["</script", "<script", "<!--"] {
                assert!(!lower.contains(opener), "{name} holds {opener:?}");
            }
            assert!(PAGE.contains(js), "{name} is not in the page");
        }
    }
}
