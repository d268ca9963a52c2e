//! Small helpers every floor of the crate uses, with nothing of the crate under them:
//! a mutex lock that survives poisoning, the wall clock, session ids, and cutting text
//! to length for messages.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lock, recovering from a poisoned mutex: the data (counters, rows) stays valid even
/// if a session thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random version-4 UUID from the kernel's random source.
pub fn new_session_id() -> String {
    let mut b = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !filled {
        // No /dev/urandom: fall back to time and a counter; unique, not secret.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..8].copy_from_slice(&(t as u64).to_le_bytes());
        b[8..].copy_from_slice(&(COUNTER.fetch_add(1, Ordering::SeqCst) as u64).to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `id` can be a session id of this server: what [`new_session_id`] makes,
/// with an instance prefix or not (`<instance>-<uuid>`) — hex digits and dashes, at
/// most 64 bytes. The one check for every id a client names (a reattach, a `resume`,
/// a file name under the state directory).
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// At most `max` characters of `s`, for echoing client or child text in errors.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The last `n` characters of `s`.
pub fn last_chars(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    match s.char_indices().nth(count.saturating_sub(n)) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 10), "hi");
    }

    #[test]
    fn session_ids_look_like_uuids_and_differ() {
        let a = new_session_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_session_id());
        assert!(is_session_id(&a));
        assert!(is_session_id(&format!("0f-{a}")));
        for bad in ["", "../x", "a b", &"a".repeat(65)] {
            assert!(!is_session_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn last_chars_counts_characters() {
        assert_eq!(last_chars("héllo", 4), "éllo");
        assert_eq!(last_chars("hi", 5), "hi");
    }
}
