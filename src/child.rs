//! One running `claude` child: spawning it in its own process group, the threads that
//! keep its pipes moving, and the ladder that stops it.
//!
//! Three threads serve a child, so the session loop never blocks on a pipe:
//! - stdout reader: reads stdout in large chunks and sends each run of complete lines
//!   (no length cap: a tool result can be many MB) on a bounded channel; the session
//!   parses them ([`lines`]). Parsing on the session's thread keeps each line's JSON
//!   tree allocated and freed by one thread (handing trees between threads made the
//!   allocator the bottleneck), and one message per chunk, not per line, keeps the
//!   channel cheap. The bound is the back-pressure: a session that stops taking events
//!   (its client is not reading) stops the reader, the pipe fills, and the child
//!   pauses. When the session lets go of the channel the reader keeps draining and
//!   discarding until EOF, so a child being stopped is never stuck writing.
//! - stderr reader: always drains (an undrained stderr pipe blocks the child at 64 KiB),
//!   logs at debug, and keeps the tail for error reports.
//! - stdin writer: takes lines from a bounded channel. Closing stdin is dropping the
//!   sender; the writer then drops the pipe and the CLI writes its session and exits.
//!
//! Stopping a child takes seconds (the CLI writes its session; a stubborn one needs the
//! whole ladder), so no session waits for it: the session hands the child to the
//! [`Reaper`], which runs the ladder on a thread of its own and keeps the child's
//! place among `--max-running` until the child is reaped and its group is gone.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use serde_json::Value;

use crate::sys::{self, ExitWatch, Signal};
use crate::util::lock;

/// How many stdout chunks may wait for the session.
const EVENT_QUEUE: usize = 2;
/// The size of a stdout chunk (unless one line is longer): with [`EVENT_QUEUE`], at
/// most 512 KiB of output waits for a session that is not taking it.
const STDOUT_CHUNK: usize = 256 * 1024;
/// The child's stdout pipe buffer asked for (64 KiB by default): a child that streams
/// fast, and its reader, then wait for each other less often. Pipe buffers count
/// against a per-user budget (fs.pipe-user-pages-soft, 64 MiB by default), beyond which
/// new pipes get tiny buffers: 256 KiB leaves room for hundreds of children.
const STDOUT_PIPE: usize = 256 * 1024;
/// How many stdin lines may wait for a child that is not reading.
const STDIN_QUEUE: usize = 64;
/// How much of stderr is kept for error reports.
const STDERR_TAIL: usize = 4096;
/// After stdout's end of file, how long its reader waits for the child to exit and
/// for stderr's end before it tells the session (which then reads the exit status
/// and the stderr tail without waiting). A child that closes stdout and lives on, or
/// a grandchild holding stderr, only delays that report by this much.
const EXIT_AFTER_EOF: Duration = Duration::from_secs(2);
/// How long the stop that skips the stdin step waits between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_millis(500);
/// Stack of the pipe, reaper and spawner threads: none goes deep.
const HELPER_STACK: usize = 128 * 1024;

/// What a child needs to start: program, argv (never a shell line), cwd, environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The complete environment; nothing of the server's own is inherited.
    pub env: Vec<(String, String)>,
    /// The sandbox it runs in (`sandbox.rs`), if any: `spawn` then starts bwrap.
    pub sandbox: Option<crate::sandbox::Jail>,
}

/// Something the child's stdout produced.
#[derive(Debug)]
pub enum ChildEvent {
    /// One or more complete stdout lines, as read (`cli::events` reads them).
    Lines(Vec<u8>),
    /// stdout reached end of file (or failed): the child exited or is exiting.
    Closed,
}

/// Why a child could not be started.
#[derive(Debug)]
pub struct SpawnError {
    pub program: PathBuf,
    pub source: std::io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "could not start {}: {}",
            self.program.display(),
            self.source
        )
    }
}

/// Why a line did not reach the child's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// The child is not reading: the queue to its stdin is full.
    Busy,
    /// Its stdin is closed: the child exited or is exiting (stdout's EOF follows).
    Closed,
}

/// How a child ended, as the stop ladder saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself (or after stdin closed) with this status.
    Exited(ExitStatus),
    /// SIGTERM to its group ended it.
    Terminated(ExitStatus),
    /// It had to be SIGKILLed.
    Killed(ExitStatus),
}

impl Ending {
    /// The exit status, however it came about.
    pub fn status(self) -> ExitStatus {
        match self {
            Ending::Exited(s) | Ending::Terminated(s) | Ending::Killed(s) => s,
        }
    }
}

/// A running `claude` process and the threads around it.
pub struct Child {
    proc: std::process::Child,
    pid: u32,
    exit: Arc<ExitWatch>,
    stdin: Option<Sender<Vec<u8>>>,
    events: Receiver<ChildEvent>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
    ended: Option<Ending>,
    /// Whether `pid` is the outer bwrap of a sandbox (see [`signal`]).
    sandboxed: bool,
}

/// How a child ended: [`Child::exit_report`].
pub struct ExitReport {
    /// `None`: it closed its stdout but has not exited (yet).
    pub status: Option<ExitStatus>,
    stderr_tail: String,
}

impl ExitReport {
    /// `"{who} exited ({status}){when}"`, or `"{who} closed its output{when}"` while it
    /// has not exited, then the last `tail` characters of its stderr, if it wrote any.
    pub fn sentence(&self, who: &str, when: &str, tail: usize) -> String {
        let mut s = match self.status {
            Some(status) => format!("{who} exited ({status}){when}"),
            None => format!("{who} closed its output{when}"),
        };
        if !self.stderr_tail.is_empty() {
            s.push_str("; its stderr ends with: ");
            s.push_str(crate::util::last_chars(&self.stderr_tail, tail));
        }
        s
    }
}

impl Child {
    /// Start the child in a new process group with piped stdio. `label` names the
    /// session in log lines and thread names.
    pub fn spawn(spec: &ChildSpec, label: &str) -> Result<Child, SpawnError> {
        let asked = Instant::now();
        let mut cmd = match &spec.sandbox {
            Some(jail) => {
                let (bwrap, args) = jail.command(&spec.args, spec.cwd.as_deref());
                let mut cmd = Command::new(bwrap);
                cmd.args(args);
                cmd
            }
            None => {
                let mut cmd = Command::new(&spec.program);
                cmd.args(&spec.args);
                cmd
            }
        };
        cmd.env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own group, so a stop reaches Bash-tool grandchildren too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        sys::terminate_with_parent(&mut cmd);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut proc = spawn_from_lasting_thread(cmd).map_err(|source| SpawnError {
            program: spec.program.clone(),
            source,
        })?;
        let pid = proc.id();
        // Before anything can reap the child, so the pid cannot have been reused.
        let exit = match ExitWatch::new(pid) {
            Ok(w) => Arc::new(w),
            Err(source) => {
                let _ = proc.kill();
                let _ = proc.wait();
                return Err(SpawnError {
                    program: spec.program.clone(),
                    source,
                });
            }
        };
        let (stdout, stderr, stdin) =
            match (proc.stdout.take(), proc.stderr.take(), proc.stdin.take()) {
                (Some(o), Some(e), Some(i)) => (o, e, i),
                _ => {
                    // Cannot happen with Stdio::piped(); clean up rather than panic.
                    let _ = proc.kill();
                    let _ = proc.wait();
                    return Err(SpawnError {
                        program: spec.program.clone(),
                        source: std::io::Error::other("child pipes missing"),
                    });
                }
            };
        let sandboxed = spec.sandbox.is_some();
        let within = if sandboxed { " (in its sandbox)" } else { "" };
        log::info!("[{label}] started claude pid={pid}{within}");
        crate::metrics::child_started();
        if let Err(e) = sys::grow_pipe(&stdout, STDOUT_PIPE) {
            log::debug!("[{label}] stdout pipe keeps its size: {e}");
        }
        let (event_tx, events) = bounded(EVENT_QUEUE);
        let (stdin_tx, stdin_rx) = bounded::<Vec<u8>>(STDIN_QUEUE);
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::with_capacity(3);
        let spawn_thread = |name: String, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .stack_size(HELPER_STACK)
                .name(name)
                .spawn(f)
        };
        // The stderr reader drops this at its end; the stdout reader waits for that.
        let (stderr_open, stderr_done) = bounded::<()>(0);
        let threads = [
            spawn_thread(format!("stdout-{pid}"), {
                let exit = exit.clone();
                Box::new(move || {
                    read_stdout(stdout, &event_tx, asked);
                    report_end(&event_tx, &exit, &stderr_done);
                })
            }),
            spawn_thread(format!("stderr-{pid}"), {
                let tail = stderr_tail.clone();
                let label = label.to_string();
                Box::new(move || {
                    let _open = stderr_open;
                    read_stderr(stderr, tail, label, pid)
                })
            }),
            spawn_thread(
                format!("stdin-{pid}"),
                Box::new(move || write_stdin(stdin, stdin_rx)),
            ),
        ];
        for t in threads {
            match t {
                Ok(h) => readers.push(h),
                Err(source) => {
                    signal(pid, sandboxed, Signal::Kill);
                    let _ = proc.wait();
                    return Err(SpawnError {
                        program: spec.program.clone(),
                        source,
                    });
                }
            }
        }
        Ok(Child {
            proc,
            pid,
            exit,
            stdin: Some(stdin_tx),
            events,
            stderr_tail,
            readers,
            ended: None,
            sandboxed,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The channel of stdout events. Cloning it is cheap.
    pub fn events(&self) -> &Receiver<ChildEvent> {
        &self.events
    }

    /// Queue one line (a JSON object, newline added here) for the child's stdin without
    /// blocking. Callers that do not care whether it got there may ignore the result.
    pub fn send_line(&self, json: &Value) -> Result<(), Undelivered> {
        self.send_text(json.to_string())
    }

    /// Queue one line of JSON text as it is (one object, no newline in it; the newline
    /// is added here): `/sdk` writes its client's frames unchanged.
    pub fn send_text(&self, json: String) -> Result<(), Undelivered> {
        let Some(tx) = &self.stdin else {
            return Err(Undelivered::Closed);
        };
        let mut line = json.into_bytes();
        line.push(b'\n');
        tx.try_send(line).map_err(|e| match e {
            TrySendError::Full(_) => Undelivered::Busy,
            TrySendError::Disconnected(_) => Undelivered::Closed,
        })
    }

    /// Close the child's stdin (after the lines already queued). The CLI then finishes
    /// its turn, writes its session file and exits.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The last few KiB the child wrote to stderr, lossily decoded and trimmed.
    pub fn stderr_tail(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        String::from_utf8_lossy(&tail).trim().to_string()
    }

    /// How the child ended, for a log line or a client's error: its exit status, if it
    /// has exited (reaps it; never blocks), and the tail of its stderr.
    pub fn exit_report(&mut self) -> ExitReport {
        ExitReport {
            status: self.try_wait(),
            stderr_tail: self.stderr_tail(),
        }
    }

    /// The exit status, if the child has exited (reaps it). Never blocks. After
    /// [`ChildEvent::Closed`] it is known, unless the child closed stdout and lived on.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if let Some(e) = self.ended {
            return Some(e.status());
        }
        match self.proc.try_wait() {
            Ok(Some(s)) => {
                self.ended = Some(Ending::Exited(s));
                Some(s)
            }
            _ => None,
        }
    }

    /// Wait up to `limit` for the child to exit by itself.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.ended.is_none() {
            self.exit.wait(limit);
        }
        self.try_wait()
    }

    /// Stop the child the way that keeps its conversation: close stdin and give it
    /// `grace` to finish and write its session file; then SIGTERM its process group,
    /// wait `grace` again; then SIGKILL the group. Whatever is left in the group after
    /// the child itself has gone (a Bash-tool command) is killed too. Each step is
    /// logged with what ended it. Safe to call twice. Blocks: only the [`Reaper`] calls it.
    fn stop(&mut self, grace: Duration, label: &str) -> Ending {
        if let Some(e) = self.ended {
            self.sweep_group(label);
            return e;
        }
        let pid = self.pid;
        // Let go of stdout: the reader then drains and discards, so a child blocked on
        // a full pipe (its client stopped reading) can finish and exit gracefully.
        self.events = crossbeam_channel::never();
        self.close_stdin();
        let ending = if let Some(s) = self.wait_for(grace) {
            log::info!("[{label}] claude pid={pid} exited after stdin closed ({s})");
            Ending::Exited(s)
        } else {
            log::info!("[{label}] claude pid={pid} still running {grace:?} after stdin closed; SIGTERM to its group");
            signal(pid, self.sandboxed, Signal::Term);
            if let Some(s) = self.wait_for(grace) {
                log::info!("[{label}] claude pid={pid} ended by SIGTERM ({s})");
                Ending::Terminated(s)
            } else {
                log::warn!("[{label}] claude pid={pid} ignored SIGTERM; SIGKILL to its group");
                self.kill_group_and_reap()
            }
        };
        self.sweep_group(label);
        self.ended = Some(ending);
        self.join_readers();
        ending
    }

    /// End the child and its group now (SIGTERM, a short wait, SIGKILL), without the
    /// stdin step: for an interrupt the child did not honour. Blocks for up to
    /// [`KILL_GRACE`] and a little more.
    fn kill(&mut self, label: &str) -> Ending {
        if let Some(e) = self.ended {
            self.sweep_group(label);
            return e;
        }
        let pid = self.pid;
        self.events = crossbeam_channel::never();
        signal(pid, self.sandboxed, Signal::Term);
        let ending = match self.wait_for(KILL_GRACE) {
            Some(s) => Ending::Terminated(s),
            None => self.kill_group_and_reap(),
        };
        log::info!("[{label}] claude pid={pid} ended: {ending:?}");
        self.sweep_group(label);
        self.ended = Some(ending);
        self.join_readers();
        ending
    }

    fn kill_group_and_reap(&mut self) -> Ending {
        signal(self.pid, self.sandboxed, Signal::Kill);
        let _ = self.proc.kill();
        match self.proc.wait() {
            Ok(s) => Ending::Killed(s),
            // Already reaped: report what try_wait saw, or a generic kill.
            Err(_) => self.ended.unwrap_or(Ending::Killed(
                std::os::unix::process::ExitStatusExt::from_raw(9),
            )),
        }
    }

    /// Kill what is left of the process group once its leader is gone.
    fn sweep_group(&self, label: &str) {
        if sys::group_exists(self.pid) {
            log::info!(
                "[{label}] processes left in group {} after claude exited; SIGKILL",
                self.pid
            );
            let _ = sys::signal_group(self.pid, Signal::Kill);
        }
    }

    /// Wait briefly for the pipe threads; they end at EOF, which follows the exit of
    /// every process holding the pipes.
    fn join_readers(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        for h in self.readers.drain(..) {
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Child {
    /// The last line of defence: a child nobody stopped is killed with its group.
    fn drop(&mut self) {
        if self.ended.is_none() {
            log::warn!(
                "claude pid={} dropped while running; killing its group",
                self.pid
            );
            self.kill("drop");
        }
    }
}

/// Send `sig` to the process group of child `pid`. For a sandboxed child (`pid` is the
/// outer bwrap, alone in its group) the sandbox's own group, led by its init, gets it
/// too; SIGTERM goes to that group only, so claude inside can finish while the outer
/// bwrap waits for it (sandbox.rs explains why). Before the init exists, or once it is
/// gone, the outer bwrap's group gets SIGTERM: its end kills the sandbox.
fn signal(pid: u32, sandboxed: bool, sig: Signal) {
    if sandboxed {
        if let Some(init) = crate::sandbox::init_of(pid) {
            let _ = sys::signal_group(init, sig);
            if sig == Signal::Term {
                return;
            }
        }
    }
    let _ = sys::signal_group(pid, sig);
}

/// Start `cmd` from the one thread that starts every child. PR_SET_PDEATHSIG (see
/// `sys::terminate_with_parent`) fires when the *thread* that forked the child ends,
/// not the process; a child outlives the session thread that asked for it (the reaper
/// may still be stopping it), so children are forked by a thread that lasts as long
/// as the process. A spawn returns once exec has happened, so they queue only briefly.
fn spawn_from_lasting_thread(cmd: Command) -> std::io::Result<std::process::Child> {
    type Job = (Command, Sender<std::io::Result<std::process::Child>>);
    static SPAWNER: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = unbounded::<Job>();
        let started = thread::Builder::new()
            .name("spawner".into())
            .stack_size(HELPER_STACK)
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        match started {
            Ok(_) => Some(tx),
            Err(e) => {
                log::error!("cannot start the thread that starts children: {e}");
                None
            }
        }
    });
    let gone = || std::io::Error::other("the thread that starts children is gone");
    let spawner = spawner.as_ref().ok_or_else(gone)?;
    let (reply, answer) = bounded(1);
    spawner.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// How the [`Reaper`] ends a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The ladder that keeps the conversation: close stdin, wait this long, SIGTERM
    /// the group, wait as long again, SIGKILL the group.
    Graceful(Duration),
    /// SIGTERM the group, a short wait, SIGKILL: for an interrupt not honoured.
    Now,
}

/// Stops children without making anyone wait: each child handed over is stopped on a
/// thread of its own (their number is bounded by `--max-running`, since each holds
/// its place until reaped), together with a guard (its `--max-running` place) that is
/// dropped only once the child is reaped and its process group is gone. The server
/// waits for the stops still running with [`Reaper::wait`] before it returns. Cheap
/// to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Stopping>,
}

#[derive(Default)]
struct Stopping {
    count: Mutex<usize>,
    none_left: Condvar,
}

/// Counts one stop while it lives.
struct StopToken(Arc<Stopping>);

impl Drop for StopToken {
    fn drop(&mut self) {
        let mut n = lock(&self.0.count);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.0.none_left.notify_all();
        }
    }
}

impl Reaper {
    /// Stop `child` as `how` says, off the caller's thread; drop `guard` once it has
    /// been reaped and nothing is left in its process group. Returns at once.
    pub fn stop<G: Send + 'static>(&self, mut child: Child, how: Stop, guard: G, label: &str) {
        *lock(&self.state.count) += 1;
        let token = StopToken(self.state.clone());
        let pid = child.pid;
        let label = label.to_string();
        // Stop taking its output now: a child blocked on a full stdout pipe can finish.
        child.events = crossbeam_channel::never();
        let spawned = thread::Builder::new()
            .name(format!("reap-{pid}"))
            .stack_size(HELPER_STACK)
            .spawn(move || {
                match how {
                    Stop::Graceful(grace) => child.stop(grace, &label),
                    Stop::Now => child.kill(&label),
                };
                drop(child);
                drop(guard);
                drop(token);
            });
        if let Err(e) = spawned {
            // The closure (child, guard, token) was dropped with the error: the child's
            // Drop killed its group, so the graceful steps were skipped.
            log::error!("cannot start a thread to stop claude pid={pid} ({e}); it was killed");
        }
    }

    /// Wait until every stop handed over has finished, or `deadline`; the number
    /// still running then.
    pub fn wait(&self, deadline: Instant) -> usize {
        let mut n = lock(&self.state.count);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = match self.state.none_left.wait_timeout(n, left) {
                Ok((n, _)) => n,
                Err(p) => p.into_inner().0,
            };
        }
        *n
    }
}

/// `asked`: when the child was asked for; its first output tells how long it took to start.
fn read_stdout(stdout: std::process::ChildStdout, tx: &Sender<ChildEvent>, asked: Instant) {
    let mut starting = Some(asked);
    let mut buf: Vec<u8> = Vec::with_capacity(STDOUT_CHUNK);
    let mut listening = true;
    loop {
        // Read after what is already there (the start of a line not yet complete), into
        // the room left in the chunk; only a line longer than that grows the buffer.
        let start = buf.len();
        let room = if start + STDOUT_CHUNK / 16 <= STDOUT_CHUNK {
            STDOUT_CHUNK - start
        } else {
            STDOUT_CHUNK
        };
        match sys::read_append(&stdout, &mut buf, room) {
            Ok(0) => break,
            Ok(_) => {
                if let Some(asked) = starting.take() {
                    crate::metrics::child_ready(asked.elapsed());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let Some(last) = buf[start..].iter().rposition(|&b| b == b'\n') else {
            continue; // a line longer than one read: keep reading it
        };
        // Send the complete lines; keep the incomplete rest for the next read.
        let end = start + last + 1;
        let mut rest = Vec::with_capacity(STDOUT_CHUNK.max(buf.len() - end));
        rest.extend_from_slice(&buf[end..]);
        buf.truncate(end);
        let chunk = std::mem::replace(&mut buf, rest);
        if listening && tx.send(ChildEvent::Lines(chunk)).is_err() {
            listening = false; // the session let go: drain so the child never blocks on stdout
        }
    }
    if listening && !buf.is_empty() {
        let _ = tx.send(ChildEvent::Lines(buf)); // a last line without a newline
    }
}

/// After stdout's end: wait (a bounded while) for the child's exit and the end of its
/// stderr, then send [`ChildEvent::Closed`], so the session can take the exit status
/// and the whole stderr tail at once instead of waiting for them itself.
fn report_end(tx: &Sender<ChildEvent>, exit: &ExitWatch, stderr_done: &Receiver<()>) {
    let deadline = Instant::now() + EXIT_AFTER_EOF;
    exit.wait(EXIT_AFTER_EOF);
    let _ = stderr_done.recv_deadline(deadline); // disconnected: stderr has ended
    let _ = tx.send(ChildEvent::Closed);
}

fn read_stderr(
    mut stderr: std::process::ChildStderr,
    tail: Arc<Mutex<Vec<u8>>>,
    label: String,
    pid: u32,
) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(
                "[{label}] claude pid={pid} stderr: {}",
                String::from_utf8_lossy(chunk).escape_debug()
            );
        }
        if let Ok(mut t) = tail.lock() {
            t.extend_from_slice(chunk);
            if t.len() > STDERR_TAIL {
                let cut = t.len() - STDERR_TAIL;
                t.drain(..cut);
            }
        }
    }
}

fn write_stdin(mut stdin: std::process::ChildStdin, rx: Receiver<Vec<u8>>) {
    for line in rx {
        if stdin.write_all(&line).and_then(|_| stdin.flush()).is_err() {
            break; // the child closed stdin; the stdout side reports the exit
        }
    }
}
