//! The layout follows the data (issue 9): no module imports a stage after its own, and the
//! sinks never import each other. Read from the source files themselves.

use std::path::{Path, PathBuf};

/// Top-level modules by stage; a module may import only modules of its own or an earlier
/// stage (sinks, stage 10, not even each other).
const STAGES: &[(&str, u8)] = &[
    ("defaults", 1),
    ("bounded", 1),
    ("display", 1),
    ("host", 2),
    ("kernel", 3),
    ("naming", 4),
    ("inspect", 4),
    ("engine", 5),
    ("policy", 6),
    ("finding", 7),
    ("leak", 7),
    ("watch", 8),
    ("protocol", 8),
    ("report", 8),
    ("session", 9),
    ("audit", 10),
    ("daemon", 10),
    ("notify", 10),
    ("client", 10),
    ("install", 10),
    ("cli", 11),
];

const SINK: u8 = 10;

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

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A source text without its comments (doc links name modules they do not import).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` tree names, expanded: `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`,
/// `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_owned()];
    };
    let Some(close) = tree.rfind('}').filter(|&c| c > open) else {
        return Vec::new();
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..close];
    let (mut depth, mut start, mut items) = (0, 0, Vec::new());
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| expand(i).into_iter().map(move |p| format!("{prefix}{p}")))
        .collect()
}

/// The module a file is (`["kernel", "attach"]` for `kernel/attach.rs`, `[]` for the root).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file-modules of a crate's `src`, and for each the file-modules it imports (paths
/// through `crate::`, `super::` and `self::`, resolved to the deepest file-module named).
fn import_graph(src: &Path) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: Vec<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut out = Vec::new();
    for (file, me) in files.iter().zip(&modules) {
        let is_dir_module = matches!(
            file.file_stem().and_then(|s| s.to_str()),
            Some("mod" | "lib" | "main")
        );
        let text = code_of(&std::fs::read_to_string(file).unwrap());
        let text = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
        let mut paths = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("use ") {
            let at_word = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
            rest = &rest[i + 4..];
            if let (true, Some(end)) = (at_word, rest.find(';')) {
                paths.extend(expand(&rest[..end].replace(char::is_whitespace, "")));
            }
        }
        for prefix in ["crate::", "super::"] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(prefix) {
                rest = &rest[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                paths.push(rest[..end].to_owned());
                rest = &rest[prefix.len()..];
            }
        }
        let mut targets = Vec::new();
        for p in paths {
            let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
            let (mut base, tail): (Vec<String>, &[&str]) = match segs.first() {
                Some(&"crate") => (Vec::new(), &segs[1..]),
                Some(&"self") => (me.clone(), &segs[1..]),
                Some(&"super") => {
                    // `super` of a file module is its parent; of `kernel/mod.rs`, the root.
                    let mut b = me.clone();
                    b.pop();
                    let mut t = &segs[1..];
                    while t.first() == Some(&"super") {
                        b.pop();
                        t = &t[1..];
                    }
                    (b, t)
                }
                _ if !is_dir_module => continue,
                _ => (me.clone(), &segs[..]),
            };
            let mut best = None;
            for s in tail {
                base.push((*s).to_owned());
                if modules.contains(&base) {
                    best = Some(base.clone());
                }
            }
            if let Some(m) = best.filter(|m| m != me) {
                targets.push(m);
            }
        }
        targets.sort();
        targets.dedup();
        out.push((me.clone(), targets));
    }
    out
}

#[test]
fn layout_no_two_modules_import_each_other() {
    let root = workspace();
    let mut circles = Vec::new();
    for src in [
        "monitor/src",
        "monitor-ebpf/src",
        "monitor-common/src",
        "xtask/src",
    ] {
        let graph = import_graph(&root.join(src));
        for (a, targets) in &graph {
            for b in targets {
                // A module and the one it is declared in are one unit.
                if b.starts_with(a) || a.starts_with(b) {
                    continue;
                }
                let back = graph.iter().any(|(m, t)| m == b && t.contains(a));
                if back && a < b {
                    circles.push(format!("{src}: {} <-> {}", a.join("::"), b.join("::")));
                }
            }
        }
    }
    assert!(circles.is_empty(), "{}", circles.join("\n"));
}

#[test]
fn layout_import_graph_sees_use_trees_and_super_paths() {
    assert_eq!(
        expand("crate::{a::B,c::{d,e::F}}"),
        ["crate::a::B", "crate::c::d", "crate::c::e::F"]
    );
    assert_eq!(expand("super::x as y"), ["super::x"]);
    assert_eq!(
        code_of("let a = 1; // crate::x\n/// crate::y"),
        "let a = 1; \n"
    );
}

/// Every function of `text` longer than `max` lines: (name, lines). Functions are found as
/// rustfmt lays them out: `fn name` at some indent, closed by `}` at the same indent.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(at) = trimmed.find("fn ") else {
            continue;
        };
        let head = &trimmed[..at];
        let is_fn = head.split_whitespace().all(|w| {
            w.starts_with("pub") || matches!(w, "const" | "async" | "unsafe" | "extern" | "\"C\"")
        });
        if !is_fn || trimmed.starts_with("//") {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        let Some(end) = lines[i..].iter().position(|l| *l == close) else {
            continue;
        };
        // A declaration without a body (a trait's) ends at its `;` before any `}`.
        if lines[i..i + end]
            .iter()
            .any(|l| l.trim_end().ends_with(';') && !l.contains('{'))
            && !lines[i..i + end].iter().any(|l| l.contains('{'))
        {
            continue;
        }
        if end + 1 > max {
            let name: String = trimmed[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((name, end + 1));
        }
    }
    out
}

#[test]
fn layout_no_function_in_the_product_is_over_100_lines() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in [
        "monitor/src",
        "monitor/benches",
        "monitor-ebpf/src",
        "monitor-common/src",
        "xtask/src",
    ] {
        sources(&root.join(dir), &mut files);
    }
    let mut long = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy();
        if name.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let product = text.split("#[cfg(test)]").next().unwrap_or("");
        for (func, n) in long_functions(product, 100) {
            long.push(format!("{}: fn {func} has {n} lines", f.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these into named steps:\n{}",
        long.join("\n")
    );
}

#[test]
fn layout_long_function_finder_counts_bodies_not_declarations() {
    let body = (0..101).map(|_| "    x();\n").collect::<String>();
    let text = format!("fn short() {{\n}}\n\npub(crate) async fn long() {{\n{body}}}\n\ntrait T {{\n    fn decl(&self);\n}}\n");
    assert_eq!(long_functions(&text, 100), [("long".to_owned(), 103)]);
}
