//! Helpers of the pre-start suites (`lab_prestart`, `lab_prestart_churn`): lab tasks
//! started with `docker run` directly, and what they printed first.

use std::time::{Duration, Instant};

use super::docker;

pub const NOMAC: &str = "calico-lab-nomac";
pub const IMAGE: &str = "calico-lab/busybox:latest";
/// The task's very first act: print what its own namespace says cali0's MAC is.
pub const FIRST_ACT: &str = "cat /sys/class/net/cali0/address; exec sleep 1000000";

/// The sandbox directories of both lab engines (20.10's default exec root, and engine
/// 2's `--exec-root /run/calico-lab/docker26/exec`).
pub fn config() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        f.path(),
        "[prestart]\nsandbox_dirs = [\"/run/docker/netns\", \"/run/calico-lab/docker26/exec/netns\"]\n",
    )
    .unwrap();
    f
}

/// Containers this test started; removed together on drop (also on a failed assert).
pub struct Started(pub Vec<String>);

impl Drop for Started {
    fn drop(&mut self) {
        for chunk in self.0.chunks(50) {
            let mut args = vec!["rm", "-f"];
            args.extend(chunk.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// `docker run -d` of one lab task; returns its id and how long the client took.
pub fn run_task(network: &str, extra: &[&str], command: &str) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let mut args = vec!["run", "-d", "--network", network, "--label", "calico-lab=1"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", command]);
    let out = docker(&args);
    let took = started.elapsed();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok((String::from_utf8_lossy(&out.stdout).trim().to_string(), took))
}

/// The first line a task printed (its first act), waiting up to 5 s for it.
pub fn first_line_of_logs(id: &str) -> String {
    let start = Instant::now();
    loop {
        let out = docker(&["logs", id]);
        let text = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_string();
        if !text.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
