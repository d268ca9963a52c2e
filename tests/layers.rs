//! The modules of `src/` form a stack: each sits on a floor and imports only from the
//! floors below it, so there is no circle of imports and one query reads from the top
//! down. This test scans every `crate::…` path in `src/` (comments left out) and fails
//! on an import from the same floor or above, and on a module with no floor.
//!
//! A new module: put it in [`FLOORS`] on the lowest floor above every module it
//! imports (a new floor between two others is fine), and make sure nothing it imports
//! imports it. The failure message names the floor it fits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The floors, lowest first. A module may import only modules on lower floors.
const FLOORS: &[&[&str]] = &[
    // Leaves: std and the packages only.
    &["util", "sys", "json", "proxy", "replay"],
    // The wire format and the settings.
    &["protocol", "config"],
    &["metrics", "tools", "query", "limits", "auth", "features"],
    // The bubblewrap sandbox a child is started in.
    &["sandbox"],
    // The two ends: the child process and the client socket; the CLI's stream-json.
    &["pending", "cli", "tool_registry", "child", "link"],
    &["registry", "spec"],
    // The on-disk records of conversations (`resume` by a session id, history).
    &["places", "conversations"],
    &["warm", "history"],
    // What every thread shares.
    &["state"],
    &["handle", "preflight", "handshake", "workspace"],
    // A connection's session: claude-ws's protocol (`/ws`), the SDKs' relay (`/sdk`).
    &["session", "sdk"],
    // The side port, plain HTTP on the WebSocket port, the accept loop.
    &["http"],
    &["web"],
    &["server"],
];

/// Every `.rs` file under `src`.
fn source_files(src: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// Module name → the modules of the crate it names in `crate::` paths. `src/x.rs` and
/// everything under `src/x/` are the module `x`; `lib.rs` and `main.rs` are the root,
/// above every floor.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = source_files(&src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let names = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            names.extend(crate_paths(code));
        }
        names.remove(&module);
    }
    graph
}

/// The first segment of each `crate::` path in `code`, including each name inside
/// `crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::`, `foo_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in list.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(ident(item.trim()));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

#[test]
fn every_module_imports_only_from_the_floors_below() {
    let graph = imports();
    assert!(graph.len() > 20, "{graph:?}");
    let mut failures = Vec::new();
    for (module, names) in &graph {
        // Only names that are modules of this crate (not `crate::Config`, a re-export).
        let deps: Vec<&String> = names.iter().filter(|n| graph.contains_key(*n)).collect();
        let Some(floor) = floor_of(module) else {
            let lowest = deps
                .iter()
                .filter_map(|d| floor_of(d))
                .max()
                .map_or(0, |f| f + 1);
            failures.push(format!(
                "src/{module} has no floor: add \"{module}\" to FLOORS in tests/layers.rs on \
                 floor {lowest} (0 = lowest) or higher, the lowest above everything it imports \
                 ({deps:?}); a new floor in between is fine"
            ));
            continue;
        };
        for dep in deps {
            match floor_of(dep) {
                Some(f) if f < floor => {}
                Some(f) => failures.push(format!(
                    "src/{module} (floor {floor}) imports {dep} (floor {f}): a module imports \
                     only from lower floors. Move what it needs down (e.g. into a leaf such as \
                     util.rs), or pass it in from above"
                )),
                None => {} // reported as a module with no floor
            }
        }
    }
    for floor in FLOORS {
        for module in *floor {
            if !graph.contains_key(*module) {
                failures.push(format!(
                    "FLOORS in tests/layers.rs names {module}, which is not a module of src/"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_scan_reads_braced_and_plain_paths() {
    assert_eq!(
        crate_paths("use crate::{http, session::{a, b}, sys};"),
        ["http", "session", "sys"]
    );
    assert_eq!(
        crate_paths("let x = crate::util::lock(&m); $crate::no"),
        ["util"]
    );
}

/// `docs/design.md` shows the same floors as [`FLOORS`] and names every source file in
/// its module list, so the map a newcomer reads is the one the build holds.
#[test]
fn the_design_doc_shows_these_floors_and_every_module() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/design.md")).expect("docs/design.md");
    let mut shown: Vec<Vec<String>> = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| 3 | pending, cli |`: ["", "3", "pending, cli", ""]
        if cells.len() == 4 && cells[1].parse::<usize>() == Ok(shown.len()) {
            shown.push(cells[2].split(',').map(|m| m.trim().to_string()).collect());
        }
    }
    let held: Vec<Vec<String>> = FLOORS
        .iter()
        .map(|f| f.iter().map(|m| m.to_string()).collect())
        .collect();
    assert_eq!(
        shown, held,
        "docs/design.md's floor table differs from FLOORS"
    );
    let missing: Vec<String> = source_files(&Path::new(root).join("src"))
        .iter()
        .map(|path| path.strip_prefix(root).unwrap().display().to_string())
        .filter(|rel| !doc.contains(rel.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/design.md's module list lacks {missing:?}"
    );
}
