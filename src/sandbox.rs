//! Each `claude` child in a sandbox of its own (issue 18): Debian's bubblewrap (`bwrap`)
//! runs the child in new mount, PID, IPC and UTS namespaces, where it sees the system
//! read-only (/usr, /bin, /lib*, /etc, the claude executable's install), a fresh /proc
//! of its own processes, a minimal /dev, a private /tmp, and can write only its
//! principal's state directory (`CLAUDE_CONFIG_DIR`, also its HOME) and workspace.
//! Paths are the same inside as outside, so the cwd, the state directory and the
//! conversation files mean the same to the server and the child. The network is
//! shared: the CLI must reach the API. docs/security.md ("The sandbox") is the reference.
//!
//! How stopping works with bwrap in between (`child.rs` does the signalling):
//! - The server starts `bwrap` (the *outer* bwrap) in its own process group, with the
//!   parent-death signal, as it starts any child. The outer bwrap clones the sandbox's
//!   init (pid 1 inside), which forks the command (`claude`, pid 2 inside).
//! - `--new-session`: the init calls `setsid()` before forking claude, so everything in
//!   the sandbox is in a session and process group led by the init (a child in the
//!   server's terminal session could otherwise push keystrokes into it, TIOCSTI). The
//!   server's group holds the outer bwrap only; [`init_of`] finds the init.
//! - SIGTERM goes to the init's group: claude and its tools get it; the init ignores
//!   it (a namespace's pid 1 gets only the signals it handles), waits for them, exits
//!   with claude's status, and the outer bwrap exits with that status. The outer bwrap
//!   is not sent SIGTERM, which would end it at once and, through `--die-with-parent`,
//!   SIGKILL the sandbox before claude could finish.
//! - SIGKILL goes to both groups. When the init dies the kernel kills every process
//!   in its PID namespace: nothing inside can outlive it.
//! - `--die-with-parent`: the init gets SIGKILL when the outer bwrap dies; the outer
//!   bwrap gets SIGTERM when the server dies (`sys::terminate_with_parent`, kept over
//!   exec because bwrap is not setuid here). So a server killed with SIGKILL leaves
//!   nothing of a sandbox behind.
//! - The outer bwrap exits only after the init, which waits for every process in the
//!   sandbox: the child's exit, which the reaper waits for, means the sandbox is empty.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;

/// Top-level system paths a child sees read-only (those that exist; a symlink, as
/// `/bin -> usr/bin` on a merged-/usr system, is made the same symlink inside).
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// How long the start-up probe (`bwrap … true`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::config::SandboxMode as Mode;

/// What every sandbox of one server shares, found once at start-up.
#[derive(Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// The `bwrap` executable.
    pub bwrap: PathBuf,
    /// Host directories bound read-only at the same path.
    read_only: Vec<PathBuf>,
    /// Symlinks made inside: (target, path).
    links: Vec<(PathBuf, PathBuf)>,
    /// Files hidden inside (bound over with /dev/null): the secret files.
    masked: Vec<PathBuf>,
    /// The claude executable as run inside: its real path, or the name as given when
    /// it could not be found (bwrap then looks it up on the child's PATH).
    claude: PathBuf,
}

/// One child's sandbox: the shared part and what that child may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    sandbox: Arc<Sandbox>,
    /// The principal's state directory: writable, and the child's HOME.
    home: PathBuf,
    /// The principal's workspaces: writable.
    workspaces: Vec<PathBuf>,
}

impl Jail {
    /// A sandbox writable at `state_dir` (also HOME) and `workspaces` (which must exist).
    pub fn new(sandbox: Arc<Sandbox>, state_dir: &Path, workspaces: &[PathBuf]) -> Jail {
        Jail {
            sandbox,
            home: state_dir.to_path_buf(),
            workspaces: workspaces.to_vec(),
        }
    }

    /// The bwrap program and its argv, which run `args` in `cwd` inside the sandbox.
    /// The environment is the child's own (bwrap passes on what it is given), with
    /// HOME and TMPDIR pointing inside.
    pub fn command(&self, args: &[String], cwd: Option<&Path>) -> (PathBuf, Vec<OsString>) {
        let s = &self.sandbox;
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |parts: &[&std::ffi::OsStr]| a.extend(parts.iter().map(|p| p.into()));
        // A private /tmp first: what is bound below may live under /tmp (a checkout
        // in /tmp holding the claude install, a state directory or workspace there),
        // and a later mount shows through an earlier one, not the other way round.
        push(&["--tmpfs".as_ref(), "/tmp".as_ref()]);
        for dir in &s.read_only {
            push(&["--ro-bind".as_ref(), dir.as_ref(), dir.as_ref()]);
        }
        for (target, at) in &s.links {
            push(&["--symlink".as_ref(), target.as_ref(), at.as_ref()]);
        }
        for file in &s.masked {
            push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), file.as_ref()]);
        }
        push(&["--proc".as_ref(), "/proc".as_ref()]);
        push(&["--dev".as_ref(), "/dev".as_ref()]);
        for dir in std::iter::once(&self.home).chain(&self.workspaces) {
            push(&["--bind".as_ref(), dir.as_ref(), dir.as_ref()]);
        }
        push(&["--setenv".as_ref(), "HOME".as_ref(), self.home.as_ref()]);
        push(&["--setenv".as_ref(), "TMPDIR".as_ref(), "/tmp".as_ref()]);
        if let Some(cwd) = cwd {
            push(&["--chdir".as_ref(), cwd.as_ref()]);
        }
        for flag in [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--new-session",
            "--die-with-parent",
            // Run as root, bwrap keeps every capability unless told (with them a child
            // could mount the host's disk again).
            "--cap-drop",
            "ALL",
            "--",
        ] {
            push(&[flag.as_ref()]);
        }
        a.push(s.claude.clone().into());
        a.extend(args.iter().map(OsString::from));
        (s.bwrap.clone(), a)
    }
}

/// The sandbox this server's children get: `None` when it is off (`--sandbox off`, or
/// `auto` without authentication); an error, one line naming the fix, when it is
/// asked for (or implied by `auto`) and bwrap is missing or does not work here.
pub fn prepare(config: &Config) -> Result<Option<Arc<Sandbox>>, String> {
    let auth = crate::auth::enabled(config);
    match config.sandbox {
        Mode::Off => return Ok(None),
        Mode::Auto if !auth => return Ok(None),
        _ => {}
    }
    let why = if config.sandbox == Mode::Auto {
        "authentication is on, so --sandbox auto runs every claude child in a bubblewrap sandbox"
    } else {
        "--sandbox bubblewrap runs every claude child in a bubblewrap sandbox"
    };
    let refuse = |problem: String| {
        format!(
            "{why}, but {problem}: install the bubblewrap package (e.g. apt-get install \
             bubblewrap), point --bwrap at it, or pass --sandbox off to run children \
             unsandboxed"
        )
    };
    let bwrap = find_program(&config.bwrap)
        .ok_or_else(|| refuse(format!("{} was not found", config.bwrap.display())))?;
    let claude = find_program(&config.claude_bin)
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| config.claude_bin.clone());
    let mut sandbox = Sandbox {
        bwrap,
        read_only: Vec::new(),
        links: Vec::new(),
        masked: Vec::new(),
        claude: claude.clone(),
    };
    for path in SYSTEM.iter().map(Path::new) {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    sandbox.links.push((target, path.to_path_buf()));
                }
            }
            Ok(m) if m.is_dir() => sandbox.read_only.push(path.to_path_buf()),
            _ => {}
        }
    }
    if let Some(dir) = install_dir(&claude) {
        if !sandbox.read_only.iter().any(|r| dir.starts_with(r)) {
            sandbox.read_only.push(dir);
        }
    }
    // A secret file inside what children see (say /etc/claude-ws/jwt-secret) is hidden.
    for file in &config.secret_files {
        let real = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        if sandbox.read_only.iter().any(|r| real.starts_with(r)) {
            sandbox.masked.push(real);
        }
    }
    probe(&sandbox).map_err(|e| {
        refuse(format!(
            "{} does not work here ({e})",
            sandbox.bwrap.display()
        ))
    })?;
    Ok(Some(Arc::new(sandbox)))
}

/// Say at start-up how children are kept apart (or that they are not).
pub fn announce(config: &Config, sandbox: Option<&Sandbox>) {
    let roots: Vec<String> = config
        .workspace_roots
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    match sandbox {
        Some(s) => {
            log::info!(
                "sandbox: each claude child runs in bubblewrap ({}), seeing the system \
                 read-only and writing only its principal's state directory and workspace; \
                 the network is not isolated",
                s.bwrap.display()
            );
            if config.shared_workspace {
                log::warn!(
                    "--shared-workspace: every principal works in the same workspace ({}) \
                     and can read and change what the others put there",
                    roots.join(", ")
                );
            } else {
                log::info!(
                    "each principal works in a workspace of its own under {}",
                    roots.join(", ")
                );
            }
        }
        None if crate::auth::enabled(config) => log::warn!(
            "authentication is on but --sandbox is off: every user's agent runs with this \
             server's privileges and can read other users' conversations and files, this \
             server's secrets, and signal its processes"
        ),
        None if config.shared_workspace => log::info!(
            "--shared-workspace: without the sandbox every principal shares the workspace \
             roots anyway ({})",
            roots.join(", ")
        ),
        None => {}
    }
}

/// The directory to bind for the claude executable at `real` (its real path): the
/// package, when the executable is in its `bin/` (npm's layout, which keeps vendored
/// helpers such as ripgrep beside it), else the executable's own directory.
fn install_dir(real: &Path) -> Option<PathBuf> {
    let dir = real.parent()?;
    if !real.is_absolute() {
        return None;
    }
    match (dir.file_name(), dir.parent()) {
        (Some(name), Some(package)) if name == "bin" && package.join("package.json").is_file() => {
            Some(package.to_path_buf())
        }
        _ => Some(dir.to_path_buf()),
    }
}

/// `name` as given when it has a `/`, else the first executable of that name on the
/// server's PATH.
pub fn find_program(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.components().count() > 1 || name.is_absolute() {
        return runnable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| runnable(p))
}

/// Run `true` in a sandbox like the children's (without their writable directories):
/// bwrap may be installed and still not work (no user namespaces for an unprivileged
/// user, a container without the capabilities). Its error is the last line it wrote.
fn probe(sandbox: &Sandbox) -> Result<(), String> {
    let truth = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no /usr/bin/true to try it with")?;
    let jail = Jail::new(
        Arc::new(Sandbox {
            claude: PathBuf::from(truth),
            read_only: sandbox.read_only.clone(),
            links: sandbox.links.clone(),
            masked: sandbox.masked.clone(),
            bwrap: sandbox.bwrap.clone(),
        }),
        Path::new("/tmp"),
        &[],
    );
    let (program, args) = jail.command(&[], None);
    let mut proc = Command::new(program)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match proc.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = proc.kill();
                let _ = proc.wait();
                return Err(format!("no answer in {PROBE_TIMEOUT:?}"));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = proc.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    Err(err
        .lines()
        .last()
        .map(str::to_string)
        .unwrap_or_else(|| status.to_string()))
}

/// The host pid of the sandbox's init (bwrap's pid 1 inside), the one child of the
/// outer bwrap `outer`: it leads the process group of everything in the sandbox.
/// `None` before bwrap has cloned it or after it is gone.
pub fn init_of(outer: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Arc<Sandbox> {
        Arc::new(Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            read_only: vec!["/usr".into(), "/etc".into(), "/opt/claude".into()],
            links: vec![("usr/bin".into(), "/bin".into())],
            masked: vec!["/etc/claude-ws/jwt-secret".into()],
            claude: "/opt/claude/bin/claude".into(),
        })
    }

    fn pairs(args: &[OsString], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_binds_the_system_read_only_and_the_principal_writable() {
        let jail = Jail::new(
            sandbox(),
            Path::new("/tmp/state/ab"),
            &["/srv/work/ab".into()],
        );
        let (program, args) = jail.command(
            &["-p".into(), "--verbose".into()],
            Some(Path::new("/srv/work/ab/x")),
        );
        assert_eq!(program, PathBuf::from("/usr/bin/bwrap"));
        assert_eq!(
            pairs(&args, "--ro-bind"),
            ["/usr", "/etc", "/opt/claude", "/dev/null"]
        );
        assert_eq!(pairs(&args, "--bind"), ["/tmp/state/ab", "/srv/work/ab"]);
        assert_eq!(pairs(&args, "--chdir"), ["/srv/work/ab/x"]);
        assert_eq!(pairs(&args, "--setenv"), ["HOME", "TMPDIR"]);
        for flag in [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--new-session",
            "--die-with-parent",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag}");
        }
        assert!(!args
            .iter()
            .any(|a| a == "--unshare-net" || a == "--unshare-all"));
        // The writable binds come after the private /tmp, or /tmp would hide them.
        let pos = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert!(pos("/tmp") < pos("/tmp/state/ab"));
        // The secret file is masked after /etc is bound.
        assert!(pos("/etc") < pos("/etc/claude-ws/jwt-secret"));
        let dash = pos("--");
        assert_eq!(args[dash + 1], "/opt/claude/bin/claude");
        assert_eq!(&args[dash + 2..], ["-p", "--verbose"]);
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [Mode::Auto, Mode::Bubblewrap, Mode::Off] {
            assert_eq!(Mode::parse(m.as_str()), Ok(m));
        }
        assert!(Mode::parse("on").is_err());
    }

    #[test]
    fn programs_are_found_on_path_or_as_given() {
        assert_eq!(
            find_program(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(find_program(Path::new("sh")).is_some());
        assert_eq!(find_program(Path::new("/no/such/bwrap")), None);
        assert_eq!(find_program(Path::new("no-such-program-here")), None);
    }

    #[test]
    fn an_npm_install_binds_its_package() {
        let dir = std::env::temp_dir().join(format!("claude-ws-sandbox-{}", std::process::id()));
        let bin = dir.join("pkg/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(dir.join("pkg/package.json"), "{}").unwrap();
        assert_eq!(install_dir(&bin.join("claude.exe")), Some(dir.join("pkg")));
        assert_eq!(install_dir(&dir.join("claude")), Some(dir.clone()));
        assert_eq!(install_dir(Path::new("claude")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
