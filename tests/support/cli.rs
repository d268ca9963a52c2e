//! Finding the real `claude` CLI and building the offline environment it runs in,
//! plus self-removing temp dirs: shared by every test that starts the real CLI.

// Shared by several test crates; each uses a different subset, so unused items are
// expected.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Names the CLI binary to test instead of the one scripts/install-claude.sh installs.
pub const CLAUDE_ENV: &str = "CLAUDE_WS_TEST_CLAUDE";

/// The flags that make the CLI speak stream-json both ways in one long-lived process.
pub const STREAM_JSON_ARGS: [&str; 6] = [
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--input-format",
    "stream-json",
];

/// The real CLI: `$CLAUDE_WS_TEST_CLAUDE` if set, else the pinned copy that
/// scripts/install-claude.sh puts in `<repo>/.claude-cli`. Panics (never skips) when
/// it is missing, saying how to install it.
pub fn real_claude() -> PathBuf {
    let path = match std::env::var_os(CLAUDE_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".claude-cli/node_modules/.bin/claude"),
    };
    if !path.is_file() {
        panic!(
            "the real claude CLI is not at {}: run scripts/install-claude.sh \
             (or set {CLAUDE_ENV} to a claude binary)",
            path.display()
        );
    }
    path
}

/// The whole environment for a CLI child (use with `env_clear()`): PATH, a private
/// HOME (sessions land in `HOME/.claude/projects`), the mock API, no telemetry,
/// no auto-update, no other network traffic.
pub fn cli_env(home: &Path, api_url: &str) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    [
        ("PATH", path.as_str()),
        ("HOME", &home.display().to_string()),
        ("ANTHROPIC_BASE_URL", api_url),
        ("ANTHROPIC_API_KEY", "test-key"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/claude-ws-<label>-<pid>-<n>`, unique within this test run.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("claude-ws-{label}-{}-{n}", std::process::id()));
        // A leftover from an earlier run with the same pid would mix state in.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
