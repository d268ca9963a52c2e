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
    /// Side port for `/health` and `/sessions`; 0 picks a free one; must differ from
    /// `port` unless both are 0. Defaults to 8001.
    pub http_port: u16,
    /// The `claude` executable. Defaults to `claude`, looked up on PATH.
    pub claude_bin: PathBuf,
    /// Most concurrent sessions (connections), 1 to 100,000. Defaults to 100.
    pub max_sessions: usize,
    /// Every timeout, grace and interval, in one place (see [`Timeouts`]).
    pub timeouts: Timeouts,
    /// Largest client message accepted; larger closes the connection with 1009.
    /// 1 KiB to 1 GiB. Defaults to 1 MiB.
    pub max_message_bytes: usize,
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
    /// Most connections (viewers) one session may have at once, 1 to 1,000: a
    /// connection to `/ws?session_id=S` of a session that has a connection joins it.
    /// Defaults to 8.
    pub max_viewers: usize,
    /// Longest prompt or input text accepted, in bytes, 1 to 1 GiB. Defaults to 256 KiB.
    pub max_prompt_bytes: usize,
    /// Whether queries ask the client before a tool runs (`permission_request`) unless
    /// their `permission_prompts` option says otherwise. Defaults to false: clients of
    /// the original protocol do not know the message.
    pub permission_prompts: bool,
    /// Where client-defined tools are also stored and listed (`POST`/`GET {url}/tools`),
    /// plain `http://` only. Defaults to none.
    pub tool_registry_url: Option<String>,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers name the client's
    /// address (for limits without authentication). Defaults to none: the headers are
    /// ignored.
    pub trusted_proxies: Vec<crate::proxy::Cidr>,
    /// Most bytes of recent messages a session keeps to send again to a client that
    /// reattaches. Defaults to 1 MiB.
    pub replay_buffer_bytes: usize,
    /// Where each principal's CLI state (conversations) lives, one directory each
    /// (`CLAUDE_CONFIG_DIR`). Defaults to none: the CLI's own location, shared by all
    /// (with authentication on, `$HOME/.local/state/claude-ws` is used instead:
    /// [`AUTHENTICATED_STATE_DIR`]).
    pub state_dir: Option<PathBuf>,
    /// An operator token: `/sessions` with it lists every principal's sessions.
    /// Defaults to none.
    pub admin_token: Option<String>,
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

/// How long things may take: every timeout, grace and interval of the server.
/// Build one with `Timeouts::default()` and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Timeouts {
    /// A session with no query running and no client message for this long is closed.
    /// Above zero and at most a year, like every duration here. Defaults to 30 minutes.
    pub session_timeout: Duration,
    /// How often the server sends a WebSocket ping; a peer silent for two intervals is
    /// considered gone. Defaults to 30 s.
    pub ping_interval: Duration,
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
    /// A session's child idle (no query) for this long is stopped, giving its place
    /// among `max_running` back; the next query restarts it with `--resume`. `None`
    /// keeps children as long as their session (`Some(ZERO)` is refused: say `None`).
    /// Defaults to 10 minutes.
    pub child_idle: Option<Duration>,
    /// A permission prompt the client has not answered in this long is denied.
    /// Defaults to 120 s.
    pub permission_timeout: Duration,
    /// A call of a client-defined tool not answered in this long gets an error result.
    /// Defaults to 120 s.
    pub tool_timeout: Duration,
    /// A query waiting this long for a `claude` place gets `server_busy`. Defaults to
    /// 120 s.
    pub queue_timeout: Duration,
    /// A session whose client went away without ending it waits this long for the
    /// client to reattach (0: it ends at once). Defaults to 60 s.
    pub reconnect_grace: Duration,
    /// On SIGTERM or `POST /drain`, running queries may finish for this long before
    /// their clients are closed with 1012 (0: close them at once). Defaults to 30 s.
    pub drain_timeout: Duration,
}

/// `--sandbox`: whether children run in a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Bubblewrap when authentication is on (several principals), off otherwise.
    Auto,
    /// Always bubblewrap.
    Bubblewrap,
    /// Never: children run with the server's own view of the machine.
    Off,
}

impl SandboxMode {
    pub fn parse(v: &str) -> Result<SandboxMode, String> {
        match v.trim() {
            "auto" => Ok(SandboxMode::Auto),
            "bubblewrap" | "bwrap" => Ok(SandboxMode::Bubblewrap),
            "off" => Ok(SandboxMode::Off),
            _ => Err("expected auto, bubblewrap or off".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Auto => "auto",
            SandboxMode::Bubblewrap => "bubblewrap",
            SandboxMode::Off => "off",
        }
    }
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

/// Where children's CLI state goes, under `$HOME`, when authentication is on and no
/// `state_dir` was named (see [`Config::state_dir`]).
pub const AUTHENTICATED_STATE_DIR: &str = ".local/state/claude-ws";

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8000,
            http_port: 8001,
            claude_bin: PathBuf::from("claude"),
            max_sessions: 100,
            timeouts: Timeouts::default(),
            max_message_bytes: 1 << 20,
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
            max_viewers: 8,
            max_prompt_bytes: 256 * 1024,
            permission_prompts: false,
            tool_registry_url: None,
            trusted_proxies: Vec::new(),
            replay_buffer_bytes: 1 << 20,
            state_dir: None,
            admin_token: None,
            instance_id: None,
            log_format: LogFormat::Text,
            sandbox: SandboxMode::Auto,
            bwrap: PathBuf::from("bwrap"),
            shared_workspace: false,
            secret_files: Vec::new(),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            session_timeout: Duration::from_secs(30 * 60),
            ping_interval: Duration::from_secs(30),
            interrupt_grace: Duration::from_secs(2),
            stop_grace: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            child_idle: Some(Duration::from_secs(600)),
            permission_timeout: Duration::from_secs(120),
            tool_timeout: Duration::from_secs(120),
            queue_timeout: Duration::from_secs(120),
            reconnect_grace: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

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

impl Rule {
    /// Whether zero means "off" (a span that allows it).
    const fn zero_is_off(self) -> bool {
        matches!(
            self,
            Rule::Span {
                zero_is_off: true,
                ..
            }
        )
    }

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

/// One flag, written once: its name, environment variable, value name and help line,
/// the `Config` field it sets, how a raw value becomes that field and how the field
/// reads back (`--help` shows the defaults that way), and what else the field must
/// satisfy. Flags and [`Config::validate`] both go by this table, so a flag and an
/// embedder meet the same rules.
///
/// How to add a flag: add a field to [`Config`] with its doc ("Defaults to …") and its
/// default in `Default`, then one row here (its place in the table is its place in
/// `--help`), and a row in the flag table of `docs/operations.md` (`tests/readme.rs`
/// checks it). A whole number or a duration takes [`count`] / [`span`] (the bounds
/// are checked both when parsing and by `validate`); anything else gives its own
/// `parse` and `show` ([`value`], [`list`]); [`Flag::check`] adds a rule the value
/// must meet however it was set.
struct Flag {
    name: &'static str,
    env: &'static str,
    /// The value's name in `--help`: `N`, `SECS`, `DIR`, …
    value: &'static str,
    help: &'static str,
    /// The `Config` field, for errors about a `Config` built in code.
    field: &'static str,
    kind: Kind,
    /// A further rule for the field, checked after every flag is set and by
    /// [`Config::validate`]: what is wrong, if anything.
    check: Option<Check>,
}

/// A rule a field must meet: what is wrong, if anything.
type Check = fn(&Config) -> Result<(), String>;

/// How a flag's value is read and shown.
enum Kind {
    /// A whole number within `rule` (a [`Rule::Count`]).
    Count {
        rule: Rule,
        get: fn(&Config) -> u64,
        set: fn(&mut Config, u64),
    },
    /// A duration within `rule` (a [`Rule::Span`]); `None` is "off" (zero), where the
    /// rule allows it.
    Span {
        rule: Rule,
        get: fn(&Config) -> Option<Duration>,
        set: fn(&mut Config, Option<Duration>),
    },
    /// One value of any other form.
    Value {
        parse: fn(&mut Config, &str) -> Result<(), String>,
        show: fn(&Config) -> String,
    },
    /// A list: the flag may be repeated and takes comma-separated values; given on the
    /// command line it replaces the environment's list.
    List {
        parse: fn(&mut Config, Vec<String>) -> Result<(), String>,
        show: fn(&Config) -> String,
    },
}

impl Flag {
    /// This flag with a further rule for its field.
    const fn check(self, check: Check) -> Flag {
        Flag {
            check: Some(check),
            ..self
        }
    }

    fn is_list(&self) -> bool {
        matches!(self.kind, Kind::List { .. })
    }

    /// The field's current value, as `--help` shows defaults.
    fn show(&self, c: &Config) -> String {
        let secs = |d: Duration, unit: u64| (d.as_secs_f64() / unit as f64).to_string();
        match self.kind {
            Kind::Count { get, .. } => get(c).to_string(),
            Kind::Span {
                rule: Rule::Span { unit, .. },
                get,
                ..
            } => get(c).map_or_else(|| "none".into(), |d| secs(d, unit)),
            Kind::Span { .. } => String::new(),
            Kind::Value { show, .. } | Kind::List { show, .. } => show(c),
        }
    }

    /// Set the field from one raw value (`values` holds the list items, for a list).
    fn set(&self, c: &mut Config, values: &[String]) -> Result<(), String> {
        let last = values.last().map(String::as_str).unwrap_or("");
        match self.kind {
            Kind::Count { rule, set, .. } => set(c, rule.count(last)?),
            Kind::Span { rule, set, .. } => set(c, rule.span(last)?),
            Kind::Value { parse, .. } => parse(c, last)?,
            Kind::List { parse, .. } => parse(
                c,
                values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect(),
            )?,
        }
        Ok(())
    }

    /// The field's bounds, then its further rule.
    fn validate(&self, c: &Config) -> Result<(), String> {
        match self.kind {
            Kind::Count { rule, get, .. } => {
                let n = get(c);
                rule.check_count(n)
                    .map_err(|why| format!("{why}, not {n}"))?;
            }
            Kind::Span { rule, get, .. } => {
                let d = get(c);
                rule.check_span(d)
                    .map_err(|why| format!("{why}, not {d:?}"))?;
            }
            Kind::Value { .. } | Kind::List { .. } => {}
        }
        self.check.map_or(Ok(()), |check| check(c))
    }
}

/// A row for a whole-number field: `count!(field, MIN, MAX)`.
macro_rules! count {
    ($field:ident, $min:expr, $max:expr) => {
        Kind::Count {
            rule: Rule::Count {
                min: $min as u64,
                max: $max as u64,
            },
            get: |c| c.$field as u64,
            set: |c, n| c.$field = to_usize(n),
        }
    };
}

/// A row for a duration field: `span!(field, RULE)` for a `Duration` (zero is what
/// "off" sets, where the rule allows it), `span!(field?, RULE)` for an
/// `Option<Duration>` (`None` is off).
macro_rules! span {
    ($($field:ident).+ ?, $rule:expr) => {
        Kind::Span {
            rule: $rule,
            get: |c| c.$($field).+,
            set: |c, d| c.$($field).+ = d,
        }
    };
    ($($field:ident).+, $rule:expr) => {
        Kind::Span {
            rule: $rule,
            get: |c| Some(c.$($field).+).filter(|d| !$rule.zero_is_off() || !d.is_zero()),
            set: |c, d| c.$($field).+ = d.unwrap_or_default(),
        }
    };
}

const fn flag(
    name: &'static str,
    env: &'static str,
    value: &'static str,
    help: &'static str,
    field: &'static str,
    kind: Kind,
) -> Flag {
    Flag {
        name,
        env,
        value,
        help,
        field,
        kind,
        check: None,
    }
}

/// A row of another form: `parse` sets the field from the raw value, `show` reads it.
const fn value(
    parse: fn(&mut Config, &str) -> Result<(), String>,
    show: fn(&Config) -> String,
) -> Kind {
    Kind::Value { parse, show }
}

/// A list row: `parse` sets the field from the items.
const fn list(
    parse: fn(&mut Config, Vec<String>) -> Result<(), String>,
    show: fn(&Config) -> String,
) -> Kind {
    Kind::List { parse, show }
}

/// A list as `--help` shows it.
fn joined(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(",")
    }
}

/// Seconds: above 0, at most a year.
const SECONDS: Rule = Rule::Span {
    unit: 1,
    unit_name: "seconds",
    zero_is_off: false,
};

/// Seconds, where 0 means off (never, or at once).
const SECONDS_OR_OFF: Rule = Rule::Span {
    unit: 1,
    unit_name: "seconds",
    zero_is_off: true,
};

const MINUTES: Rule = Rule::Span {
    unit: 60,
    unit_name: "minutes",
    zero_is_off: false,
};

/// The ports.
const PORT: Rule = Rule::Count {
    min: 0,
    max: u16::MAX as u64,
};

/// The count half of `--rate-limit N/SECS`.
const RATE_COUNT: Rule = Rule::Count {
    min: 1,
    max: MAX_RATE as u64,
};

/// Every flag, in the order `--help` lists them.
const FLAGS: &[Flag] = &[
    flag(
        "host",
        "WEBSOCKET_HOST",
        "ADDR",
        "address to listen on (0.0.0.0 exposes the agent to the network)",
        "host",
        value(|c, v| nonempty(v).map(|v| c.host = v), |c| c.host.clone()),
    )
    .check(|c| ensure(!c.host.is_empty(), || "must not be empty".into())),
    flag(
        "port",
        "WEBSOCKET_PORT",
        "PORT",
        "WebSocket port (0 = any free port)",
        "port",
        value(|c, v| port(v).map(|v| c.port = v), |c| c.port.to_string()),
    ),
    flag(
        "http-port",
        "HTTP_PORT",
        "PORT",
        "side port for /health and /sessions (0 = any free port)",
        "http_port",
        value(
            |c, v| port(v).map(|v| c.http_port = v),
            |c| c.http_port.to_string(),
        ),
    )
    .check(|c| {
        ensure(c.port == 0 || c.port != c.http_port, || {
            format!("must differ from the WebSocket port ({})", c.port)
        })
    }),
    flag(
        "claude-bin",
        "CLAUDE_BIN",
        "PATH",
        "the claude executable",
        "claude_bin",
        value(
            |c, v| nonempty(v).map(|v| c.claude_bin = PathBuf::from(v)),
            |c| c.claude_bin.display().to_string(),
        ),
    )
    .check(|c| {
        ensure(!c.claude_bin.as_os_str().is_empty(), || {
            "must not be empty".into()
        })
    }),
    flag(
        "max-sessions",
        "MAX_SESSIONS",
        "N",
        "most concurrent sessions; more are refused with HTTP 503",
        "max_sessions",
        count!(max_sessions, 1, MAX_COUNT),
    ),
    flag(
        "session-timeout-minutes",
        "SESSION_TIMEOUT_MINUTES",
        "MIN",
        "close a session idle this long (fractions allowed)",
        "timeouts.session_timeout",
        span!(timeouts.session_timeout, MINUTES),
    ),
    flag(
        "auth-token",
        "CLAUDE_WS_AUTH_TOKEN",
        "TOKEN",
        "require this bearer token (header, ?token= or subprotocol)",
        "auth_token",
        value(
            |c, v| nonempty(v).map(|v| c.auth_token = Some(v)),
            |_| "none (authentication off)".into(),
        ),
    )
    // An empty secret would let an empty credential through.
    .check(|c| not_empty(&c.auth_token)),
    flag(
        "jwt-secret",
        "CLAUDE_WS_JWT_SECRET",
        "SECRET",
        "accept HS256 JWTs signed with this secret (exp checked)",
        "jwt_secret",
        value(
            |c, v| nonempty(v).map(|v| c.jwt_secret = Some(v)),
            |_| "none (authentication off)".into(),
        ),
    )
    .check(|c| not_empty(&c.jwt_secret)),
    flag(
        "allowed-origins",
        "ALLOWED_ORIGINS",
        "LIST",
        "browser origins allowed besides the server's own",
        "allowed_origins",
        list(
            |c, items| {
                c.allowed_origins = items;
                Ok(())
            },
            |c| joined(&c.allowed_origins),
        ),
    )
    .check(|c| match c.allowed_origins.iter().find(|o| !is_origin(o)) {
        Some(bad) => Err(format!(
            "{bad:?} is not an origin: expected scheme://host[:port], e.g. \
             https://app.example.com, or *"
        )),
        None => Ok(()),
    }),
    flag(
        "workspace-root",
        "WORKSPACE_ROOTS",
        "DIR",
        "directories a client's cwd must be inside (repeatable)",
        "workspace_roots",
        list(
            |c, items| {
                c.workspace_roots = items
                    .iter()
                    .map(|d| {
                        std::fs::canonicalize(d)
                            .ok()
                            .filter(|p| p.is_dir())
                            .ok_or_else(|| format!("{d:?} is not an existing directory"))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(())
            },
            |_| "the directory the server starts in".into(),
        ),
    )
    .check(|c| {
        ensure(!c.workspace_roots.is_empty(), || {
            "at least one directory is needed".into()
        })
    }),
    flag(
        "allowed-permission-modes",
        "ALLOWED_PERMISSION_MODES",
        "LIST",
        "permission modes clients may use",
        "allowed_permission_modes",
        list(
            |c, items| {
                c.allowed_permission_modes = items;
                Ok(())
            },
            |c| joined(&c.allowed_permission_modes),
        ),
    )
    .check(|c| {
        match c
            .allowed_permission_modes
            .iter()
            .find(|m| !PERMISSION_MODES.contains(&m.as_str()))
        {
            Some(bad) => Err(format!(
                "unknown permission mode {bad:?}; known: {}",
                PERMISSION_MODES.join(", ")
            )),
            None => Ok(()),
        }
    }),
    flag(
        "disallowed-tools",
        "DISALLOWED_TOOLS",
        "LIST",
        "tools always disallowed, on top of the client's list",
        "disallowed_tools",
        list(
            |c, items| {
                c.disallowed_tools = items;
                Ok(())
            },
            |c| joined(&c.disallowed_tools),
        ),
    ),
    flag(
        "pass-env",
        "PASS_ENV",
        "NAME",
        "extra environment variable passed to children (repeatable)",
        "pass_env",
        list(
            |c, items| {
                c.pass_env = items;
                Ok(())
            },
            |c| joined(&c.pass_env),
        ),
    ),
    flag(
        "rate-limit",
        "RATE_LIMIT",
        "N/SECS",
        "queries allowed per session, and per user (else per client address), in a window",
        "rate_limit",
        value(
            |c, v| rate_limit(v).map(|v| c.rate_limit = v),
            |c| format!("{}/{}", c.rate_limit.0, c.rate_limit.1.as_secs_f64()),
        ),
    )
    .check(|c| {
        let (n, window) = c.rate_limit;
        RATE_COUNT
            .check_count(n.into())
            .map_err(|why| format!("{why}, not {n}"))?;
        SECONDS
            .check_span(Some(window))
            .map_err(|why| format!("{why}, not {:?}", Some(window)))?;
        Ok(())
    }),
    flag(
        "max-running",
        "MAX_RUNNING",
        "N",
        "most claude children alive at once; a query needing one more waits its turn",
        "max_running",
        count!(max_running, 1, MAX_COUNT),
    ),
    flag(
        "warm-children",
        "WARM_CHILDREN",
        "N",
        "claude children started ahead of need for new sessions' first queries (0 = none)",
        "warm_children",
        count!(warm_children, 0, MAX_COUNT),
    )
    .check(|c| {
        ensure(c.warm_children <= c.max_running, || {
            format!(
                "at most --max-running ({}): each warm child holds one of its places",
                c.max_running
            )
        })
    }),
    flag(
        "max-sessions-per-peer",
        "MAX_SESSIONS_PER_PEER",
        "N",
        "most sessions one user (else one client address) may hold",
        "max_sessions_per_peer",
        count!(max_sessions_per_peer, 1, MAX_COUNT),
    ),
    flag(
        "max-viewers",
        "MAX_VIEWERS",
        "N",
        "most connections one session may have at once (more are refused)",
        "max_viewers",
        count!(max_viewers, 1, 1000),
    ),
    flag(
        "max-message-bytes",
        "MAX_MESSAGE_BYTES",
        "BYTES",
        "largest client message; larger closes with 1009",
        "max_message_bytes",
        count!(max_message_bytes, 1024, MAX_BYTES),
    ),
    flag(
        "max-prompt-bytes",
        "MAX_PROMPT_BYTES",
        "BYTES",
        "longest prompt or input text",
        "max_prompt_bytes",
        count!(max_prompt_bytes, 1, MAX_BYTES),
    ),
    flag(
        "ping-interval-secs",
        "PING_INTERVAL_SECS",
        "SECS",
        "WebSocket ping interval; a peer silent for two is dropped",
        "timeouts.ping_interval",
        span!(timeouts.ping_interval, SECONDS),
    ),
    flag(
        "interrupt-grace-secs",
        "INTERRUPT_GRACE_SECS",
        "SECS",
        "an interrupt not honoured this fast ends the child's process group",
        "timeouts.interrupt_grace",
        span!(timeouts.interrupt_grace, SECONDS),
    ),
    flag(
        "stop-grace-secs",
        "STOP_GRACE_SECS",
        "SECS",
        "wait between closing a child's stdin, SIGTERM and SIGKILL",
        "timeouts.stop_grace",
        span!(timeouts.stop_grace, SECONDS),
    ),
    flag(
        "stall-timeout-secs",
        "STALL_TIMEOUT_SECS",
        "SECS",
        "disconnect a client whose unread output stays above 256 KiB this long",
        "timeouts.stall_timeout",
        span!(timeouts.stall_timeout, SECONDS),
    ),
    flag(
        "child-idle-secs",
        "CHILD_IDLE_SECS",
        "SECS",
        "stop a session's claude idle this long (0 = never); the next query resumes it",
        "timeouts.child_idle",
        span!(timeouts.child_idle?, SECONDS_OR_OFF),
    ),
    flag(
        "handshake-timeout-secs",
        "HANDSHAKE_TIMEOUT_SECS",
        "SECS",
        "time allowed for the WebSocket handshake",
        "timeouts.handshake_timeout",
        span!(timeouts.handshake_timeout, SECONDS),
    ),
    flag(
        "permission-prompts",
        "PERMISSION_PROMPTS",
        "BOOL",
        "ask clients before tools run unless a query's permission_prompts option says no",
        "permission_prompts",
        value(
            |c, v| boolean(v).map(|v| c.permission_prompts = v),
            |c| c.permission_prompts.to_string(),
        ),
    ),
    flag(
        "permission-timeout-secs",
        "PERMISSION_TIMEOUT_SECS",
        "SECS",
        "deny a permission prompt the client has not answered this long",
        "timeouts.permission_timeout",
        span!(timeouts.permission_timeout, SECONDS),
    ),
    flag(
        "tool-timeout-secs",
        "TOOL_TIMEOUT_SECS",
        "SECS",
        "give a client-defined tool call not answered this long an error result",
        "timeouts.tool_timeout",
        span!(timeouts.tool_timeout, SECONDS),
    ),
    flag(
        "trusted-proxies",
        "TRUSTED_PROXIES",
        "CIDR",
        "proxies whose Forwarded / X-Forwarded-For name the client (repeatable)",
        "trusted_proxies",
        list(
            |c, items| {
                c.trusted_proxies = items
                    .iter()
                    .map(|c| crate::proxy::Cidr::parse(c))
                    .collect::<Result<_, _>>()?;
                Ok(())
            },
            |c| {
                let v: Vec<String> = c.trusted_proxies.iter().map(|c| c.to_string()).collect();
                joined(&v)
            },
        ),
    ),
    flag(
        "queue-timeout-secs",
        "QUEUE_TIMEOUT_SECS",
        "SECS",
        "a query waiting this long for a claude place gets server_busy",
        "timeouts.queue_timeout",
        span!(timeouts.queue_timeout, SECONDS),
    ),
    flag(
        "reconnect-grace-secs",
        "RECONNECT_GRACE_SECS",
        "SECS",
        "keep a dropped client's session this long for it to reattach (0 = end at once)",
        "timeouts.reconnect_grace",
        span!(timeouts.reconnect_grace, SECONDS_OR_OFF),
    ),
    flag(
        "replay-buffer-bytes",
        "REPLAY_BUFFER_BYTES",
        "BYTES",
        "recent messages a session keeps for a client that reattaches",
        "replay_buffer_bytes",
        count!(replay_buffer_bytes, 0, MAX_BYTES),
    ),
    flag(
        "state-dir",
        "STATE_DIR",
        "DIR",
        "one CLI state directory per principal under DIR (conversations kept apart)",
        "state_dir",
        value(
            |c, v| nonempty(v).map(|v| c.state_dir = Some(PathBuf::from(v))),
            |c| match &c.state_dir {
                Some(d) => d.display().to_string(),
                None => format!(
                    "none (the CLI's own; with authentication, $HOME/{AUTHENTICATED_STATE_DIR})"
                ),
            },
        ),
    ),
    flag(
        "admin-token",
        "CLAUDE_WS_ADMIN_TOKEN",
        "TOKEN",
        "operator token: /sessions with it lists every principal's sessions",
        "admin_token",
        value(
            |c, v| nonempty(v).map(|v| c.admin_token = Some(v)),
            |_| "none".into(),
        ),
    ),
    flag(
        "drain-timeout-secs",
        "DRAIN_TIMEOUT_SECS",
        "SECS",
        "on SIGTERM or POST /drain, let running queries finish this long (0 = close at once)",
        "timeouts.drain_timeout",
        span!(timeouts.drain_timeout, SECONDS_OR_OFF),
    ),
    flag(
        "instance-id",
        "INSTANCE_ID",
        "HEX",
        "prefix of this instance's session ids, for a balancer's sticky routing",
        "instance_id",
        value(
            |c, v| {
                c.instance_id = Some(v.trim().to_string());
                Ok(())
            },
            |_| "none (session ids are plain UUIDs)".into(),
        ),
    )
    .check(
        |c| match c.instance_id.as_deref().filter(|i| !is_instance_id(i)) {
            Some(id) => Err(format!(
                "{id:?} is not 1 to 16 lowercase hex digits (it starts session ids)"
            )),
            None => Ok(()),
        },
    ),
    flag(
        "tool-registry-url",
        "TOOL_REGISTRY_URL",
        "URL",
        "http:// registry where client-defined tools are also stored and listed",
        "tool_registry_url",
        value(
            |c, v| {
                let url = nonempty(v)?;
                if !url.starts_with("http://") {
                    return Err("expected an http:// URL, e.g. http://127.0.0.1:9000".into());
                }
                c.tool_registry_url = Some(url.trim_end_matches('/').to_string());
                Ok(())
            },
            |c| c.tool_registry_url.clone().unwrap_or_else(|| "none".into()),
        ),
    ),
    flag(
        "jwt-secret-file",
        "CLAUDE_WS_JWT_SECRET_FILE",
        "FILE",
        "read the JWT secret from FILE (not on the command line, where /proc shows it)",
        "jwt_secret",
        value(
            |c, v| secret_from_file(c, v, "jwt-secret", |c| &mut c.jwt_secret),
            |_| "none".into(),
        ),
    ),
    flag(
        "auth-token-file",
        "CLAUDE_WS_AUTH_TOKEN_FILE",
        "FILE",
        "read the bearer token from FILE",
        "auth_token",
        value(
            |c, v| secret_from_file(c, v, "auth-token", |c| &mut c.auth_token),
            |_| "none".into(),
        ),
    ),
    flag(
        "admin-token-file",
        "CLAUDE_WS_ADMIN_TOKEN_FILE",
        "FILE",
        "read the admin token from FILE",
        "admin_token",
        value(
            |c, v| secret_from_file(c, v, "admin-token", |c| &mut c.admin_token),
            |_| "none".into(),
        ),
    ),
    flag(
        "sandbox",
        "SANDBOX",
        "auto|bubblewrap|off",
        "run each claude child in a bubblewrap sandbox (auto: when authentication is on)",
        "sandbox",
        value(
            |c, v| SandboxMode::parse(v).map(|m| c.sandbox = m),
            |c| c.sandbox.as_str().into(),
        ),
    ),
    flag(
        "bwrap",
        "CLAUDE_WS_BWRAP",
        "PATH",
        "the bubblewrap executable for --sandbox",
        "bwrap",
        value(
            |c, v| nonempty(v).map(|v| c.bwrap = PathBuf::from(v)),
            |c| c.bwrap.display().to_string(),
        ),
    ),
    flag(
        "shared-workspace",
        "SHARED_WORKSPACE",
        "BOOL",
        "with the sandbox, one workspace for everybody instead of one per principal",
        "shared_workspace",
        value(
            |c, v| boolean(v).map(|v| c.shared_workspace = v),
            |c| c.shared_workspace.to_string(),
        ),
    ),
    flag(
        "log-format",
        "LOG_FORMAT",
        "text|json",
        "log lines as text, or as one JSON object per line for log shippers",
        "log_format",
        value(
            |c, v| {
                c.log_format = match v.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err("expected text or json".into()),
                };
                Ok(())
            },
            |c| match c.log_format {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            },
        ),
    ),
];

/// What the command line asked for.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    Help(String),
    Version(String),
}

/// A flag, environment value or `Config` field that cannot be used, and why. Each
/// displays as the one line `claude-ws` prints before it exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A command-line argument that is not a flag (`stray`).
    UnexpectedArgument(String),
    /// A `--name` this server has no flag for.
    UnknownFlag(String),
    /// A flag last on the command line, with no value after it.
    MissingValue(&'static str),
    /// A flag's or environment variable's value cannot be used. `source` is `--name`
    /// or the variable's name, `value` the value as errors show it (quoted, or
    /// `<redacted>` for a secret), `None` when this setting was not given but clashes
    /// with one that was.
    BadValue {
        flag: &'static str,
        source: String,
        value: Option<String>,
        reason: String,
    },
    /// A `Config` built in code breaks a rule ([`Config::validate`]): its field, the
    /// flag that sets it, and why.
    Invalid {
        field: &'static str,
        flag: &'static str,
        reason: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::UnexpectedArgument(arg) => {
                write!(f, "unexpected argument {arg:?} (see --help)")
            }
            ConfigError::UnknownFlag(name) => write!(f, "unknown flag --{name} (see --help)"),
            ConfigError::MissingValue(name) => write!(f, "--{name} needs a value"),
            ConfigError::BadValue {
                source,
                value: Some(value),
                reason,
                ..
            } => write!(f, "{source}={value}: {reason}"),
            ConfigError::BadValue {
                source,
                value: None,
                reason,
                ..
            } => write!(f, "{source}: {reason}"),
            ConfigError::Invalid {
                field,
                flag,
                reason,
            } => write!(f, "{field} (--{flag}): {reason}"),
        }
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
                return Err(ConfigError::UnexpectedArgument(arg));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(flag) = FLAGS.iter().find(|f| f.name == name) else {
                return Err(ConfigError::UnknownFlag(name.to_string()));
            };
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or(ConfigError::MissingValue(flag.name))?,
            };
            let entry = raw.entry(flag.name).or_default();
            if !flag.is_list() || !on_command_line.contains(&flag.name) {
                entry.0.clear();
                on_command_line.push(flag.name);
            }
            entry.0.push(value);
            entry.1 = format!("--{name}");
        }
        // The error about a flag: blame the flag or variable that was given.
        let bad = |flag: &Flag, reason: String| match raw.get(flag.name) {
            Some((values, source)) => ConfigError::BadValue {
                flag: flag.name,
                source: source.clone(),
                value: Some(shown(flag.name, values)),
                reason,
            },
            None => ConfigError::BadValue {
                flag: flag.name,
                source: format!("--{}", flag.name),
                value: None,
                reason,
            },
        };
        let mut c = Config::default();
        for flag in FLAGS {
            if let Some((values, _)) = raw.get(flag.name) {
                flag.set(&mut c, values).map_err(|why| bad(flag, why))?;
            }
        }
        // Settings that hang together badly.
        c.check().map_err(|(flag, why)| bad(flag, why))?;
        Ok(Invocation::Run(Box::new(c)))
    }

    /// Check every setting is within its bounds (the same ones the flags have) and
    /// that they hang together. [`Server::bind`](crate::Server::bind) calls this, so a
    /// `Config` built in code meets the same rules as one built from flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|(flag, reason)| ConfigError::Invalid {
            field: flag.field,
            flag: flag.name,
            reason,
        })
    }

    /// The first setting that breaks its rules: its flag, and what is wrong.
    fn check(&self) -> Result<(), (&'static Flag, String)> {
        FLAGS
            .iter()
            .try_for_each(|flag| flag.validate(self).map_err(|why| (flag, why)))
    }

    /// Where each principal's CLI state goes: [`Config::state_dir`] when set; else,
    /// with authentication on (`authenticated`), `$HOME/.local/state/claude-ws`, as
    /// several principals must be kept apart even when no directory was named; else
    /// none (the CLI's own location).
    pub(crate) fn state_dir_or_default(
        &self,
        home: Option<&str>,
        authenticated: bool,
    ) -> Option<PathBuf> {
        self.state_dir.clone().or_else(|| {
            authenticated
                .then(|| home.map(|h| PathBuf::from(h).join(AUTHENTICATED_STATE_DIR)))
                .flatten()
        })
    }
}

/// `Ok` when `ok`, else the reason.
fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// A secret, when given, is not empty: an empty one would let an empty credential
/// through.
fn not_empty(secret: &Option<String>) -> Result<(), String> {
    ensure(secret.as_deref() != Some(""), || "must not be empty".into())
}

/// `--NAME-file`: the secret in `file`, without its line ending, into the field `slot`
/// picks (refused when `--NAME` set it too); the file is remembered, for the sandbox
/// hides it.
fn secret_from_file(
    c: &mut Config,
    file: &str,
    plain: &str,
    slot: fn(&mut Config) -> &mut Option<String>,
) -> Result<(), String> {
    let text =
        std::fs::read_to_string(nonempty(file)?).map_err(|e| format!("cannot read {file}: {e}"))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("{file} is empty"));
    }
    if slot(c).is_some() {
        return Err(format!("--{plain} is set too: give one of the two"));
    }
    *slot(c) = Some(secret.to_string());
    c.secret_files.push(PathBuf::from(file));
    Ok(())
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
    let n = PORT
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
            f.show(&d)
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
                !flag.show(&d).is_empty(),
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
        assert_eq!(c.timeouts.session_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = run(&["--port", "x"], &[]).unwrap_err();
        assert!(e.to_string().starts_with("--port="), "{e}");
        let e = run(&[], &[("MAX_SESSIONS", "-1")]).unwrap_err();
        assert!(e.to_string().starts_with("MAX_SESSIONS="), "{e}");
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
        assert_eq!(c.timeouts.child_idle, None);
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
            e.to_string()
                .starts_with("WARM_CHILDREN=\"3\": at most --max-running (2)"),
            "{e}"
        );
        assert!(run(&["--warm-children=-1"], &[]).is_err());
        let c = Config {
            max_running: 1,
            warm_children: 2,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("warm_children"));
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let e = run(&["--auth-token="], &[]).unwrap_err();
        assert!(e.to_string().contains("<redacted>"), "{e}");
    }

    #[test]
    fn every_flag_has_one_row() {
        for (i, f) in FLAGS.iter().enumerate() {
            for g in &FLAGS[i + 1..] {
                assert_ne!(f.name, g.name);
                assert_ne!(f.env, g.env);
                // A `--NAME-file` row sets the same field as `--NAME`, by design.
                if !f.name.ends_with("-file") && !g.name.ends_with("-file") {
                    assert_ne!(f.field, g.field);
                }
            }
        }
    }

    /// A number or duration given to a flag reads back from the field the row names:
    /// its `get` and `set` are the same field.
    #[test]
    fn numbers_and_durations_read_back_from_their_field() {
        for f in FLAGS {
            let given = match f.kind {
                Kind::Count {
                    rule: Rule::Count { min, .. },
                    ..
                } => min.max(1).to_string(),
                Kind::Span { .. } => "7".to_string(),
                _ => continue,
            };
            let c = run(&[&format!("--{}={given}", f.name)], &[]).unwrap();
            assert_eq!(f.show(&c), given, "--{}", f.name);
        }
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
