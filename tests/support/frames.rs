//! Raw client frames, for tests that need what a well-behaved WebSocket client will not
//! send (broken frames, several frames in one write, floods that ignore back-pressure).

use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// A text frame (opcode 0x1).
pub const TEXT: u8 = 0x1;
/// A binary frame (opcode 0x2).
pub const BINARY: u8 = 0x2;
/// A close (opcode 0x8).
pub const CLOSE: u8 = 0x8;
/// A ping (opcode 0x9).
pub const PING: u8 = 0x9;

/// One whole client frame: FIN, `opcode`, masked with the all-zero key (valid, and the
/// payload stays readable), any payload length.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(0x80 | opcode, payload)
}

/// One client frame whose first byte (FIN, RSV1-3, opcode) is given as is.
pub fn frame_with(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65_535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]); // the masking key
    out.extend_from_slice(payload);
    out
}

/// Shrink the socket's receive buffer to about `bytes`, as a client on a slow link (or
/// one that never reads) looks to the server.
pub fn set_receive_buffer(tcp: &TcpStream, bytes: usize) {
    let size = libc::c_int::try_from(bytes).expect("a small size");
    // SAFETY: setsockopt reads `size` (an int, as SO_RCVBUF takes) for the call only.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}
