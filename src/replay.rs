//! The messages a session sent most recently, kept for a client that reattaches
//! (`/ws?session_id=S&last_seq=N`) after its connection dropped.
//!
//! Every message the session sends is appended here as its frame's JSON text, under
//! its `seq`; the oldest are dropped once more than `--replay-buffer-bytes` are held.
//! The bytes live in one buffer and their lengths in a ring, so appending costs a
//! copy and no allocation once they have grown.

use std::collections::VecDeque;

/// What a reattaching client is sent again.
#[derive(Debug, PartialEq, Eq)]
pub enum Since<'a> {
    /// Every message after the client's `last_seq`, oldest first (maybe none).
    All(Vec<&'a [u8]>),
    /// Some were dropped: `first` is the oldest `seq` still held, `frames` from there.
    Gap { first: u64, frames: Vec<&'a [u8]> },
}

/// The buffer of one session.
#[derive(Debug)]
pub struct Replay {
    limit: usize,
    /// The frames held are `bytes[start..]`; what lies before `start` was dropped and
    /// is reclaimed in one move once it is half the limit (so appending is a plain
    /// copy, dropping the oldest is a counter, and the buffer stays under 1.5 × the
    /// limit).
    bytes: Vec<u8>,
    start: usize,
    /// (seq, length) of each frame held, oldest first.
    frames: VecDeque<(u64, usize)>,
    /// The newest `seq` no longer held (0: none dropped).
    dropped_through: u64,
}

impl Replay {
    /// A buffer holding at most `limit` bytes of frames.
    pub fn new(limit: usize) -> Replay {
        Replay {
            limit,
            bytes: Vec::new(),
            start: 0,
            frames: VecDeque::new(),
            dropped_through: 0,
        }
    }

    /// Keep the frame `seq` (its JSON text), dropping the oldest to make room.
    pub fn push(&mut self, seq: u64, frame: &[u8]) {
        if frame.len() > self.limit {
            // Too large to keep: everything up to it is gone.
            self.bytes.clear();
            self.start = 0;
            self.frames.clear();
            self.dropped_through = seq;
            return;
        }
        while self.len() + frame.len() > self.limit {
            let Some((old, len)) = self.frames.pop_front() else {
                break;
            };
            self.start += len;
            self.dropped_through = old;
        }
        if self.start > 0 && self.start >= self.limit / 2 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(frame);
        self.frames.push_back((seq, frame.len()));
    }

    /// The frames after `last_seq`.
    pub fn since(&self, last_seq: u64) -> Since<'_> {
        let mut at = self.start;
        let mut out = Vec::new();
        for &(seq, len) in &self.frames {
            if seq > last_seq {
                out.push(&self.bytes[at..at + len]);
            }
            at += len;
        }
        if self.dropped_through > last_seq {
            Since::Gap {
                first: self.dropped_through + 1,
                frames: out,
            }
        } else {
            Since::All(out)
        }
    }

    /// Bytes of frames held.
    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(s: &Since) -> Vec<String> {
        let f = match s {
            Since::All(f) | Since::Gap { frames: f, .. } => f,
        };
        f.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn everything_after_last_seq_in_order() {
        let mut r = Replay::new(100);
        for seq in 1..=5 {
            r.push(seq, format!("m{seq}").as_bytes());
        }
        let s = r.since(2);
        assert!(matches!(s, Since::All(_)));
        assert_eq!(frames(&s), ["m3", "m4", "m5"]);
        assert_eq!(frames(&r.since(5)), Vec::<String>::new());
        assert_eq!(frames(&r.since(0)).len(), 5);
    }

    #[test]
    fn the_oldest_go_first_and_a_gap_says_where_it_ends() {
        let mut r = Replay::new(10);
        for seq in 1..=6 {
            r.push(seq, b"abc"); // 3 bytes each: three fit
        }
        assert_eq!(r.len(), 9);
        assert_eq!(
            r.since(2),
            Since::Gap {
                first: 4,
                frames: vec![b"abc", b"abc", b"abc"]
            }
        );
        // The client has everything up to 3: nothing it lacks was dropped.
        assert!(matches!(r.since(3), Since::All(_)));
    }

    #[test]
    fn what_was_dropped_is_reclaimed() {
        let mut r = Replay::new(10);
        for seq in 1..1000 {
            r.push(seq, b"abc");
            // The buffer stays under 1.5 × the limit.
            assert!(r.bytes.len() <= 15, "{}", r.bytes.len());
        }
        assert_eq!(r.since(996), Since::All(vec![b"abc", b"abc", b"abc"]));
        assert!(matches!(r.since(995), Since::Gap { first: 997, .. }));
    }

    #[test]
    fn a_frame_larger_than_the_buffer_is_a_gap() {
        let mut r = Replay::new(10);
        r.push(1, b"ok");
        r.push(2, &[b'x'; 20]);
        r.push(3, b"after");
        assert_eq!(
            r.since(1),
            Since::Gap {
                first: 3,
                frames: vec![b"after"]
            }
        );
        assert_eq!(frames(&r.since(2)), ["after"]);
        let mut r = Replay::new(10);
        r.push(1, &[b'x'; 20]);
        assert_eq!(
            r.since(0),
            Since::Gap {
                first: 2,
                frames: vec![]
            }
        );
    }
}
