//! The docs stay equal to the code (no root, no Docker):
//! - docs/operations.md's configuration reference names exactly the keys of
//!   unit/config.toml (every `key = …` line, commented-out `#key = …` examples
//!   included), as `section.key`;
//! - docs/metrics.md's table of metric families names exactly the families that
//!   `Metrics` registers (datastore families included), with the same label names.
//!
//!   cargo test -p calico-medic --test docs

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use calico_medic::metrics::Metrics;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The lines between `<!-- NAME:begin … -->` and `<!-- NAME:end … -->`.
fn marked_block<'a>(text: &'a str, file: &str, name: &str) -> Vec<&'a str> {
    let begin = format!("<!-- {name}:begin");
    let end = format!("<!-- {name}:end");
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with(&begin));
    assert!(lines.next().is_some(), "{file}: no `{begin} -->` marker");
    let block: Vec<&str> = lines.by_ref().take_while(|l| !l.trim_start().starts_with(&end)).collect();
    assert!(
        text.lines().any(|l| l.trim_start().starts_with(&end)),
        "{file}: no `{end} -->` marker after `{begin} -->`"
    );
    block
}

/// The cells of a markdown table row (`| a | b |` → ["a", "b"]); None for other lines.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// `` `x` `` → x (the whole cell is one code span).
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`').filter(|s| !s.contains('`'))
}

/// Every code span in a cell (`` `a`, `b` `` → [a, b]).
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn is_key(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `section.key` (or `key` at the top level) of every key line of a config.toml in the
/// shipped file's style: `[section]` headers; keys as `key = value` or commented out as
/// `#key = value` (also `# key = value`). A commented line counts only when what
/// follows `#` parses as one TOML key/value pair, so prose comments never do.
fn config_keys(text: &str) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let body = t.strip_prefix('#').map(str::trim_start).unwrap_or(t);
        let Some((key, _)) = body.split_once('=') else { continue };
        let key = key.trim();
        if !is_key(key) || toml::from_str::<toml::Table>(body).map(|t| t.len() != 1).unwrap_or(true) {
            assert!(t.starts_with('#'), "unit/config.toml line {}: not a key line: {line}", n + 1);
            continue;
        }
        let full = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
        if let Some(first) = keys.insert(full.clone(), n + 1) {
            panic!("unit/config.toml: {full} on line {first} and again on line {}", n + 1);
        }
    }
    keys
}

/// Differences between two sets, as a readable message (empty when equal).
fn differences(what: &str, a_name: &str, a: &BTreeSet<String>, b_name: &str, b: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let only_a: Vec<&String> = a.difference(b).collect();
    let only_b: Vec<&String> = b.difference(a).collect();
    if !only_a.is_empty() {
        out += &format!("\n  {what} in {a_name} but not in {b_name}:");
        for x in only_a {
            out += &format!("\n    {x}");
        }
    }
    if !only_b.is_empty() {
        out += &format!("\n  {what} in {b_name} but not in {a_name}:");
        for x in only_b {
            out += &format!("\n    {x}");
        }
    }
    out
}

#[test]
fn config_toml_keys_are_parsed_in_its_style() {
    let text = "# prose: a = b is no key\n#top = 1\n# spaced = \"x\"\nreal = true\n[sec]\n#d = \"5s\"\n#\n#list = [\"a\", \"b\"]\n";
    let keys: Vec<String> = config_keys(text).into_keys().collect();
    assert_eq!(keys, ["real", "sec.d", "sec.list", "spaced", "top"]);
}

#[test]
fn operations_md_documents_every_key_of_unit_config_toml() {
    let config: BTreeSet<String> = config_keys(&read("unit/config.toml")).into_keys().collect();
    assert!(config.len() > 40, "unit/config.toml: only {} keys found: {config:?}", config.len());
    assert!(config.contains("listen") && config.contains("backoff.window") && config.contains("prestart.follow"));

    let ops = read("docs/operations.md");
    let mut documented = BTreeSet::new();
    for line in marked_block(&ops, "docs/operations.md", "config-reference") {
        let Some(row) = cells(line) else { continue };
        let Some(key) = row.first().copied().and_then(code) else { continue };
        assert!(
            key.split('.').all(is_key) && key.split('.').count() <= 2,
            "docs/operations.md: reference row names `{key}`, not a `section.key`: {line}"
        );
        assert!(documented.insert(key.to_string()), "docs/operations.md: `{key}` is documented twice");
    }
    let diff = differences("keys", "unit/config.toml", &config, "docs/operations.md (config-reference)", &documented);
    assert!(
        diff.is_empty(),
        "the configuration reference in docs/operations.md and unit/config.toml differ:{diff}\n\
         (a key of unit/config.toml needs a row `| `section.key` | default | meaning |` between the \
         config-reference markers; a row for a key that no longer exists must go)"
    );
}

#[test]
fn metrics_md_lists_every_family_with_its_labels() {
    let metrics = Metrics::new();
    metrics.enable_datastore(&[]);
    metrics.enable_ipam(); // the cluster IPAM job's series
    metrics.enable_bgp(); // across hosts (sources::bgp)
    metrics.felix(true); // registered on Felix's first answer
    let registered: BTreeSet<String> =
        metrics.families().into_iter().map(|(name, labels)| family_line(&name, labels)).collect();
    assert!(registered.len() > 20, "Metrics::families() returned only {} families: {registered:?}", registered.len());
    assert!(registered.iter().all(|f| f.starts_with("calico_medic_")), "unexpected families: {registered:?}");

    let doc = read("docs/metrics.md");
    let mut documented = BTreeSet::new();
    let mut names = BTreeSet::new();
    for line in marked_block(&doc, "docs/metrics.md", "metric-families") {
        let Some(row) = cells(line) else { continue };
        let Some(name) = row.first().copied().and_then(code) else { continue };
        assert!(row.len() >= 4, "docs/metrics.md: row of `{name}` needs | family | type | labels | meaning |");
        assert!(
            ["counter", "gauge", "histogram"].contains(&row[1]),
            "docs/metrics.md: `{name}` has type {:?} (counter, gauge or histogram)",
            row[1]
        );
        assert!(names.insert(name.to_string()), "docs/metrics.md: `{name}` is listed twice");
        let labels = code_spans(row[2]).into_iter().map(String::from).collect();
        documented.insert(family_line(name, labels));
    }
    let diff =
        differences("families", "Metrics::families()", &registered, "docs/metrics.md (metric-families)", &documented);
    assert!(
        diff.is_empty(),
        "the metric table in docs/metrics.md and the families Metrics registers differ \
         (name {{label names, sorted}}):{diff}"
    );
}

/// `name {a, b}` with the label names sorted (their order in the code does not matter).
fn family_line(name: &str, mut labels: Vec<String>) -> String {
    labels.sort();
    format!("{name} {{{}}}", labels.join(", "))
}
