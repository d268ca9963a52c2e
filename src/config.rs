//! The server's settings: `Config`, its defaults (written once, in `Default`), and how
//! flags and environment variables become one.
//!
//! Parsing is two stages, as in ripgrep: raw strings are gathered per flag (environment
//! first, then the command line, which wins), then each is converted and checked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Side port for `/health` and `/sessions`; 0 picks a free one. Defaults to 8001.
    pub http_port: u16,
    /// The `claude` executable. Defaults to `claude`, looked up on PATH.
    pub claude_bin: PathBuf,
    /// Most concurrent sessions (connections). Defaults to 100.
    pub max_sessions: usize,
    /// A session with no query running and no client message for this long is closed.
    /// Defaults to 30 minutes.
    pub session_timeout: Duration,
    /// How often the server sends a WebSocket ping; a peer silent for two intervals is
    /// considered gone. Defaults to 30 s.
    pub ping_interval: Duration,
    /// Largest client message accepted; larger closes the connection with 1009.
    /// Defaults to 1 MiB.
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
    /// Origins allowed besides the server's own (`scheme://host[:port]`). Defaults to none.
    pub allowed_origins: Vec<String>,
    /// Queries allowed per session, and per principal (the authenticated user, else the
    /// client address), in a window: (count, window). Defaults to 60 per 60 s.
    pub rate_limit: (u32, Duration),
    /// Most `claude` children alive at once across the server (each ~300 MB). A query
    /// that needs a child beyond this waits (`query_queued`) while the least recently
    /// used idle child is stopped, or until a place frees. Defaults to 16.
    pub max_running: usize,
    /// Most sessions one principal (the authenticated user, else the client address)
    /// may hold. Defaults to 64.
    pub max_sessions_per_peer: usize,
    /// Longest prompt or input text accepted, in bytes. Defaults to 256 KiB.
    pub max_prompt_bytes: usize,
    /// A session's child idle (no query) for this long is stopped, giving its place
    /// among `max_running` back; the next query restarts it with `--resume`. `None`
    /// keeps children as long as their session. Defaults to 10 minutes.
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
        "queries allowed per session and per peer address in a window",
    ),
    flag(
        "max-running",
        "MAX_RUNNING",
        "N",
        "most claude children alive at once; a query needing one more gets server_busy",
    ),
    flag(
        "max-sessions-per-peer",
        "MAX_SESSIONS_PER_PEER",
        "N",
        "most sessions one peer address may hold",
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
        "disconnect a client that reads none of its output this long",
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
        "tool-registry-url",
        "TOOL_REGISTRY_URL",
        "URL",
        "http:// registry where client-defined tools are also stored and listed",
    ),
];

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
            let shown = if flag.name.contains("token") || flag.name.contains("secret") {
                "<redacted>".to_string()
            } else {
                format!("{:?}", values.join(","))
            };
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
        c.validate()?;
        Ok(Invocation::Run(Box::new(c)))
    }

    fn set(&mut self, name: &str, v: &str) -> Result<(), String> {
        match name {
            "host" => self.host = nonempty(v)?,
            "port" => self.port = parse(v)?,
            "http-port" => self.http_port = parse(v)?,
            "claude-bin" => self.claude_bin = PathBuf::from(nonempty(v)?),
            "max-sessions" => self.max_sessions = parse(v)?,
            "session-timeout-minutes" => self.session_timeout = duration(v, 60.0)?,
            "ping-interval-secs" => self.ping_interval = duration(v, 1.0)?,
            "max-message-bytes" => self.max_message_bytes = parse(v)?,
            "interrupt-grace-secs" => self.interrupt_grace = duration(v, 1.0)?,
            "stop-grace-secs" => self.stop_grace = duration(v, 1.0)?,
            "stall-timeout-secs" => self.stall_timeout = duration(v, 1.0)?,
            "handshake-timeout-secs" => self.handshake_timeout = duration(v, 1.0)?,
            "auth-token" => self.auth_token = Some(nonempty(v)?),
            "jwt-secret" => self.jwt_secret = Some(nonempty(v)?),
            "rate-limit" => {
                let (n, secs) = v.split_once('/').ok_or("expected N/SECONDS, e.g. 10/60")?;
                self.rate_limit = (parse(n)?, duration(secs, 1.0)?);
            }
            "max-running" => self.max_running = parse(v)?,
            "max-sessions-per-peer" => self.max_sessions_per_peer = parse(v)?,
            "max-prompt-bytes" => self.max_prompt_bytes = parse(v)?,
            "child-idle-secs" => self.child_idle = Some(duration(v, 1.0)?).filter(|d| !d.is_zero()),
            "permission-prompts" => self.permission_prompts = boolean(v)?,
            "permission-timeout-secs" => self.permission_timeout = duration(v, 1.0)?,
            "tool-timeout-secs" => self.tool_timeout = duration(v, 1.0)?,
            "queue-timeout-secs" => self.queue_timeout = duration(v, 1.0)?,
            "reconnect-grace-secs" => self.reconnect_grace = duration(v, 1.0)?,
            "replay-buffer-bytes" => self.replay_buffer_bytes = parse(v)?,
            "state-dir" => self.state_dir = Some(PathBuf::from(nonempty(v)?)),
            "admin-token" => self.admin_token = Some(nonempty(v)?),
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
            "allowed-permission-modes" => {
                if let Some(bad) = items
                    .iter()
                    .find(|m| !PERMISSION_MODES.contains(&m.as_str()))
                {
                    return Err(format!(
                        "unknown permission mode {bad:?}; known: {}",
                        PERMISSION_MODES.join(", ")
                    ));
                }
                self.allowed_permission_modes = items
            }
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
            _ => String::new(),
        }
    }

    /// Check the settings hang together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return Err(ConfigError("max sessions must be at least 1".into()));
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError(
                "max message bytes must be at least 1024".into(),
            ));
        }
        if self.max_running == 0 || self.max_sessions_per_peer == 0 || self.rate_limit.0 == 0 {
            return Err(ConfigError(
                "max running, max sessions per peer and the rate limit must be at least 1".into(),
            ));
        }
        if self.workspace_roots.is_empty() {
            return Err(ConfigError("at least one workspace root is needed".into()));
        }
        if self.ping_interval.is_zero() || self.session_timeout.is_zero() {
            return Err(ConfigError(
                "ping interval and session timeout must be above zero".into(),
            ));
        }
        Ok(())
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn nonempty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_string())
    }
}

fn parse<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// A non-negative number of units (`unit` seconds each), fractions allowed.
fn duration(v: &str, unit: f64) -> Result<Duration, String> {
    let n: f64 = parse(v)?;
    if !n.is_finite() || n < 0.0 || n * unit > 1e9 {
        return Err("must be a non-negative number".into());
    }
    Ok(Duration::from_secs_f64(n * unit))
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
