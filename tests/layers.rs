//! Keeps the module layering of `src/` true (issue 20): reads every file under `src/`,
//! finds which modules it references (`crate::x`, `super::`/`self::` resolved, and a
//! folder's `mod.rs` naming its own children) and checks
//!
//! (a) a module references only modules of its own tier or a lower one (`TIERS`);
//! (b) no two top-level modules reference each other, directly or round a longer
//!     circle, and no two files of one folder (`agent/`, `datastore/`, …) do.
//!
//! Production code only: `#[cfg(test)]` items, comments and string literals are
//! blanked out first. A `pub use child::…` in a folder's `mod.rs` is the folder's
//! façade, not a dependency of `mod.rs` on `child`; `super::Name` in a child resolves
//! through such a re-export to the sibling that defines `Name`.
//! Plain std, no root, no Docker.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The layer table, lowest tier first. A module may reference its own tier and the
/// tiers before it, never a later one. Every top-level module of `src/` must be listed.
///
/// - lower: plain data and the one pipeline of a pass (workload → observe → diagnose →
///   repair → report), the kernel and Docker access, the config's typed sections.
/// - middle: the services a pass may consult (Calico's datastore, Marathon), the pass
///   itself over all of them (`medic`) and the metrics that count what the pass did.
/// - upper: scheduling and the process around it (agent, pre-start, sources, http,
///   daemon, cli).
const TIERS: &[(&str, &[&str])] = &[
    (
        "lower",
        &[
            "error",
            "kernel",
            "policy",
            "config",
            "netns",
            "netlink",
            "workload",
            "docker",
            "plugin",
            "observe",
            "diagnose",
            "repair",
            "probe",
            "report",
            "local_ips",
        ],
    ),
    ("middle", &["marathon", "datastore", "ipam", "metrics", "medic", "bgp"]),
    ("upper", &["agent", "prestart", "hook", "sources", "http", "daemon", "cli"]),
];

#[derive(Debug, Clone)]
struct Edge {
    from: Vec<String>,
    to: Vec<String>,
    file: String,
    line: usize,
    path: String,
}

impl Edge {
    fn at(&self) -> String {
        format!("{}:{}: `{}`", self.file, self.line, self.path)
    }
}

/// Blanks comments, string/char literals (keeping newlines, so lines still count).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match literal_end(&b, i) {
            Some(end) => {
                out.extend(b[i..end].iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
                i = end;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// Where the comment or literal that starts at `i` ends, if one starts there.
fn literal_end(b: &[char], i: usize) -> Option<usize> {
    let at = |k: usize| b.get(k).copied();
    match (b[i], at(i + 1)) {
        ('/', Some('/')) => Some((i..b.len()).find(|&k| b[k] == '\n').unwrap_or(b.len())),
        ('/', Some('*')) => Some(block_comment_end(b, i)),
        ('r', Some('"' | '#')) if !ident_char(i.checked_sub(1).and_then(|k| b.get(k))) => raw_string_end(b, i),
        ('"', _) => {
            let mut k = i + 1;
            while k < b.len() && b[k] != '"' {
                k += if b[k] == '\\' { 2 } else { 1 };
            }
            Some((k + 1).min(b.len()))
        }
        // A char literal ('x', '\n', '\u{1b}'), not a lifetime ('a).
        ('\'', Some('\\')) => (i + 3..b.len()).find(|&k| b[k] == '\'').map(|k| k + 1),
        ('\'', Some(_)) if at(i + 2) == Some('\'') => Some(i + 3),
        _ => None,
    }
}

/// `/* … */`, nested.
fn block_comment_end(b: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == '/' && b.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// `r"…"` / `r#"…"#` (None for a raw identifier such as `r#type`).
fn raw_string_end(b: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    if b.get(j) != Some(&'"') {
        return None;
    }
    let hashes = j - i - 1;
    (j + 1..b.len())
        .find(|&k| b[k] == '"' && (1..=hashes).all(|h| b.get(k + h) == Some(&'#')))
        .map(|k| k + 1 + hashes)
        .or(Some(b.len()))
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Blanks every `#[cfg(test)]` item (a `{…}` block or an item up to `;`).
fn without_tests(code: &str) -> String {
    let mut b: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= b.len() {
        if b[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + marker.len();
        while j < b.len() && b[j] != '{' && b[j] != ';' {
            j += 1;
        }
        if j < b.len() && b[j] == '{' {
            let mut depth = 0;
            while j < b.len() {
                match b[j] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        let end = (j + 1).min(b.len());
        for ch in &mut b[start..end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = end;
    }
    b.into_iter().collect()
}

/// The paths written at `i` (just after `crate::`, `super::`, …), a `{…}` group
/// expanded: `{a, b::{c, d as e}}` → `a`, `b::c`, `b::d`. Returns where they end.
fn paths_at(b: &[char], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let skip_ws = |b: &[char], mut i: usize| {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(b, i);
        if b.get(i) == Some(&'{') {
            i += 1;
            loop {
                i = skip_ws(b, i);
                match b.get(i) {
                    None => return i,
                    Some('}') => return i + 1,
                    Some(',') => i += 1,
                    _ => {
                        let before = i;
                        i = paths_at(b, i, prefix.clone(), out);
                        // Skip `as alias` (or anything else) up to the next `,` or `}`.
                        while i < b.len() && b[i] != ',' && b[i] != '}' {
                            i += 1;
                        }
                        if i == before {
                            i += 1;
                        }
                    }
                }
            }
        }
        let start = i;
        while ident_char(b.get(i)) {
            i += 1;
        }
        if i == start {
            if !prefix.is_empty() {
                out.push(prefix);
            }
            return i;
        }
        prefix.push(b[start..i].iter().collect());
        let j = skip_ws(b, i);
        if b.get(j) == Some(&':') && b.get(j + 1) == Some(&':') {
            i = j + 2;
        } else {
            out.push(prefix);
            return i;
        }
    }
}

/// One source file: its module path (`src/a/b.rs` → [a, b], `src/a/mod.rs` → [a]).
struct SourceFile {
    rel: String,
    module: Vec<String>,
    is_mod_rs: bool,
    code: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn load(src: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
            if rel == "lib.rs" || rel == "main.rs" {
                return None;
            }
            let mut module: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
            let is_mod_rs = module.last().is_some_and(|m| m == "mod");
            if is_mod_rs {
                module.pop();
            }
            let code = without_tests(&code_only(&std::fs::read_to_string(&p).unwrap()));
            Some(SourceFile { rel: format!("src/{rel}"), module, is_mod_rs, code })
        })
        .collect()
}

/// `pub use child::{A, B}` in each folder's `mod.rs`: (folder, A) → child.
fn reexports(files: &[SourceFile], modules: &BTreeSet<Vec<String>>) -> BTreeMap<(Vec<String>, String), String> {
    let mut map = BTreeMap::new();
    for f in files.iter().filter(|f| f.is_mod_rs) {
        let b: Vec<char> = f.code.chars().collect();
        for (i, _) in f.code.char_indices().filter(|(i, _)| f.code[*i..].starts_with("pub use ")) {
            let ci = f.code[..i].chars().count() + "pub use ".len();
            let mut paths = Vec::new();
            paths_at(&b, ci, Vec::new(), &mut paths);
            for p in paths {
                let mut child = f.module.clone();
                child.push(p[0].clone());
                if p.len() >= 2 && modules.contains(&child) {
                    map.insert((f.module.clone(), p.last().unwrap().clone()), p[0].clone());
                }
            }
        }
    }
    map
}

/// The module file an absolute path lands in: its longest prefix that is a module
/// file, then through a re-export of that module to the child defining the name.
fn resolve(
    abs: &[String],
    modules: &BTreeSet<Vec<String>>,
    re: &BTreeMap<(Vec<String>, String), String>,
) -> Option<Vec<String>> {
    let n = (1..=abs.len()).rev().find(|&n| modules.contains(&abs[..n].to_vec()))?;
    let mut m = abs[..n].to_vec();
    if let Some(child) = abs.get(n).and_then(|name| re.get(&(m.clone(), name.clone()))) {
        m.push(child.clone());
    }
    Some(m)
}

fn edges_of(
    f: &SourceFile,
    modules: &BTreeSet<Vec<String>>,
    re: &BTreeMap<(Vec<String>, String), String>,
) -> Vec<Edge> {
    let b: Vec<char> = f.code.chars().collect();
    let line_of = |ci: usize| b[..ci].iter().filter(|c| **c == '\n').count() + 1;
    let children: BTreeSet<String> = modules
        .iter()
        .filter(|m| f.is_mod_rs && m.len() == f.module.len() + 1 && m.starts_with(&f.module))
        .map(|m| m.last().unwrap().clone())
        .collect();
    let mut edges = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(ident_char(b.get(i - 1)) || b[i - 1] == ':' || b[i - 1] == '$');
        if !boundary || !(b[i].is_alphabetic() || b[i] == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while ident_char(b.get(i)) {
            i += 1;
        }
        let word: String = b[start..i].iter().collect();
        if !(b.get(i) == Some(&':') && b.get(i + 1) == Some(&':')) {
            continue;
        }
        // The module the path starts from.
        let mut base = match word.as_str() {
            "crate" => Vec::new(),
            "self" => f.module.clone(),
            "super" => {
                let mut m = f.module.clone();
                m.pop();
                m
            }
            w if children.contains(w) && !is_pub_use(&b, start) => {
                let mut m = f.module.clone();
                m.push(w.to_string());
                m
            }
            _ => continue,
        };
        let mut j = i + 2;
        // super::super::…
        while b[j..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
            base.pop();
            j += 7;
        }
        let mut paths = Vec::new();
        let end = paths_at(&b, j, base.clone(), &mut paths);
        let text: String = b[start..end].iter().collect::<String>().split_whitespace().collect::<Vec<_>>().join(" ");
        for p in paths {
            if let Some(to) = resolve(&p, modules, re) {
                if to != f.module {
                    edges.push(Edge {
                        from: f.module.clone(),
                        to,
                        file: f.rel.clone(),
                        line: line_of(start),
                        path: text.clone(),
                    });
                }
            }
        }
        i = end.max(i);
    }
    edges
}

/// Whether the statement holding `at` is a `pub use` (a re-export: the façade).
fn is_pub_use(b: &[char], at: usize) -> bool {
    let stmt_start = b[..at].iter().rposition(|c| matches!(c, ';' | '{' | '}')).map_or(0, |k| k + 1);
    let mut k = at;
    // Inside a `use` group the statement began before the group's `{`.
    let mut depth = 0;
    while k > 0 {
        k -= 1;
        match b[k] {
            '}' => depth += 1,
            '{' if depth > 0 => depth -= 1,
            '{' => {
                let head: String = b[..k].iter().collect();
                let head = head.rsplit([';', '}']).next().unwrap_or_default();
                if head.trim_start().starts_with("pub") && head.contains("use ") {
                    return true;
                }
            }
            ';' => break,
            _ => {}
        }
    }
    let s: String = b[stmt_start..at].iter().collect();
    let s = s.trim_start();
    s.starts_with("pub") && s.contains("use ")
}

fn tier_of(module: &str) -> Option<usize> {
    TIERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// A way back from `to` to `from` over `edges` (BFS), as the edges taken.
fn way_back<'a>(
    edges: &'a [(Vec<String>, Vec<String>, &'a Edge)],
    from: &[String],
    to: &[String],
) -> Option<Vec<&'a Edge>> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([(to.to_vec(), Vec::new())]);
    while let Some((node, path)) = queue.pop_front() {
        if node == from {
            return Some(path);
        }
        if !seen.insert(node.clone()) {
            continue;
        }
        for (_, b, e) in edges.iter().filter(|(a, _, _)| *a == node) {
            let mut p = path.clone();
            p.push(*e);
            queue.push_back((b.clone(), p));
        }
    }
    None
}

/// Every edge that lies on a circle, with the way back, one line each.
fn circles(graph: &[(Vec<String>, Vec<String>, &Edge)]) -> Vec<String> {
    let mut found = Vec::new();
    let mut reported = BTreeSet::new();
    for (a, b, e) in graph {
        if !reported.insert((a.clone(), b.clone())) {
            continue;
        }
        if let Some(back) = way_back(graph, a, b) {
            let back: Vec<String> =
                back.iter().map(|e| format!("{} → {} at {}", e.from.join("::"), e.to.join("::"), e.at())).collect();
            found.push(format!(
                "{} → {} at {}; and back: {}",
                a.join("::"),
                b.join("::"),
                e.at(),
                back.join(", then ")
            ));
        }
    }
    found
}

fn all_edges() -> (Vec<SourceFile>, Vec<Edge>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = load(&src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let re = reexports(&files, &modules);
    let edges = files.iter().flat_map(|f| edges_of(f, &modules, &re)).collect();
    (files, edges)
}

#[test]
fn every_top_level_module_has_a_tier() {
    let (files, _) = all_edges();
    let missing: BTreeSet<String> =
        files.iter().map(|f| f.module[0].clone()).filter(|m| tier_of(m).is_none()).collect();
    assert!(missing.is_empty(), "modules missing from the layer table in tests/layers.rs: {missing:?}");
}

#[test]
fn lower_tiers_never_reference_higher_ones() {
    let (_, edges) = all_edges();
    let bad: Vec<String> = edges
        .iter()
        .filter_map(|e| {
            let (from, to) = (tier_of(&e.from[0])?, tier_of(&e.to[0])?);
            (to > from).then(|| {
                format!("{} ({}) references {} ({}): {}", e.from[0], TIERS[from].0, e.to[0], TIERS[to].0, e.at())
            })
        })
        .collect();
    assert!(bad.is_empty(), "layering broken:\n  {}", bad.join("\n  "));
}

#[test]
fn no_two_top_level_modules_reference_each_other() {
    let (_, edges) = all_edges();
    let graph: Vec<_> = edges
        .iter()
        .filter(|e| e.from[0] != e.to[0])
        .map(|e| (vec![e.from[0].clone()], vec![e.to[0].clone()], e))
        .collect();
    let found = circles(&graph);
    assert!(found.is_empty(), "modules in a circle:\n  {}", found.join("\n  "));
}

#[test]
fn no_two_files_of_one_folder_reference_each_other() {
    let (_, edges) = all_edges();
    let graph: Vec<_> =
        edges.iter().filter(|e| e.from[0] == e.to[0]).map(|e| (e.from.clone(), e.to.clone(), e)).collect();
    let found = circles(&graph);
    assert!(found.is_empty(), "files in a circle:\n  {}", found.join("\n  "));
}

/// The reader itself: groups, `super`, comments and strings, test items, façades.
#[test]
fn the_reader_finds_what_is_written_and_nothing_else() {
    let code = without_tests(&code_only(
        "use crate::{a, b::{c, d as e}};\n// crate::zz\nlet s = \"crate::yy\\\"\"; let c = '\"'; let r = r#\"crate::xx\"#;\n/* a /* crate::vv */ */\n\
         fn f<'a>(x: &'a str) { super::sib::g(); }\n#[cfg(test)]\nmod tests { use crate::ww; }\n",
    ));
    let b: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    let at = code.find("crate::").unwrap() + "crate::".len();
    paths_at(&b, at, Vec::new(), &mut paths);
    assert_eq!(paths, vec![vec!["a"], vec!["b", "c"], vec!["b", "d"]]);
    for absent in ["zz", "yy", "xx", "ww", "vv"] {
        assert!(!code.contains(absent), "{absent} should be blanked: {code}");
    }
    assert!(code.contains("super::sib::g()"));
    let modules: BTreeSet<Vec<String>> =
        [vec!["a"], vec!["b"], vec!["m"], vec!["m", "sib"], vec!["m", "me"]].into_iter().map(to_strings).collect();
    let f = SourceFile { rel: "src/m/me.rs".into(), module: to_strings(vec!["m", "me"]), is_mod_rs: false, code };
    let targets: Vec<Vec<String>> = edges_of(&f, &modules, &BTreeMap::new()).into_iter().map(|e| e.to).collect();
    assert_eq!(
        targets,
        vec![to_strings(vec!["a"]), to_strings(vec!["b"]), to_strings(vec!["b"]), to_strings(vec!["m", "sib"])]
    );
    let facade = "pub mod sib;\npub use sib::{G, H};\nfn f() { sib::g(); }\n";
    let f =
        SourceFile { rel: "src/m/mod.rs".into(), module: to_strings(vec!["m"]), is_mod_rs: true, code: facade.into() };
    let edges = edges_of(&f, &modules, &BTreeMap::new());
    assert_eq!(edges.iter().map(|e| e.line).collect::<Vec<_>>(), vec![3], "the re-export is no edge: {edges:?}");
    // The real tree: a known edge is seen (the reader is not blind).
    let (_, all) = all_edges();
    assert!(all.iter().any(|e| e.from == ["medic"] && e.to == ["docker"]), "medic → docker not found");
}

fn to_strings(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_string).collect()
}
