//! The few operating-system calls std has no API for, kept in one place so the rest of
//! the crate stays free of `unsafe`. `nix` wraps most of them safely; `unsafe` is left
//! for what it does not cover (reads into spare capacity, epoll, pidfd_open, pre_exec).

#[cfg(not(target_os = "linux"))]
compile_error!(
    "claude-ws runs on Linux only: it relies on PR_SET_PDEATHSIG, pidfd, epoll and F_SETPIPE_SZ"
);

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self as nix_signal, killpg};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals the server sends to a child's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// The process group of a child, checked: group 0 is the caller's own (the server's)
/// and group 1 is init's, and `-1` reaches every process we may signal; a child's
/// group is none of these, so such a number is a bug and is refused, not signalled.
fn child_group(pgid: u32) -> io::Result<Pid> {
    match libc::pid_t::try_from(pgid) {
        Ok(raw) if raw > 1 => Ok(Pid::from_raw(raw)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        )),
    }
}

/// Send `sig` to every process in group `pgid` (the child and its descendants, such as
/// Bash-tool commands, that did not leave the group). Groups 0 and 1 are refused.
pub fn signal_group(pgid: u32, sig: Signal) -> io::Result<()> {
    let sig = match sig {
        Signal::Term => nix_signal::Signal::SIGTERM,
        Signal::Kill => nix_signal::Signal::SIGKILL,
    };
    Ok(killpg(child_group(pgid)?, sig)?)
}

/// Have the child started by `cmd` receive SIGTERM when the thread that starts it
/// ends, which includes the whole server dying (even by SIGKILL): no orphaned `claude`.
/// Children are started from one thread that lives as long as the process (see
/// `child.rs`), so in normal operation the signal never fires.
pub fn terminate_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: runs in the forked child before exec and only makes system calls
    // (prctl, getppid), which are async-signal-safe; it allocates nothing and touches
    // no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix_signal::Signal::SIGTERM)?;
            // The parent may have died between fork and prctl: then the signal never
            // comes, and the child would run on as an orphan. (ESRCH: no allocation
            // here, unlike a custom error.)
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Whether any process is left in group `pgid` (never for groups 0 and 1).
pub fn group_exists(pgid: u32) -> bool {
    let Ok(pgid) = child_group(pgid) else {
        return false;
    };
    // Signal 0 checks for existence and permission only.
    matches!(killpg(pgid, None), Ok(()) | Err(Errno::EPERM))
}

/// Learns when a child process has exited, without reaping it (its owner's `wait`
/// does that, so the status is not lost): through a pidfd (Linux 5.3+), which
/// becomes readable at the exit; on older kernels by asking `waitid` every 10 ms.
#[derive(Debug)]
pub struct ExitWatch {
    pid: Pid,
    pidfd: Option<OwnedFd>,
}

impl ExitWatch {
    /// Watch the child `pid`, which must not have been reaped yet (so the number cannot
    /// have been reused).
    pub fn new(pid: u32) -> io::Result<ExitWatch> {
        let raw = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes a pid and flags, no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        let pidfd = if fd >= 0 {
            let fd = std::os::fd::RawFd::try_from(fd).map_err(io::Error::other)?;
            // SAFETY: `fd` is a new descriptor (close-on-exec) nothing else owns.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            match Errno::last() {
                Errno::ENOSYS => None,
                e => return Err(e.into()),
            }
        };
        Ok(ExitWatch {
            pid: Pid::from_raw(raw),
            pidfd,
        })
    }

    /// Wait up to `limit` for the process to exit; true once it has (or was reaped).
    pub fn wait(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let exited = match &self.pidfd {
                Some(fd) => poll_readable(fd, left),
                None => self.exited_now(),
            };
            if exited || left.is_zero() {
                return exited;
            }
            if self.pidfd.is_none() {
                std::thread::sleep(left.min(Duration::from_millis(10)));
            }
        }
    }

    fn exited_now(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        // ECHILD: already reaped.
        !matches!(
            waitid(Id::Pid(self.pid), flags),
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR)
        )
    }
}

/// Whether `fd` becomes readable within `limit` (rounded up to a millisecond).
fn poll_readable(fd: &OwnedFd, limit: Duration) -> bool {
    let ms = limit.as_micros().div_ceil(1000);
    let timeout = i32::try_from(ms)
        .ok()
        .and_then(|ms| PollTimeout::try_from(ms).ok())
        .unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    // EINTR or an error: not known to have exited; the caller's loop asks again.
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
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
pub fn grow_pipe(pipe: &impl AsFd, bytes: usize) -> io::Result<usize> {
    use nix::fcntl::{fcntl, FcntlArg};
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let got = fcntl(pipe.as_fd(), FcntlArg::F_SETPIPE_SZ(want))?;
    usize::try_from(got).map_err(io::Error::other)
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

/// Raise the soft limit on open files as far as `want` (never above the hard limit) and
/// return the soft limit now in force.
// `rlim_t` is u64 here but not on every Linux target: the conversions are not useless there.
#[allow(clippy::useless_conversion)]
pub fn raise_fd_limit(want: u64) -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = libc::rlim_t::try_from(want)
        .unwrap_or(libc::rlim_t::MAX)
        .min(hard);
    let now = if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
        target
    } else {
        soft
    };
    Ok(u64::try_from(now).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn groups_0_and_1_are_never_signalled() {
        // (Not through `signal_group` itself: a regression would signal every process.)
        for pgid in [0, 1, u32::MAX] {
            assert!(child_group(pgid).is_err(), "group {pgid}");
            assert!(!group_exists(pgid), "group {pgid}");
        }
        assert!(child_group(2).is_ok());
    }

    fn watches(pid: u32) -> [ExitWatch; 2] {
        let polled = ExitWatch {
            pid: Pid::from_raw(libc::pid_t::try_from(pid).expect("pid")),
            pidfd: None,
        };
        [ExitWatch::new(pid).expect("pidfd_open"), polled]
    }

    #[test]
    fn an_exit_is_seen_without_reaping_the_child() {
        let mut child = Command::new("sleep").arg("0.1").spawn().expect("sleep");
        for w in watches(child.id()) {
            assert!(w.wait(Duration::from_secs(30)));
        }
        // Still there for its owner to reap, with its status.
        let status = child.try_wait().expect("try_wait").expect("exited");
        assert!(status.success());
    }

    #[test]
    fn a_running_child_is_waited_for_no_longer_than_asked() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        for w in watches(child.id()) {
            let started = Instant::now();
            assert!(!w.wait(Duration::from_millis(50)));
            assert!(started.elapsed() >= Duration::from_millis(50));
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}
