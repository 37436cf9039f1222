//! Module dependencies point one way. Within each parent module, the
//! dependencies between its children (one child's code naming another's
//! items, in a `use` or a path) must have no circle: `server -> proxy ->
//! upstream/plugin -> config`, never back. A parent and its own children
//! may use each other (a `mod.rs` is its children's front), and test code
//! is not counted.
//!
//! Read from the source: `use` trees and `crate::`/`super::`/`self::`
//! paths, resolved to the module that holds the item.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: its path from the crate root (`["plugin", "engine"]`).
type Module = Vec<String>;

/// One reference from a module's file to an item of another module.
#[derive(Debug, Clone)]
struct Reference {
    file: PathBuf,
    line: usize,
    target: Vec<String>,
}

#[test]
fn no_import_circles_in_host_or_config() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut circles = Vec::new();
    for krate in ["host/src", "config/src"] {
        circles.extend(circles_in(&workspace.join(krate), krate));
    }
    assert!(
        circles.is_empty(),
        "import circles between sibling modules:\n{}",
        circles
            .iter()
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The circles in one crate: the modules caught in each
/// (`"host/src/plugin: engine, state"`) and a description with one
/// reference per step of one circle.
fn circles_in(root: &Path, krate: &str) -> Vec<(String, String)> {
    let modules = modules(root);
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    // (parent, child a, child b) -> one reference that makes a depend on b.
    let mut edges: BTreeMap<(Module, String, String), Reference> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        for reference in references(module, file, &without_tests(&text)) {
            let target = holder(&known, &reference.target);
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            // An ancestor and its descendant, or the module itself.
            if common == module.len() || common == target.len() {
                continue;
            }
            let parent = module[..common].to_vec();
            edges
                .entry((parent, module[common].clone(), target[common].clone()))
                .or_insert(reference);
        }
    }
    let parents: BTreeSet<&Module> = edges.keys().map(|(p, _, _)| p).collect();
    let mut found = Vec::new();
    for parent in parents {
        let graph: BTreeMap<&str, Vec<&str>> = edges.keys().filter(|(p, _, _)| p == parent).fold(
            BTreeMap::new(),
            |mut g, (_, a, b)| {
                g.entry(a.as_str()).or_default().push(b.as_str());
                g
            },
        );
        for (component, cycle) in cycles(&graph) {
            let steps: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| {
                    let r = &edges[&(parent.clone(), (*a).to_owned(), (*b).to_owned())];
                    format!(
                        "  {a} -> {b} ({}:{}: {})",
                        r.file.strip_prefix(root).unwrap_or(&r.file).display(),
                        r.line,
                        r.target.join("::")
                    )
                })
                .collect();
            let members = format!(
                "{krate}/{}: {}",
                parent.join("/"),
                component.iter().copied().collect::<Vec<_>>().join(", ")
            );
            let text = format!(
                "{members}\n  e.g. {}\n{}",
                cycle.join(" -> "),
                steps.join("\n")
            );
            found.push((members, text));
        }
    }
    found
}

/// Every module file under `root` by module path (`lib.rs` is `[]`).
/// Files named `tests.rs` are test code.
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".rs"))
            else {
                continue;
            };
            let rel = path.parent().unwrap().strip_prefix(root).unwrap();
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match stem {
                "tests" => continue,
                "lib" | "main" if module.is_empty() => {
                    if stem == "main" {
                        continue;
                    }
                }
                "mod" => {}
                _ => module.push(stem.to_owned()),
            }
            out.insert(module, path);
        }
    }
    out
}

/// The source without comments and without the `#[cfg(test)]` module that
/// ends a file.
pub(crate) fn without_tests(text: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    let mut iter = text.lines().peekable();
    while let Some(line) = iter.next() {
        if line.trim() == "#[cfg(test)]"
            && iter
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            // Keep the line count so references report the right line.
            lines.extend(std::iter::repeat_n("", text.lines().count() - lines.len()));
            break;
        }
        lines.push(line.split("//").next().unwrap_or(""));
    }
    lines.join("\n")
}

/// The references in one file's code, as absolute paths from the crate
/// root (`["plugin", "ticker", "EPOCH_TICK"]`).
fn references(module: &Module, file: &Path, code: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut rest = 0;
    // `use` declarations, with their brace trees expanded.
    while let Some(found) = find_use(&code[rest..]) {
        let start = rest + found;
        let end = start + code[start..].find(';').unwrap_or(code.len() - start);
        let tree = &code[start + "use ".len()..end];
        for path in expand(tree) {
            if let Some(target) = absolute(module, &path) {
                out.push(Reference {
                    file: file.to_path_buf(),
                    line: line_of(start),
                    target,
                });
            }
        }
        rest = end;
    }
    // Paths written out in code: `crate::a::b`, `super::a`.
    for anchor in ["crate::", "super::", "self::"] {
        for (offset, _) in code.match_indices(anchor) {
            let before = code[..offset].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[offset..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(target) = absolute(module, &segments) {
                out.push(Reference {
                    file: file.to_path_buf(),
                    line: line_of(offset),
                    target,
                });
            }
        }
    }
    out
}

/// Offset of the next `use ` that starts a declaration.
fn find_use(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("use ") {
        let at = from + i;
        let before = code[..at].trim_end_matches([' ', '\t']);
        let starts = before.is_empty()
            || before.ends_with('\n')
            || before.ends_with('{')
            || before.ends_with(';')
            || before.ends_with(')')
            || before.ends_with("pub")
            || before.ends_with(']');
        if starts {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// `a::{b, c::{d, e}}` -> `[a, b]`, `[a, c, d]`, `[a, c, e]`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    // Drop each `as alias` (the alias names nothing elsewhere), then the
    // whitespace.
    let mut cleaned = String::new();
    let mut words = tree.split_whitespace();
    while let Some(word) = words.next() {
        if word == "as" {
            let alias = words.next().unwrap_or("");
            cleaned.push_str(alias.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'));
        } else {
            cleaned.push_str(word);
        }
    }
    let mut out = Vec::new();
    expand_into(&[], &cleaned, &mut out);
    out
}

fn expand_into(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    for item in split_top(tree) {
        match item.find('{') {
            Some(brace) => {
                let head = item[..brace].trim_end_matches("::");
                let mut path = prefix.to_vec();
                path.extend(
                    head.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                expand_into(&path, &item[brace + 1..item.len() - 1], out);
            }
            None => {
                let mut path = prefix.to_vec();
                path.extend(
                    item.split("::")
                        .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
                        .map(str::to_owned),
                );
                out.push(path);
            }
        }
    }
}

/// Splits at the commas outside braces.
fn split_top(tree: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&tree[start..]);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// `path` seen from `module` (in `file`), from the crate root; `None` for
/// another crate or the standard library.
fn absolute(module: &Module, path: &[String]) -> Option<Vec<String>> {
    // A `foo.rs` or `foo/mod.rs` file is module `foo`; its `super` is the
    // parent either way.
    let (first, rest) = path.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module[..module.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    let mut rest = rest;
    while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
        base.pop();
        rest = tail;
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The longest known module that is a prefix of `path`.
fn holder(known: &BTreeSet<Module>, path: &[String]) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| known.contains(m))
        .unwrap_or_default()
}

/// Each strongly connected component of the directed graph (the modules
/// caught in circles with each other), with a shortest circle through its
/// first module.
#[allow(clippy::type_complexity, reason = "a local pair, named by the doc")]
fn cycles<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<(BTreeSet<&'a str>, Vec<&'a str>)> {
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(a, bs)| std::iter::once(*a).chain(bs.iter().copied()))
        .collect();
    let reach = |from: &str| -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = graph.get(from).cloned().unwrap_or_default();
        while let Some(n) = todo.pop() {
            if seen.insert(n) {
                todo.extend(graph.get(n).cloned().unwrap_or_default());
            }
        }
        seen
    };
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for &n in &nodes {
        if done.contains(n) || !reach(n).contains(n) {
            continue;
        }
        let component: BTreeSet<&str> = nodes
            .iter()
            .copied()
            .filter(|&m| reach(n).contains(m) && reach(m).contains(n))
            .collect();
        done.extend(component.iter().copied());
        let cycle = shortest_cycle(graph, n, &component);
        out.push((component, cycle));
    }
    out
}

/// A shortest path from `start` back to itself inside `component`.
fn shortest_cycle<'a>(
    graph: &BTreeMap<&'a str, Vec<&'a str>>,
    start: &'a str,
    component: &BTreeSet<&'a str>,
) -> Vec<&'a str> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for &m in graph.get(n).map(Vec::as_slice).unwrap_or_default() {
            if !component.contains(m) || previous.contains_key(m) {
                continue;
            }
            previous.insert(m, n);
            if m == start {
                let mut cycle = vec![start];
                let mut at = n;
                while at != start {
                    cycle.push(at);
                    at = previous[at];
                }
                cycle[1..].reverse();
                return cycle;
            }
            queue.push_back(m);
        }
    }
    vec![start]
}

#[test]
fn use_trees_expand_and_paths_resolve() {
    assert_eq!(
        expand("super::{engine, state::{PluginState, self}, ticker::EPOCH_TICK as T}"),
        [
            vec!["super", "engine"],
            vec!["super", "state", "PluginState"],
            vec!["super", "state"],
            vec!["super", "ticker", "EPOCH_TICK"],
        ]
    );
    let module: Module = vec!["plugin".into(), "engine".into()];
    let path = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        absolute(&module, &path("super::ticker::X")),
        Some(path("plugin::ticker::X"))
    );
    assert_eq!(
        absolute(&module, &path("crate::app::Shared")),
        Some(path("app::Shared"))
    );
    assert_eq!(absolute(&module, &path("std::time")), None);
    let graph = BTreeMap::from([
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]);
    let found = cycles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, ["a", "b", "c"]);
}
