//! The few operating-system calls std has no API for, kept in one place so the rest of
//! the crate stays free of `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// Have the child started by `cmd` receive SIGTERM if the thread that starts it ends,
/// which includes the whole server dying (even by SIGKILL): no orphaned `claude`.
/// A session stops its child before its thread ends, so in normal operation the signal
/// never fires.
pub fn terminate_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
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

/// Receive up to `max` bytes without blocking, appended to `buf`. `Ok(0)` is end of
/// file; `WouldBlock` means nothing is waiting.
pub fn recv_append(sock: &impl AsRawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    // SAFETY: recv writes at most `len` bytes at `to`.
    append_with(buf, max, |to, len| unsafe {
        libc::recv(fd, to, len, libc::MSG_DONTWAIT)
    })
}

/// Read up to `max` bytes (blocking), appended to `buf`: unlike `Read::read`, into the
/// vector's spare room, so the room need not be zeroed first (a child streaming fast
/// is read in chunks of a quarter MiB). `Ok(0)` is end of file.
pub fn read_append(file: &impl AsRawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let fd = file.as_raw_fd();
    // SAFETY: read writes at most `len` bytes at `to`.
    append_with(buf, max, |to, len| unsafe { libc::read(fd, to, len) })
}

/// Ask for a pipe buffer of `bytes` (Linux rounds up to pages; an unprivileged process
/// gets at most /proc/sys/fs/pipe-max-size, 1 MiB by default). The size granted.
pub fn grow_pipe(pipe: &impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl with F_SETPIPE_SZ takes an integer, no pointers.
    let got = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    if got < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(got as usize)
    }
}

/// Let `io` (a read-like call: bytes written at a pointer, at most a length; the count
/// or -1) fill up to `max` bytes of `buf`'s spare room, and take them into `buf`.
fn append_with(
    buf: &mut Vec<u8>,
    max: usize,
    io: impl FnOnce(*mut libc::c_void, usize) -> isize,
) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    let n = io(spare.as_mut_ptr().cast(), len);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(len);
    // SAFETY: the kernel initialised `n` (≤ `len`) bytes past the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// An epoll instance: one thread learns which of many sockets have input (or room
/// for output their owner is waiting to send). Sockets are
/// watched one-shot: after a socket is reported it stays quiet until re-armed, so the
/// watcher never spins on input its owner has not read yet.
pub struct Epoll(OwnedFd);

/// What a watched socket is reported for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Input (or the peer hanging up).
    Input,
    /// Input, or room for output that waits.
    InputAndRoom,
    /// Only room for output: its owner takes no input until its backlog drains.
    Room,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(
        &self,
        op: libc::c_int,
        sock: &impl AsRawFd,
        token: u64,
        watch: Watch,
    ) -> io::Result<()> {
        let events = match watch {
            Watch::Input => libc::EPOLLIN,
            Watch::InputAndRoom => libc::EPOLLIN | libc::EPOLLOUT,
            Watch::Room => libc::EPOLLOUT,
        };
        let mut event = libc::epoll_event {
            events: (events | libc::EPOLLONESHOT) as u32,
            u64: token,
        };
        // SAFETY: the kernel reads the event we own for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, sock.as_raw_fd(), &mut event) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Report `token` once when `sock` has input (or the peer hung up).
    pub fn watch(&self, sock: &impl AsRawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, sock, token, Watch::Input)
    }

    /// Report `token` once more for what `watch` names (at once if it holds now). A
    /// hang-up or error is reported whatever is watched.
    pub fn rearm(&self, sock: &impl AsRawFd, token: u64, watch: Watch) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, sock, token, watch)
    }

    /// Stop watching `sock`.
    pub fn forget(&self, sock: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, sock, 0, Watch::Input)
    }

    /// Block until watched sockets have input; their tokens replace `tokens`' contents.
    pub fn wait(&self, tokens: &mut Vec<u64>) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: the kernel writes at most `events.len()` entries into the array we own.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                -1,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        tokens.clear();
        tokens.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// Give the kernel back the pages of the calling thread's stack below the caller's
/// frame (keeping a small margin). Memory below the stack pointer holds nothing
/// live; a page comes back, zeroed, if the thread goes that deep again. A session calls
/// this once it is set up: the handshake's deep frames would otherwise stay resident
/// for the whole life of an idle connection.
#[inline(never)]
pub fn release_stack_below_caller() {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    // SAFETY: sysconf only reads a system constant.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    // SAFETY: an all-zero pthread_attr_t is a valid argument for pthread_getattr_np,
    // which initialises it; it is destroyed right after use.
    let low = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return;
        }
        addr as usize
    };
    let low = low.div_ceil(page) * page;
    // Keep 2 KiB under this frame: madvise's own small frame is there during the call.
    let high = (here.saturating_sub(2048) / page) * page;
    if high > low {
        // SAFETY: [low, high) is this thread's own stack, below every live frame (the
        // stack grows down and `high` is a page under this function's frame).
        unsafe {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
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
