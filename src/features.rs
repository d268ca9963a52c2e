//! What the installed CLI offers, found out by asking it rather than guessed from its
//! version (docs/cli-versions.md): the flags its `--help` lists, read once at start-up
//! by the probe (`preflight.rs`), and what the first `system/init` of any child says
//! (its `capabilities`, whether its tools include `ToolSearch`). `/health` shows them
//! and the path the server takes for each choice that depends on them.
//!
//! The paths:
//! - client-defined tools: the `ws` MCP server entry always carries `alwaysLoad: true`
//!   (`tools::mcp_config`). CLIs with tool search (2.1.332) then offer the tools
//!   directly instead of behind `ToolSearch`; older ones (2.1.197, checked) accept the
//!   key and change nothing, so no choice is needed — `/health` says whether tool
//!   search was seen.
//! - warm children (`warm.rs`): the first started ahead and sent `initialize` (the
//!   fastest first answer), the others parked spares (`--await-claim`, bound by a
//!   `claim_session` control request) where the CLI takes `--await-claim`. 2.1.332
//!   hides the flag from `--help`, so the start-up check asks the CLI itself
//!   ([`ClaimProbe`]): a parked spare started with stdin at its end exits 0 at once; a
//!   CLI that does not know the flag exits 1 with `error: unknown option
//!   '--await-claim'` (2.1.197, checked).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::protocol::ServerMessage;

/// The flag that starts a parked spare, claimed later with `claim_session`.
pub const AWAIT_CLAIM_FLAG: &str = "--await-claim";

/// What the CLI said to `--await-claim` (the start-up check's probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimProbe {
    /// It started as a parked spare (and exited when its stdin ended).
    Accepted,
    /// It refused the flag: `unknown option`.
    Unknown,
    /// Not asked: no warm children are kept.
    NotAsked,
    /// The probe failed otherwise (the reason): parked spares are not used.
    Failed(String),
}

impl ClaimProbe {
    /// Read the probe's exit: `ok` (exit status 0) and its stderr.
    pub fn of(ok: bool, stderr: &str) -> ClaimProbe {
        if ok {
            ClaimProbe::Accepted
        } else if stderr.contains("unknown option") && stderr.contains(AWAIT_CLAIM_FLAG) {
            ClaimProbe::Unknown
        } else {
            ClaimProbe::Failed(crate::util::truncate(stderr.trim(), 300).to_string())
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ClaimProbe::Accepted => "accepted",
            ClaimProbe::Unknown => "unknown_option",
            ClaimProbe::NotAsked => "not_asked",
            ClaimProbe::Failed(_) => "failed",
        }
    }
}

/// The flags a `claude --help` text lists (`--name` words), sorted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HelpFlags(BTreeSet<String>);

impl HelpFlags {
    /// Every `--word` of `help` (lowercase letters, digits and dashes).
    pub fn parse(help: &str) -> HelpFlags {
        let mut flags = BTreeSet::new();
        for (i, _) in help.match_indices("--") {
            let before = help[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '-') {
                continue;
            }
            let name: String = help[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                flags.insert(format!("--{name}"));
            }
        }
        HelpFlags(flags)
    }

    pub fn has(&self, flag: &str) -> bool {
        self.0.contains(flag)
    }

    #[allow(clippy::len_without_is_empty)] // a count for the log and /health only
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// What a child's `system/init` said about the CLI.
#[derive(Debug, Clone, PartialEq)]
pub struct InitFeatures {
    /// `capabilities` (newer CLIs; empty where the line has none).
    pub capabilities: Vec<String>,
    /// Whether `tools` includes `ToolSearch`: the CLI defers MCP tools unless told not to.
    pub tool_search: bool,
}

impl InitFeatures {
    pub fn of(init: &Map<String, Value>) -> InitFeatures {
        let strings = |key: &str| -> Vec<String> {
            init.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        InitFeatures {
            capabilities: strings("capabilities"),
            tool_search: strings("tools").iter().any(|t| t == "ToolSearch"),
        }
    }
}

/// What was found out, each part once.
#[derive(Debug, Default)]
pub struct Detected {
    /// The flags of `claude --help`, or why it could not be read.
    pub help: OnceLock<Result<HelpFlags, String>>,
    /// The first `system/init` any child printed.
    pub init: OnceLock<InitFeatures>,
    /// Whether the CLI takes `--await-claim` (asked once at start-up).
    pub claim: OnceLock<ClaimProbe>,
}

impl Detected {
    /// Note what a `system/init` line says (only the first one counts: one binary).
    pub fn learn_init(&self, message: &ServerMessage) {
        if self.init.get().is_some() {
            return;
        }
        if let ServerMessage::SystemMessage(line) = message {
            let _ = self.init.set(InitFeatures::of(line));
        }
    }

    /// Whether parked spares may be used: the CLI took `--await-claim` (or its
    /// `--help` lists it).
    pub fn parked_spares(&self) -> bool {
        self.claim.get() == Some(&ClaimProbe::Accepted)
            || matches!(self.help.get(), Some(Ok(f)) if f.has(AWAIT_CLAIM_FLAG))
    }

    /// `/health`'s `claude.features`: what was detected and the paths in use.
    pub fn health(&self) -> Value {
        let help = match self.help.get() {
            None => json!({"status": "checking"}),
            Some(Ok(f)) => json!({"status": "ok", "flags": f.len(),
                "await_claim": f.has(AWAIT_CLAIM_FLAG)}),
            Some(Err(e)) => json!({"status": "error", "error": e}),
        };
        let claim = match self.claim.get() {
            None => json!({"status": "checking"}),
            Some(ClaimProbe::Failed(e)) => json!({"status": "failed", "error": e}),
            Some(p) => json!({"status": p.name()}),
        };
        let init = self.init.get().map_or(
            Value::Null,
            |i| json!({"capabilities": i.capabilities, "tool_search": i.tool_search}),
        );
        json!({
            "help": help,
            "await_claim": claim,
            "init": init,
            "paths": {
                "client_tools": "always_load",
                // The first warm child is started ahead; the others parked where the
                // CLI can park them (`warm.rs`).
                "warm": if self.parked_spares() { "initialize_ahead+parked_spare" } else { "initialize_ahead" },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_flags_are_the_double_dash_words() {
        let f = HelpFlags::parse(
            "  -p, --print  Print\n  --allowed-tools, --allowedTools <tools...>\n  \
             --mcp-config <configs...>  e.g. '{\"a\":1}' -- not-a-flag x--y\n",
        );
        let all: Vec<&str> = f.0.iter().map(String::as_str).collect();
        assert_eq!(
            all,
            ["--allowed", "--allowed-tools", "--mcp-config", "--print"]
        );
        assert!(!f.has(AWAIT_CLAIM_FLAG));
        assert!(HelpFlags::parse("  --await-claim  park\n").has(AWAIT_CLAIM_FLAG));
    }

    #[test]
    fn init_says_capabilities_and_tool_search() {
        let Value::Object(new) = json!({"type": "system", "subtype": "init",
            "tools": ["Bash", "ToolSearch"], "capabilities": ["interrupt_receipt_v1"]})
        else {
            unreachable!()
        };
        let i = InitFeatures::of(&new);
        assert_eq!(i.capabilities, ["interrupt_receipt_v1"]);
        assert!(i.tool_search);
        let Value::Object(old) = json!({"type": "system", "subtype": "init", "tools": ["Bash"]})
        else {
            unreachable!()
        };
        assert_eq!(
            InitFeatures::of(&old),
            InitFeatures {
                capabilities: vec![],
                tool_search: false
            }
        );
        let d = Detected::default();
        d.learn_init(&ServerMessage::SystemMessage(new));
        d.learn_init(&ServerMessage::SystemMessage(old));
        assert_eq!(d.health()["init"]["tool_search"], true);
        assert_eq!(d.health()["paths"]["warm"], "initialize_ahead");
    }

    #[test]
    fn the_claim_probe_reads_the_exit() {
        assert_eq!(ClaimProbe::of(true, ""), ClaimProbe::Accepted);
        // 2.1.197's own words.
        let old = "error: unknown option '--await-claim'\n";
        assert_eq!(ClaimProbe::of(false, old), ClaimProbe::Unknown);
        assert!(matches!(ClaimProbe::of(false, "boom"), ClaimProbe::Failed(e) if e == "boom"));
        let d = Detected::default();
        assert_eq!(d.health()["await_claim"]["status"], "checking");
        d.claim.set(ClaimProbe::of(false, old)).unwrap();
        assert!(!d.parked_spares());
        let d = Detected::default();
        d.claim.set(ClaimProbe::Accepted).unwrap();
        assert!(d.parked_spares());
        assert_eq!(d.health()["await_claim"]["status"], "accepted");
        assert_eq!(d.health()["paths"]["warm"], "initialize_ahead+parked_spare");
    }
}
