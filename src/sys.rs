//! The few operating-system calls std has no API for, kept in one place so the rest of
//! the crate stays free of `unsafe`.

use std::io;
use std::os::fd::AsRawFd;

/// Signals the server sends to a child's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// Send `sig` to every process in group `pgid` (the child and its descendants, such as
/// Bash-tool commands, that did not leave the group).
pub fn signal_group(pgid: u32, sig: Signal) -> io::Result<()> {
    let sig = match sig {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    let pgid = libc::pid_t::try_from(pgid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) with a negative pid only signals; it touches no memory of ours.
    if unsafe { libc::kill(-pgid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether any process is left in group `pgid`.
pub fn group_exists(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: signal 0 checks for existence and permission only.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Write as much of `buf` as the socket takes right now, without blocking.
/// Returns `WouldBlock` when the send buffer is full.
pub fn send_nonblocking(sock: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        Ok(n as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raise the soft limit on open files as far as `want` (never above the hard limit) and
/// return the soft limit now in force.
// `rlim_t` is u64 here but not on every platform.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = want.min(lim.rlim_max as u64);
    if (lim.rlim_cur as u64) < target {
        lim.rlim_cur = target as libc::rlim_t;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur as u64)
}
