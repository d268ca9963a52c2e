//! What the client examples need (examples/): installed once per test binary by
//! scripts/install-example-deps.sh; when they cannot be installed, the tests fail.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs scripts/install-example-deps.sh once per test binary (two tests at once must
/// not both install).
pub fn install_deps() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let out = Command::new(repo().join("scripts/install-example-deps.sh"))
            .current_dir(repo())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/install-example-deps.sh");
        assert!(
            out.status.success(),
            "scripts/install-example-deps.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}
