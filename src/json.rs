//! JSON text that is checked but never built: the fast path for the bulk of a child's
//! output.
//!
//! A turn of the CLI is mostly `assistant` and `stream_event` lines, and the server
//! relays their parts as the CLI wrote them. Building a tree for that, or letting serde
//! check each byte on its way to a borrowed `RawValue`, cost more than everything else
//! on the way to the client (see the relay benchmark). [`Scanner`] checks a line against
//! the JSON grammar (RFC 8259) and UTF-8 in one pass — eight bytes at a time inside
//! strings — and hands out the text of the members its caller asks for as [`Raw`].
//! Frames are bytes on the wire, so no `str` is made of them (which would check the
//! relayed bytes a second time).
//!
//! The scanner may decline a line it is not sure how to read (a key written with an
//! escape, a member twice, nesting deeper than [`MAX_DEPTH`]): the caller then parses
//! the line whole with [`parse`], which has the last word. So declining is never wrong,
//! and accepting is only right for what serde_json reads into a `Value`: a property
//! test holds it to that verdict on many broken and valid lines.
//!
//! Two things are JSON to the grammar but not to serde_json's `Value`: a `\u` escape of
//! half a UTF-16 surrogate pair (JavaScript, which the CLI is written in, writes one
//! for text cut inside an emoji) and a number beyond the range of `f64`. The scanner
//! declines both, and [`parse`] mends them, lossily, so that no line is lost for them
//! and the fast path and the whole parse never relay such a line differently.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

/// JSON text relayed as it is: a span of a child's stdout line checked by `Scanner`,
/// or the output of serde_json. Nothing else can make one, so it is always valid JSON
/// (and so valid UTF-8).
#[derive(Clone, PartialEq, Eq)]
pub struct Raw<'a>(Cow<'a, [u8]>);

impl Raw<'_> {
    /// The JSON text.
    pub fn get(&self) -> &[u8] {
        &self.0
    }

    /// JSON `null`.
    pub fn is_null(&self) -> bool {
        *self.0 == *b"null"
    }
}

impl Raw<'static> {
    /// The JSON text of a value.
    pub fn of(v: &Value) -> Raw<'static> {
        // Serializing a `Value` cannot fail: its keys are strings.
        Raw(Cow::Owned(
            serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()),
        ))
    }
}

impl fmt::Debug for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// The scanner will not read this line (it may still be JSON: ask serde_json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declined;

type Scan<T> = Result<T, Declined>;

/// Numbers with more digits than this before the point, or more than two in the
/// exponent, may be beyond `f64`: serde_json judges those (cheaper rules pass the rest).
const SURE_INT_DIGITS: usize = 200;

/// Containers nested deeper than this are declined (then serde_json, which parses up
/// to 128 levels into a `Value`, reads the line).
const MAX_DEPTH: usize = 64;

/// A reader of one line of JSON text that checks every byte it passes. The text may go
/// on after the line: a newline ends it (JSON allows newlines as whitespace, but a
/// stream-json line has none, and this way the scanner finds where the line ends).
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Objects entered through [`members`](Self::members).
    depth: usize,
    /// Only ASCII seen so far. At the first other byte (which can only be inside a
    /// string) the rest of the line is checked as UTF-8 at once; typical lines are ASCII
    /// and never pay for it.
    ascii_so_far: bool,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`.
    pub fn new(text: &'a [u8]) -> Scanner<'a> {
        Scanner {
            bytes: text,
            pos: 0,
            depth: 0,
            ascii_so_far: true,
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// JSON whitespace, but for the newline, which ends the line.
    #[inline(always)]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Take `byte` (after whitespace).
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Scan<()> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Declined)
        }
    }

    /// Only whitespace is left on the line: the length of the line with its newline
    /// (if it has one), where the next line starts.
    pub fn end_of_line(&mut self) -> Scan<usize> {
        self.skip_whitespace();
        match self.peek() {
            None => Ok(self.pos),
            Some(b'\n') => Ok(self.pos + 1),
            Some(_) => Err(Declined),
        }
    }

    /// Read an object, calling `on_member(self, key)` at each member; the callback must
    /// take the member's value with [`value`](Self::value) or `members`. Keys with an
    /// escape are declined, so `key` is the key itself.
    pub fn members(
        &mut self,
        mut on_member: impl FnMut(&mut Self, &'a [u8]) -> Scan<()>,
    ) -> Scan<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Declined);
        }
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let key = self.key()?;
                on_member(self, key)?;
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Declined),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// A member's key and the colon after it.
    #[inline(always)]
    fn key(&mut self) -> Scan<&'a [u8]> {
        self.skip_whitespace();
        let start = self.pos;
        if self.string()? {
            return Err(Declined); // escaped: compare it unescaped, i.e. let serde do it
        }
        let key = self.bytes.get(start + 1..self.pos - 1).ok_or(Declined)?;
        self.expect(b':')?;
        Ok(key)
    }

    /// Pass a key, escaped or not, and the colon after it.
    #[inline(always)]
    fn any_key(&mut self) -> Scan<()> {
        self.skip_whitespace();
        self.string()?;
        self.expect(b':')
    }

    /// The next value, checked, as its text.
    pub fn value(&mut self) -> Scan<Raw<'a>> {
        self.skip_whitespace();
        let start = self.pos;
        self.skip_value()?;
        let text = self.bytes.get(start..self.pos).ok_or(Declined)?;
        Ok(Raw(Cow::Borrowed(text)))
    }

    /// Pass one value, checking it. Iterative: nesting costs one bit, not a stack frame.
    fn skip_value(&mut self) -> Scan<()> {
        // Bit i: the container at depth i is an object (else an array).
        let mut objects: u64 = 0;
        let mut depth = 0usize;
        loop {
            // A value starts here.
            self.skip_whitespace();
            let opened = match self.peek().ok_or(Declined)? {
                open @ (b'{' | b'[') => {
                    self.pos += 1;
                    self.skip_whitespace();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        false
                    } else {
                        if depth + self.depth >= MAX_DEPTH {
                            return Err(Declined);
                        }
                        let is_object = open == b'{';
                        objects = (objects & !(1 << depth)) | (u64::from(is_object) << depth);
                        depth += 1;
                        if is_object {
                            self.any_key()?;
                        }
                        true
                    }
                }
                b'"' => {
                    self.string()?;
                    false
                }
                b't' => self.literal(b"true").map(|()| false)?,
                b'f' => self.literal(b"false").map(|()| false)?,
                b'n' => self.literal(b"null").map(|()| false)?,
                b'-' | b'0'..=b'9' => self.number().map(|()| false)?,
                _ => return Err(Declined),
            };
            if opened {
                continue; // the first element or member value
            }
            // A value ended: close containers until one goes on with a comma.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let in_object = objects & (1 << (depth - 1)) != 0;
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.any_key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    _ => return Err(Declined),
                }
                self.pos += 1;
                depth -= 1;
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if self
            .bytes
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word))
        {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Declined)
        }
    }

    /// A number that serde_json reads into a `Value`: grammatical and within `f64`.
    fn number(&mut self) -> Scan<()> {
        let start = self.pos;
        let (int_digits, exp_digits) = self.number_text()?;
        if int_digits > SURE_INT_DIGITS || exp_digits > 2 {
            // Maybe beyond f64 (serde_json refuses `1e400`): ask the parser that reads
            // declined lines, so both agree exactly. Rare: JavaScript, the CLI's
            // language, writes a three-digit exponent only below 1e-99 or above 1e99.
            let text = self.bytes.get(start..self.pos).ok_or(Declined)?;
            if beyond_f64(text) {
                return Err(Declined);
            }
        }
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: how many digits the integer
    /// part and the exponent have.
    fn number_text(&mut self) -> Scan<(usize, usize)> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Declined),
        };
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        let mut exp_digits = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            exp_digits = self.some_digits()?;
        }
        Ok((int_digits, exp_digits))
    }

    /// Pass digits: how many.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Pass at least one digit: how many.
    fn some_digits(&mut self) -> Scan<usize> {
        match self.digits() {
            0 => Err(Declined),
            n => Ok(n),
        }
    }

    /// Pass a string, at its opening quote. `Ok(true)` if it has escapes.
    #[inline(always)]
    fn string(&mut self) -> Scan<bool> {
        if self.peek() != Some(b'"') {
            return Err(Declined);
        }
        self.pos += 1;
        let bytes = self.bytes;
        let mut escaped = false;
        loop {
            // Eight bytes at a time, up to the next one that needs a look.
            while let Some(chunk) = bytes.get(self.pos..self.pos + 8) {
                let word = u64::from_le_bytes(chunk.try_into().map_err(|_| Declined)?);
                let mut flags = special_bytes(word);
                if self.ascii_so_far {
                    flags |= word & HIGHS;
                }
                if flags != 0 {
                    self.pos += flags.trailing_zeros() as usize / 8;
                    break;
                }
                self.pos += 8;
            }
            match *bytes.get(self.pos).ok_or(Declined)? {
                b'"' => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    match *bytes.get(self.pos).ok_or(Declined)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let unit = hex_unit(bytes, self.pos + 1).ok_or(Declined)?;
                            self.pos += 5;
                            match unit {
                                0xD800..=0xDBFF
                                    if matches!(
                                        escaped_unit(bytes, self.pos),
                                        Some(0xDC00..=0xDFFF)
                                    ) =>
                                {
                                    self.pos += 6; // a whole pair
                                }
                                // Half a pair: serde_json reads no `Value` of it.
                                0xD800..=0xDFFF => return Err(Declined),
                                _ => {}
                            }
                        }
                        _ => return Err(Declined),
                    }
                }
                0..=0x1f => return Err(Declined), // control characters must be escaped
                0x80.. if self.ascii_so_far => {
                    // Everything before is ASCII, so a character starts here. The scanner
                    // never passes a newline, so the rest of the line is all it will read.
                    let rest = bytes.get(self.pos..).unwrap_or_default();
                    let line = &rest[..find_newline(rest).unwrap_or(rest.len())];
                    std::str::from_utf8(line).map_err(|_| Declined)?;
                    self.ascii_so_far = false;
                }
                _ => self.pos += 1,
            }
        }
    }
}

/// The UTF-16 code unit written as four hex digits at `at`.
fn hex_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let hex = bytes.get(at..at + 4)?;
    hex.iter().try_fold(0u16, |n, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(n << 4 | digit as u16)
    })
}

/// The code unit of a `\uXXXX` escape at `at`.
fn escaped_unit(bytes: &[u8], at: usize) -> Option<u16> {
    match bytes.get(at..at + 2)? {
        br"\u" => hex_unit(bytes, at + 2),
        _ => None,
    }
}

/// A line (without its newline) parsed whole: the production parser for every line
/// the fast path does not take.
///
/// It reads every line that is JSON to the grammar (RFC 8259) and UTF-8, nested up to
/// serde_json's 128 levels. Two things serde_json reads into no `Value` are mended
/// first, lossily: a `\u` escape of half a surrogate pair becomes `\ufffd` (U+FFFD, which
/// is what JavaScript's own `TextEncoder` makes of it), and a number beyond `f64` becomes a string holding the
/// number's JSON text (`1e400` → `"1e400"`: nothing invented, nothing lost, and a
/// client can tell it is no number). Mending is tried only after serde_json refused
/// the line, so other lines pay nothing for it.
///
/// Why not serde_json's `arbitrary_precision`: it would keep every number of every
/// line as heap text (this parser reads all `result`, `system` and tool-result lines),
/// and it changes `Value` for the whole process (the client protocol too) for a case
/// the real CLI cannot produce: its numbers are JavaScript doubles.
pub fn parse(line: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice(line).or_else(|refused| match mend(line) {
        Some(mended) => serde_json::from_slice(&mended).map_err(|_| refused),
        None => Err(refused),
    })
}

/// `line` with lone surrogate escapes and numbers beyond `f64` mended (see [`parse`]);
/// `None` if there was nothing to mend. Every change keeps the line's standing with
/// the grammar: an escape for an escape, a string value for a number value (but never
/// in a key's place, where a string would be right and the number was wrong).
fn mend(line: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut changed = false;
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        match b {
            b'"' => {
                // A string: up to its closing quote, mending escapes of half a pair.
                out.push(b'"');
                i += 1;
                while let Some(&b) = line.get(i) {
                    match b {
                        b'"' => break,
                        b'\\' => match escaped_unit(line, i) {
                            Some(0xD800..=0xDBFF)
                                if matches!(escaped_unit(line, i + 6), Some(0xDC00..=0xDFFF)) =>
                            {
                                out.extend_from_slice(&line[i..i + 12]);
                                i += 12;
                            }
                            Some(0xD800..=0xDFFF) => {
                                out.extend_from_slice(br"\ufffd");
                                changed = true;
                                i += 6;
                            }
                            // Any other escape: the backslash and the byte it escapes.
                            _ => {
                                let end = (i + 2).min(line.len());
                                out.extend_from_slice(&line[i..end]);
                                i = end;
                            }
                        },
                        _ => {
                            out.push(b);
                            i += 1;
                        }
                    }
                }
                if i < line.len() {
                    out.push(b'"');
                    i += 1;
                }
            }
            b'-' | b'0'..=b'9' => {
                let len = line[i..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .unwrap_or(line.len() - i);
                let token = &line[i..i + len];
                i += len;
                let is_key = || {
                    line[i..]
                        .iter()
                        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                        == Some(&b':')
                };
                if beyond_f64(token) && !is_key() {
                    out.push(b'"');
                    out.extend_from_slice(token);
                    out.push(b'"');
                    changed = true;
                } else {
                    out.extend_from_slice(token);
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// `token` is a number to the grammar that serde_json reads into no `Value`.
fn beyond_f64(token: &[u8]) -> bool {
    let mut number = Scanner::new(token);
    match number.number_text() {
        Ok((int_digits, exp_digits)) if number.pos == token.len() => {
            (int_digits > SURE_INT_DIGITS || exp_digits > 2)
                && serde_json::from_slice::<Value>(token).is_err()
        }
        _ => false,
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit set in each zero byte of `v`, maybe also in bytes above one.
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The index of the first `\n` in `bytes`, eight bytes at a time.
pub fn find_newline(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let flags = zero_bytes(word ^ (ONES * u64::from(b'\n')));
        if flags != 0 {
            return Some(offset + flags.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let tail = words.remainder().iter().position(|&b| b == b'\n');
    tail.map(|i| offset + i)
}

/// The high bit set in the lowest byte of `word` (the first, read little-endian) that is
/// a quote, a backslash or a control character, if any; maybe in later bytes too.
///
/// Each test flags a byte's high bit by subtracting from every byte at once; a byte can
/// be flagged wrongly only by a borrow from a lower byte that was flagged rightly, so
/// the lowest flag is always exact.
#[inline(always)]
fn special_bytes(word: u64) -> u64 {
    let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The scanner's verdict on a whole text.
    fn accepts(text: &[u8]) -> bool {
        let mut s = Scanner::new(text);
        s.value().and_then(|_| s.end_of_line()) == Ok(text.len())
    }

    /// `text` as one line: a newline may only end it.
    fn one_line(text: &[u8]) -> Option<&[u8]> {
        match text.iter().position(|&b| b == b'\n') {
            Some(i) if i + 1 < text.len() => None,
            Some(i) => Some(&text[..i]),
            None => Some(text),
        }
    }

    /// The verdict of serde_json reading `text` as one line into a `Value`, as the
    /// whole parse does before it mends anything.
    fn serde_accepts(text: &[u8]) -> bool {
        one_line(text).is_some_and(|line| serde_json::from_slice::<Value>(line).is_ok())
    }

    /// The grammar's verdict (RFC 8259, UTF-8) on `text` as one line: serde_json's
    /// checks without building anything, which skip neither surrogate pairs nor the
    /// range of numbers.
    pub(crate) fn grammar_accepts(text: &[u8]) -> bool {
        one_line(text).is_some_and(|line| {
            serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
                && std::str::from_utf8(line).is_ok()
        })
    }

    #[test]
    fn valid_json_is_accepted() {
        for t in [
            r#"{}"#,
            r#"[]"#,
            r#" { "a" : [ 1 , -0.5e+3 , true , false , null , "x\"\\\/\b\f\n\r\t\u00e9" ] } "#,
            r#"{"a":{"b":{"c":[[],{}]}}}"#,
            r#""a string of more than eight bytes, with ünïcödé in it""#,
            "0",
            "-12.25E-2",
            r#""a pair: \ud83d\ude00, \uDBFF\uDFFF""#,
            "1.7976931348623157e308",
            "1e-400", // below f64's least: serde_json reads it as 0
            "1e99",
            &format!("1{}", "0".repeat(300)),
        ] {
            assert!(accepts(t.as_bytes()), "{t}");
            assert!(serde_accepts(t.as_bytes()), "{t}");
        }
    }

    /// Half a surrogate pair and numbers beyond f64 are JSON to the grammar, but not
    /// to a `Value`: the scanner declines them, and `parse` mends them.
    #[test]
    fn lone_surrogates_and_huge_numbers_are_mended_not_relayed_raw() {
        let cases = [
            (r#""\ud83d""#, json!("\u{fffd}")),
            (r#""\uDC00 low first""#, json!("\u{fffd} low first")),
            (r#""\ud83d\ud83d\ude00""#, json!("\u{fffd}😀")),
            (r#""\ud83d\n""#, json!("\u{fffd}\n")),
            (r#"["\ud83d", "\\ud83d"]"#, json!(["\u{fffd}", "\\ud83d"])),
            ("1e400", json!("1e400")),
            ("[-1E+999, 1e-400, 2]", json!(["-1E+999", 0.0, 2])),
            (
                &format!("1{}", "0".repeat(400)),
                json!(format!("1{}", "0".repeat(400))),
            ),
            (
                r#"{"type":"result","result":"cut \ud83d","total_cost_usd":1e400}"#,
                json!({"type":"result","result":"cut \u{fffd}","total_cost_usd":"1e400"}),
            ),
        ];
        for (text, mended) in cases {
            assert!(grammar_accepts(text.as_bytes()), "{text}");
            assert!(!accepts(text.as_bytes()), "{text}");
            assert!(!serde_accepts(text.as_bytes()), "{text}");
            assert_eq!(parse(text.as_bytes()).ok(), Some(mended), "{text}");
        }
        // Mending makes nothing valid that was not: a number is no key, and a broken
        // line stays broken.
        for text in [
            &br#"{1e400:1}"#[..],
            br#"{1e400 : 1}"#,
            br#"["\ud83d""#,
            br#"["\ud83d" 1e400]"#,
            br#"[1e400.]"#,
            br#"[1e400"#,
            b"\"\\ud83d \xff\"",
        ] {
            let shown = String::from_utf8_lossy(text);
            assert!(!grammar_accepts(text), "{shown}");
            assert!(parse(text).is_err(), "{shown}");
        }
    }

    #[test]
    fn invalid_json_is_declined() {
        for t in [
            &b""[..],
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"[1,]",
            b"[1 2]",
            b"{\"a\":1]",
            b"[1}",
            b"01",
            b"1.",
            b"1e",
            b"-",
            b"+1",
            b".5",
            b"tru",
            b"nul",
            b"\"unterminated",
            b"\"bad \\x escape\"",
            b"\"bad \\u12g4 escape\"",
            b"\"raw\ttab\"",
            b"\"raw \x01 control in a long string\"",
            b"\"bad utf-8 \xff\"",
            b"{} {}",
            b"{'a':1}",
        ] {
            assert!(!accepts(t), "{}", String::from_utf8_lossy(t));
            assert!(!serde_accepts(t), "{}", String::from_utf8_lossy(t));
        }
    }

    #[test]
    fn members_hands_out_the_text_of_values() {
        let line = br#"{"type":"assistant","message":{"model":"m","content":[{"type":"text","text":"hi"}]},"n":1}"#;
        let mut s = Scanner::new(line);
        let mut seen = Vec::new();
        let mut note = |key: &[u8], value: Raw| {
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            seen.push((text(key), text(value.get())));
            Ok(())
        };
        s.members(|s, key| {
            if key == b"message" {
                s.members(|s, key| note(key, s.value()?))
            } else {
                note(key, s.value()?)
            }
        })
        .unwrap();
        assert_eq!(s.end_of_line(), Ok(line.len()));
        let expected = [
            ("type", r#""assistant""#),
            ("model", r#""m""#),
            ("content", r#"[{"type":"text","text":"hi"}]"#),
            ("n", "1"),
        ];
        assert_eq!(seen, expected.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn deep_nesting_and_escaped_keys_are_left_to_serde() {
        let nested = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!accepts(nested(200).as_bytes()));
        assert!(!accepts(nested(MAX_DEPTH + 2).as_bytes()));
        assert!(accepts(nested(MAX_DEPTH - 1).as_bytes()));
        let mut s = Scanner::new(br#"{"typ\u0065":1}"#);
        assert_eq!(s.members(|s, _| s.value().map(drop)), Err(Declined));
    }

    #[test]
    fn find_newline_matches_a_plain_search() {
        let text = b"0123456789abcdef\nx\n\n0123456\n01234567\n\xff\x8a\x0a tail";
        for start in 0..text.len() {
            let s = &text[start..];
            let plain = s.iter().position(|&b| b == b'\n');
            assert_eq!(find_newline(s), plain, "{start}");
        }
    }

    #[test]
    fn a_line_ends_at_its_newline() {
        let text = b"{\"a\":1} \r\n{\"b\":2}";
        let mut s = Scanner::new(text);
        s.members(|s, _| s.value().map(drop)).unwrap();
        assert_eq!(s.end_of_line(), Ok(10));
        // A newline is never whitespace inside a line.
        assert!(!accepts(b"{\"a\":\n1}"));
        assert!(!accepts(b"[1,\n2]"));
    }

    #[test]
    fn the_word_test_finds_exactly_the_first_special_byte() {
        let naive = |w: [u8; 8]| w.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        let first_special = |w: u64| match special_bytes(w) {
            0 => None,
            flags => Some(flags.trailing_zeros() as usize / 8),
        };
        // Every byte value at every place, around bytes that are and are not special.
        for fill in [b'a', b' ', b'"', 0, 0x1f, 0x20, 0x7f, 0x80, 0xff] {
            for at in 0..8 {
                for b in 0..=255u8 {
                    let mut w = [fill; 8];
                    w[at] = b;
                    assert_eq!(first_special(u64::from_le_bytes(w)), naive(w), "{w:?}");
                }
            }
        }
        // And many mixed words (xorshift: the same ones every run).
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Bias towards the bytes that matter.
            let w = state.to_le_bytes().map(|b| match b % 8 {
                0 => b'"',
                1 => b'\\',
                2 => b % 0x21,
                _ => b,
            });
            assert_eq!(first_special(u64::from_le_bytes(w)), naive(w), "{w:?}");
        }
    }

    /// Lines of the real CLI (tests/fixtures/transcripts), each broken or changed in one
    /// to three places: bytes replaced, removed, inserted, structural characters
    /// swapped, the line cut short. Deterministic (xorshift): the same cases every run.
    pub(crate) fn mutated_cli_lines(count: usize) -> Vec<Vec<u8>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/transcripts");
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for entry in std::fs::read_dir(dir)
            .expect("transcripts are in the repo")
            .flatten()
        {
            let text = std::fs::read(entry.path()).unwrap();
            lines.extend(
                text.split(|&b| b == b'\n')
                    .filter(|l| l.starts_with(b"{"))
                    .map(<[u8]>::to_vec),
            );
        }
        assert!(lines.len() > 20);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        const BYTES: &[u8] = b"{}[],:\"\\ \t\n0123456789-+.eEtrufalsn/bu\x01\x1f\x7f\xc3\xa9\xff";
        const SYNTAX: &[u8] = b"{}[],:\"";
        // Text the grammar allows and serde_json's `Value` does not, or nearly.
        const ODD: &[&[u8]] = &[
            br"\ud83d",
            br"\udc00",
            br"\ud83d\ude00",
            b"1e400",
            b"e999",
            b"9e-400",
            b"1e308",
        ];
        (0..count)
            .map(|round| {
                let mut t = lines[round % lines.len()].clone();
                for _ in 0..1 + next(3) {
                    let i = next(t.len() + 1);
                    match next(6) {
                        0 if i < t.len() => t[i] = BYTES[next(BYTES.len())],
                        1 if i < t.len() => {
                            t.remove(i);
                        }
                        2 => t.insert(i, BYTES[next(BYTES.len())]),
                        // One structural character for another: the subtle breakage.
                        3 => {
                            let at: Vec<usize> =
                                (0..t.len()).filter(|&k| SYNTAX.contains(&t[k])).collect();
                            if !at.is_empty() {
                                t[at[next(at.len())]] = SYNTAX[next(SYNTAX.len())];
                            }
                        }
                        4 => t.truncate(i),
                        _ => {
                            let odd = ODD[next(ODD.len())];
                            t.splice(i..i, odd.iter().copied());
                        }
                    }
                }
                t
            })
            .collect()
    }

    /// The scanner accepts exactly what serde_json reads into a `Value`, which is what
    /// the whole parse reads without mending. (It declines more only for nesting deeper
    /// than these texts have, and in `members`, for escaped keys.)
    #[test]
    fn agrees_with_serde_json_on_mutated_lines() {
        let mut odd = 0;
        for t in mutated_cli_lines(40_000) {
            let mine = accepts(&t);
            let theirs = serde_accepts(&t);
            assert_eq!(
                mine,
                theirs,
                "scanner {mine}, serde_json {theirs}: {}",
                String::from_utf8_lossy(&t)
            );
            odd += usize::from(!theirs && grammar_accepts(&t));
        }
        assert!(odd > 100, "only {odd} lines needed mending");
    }

    /// The whole parse reads exactly the lines that are JSON to the grammar.
    #[test]
    fn parse_reads_exactly_the_grammar_on_mutated_lines() {
        for t in mutated_cli_lines(40_000) {
            let read = one_line(&t).is_some_and(|line| parse(line).is_ok());
            let grammar = grammar_accepts(&t);
            assert_eq!(
                read,
                grammar,
                "parse {read}, grammar {grammar}: {}",
                String::from_utf8_lossy(&t)
            );
        }
    }
}
