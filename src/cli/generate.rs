//! `calico-medic generate man|completions DIR` (hidden): the man pages and shell completions the
//! packages ship, rendered from `Cli` itself so they cannot drift from the flags. `.ci/release` runs it
//! with the binary it packages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

use super::{fail, Cli};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// calico-medic.1 and calico-medic-{run,check,repair}.1 (roff, not compressed).
    Man,
    /// calico-medic.bash, _calico-medic (zsh), calico-medic.fish.
    Completions,
}

#[derive(Debug, Args)]
pub struct GenerateCmd {
    pub what: What,
    /// Output directory (created if missing).
    pub dir: PathBuf,
}

impl GenerateCmd {
    pub fn exec(&self) -> ExitCode {
        match fs::create_dir_all(&self.dir).and_then(|()| generate(self.what, &self.dir)) {
            Ok(paths) => {
                for path in paths {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("generate: {}: {e}", self.dir.display())),
        }
    }
}

/// Writes the files of `what` into `dir` and returns their paths.
pub fn generate(what: What, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let cmd = documented_command();
    let mut written = Vec::new();
    match what {
        What::Man => {
            // One page for the tool and one per subcommand (the first names the others as
            // calico-medic-check(1) …); hidden subcommands get none.
            clap_mangen::generate_to(cmd.clone(), dir)?;
            let mut names = vec![format!("{}.1", cmd.get_name())];
            names.extend(cmd.get_subcommands().map(|s| format!("{}-{}.1", cmd.get_name(), s.get_name())));
            written.extend(names.into_iter().map(|n| dir.join(n)));
        }
        What::Completions => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let mut cmd = cmd.clone();
                let name = cmd.get_name().to_string();
                let path = clap_complete::generate_to(shell, &mut cmd, &name, dir)?;
                if shell == Shell::Bash {
                    let script = fs::read_to_string(&path)?;
                    fs::write(&path, fix_bash_hyphenated_name(&script, &name))?;
                }
                written.push(path);
            }
        }
    }
    for path in &written {
        if !path.is_file() {
            return Err(std::io::Error::other(format!("{} was not written", path.display())));
        }
    }
    Ok(written)
}

/// clap_complete's bash script (4.6.12) spells the state of a subcommand of a hyphenated binary two ways:
/// the loop that reads the words sets `calico__medic__subcmd__check`, the arm that offers its options is
/// labelled `calico__subcmd__medic__subcmd__check`, so `calico-medic check --<TAB>` offered nothing
/// (clap-rs/clap#6421, open). Relabel the arms as the loop spells them; a no-op once fixed upstream.
fn fix_bash_hyphenated_name(script: &str, name: &str) -> String {
    let wrong = name.replace('-', "__subcmd__");
    let right = name.replace('-', "__");
    if wrong == right {
        return script.to_string();
    }
    script.replace(&format!("{wrong}__subcmd__"), &format!("{right}__subcmd__"))
}

/// `Cli` as users see it: clap cannot remove a subcommand, so the root is rebuilt from its parts
/// without the hidden ones (completions would otherwise offer `generate`). A unit test checks that
/// its help is `Cli`'s help, byte for byte.
pub fn documented_command() -> clap::Command {
    // Leaked once (a one-shot command) so that its names are `'static`, as `clap::Command` takes them.
    let full: &'static clap::Command = Box::leak(Box::new(Cli::command()));
    let mut cmd = clap::Command::new(full.get_name())
        .subcommand_required(full.is_subcommand_required_set())
        .arg_required_else_help(full.is_arg_required_else_help_set())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(v) = full.get_version() {
        cmd = cmd.version(v);
    }
    if let Some(v) = full.get_long_version() {
        cmd = cmd.long_version(v);
    }
    if let Some(s) = full.get_about() {
        cmd = cmd.about(s.clone());
    }
    if let Some(s) = full.get_long_about() {
        cmd = cmd.long_about(s.clone());
    }
    if let Some(s) = full.get_after_help() {
        cmd = cmd.after_help(s.clone());
    }
    if let Some(s) = full.get_after_long_help() {
        cmd = cmd.after_long_help(s.clone());
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_command_is_cli_without_hidden_subcommands() {
        let mut full = Cli::command();
        let mut doc = documented_command();
        let names: Vec<_> = doc.get_subcommands().map(|s| s.get_name().to_string()).collect();
        assert_eq!(names, ["run", "check", "repair", "escalations", "ipam"]);
        assert_eq!(doc.render_long_help().to_string(), full.render_long_help().to_string());
        assert_eq!(doc.render_usage().to_string(), full.render_usage().to_string());
        assert!(full.get_subcommands().any(|s| s.get_name() == "generate" && s.is_hide_set()));
        doc.debug_assert();
    }

    #[test]
    fn writes_man_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let man = generate(What::Man, dir.path()).unwrap();
        let names: Vec<_> = man.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            [
                "calico-medic.1",
                "calico-medic-run.1",
                "calico-medic-check.1",
                "calico-medic-repair.1",
                "calico-medic-escalations.1",
                "calico-medic-ipam.1"
            ]
        );
        let page = fs::read_to_string(dir.path().join("calico-medic-check.1")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH calico-medic-check 1"), "{page}");
        for flag in ["unhealthy", "app", "container", "json", "docker\\-host"] {
            assert!(page.contains(&format!("\\-\\-{flag}")), "check page lacks --{flag}: {page}");
        }
        assert!(!dir.path().join("calico-medic-generate.1").exists());
        let completions = generate(What::Completions, dir.path()).unwrap();
        assert_eq!(completions.len(), 3);
        let bash = fs::read_to_string(dir.path().join("calico-medic.bash")).unwrap();
        for word in ["run", "check", "repair", "--unhealthy", "--app"] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        assert!(!bash.contains("generate"), "bash completion offers the hidden subcommand");
        // What bash does on <TAB>, for the top level and inside a subcommand.
        let complete = |words: &[&str]| -> String {
            let script = r#"source "$0"
                fn=$(complete -p calico-medic | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
                COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
                "$fn" calico-medic "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
                echo "${COMPREPLY[*]}""#;
            let out = std::process::Command::new("bash")
                .args(["--norc", "--noprofile", "-c", script])
                .arg(dir.path().join("calico-medic.bash"))
                .args(words)
                .output()
                .expect("bash");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let top = complete(&["calico-medic", ""]);
        for sub in ["run", "check", "repair"] {
            assert!(top.split(' ').any(|w| w == sub), "top level offers {top:?}");
        }
        assert_eq!(complete(&["calico-medic", "check", "--u"]), "--unhealthy");
        assert_eq!(complete(&["calico-medic", "repair", "--dry"]), "--dry-run");
        assert!(dir.path().join("_calico-medic").is_file() && dir.path().join("calico-medic.fish").is_file());
    }
}
