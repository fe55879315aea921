//! Kernel access stays in one layer: `src/kernel/`, `src/netns.rs` and `src/netlink/`.
//! Every other `.rs` file under `src/` must have
//! - no `unsafe` (block, fn, impl, trait, extern);
//! - no libc *call* (`libc::name(`, also through `nix::libc::`), and no `use libc::…` of
//!   a lower-case name other than a `c_*` type (a call could hide behind it); libc's
//!   constants and types (`libc::EPERM`, `libc::c_int`, `libc::sched_param`) are fine;
//! - no file read (`fs::read`, `read_to_string`, `read_dir`, `read_link`, `File::open`,
//!   `….open(`) whose argument list holds a string literal starting with `/proc` or `/sys`.
//!   This last check is textual: a `/proc` path built in a variable or a constant
//!   elsewhere and passed in by name is not seen.
//!
//! The scan runs on the source with comments removed and with string and char
//! literals set apart, so a word in a comment or a string is not code. No root needed.

use std::path::{Path, PathBuf};

/// The kernel layer: path prefixes relative to the crate root.
const KERNEL_LAYER: [&str; 3] = ["src/kernel/", "src/netns.rs", "src/netlink/"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// `unsafe` anywhere, or a libc call / lower-case libc import.
    Unsafe,
    /// A file read of a `/proc` or `/sys` literal path.
    ProcRead,
}

#[derive(Debug, PartialEq, Eq)]
struct Finding {
    line: usize,
    rule: Rule,
    what: String,
}

/// Source split into code (comments and literal contents blanked, newlines kept)
/// and the string literals (char offset of the opening quote, contents).
struct Lexed {
    code: Vec<char>,
    strings: Vec<(usize, String)>,
}

fn is_ident(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Length of a raw string opening at `i` (`r"`, `r#"`, `br#"`…): (hashes, chars up to the quote).
fn raw_string_open(s: &[char], i: usize) -> Option<(usize, usize)> {
    let starts_token = |k: usize| k == 0 || !is_ident(s[k - 1]);
    if s[i] != 'r' || !(starts_token(i) || (s[i - 1] == 'b' && starts_token(i - 1))) {
        return None;
    }
    let hashes = s[i + 1..].iter().take_while(|&&c| c == '#').count();
    (s.get(i + 1 + hashes) == Some(&'"')).then_some((hashes, 2 + hashes))
}

fn lex(src: &str) -> Lexed {
    let s: Vec<char> = src.chars().collect();
    let mut code = s.clone();
    let mut strings = Vec::new();
    let blank = |code: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut code[from..to] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < s.len() {
        let next = s.get(i + 1).copied();
        if s[i] == '/' && next == Some('/') {
            let end = s[i..].iter().position(|&c| c == '\n').map_or(s.len(), |p| i + p);
            blank(&mut code, i, end);
            i = end;
        } else if s[i] == '/' && next == Some('*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < s.len() && depth > 0 {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 1;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 1;
                }
                j += 1;
            }
            blank(&mut code, i, j);
            i = j;
        } else if let Some((hashes, open)) = raw_string_open(&s, i) {
            let body = i + open;
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let close: Vec<char> = close.chars().collect();
            let end = (body..s.len()).find(|&j| s[j..].starts_with(&close)).unwrap_or(s.len());
            strings.push((i + open - 1, s[body..end].iter().collect()));
            blank(&mut code, body, end);
            i = (end + close.len()).min(s.len());
        } else if s[i] == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            let end = j.min(s.len());
            strings.push((i, s[i + 1..end].iter().collect()));
            blank(&mut code, i + 1, end);
            i = end + 1;
        } else if s[i] == '\'' && (next == Some('\\') || s.get(i + 2) == Some(&'\'')) {
            // A char literal ('a', '\n', '\''); anything else is a lifetime or a label.
            let mut j = i + 1;
            while j < s.len() && s[j] != '\'' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut code, i + 1, j.min(s.len()));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    Lexed { code, strings }
}

fn line_of(code: &[char], at: usize) -> usize {
    1 + code[..at].iter().filter(|&&c| c == '\n').count()
}

/// Offsets of `word` in `code` standing as a whole identifier or path segment start.
fn word_at(code: &[char], word: &str) -> Vec<usize> {
    let w: Vec<char> = word.chars().collect();
    (0..code.len().saturating_sub(w.len() - 1))
        .filter(|&i| code[i..].starts_with(&w))
        .filter(|&i| i == 0 || !is_ident(code[i - 1]))
        .filter(|&i| code.get(i + w.len()).is_none_or(|&c| !is_ident(c)))
        .collect()
}

fn ident_from(code: &[char], at: usize) -> String {
    code[at..].iter().take_while(|&&c| is_ident(c)).collect()
}

fn skip_space(code: &[char], mut at: usize) -> usize {
    while code.get(at).is_some_and(|c| c.is_whitespace()) {
        at += 1;
    }
    at
}

/// True when `at` lies in a `use` declaration (`use` is a keyword: it names nothing else).
fn in_use_declaration(code: &[char], at: usize) -> bool {
    let start = code[..at].iter().rposition(|&c| matches!(c, ';' | '{' | '}')).map_or(0, |p| p + 1);
    !word_at(&code[start..at], "use").is_empty()
}

/// `unsafe` anywhere; `libc::name(` calls; `use libc::…` of lower-case names.
fn unsafe_and_libc(code: &[char]) -> Vec<Finding> {
    let mut out = Vec::new();
    for at in word_at(code, "unsafe") {
        out.push(Finding { line: line_of(code, at), rule: Rule::Unsafe, what: "`unsafe`".into() });
    }
    let libc_path: Vec<char> = "libc::".chars().collect();
    for at in word_at(code, "libc") {
        if !code[at..].starts_with(&libc_path) {
            continue;
        }
        let rest = skip_space(code, at + libc_path.len());
        let items: Vec<String> = if code.get(rest) == Some(&'{') {
            let end = code[rest..].iter().position(|&c| c == '}').map_or(code.len(), |p| rest + p);
            code[rest + 1..end].iter().collect::<String>().split(',').map(|s| s.trim().to_string()).collect()
        } else {
            vec![ident_from(code, rest)]
        };
        let line = line_of(code, at);
        if in_use_declaration(code, at) {
            let lower = |n: &&String| n.starts_with(|c: char| c.is_lowercase()) && !n.starts_with("c_");
            for name in items.iter().filter(lower) {
                let what = format!("`use libc::{name}` (write libc paths in full)");
                out.push(Finding { line, rule: Rule::Unsafe, what });
            }
        } else if code.get(skip_space(code, rest + items[0].len())) == Some(&'(') {
            out.push(Finding { line, rule: Rule::Unsafe, what: format!("libc call `libc::{}(`", items[0]) });
        }
    }
    out
}

/// File reads whose argument list holds a `/proc` or `/sys` string literal.
fn proc_reads(lexed: &Lexed) -> Vec<Finding> {
    let code = &lexed.code;
    let mut out = Vec::new();
    for name in ["read", "read_to_string", "read_dir", "read_link", "open"] {
        for at in word_at(code, name) {
            let open = skip_space(code, at + name.len());
            if code.get(open) != Some(&'(') {
                continue;
            }
            let (mut depth, mut close) = (0usize, open);
            while close < code.len() {
                match code[close] {
                    '(' => depth += 1,
                    ')' if depth == 1 => break,
                    ')' => depth -= 1,
                    _ => {}
                }
                close += 1;
            }
            let literal = lexed.strings.iter().find(|(pos, text)| {
                (open..close).contains(pos) && (text.starts_with("/proc") || text.starts_with("/sys"))
            });
            if let Some((_, text)) = literal {
                let what = format!("`{name}(\"{text}\")` outside the kernel layer (use kernel::procfs)");
                out.push(Finding { line: line_of(code, at), rule: Rule::ProcRead, what });
            }
        }
    }
    out
}

fn scan(src: &str) -> Vec<Finding> {
    let lexed = lex(src);
    let mut out = unsafe_and_libc(&lexed.code);
    out.extend(proc_reads(&lexed));
    out.sort_by_key(|f| f.line);
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn kernel_access_stays_in_the_kernel_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut layer_calls = 0;
    for path in &files {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let findings = scan(&std::fs::read_to_string(path).unwrap());
        if KERNEL_LAYER.iter().any(|p| rel.starts_with(p)) {
            layer_calls += findings.len();
            continue;
        }
        violations.extend(findings.into_iter().map(|f| format!("{rel}:{}: {}", f.line, f.what)));
    }
    assert!(files.len() > 10 && layer_calls > 0, "the scan saw {} files and no kernel-layer call", files.len());
    assert!(
        violations.is_empty(),
        "kernel access outside the kernel layer ({}):\n{}",
        KERNEL_LAYER.join(", "),
        violations.join("\n")
    );
}

#[test]
fn scanner_reads_code_not_comments_or_strings() {
    let src = r####"
// unsafe in a comment, libc::socket(0) too
/* block /* nested unsafe */ libc::close(1) */
fn f<'a>(x: &'a str) -> char {
    let s = "unsafe libc::close(2) \" still a string";
    let r = r#"unsafe "quoted" libc::close(3)"#;
    let c = '"';
    let q = '\'';
    let b = b'"';
    let t = libc::SOCK_RAW | libc::AF_INET;
    let p: libc::c_int = 0;
    let q = libc::sched_param { sched_priority: 1 };
    let e = libc::EPERM;
    let unsafe_code = 1;
    'x'
}
"####;
    assert_eq!(scan(src), vec![], "nothing in comments, strings, constants or types");
}

#[test]
fn scanner_finds_unsafe_calls_imports_and_proc_reads() {
    let src = r#"use libc::{c_int, setpriority};
fn f() {
    let fd = unsafe { libc::socket(1, 2, 3) };
    let n = nix::libc::getpid ();
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname");
    let g = File::open(format!("/sys/class/net/{}/address", name));
    let ok = std::fs::read_to_string(path);
    let ok2 = std::fs::read_to_string("/etc/hostname");
}
unsafe impl Send for X {}
"#;
    let found: Vec<(usize, Rule)> = scan(src).into_iter().map(|f| (f.line, f.rule)).collect();
    let want = [
        (1, Rule::Unsafe),
        (3, Rule::Unsafe),
        (3, Rule::Unsafe),
        (4, Rule::Unsafe),
        (5, Rule::ProcRead),
        (6, Rule::ProcRead),
        (10, Rule::Unsafe),
    ];
    assert_eq!(found, want, "{:#?}", scan(src));
}
