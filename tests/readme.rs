//! The README is the protocol reference and the flag reference: hold it to the code.
//! Every flag `--help` prints is in its flag table, every message type the server
//! sends or takes has an example, and every error code is listed.

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
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
fn every_flag_is_in_the_readme_table() {
    let help = Command::new(env!("CARGO_BIN_EXE_claude-ws"))
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let readme = readme();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|f| *f != "help" && *f != "version")
        .collect();
    assert!(flags.len() > 30, "{help}");
    for flag in flags {
        assert!(
            readme.contains(&format!("| `--{flag}` |")),
            "--{flag} is not in the README's flag table"
        );
    }
}

#[test]
fn every_message_type_has_an_example_in_the_readme() {
    let source = protocol_source();
    let readme = readme();
    // Server messages: `ServerMessage::X { .. } => "kind"`.
    let sent: Vec<String> = source
        .lines()
        .filter(|l| l.contains("ServerMessage::"))
        .flat_map(|l| quoted_after(l, "=> "))
        .collect();
    assert!(sent.len() > 15, "{sent:?}");
    for kind in sent {
        assert!(
            readme.contains(&format!("{{\"type\":\"{kind}\"")),
            "no example of the server message {kind} in the README"
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
            readme.contains(&format!("{{\"type\":\"{kind}\"")),
            "no example of the client message {kind} in the README"
        );
    }
}

#[test]
fn every_error_code_is_listed() {
    let source = protocol_source();
    let readme = readme();
    let codes: Vec<String> = source
        .lines()
        .filter(|l| l.contains("ErrorCode::"))
        .flat_map(|l| quoted_after(l, "=> "))
        .collect();
    assert!(codes.len() > 25, "{codes:?}");
    for code in codes {
        assert!(
            readme.contains(&format!("`{code}`")),
            "the error code {code} is not in the README"
        );
    }
}
