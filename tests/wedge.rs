//! A daemon that cannot wedge and a port that cannot be abused (issue 12), end to
//! end: a Docker socket that stalls mid-answer, a connection flood on the metrics
//! port, an event stream that fails at once, out-of-range configuration, a task
//! that sprays datagrams at the watch groups, tenant text with control characters.
//! Where a real Docker cannot misbehave on demand, a fake or a proxy on a unix
//! socket stands in (threads, std only).

// Some tests own a runtime; the serial guard deliberately spans the whole test.
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calico_medic::netlink::Netlink;
use calico_medic::netns::{NsIdentity, TargetNetns};
use common::*;

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 server side on unix sockets (one thread per connection).

/// Reads one request head; None at EOF.
fn read_head(s: &mut UnixStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).to_string())
}

/// Path of a request head without the `/v1.xx` prefix and the query.
fn api_path(head: &str) -> String {
    let target = head.split(' ').nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let path = match path.strip_prefix("/v1.") {
        Some(rest) => rest.split_once('/').map(|(_, p)| format!("/{p}")).unwrap_or_default(),
        None => path.to_string(),
    };
    // The stuck-creating count lists created containers: not a resync.
    if path == "/containers/json" && target.contains("created") {
        return "/containers/json (created)".into();
    }
    // The duplicate-address listing asks for calico networks' containers only: not a resync.
    if path == "/containers/json" && target.contains("network") {
        return "/containers/json (by network)".into();
    }
    path
}

fn respond(s: &mut UnixStream, status: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Waits until the peer closes (or 10 minutes pass).
fn hold(s: &mut UnixStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
    let mut buf = [0u8; 512];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// A fake Docker Engine: `/_ping`, `/version`, empty lists; `/events` answers 500 at
/// once (`events_fail`) or stays open. Records when each path was asked.
#[derive(Clone)]
struct FakeDocker {
    sock: PathBuf,
    hits: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
}

impl FakeDocker {
    fn start(dir: &Path, events_fail: bool) -> FakeDocker {
        let sock = dir.join("fake-docker.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let fake = FakeDocker { sock, hits: Arc::default() };
        let hits = fake.hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let hits = hits.clone();
                std::thread::spawn(move || {
                    let Some(head) = read_head(&mut s) else { return };
                    let path = api_path(&head);
                    hits.lock().unwrap().entry(path.clone()).or_default().push(Instant::now());
                    match path.as_str() {
                        "/_ping" => respond(&mut s, "200 OK", "OK"),
                        "/version" => respond(
                            &mut s,
                            "200 OK",
                            r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24","Os":"linux","Arch":"amd64"}"#,
                        ),
                        "/containers/json" | "/networks" => respond(&mut s, "200 OK", "[]"),
                        "/events" if events_fail => {
                            respond(&mut s, "500 Internal Server Error", r#"{"message":"boom"}"#)
                        }
                        "/events" => {
                            let _ = write!(
                                s,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                            );
                            hold(&mut s);
                        }
                        _ => respond(&mut s, "404 Not Found", r#"{"message":"no such thing"}"#),
                    }
                });
            }
        });
        fake
    }

    fn url(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    fn times(&self, path: &str) -> Vec<Instant> {
        self.hits.lock().unwrap().get(path).cloned().unwrap_or_default()
    }
}

/// Which inspects the proxy stalls (after sending the headers).
#[derive(Clone, Debug, PartialEq)]
enum Stall {
    Nothing,
    Container(String),
    Every,
}

/// A proxy in front of the real Docker socket that forwards everything but can stall
/// `GET /containers/<id>/json`: it sends the response headers and then nothing.
struct StallingProxy {
    sock: PathBuf,
    stall: Arc<Mutex<Stall>>,
}

impl StallingProxy {
    fn start(dir: &Path) -> StallingProxy {
        let sock = dir.join("docker-proxy.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let stall = Arc::new(Mutex::new(Stall::Nothing));
        let rule = stall.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let rule = rule.clone();
                std::thread::spawn(move || {
                    let Some(head) = read_head(&mut client) else { return };
                    let path = api_path(&head);
                    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
                    let inspect = parts.len() == 3 && parts[0] == "containers" && parts[2] == "json";
                    let stalled = inspect
                        && match &*rule.lock().unwrap() {
                            Stall::Nothing => false,
                            Stall::Every => true,
                            Stall::Container(id) => id.starts_with(parts[1]) || parts[1].starts_with(id.as_str()),
                        };
                    if stalled {
                        let _ = write!(
                            client,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{{\"Id\":"
                        );
                        hold(&mut client);
                        return;
                    }
                    // One request per upstream connection: ask Docker to close after it.
                    let kept: Vec<&str> = head
                        .split("\r\n")
                        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
                        .collect();
                    let head = kept.join("\r\n") + "\r\nConnection: close\r\n\r\n";
                    let Ok(mut upstream) = UnixStream::connect("/var/run/docker.sock") else { return };
                    if upstream.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let _ = std::io::copy(&mut upstream, &mut client);
                });
            }
        });
        StallingProxy { sock, stall }
    }

    fn set(&self, s: Stall) {
        *self.stall.lock().unwrap() = s;
    }
}

/// `calico-medic run` with a config file and a Docker endpoint, not waiting for
/// readiness (the caller decides what to wait for).
fn spawn_daemon(config: &Path, docker_host: &str) -> (Child, String, PathBuf) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = config.with_extension("log");
    let child = Command::new(medic_bin())
        .args(["run", "--listen", &addr, "--config", config.to_str().unwrap(), "--docker-host", docker_host])
        .env("CALICO_MEDIC_LOG", "calico_medic=debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, addr, log)
}

fn wait_for(within: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if ok() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn sighup(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

fn sigterm(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = wait_for(Duration::from_secs(6), || matches!(child.try_wait(), Ok(Some(_))));
    let _ = child.kill();
    let _ = child.wait();
}

fn metric_of(addr: &str, series: &str) -> f64 {
    let body = http_get(addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    body.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

fn healthz(addr: &str) -> u16 {
    http_get(addr, "/healthz").map(|(s, _)| s).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// 1. A Docker socket that stalls mid-answer.

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_stalled_inspect_times_out_others_are_repaired_and_the_agent_recovers() {
    require_lab();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let proxy = StallingProxy::start(dir.path());
    let cfg = dir.path().join("config.toml");
    // Documented: /healthz fails when work waits and no pass completed for 3 × pass_timeout.
    // The pre-start path repairs without inspect (the victim would be fixed before its
    // start): off here, so the stalled inspect is the only way to the victim.
    std::fs::write(
        &cfg,
        "pass_timeout = \"1s\"\ncall_timeout = \"800ms\"\nresync_interval = \"1s\"\nmax_concurrent_checks = 2\n\
         [prestart]\nenabled = false\n",
    )
    .unwrap();
    let (mut child, addr, log) = spawn_daemon(&cfg, &format!("unix://{}", proxy.sock.display()));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || http_get(&addr, "/readyz").is_some_and(|(s, _)| s == 200)).is_some(),
        "ready; log:\n{}",
        log_text()
    );
    let timeouts = || metric_of(&addr, "calico_medic_check_errors_total{reason=\"timeout\"}");

    // The victim's inspect stalls after the headers; its pass must time out.
    let victim_name = unique_name("mesos");
    let id = docker_create_nomac(&victim_name, "/wedge-victim");
    proxy.set(Stall::Container(id.clone()));
    let victim = Task { name: victim_name };
    let before = timeouts();
    let started = Instant::now();
    let out = Command::new("/usr/bin/docker").args(["start", &victim.name]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first_timeout = wait_for(Duration::from_secs(5), || timeouts() > before);
    let first_timeout = first_timeout.unwrap_or_else(|| panic!("no timeout counted; log:\n{}", log_text()));
    eprintln!("stall: victim started → its pass counted as timed out after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_millis(2500), "deadline 1s (+ start, + scrape): {first_timeout:?}");

    // Meanwhile other tasks are repaired.
    let mut others = Vec::new();
    for _ in 0..3 {
        let t = Task::start(&["--nomac", "--app", "wedge-bystander"]);
        let took = t.wait_reachable(Duration::from_secs(3));
        let took =
            took.unwrap_or_else(|| panic!("bystander not repaired while one inspect stalls; log:\n{}", log_text()));
        eprintln!("stall: bystander repaired {took:?} after docker run returned");
        assert!(took < Duration::from_secs(1), "bystander took {took:?}");
        others.push(t);
    }
    assert!(!victim.reachable(), "the victim cannot have been repaired: its inspect never answers");
    let log_now = log_text();
    let lines = log_now.lines().filter(|l| l.contains("cannot check container") && l.contains(&id[..12])).count();
    let counted = timeouts() - before;
    eprintln!("stall: {counted} timed-out passes counted, {lines} log lines about the victim");
    assert!(lines >= 1 && (lines as f64 - counted).abs() <= 1.0, "one log line per timed-out pass");
    assert!(log_now.contains("timed out after 800ms"), "the error names what timed out");
    assert_eq!(healthz(&addr), 200, "one stuck container is not a stuck agent");

    // Every worker stuck: every inspect stalls.
    proxy.set(Stall::Every);
    let stalled_at = Instant::now();
    let failed = wait_for(Duration::from_secs(10), || healthz(&addr) == 503);
    let failed = failed.unwrap_or_else(|| panic!("/healthz never failed; log:\n{}", log_text()));
    eprintln!("every inspect stalled → /healthz 503 after {failed:?} (documented: 3 × pass_timeout = 3s)");
    assert!(stalled_at.elapsed() < Duration::from_secs(5), "{failed:?}");
    assert_eq!(http_get(&addr, "/readyz").map(|(s, _)| s), Some(200), "/readyz unchanged in meaning");

    // Docker answers again: healthy, and the victim is repaired on the next trigger.
    proxy.set(Stall::Nothing);
    let back = wait_for(Duration::from_secs(10), || victim.reachable());
    let back = back.unwrap_or_else(|| panic!("victim not repaired after recovery; log:\n{}", log_text()));
    assert!(wait_for(Duration::from_secs(5), || healthz(&addr) == 200).is_some());
    eprintln!("recovered: victim repaired {back:?} after the socket answered again");
    assert!(child.try_wait().unwrap().is_none(), "never exited");
    assert!(!log_text().contains("panicked"));
    sigterm(&mut child);
}

/// Creates (not starts) a Marathon-like omit-MAC task with the given app id; returns its id.
fn docker_create_nomac(name: &str, app: &str) -> String {
    let task = unique_name("wedge").replacen('-', ".", 1);
    let out = Command::new("/usr/bin/docker")
        .args(["create", "--name", name, "--network", "calico-lab-nomac", "--label", "calico-lab=1"])
        .args(["--label", &format!("MESOS_TASK_ID={task}")])
        .args(["-e", &format!("MARATHON_APP_ID={app}"), "-e", &format!("MESOS_TASK_ID={task}")])
        .args(["calico-lab/busybox:latest", "/bin/sleep", "1000000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------
// 2. 2,000 idle connections and a slow-header client on the metrics port.

fn raise_nofile(to: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = to.max(lim.rlim_cur);
        lim.rlim_max = lim.rlim_max.max(lim.rlim_cur);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "raise RLIMIT_NOFILE");
    }
}

/// Sends a request head one header line every 300 ms, never finishing it; returns
/// how long the server kept the connection.
fn slow_header_client(addr: &str) -> Duration {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let start = Instant::now();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    let mut buf = [0u8; 256];
    for i in 0.. {
        if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).is_err() || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        // Closed (EOF or reset) shows on read; a timeout means still open.
        match s.read(&mut buf) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    start.elapsed()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn fd_limit(pid: u32) -> usize {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_connection_flood_neither_starves_repairs_nor_the_scraper() {
    require_lab();
    let _serial = serial();
    raise_nofile(8192);
    let daemon = Daemon::start(&[]);
    let pid = daemon.child.id();
    let limit = fd_limit(pid);
    let base_fds = fd_count(pid);
    // Slow headers: one header line every 300 ms, never finishing.
    let slow_addr = daemon.addr.clone();
    let slow = std::thread::spawn(move || slow_header_client(&slow_addr));
    // 2,000 idle connections (4 threads), kept open on our side.
    let flood_start = Instant::now();
    let idle: Vec<std::net::TcpStream> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let addr: std::net::SocketAddr = daemon.addr.parse().unwrap();
                sc.spawn(move || {
                    (0..500)
                        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let flood_end = Instant::now();
    eprintln!("flood: {} of 2000 idle connections established in {:?}", idle.len(), flood_end - flood_start);
    let mut max_fds = fd_count(pid);
    // Repairs still fast.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let t = Task::start(&["--nomac", "--app", "wedge-flood"]);
        let took = t.wait_reachable(Duration::from_secs(3));
        max_fds = max_fds.max(fd_count(pid));
        let took = took.unwrap_or_else(|| panic!("not repaired during the flood; log:\n{}", daemon.log_text()));
        eprintln!("flood: omit-MAC task repaired {took:?} after docker run returned");
        assert!(took < Duration::from_secs(1), "{took:?}");
        tasks.push(t);
    }
    // The scraper still gets through.
    let asked = Instant::now();
    let scrape = http_get(&daemon.addr, "/metrics");
    eprintln!("flood: /metrics answered in {:?}", asked.elapsed());
    assert!(scrape.is_some_and(|(s, b)| s == 200 && b.contains("calico_medic_build_info")), "/metrics answers");
    assert!(asked.elapsed() < Duration::from_secs(1));
    max_fds = max_fds.max(fd_count(pid));
    eprintln!("flood: agent fds {base_fds} before, at most {max_fds} during (limit {limit})");
    assert!(max_fds < limit && max_fds < base_fds + 300, "fds bounded by the connection limit");
    // Every idle connection gets closed (header timeout 5 s, or evicted for room).
    std::thread::sleep(Duration::from_millis(6500).saturating_sub(flood_end.elapsed()));
    let open = idle
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 64];
            matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    eprintln!(
        "flood: {open} of {} idle connections still open {:?} after the last one was opened",
        idle.len(),
        flood_start.elapsed()
    );
    assert_eq!(open, 0, "idle connections are closed");
    let slow_lived = slow.join().unwrap();
    eprintln!("flood: slow-header client (oldest idle) cut off after {slow_lived:?}");
    assert!(slow_lived < Duration::from_secs(8), "{slow_lived:?}");
    // Without a flood to make room for, a slow-header client meets the header-read timeout.
    let slow_lived = slow_header_client(&daemon.addr);
    eprintln!("flood over: a slow-header client alone is cut off after {slow_lived:?} (header-read timeout 5 s)");
    assert!(slow_lived > Duration::from_secs(4) && slow_lived < Duration::from_secs(7), "{slow_lived:?}");
    assert_eq!(http_get(&daemon.addr, "/healthz").map(|(s, _)| s), Some(200));
}

// ---------------------------------------------------------------------------
// 3. `/_ping` 200 and `/events` 500 at once.

#[test]
fn an_event_stream_that_fails_at_once_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDocker::start(dir.path(), true);
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "").unwrap();
    let (mut child, _addr, log) = spawn_daemon(&cfg, &fake.url());
    let window = Duration::from_secs(21);
    std::thread::sleep(window);
    let resyncs = fake.times("/containers/json");
    let events = fake.times("/events");
    let pings = fake.times("/_ping");
    sigterm(&mut child);
    let gaps: Vec<f64> = resyncs.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    eprintln!(
        "events 500: {} resyncs, {} /events and {} /_ping requests in {window:?}; gaps between resyncs {gaps:.1?} s",
        resyncs.len(),
        events.len(),
        pings.len()
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!resyncs.is_empty(), "it did resync; log:\n{log}");
    // RESYNC_SPACING 10 s ⇒ at most 6 per minute, in any window: ≤ 3 in 21 s.
    assert!(resyncs.len() <= 3, "{} resyncs in {window:?}", resyncs.len());
    assert!(gaps.iter().all(|g| *g >= 9.5), "resyncs at least 10 s apart: {gaps:?}");
    assert!(pings.len() <= 8, "ping → fail cycles are backed off: {}", pings.len());
    assert!(log.contains("reconnecting in"), "{log}");
}

// ---------------------------------------------------------------------------
// 4. Huge, zero and negative durations, huge counts.

const BAD_CONFIGS: &[(&str, &str)] = &[
    ("pass_timeout = \"99999999999999999999999h\"\n", "pass_timeout"),
    ("resync_interval = \"0s\"\n", "resync_interval"),
    ("[backoff]\nwindow = -5\n", "backoff.window"),
    ("[backoff]\nsettle = \"-1s\"\n", "backoff.settle"),
    ("[probe]\ninterval = 1e300\n", "probe.interval"),
    ("call_timeout = \"0ms\"\n", "call_timeout"),
    ("max_concurrent_checks = 100000000000\n", "max_concurrent_checks"),
    ("[backoff]\nmax_repairs = 99999999999\n", "backoff.max_repairs"),
];

#[test]
fn out_of_range_values_exit_2_naming_the_key_and_sighup_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    for (text, key) in BAD_CONFIGS {
        std::fs::write(&cfg, text).unwrap();
        let started = Instant::now();
        let (code, _, err) = medic(&["run", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
        assert_eq!(code, 2, "{text:?}: {err}");
        assert!(err.contains(&format!("`{key}`")) && err.contains("line "), "{text:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let (code, _, err) = medic(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "check too: {err}");
        eprintln!("{} → exit 2: {}", text.trim().replace('\n', " "), err.trim());
    }

    // SIGHUP: a running daemon (fake Docker) keeps its configuration.
    let fake = FakeDocker::start(dir.path(), false);
    std::fs::write(&cfg, "resync_interval = \"1s\"\n").unwrap();
    let (mut child, addr, log) = spawn_daemon(&cfg, &fake.url());
    assert!(
        wait_for(Duration::from_secs(10), || http_get(&addr, "/readyz").is_some_and(|(s, _)| s == 200)).is_some(),
        "ready; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for (text, key) in BAD_CONFIGS {
        std::fs::write(&cfg, text).unwrap();
        sighup(&child);
        let logged = wait_for(Duration::from_secs(3), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("keeping the old configuration") && l.contains(key))
        });
        assert!(logged.is_some(), "{text:?}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // The old resync_interval (1 s) is still in force: the fake sees a list a second.
    let before = fake.times("/containers/json").len();
    std::thread::sleep(Duration::from_millis(3500));
    let lists = fake.times("/containers/json").len() - before;
    eprintln!("after {} bad reloads: {lists} resyncs in 3.5 s (resync_interval = 1s kept)", BAD_CONFIGS.len());
    assert!(lists >= 2, "{lists}");
    assert_eq!(healthz(&addr), 200);
    sigterm(&mut child);
}

// ---------------------------------------------------------------------------
// 5. A task that sends its own datagrams to the watch groups.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
async fn datagrams_a_task_sends_to_the_watch_groups_change_nothing() {
    require_lab();
    let _serial = serial();
    // Latency is measured here, not backoff: allow many repairs per task.
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "[backoff]\nmax_repairs = 1000\n").unwrap();
    let mut daemon = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let task = Task::start(&["--nomac", "--app", "wedge-spray"]);
    assert!(task.wait_reachable(Duration::from_secs(2)).is_some(), "repaired at start");
    daemon.settle();
    let pid: u32 = task.pid().parse().unwrap();
    let ns = TargetNetns::open_pid(pid, NsIdentity::current_thread().unwrap()).unwrap();
    // A sender and a sink (the unicast half of each datagram goes to the sink, not
    // to the kernel, so nothing is executed as a request).
    let mut sender = ns.netlink_socket().unwrap();
    let mut sink = ns.netlink_socket().unwrap();
    sender.bind_auto().unwrap();
    sink.bind_auto().unwrap();
    sender.set_non_blocking(true).unwrap();
    sink.set_non_blocking(true).unwrap();
    let mut drain = vec![0u8; 65536];
    let mut sink_addr = rtnetlink::sys::SocketAddr::new(0, 0);
    sink.get_address(&mut sink_addr).unwrap();
    let mut sent = 0;
    for i in 0..600u32 {
        let mut d: Vec<u8> = (0..(rand::random::<u16>() % 300)).map(|_| rand::random()).collect();
        let len = d.len() as u32;
        match i % 4 {
            // A header whose length lies (longer than the datagram).
            0 if d.len() >= 16 => d[..4].copy_from_slice(&0xffffu32.to_ne_bytes()),
            // A plausible RTM_NEWLINK/RTM_DELROUTE/RTM_NEWADDR header, truncated body.
            1 if d.len() >= 16 => {
                d[..4].copy_from_slice(&len.to_ne_bytes());
                d[4..6].copy_from_slice(&[16u16, 25, 20][(i as usize / 4) % 3].to_ne_bytes());
            }
            // A length that is not 4-aligned.
            2 if d.len() >= 16 => d[..4].copy_from_slice(&(len | 3).to_ne_bytes()),
            _ => {}
        }
        // RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE (one group per datagram).
        let group = [1u32, 0x10, 0x40][i as usize % 3];
        let to = rtnetlink::sys::SocketAddr::new(sink_addr.port_number(), group);
        if sender.send_to(&d, &to, 0).is_ok() {
            sent += 1;
        }
        while sink.recv(&mut &mut drain[..], 0).is_ok() {}
    }
    drop((sender, sink));
    eprintln!("spray: {sent} datagrams sent from the task's namespace to its watch groups");
    assert!(sent > 500, "the test can send to the groups (CAP_NET_ADMIN): {sent}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The watch still works: a break is repaired in < 100 ms.
    let session = Netlink::in_netns(&ns).unwrap();
    let index = session.link_by_name("cali0").await.unwrap().unwrap().index;
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let mac: calico_medic::workload::MacAddr = random_mac().parse().unwrap();
        session.set_mac(index, mac, "test break").await.unwrap();
        let start = Instant::now();
        loop {
            let link = session.link_by_name("cali0").await.unwrap().unwrap();
            if link.mac == Some(calico_medic::workload::CALICO_MAC) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(2), "not repaired; log:\n{}", daemon.log_text());
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("spray: afterwards, MAC breaks repaired in at most {worst:?}");
    assert!(worst < Duration::from_millis(100), "{worst:?}");
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
}

// ---------------------------------------------------------------------------
// 6. Tenant text with a newline and ESC.

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn an_app_id_with_newline_and_esc_is_one_escaped_line_and_exact_json() {
    require_lab();
    let _serial = serial();
    let app = "/evil\nINFO pass{mode=\"repair\"}: repair container=x fault=mac_mismatch result=success\x1b[2J\x1b]0;pwned\x07";
    let daemon = Daemon::start(&[]);
    let name = unique_name("mesos");
    let id = docker_create_nomac(&name, app);
    let task = Task { name };
    let out = Command::new("/usr/bin/docker").args(["start", &task.name]).output().unwrap();
    assert!(out.status.success());
    assert!(task.wait_reachable(Duration::from_secs(2)).is_some(), "repaired; log:\n{}", daemon.log_text());
    std::thread::sleep(Duration::from_millis(200));
    let log = daemon.log_text();
    let repair_lines: Vec<&str> = log.lines().filter(|l| l.contains(&task.name) && l.contains("repair")).collect();
    assert!(!repair_lines.is_empty(), "{log}");
    assert!(!log.contains('\x1b'), "no raw ESC in the log");
    assert!(!log.lines().any(|l| l.starts_with("INFO pass{mode=\"repair\"}: repair container=x")), "no forged line");
    for l in &repair_lines {
        assert!(l.contains("app=/evil\\nINFO pass"), "escaped on one line: {l}");
    }
    eprintln!("tenant: repair line: {}", repair_lines[0]);
    let (code, stdout, _) = medic(&["check", "--container", &id]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains('\x1b') && stdout.lines().count() == 2, "{stdout:?}");
    assert!(stdout.contains("/evil\\nINFO pass"), "{stdout}");
    eprintln!("tenant: check table row: {}", stdout.lines().nth(1).unwrap());
    let (_, json, _) = medic_json(&["check", "--container", &id]);
    assert_eq!(json[0]["marathon_app_id"], app, "JSON carries the exact app id");
    let m = daemon.metrics();
    let series = m.lines().find(|l| l.starts_with("calico_medic_endpoint_healthy{") && l.contains(&id)).unwrap();
    assert!(series.contains("marathon_app_id=\"/evil\\nINFO"), "Prometheus escapes the newline: {series}");
}
