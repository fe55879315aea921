//! Keeps the code navigable (issue 20): no file under src/ holds more than 500
//! lines of non-test code. (Functions over 80 lines are refused by clippy's
//! `too_many_lines`, threshold 80 in clippy.toml, in the lint step.)

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines before the file's `#[cfg(test)]` module (a `_tests.rs` file is all test).
fn code_lines(path: &Path, text: &str) -> usize {
    if path.file_stem().is_some_and(|s| s.to_string_lossy().ends_with("_tests")) {
        return 0;
    }
    text.lines().take_while(|l| l.trim() != "#[cfg(test)]").count()
}

#[test]
fn no_source_file_holds_more_than_500_lines_of_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 20, "too few files found under src/: {}", files.len());
    let mut over: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = code_lines(f, &std::fs::read_to_string(f).expect("read source"));
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(root).unwrap_or(f).display()))
        })
        .collect();
    over.sort();
    assert!(over.is_empty(), "files over {MAX_LINES} lines of non-test code (split them by concern): {over:?}");
}

#[test]
fn test_modules_are_not_counted() {
    let text = "fn a() {}\nfn b() {}\n#[cfg(test)]\nmod tests {\n fn c() {}\n}\n";
    assert_eq!(code_lines(Path::new("src/x.rs"), text), 2);
    assert_eq!(code_lines(Path::new("src/agent/decide_tests.rs"), text), 0);
}
