//! The escalation state file (`[marathon] state_file`): the budget's kills as JSON,
//! read with a size ceiling and written atomically (a temporary file in the same
//! directory, fsync, rename, fsync of the directory), so a crash never leaves half
//! a file and a restarting agent keeps its budget.

use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::budget::Kill;

/// The file's ceiling: far above what `budget::KEPT` kills take.
pub const MAX_BYTES: u64 = 4 << 20;
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    kills: Vec<Kill>,
}

/// What the state file held.
#[derive(Debug, PartialEq)]
pub enum Loaded {
    /// No file yet (first run, or reset).
    Missing,
    Kills(Vec<Kill>),
    /// Unreadable, too large, or not this format: why.
    Unreadable(String),
}

pub fn load(path: &Path) -> Loaded {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Unreadable(format!("cannot open {}: {e}", path.display())),
    };
    let mut text = String::new();
    if let Err(e) = file.take(MAX_BYTES + 1).read_to_string(&mut text) {
        return Loaded::Unreadable(format!("cannot read {}: {e}", path.display()));
    }
    if text.len() as u64 > MAX_BYTES {
        return Loaded::Unreadable(format!("{} is larger than {MAX_BYTES} bytes", path.display()));
    }
    match serde_json::from_str::<StateFile>(&text) {
        Ok(s) if s.version == VERSION => Loaded::Kills(s.kills),
        Ok(s) => Loaded::Unreadable(format!("{}: unknown version {}", path.display(), s.version)),
        Err(e) => Loaded::Unreadable(format!("{}: not a state file: {e}", path.display())),
    }
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// Replaces the file with `kills`, atomically.
pub fn save(path: &Path, kills: &[Kill]) -> std::io::Result<()> {
    let body = serde_json::to_vec(&StateFile { version: VERSION, kills: kills.to_vec() })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let tmp = temporary(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Forgets every kill (`calico-medic escalations --reset`).
pub fn reset(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_survive_a_save_and_a_load_and_junk_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("escalations.json");
        assert_eq!(load(&path), Loaded::Missing);
        let kills = vec![Kill { at: 1.5, app: "/shop".into(), task: "shop.1".into(), dry_run: false }];
        save(&path, &kills).unwrap();
        assert_eq!(load(&path), Loaded::Kills(kills.clone()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        std::fs::write(&path, b"{\"version\":1,\"kills\":[{\"at\":").unwrap();
        assert!(matches!(load(&path), Loaded::Unreadable(_)));
        std::fs::write(&path, b"{\"version\":9,\"kills\":[]}").unwrap();
        assert!(matches!(load(&path), Loaded::Unreadable(why) if why.contains("version 9")));
        std::fs::write(&path, vec![b' '; MAX_BYTES as usize + 2]).unwrap();
        assert!(matches!(load(&path), Loaded::Unreadable(why) if why.contains("larger")));
        reset(&path).unwrap();
        reset(&path).unwrap();
        assert_eq!(load(&path), Loaded::Missing);
    }
}
