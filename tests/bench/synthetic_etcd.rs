//! A throw-away etcd (Debian's etcd-server, v2 API) on free loopback ports, loaded with a
//! synthetic cluster: shared by the `datastore`, `ipam` and `bgp` benches.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts etcd with its data in `data` (4 GiB quota); returns it and its client URL.
pub fn start_etcd(data: &std::path::Path) -> (std::process::Child, String) {
    let (url, peer) = (format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port()));
    let child = Command::new("etcd")
        .args(["--name", "bench", "--enable-v2", "--data-dir"])
        .arg(data)
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("bench={peer}"), "--quota-backend-bytes", "4294967296"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian's etcd-server) is needed");
    (child, url)
}

/// Waits (≤ 20 s) for etcd at `url`, then writes every (key, value), 64 at a time;
/// returns how long the writes took.
pub async fn load(http: &reqwest::Client, url: &str, kv: &[(String, String)]) -> Duration {
    let t0 = Instant::now();
    while http.get(format!("{url}/v2/keys/")).send().await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "etcd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    stream::iter(kv.iter())
        .for_each_concurrent(64, |(k, v)| async move {
            let r = http
                .put(format!("{url}/v2/keys{k}"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!("value={}", form_encode(v)))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "PUT {k}: {}", r.status());
        })
        .await;
    t0.elapsed()
}
