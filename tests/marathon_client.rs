//! calico-medic's Marathon client against the Marathon stand-in (no Docker, no
//! root): the request it sends (route, `scale=false`, auth) and how each answer of
//! Marathon's documented contract ends a kill, URL by URL.

mod marathon_standin;

use std::time::{Duration, Instant};

use calico_medic::config::MarathonConfig;
use calico_medic::marathon::confirm::{NotConfirmed, ThisHost};
use calico_medic::marathon::{KillResult, MarathonClient};
use marathon_standin::{basic, Answer, Standin};

/// `[limits] marathon_answer_bytes` by default.
const DEFAULT_CAP: u64 = 8 << 20;

fn client(urls: &[&str], tweak: impl FnOnce(&mut MarathonConfig)) -> MarathonClient {
    capped_client(urls, DEFAULT_CAP, tweak)
}

fn capped_client(urls: &[&str], cap: u64, tweak: impl FnOnce(&mut MarathonConfig)) -> MarathonClient {
    let mut c = MarathonConfig {
        enabled: true,
        urls: urls.iter().map(|u| u.to_string()).collect(),
        request_timeout: Duration::from_millis(300),
        ..MarathonConfig::default()
    };
    tweak(&mut c);
    MarathonClient::from_config(&c, cap).expect("client").expect("enabled")
}

fn closed_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_kill_is_one_delete_with_scale_false_and_the_group_path() {
    let m = Standin::start(None);
    let c = client(&[&m.url], |_| {});
    let r = rt().block_on(c.kill("/shop/cart", "shop_cart.1f0e"));
    assert_eq!(r, KillResult::Killed { url: m.url.clone() });
    let reqs = m.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "DELETE");
    assert_eq!(reqs[0].target, "/v2/apps/shop/cart/tasks/shop_cart.1f0e?scale=false");
    assert_eq!(reqs[0].authorization, None);
}

#[test]
fn each_answer_ends_the_kill_as_marathon_means_it() {
    let rt = rt();
    for (answer, want) in [
        (Answer::Status(404), "gone"),
        (Answer::Status(401), "not authorized (401 Unauthorized)"),
        (Answer::Status(403), "not authorized (403 Forbidden)"),
        (Answer::Status(409), "app locked by a deployment (409 Conflict)"),
    ] {
        let (first, second) = (Standin::start(None), Standin::start(None));
        first.set_default(answer.clone());
        let c = client(&[&first.url, &second.url], |_| {});
        let r = rt.block_on(c.kill("/web", "web.1"));
        match (&r, want) {
            (KillResult::AlreadyGone { .. }, "gone") => {}
            (KillResult::Failed { why }, w) if why.contains(w) => {}
            _ => panic!("{answer:?}: {r:?}"),
        }
        // An answer from Marathon is final: the next URL is not asked.
        assert!(second.requests().is_empty(), "{answer:?}");
    }
}

#[test]
fn no_answer_moves_to_the_next_url() {
    let rt = rt();
    let no_leader = Standin::start(None);
    no_leader.set_default(Answer::Status(503));
    let slow = Standin::start(None);
    slow.set_default(Answer::Delay(Duration::from_secs(2), Box::new(Answer::Marathon)));
    let leader = Standin::start(None);
    let closed = closed_url();
    let c = client(&[&no_leader.url, &closed, &slow.url, &leader.url], |_| {});
    let started = Instant::now();
    let r = rt.block_on(c.kill("/web", "web.1"));
    assert_eq!(r, KillResult::Killed { url: leader.url.clone() });
    assert!(started.elapsed() < Duration::from_secs(2), "the slow URL was cut at request_timeout");
    assert_eq!((no_leader.requests().len(), slow.requests().len(), leader.requests().len()), (1, 1, 1));

    // Nothing answers: failed, naming the last URL's problem.
    let c = client(&[&closed], |_| {});
    match rt.block_on(c.kill("/web", "web.1")) {
        KillResult::Failed { why } => assert!(why.contains("connection failed"), "{why}"),
        r => panic!("{r:?}"),
    }
    let c = client(&[&slow.url], |_| {});
    match rt.block_on(c.kill("/web", "web.1")) {
        KillResult::Failed { why } => assert!(why.contains("no answer within 300ms"), "{why}"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn credentials_are_sent_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (pw, tok) = (dir.path().join("pw"), dir.path().join("tok"));
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    std::fs::write(&tok, "s3cret-token\n").unwrap();
    let rt = rt();
    let m = Standin::start(Some(basic("ops", "s3cret-pw")));
    let c = client(&[&m.url], |c| {
        c.user = "ops".into();
        c.password_file = pw.to_str().unwrap().into();
    });
    assert!(matches!(rt.block_on(c.kill("/web", "web.1")), KillResult::Killed { .. }));
    assert_eq!(m.requests()[0].authorization.as_deref(), Some(basic("ops", "s3cret-pw").as_str()));
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");

    let m = Standin::start(Some("token=s3cret-token".into()));
    let c = client(&[&m.url], |c| c.token_file = tok.to_str().unwrap().into());
    assert!(matches!(rt.block_on(c.kill("/web", "web.1")), KillResult::Killed { .. }));
    assert_eq!(m.requests()[0].authorization.as_deref(), Some("token=s3cret-token"));
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    // A wrong token is a 401 from Marathon.
    std::fs::write(&tok, "wrong\n").unwrap();
    let c = client(&[&m.url], |c| c.token_file = tok.to_str().unwrap().into());
    assert!(matches!(rt.block_on(c.kill("/web", "web.1")), KillResult::Failed { .. }));

    // Unreadable or empty secret files fail at start, naming the key, not the content.
    let missing = MarathonConfig {
        enabled: true,
        urls: vec![m.url.clone()],
        token_file: "/nonexistent/token".into(),
        ..MarathonConfig::default()
    };
    let e = MarathonClient::from_config(&missing, DEFAULT_CAP).unwrap_err().to_string();
    assert!(e.contains("marathon.token_file") && e.contains("/nonexistent/token"), "{e}");
    std::fs::write(&tok, "").unwrap();
    let empty = MarathonConfig { token_file: tok.to_str().unwrap().into(), ..missing };
    assert!(MarathonClient::from_config(&empty, DEFAULT_CAP).unwrap_err().to_string().contains("is empty"));
    assert!(MarathonClient::from_config(&MarathonConfig::default(), DEFAULT_CAP).unwrap().is_none(), "off by default");
}

/// A server that answers every request with 200 and `body` (then closes).
fn serving(body: String) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(body.as_bytes()));
        }
    });
    url
}

/// Issue 22: an answer past `[limits] marathon_answer_bytes` is no answer (nothing
/// confirmed, nothing killed); the same answer under the default ceiling is read.
#[test]
fn an_answer_past_its_ceiling_is_refused() {
    let url = serving(format!(r#"{{"tasks":[],"pad":"{}"}}"#, "x".repeat(300_000)));
    let host = ThisHost { names: vec!["h1".into()], ips: vec![] };
    let rt = rt();
    let c = capped_client(&[&url], 64 << 10, |_| {});
    match rt.block_on(c.confirm("/web", "web.1", &host, &[], false)) {
        Err(NotConfirmed::Unanswered(why)) => {
            assert_eq!(why, format!("{url}: answer larger than 65536 bytes"))
        }
        r => panic!("{r:?}"),
    }
    let c = client(&[&url], |_| {});
    assert_eq!(rt.block_on(c.confirm("/web", "web.1", &host, &[], false)), Err(NotConfirmed::NotListed));
}
