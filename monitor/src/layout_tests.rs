//! The layout follows the data (issue 9): no module imports a stage after its own, and the
//! sinks never import each other. Read from the source files themselves.

use std::path::{Path, PathBuf};

/// Top-level modules by stage; a module may import only modules of its own or an earlier
/// stage (sinks, stage 9, not even each other).
const STAGES: &[(&str, u8)] = &[
    ("defaults", 1),
    ("bounded", 1),
    ("host", 2),
    ("kernel", 3),
    ("naming", 4),
    ("engine", 5),
    ("policy", 6),
    ("finding", 7),
    ("watch", 8),
    ("protocol", 8),
    ("report", 8),
    ("audit", 9),
    ("daemon", 9),
    ("notify", 9),
    ("client", 9),
    ("install", 9),
    ("cli", 10),
];

const SINK: u8 = 9;

fn stage(module: &str) -> Option<u8> {
    STAGES.iter().find(|(m, _)| *m == module).map(|(_, s)| *s)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`kernel/wire.rs` -> `kernel`).
fn owner(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every `crate::module` a source text names.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    // `use crate::{a, b::c, d::{e, f}}` lists: the first name of each top-level item.
    let mut rest = text;
    while let Some(i) = rest.find("use crate::{") {
        rest = &rest[i + "use crate::{".len()..];
        let mut depth = 0;
        let mut at_item_start = true;
        for (pos, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    rest = &rest[pos..];
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => at_item_start = true,
                c if at_item_start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                    let name: String = rest[pos..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    out.push(name);
                    at_item_start = false;
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn layout_no_stage_imports_a_later_one_and_sinks_stay_apart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = owner(&root, file) else {
            continue;
        };
        if matches!(module.as_str(), "lib" | "main" | "bin" | "layout_tests") {
            continue;
        }
        let own = stage(&module)
            .unwrap_or_else(|| panic!("{module} has no stage in layout_tests.rs: give it one"));
        let text = std::fs::read_to_string(file).unwrap();
        for imported in imports(&text) {
            let Some(theirs) = stage(&imported) else {
                continue;
            };
            let later = theirs > own;
            let other_sink = own == SINK && theirs == SINK && imported != module;
            if later || other_sink {
                violations.push(format!(
                    "{} (stage {own}) imports {imported} (stage {theirs})",
                    file.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn layout_import_scanner_sees_nested_use_lists() {
    let text = "use crate::{\n    engine::Engine,\n    host::{clock::Clock, users},\n    kernel,\n};\nlet x = crate::audit::run;";
    let mut got = imports(text);
    got.sort();
    got.dedup();
    assert_eq!(got, ["audit", "engine", "host", "kernel"]);
}

#[test]
fn layout_files_stay_small_and_main_thin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    for file in &files {
        let lines = std::fs::read_to_string(file).unwrap().lines().count();
        assert!(lines <= 600, "{} has {lines} lines", file.display());
    }
    let main = std::fs::read_to_string(root.join("main.rs")).unwrap();
    assert!(main.lines().count() <= 150, "main.rs grew past 150 lines");
    for sink in ["daemon", "notify", "protocol.rs", "client.rs"] {
        let mut files = Vec::new();
        let p = root.join(sink);
        if p.is_dir() {
            sources(&p, &mut files);
        } else {
            files.push(p);
        }
        for f in files.iter().filter(|f| !f.ends_with("tests.rs")) {
            let text = std::fs::read_to_string(f).unwrap();
            // Tests may look at the wire format itself.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            assert!(
                !text.contains("json!(") && !text.contains("serde_json::Value"),
                "{}: untyped JSON between components",
                f.display()
            );
        }
    }
}
