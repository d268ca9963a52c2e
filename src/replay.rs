//! The messages a session sent most recently, kept for a client that reattaches
//! (`/ws?session_id=S&last_seq=N`) after its connection dropped.
//!
//! Every message the session sends is appended here as its frame's JSON text, under
//! its `seq`; the oldest are dropped once more than `--replay-buffer-bytes` are held.
//! The bytes live in one ring of bytes and one ring of lengths, so appending costs a
//! copy and no allocation once the rings have grown.

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
    bytes: VecDeque<u8>,
    /// (seq, length) of each frame in `bytes`, oldest first.
    frames: VecDeque<(u64, usize)>,
    /// The newest `seq` no longer held (0: none dropped).
    dropped_through: u64,
}

impl Replay {
    /// A buffer holding at most `limit` bytes of frames.
    pub fn new(limit: usize) -> Replay {
        Replay {
            limit,
            bytes: VecDeque::new(),
            frames: VecDeque::new(),
            dropped_through: 0,
        }
    }

    /// Keep the frame `seq` (its JSON text), dropping the oldest to make room.
    pub fn push(&mut self, seq: u64, frame: &[u8]) {
        if frame.len() > self.limit {
            // Too large to keep: everything up to it is gone.
            self.bytes.clear();
            self.frames.clear();
            self.dropped_through = seq;
            return;
        }
        while self.bytes.len() + frame.len() > self.limit {
            let Some((old, len)) = self.frames.pop_front() else {
                break;
            };
            self.bytes.drain(..len);
            self.dropped_through = old;
        }
        self.bytes.extend(frame);
        self.frames.push_back((seq, frame.len()));
    }

    /// The frames after `last_seq`.
    pub fn since(&mut self, last_seq: u64) -> Since<'_> {
        let all = self.bytes.make_contiguous();
        let mut at = 0;
        let mut out = Vec::new();
        for &(seq, len) in &self.frames {
            if seq > last_seq {
                out.push(&all[at..at + len]);
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

    /// Bytes held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.bytes.len()
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
