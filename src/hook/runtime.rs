//! `calico-medic runtime`: a runc wrapper for Docker's `runtimes` (daemon.json). On
//! `create` it appends calico-medic's prestart hook after the hooks already in the
//! bundle's `config.json` (Docker's own `libnetwork-setkey` among them, which returns
//! once the network is configured), then execs the real runtime with the very same
//! arguments. Every other sub-command is passed through untouched.
//!
//! Its own options come next, as daemon.json's `runtimeArgs` put them, and are not
//! passed on: `--calico-medic-runc=PATH` (the real runtime; default `runc`, else
//! `docker-runc`, on `PATH`), `--calico-medic-hook=PATH` (the calico-medic binary the
//! hook runs; default `/usr/bin/calico-medic`), `--calico-medic-config=PATH` and
//! `--calico-medic-trace=PATH` (handed to the hook).
//!
//! Nothing here may stop a container from starting: a bundle that cannot be read or
//! rewritten, or a hook binary that is missing, leaves `config.json` as it was. The
//! hook gets no OCI `timeout` (runc fails the start when one fires): its deadline is
//! its own.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The first argument that makes `calico-medic` the runtime.
pub const RUNTIME_ARG: &str = "runtime";
const OPTION_PREFIX: &str = "--calico-medic-";
/// `config.json` larger than this is passed through unread.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The wrapper's own options (leading `--calico-medic-*` arguments).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub runc: Option<PathBuf>,
    pub hook: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub trace: Option<PathBuf>,
}

/// Splits the arguments (without argv[0]) into the wrapper's own options and the
/// runtime's arguments, which are kept exactly as given.
pub fn split_args(args: Vec<OsString>) -> (Options, Vec<OsString>) {
    let mut opts = Options::default();
    let mut rest = args.into_iter().peekable();
    while let Some(a) = rest.peek() {
        let Some(text) = a.to_str().and_then(|t| t.strip_prefix(OPTION_PREFIX)) else { break };
        let Some((key, value)) = text.split_once('=') else { break };
        let value = Some(PathBuf::from(value));
        match key {
            "runc" => opts.runc = value,
            "hook" => opts.hook = value,
            "config" => opts.config = value,
            "trace" => opts.trace = value,
            _ => break,
        }
        rest.next();
    }
    (opts, rest.collect())
}

/// runc's global options that take a value (`--root X`): the sub-command is the
/// first argument that is neither an option nor such a value.
const GLOBAL_WITH_VALUE: [&str; 5] = ["--root", "--log", "--log-format", "--criu", "--rootless"];

/// The bundle directory of a `create` (`--bundle X`, `--bundle=X`, `-b X`; default:
/// the working directory); `None` for every other sub-command.
pub fn create_bundle(args: &[OsString]) -> Option<PathBuf> {
    let text: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    let mut i = 0;
    while i < text.len() && text[i].starts_with('-') {
        let takes_value = GLOBAL_WITH_VALUE.contains(&text[i]) && !text[i].contains('=');
        i += if takes_value { 2 } else { 1 };
    }
    if text.get(i) != Some(&"create") {
        return None;
    }
    let mut rest = text[i + 1..].iter();
    while let Some(a) = rest.next() {
        if let Some(v) = a.strip_prefix("--bundle=").or_else(|| a.strip_prefix("-b=")) {
            return Some(PathBuf::from(v));
        }
        if *a == "--bundle" || *a == "-b" {
            return rest.next().map(PathBuf::from);
        }
    }
    Some(PathBuf::from("."))
}

/// The hook as it goes into `config.json`.
pub fn hook_entry(binary: &Path, config: Option<&Path>, trace: Option<&Path>) -> Value {
    let mut args = vec!["calico-medic".to_string(), "hook".into(), "prestart".into()];
    for (flag, value) in [("--config", config), ("--trace", trace)] {
        if let Some(v) = value {
            args.push(format!("{flag}={}", v.display()));
        }
    }
    json!({ "path": binary.display().to_string(), "args": args })
}

/// Appends `hook` after the existing prestart hooks. False (and `spec` unchanged)
/// when the spec is not shaped as expected or already holds the hook.
pub fn add_prestart_hook(spec: &mut Value, hook: Value) -> bool {
    let Some(root) = spec.as_object_mut() else { return false };
    let hooks = root.entry("hooks").or_insert_with(|| json!({}));
    if hooks.is_null() {
        *hooks = json!({});
    }
    let Some(hooks) = hooks.as_object_mut() else { return false };
    let prestart = hooks.entry("prestart").or_insert_with(|| json!([]));
    if prestart.is_null() {
        *prestart = json!([]);
    }
    let Some(list) = prestart.as_array_mut() else { return false };
    if list.iter().any(|h| h.get("args") == hook.get("args") && h.get("path") == hook.get("path")) {
        return false;
    }
    list.push(hook);
    true
}

/// Adds the hook to `<bundle>/config.json` (replaced atomically); any failure leaves
/// the file as it was. Returns why nothing was added, for the caller to ignore.
pub fn install_hook(bundle: &Path, opts: &Options) -> Result<(), String> {
    let binary = opts.hook.clone().unwrap_or_else(|| PathBuf::from("/usr/bin/calico-medic"));
    if !binary.is_file() {
        return Err(format!("hook binary {} is missing", binary.display()));
    }
    let path = bundle.join("config.json");
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!("{} is larger than {MAX_CONFIG_BYTES} bytes", path.display()));
    }
    let raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut spec: Value = serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
    if !add_prestart_hook(&mut spec, hook_entry(&binary, opts.config.as_deref(), opts.trace.as_deref())) {
        return Err("config.json not shaped as an OCI spec, or already hooked".into());
    }
    let bytes = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
    let tmp = bundle.join(".config.json.calico-medic");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, meta.permissions()).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The real runtime: the configured path, else `runc`, else `docker-runc` on `PATH`.
fn real_runtime(opts: &Options) -> PathBuf {
    if let Some(p) = &opts.runc {
        return p.clone();
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for name in ["runc", "docker-runc"] {
        if let Some(found) = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()) {
            return found;
        }
    }
    PathBuf::from("runc")
}

/// The runtime's arguments when this process was started as `calico-medic runtime …`
/// (daemon.json: `"path": "/usr/bin/calico-medic", "runtimeArgs": ["runtime"]`).
pub fn invoked_as_runtime() -> Option<Vec<OsString>> {
    let mut args = std::env::args_os().skip(1);
    (args.next()? == RUNTIME_ARG).then(|| args.collect())
}

/// Runs as the runtime: maybe adds the hook, then becomes the real runtime. Returns
/// only when the exec itself failed (exit status 127, as a shell would).
pub fn run(args: Vec<OsString>) -> std::process::ExitCode {
    let (opts, rest) = split_args(args);
    if let Some(bundle) = create_bundle(&rest) {
        // Best effort by design: the start goes on unhooked (the follower and the
        // post-start pass remain).
        let _ = install_hook(&bundle, &opts);
    }
    let runc = real_runtime(&opts);
    let to_c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).ok();
    let Some(program) = to_c(runc.as_os_str()) else { return std::process::ExitCode::from(127) };
    let mut argv = vec![program.clone()];
    argv.extend(rest.iter().filter_map(|a| to_c(a)));
    let e = nix::unistd::execv(&program, &argv).unwrap_err();
    eprintln!("calico-medic {RUNTIME_ARG}: cannot run {}: {e}", runc.display());
    std::process::ExitCode::from(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn own_options_are_taken_off_the_front_only() {
        let (opts, rest) = split_args(os(&[
            "--calico-medic-runc=/usr/sbin/runc",
            "--calico-medic-hook=/x/calico-medic",
            "--root",
            "/run/docker/runtime-runc/moby",
            "--calico-medic-trace=/not/ours/here",
        ]));
        assert_eq!(opts.runc, Some("/usr/sbin/runc".into()));
        assert_eq!(opts.hook, Some("/x/calico-medic".into()));
        assert_eq!(rest, os(&["--root", "/run/docker/runtime-runc/moby", "--calico-medic-trace=/not/ours/here"]));
    }

    #[test]
    fn only_create_names_a_bundle() {
        let create =
            os(&["--root", "/r", "--log", "/l.json", "--log-format", "json", "create", "--bundle", "/b", "id1"]);
        assert_eq!(create_bundle(&create), Some("/b".into()));
        assert_eq!(create_bundle(&os(&["create", "--bundle=/c", "id"])), Some("/c".into()));
        assert_eq!(create_bundle(&os(&["--systemd-cgroup", "create", "-b", "/d", "id"])), Some("/d".into()));
        assert_eq!(create_bundle(&os(&["create", "id"])), Some(".".into()));
        for other in [&["--root", "/r", "start", "id"][..], &["delete", "create"], &["state", "id"], &[]] {
            assert_eq!(create_bundle(&os(other)), None, "{other:?}");
        }
    }

    #[test]
    fn the_hook_goes_after_dockers_own_and_only_once() {
        let setkey = json!({"path": "/proc/1/exe", "args": ["libnetwork-setkey", "-exec-root=/run/docker", "id", "c"]});
        let mut spec = json!({"ociVersion": "1.0.2", "hooks": {"prestart": [setkey.clone()]}, "process": {"env": []}});
        let hook = hook_entry(Path::new("/usr/bin/calico-medic"), None, None);
        assert!(add_prestart_hook(&mut spec, hook.clone()));
        assert_eq!(spec["hooks"]["prestart"], json!([setkey, hook.clone()]));
        assert!(!add_prestart_hook(&mut spec, hook.clone()), "already hooked");
        let mut bare = json!({"ociVersion": "1.0.2"});
        assert!(add_prestart_hook(&mut bare, hook.clone()));
        assert_eq!(bare["hooks"]["prestart"], json!([hook]));
        assert!(hook_entry(Path::new("/b"), None, None).get("timeout").is_none(), "no OCI timeout");
    }

    #[test]
    fn an_odd_or_broken_config_is_passed_through_unchanged() {
        let hook = hook_entry(Path::new("/usr/bin/calico-medic"), None, None);
        for odd in [json!([]), json!({"hooks": []}), json!({"hooks": {"prestart": {}}}), json!("x")] {
            let mut spec = odd.clone();
            assert!(!add_prestart_hook(&mut spec, hook.clone()));
            assert_eq!(spec, odd);
        }
        let dir = tempfile::tempdir().unwrap();
        let me = std::env::current_exe().unwrap();
        let opts = Options { hook: Some(me), ..Options::default() };
        std::fs::write(dir.path().join("config.json"), b"{not json").unwrap();
        assert!(install_hook(dir.path(), &opts).is_err());
        assert_eq!(std::fs::read(dir.path().join("config.json")).unwrap(), b"{not json");
        let missing = Options { hook: Some("/nonexistent/calico-medic".into()), ..Options::default() };
        std::fs::write(dir.path().join("config.json"), br#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert!(install_hook(dir.path(), &missing).is_err(), "no hook binary: nothing added");
        assert_eq!(std::fs::read(dir.path().join("config.json")).unwrap(), br#"{"ociVersion":"1.0.2"}"#);
        install_hook(dir.path(), &opts).unwrap();
        let spec: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(spec["hooks"]["prestart"].as_array().unwrap().len(), 1);
    }
}
