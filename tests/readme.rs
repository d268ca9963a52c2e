//! The reference in `docs/` is held to the code: every flag `--help` prints is in the
//! flag table of `docs/operations.md`, every message type the server sends or takes has
//! an example in `docs/protocol.md`, and every error code is listed there. The README,
//! the front page, links to each reference document.

use std::process::Command;

fn doc(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The flag reference.
fn operations() -> String {
    doc("docs/operations.md")
}

/// The protocol reference.
fn protocol() -> String {
    doc("docs/protocol.md")
}

fn protocol_source() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol.rs"))
        .expect("src/protocol.rs")
}

/// The quoted strings in lines of `source` that contain `marker`, e.g. `=> "pong"`.
fn quoted_after(source: &str, marker: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.split_once(marker).map(|(_, rest)| rest))
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split_once('"').map(|(s, _)| s.to_string()))
        .collect()
}

#[test]
fn every_flag_is_in_the_flag_table() {
    let help = Command::new(env!("CARGO_BIN_EXE_claude-ws"))
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let reference = operations();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|f| *f != "help" && *f != "version")
        .collect();
    assert!(flags.len() > 30, "{help}");
    for flag in flags {
        assert!(
            reference.contains(&format!("| `--{flag}` |")),
            "--{flag} is not in the flag table of docs/operations.md"
        );
    }
}

#[test]
fn every_message_type_has_an_example() {
    let source = protocol_source();
    let reference = protocol();
    // Server messages: `ServerMessage::X { .. } => "kind"`.
    let sent: Vec<String> = source
        .lines()
        .filter(|l| l.contains("ServerMessage::"))
        .flat_map(|l| quoted_after(l, "=> "))
        .collect();
    assert!(sent.len() > 15, "{sent:?}");
    for kind in sent {
        assert!(
            reference.contains(&format!("{{\"type\":\"{kind}\"")),
            "no example of the server message {kind} in docs/protocol.md"
        );
    }
    // Client messages: the arms of `parse_client_value`'s `match kind`.
    let start = source
        .find("match kind.as_str() {")
        .expect("the client parser");
    let end = source[start..].find("other => Err").expect("its last arm") + start;
    let taken: Vec<String> = source[start..end]
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('"'))
        .filter_map(|l| l.split_once("=>").map(|(arm, _)| arm))
        .flat_map(|arm| arm.split('|'))
        .map(|k| k.trim().trim_matches('"').to_string())
        .collect();
    assert!(taken.len() > 10, "{taken:?}");
    for kind in taken {
        assert!(
            reference.contains(&format!("{{\"type\":\"{kind}\"")),
            "no example of the client message {kind} in docs/protocol.md"
        );
    }
}

/// `/sdk`'s own frames have an example, and each control-request subtype its policy
/// passes or refuses is in the table of docs/protocol.md.
#[test]
fn the_sdk_frames_and_subtypes_are_documented() {
    let reference = protocol();
    for kind in ["sdk_start", "sdk_started", "sdk_queued", "sdk_end_input"] {
        assert!(
            reference.contains(&format!("{{\"type\":\"{kind}\"")),
            "no example of the /sdk frame {kind} in docs/protocol.md"
        );
    }
    let policy = doc("src/sdk/policy.rs");
    let start = policy
        .find("pub const PASSED")
        .expect("the passed subtypes");
    let end = policy
        .find("pub enum Verdict")
        .expect("after the refused subtypes");
    let lists = &policy[start..end];
    let subtypes: Vec<String> = lists
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('"') || l.starts_with("(\""))
        .filter_map(|l| {
            l.trim_start_matches('(')
                .split('"')
                .nth(1)
                .map(str::to_string)
        })
        .filter(|s| !s.contains(' '))
        .collect();
    assert!(subtypes.len() >= 14, "{subtypes:?}");
    for s in subtypes {
        assert!(
            reference.contains(&format!("| `{s}` |")),
            "the /sdk subtype {s} is not in docs/protocol.md's table"
        );
    }
}

#[test]
fn every_error_code_is_listed() {
    let source = protocol_source();
    let reference = protocol();
    let codes: Vec<String> = source
        .lines()
        .filter(|l| l.contains("ErrorCode::"))
        .flat_map(|l| quoted_after(l, "=> "))
        .collect();
    assert!(codes.len() > 25, "{codes:?}");
    for code in codes {
        assert!(
            reference.contains(&format!("`{code}`")),
            "the error code {code} is not in docs/protocol.md"
        );
    }
}

#[test]
fn the_readme_links_to_every_reference_document() {
    let readme = doc("README.md");
    for file in [
        "docs/protocol.md",
        "docs/operations.md",
        "docs/security.md",
        "docs/performance.md",
        "docs/design.md",
    ] {
        assert!(
            readme.contains(&format!("]({file})")),
            "the README does not link to {file}"
        );
        assert!(!doc(file).is_empty(), "{file} is empty");
    }
}

/// The versions the README names as supported are the ones scripts/install-claude.sh
/// pins (the newest) and installs as `oldest` (CI's second pass).
#[test]
fn the_readme_names_the_pinned_and_oldest_cli() {
    let script = doc("scripts/install-claude.sh");
    let value = |name: &str| {
        script
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {name}=\"…\" in scripts/install-claude.sh"))
            .to_string()
    };
    let readme = doc("README.md");
    for (name, role) in [("PINNED", "the newest"), ("OLDEST", "the oldest")] {
        let version = value(name);
        let line = format!("**{version}** ({role}");
        assert!(readme.contains(&line), "the README does not say {line:?}");
    }
}

/// Every `docs/<name>.md` the code, scripts, examples and other docs point a reader to
/// exists (a document renamed or folded into another leaves no dangling pointer).
#[test]
fn every_document_pointed_to_exists() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut dangling = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = [
        "src", "tests", "scripts", "examples", "deploy", "docs", ".ci",
    ]
    .iter()
    .map(|d| std::path::Path::new(root).join(d))
    .collect();
    stack.push(std::path::Path::new(root).join("README.md"));
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "node_modules") {
                continue;
            }
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                stack.push(entry.path());
            }
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not text
        };
        for (i, _) in text.match_indices("docs/") {
            let name: String = text[i + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if name.is_empty() || !text[i + 5 + name.len()..].starts_with(".md") {
                continue;
            }
            if !std::path::Path::new(root)
                .join(format!("docs/{name}.md"))
                .exists()
            {
                dangling.push(format!("{}: docs/{name}.md", path.display()));
            }
        }
    }
    assert!(
        dangling.is_empty(),
        "documents that do not exist: {dangling:#?}"
    );
}
