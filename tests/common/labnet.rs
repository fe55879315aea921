//! Which plugin the suites' tasks run on: the stand-in (`calico-lab`, default) or Calico's real
//! libnetwork plugin (`CALICO_LAB_NET=calico-lab-real`), and what calico-medic then needs.

use std::path::{Path, PathBuf};

use super::{docker_ok, labctl_ok, Task};

/// The network the suites' tasks run on (`labctl task`'s default): `$CALICO_LAB_NET`, else
/// `calico-lab` (the stand-in plugin). `calico-lab-real` is Calico's real plugin
/// (libnetwork-plugin v1.1.3, tests/lab/calico-real/); its tasks are not omit-MAC ones.
pub fn lab_net() -> String {
    std::env::var("CALICO_LAB_NET").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "calico-lab".to_string())
}

/// Whether the suites run on Calico's real plugin (`CALICO_LAB_NET=calico-lab-real`).
pub fn on_real_plugin() -> bool {
    lab_net() == "calico-lab-real"
}

/// The host veths' prefix of the suites' tasks: `calr` on the real plugin (the lab runs the real
/// stack as its own Calico node, docs/testing.md), else Calico's `cali`.
pub fn lab_host_prefix() -> &'static str {
    if on_real_plugin() {
        "calr"
    } else {
        "cali"
    }
}

/// Calico's real Felix stopped until this is dropped (`labctl felix stop` / `start`).
pub struct RealFelixStopped;

impl RealFelixStopped {
    pub fn new() -> RealFelixStopped {
        labctl_ok(&["felix", "stop"]);
        RealFelixStopped
    }
}

impl Drop for RealFelixStopped {
    fn drop(&mut self) {
        let _ = super::labctl(&["felix", "start"]);
    }
}

/// What a calico-medic config for the lab must say before its sections: on the real plugin,
/// its driver names (20.10's `calico-real`, engine 2's `calico-real26`) in `calico_drivers`
/// and its host interface prefix (`calr`: the lab's real Felix polices only those).
pub fn lab_config_prefix() -> &'static str {
    if on_real_plugin() {
        "calico_drivers = [\"calico\", \"calico-real\", \"calico-real26\"]\nhost_interface_prefix = \"calr\"\n"
    } else {
        ""
    }
}

/// A config file holding only `lab_config_prefix()`, for runs that bring no `--config` of
/// their own; `None` on the stand-in (the defaults do).
pub fn lab_config_file() -> Option<&'static Path> {
    static FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        on_real_plugin().then(|| {
            let path = std::env::temp_dir().join(format!("calico-medic-lab-{}.toml", std::process::id()));
            std::fs::write(&path, lab_config_prefix()).expect("write the lab config");
            path
        })
    })
    .as_deref()
}

/// `args` with `--config <lab_config_file()>` after the subcommand, unless they name a
/// config already (or none is needed).
pub fn with_lab_config(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let Some(file) = lab_config_file() else { return out };
    if args.contains(&"--config") {
        return out;
    }
    if let Some(i) = args.iter().position(|a| ["run", "check", "repair", "escalations"].contains(a)) {
        out.insert(i + 1, "--config".into());
        out.insert(i + 2, file.display().to_string());
    }
    out
}

impl Task {
    /// A task the host cannot reach because cali0's MAC is not the one Calico expects: on the
    /// stand-in an omit-MAC task (`--nomac`: the seed failure, from its first instruction on);
    /// on Calico's real plugin, which never omits the MAC, a task whose MAC is broken right
    /// after its start (`labctl break <task> mac`).
    pub fn start_wrong_mac(args: &[&str]) -> Task {
        if on_real_plugin() {
            let task = Task::start(args);
            task.break_it("mac");
            task
        } else {
            Task::start(&[&["--nomac"][..], args].concat())
        }
    }

    /// After `docker restart`: an omit-MAC task comes back with a wrong MAC again; a real-plugin
    /// task comes back right, so its MAC is broken again here.
    pub fn wrong_mac_again(&self) {
        if on_real_plugin() {
            self.break_it("mac");
        }
    }

    /// Asserts the task runs on one network of the plugin the suite asked for: on the real
    /// plugin `lab_net()` with a `calico-real*` driver, else a stand-in (`calico`) network.
    /// Guards `CALICO_LAB_NET` in the test command.
    pub fn assert_on_lab_plugin(&self) {
        let nets: Vec<String> = self.networks().into_iter().map(|(n, _)| n).collect();
        assert_eq!(nets.len(), 1, "{} is on {nets:?}", self.name);
        let driver = docker_ok(&["network", "inspect", "-f", "{{.Driver}}", &nets[0]]);
        if on_real_plugin() {
            assert_eq!((nets[0].as_str(), driver.starts_with("calico-real")), (lab_net().as_str(), true), "{driver}");
        } else {
            assert_eq!(driver, "calico", "network {}", nets[0]);
        }
        eprintln!("{} runs on network {} (driver {driver})", self.name, nets[0]);
    }

    /// The MAC in the task's datastore record (Calico's JSON in etcd), `labctl endpoint`.
    pub fn datastore_mac(&self) -> String {
        let ep: serde_json::Value = serde_json::from_str(&labctl_ok(&["endpoint", &self.name])).expect("endpoint JSON");
        ep["mac"].as_str().expect("a mac in the record").to_string()
    }
}
