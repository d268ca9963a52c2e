//! What child a query asks for: `query.options` checked against the operator's policy
//! and made a typed [`ChildPlan`] (which conversation, client tools or not, the other
//! flags checked), a working directory and an allow-listed environment. The plan is
//! what the session compares and changes; it becomes an argv vector (never a shell
//! line) once, at spawn ([`ChildPlan::spec`]), and nothing reads argv back.

use std::path::{Component, Path, PathBuf};

use crate::child::ChildSpec;
use crate::cli::BASE_ARGS;
use crate::config::Config;
use crate::protocol::{ClientError, ErrorCode, QueryOptions};
use crate::sandbox::Jail;
use crate::tools::{self, Tools};

/// Longest path accepted as `cwd`.
const MAX_PATH: usize = 1024;

/// Environment variables every child gets when the server has them.
const ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "TERM",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "DISABLE_TELEMETRY",
    "DISABLE_AUTOUPDATER",
    "DISABLE_ERROR_REPORTING",
];
/// Prefixes of environment variables every child gets (the CLI's own settings).
const ENV_ALLOW_PREFIXES: &[&str] = &["ANTHROPIC_", "CLAUDE_", "LC_"];
/// Never passed, whatever the lists say: `CLAUDECODE` makes the CLI believe it runs
/// nested inside another Claude Code session; `CLAUDE_WS_*` are this server's own
/// settings (its auth token and JWT secret among them).
const ENV_DENY: &[&str] = &["CLAUDECODE"];
const ENV_DENY_PREFIXES: &[&str] = &["CLAUDE_WS_"];

/// The child's environment: the allow-list above plus `pass_env`, taken from `vars`.
pub fn child_env(
    vars: impl IntoIterator<Item = (String, String)>,
    pass_env: &[String],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| {
            !ENV_DENY.contains(&k.as_str())
                && !ENV_DENY_PREFIXES.iter().any(|p| k.starts_with(p))
                && (ENV_ALLOW.contains(&k.as_str())
                    || ENV_ALLOW_PREFIXES.iter().any(|p| k.starts_with(p))
                    || pass_env.iter().any(|p| p == k))
        })
        .collect();
    env.sort();
    env
}

/// Which conversation a child goes on with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Conversation {
    /// A new one.
    #[default]
    New,
    /// The CLI conversation of this id (`--resume`).
    Resume(String),
    /// The directory's most recent one (`--continue`).
    Continue,
}

/// The child a query asks for, checked: built once per query, compared with the live
/// child's to decide whether that one serves, and rendered to argv once, at spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildPlan {
    pub program: PathBuf,
    /// The conversation it goes on with.
    pub conversation: Conversation,
    /// Whether it gets our SDK MCP server (client-defined tools): `--mcp-config`, and
    /// `initialize` says so.
    pub client_tools: bool,
    /// Every other option as checked flags (`--model=…`, `--allowedTools A B`, …).
    pub settings: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The complete environment; nothing of the server's own is inherited.
    pub env: Vec<(String, String)>,
    /// The sandbox it runs in (`sandbox.rs`), if any.
    pub sandbox: Option<Jail>,
}

impl ChildPlan {
    /// The same plan, continuing conversation `id`: any `continue` or `resume` the
    /// client asked for is replaced, so a restarted child picks up where the last one was.
    pub fn resuming(&self, id: &str) -> ChildPlan {
        ChildPlan {
            conversation: Conversation::Resume(id.to_string()),
            ..self.clone()
        }
    }

    /// Whether the plan names a conversation itself (`resume` or `continue`).
    pub fn picks_conversation(&self) -> bool {
        self.conversation != Conversation::New
    }

    /// What `Child::spawn` takes: the plan as argv.
    pub fn spec(&self) -> ChildSpec {
        let mut args: Vec<String> = BASE_ARGS.iter().map(|s| s.to_string()).collect();
        if self.client_tools {
            args.push(format!("--mcp-config={}", tools::mcp_config()));
        }
        args.extend(self.settings.iter().cloned());
        match &self.conversation {
            Conversation::New => {}
            Conversation::Resume(id) => args.push(format!("--resume={id}")),
            Conversation::Continue => args.push("--continue".into()),
        }
        ChildSpec {
            program: self.program.clone(),
            args,
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            sandbox: self.sandbox.clone(),
        }
    }
}

/// Build the plan for a query's options. `env` is the allow-listed environment
/// computed once at start-up.
/// `tools` are the session's client-defined tools: the child then gets our SDK MCP
/// server, and the tools are allowed without a prompt. `roots`: the workspace roots
/// of the principal (`workspace::roots`), the first the default cwd.
pub fn build(
    config: &Config,
    env: &[(String, String)],
    options: &QueryOptions,
    tools: &Tools,
    roots: &[PathBuf],
) -> Result<ChildPlan, ClientError> {
    let mut args: Vec<String> = Vec::new();

    let mut disallowed = config.disallowed_tools.clone();
    let mut allowed = options.allowed_tools.clone();
    let client_tools = !tools.is_empty();
    if client_tools {
        allowed
            .get_or_insert_with(Vec::new)
            .extend(tools.cli_names());
    }
    if let Some(tools) = &allowed {
        push_list(&mut args, "--allowedTools", tools, "allowed_tools")?;
    }
    if options
        .permission_prompts
        .unwrap_or(config.permission_prompts)
    {
        args.push("--permission-prompt-tool=stdio".into());
    }
    if let Some(tools) = &options.disallowed_tools {
        disallowed.extend(tools.iter().cloned());
    }
    if !disallowed.is_empty() {
        push_list(
            &mut args,
            "--disallowedTools",
            &disallowed,
            "disallowed_tools",
        )?;
    }
    if let Some(mode) = &options.permission_mode {
        args.push(format!(
            "--permission-mode={}",
            permission_mode(config, mode)?
        ));
    }
    if let Some(n) = options.max_thinking_tokens {
        args.push(format!("--max-thinking-tokens={n}"));
    }
    if let Some(model) = &options.model {
        args.push(format!("--model={}", model_name(model)?));
    }
    // Both given: `resume` is checked all the same, and `--continue` is what the CLI
    // acts on when it gets both (it looks at `--continue` first).
    let resume = match &options.resume {
        Some(id) => Some(value(id, "resume")?.to_string()),
        None => None,
    };
    let conversation = match (resume, options.continue_conversation) {
        (_, Some(true)) => Conversation::Continue,
        (Some(id), _) => Conversation::Resume(id),
        (None, _) => Conversation::New,
    };
    if let Some(n) = options.max_turns {
        args.push(format!("--max-turns={n}"));
    }
    if let Some(p) = &options.system_prompt {
        args.push(format!("--system-prompt={}", text(p, "system_prompt")?));
    }
    if let Some(p) = &options.append_system_prompt {
        args.push(format!(
            "--append-system-prompt={}",
            text(p, "append_system_prompt")?
        ));
    }
    if options.include_partial_messages == Some(true) {
        args.push("--include-partial-messages".into());
    }
    let cwd = match &options.cwd {
        Some(dir) => Some(confine_cwd(dir, roots)?),
        None => roots.first().cloned(),
    };
    Ok(ChildPlan {
        program: config.claude_bin.clone(),
        conversation,
        client_tools,
        settings: args,
        cwd,
        env: env.to_vec(),
        sandbox: None,
    })
}

/// The query's options, with the session's live settings where the query sets none.
pub fn with_settings(mut options: QueryOptions, settings: &QueryOptions) -> QueryOptions {
    if options.permission_mode.is_none() {
        options.permission_mode = settings.permission_mode.clone();
    }
    if options.model.is_none() {
        options.model = settings.model.clone();
    }
    if options.max_thinking_tokens.is_none() {
        options.max_thinking_tokens = settings.max_thinking_tokens;
    }
    options
}

/// A permission mode the CLI knows and the operator allows.
pub fn permission_mode<'a>(config: &Config, mode: &'a str) -> Result<&'a str, ClientError> {
    if !crate::config::PERMISSION_MODES.contains(&mode) {
        return Err(ClientError::new(
            ErrorCode::InvalidOption,
            format!(
                "unknown permission_mode {:?}; known: {}",
                crate::util::truncate(mode, 64),
                crate::config::PERMISSION_MODES.join(", ")
            ),
        ));
    }
    if !config.allowed_permission_modes.iter().any(|m| m == mode) {
        return Err(ClientError::new(
            ErrorCode::PermissionModeNotAllowed,
            format!(
                "permission_mode {mode:?} is not allowed here; allowed: {}",
                config.allowed_permission_modes.join(", ")
            ),
        ));
    }
    Ok(mode)
}

/// A model name as `--model` takes it.
pub fn model_name(model: &str) -> Result<&str, ClientError> {
    value(model, "model")
}

/// The CLI state directory of `principal` under `state_dir`: named by a hash, so no
/// principal's name can reach outside it or collide with another's.
pub fn principal_dir(state_dir: &Path, principal: &str) -> PathBuf {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(principal.as_bytes());
    let name: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    state_dir.join(name)
}

/// Create `dir` (and its parents) readable by this user only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Push `--flag v1 v2 …`. Each value is its own argv entry, so none may look like a
/// flag (the CLI would read it as one).
fn push_list(
    args: &mut Vec<String>,
    flag: &str,
    values: &[String],
    field: &str,
) -> Result<(), ClientError> {
    args.push(flag.into());
    for v in values {
        if v.starts_with('-') || v.is_empty() {
            return Err(ClientError::new(
                ErrorCode::InvalidOption,
                format!(
                    "{field} entries must be tool names, not {:?}",
                    crate::util::truncate(v, 64)
                ),
            ));
        }
        args.push(text(v, field)?.to_string());
    }
    Ok(())
}

/// A short identifier-like value (model, session id).
fn value<'a>(v: &'a str, field: &str) -> Result<&'a str, ClientError> {
    if v.is_empty() || v.starts_with('-') || v.len() > 256 || v.chars().any(char::is_whitespace) {
        return Err(ClientError::new(
            ErrorCode::InvalidOption,
            format!(
                "{field} must be a short name without spaces, not {:?}",
                crate::util::truncate(v, 64)
            ),
        ));
    }
    text(v, field)
}

/// Free text passed as `--flag=TEXT` (so a leading `-` is harmless); NUL cannot be in
/// an argv entry.
fn text<'a>(v: &'a str, field: &str) -> Result<&'a str, ClientError> {
    if v.contains('\0') {
        return Err(ClientError::new(
            ErrorCode::InvalidOption,
            format!("{field} must not contain NUL bytes"),
        ));
    }
    Ok(v)
}

/// Resolve `dir` (relative paths are taken from the first root) to a real directory
/// inside one of `roots`, comparing whole path components after following symlinks.
pub fn confine_cwd(dir: &str, roots: &[PathBuf]) -> Result<PathBuf, ClientError> {
    let refuse = |why: String| Err(ClientError::new(ErrorCode::CwdNotAllowed, why));
    if dir.is_empty() || dir.contains('\0') || dir.len() > MAX_PATH {
        return refuse(format!(
            "cwd must be a non-empty path of at most {MAX_PATH} bytes without NUL"
        ));
    }
    let Some(first) = roots.first() else {
        return refuse("no workspace root is configured".into());
    };
    let asked = Path::new(dir);
    let joined = if asked.is_absolute() {
        asked.to_path_buf()
    } else {
        first.join(asked)
    };
    let real = match std::fs::canonicalize(&joined) {
        Ok(p) if p.is_dir() => p,
        Ok(_) => return refuse(format!("cwd {dir:?} is not a directory")),
        Err(e) => return refuse(format!("cwd {dir:?} cannot be used: {e}")),
    };
    let inside = roots.iter().any(|root| {
        std::fs::canonicalize(root)
            .map(|r| is_within(&real, &r))
            .unwrap_or(false)
    });
    if inside {
        Ok(real)
    } else {
        refuse(format!(
            "cwd {dir:?} is outside the workspace roots the server allows"
        ))
    }
}

/// Whether `path` is `root` or below it, component by component (so `/srv/work-evil`
/// is not inside `/srv/work`).
fn is_within(path: &Path, root: &Path) -> bool {
    let mut p = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    for r in root
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
    {
        if p.next() != Some(r) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_compares_components_not_strings() {
        assert!(is_within(Path::new("/srv/work"), Path::new("/srv/work")));
        assert!(is_within(
            Path::new("/srv/work/a/b"),
            Path::new("/srv/work")
        ));
        assert!(!is_within(
            Path::new("/srv/work-evil"),
            Path::new("/srv/work")
        ));
        assert!(!is_within(Path::new("/srv"), Path::new("/srv/work")));
        assert!(is_within(Path::new("/anything"), Path::new("/")));
    }

    #[test]
    fn env_is_an_allow_list() {
        let vars = [
            ("PATH", "/bin"),
            ("HOME", "/h"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("ANTHROPIC_API_KEY", "k"),
            ("CLAUDE_CODE_X", "1"),
            ("CLAUDECODE", "1"),
            ("CLAUDE_WS_AUTH_TOKEN", "t"),
            ("EXTRA", "e"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let env = child_env(vars.clone(), &[]);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ANTHROPIC_API_KEY", "CLAUDE_CODE_X", "HOME", "PATH"]);
        let env = child_env(vars, &["EXTRA".into(), "CLAUDECODE".into()]);
        assert!(env.iter().any(|(k, _)| k == "EXTRA"));
        assert!(!env.iter().any(|(k, _)| k == "CLAUDECODE"));
    }

    #[test]
    fn options_become_flags_and_flag_lookalikes_are_refused() {
        let c = Config::default();
        let o = QueryOptions {
            model: Some("m1".into()),
            max_turns: Some(3),
            allowed_tools: Some(vec!["Write".into(), "Bash(ls:*)".into()]),
            system_prompt: Some("--be brief".into()),
            include_partial_messages: Some(true),
            ..Default::default()
        };
        let s = build(&c, &[], &o, &Tools::default(), &c.workspace_roots)
            .unwrap()
            .spec();
        assert_eq!(&s.args[..7], BASE_ARGS);
        for want in [
            "--model=m1",
            "--max-turns=3",
            "--allowedTools",
            "Write",
            "Bash(ls:*)",
            "--system-prompt=--be brief",
            "--include-partial-messages",
        ] {
            assert!(s.args.iter().any(|a| a == want), "{want} in {:?}", s.args);
        }
        for bad in [
            QueryOptions {
                model: Some("--dangerously-skip-permissions".into()),
                ..Default::default()
            },
            QueryOptions {
                allowed_tools: Some(vec!["--mcp-config".into()]),
                ..Default::default()
            },
            QueryOptions {
                resume: Some("a b".into()),
                ..Default::default()
            },
            QueryOptions {
                permission_mode: Some("yolo".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(
                build(&c, &[], &bad, &Tools::default(), &c.workspace_roots)
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidOption
            );
        }
        let bypass = QueryOptions {
            permission_mode: Some("bypassPermissions".into()),
            ..Default::default()
        };
        assert_eq!(
            build(&c, &[], &bypass, &Tools::default(), &c.workspace_roots)
                .unwrap_err()
                .code,
            ErrorCode::PermissionModeNotAllowed
        );
    }

    #[test]
    fn resuming_replaces_continue_and_resume() {
        let c = Config::default();
        let o = QueryOptions {
            continue_conversation: Some(true),
            resume: Some("old".into()),
            ..Default::default()
        };
        let s = build(&c, &[], &o, &Tools::default(), &c.workspace_roots)
            .unwrap()
            .resuming("new")
            .spec();
        assert!(!s
            .args
            .iter()
            .any(|a| a == "--continue" || a == "--resume=old"));
        assert!(s.args.iter().any(|a| a == "--resume=new"));
    }

    #[test]
    fn client_tools_and_permission_prompts_become_flags() {
        let mut c = Config::default();
        let mut tools = Tools::default();
        tools
            .define(crate::tools::parse_definition(serde_json::json!({"name": "Fmt"})).unwrap())
            .unwrap();
        let o = QueryOptions {
            allowed_tools: Some(vec!["Write".into()]),
            permission_prompts: Some(true),
            ..Default::default()
        };
        let plan = build(&c, &[], &o, &tools, &c.workspace_roots).unwrap();
        assert!(plan.client_tools);
        let s = plan.spec();
        assert!(s.args.iter().any(|a| a.starts_with("--mcp-config=")));
        let at = s.args.iter().position(|a| a == "--allowedTools").unwrap();
        assert_eq!(&s.args[at + 1..at + 3], ["Write", "mcp__ws__Fmt"]);
        assert!(s
            .args
            .contains(&"--permission-prompt-tool=stdio".to_string()));
        // The server's default applies when the query does not say.
        c.permission_prompts = true;
        let plan = build(
            &c,
            &[],
            &QueryOptions::default(),
            &Tools::default(),
            &c.workspace_roots,
        )
        .unwrap();
        let s = plan.spec();
        assert!(s
            .args
            .contains(&"--permission-prompt-tool=stdio".to_string()));
        assert!(!plan.client_tools);
        let no = QueryOptions {
            permission_prompts: Some(false),
            ..Default::default()
        };
        let s = build(&c, &[], &no, &Tools::default(), &c.workspace_roots)
            .unwrap()
            .spec();
        assert!(!s
            .args
            .iter()
            .any(|a| a.starts_with("--permission-prompt-tool")));
    }
}
