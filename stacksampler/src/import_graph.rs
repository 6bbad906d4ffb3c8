//! The library's top-level modules import each other one way only (data flows kernel sample ->
//! decode -> filter -> aggregate -> symbolize -> diagnose -> render, and the verbs sit on top):
//! the graph of `crate::` paths between top-level modules has no cycle. Test code (a trailing
//! `#[cfg(test)] mod tests` block, `tests.rs` files) may reach anywhere and is left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Files of the binary, not the library.
const BINARY_SIDE: [&str; 4] = ["main.rs", "cli.rs", "status.rs", "terminal.rs"];

/// Adds every `.rs` file under `dir` to `files`.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for path in std::fs::read_dir(dir)
        .expect("read src dir")
        .flatten()
        .map(|e| e.path())
    {
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file without comments and without its trailing unit-test module.
fn non_test_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leading identifier of `s` (after whitespace).
fn ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by the `crate::` paths of `code` (`crate::a::b`,
/// `crate::{a::b, c}`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.insert(ident(rest).to_owned());
            continue;
        };
        // The items of the group at its first level: `a::{x, y}, b` names a and b.
        let mut depth = 0usize;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    names.insert(ident(&group[i..]).to_owned());
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    names
}

/// Edges `module -> modules it imports` among the library's top-level modules.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).expect("file under src");
        let Some(first) = rel.iter().next().and_then(|c| c.to_str()) else {
            continue;
        };
        let top = first.trim_end_matches(".rs");
        if BINARY_SIDE.contains(&first) || !modules.contains(top) || rel.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source file");
        let imports = graph.entry(top.to_owned()).or_default();
        for name in crate_paths(&non_test_code(&text)) {
            if name != top && modules.contains(&name) {
                imports.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `graph`, if there is one (modules in order, the first repeated at the end).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn crate_paths_reads_single_paths_and_groups() {
    let code = "use crate::{a::{x, y}, b, c::d};\nfn f() { crate::e::g(); }";
    let names: Vec<_> = crate_paths(code).into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "e"]);
}

#[test]
fn finds_a_cycle_and_accepts_a_dag() {
    let edge = |a: &str, b: &str| (a.to_owned(), BTreeSet::from([b.to_owned()]));
    let dag = BTreeMap::from([edge("a", "b"), edge("b", "c")]);
    assert_eq!(find_cycle(&dag), None);
    let cyclic = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("c", "a")]);
    assert_eq!(
        find_cycle(&cyclic),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// No two top-level library modules import each other, directly or through others.
#[test]
fn library_modules_import_each_other_one_way() {
    let graph = import_graph();
    assert!(graph.len() > 15, "found only {} modules", graph.len());
    let listing = graph
        .iter()
        .map(|(m, to)| {
            format!(
                "{m} -> {}",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle {}: move the shared type below both\n{listing}",
            cycle.join(" -> ")
        );
    }
}
