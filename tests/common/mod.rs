//! Shared helpers for end-to-end tests on the lab (real Docker + Calico stand-in).
#![allow(dead_code)]

pub mod labnet;
pub mod prestart;

pub use labnet::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn medic_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_calico-medic"))
}

/// Fails the test unless root, Docker and the lab are available. The end-to-end
/// tests are `#[ignore]`d, so a plain `cargo test` lists them as ignored (skipped);
/// `tests/run.sh` (and anyone asking with `--include-ignored`) runs them, and then a
/// missing lab is a failure, never a silent pass.
pub fn require_lab() {
    if !lab_ready() {
        panic!("end-to-end tests need root, Docker and the lab (run tests/lab/setup.sh as root)");
    }
}

/// True when root, Docker and the lab are available (the reason is printed when not).
pub fn lab_ready() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let docker = Path::new(&docker_socket()).exists();
    let lab = Command::new("/usr/bin/docker")
        .args(["network", "inspect", "calico-lab", "calico-lab-nomac", &lab_net()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if root && docker && lab {
        return true;
    }
    let why = format!(
        "root={root} docker_socket={docker} ({}) lab_networks={lab} (run tests/lab/setup.sh as root)",
        docker_socket()
    );
    eprintln!("lab not ready: {why}");
    false
}

pub fn labctl(args: &[&str]) -> Output {
    Command::new(repo().join("tests/lab/labctl")).args(args).output().expect("run labctl")
}

pub fn labctl_ok(args: &[&str]) -> String {
    let out = labctl(args);
    assert!(out.status.success(), "labctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A lab container, removed on drop.
pub struct Task {
    pub name: String,
}

impl Task {
    pub fn start(args: &[&str]) -> Task {
        let mut all = vec!["task"];
        all.extend_from_slice(args);
        Task { name: labctl_ok(&all) }
    }

    pub fn plain(network: &str) -> Task {
        Task { name: labctl_ok(&["run-plain", "--network", network]) }
    }

    pub fn reachable(&self) -> bool {
        labctl(&["ping", &self.name]).status.success()
    }

    pub fn pid(&self) -> String {
        labctl_ok(&["pid", &self.name])
    }

    pub fn break_it(&self, kind: &str) {
        labctl_ok(&["break", &self.name, kind]);
    }

    /// Links (with MACs and flags), addresses and routes of the container's netns.
    /// The ARP cache is left out: traffic (such as the reachability probe's reply)
    /// legitimately fills it; calico-medic never writes it.
    pub fn netns_snapshot(&self) -> String {
        let pid = self.pid();
        let mut out = String::new();
        for args in [&["-d", "link"][..], &["addr"][..], &["route"][..]] {
            let o = Command::new("nsenter").args(["-t", &pid, "-n", "ip"]).args(args).output().expect("nsenter");
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
        out
    }

    pub fn routes(&self) -> String {
        let pid = self.pid();
        let o = Command::new("nsenter").args(["-t", &pid, "-n", "ip", "route"]).output().expect("nsenter");
        String::from_utf8_lossy(&o.stdout).lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }

    pub fn mac(&self) -> String {
        labctl_ok(&["mac", &self.name])
    }

    /// Polls host→container ping until it works or `within` passes; returns when.
    pub fn wait_reachable(&self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if ping_once(&labctl_ok(&["ip", &self.name])) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// One fast ping (200 ms timeout) from the host.
pub fn ping_once(ip: &str) -> bool {
    Command::new("ping").args(["-c1", "-W0.2", "-q", ip]).output().map(|o| o.status.success()).unwrap_or(false)
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = labctl(&["rm", &self.name]);
    }
}

pub const CALICO_ROUTES: &str = "default via 169.254.1.1 dev cali0\n169.254.1.1 dev cali0 scope link\n";

/// Runs the CLI (with the lab's config on the real plugin, `with_lab_config`); returns (exit
/// code, stdout, stderr).
pub fn medic(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(medic_bin())
        .args(with_lab_config(args))
        .env("CALICO_MEDIC_LOG", "calico_medic=info")
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs `check`/`repair` with --json and parses the report array.
pub fn medic_json(args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = medic(&all);
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}\nstderr: {err}"));
    (code, json, err)
}

pub fn fault_codes(report: &serde_json::Value) -> Vec<String> {
    report["faults"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

/// A plain HTTP/1.0 GET on loopback; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `calico-medic run` in the background; SIGTERM on drop.
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Daemon {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::env::temp_dir().join(format!("calico-medic-{}.log", addr.replace([':', '.'], "_")));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(medic_bin())
            .args(with_lab_config(&[&["run", "--listen", &addr][..], extra].concat()))
            .stderr(file)
            .spawn()
            .expect("start daemon");
        let d = Daemon { child, addr, log };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some((200, _)) = http_get(&d.addr, "/readyz") {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon not ready within 20s; log:\n{}", d.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Value of one sample line (exact series text before the value).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    /// Waits until the daemon is idle: the watch count stable for a second and no
    /// namespace fd open (no pass in flight). Returns the watch count.
    pub fn settle(&self) -> f64 {
        let start = Instant::now();
        let mut last = (-1.0, Instant::now());
        while start.elapsed() < Duration::from_secs(15) {
            let w = self.metric("calico_medic_watches").unwrap_or(-1.0);
            if w != last.0 {
                last = (w, Instant::now());
            } else if last.1.elapsed() >= Duration::from_secs(1) && fd_census(self.child.id()).1 == 0 {
                return w;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last.0
    }

    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The lines of a `--log-format json` log, each parsed (tracing-subscriber's JSON with
/// the event flattened: `level`, `message` and the event's fields side by side).
/// Panics on a line that is not JSON.
pub fn json_log_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}\nlog:\n{text}")))
        .collect()
}

/// The first JSON log event whose message starts with `message`.
pub fn json_event<'a>(lines: &'a [serde_json::Value], message: &str) -> Option<&'a serde_json::Value> {
    lines.iter().find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(message)))
}

/// Asserts that a JSON log event carries each of `fields` (present and not null).
pub fn assert_log_fields(event: &serde_json::Value, fields: &[&str]) {
    for f in fields {
        assert!(event.get(*f).is_some_and(|v| !v.is_null()), "no field {f:?} in {event}");
    }
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Daemon tests share the host's containers: run them one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `ip` inside a container's network namespace (test-side breaking/observing).
pub fn in_netns(pid: &str, args: &[&str]) -> bool {
    Command::new("nsenter")
        .args(["-t", pid, "-n", "ip"])
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> String {
    let b: [u8; 6] = rand::random();
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", (b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5])
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident set of a process in KiB (`VmRSS`); 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap_or_default();
    line.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// (sockets, network-namespace fds) held open by a process.
pub fn fd_census(pid: u32) -> (usize, usize) {
    let mut sockets = 0;
    let mut netns = 0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                let t = target.to_string_lossy();
                if t.starts_with("socket:") {
                    sockets += 1;
                } else if t.starts_with("net:") {
                    netns += 1;
                }
            }
        }
    }
    (sockets, netns)
}

/// Sum of all samples of a metric family whose series text starts with `prefix`.
pub fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// `calico_medic_repairs_total{fault="mac_mismatch",result=…}` in a scrape.
pub fn mac_repairs(metrics: &str, result: &str) -> f64 {
    metric_sum(metrics, &format!("calico_medic_repairs_total{{fault=\"mac_mismatch\",result=\"{result}\"}}"))
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Calico IPs of many containers with one `docker inspect` (labctl ip is per container).
pub fn ips_of(tasks: &[Task]) -> Vec<String> {
    let mut args = vec!["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"];
    args.extend(tasks.iter().map(|t| t.name.as_str()));
    let out = Command::new("/usr/bin/docker").args(&args).output().expect("docker inspect");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

// ---- Tasks on two networks (tests/lab_multinet.rs) ----

pub const DOCKER: &str = "/usr/bin/docker";

pub fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER).args(args).output().expect("run /usr/bin/docker")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `<prefix>-<random uuid>`: a container name no other run (nor a leftover of one) holds.
pub fn unique_name(prefix: &str) -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("random uuid");
    format!("{prefix}-{}", uuid.trim())
}

/// A Docker bridge network a test needs beside the calico ones (its name decides
/// whether Docker gives it the default route: name order). Created idempotently
/// (an existing one with the same subnet is reused, e.g. after a crashed run) and
/// removed on drop: declare it before the tasks that use it so they go first.
pub struct BridgeNet {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
}

impl BridgeNet {
    /// `subnet` is a /24 `a.b.c.0/24`; the gateway is `a.b.c.1`.
    pub fn ensure(name: &str, subnet: &str) -> BridgeNet {
        let gateway = format!("{}.1", subnet.rsplit_once('.').expect("a.b.c.0/24").0);
        let net = BridgeNet { name: name.into(), subnet: subnet.into(), gateway };
        for _ in 0..3 {
            let seen =
                docker(&["network", "inspect", "-f", "{{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}", name]);
            if seen.status.success() {
                let seen = String::from_utf8_lossy(&seen.stdout).trim().to_string();
                assert_eq!(seen, format!("bridge {subnet}"), "network {name} exists but is not ours");
                return net;
            }
            let created = docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                subnet,
                "--gateway",
                &net.gateway,
                "--label",
                "calico-lab=1",
                name,
            ]);
            if created.status.success() {
                return net;
            }
            // Lost a race with another creator: look again.
            eprintln!("docker network create {name}: {}", String::from_utf8_lossy(&created.stderr).trim());
        }
        panic!("could not create bridge network {name} ({subnet})");
    }
}

impl Drop for BridgeNet {
    fn drop(&mut self) {
        let out = docker(&["network", "rm", &self.name]);
        if !out.status.success() {
            eprintln!("docker network rm {}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
    }
}

/// A Marathon-like lab task (env and labels as `labctl task` sets them) started on
/// `first`, then `docker network connect`ed to each of `more` in order. Returns
/// once the Felix stand-in has programmed every calico endpoint's host side.
pub fn task_on_networks(app: &str, first: &str, more: &[&str]) -> Task {
    let name = unique_name("mesos");
    let uuid = &name["mesos-".len()..];
    let task_id = format!("{app}.{uuid}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let envs = [
        format!("MESOS_TASK_ID={task_id}"),
        format!("MARATHON_APP_ID=/{app}"),
        "MARATHON_APP_VERSION=2017-01-01T00:00:00.000Z".to_string(),
        format!("MESOS_CONTAINER_NAME={name}"),
        "MESOS_SANDBOX=/mnt/mesos/sandbox".to_string(),
        format!("HOST={host}"),
        "PORT0=31000".to_string(),
    ];
    let label = format!("MESOS_TASK_ID={task_id}");
    let mut args = vec!["run", "-d", "--name", &name, "--network", first, "--label", "calico-lab=1", "--label", &label];
    for e in &envs {
        args.extend(["-e", e.as_str()]);
    }
    args.extend(["calico-lab/busybox:latest", "/bin/sleep", "1000000"]);
    let out = docker(&args);
    let task = Task { name };
    assert!(out.status.success(), "docker run on {first}: {}", String::from_utf8_lossy(&out.stderr));
    for net in more {
        docker_ok(&["network", "connect", net, &task.name]);
    }
    for (net, ep) in task.networks() {
        if is_calico_network(&net) {
            wait_host_programmed(ep["IPAddress"].as_str().unwrap_or_default());
        }
    }
    task
}

pub fn is_calico_network(net: &str) -> bool {
    docker(&["network", "inspect", "-f", "{{.Driver}}", net]).stdout.starts_with(b"calico")
}

/// Waits (≤ 3 s) for the host route and PERMANENT neighbour of a calico IP.
pub fn wait_host_programmed(ip: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let route = Command::new("ip").args(["-4", "route", "show", &format!("{ip}/32")]).output().unwrap();
        let neigh = Command::new("ip").args(["neigh", "show", ip]).output().unwrap();
        if !route.stdout.is_empty() && String::from_utf8_lossy(&neigh.stdout).contains("PERMANENT") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("host route/neighbour for {ip} not programmed after 3 s");
}

impl Task {
    /// `docker inspect`'s `NetworkSettings.Networks`: network name → endpoint settings.
    pub fn networks(&self) -> Vec<(String, serde_json::Value)> {
        let out = docker_ok(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", &self.name]);
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&out).expect("networks JSON");
        map.into_iter().collect()
    }

    /// The task's address on one network (`docker inspect`).
    pub fn ip_on(&self, net: &str) -> String {
        let nets = self.networks();
        let ep = nets.iter().find(|(n, _)| n == net).unwrap_or_else(|| panic!("{} not on {net}", self.name));
        ep.1["IPAddress"].as_str().unwrap().to_string()
    }

    /// `ip <args>` inside the task's netns; its stdout (panics if it fails).
    pub fn ip_in(&self, args: &[&str]) -> String {
        let pid = self.pid();
        let o = Command::new("nsenter").args(["-t", &pid, "-n", "ip"]).args(args).output().expect("nsenter");
        assert!(o.status.success(), "ip {args:?} in {}: {}", self.name, String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// The MAC of one interface inside the task.
    pub fn mac_of(&self, interface: &str) -> String {
        let out = self.ip_in(&["-o", "link", "show", "dev", interface]);
        out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap_or_default().to_string()
    }

    /// IPv4 addresses (`a.b.c.d/len`) on one interface inside the task.
    pub fn addrs_of(&self, interface: &str) -> Vec<String> {
        let out = self.ip_in(&["-4", "-o", "addr", "show", "dev", interface]);
        out.lines().filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1)).map(String::from).collect()
    }

    /// The interface inside the task that holds `ip` (first match), as the kernel lists it.
    pub fn interface_with(&self, ip: &str) -> Option<String> {
        let out = self.ip_in(&["-4", "-o", "addr", "show"]);
        out.lines()
            .find(|l| l.split_whitespace().any(|w| w.starts_with(&format!("{ip}/"))))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(String::from)
    }
}

/// The Docker socket the suites use: `$DOCKER_HOST` when it is `unix://…` (as for the
/// docker client, labctl and calico-medic, which all follow it; e.g. engine 2 of
/// tests/lab/engine26.sh), else /var/run/docker.sock.
pub fn docker_socket() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => h.trim_start_matches("unix://").to_string(),
        _ => "/var/run/docker.sock".to_string(),
    }
}

/// `docker version -f <template>` on the engine the suites use.
pub fn docker_version(template: &str) -> String {
    let out = Command::new("/usr/bin/docker").args(["version", "-f", template]).output().expect("docker version");
    assert!(out.status.success(), "docker version: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The Engine API version calico-medic should use: `$DOCKER_API_VERSION` when set,
/// else the negotiated one (the daemon's, capped at bollard's default).
pub fn expected_api_version() -> String {
    if let Some(v) = std::env::var("DOCKER_API_VERSION").ok().filter(|v| !v.is_empty()) {
        return v;
    }
    let server = docker_version("{{.Server.APIVersion}}");
    let (major, minor) = server.split_once('.').expect("MAJOR.MINOR");
    let server =
        bollard::ClientVersion { major_version: major.parse().unwrap(), minor_version: minor.parse().unwrap() };
    let ours = *bollard::API_DEFAULT_VERSION;
    if server < ours {
        server.to_string()
    } else {
        ours.to_string()
    }
}

/// How calico-medic logs the API version in use (`DockerClient::api_description`).
pub fn expected_api_log() -> String {
    let how = if std::env::var("DOCKER_API_VERSION").is_ok_and(|v| !v.is_empty()) {
        "pinned by DOCKER_API_VERSION"
    } else {
        "negotiated"
    };
    format!("Engine API {} ({how})", expected_api_version())
}
