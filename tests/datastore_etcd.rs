//! The datastore client against a real etcd (Debian's etcd-server 3.4, v2 API) that
//! this test starts on free loopback ports: recursive read, watch events, a cleared
//! index, failover past a dead endpoint, the per-call deadline on an endpoint that
//! accepts and never answers. No Docker, no root.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_medic::config::Config;
use calico_medic::datastore::etcd::Watched;
use calico_medic::datastore::{endpoint_dir, Datastore, Lookup, Settings};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// A fresh etcd (the tests are `#[ignore]`d: `cargo test` lists them as skipped;
    /// `tests/run.sh` runs them, and a missing etcd fails them).
    fn start() -> Etcd {
        assert!(
            Command::new("etcd").arg("--version").output().is_ok(),
            "etcd (Debian's etcd-server) is needed: apt install etcd-server"
        );
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args(["--name", "t", "--enable-v2", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let e = Etcd { child, url, _dir: dir };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if e.curl(&["-f", &format!("{}/v2/keys/", e.url)]) {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not start");
    }

    fn curl(&self, args: &[&str]) -> bool {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "10"]).args(args).stdout(Stdio::null());
        cmd.status().unwrap().success()
    }

    fn put(&self, key: &str, value: &str) {
        let url = format!("{}/v2/keys{key}", self.url);
        assert!(self.curl(&["-f", "-X", "PUT", "--data-urlencode", &format!("value={value}"), &url]));
    }

    fn delete(&self, key: &str) {
        assert!(self.curl(&["-f", "-X", "DELETE", &format!("{}/v2/keys{key}", self.url)]));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn endpoint_json(ip: &str, mac: &str) -> String {
    format!(
        r#"{{"state":"active","name":"calie1","active_instance_id":"","mac":"{mac}","profile_ids":["n"],"ipv4_nets":["{ip}/32"],"ipv6_nets":[]}}"#
    )
}

fn datastore(endpoints: &[&str], call_timeout: Duration) -> std::sync::Arc<Datastore> {
    let mut c = Config::default();
    c.calico.etcd_endpoints = endpoints.iter().map(|s| s.to_string()).collect();
    c.calico.hostname = "h1".into();
    c.calico.calicoctl_config = String::new();
    c.call_timeout = call_timeout;
    Datastore::new(Settings::resolve(&c).unwrap().unwrap()).unwrap()
}

#[tokio::test]
#[ignore = "needs Debian's etcd-server; tests/run.sh runs it"]
async fn read_watch_and_cleared_index() {
    let etcd = Etcd::start();
    let dir = endpoint_dir("h1");
    etcd.put(&format!("{dir}/e1"), &endpoint_json("10.65.0.1", "ee:ee:ee:ee:ee:ee"));
    etcd.put(&format!("{dir}/bad"), "{not json");
    etcd.put(
        "/calico/v1/host/h2/workload/libnetwork/libnetwork/endpoint/other",
        &endpoint_json("10.65.0.9", "ee:ee:ee:ee:ee:ee"),
    );
    let ds = datastore(&[&etcd.url], Duration::from_secs(2));
    let read = ds.full_read().await.unwrap();
    assert_eq!(read.endpoints, 1, "only this host's readable endpoints");
    assert!(matches!(ds.lookup("e1"), Lookup::Found(r) if r.ipv4[0].0.to_string() == "10.65.0.1"));
    assert_eq!(ds.lookup("bad"), Lookup::Unknown, "an unreadable key is no evidence either way");
    assert_eq!(ds.lookup("nope"), Lookup::Missing);

    // A change after the read comes through the watch from the next index.
    let index = ds.view().index;
    etcd.delete(&format!("{dir}/e1"));
    let w = ds.client.watch(&ds.dir, index + 1, Duration::from_secs(2), |_| {}).await.unwrap();
    let Watched::Event(ev) = w else { panic!("{w:?}") };
    assert!(ev.is_removal() && ev.key.ends_with("/e1"), "{ev:?}");
    assert_eq!(ds.apply(&ev), vec!["e1".to_string()]);
    assert_eq!(ds.lookup("e1"), Lookup::Missing);
    // Nothing more: a quiet watch ends at its timeout, the endpoint answered at once.
    let (t, mut answered) = (Instant::now(), false);
    let w = ds.client.watch(&ds.dir, ev.modified_index + 1, Duration::from_millis(300), |_| answered = true).await;
    assert_eq!(w.unwrap(), Watched::Quiet);
    assert!(answered && t.elapsed() < Duration::from_secs(1));

    // etcd keeps 1000 events: an index older than that is cleared (errorCode 401).
    let urls: Vec<String> = (0..1100).map(|i| format!("{}/v2/keys/noise/{i}", etcd.url)).collect();
    assert!(etcd.curl(
        &["-X", "PUT", "-d", "value=x"].iter().copied().chain(urls.iter().map(String::as_str)).collect::<Vec<_>>()
    ));
    let w = ds.client.watch(&ds.dir, ev.modified_index + 1, Duration::from_secs(2), |_| {}).await.unwrap();
    let Watched::Cleared(now) = w else { panic!("want a cleared index, got {w:?}") };
    assert!(now > ev.modified_index + 1000, "{now}");
    // An index from another history (etcd replaced or restored): etcd is behind the view.
    let w = ds.client.watch(&ds.dir, now + 500, Duration::from_secs(2), |_| {}).await.unwrap();
    assert_eq!(w, Watched::Cleared(now), "a watch ahead of etcd's index is answered as cleared");
}

#[tokio::test]
#[ignore = "needs Debian's etcd-server; tests/run.sh runs it"]
async fn dead_endpoints_fail_over_and_silent_ones_hit_the_deadline() {
    let etcd = Etcd::start();
    etcd.put(&format!("{}/e1", endpoint_dir("h1")), &endpoint_json("10.65.0.1", "02:aa:bb:00:00:01"));
    // Nothing listens on the first endpoint: the second answers.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let ds = datastore(&[&dead, &etcd.url], Duration::from_secs(2));
    assert_eq!(ds.full_read().await.unwrap().endpoints, 1);
    assert_eq!(ds.client.current(), etcd.url, "the answering endpoint is used first from now on");

    // An endpoint that accepts and never answers costs one call_timeout, then the next one answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let ds = datastore(&[&silent_url, &etcd.url], Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(ds.full_read().await.unwrap().endpoints, 1);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");

    // Only silent or dead endpoints: a clear error naming each, within the deadlines.
    let ds = datastore(&[&silent_url, &dead], Duration::from_millis(300));
    let t = Instant::now();
    let e = ds.full_read().await.unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(e.starts_with("datastore: no etcd endpoint answered: "), "{e}");
    assert!(e.contains(&silent_url) && e.contains("no answer within 300ms") && e.contains(&dead), "{e}");
    assert_eq!(ds.lookup("e1"), Lookup::Unknown, "never read: no findings");
    drop(silent);
}
