//! The agent's modules depend only downward (ARCHITECTURE.md, "Layers").
//!
//! A module A depends on B when a file of A names `crate::B…` anywhere, in
//! code or in a doc link. Every top-level module of `agent/src` belongs to
//! one of three layers; a module may name modules of its own layer or of
//! the layers below, never above, and no set of modules may name each
//! other in a circle. This test reads the sources, so a new module or a new
//! `use` that breaks the picture fails here, with the line that did it. It
//! also keeps every file of `agent/src` to a readable size.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A new top-level module must be placed here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "rules (plain data and pure rules)",
        &[
            "phone",
            "topics",
            "config",
            "backoff",
            "command",
            "health",
            "ledger",
            "clock",
            "disk",
            "memory",
            "cert_check",
            "notify",
            "pacing",
        ],
    ),
    (
        "working parts",
        &[
            "logging",
            "mqtt",
            "messages",
            "supervisor",
            "control",
            "screen",
        ],
    ),
    ("entry points", &["dashboard", "cmd", "cli"]),
];

/// One module naming another: where it happens first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Evidence {
    file: String,
    line: usize,
}

type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The top-level modules `text` names as `crate::name` or inside
/// `crate::{a, b::c}`, with the line of each.
fn named_modules(text: &str) -> Vec<(String, usize)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("crate::") {
        let start = from + pos;
        from = start + "crate::".len();
        if start > 0 && (is_ident(bytes[start - 1]) || bytes[start - 1] == b'$') {
            continue;
        }
        let line = text[..start].matches('\n').count() + 1;
        let rest = &text[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: the first identifier after the
            // brace and after each comma at depth 0.
            let mut depth = 0usize;
            let mut expect_name = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if expect_name && (c.is_ascii_alphabetic() || c == '_') => {
                        let name: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if name != "self" {
                            let line = line + group[..i].matches('\n').count();
                            found.push((name, line));
                        }
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((name, line));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The dependency graph of `src`'s top-level modules (the binaries under
/// `bin/` and the crate root are not modules of their own).
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        if first == "bin" || first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&file).expect("read source");
        let edges = graph.entry(module.clone()).or_default();
        for (target, line) in named_modules(&text) {
            if target != module {
                edges.entry(target).or_insert(Evidence {
                    file: relative.display().to_string(),
                    line,
                });
            }
        }
    }
    graph
}

/// The top-level modules `lib.rs` declares.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// Each module's layer, by index, bottom first.
fn layer_of(layers: &[(&str, &[&str])]) -> BTreeMap<String, usize> {
    let mut of = BTreeMap::new();
    for (index, (_, modules)) in layers.iter().enumerate() {
        for m in *modules {
            assert!(
                of.insert(m.to_string(), index).is_none(),
                "{m} is in two layers"
            );
        }
    }
    of
}

/// Imports from a higher layer, one line each.
fn upward_imports(graph: &Graph, layers: &[(&str, &[&str])]) -> Vec<String> {
    let of = layer_of(layers);
    let mut problems = Vec::new();
    for (from, edges) in graph {
        let Some(&low) = of.get(from) else { continue };
        for (to, evidence) in edges {
            if let Some(&high) = of.get(to)
                && high > low
            {
                problems.push(format!(
                    "{from} ({}) names {to} ({}), a layer above it, at {}:{}",
                    layers[low].0, layers[high].0, evidence.file, evidence.line
                ));
            }
        }
    }
    problems
}

/// One cycle among the modules, as a path that ends where it starts, if
/// there is any (a depth-first search for a back edge).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if graph.contains_key(next)
                && let Some(cycle) = visit(next, graph, done, path)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn describe(cycle: &[String], graph: &Graph) -> String {
    cycle
        .windows(2)
        .map(|pair| {
            let e = &graph[&pair[0]][&pair[1]];
            format!("{} → {} ({}:{})", pair[0], pair[1], e.file, e.line)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let declared = declared_modules(&lib);
    let placed: BTreeSet<String> = layer_of(LAYERS).into_keys().collect();
    let unplaced: Vec<_> = declared.difference(&placed).collect();
    let missing: Vec<_> = placed.difference(&declared).collect();
    assert!(
        unplaced.is_empty(),
        "modules with no layer (add them to LAYERS in {}): {unplaced:?}",
        file!()
    );
    assert!(
        missing.is_empty(),
        "LAYERS names modules lib.rs lacks: {missing:?}"
    );
}

#[test]
fn modules_import_only_their_own_layer_or_below() {
    let problems = upward_imports(&graph(&src()), LAYERS);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_modules_form_no_cycle() {
    let graph = graph(&src());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", describe(&cycle, &graph));
    }
}

/// A file a newcomer can read in one sitting; a longer one is several
/// rooms (split it by the concepts of DESIGN.md).
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_is_over_the_size_of_a_room() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file).expect("read").lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines: {}",
        long.join(", ")
    );
}

// The checker itself, on made-up sources: a check that cannot fail proves
// nothing.

fn made_up(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph.entry(to.to_string()).or_default();
        graph.entry(from.to_string()).or_default().insert(
            to.to_string(),
            Evidence {
                file: format!("{from}.rs"),
                line: 1,
            },
        );
    }
    graph
}

#[test]
fn names_are_read_from_paths_groups_and_doc_links() {
    let text = "use crate::config::Config;\n\
                use crate::{health::Health, phone::{self, mask_phone},\n    topics};\n\
                /// See [`crate::mqtt`].\n\
                let x = $crate::ignored; my_crate::ignored;";
    let names: Vec<_> = named_modules(text);
    assert_eq!(
        names,
        vec![
            ("config".to_string(), 1),
            ("health".to_string(), 2),
            ("phone".to_string(), 2),
            ("topics".to_string(), 3),
            ("mqtt".to_string(), 4),
        ]
    );
}

#[test]
fn a_cycle_is_found_and_described() {
    let graph = made_up(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    let cycle = find_cycle(&graph).expect("a → b → c → a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    assert!(describe(&cycle, &graph).contains("c → a (c.rs:1)"));
    assert_eq!(
        find_cycle(&made_up(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
}

#[test]
fn an_import_from_a_higher_layer_is_refused() {
    let layers: &[(&str, &[&str])] = &[("low", &["config"]), ("high", &["mqtt"])];
    assert!(upward_imports(&made_up(&[("mqtt", "config")]), layers).is_empty());
    let problems = upward_imports(&made_up(&[("config", "mqtt")]), layers);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].contains("config (low) names mqtt (high)"),
        "{problems:?}"
    );
}
