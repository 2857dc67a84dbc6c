//! The crate's modules form layers: a module may use only modules of lower layers, the
//! leaves use nothing of the crate, and there is no import cycle. Read from the source
//! (`src/**/*.rs`, every `crate::…`, `super::…` and `use crate::{…}` path outside
//! comments), so a new import that breaks the order fails here with its file and line.
//!
//! A node is a top-level module (`src/NAME.rs` or `src/NAME/`), except the sub-modules
//! named in [`LAYERS`] (`smtp::reply`, `smtp::session`), which sit lower than the rest of
//! their parent: the SMTP reply and session types are used by the queue and the pipeline,
//! while the listener, ingest and maildrop use those.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A node may use nodes of strictly lower layers only.
/// To fix a violation: move the used item down (into a leaf or the lower module that
/// owns its data), or pass it in from above; change this table only when the new order
/// is the architecture you want (and keep `src/lib.rs`'s comments in step).
const LAYERS: &[&[&str]] = &[
    // Leaves: std and external crates only.
    &[
        "address", "backoff", "clock", "escape", "glob", "hex", "secret", "units", "validity",
    ],
    // Reading a message.
    &["message"],
    // Deciding: the policy reads the message.
    &["policy"],
    // Transforms carry out the policy's actions; each owns its config section's type.
    &["transform"],
    // The configuration file: composes the section types of the modules it configures.
    &["config"],
    // What a reload swaps: config, policy and loaded keys together.
    &["runtime"],
    // What every step from the session on writes to; an audit record names the
    // policy's verdict (actions, rule references), so it sits above policy.
    &["audit", "metrics"],
    // SMTP protocol types: replies, and the sans-IO session.
    &["smtp::reply"],
    &["smtp::session"],
    // After `250`: spool, relay, upstream, DSN.
    &["queue"],
    // The one decision path at end of DATA.
    &["pipeline"],
    // The ways in: listener, ingest, maildrop, the submit client.
    &["smtp"],
    // The operator's commands.
    &["ops"],
];

/// Edges that break the order today, each with the change that removes it. The test
/// fails when one of them no longer occurs: delete its line then.
const KNOWN: &[(&str, &str, &str)] = &[];

/// Leaves may not use any other module of the crate.
const LEAVES: &[&str] = &[
    "address", "backoff", "clock", "escape", "glob", "hex", "secret", "units", "validity",
];

/// One use of one module by another, where it is written.
#[derive(Debug, Clone)]
struct Use {
    from: String,
    to: String,
    file: String,
    line: usize,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The library's top-level modules, as `src/lib.rs` declares them.
fn library_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_string())
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/smtp/session.rs` → `["smtp", "session"]`; `src/smtp/mod.rs` → `["smtp"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// The node a module path belongs to: `smtp::reply` when that is a node of its own,
/// else the top-level module.
fn node_of(path: &[String], nodes: &BTreeSet<&str>) -> Option<String> {
    let top = path.first()?;
    if let Some(sub) = path.get(1) {
        let two = format!("{top}::{sub}");
        if nodes.contains(two.as_str()) {
            return Some(two);
        }
    }
    Some(top.clone())
}

/// Expands a use tree (`a::b`, `a::{b, c::d}`, `a::*`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let prefix: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
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
        let mut out = Vec::new();
        for item in items.into_iter().filter(|i| !i.trim().is_empty()) {
            for rest in expand(item) {
                out.push(prefix.iter().cloned().chain(rest).collect());
            }
        }
        return out;
    }
    vec![tree
        .split("::")
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .take_while(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect()]
}

/// The text of a use tree that starts at `at` (just after `crate::`): up to the matching
/// brace when it opens one, else the path itself.
fn tree_at(text: &str, at: usize) -> &str {
    let rest = &text[at..];
    let path_end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    if rest[path_end..].starts_with('{') {
        let mut depth = 0;
        for (i, c) in rest.char_indices().skip(path_end) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &rest[..=i];
                    }
                }
                _ => {}
            }
        }
    }
    &rest[..path_end]
}

/// The source without comments (line and block), strings kept; line breaks kept so
/// line numbers stay right.
fn without_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\\' && i + 1 < b.len() {
                out.push_str("  ");
                i += 2;
                continue;
            }
            if b[i] == b'"' {
                in_str = false;
            }
            out.push(if b[i] == b'\n' { '\n' } else { ' ' });
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'r'
            && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && b[i + 1..].iter().find(|&&c| c != b'#') == Some(&b'"')
        {
            // A raw string: blanked up to its closing quote and hashes.
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(&close) {
                out.push(if b[i] == b'\n' { '\n' } else { ' ' });
                i += 1;
            }
            i += close.len();
        } else if b[i] == b'"' && !(i > 0 && b[i - 1] == b'\'') {
            // String contents are blanked: a `crate::` inside one is not a use.
            in_str = true;
            out.push(' ');
            i += 1;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The inline modules of a file (`mod tests { ... }`), outermost first, with the byte
/// range of their bodies.
fn inline_modules(text: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    for (pos, _) in text.match_indices("mod ") {
        if text[..pos]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &text[pos + 4..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[name_len..].trim_start();
        if name_len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = pos + 4 + rest.len() - after.len();
        let mut depth = 0;
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((rest[..name_len].to_string(), open..open + i));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Every use of one node by another in the library's sources.
fn uses(nodes: &BTreeSet<&str>) -> Vec<Use> {
    let modules = library_modules();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src_dir()).unwrap().to_path_buf();
        let here = module_path(&rel);
        if here.is_empty() || !modules.contains(&here[0]) {
            continue; // lib.rs, main.rs and the binary's own modules
        }
        let Some(from) = node_of(&here, nodes) else {
            continue;
        };
        let text = without_comments(&std::fs::read_to_string(&file).unwrap());
        let mut found: Vec<(usize, Vec<String>)> = Vec::new();
        for (pos, _) in text.match_indices("crate::") {
            let before = text[..pos].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for p in expand(tree_at(&text, pos + "crate::".len())) {
                found.push((pos, p));
            }
        }
        let inline = inline_modules(&text);
        for (pos, _) in text.match_indices("super::") {
            let before = text[..pos].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            // Inside `mod x { ... }` blocks, `super::` starts from the innermost block.
            let mut base = here.clone();
            base.extend(
                inline
                    .iter()
                    .filter(|(_, range)| range.contains(&pos))
                    .map(|(name, _)| name.clone()),
            );
            base.pop();
            let mut at = pos + "super::".len();
            while text[at..].starts_with("super::") {
                base.pop();
                at += "super::".len();
            }
            for p in expand(tree_at(&text, at)) {
                found.push((pos, base.iter().cloned().chain(p).collect()));
            }
        }
        for (pos, path) in found {
            let Some(to) = node_of(&path, nodes) else {
                continue;
            };
            if to != from && modules.contains(&path[0]) {
                out.push(Use {
                    from: from.clone(),
                    to,
                    file: format!("src/{}", rel.display()),
                    line: text[..pos].matches('\n').count() + 1,
                });
            }
        }
    }
    out
}

fn layer_of() -> BTreeMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |n| (*n, i)))
        .collect()
}

fn where_(u: &Use) -> String {
    format!("{}:{}: {} uses {}", u.file, u.line, u.from, u.to)
}

/// Every module of `src/lib.rs` has a layer.
#[test]
fn every_module_has_a_layer() {
    let layer = layer_of();
    let missing: Vec<String> = library_modules()
        .into_iter()
        .filter(|m| !layer.contains_key(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a layer: {missing:?}. Add each to LAYERS in tests/layering.rs, \
         above everything it uses and below everything that uses it"
    );
}

/// (a) The leaves use nothing else of the crate.
#[test]
fn leaves_use_no_other_module() {
    let nodes: BTreeSet<&str> = layer_of().keys().copied().collect();
    let bad: Vec<String> = uses(&nodes)
        .iter()
        .filter(|u| LEAVES.contains(&u.from.as_str()))
        .map(where_)
        .collect();
    assert!(
        bad.is_empty(),
        "a leaf module uses another module of the crate:\n  {}\n\
         Leaves (LEAVES in tests/layering.rs) depend on std and external crates only, so \
         everyone can use them. Move what the leaf needs into a leaf, or move the code \
         that needs it out of the leaf.",
        bad.join("\n  ")
    );
}

/// The cycles of a graph, one example path each (nodes of a strongly connected
/// component of more than one node, found by depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn dfs(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = dfs(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n) {
            if let Some(c) = dfs(n, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// (b) No import cycle between modules (the known exceptions aside).
#[test]
fn no_import_cycle() {
    let nodes: BTreeSet<&str> = layer_of().keys().copied().collect();
    let all = uses(&nodes);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in &all {
        if !KNOWN.iter().any(|(f, t, _)| *f == u.from && *t == u.to) {
            edges
                .entry(u.from.clone())
                .or_default()
                .insert(u.to.clone());
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let lines: Vec<String> = cycle
            .windows(2)
            .filter_map(|w| all.iter().find(|u| u.from == w[0] && u.to == w[1]))
            .map(where_)
            .collect();
        panic!(
            "import cycle {}:\n  {}\nBreak it at the edge that points up the layers (see \
             LAYERS in tests/layering.rs): move the item it uses into a lower module \
             (a leaf, or the module that owns its data), or pass it in as a parameter.",
            cycle.join(" -> "),
            lines.join("\n  ")
        );
    }
}

/// (c) Every use points down the layers.
#[test]
fn uses_point_down_the_layers() {
    let layer = layer_of();
    let nodes: BTreeSet<&str> = layer.keys().copied().collect();
    let all = uses(&nodes);
    let mut bad = Vec::new();
    let mut seen_known = BTreeSet::new();
    for u in &all {
        let (Some(&lf), Some(&lt)) = (layer.get(u.from.as_str()), layer.get(u.to.as_str())) else {
            continue; // reported by every_module_has_a_layer
        };
        if lt < lf {
            continue;
        }
        if let Some(k) = KNOWN.iter().find(|(f, t, _)| *f == u.from && *t == u.to) {
            seen_known.insert(*k);
            continue;
        }
        bad.push(format!("{} (layer {lf} uses layer {lt})", where_(u)));
    }
    assert!(
        bad.is_empty(),
        "uses that point up or across the layers:\n  {}\n\
         A module may use only modules of lower layers (LAYERS in tests/layering.rs). \
         Move the used item down (into a leaf or the lower module that owns its data), \
         or pass it in from above; change LAYERS only if the new order is the \
         architecture you want.",
        bad.join("\n  ")
    );
    let stale: Vec<String> = KNOWN
        .iter()
        .filter(|k| !seen_known.contains(*k))
        .map(|(f, t, why)| format!("{f} -> {t} ({why})"))
        .collect();
    assert!(
        stale.is_empty(),
        "known exceptions that no longer occur: delete them from KNOWN in \
         tests/layering.rs:\n  {}",
        stale.join("\n  ")
    );
}

/// The reader itself: it sees grouped, nested and `super::` uses, and ignores comments
/// and strings, so the checks above can fail.
#[test]
fn the_reader_finds_grouped_nested_and_super_uses() {
    assert_eq!(
        expand("{a::b, c::{d, e::f}, g}"),
        vec![
            vec!["a", "b"],
            vec!["c", "d"],
            vec!["c", "e", "f"],
            vec!["g"]
        ]
    );
    let text = "use crate::{x, y::z};\n// crate::comment\nlet s = \"crate::string\";\nlet r = r#\"\"crate::raw\"\"#;\n/* crate::block */ crate::w::f();\n";
    let clean = without_comments(text);
    let found: Vec<String> = clean
        .match_indices("crate::")
        .flat_map(|(p, _)| expand(tree_at(&clean, p + 7)))
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(found, vec!["x", "y::z", "w::f"]);
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    let inline = inline_modules("mod a {\n    mod b { use super::x; }\n}\nmod c;");
    let names: Vec<&str> = inline.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    let nodes = BTreeSet::from(["smtp::reply"]);
    let p = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        node_of(&p("smtp::reply::Reply"), &nodes).unwrap(),
        "smtp::reply"
    );
    assert_eq!(node_of(&p("smtp::ingest::x"), &nodes).unwrap(), "smtp");
}
