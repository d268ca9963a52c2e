//! The server's settings: `Config`, its defaults (written once, in `Default`), and how
//! flags and environment variables become one.
//!
//! Parsing is two stages, as in ripgrep: raw strings are gathered per flag (environment
//! first, then the command line, which wins), then each is converted and checked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::sandbox::Mode as SandboxMode;

/// Everything the server can be told. Build one with `Config::default()` and change
/// fields, or with [`Config::from_args`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Address both listeners bind. Defaults to `127.0.0.1`: this server runs an agent
    /// that executes tools, so it is reachable from other hosts only when asked.
    pub host: String,
    /// WebSocket port; 0 picks a free one. Defaults to 8000.
    pub port: u16,
    /// Side port for `/health` and `/sessions`; 0 picks a free one; must differ from
    /// `port` unless both are 0. Defaults to 8001.
    pub http_port: u16,
    /// The `claude` executable. Defaults to `claude`, looked up on PATH.
    pub claude_bin: PathBuf,
    /// Most concurrent sessions (connections), 1 to 100,000. Defaults to 100.
    pub max_sessions: usize,
    /// A session with no query running and no client message for this long is closed.
    /// Above zero and at most a year, like every duration here. Defaults to 30 minutes.
    pub session_timeout: Duration,
    /// How often the server sends a WebSocket ping; a peer silent for two intervals is
    /// considered gone. Defaults to 30 s.
    pub ping_interval: Duration,
    /// Largest client message accepted; larger closes the connection with 1009.
    /// 1 KiB to 1 GiB. Defaults to 1 MiB.
    pub max_message_bytes: usize,
    /// How long an interrupt may take before the child's process group is ended.
    /// Defaults to 2 s.
    pub interrupt_grace: Duration,
    /// When stopping a child: how long after closing its stdin before SIGTERM, and again
    /// before SIGKILL. Defaults to 2 s.
    pub stop_grace: Duration,
    /// A client that has not read its pending output for this long is disconnected.
    /// Defaults to 30 s.
    pub stall_timeout: Duration,
    /// How long a client may take to complete the WebSocket handshake. Defaults to 10 s.
    pub handshake_timeout: Duration,
    /// Directories a client's `cwd` must be inside (after resolving symlinks). The first
    /// is where children start when no `cwd` is given. Defaults to the directory the
    /// server started in.
    pub workspace_roots: Vec<PathBuf>,
    /// Permission modes a client may ask for. Defaults to default, acceptEdits, plan.
    pub allowed_permission_modes: Vec<String>,
    /// Tools always disallowed, on top of the client's own list. Defaults to none.
    pub disallowed_tools: Vec<String>,
    /// Extra environment variables passed to children besides the built-in allow-list.
    /// Defaults to none.
    pub pass_env: Vec<String>,
    /// A static bearer token clients must present. Defaults to none (with no JWT secret
    /// either, authentication is off).
    pub auth_token: Option<String>,
    /// HS256 secret for JWT bearer tokens (`exp` checked, `sub` shown as the user).
    /// Defaults to none.
    pub jwt_secret: Option<String>,
    /// Origins allowed besides the server's own (`scheme://host[:port]`, or `*` for
    /// any). Defaults to none.
    pub allowed_origins: Vec<String>,
    /// Queries allowed per session, and per principal (the authenticated user, else the
    /// client address), in a window: (count, window), count 1 to 1,000,000. Defaults to
    /// 60 per 60 s.
    pub rate_limit: (u32, Duration),
    /// Most `claude` children alive at once across the server (each ~300 MB). A query
    /// that needs a child beyond this waits (`query_queued`) while the least recently
    /// used idle child is stopped, or until a place frees. 1 to 100,000. Defaults to 16.
    pub max_running: usize,
    /// `claude` children kept started ahead of need, with the default options, so a new
    /// session's first answer comes in ~0.15 s instead of ~1 s. Each holds a
    /// `max_running` place (~300 MB) and is the first to give it up when a query waits
    /// for one. Not used with per-principal state directories (`state_dir`, or
    /// authentication). 0 to `max_running`. Defaults to 1: one process's memory buys
    /// the fast first answer for sessions arriving one at a time, the common case.
    pub warm_children: usize,
    /// Most sessions one principal (the authenticated user, else the client address)
    /// may hold, 1 to 100,000. Defaults to 64.
    pub max_sessions_per_peer: usize,
    /// Longest prompt or input text accepted, in bytes, 1 to 1 GiB. Defaults to 256 KiB.
    pub max_prompt_bytes: usize,
    /// A session's child idle (no query) for this long is stopped, giving its place
    /// among `max_running` back; the next query restarts it with `--resume`. `None`
    /// keeps children as long as their session (`Some(ZERO)` is refused: say `None`).
    /// Defaults to 10 minutes.
    pub child_idle: Option<Duration>,
    /// Whether queries ask the client before a tool runs (`permission_request`) unless
    /// their `permission_prompts` option says otherwise. Defaults to false: clients of
    /// the original protocol do not know the message.
    pub permission_prompts: bool,
    /// A permission prompt the client has not answered in this long is denied.
    /// Defaults to 120 s.
    pub permission_timeout: Duration,
    /// A call of a client-defined tool not answered in this long gets an error result.
    /// Defaults to 120 s.
    pub tool_timeout: Duration,
    /// Where client-defined tools are also stored and listed (`POST`/`GET {url}/tools`),
    /// plain `http://` only. Defaults to none.
    pub tool_registry_url: Option<String>,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers name the client's
    /// address (for limits without authentication). Defaults to none: the headers are
    /// ignored.
    pub trusted_proxies: Vec<crate::proxy::Cidr>,
    /// A query waiting this long for a `claude` place gets `server_busy`. Defaults to
    /// 120 s.
    pub queue_timeout: Duration,
    /// A session whose client went away without ending it waits this long for the
    /// client to reattach (0: it ends at once). Defaults to 60 s.
    pub reconnect_grace: Duration,
    /// Most bytes of recent messages a session keeps to send again to a client that
    /// reattaches. Defaults to 1 MiB.
    pub replay_buffer_bytes: usize,
    /// Where each principal's CLI state (conversations) lives, one directory each
    /// (`CLAUDE_CONFIG_DIR`). Defaults to none: the CLI's own location, shared by all
    /// (with authentication on, `$HOME/.local/state/claude-ws` is used instead).
    pub state_dir: Option<PathBuf>,
    /// An operator token: `/sessions` with it lists every principal's sessions.
    /// Defaults to none.
    pub admin_token: Option<String>,
    /// On SIGTERM or `POST /drain`, running queries may finish for this long before
    /// their clients are closed with 1012 (0: close them at once). Defaults to 30 s.
    pub drain_timeout: Duration,
    /// This instance's name behind a balancer: 1 to 16 lowercase hex digits, put in
    /// front of every session id it makes (`<id>-<uuid>`), so the balancer can route a
    /// reattach to the instance that holds the session (see `deploy/nginx.conf`).
    /// Defaults to none: session ids are plain UUIDs.
    pub instance_id: Option<String>,
    /// Whether each child runs in a bubblewrap sandbox (`sandbox.rs`): `Auto` is
    /// bubblewrap when authentication is on, off otherwise. Defaults to `Auto`.
    pub sandbox: SandboxMode,
    /// The `bwrap` executable for the sandbox. Defaults to `bwrap`, looked up on PATH.
    pub bwrap: PathBuf,
    /// With the sandbox on, one workspace (the roots themselves) for every principal
    /// instead of one each under every root. Defaults to false.
    pub shared_workspace: bool,
    /// Files the secrets were read from (`--jwt-secret-file` …): hidden from
    /// sandboxed children. Defaults to none.
    pub secret_files: Vec<PathBuf>,
    /// How the `claude-ws` command writes its log lines. An embedder sets up its own
    /// logger; the server does not read this. Defaults to [`LogFormat::Text`].
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `[TIME LEVEL TARGET] message`, env_logger's own format.
    Text,
    /// One JSON object per line: `time`, `level`, `target`, `message`.
    Json,
}

/// Every permission mode the CLI knows.
pub const PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
    "auto",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8000,
            http_port: 8001,
            claude_bin: PathBuf::from("claude"),
            max_sessions: 100,
            session_timeout: Duration::from_secs(30 * 60),
            ping_interval: Duration::from_secs(30),
            max_message_bytes: 1 << 20,
            interrupt_grace: Duration::from_secs(2),
            stop_grace: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            workspace_roots: std::env::current_dir().into_iter().collect(),
            allowed_permission_modes: vec!["default".into(), "acceptEdits".into(), "plan".into()],
            disallowed_tools: Vec::new(),
            pass_env: Vec::new(),
            auth_token: None,
            jwt_secret: None,
            allowed_origins: Vec::new(),
            rate_limit: (60, Duration::from_secs(60)),
            max_running: 16,
            warm_children: 1,
            max_sessions_per_peer: 64,
            max_prompt_bytes: 256 * 1024,
            child_idle: Some(Duration::from_secs(600)),
            permission_prompts: false,
            permission_timeout: Duration::from_secs(120),
            tool_timeout: Duration::from_secs(120),
            tool_registry_url: None,
            trusted_proxies: Vec::new(),
            queue_timeout: Duration::from_secs(120),
            reconnect_grace: Duration::from_secs(60),
            replay_buffer_bytes: 1 << 20,
            state_dir: None,
            admin_token: None,
            drain_timeout: Duration::from_secs(30),
            instance_id: None,
            log_format: LogFormat::Text,
            sandbox: SandboxMode::Auto,
            bwrap: PathBuf::from("bwrap"),
            shared_workspace: false,
            secret_files: Vec::new(),
        }
    }
}

/// One flag: its name, environment variable, value name and help line. A `list` flag
/// may be repeated and takes comma-separated values; given on the command line it
/// replaces the environment's list.
struct Flag {
    name: &'static str,
    env: &'static str,
    value: &'static str,
    list: bool,
    help: &'static str,
}

const fn flag(
    name: &'static str,
    env: &'static str,
    value: &'static str,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        env,
        value,
        list: false,
        help,
    }
}

const fn list(
    name: &'static str,
    env: &'static str,
    value: &'static str,
    help: &'static str,
) -> Flag {
    Flag {
        list: true,
        ..flag(name, env, value, help)
    }
}

const FLAGS: &[Flag] = &[
    flag(
        "host",
        "WEBSOCKET_HOST",
        "ADDR",
        "address to listen on (0.0.0.0 exposes the agent to the network)",
    ),
    flag(
        "port",
        "WEBSOCKET_PORT",
        "PORT",
        "WebSocket port (0 = any free port)",
    ),
    flag(
        "http-port",
        "HTTP_PORT",
        "PORT",
        "side port for /health and /sessions (0 = any free port)",
    ),
    flag("claude-bin", "CLAUDE_BIN", "PATH", "the claude executable"),
    flag(
        "max-sessions",
        "MAX_SESSIONS",
        "N",
        "most concurrent sessions; more are refused with HTTP 503",
    ),
    flag(
        "session-timeout-minutes",
        "SESSION_TIMEOUT_MINUTES",
        "MIN",
        "close a session idle this long (fractions allowed)",
    ),
    flag(
        "auth-token",
        "CLAUDE_WS_AUTH_TOKEN",
        "TOKEN",
        "require this bearer token (header, ?token= or subprotocol)",
    ),
    flag(
        "jwt-secret",
        "CLAUDE_WS_JWT_SECRET",
        "SECRET",
        "accept HS256 JWTs signed with this secret (exp checked)",
    ),
    list(
        "allowed-origins",
        "ALLOWED_ORIGINS",
        "LIST",
        "browser origins allowed besides the server's own",
    ),
    list(
        "workspace-root",
        "WORKSPACE_ROOTS",
        "DIR",
        "directories a client's cwd must be inside (repeatable)",
    ),
    list(
        "allowed-permission-modes",
        "ALLOWED_PERMISSION_MODES",
        "LIST",
        "permission modes clients may use",
    ),
    list(
        "disallowed-tools",
        "DISALLOWED_TOOLS",
        "LIST",
        "tools always disallowed, on top of the client's list",
    ),
    list(
        "pass-env",
        "PASS_ENV",
        "NAME",
        "extra environment variable passed to children (repeatable)",
    ),
    flag(
        "rate-limit",
        "RATE_LIMIT",
        "N/SECS",
        "queries allowed per session, and per user (else per client address), in a window",
    ),
    flag(
        "max-running",
        "MAX_RUNNING",
        "N",
        "most claude children alive at once; a query needing one more waits its turn",
    ),
    flag(
        "warm-children",
        "WARM_CHILDREN",
        "N",
        "claude children started ahead of need for new sessions' first queries (0 = none)",
    ),
    flag(
        "max-sessions-per-peer",
        "MAX_SESSIONS_PER_PEER",
        "N",
        "most sessions one user (else one client address) may hold",
    ),
    flag(
        "max-message-bytes",
        "MAX_MESSAGE_BYTES",
        "BYTES",
        "largest client message; larger closes with 1009",
    ),
    flag(
        "max-prompt-bytes",
        "MAX_PROMPT_BYTES",
        "BYTES",
        "longest prompt or input text",
    ),
    flag(
        "ping-interval-secs",
        "PING_INTERVAL_SECS",
        "SECS",
        "WebSocket ping interval; a peer silent for two is dropped",
    ),
    flag(
        "interrupt-grace-secs",
        "INTERRUPT_GRACE_SECS",
        "SECS",
        "an interrupt not honoured this fast ends the child's process group",
    ),
    flag(
        "stop-grace-secs",
        "STOP_GRACE_SECS",
        "SECS",
        "wait between closing a child's stdin, SIGTERM and SIGKILL",
    ),
    flag(
        "stall-timeout-secs",
        "STALL_TIMEOUT_SECS",
        "SECS",
        "disconnect a client whose unread output stays above 256 KiB this long",
    ),
    flag(
        "child-idle-secs",
        "CHILD_IDLE_SECS",
        "SECS",
        "stop a session's claude idle this long (0 = never); the next query resumes it",
    ),
    flag(
        "handshake-timeout-secs",
        "HANDSHAKE_TIMEOUT_SECS",
        "SECS",
        "time allowed for the WebSocket handshake",
    ),
    flag(
        "permission-prompts",
        "PERMISSION_PROMPTS",
        "BOOL",
        "ask clients before tools run unless a query's permission_prompts option says no",
    ),
    flag(
        "permission-timeout-secs",
        "PERMISSION_TIMEOUT_SECS",
        "SECS",
        "deny a permission prompt the client has not answered this long",
    ),
    flag(
        "tool-timeout-secs",
        "TOOL_TIMEOUT_SECS",
        "SECS",
        "give a client-defined tool call not answered this long an error result",
    ),
    list(
        "trusted-proxies",
        "TRUSTED_PROXIES",
        "CIDR",
        "proxies whose Forwarded / X-Forwarded-For name the client (repeatable)",
    ),
    flag(
        "queue-timeout-secs",
        "QUEUE_TIMEOUT_SECS",
        "SECS",
        "a query waiting this long for a claude place gets server_busy",
    ),
    flag(
        "reconnect-grace-secs",
        "RECONNECT_GRACE_SECS",
        "SECS",
        "keep a dropped client's session this long for it to reattach (0 = end at once)",
    ),
    flag(
        "replay-buffer-bytes",
        "REPLAY_BUFFER_BYTES",
        "BYTES",
        "recent messages a session keeps for a client that reattaches",
    ),
    flag(
        "state-dir",
        "STATE_DIR",
        "DIR",
        "one CLI state directory per principal under DIR (conversations kept apart)",
    ),
    flag(
        "admin-token",
        "CLAUDE_WS_ADMIN_TOKEN",
        "TOKEN",
        "operator token: /sessions with it lists every principal's sessions",
    ),
    flag(
        "drain-timeout-secs",
        "DRAIN_TIMEOUT_SECS",
        "SECS",
        "on SIGTERM or POST /drain, let running queries finish this long (0 = close at once)",
    ),
    flag(
        "instance-id",
        "INSTANCE_ID",
        "HEX",
        "prefix of this instance's session ids, for a balancer's sticky routing",
    ),
    flag(
        "tool-registry-url",
        "TOOL_REGISTRY_URL",
        "URL",
        "http:// registry where client-defined tools are also stored and listed",
    ),
    flag(
        "jwt-secret-file",
        "CLAUDE_WS_JWT_SECRET_FILE",
        "FILE",
        "read the JWT secret from FILE (not on the command line, where /proc shows it)",
    ),
    flag(
        "auth-token-file",
        "CLAUDE_WS_AUTH_TOKEN_FILE",
        "FILE",
        "read the bearer token from FILE",
    ),
    flag(
        "admin-token-file",
        "CLAUDE_WS_ADMIN_TOKEN_FILE",
        "FILE",
        "read the admin token from FILE",
    ),
    flag(
        "sandbox",
        "SANDBOX",
        "auto|bubblewrap|off",
        "run each claude child in a bubblewrap sandbox (auto: when authentication is on)",
    ),
    flag(
        "bwrap",
        "CLAUDE_WS_BWRAP",
        "PATH",
        "the bubblewrap executable for --sandbox",
    ),
    flag(
        "shared-workspace",
        "SHARED_WORKSPACE",
        "BOOL",
        "with the sandbox, one workspace for everybody instead of one per principal",
    ),
    flag(
        "log-format",
        "LOG_FORMAT",
        "text|json",
        "log lines as text, or as one JSON object per line for log shippers",
    ),
];

/// Most sessions, running children or sessions per peer: far beyond what one machine
/// serves (each session is a thread), and small enough that nothing computed from it
/// (file-descriptor counts, connection caps) can overflow.
pub const MAX_COUNT: usize = 100_000;
/// Largest byte limit (messages, prompts): 1 GiB.
pub const MAX_BYTES: usize = 1 << 30;
/// Longest duration of any setting: a year. Deadlines are `Instant::now() + d`, which
/// panics on overflow; a year is far from that and longer than any useful timeout.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Most queries a rate-limit window may allow.
const MAX_RATE: u32 = 1_000_000;

/// The values a numeric setting accepts: one table for the flags' parsing and for
/// [`Config::validate`], so a flag and an embedder meet the same bounds.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// A whole number in `min..=max`.
    Count { min: u64, max: u64 },
    /// A duration given in units of `unit` seconds (named `unit_name`), above zero, or
    /// zero meaning off when `zero_is_off`; at most [`MAX_DURATION`].
    Span {
        unit: u64,
        unit_name: &'static str,
        zero_is_off: bool,
    },
}

const SECONDS: Rule = Rule::Span {
    unit: 1,
    unit_name: "seconds",
    zero_is_off: false,
};

/// The rule of each numeric flag (`rate-limit` has two parts, see [`RATE_COUNT`]).
fn rule(name: &str) -> Rule {
    let count = |min: usize, max: usize| Rule::Count {
        min: min as u64,
        max: max as u64,
    };
    match name {
        "port" | "http-port" => count(0, u16::MAX as usize),
        "max-sessions" | "max-running" | "max-sessions-per-peer" => count(1, MAX_COUNT),
        "warm-children" => count(0, MAX_COUNT),
        "max-message-bytes" => count(1024, MAX_BYTES),
        "max-prompt-bytes" => count(1, MAX_BYTES),
        "session-timeout-minutes" => Rule::Span {
            unit: 60,
            unit_name: "minutes",
            zero_is_off: false,
        },
        "child-idle-secs" | "reconnect-grace-secs" | "drain-timeout-secs" => Rule::Span {
            unit: 1,
            unit_name: "seconds",
            zero_is_off: true,
        },
        "replay-buffer-bytes" => count(0, MAX_BYTES),
        _ => SECONDS,
    }
}

/// The count half of `--rate-limit N/SECS`.
const RATE_COUNT: Rule = Rule::Count {
    min: 1,
    max: MAX_RATE as u64,
};

impl Rule {
    /// What is accepted, for error messages: "a whole number from 1 to 100000".
    fn accepted(self) -> String {
        match self {
            Rule::Count { min, max } => format!("a whole number from {min} to {max}"),
            Rule::Span {
                unit,
                unit_name,
                zero_is_off,
            } => {
                let most = MAX_DURATION.as_secs() / unit;
                if zero_is_off {
                    format!("a number of {unit_name} from 0 (off) to {most}, fractions allowed")
                } else {
                    format!("a number of {unit_name} above 0, at most {most}, fractions allowed")
                }
            }
        }
    }

    fn expected(self) -> String {
        format!("expected {}", self.accepted())
    }

    fn check_count(self, n: u64) -> Result<u64, String> {
        match self {
            Rule::Count { min, max } if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.expected()),
        }
    }

    /// A duration is checked as given: `None` is "off".
    fn check_span(self, d: Option<Duration>) -> Result<Option<Duration>, String> {
        let Rule::Span { zero_is_off, .. } = self else {
            return Err(self.expected());
        };
        match d {
            None if zero_is_off => Ok(None),
            Some(d) if d <= MAX_DURATION && !d.is_zero() => Ok(Some(d)),
            _ => Err(self.expected()),
        }
    }

    /// Parse a whole number: anything else, and anything out of range, gets the
    /// accepted form rather than the parser's words.
    fn count(self, v: &str) -> Result<u64, String> {
        let n = v.trim().parse::<u64>().map_err(|_| self.expected())?;
        self.check_count(n)
    }

    /// Parse a duration in this rule's unit; zero is `None` (off) where allowed.
    fn span(self, v: &str) -> Result<Option<Duration>, String> {
        let Rule::Span { unit, .. } = self else {
            return Err(self.expected());
        };
        let n: f64 = v.trim().parse().map_err(|_| self.expected())?;
        let secs = n * unit as f64;
        if !secs.is_finite() || secs < 0.0 || secs > MAX_DURATION.as_secs_f64() {
            return Err(self.expected());
        }
        let d = Duration::from_secs_f64(secs);
        self.check_span(Some(d).filter(|d| !d.is_zero()))
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    Help(String),
    Version(String),
}

/// A flag or environment value that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Build a config from command-line arguments (without the program name) and an
    /// environment lookup. Flags beat environment variables.
    pub fn from_args<I, F>(args: I, env: F) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = String>,
        F: Fn(&str) -> Option<String>,
    {
        // name -> (values, where they came from)
        let mut raw: HashMap<&'static str, (Vec<String>, String)> = HashMap::new();
        for flag in FLAGS {
            if let Some(v) = env(flag.env) {
                raw.insert(flag.name, (vec![v], flag.env.to_string()));
            }
        }
        let mut on_command_line: Vec<&'static str> = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(Invocation::Help(help())),
                "-V" | "--version" => {
                    return Ok(Invocation::Version(format!(
                        "claude-ws {}",
                        env!("CARGO_PKG_VERSION")
                    )))
                }
                _ => {}
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(ConfigError(format!(
                    "unexpected argument {arg:?} (see --help)"
                )));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(flag) = FLAGS.iter().find(|f| f.name == name) else {
                return Err(ConfigError(format!("unknown flag --{name} (see --help)")));
            };
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| ConfigError(format!("--{name} needs a value")))?,
            };
            let entry = raw.entry(flag.name).or_default();
            if !flag.list || !on_command_line.contains(&flag.name) {
                entry.0.clear();
                on_command_line.push(flag.name);
            }
            entry.0.push(value);
            entry.1 = format!("--{name}");
        }
        let mut c = Config::default();
        for flag in FLAGS {
            let Some((values, source)) = raw.get(flag.name) else {
                continue;
            };
            let shown = shown(flag.name, values);
            let result = if flag.list {
                let items: Vec<String> = values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                c.set_list(flag.name, items)
            } else {
                c.set(flag.name, values.last().map(String::as_str).unwrap_or(""))
            };
            result.map_err(|why| ConfigError(format!("{source}={shown}: {why}")))?;
        }
        // Settings that hang together badly: blame the flag or variable that was given.
        c.check().map_err(|(name, why)| match raw.get(name) {
            Some((values, source)) => {
                ConfigError(format!("{source}={}: {why}", shown(name, values)))
            }
            None => ConfigError(format!("--{name}: {why}")),
        })?;
        Ok(Invocation::Run(Box::new(c)))
    }

    fn set(&mut self, name: &str, v: &str) -> Result<(), String> {
        // Each conversion checks the flag's rule, so its error names the accepted form.
        let count = |v: &str| rule(name).count(v);
        let span = |v: &str| rule(name).span(v);
        // A span whose rule does not allow "off" is never `None`.
        let required =
            |v: &str| span(v)?.ok_or_else(|| format!("expected {}", rule(name).accepted()));
        match name {
            "host" => self.host = nonempty(v)?,
            "port" => self.port = port(v)?,
            "http-port" => self.http_port = port(v)?,
            "claude-bin" => self.claude_bin = PathBuf::from(nonempty(v)?),
            "max-sessions" => self.max_sessions = to_usize(count(v)?),
            "session-timeout-minutes" => self.session_timeout = required(v)?,
            "ping-interval-secs" => self.ping_interval = required(v)?,
            "max-message-bytes" => self.max_message_bytes = to_usize(count(v)?),
            "interrupt-grace-secs" => self.interrupt_grace = required(v)?,
            "stop-grace-secs" => self.stop_grace = required(v)?,
            "stall-timeout-secs" => self.stall_timeout = required(v)?,
            "handshake-timeout-secs" => self.handshake_timeout = required(v)?,
            "auth-token" => self.auth_token = Some(nonempty(v)?),
            "jwt-secret" => self.jwt_secret = Some(nonempty(v)?),
            "rate-limit" => self.rate_limit = rate_limit(v)?,
            "max-running" => self.max_running = to_usize(count(v)?),
            "warm-children" => self.warm_children = to_usize(count(v)?),
            "max-sessions-per-peer" => self.max_sessions_per_peer = to_usize(count(v)?),
            "max-prompt-bytes" => self.max_prompt_bytes = to_usize(count(v)?),
            "child-idle-secs" => self.child_idle = span(v)?,
            "log-format" => {
                self.log_format = match v.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err("expected text or json".into()),
                }
            }
            "permission-prompts" => self.permission_prompts = boolean(v)?,
            "permission-timeout-secs" => self.permission_timeout = required(v)?,
            "tool-timeout-secs" => self.tool_timeout = required(v)?,
            "queue-timeout-secs" => self.queue_timeout = required(v)?,
            "reconnect-grace-secs" => self.reconnect_grace = span(v)?.unwrap_or_default(),
            "replay-buffer-bytes" => self.replay_buffer_bytes = to_usize(count(v)?),
            "state-dir" => self.state_dir = Some(PathBuf::from(nonempty(v)?)),
            "admin-token" => self.admin_token = Some(nonempty(v)?),
            "drain-timeout-secs" => self.drain_timeout = span(v)?.unwrap_or_default(),
            "instance-id" => self.instance_id = Some(v.trim().to_string()),
            "jwt-secret-file" | "auth-token-file" | "admin-token-file" => {
                let secret = self.read_secret(v)?;
                let slot = match name {
                    "jwt-secret-file" => &mut self.jwt_secret,
                    "auth-token-file" => &mut self.auth_token,
                    _ => &mut self.admin_token,
                };
                if slot.is_some() {
                    let plain = name.trim_end_matches("-file");
                    return Err(format!("--{plain} is set too: give one of the two"));
                }
                *slot = Some(secret);
            }
            "sandbox" => self.sandbox = SandboxMode::parse(v)?,
            "bwrap" => self.bwrap = PathBuf::from(nonempty(v)?),
            "shared-workspace" => self.shared_workspace = boolean(v)?,
            "tool-registry-url" => {
                let url = nonempty(v)?;
                if !url.starts_with("http://") {
                    return Err("expected an http:// URL, e.g. http://127.0.0.1:9000".into());
                }
                self.tool_registry_url = Some(url.trim_end_matches('/').to_string())
            }
            _ => return Err("no such setting".into()),
        }
        Ok(())
    }

    /// The secret in `file`, without its line ending; the file is remembered (the
    /// sandbox hides it).
    fn read_secret(&mut self, file: &str) -> Result<String, String> {
        let text = std::fs::read_to_string(nonempty(file)?)
            .map_err(|e| format!("cannot read {file}: {e}"))?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(format!("{file} is empty"));
        }
        self.secret_files.push(PathBuf::from(file));
        Ok(secret.to_string())
    }

    fn set_list(&mut self, name: &str, items: Vec<String>) -> Result<(), String> {
        match name {
            "allowed-origins" => self.allowed_origins = items,
            "workspace-root" => {
                self.workspace_roots = items
                    .iter()
                    .map(|d| {
                        std::fs::canonicalize(d)
                            .ok()
                            .filter(|p| p.is_dir())
                            .ok_or_else(|| format!("{d:?} is not an existing directory"))
                    })
                    .collect::<Result<_, _>>()?
            }
            // Checked with the rest in `check`.
            "allowed-permission-modes" => self.allowed_permission_modes = items,
            "disallowed-tools" => self.disallowed_tools = items,
            "trusted-proxies" => {
                self.trusted_proxies = items
                    .iter()
                    .map(|c| crate::proxy::Cidr::parse(c))
                    .collect::<Result<_, _>>()?
            }
            "pass-env" => self.pass_env = items,
            _ => return Err("no such setting".into()),
        }
        Ok(())
    }

    /// The current value of setting `name`, as `--help` shows defaults.
    fn describe(&self, name: &str) -> String {
        let secs = |d: Duration| d.as_secs_f64().to_string();
        let join = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(",")
            }
        };
        match name {
            "host" => self.host.clone(),
            "port" => self.port.to_string(),
            "http-port" => self.http_port.to_string(),
            "claude-bin" => self.claude_bin.display().to_string(),
            "max-sessions" => self.max_sessions.to_string(),
            "session-timeout-minutes" => (self.session_timeout.as_secs_f64() / 60.0).to_string(),
            "auth-token" | "jwt-secret" => "none (authentication off)".into(),
            "allowed-origins" => join(&self.allowed_origins),
            "workspace-root" => "the directory the server starts in".into(),
            "allowed-permission-modes" => join(&self.allowed_permission_modes),
            "disallowed-tools" => join(&self.disallowed_tools),
            "pass-env" => join(&self.pass_env),
            "rate-limit" => format!("{}/{}", self.rate_limit.0, secs(self.rate_limit.1)),
            "max-running" => self.max_running.to_string(),
            "warm-children" => self.warm_children.to_string(),
            "max-sessions-per-peer" => self.max_sessions_per_peer.to_string(),
            "max-message-bytes" => self.max_message_bytes.to_string(),
            "max-prompt-bytes" => self.max_prompt_bytes.to_string(),
            "ping-interval-secs" => secs(self.ping_interval),
            "interrupt-grace-secs" => secs(self.interrupt_grace),
            "stop-grace-secs" => secs(self.stop_grace),
            "stall-timeout-secs" => secs(self.stall_timeout),
            "handshake-timeout-secs" => secs(self.handshake_timeout),
            "child-idle-secs" => self.child_idle.map(secs).unwrap_or_else(|| "none".into()),
            "permission-prompts" => self.permission_prompts.to_string(),
            "permission-timeout-secs" => secs(self.permission_timeout),
            "tool-timeout-secs" => secs(self.tool_timeout),
            "tool-registry-url" => self
                .tool_registry_url
                .clone()
                .unwrap_or_else(|| "none".into()),
            "drain-timeout-secs" => secs(self.drain_timeout),
            "instance-id" => "none (session ids are plain UUIDs)".into(),
            "log-format" => match self.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            },
            "trusted-proxies" => {
                let v: Vec<String> = self.trusted_proxies.iter().map(|c| c.to_string()).collect();
                join(&v)
            }
            "queue-timeout-secs" => secs(self.queue_timeout),
            "reconnect-grace-secs" => secs(self.reconnect_grace),
            "replay-buffer-bytes" => self.replay_buffer_bytes.to_string(),
            "state-dir" => match &self.state_dir {
                Some(d) => d.display().to_string(),
                None => {
                    "none (the CLI's own; with authentication, $HOME/.local/state/claude-ws)".into()
                }
            },
            "admin-token" => "none".into(),
            "jwt-secret-file" | "auth-token-file" | "admin-token-file" => "none".into(),
            "sandbox" => self.sandbox.as_str().into(),
            "bwrap" => self.bwrap.display().to_string(),
            "shared-workspace" => self.shared_workspace.to_string(),
            _ => String::new(),
        }
    }

    /// Check every setting is within its bounds (the same ones the flags have) and
    /// that they hang together. [`Server::bind`](crate::Server::bind) calls this, so a
    /// `Config` built in code meets the same rules as one built from flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|(flag, why)| ConfigError(format!("{} (--{flag}): {why}", field_name(flag))))
    }

    /// The first setting out of bounds: (its flag's name, what is wrong).
    fn check(&self) -> Result<(), (&'static str, String)> {
        let counts: [(&'static str, usize); 8] = [
            ("replay-buffer-bytes", self.replay_buffer_bytes),
            ("max-sessions", self.max_sessions),
            ("max-running", self.max_running),
            ("warm-children", self.warm_children),
            ("max-sessions-per-peer", self.max_sessions_per_peer),
            ("max-message-bytes", self.max_message_bytes),
            ("max-prompt-bytes", self.max_prompt_bytes),
            ("rate-limit", self.rate_limit.0 as usize),
        ];
        for (flag, n) in counts {
            let rule = if flag == "rate-limit" {
                RATE_COUNT
            } else {
                rule(flag)
            };
            rule.check_count(n as u64)
                .map_err(|why| (flag, format!("{why}, not {n}")))?;
        }
        let spans: [(&'static str, Option<Duration>); 13] = [
            ("permission-timeout-secs", Some(self.permission_timeout)),
            ("tool-timeout-secs", Some(self.tool_timeout)),
            ("queue-timeout-secs", Some(self.queue_timeout)),
            (
                "reconnect-grace-secs",
                Some(self.reconnect_grace).filter(|d| !d.is_zero()),
            ),
            (
                "drain-timeout-secs",
                Some(self.drain_timeout).filter(|d| !d.is_zero()),
            ),
            ("session-timeout-minutes", Some(self.session_timeout)),
            ("ping-interval-secs", Some(self.ping_interval)),
            ("interrupt-grace-secs", Some(self.interrupt_grace)),
            ("stop-grace-secs", Some(self.stop_grace)),
            ("stall-timeout-secs", Some(self.stall_timeout)),
            ("handshake-timeout-secs", Some(self.handshake_timeout)),
            ("child-idle-secs", self.child_idle),
            ("rate-limit", Some(self.rate_limit.1)),
        ];
        for (flag, d) in spans {
            rule(flag)
                .check_span(d)
                .map_err(|why| (flag, format!("{why}, not {d:?}")))?;
        }
        if self.warm_children > self.max_running {
            return Err((
                "warm-children",
                format!(
                    "at most --max-running ({}): each warm child holds one of its places",
                    self.max_running
                ),
            ));
        }
        if self.port != 0 && self.port == self.http_port {
            return Err((
                "http-port",
                format!("must differ from the WebSocket port ({})", self.port),
            ));
        }
        if self.host.is_empty() {
            return Err(("host", "must not be empty".into()));
        }
        if self.claude_bin.as_os_str().is_empty() {
            return Err(("claude-bin", "must not be empty".into()));
        }
        // An empty secret would let an empty credential through.
        if self.auth_token.as_deref() == Some("") {
            return Err(("auth-token", "must not be empty".into()));
        }
        if self.jwt_secret.as_deref() == Some("") {
            return Err(("jwt-secret", "must not be empty".into()));
        }
        if let Some(bad) = self.allowed_origins.iter().find(|o| !is_origin(o)) {
            return Err((
                "allowed-origins",
                format!("{bad:?} is not an origin: expected scheme://host[:port], e.g. https://app.example.com, or *"),
            ));
        }
        if let Some(id) = self.instance_id.as_deref().filter(|i| !is_instance_id(i)) {
            return Err((
                "instance-id",
                format!("{id:?} is not 1 to 16 lowercase hex digits (it starts session ids)"),
            ));
        }
        if self.workspace_roots.is_empty() {
            return Err(("workspace-root", "at least one directory is needed".into()));
        }
        if let Some(bad) = self
            .allowed_permission_modes
            .iter()
            .find(|m| !PERMISSION_MODES.contains(&m.as_str()))
        {
            return Err((
                "allowed-permission-modes",
                format!(
                    "unknown permission mode {bad:?}; known: {}",
                    PERMISSION_MODES.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// The secret flags given on command line `args` (which other local users can read
/// in /proc), for a start-up warning.
pub fn secrets_on_command_line(args: &[String]) -> Vec<&'static str> {
    ["--jwt-secret", "--auth-token", "--admin-token"]
        .into_iter()
        .filter(|f| {
            args.iter()
                .any(|a| a == f || a.strip_prefix(f).is_some_and(|r| r.starts_with('=')))
        })
        .collect()
}

/// 1 to 16 of `0-9a-f`: session ids stay hex digits and dashes (what a reattach's
/// `session_id` and the state directory's file names accept).
fn is_instance_id(id: &str) -> bool {
    (1..=16).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// The `Config` field a flag sets, for errors about a `Config` built in code.
fn field_name(flag: &str) -> String {
    match flag {
        "session-timeout-minutes" => "session_timeout".into(),
        "workspace-root" => "workspace_roots".into(),
        f => f
            .trim_end_matches("-secs")
            .trim_end_matches("-minutes")
            .replace('-', "_"),
    }
}

/// `*`, or `scheme://host[:port]` as a browser sends it in `Origin` (no path, no
/// spaces); a trailing `/` is tolerated, as the check ignores it.
fn is_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, authority)) = o.trim_end_matches('/').split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]:8080`, or `host:8080`; a bare `[::1]` has its colons inside brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    scheme_ok
        && !host.is_empty()
        && !authority.contains(['/', '?', '#', '@'])
        && !authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// A flag's value as errors show it: quoted, or `<redacted>` for a secret.
fn shown(name: &str, values: &[String]) -> String {
    if (name.contains("token") || name.contains("secret")) && !name.ends_with("-file") {
        "<redacted>".to_string()
    } else {
        format!("{:?}", values.join(","))
    }
}

fn nonempty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_string())
    }
}

fn port(v: &str) -> Result<u16, String> {
    let n = rule("port")
        .count(v)
        .map_err(|why| format!("{why} (0 = any free port)"))?;
    u16::try_from(n).map_err(|_| "expected a port from 0 to 65535".into())
}

/// Every bound is far below `usize::MAX`, even on 32-bit targets.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `N/SECONDS`: N queries in a window of SECONDS.
fn rate_limit(v: &str) -> Result<(u32, Duration), String> {
    let form = || {
        format!(
            "expected N/SECONDS, e.g. 10/60, with N from 1 to {MAX_RATE} and SECONDS \
             above 0, at most {} (fractions allowed)",
            MAX_DURATION.as_secs()
        )
    };
    let (n, secs) = v.split_once('/').ok_or_else(form)?;
    let n = RATE_COUNT.count(n).map_err(|_| form())?;
    let window = SECONDS.span(secs).map_err(|_| form())?.ok_or_else(form)?;
    Ok((u32::try_from(n).map_err(|_| form())?, window))
}

fn help() -> String {
    let d = Config::default();
    let mut s = String::from(
        "claude-ws: Claude Code on a WebSocket, one session per connection.\n\n\
         Usage: claude-ws [FLAGS]\n\n\
         Every flag can also be set by the environment variable shown; a flag beats it.\n\n",
    );
    for f in FLAGS {
        let left = format!("--{} {}", f.name, f.value);
        s.push_str(&format!(
            "  {left:<32} {}\n  {:<32} env {}, default {}\n",
            f.help,
            "",
            f.env,
            d.describe(f.name)
        ));
    }
    s.push_str(
        "  -h, --help                       this text\n  -V, --version                    the version\n\n\
         Once both ports are bound one line is printed to stdout:\n  \
         ready ws=ws://HOST:PORT/ws http=http://HOST:PORT\n\
         Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_shows_its_default_in_help() {
        let d = Config::default();
        for flag in FLAGS {
            assert!(
                !d.describe(flag.name).is_empty(),
                "--{} has no default shown",
                flag.name
            );
        }
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Config::from_args(args.iter().map(|s| s.to_string()), |k| env.get(k).cloned())? {
            Invocation::Run(c) => Ok(*c),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn flags_beat_env_and_env_beats_defaults() {
        let c = run(
            &["--port", "9"],
            &[("WEBSOCKET_PORT", "7"), ("MAX_SESSIONS", "3")],
        )
        .unwrap();
        assert_eq!(c.port, 9);
        assert_eq!(c.max_sessions, 3);
        assert_eq!(c.host, "127.0.0.1");
        let c = run(&["--session-timeout-minutes=0.05"], &[]).unwrap();
        assert_eq!(c.session_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = run(&["--port", "x"], &[]).unwrap_err();
        assert!(e.0.starts_with("--port="), "{e}");
        let e = run(&[], &[("MAX_SESSIONS", "-1")]).unwrap_err();
        assert!(e.0.starts_with("MAX_SESSIONS="), "{e}");
        assert!(run(&["--nope"], &[]).is_err());
        assert!(run(&["--port"], &[]).is_err());
        assert!(run(&["stray"], &[]).is_err());
    }

    #[test]
    fn list_flags_repeat_or_split_and_replace_the_env() {
        let dir = std::env::temp_dir();
        let d = dir.display().to_string();
        let c = run(
            &["--pass-env", "A", "--pass-env=B,C", "--workspace-root", &d],
            &[
                ("PASS_ENV", "Z"),
                ("ALLOWED_ORIGINS", "https://a.example, https://b.example"),
            ],
        )
        .unwrap();
        assert_eq!(c.pass_env, ["A", "B", "C"]);
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.workspace_roots, [std::fs::canonicalize(&dir).unwrap()]);
        assert!(run(&["--workspace-root=/no/such/dir"], &[]).is_err());
        assert!(run(&["--allowed-permission-modes=default,yolo"], &[]).is_err());
        let c = run(&["--rate-limit=5/0.5"], &[]).unwrap();
        assert_eq!(c.rate_limit, (5, Duration::from_millis(500)));
        assert!(run(&["--rate-limit=5"], &[]).is_err());
    }

    #[test]
    fn origins_need_a_scheme_and_nothing_after_the_port() {
        for good in [
            "*",
            "https://app.example.com",
            "http://localhost:3000/",
            "http://[::1]:8080",
            "chrome-extension://abcdef",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://",
            "://host",
            "https://host/path",
            "https://host:99999",
            "https://a b",
            "null",
            "1http://host",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }

    #[test]
    fn child_idle_zero_is_off_and_every_default_is_valid() {
        let c = run(&["--child-idle-secs=0"], &[]).unwrap();
        assert_eq!(c.child_idle, None);
        assert!(Config::default().validate().is_ok());
        let c = run(&["--log-format", "json"], &[]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn warm_children_stay_within_max_running() {
        let c = run(&["--warm-children=0"], &[]).unwrap();
        assert_eq!(c.warm_children, 0);
        let c = run(&["--max-running=2", "--warm-children=2"], &[]).unwrap();
        assert_eq!(c.warm_children, 2);
        let e = run(&["--max-running=2"], &[("WARM_CHILDREN", "3")]).unwrap_err();
        assert!(
            e.0.starts_with("WARM_CHILDREN=\"3\": at most --max-running (2)"),
            "{e}"
        );
        assert!(run(&["--warm-children=-1"], &[]).is_err());
        let c = Config {
            max_running: 1,
            warm_children: 2,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().0.contains("warm_children"));
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let e = run(&["--auth-token="], &[]).unwrap_err();
        assert!(e.0.contains("<redacted>"), "{e}");
    }

    #[test]
    fn help_lists_every_flag_with_env_and_default() {
        let h = help();
        for f in FLAGS {
            assert!(h.contains(&format!("--{}", f.name)), "{}", f.name);
            assert!(h.contains(f.env), "{}", f.env);
        }
        assert!(h.contains("default 127.0.0.1"));
    }
}
