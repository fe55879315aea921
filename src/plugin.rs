//! The Docker plugins calico-medic depends on (Calico's libnetwork driver and its
//! IPAM driver), asked whether they answer: `POST /Plugin.Activate` on the socket
//! Docker itself uses, under a deadline. A plugin that hangs stalls every `docker run`
//! on its networks while nothing on the host says why (calicoctl#1801,
//! libnetwork-plugin#50). Read-only: Activate is the handshake Docker sends first.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Docker finds plugins: sockets, then spec files holding `unix://<path>`.
const SOCKET_DIR: &str = "/run/docker/plugins";
const SPEC_DIRS: [&str; 2] = ["/etc/docker/plugins", "/usr/lib/docker/plugins"];
/// Largest answer read (Activate's is a few dozen bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// The plugins to ask about: each calico network driver and its `-ipam` twin.
pub fn plugin_names(calico_drivers: &[String]) -> Vec<String> {
    let mut names: Vec<String> = calico_drivers.iter().flat_map(|d| [d.clone(), format!("{d}-ipam")]).collect();
    names.sort();
    names.dedup();
    names
}

/// The socket of a plugin, as Docker resolves it; `None` when Docker would not find it either.
pub fn socket_of(name: &str) -> Option<PathBuf> {
    socket_in(name, Path::new(SOCKET_DIR), &SPEC_DIRS.map(Path::new))
}

fn socket_in(name: &str, socket_dir: &Path, spec_dirs: &[&Path]) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let socket = socket_dir.join(format!("{name}.sock"));
    if socket.exists() {
        return Some(socket);
    }
    spec_dirs.iter().find_map(|d| {
        let text = std::fs::read_to_string(d.join(format!("{name}.spec"))).ok()?;
        text.trim().strip_prefix("unix://").map(PathBuf::from)
    })
}

/// What asking a plugin found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// It answered Activate with 200 after this long.
    Up(Duration),
    /// No socket Docker would find: not installed on this host (not a fault by itself).
    Absent,
    /// It did not answer in time, refused, or answered wrongly.
    Down(String),
}

/// `POST /Plugin.Activate` on the plugin's socket within `deadline`.
pub async fn activate(name: &str, deadline: Duration) -> Answer {
    let Some(socket) = socket_of(name) else { return Answer::Absent };
    let started = Instant::now();
    match tokio::time::timeout(deadline, ask(&socket)).await {
        Err(_) => Answer::Down(format!("no answer within {deadline:?}")),
        Ok(Err(e)) => Answer::Down(e),
        Ok(Ok(())) => Answer::Up(started.elapsed()),
    }
}

async fn ask(socket: &Path) -> Result<(), String> {
    let mut s = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let request =
        "POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
                   Content-Length: 0\r\nConnection: close\r\n\r\n";
    s.write_all(request.as_bytes()).await.map_err(|e| format!("sending: {e}"))?;
    let mut answer = Vec::new();
    (&mut s).take(MAX_ANSWER as u64).read_to_end(&mut answer).await.map_err(|e| format!("reading: {e}"))?;
    judge(&answer)
}

/// A 200 whose body names what the plugin implements.
pub fn judge(answer: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(answer);
    let status = text.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.") || status.split_whitespace().nth(1) != Some("200") {
        let shown: String = status.chars().take(80).filter(|c| !c.is_control()).collect();
        return Err(format!("answered {shown:?}"));
    }
    if !text.contains("Implements") {
        return Err("answered 200 without `Implements`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sockets_and_answers() {
        assert_eq!(plugin_names(&["calico".into()]), ["calico", "calico-ipam"]);
        let dir = tempfile::tempdir().unwrap();
        let (socks, specs) = (dir.path().join("run"), dir.path().join("etc"));
        std::fs::create_dir_all(&socks).unwrap();
        std::fs::create_dir_all(&specs).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(socks.join("calico.sock")).unwrap();
        std::fs::write(specs.join("calico-ipam.spec"), "unix:///run/x/ipam.sock\n").unwrap();
        assert_eq!(socket_in("calico", &socks, &[&specs]), Some(socks.join("calico.sock")));
        assert_eq!(socket_in("calico-ipam", &socks, &[&specs]), Some(PathBuf::from("/run/x/ipam.sock")));
        assert_eq!(socket_in("other", &socks, &[&specs]), None);
        assert_eq!(socket_in("../calico", &socks, &[&specs]), None);
        assert!(judge(b"HTTP/1.1 200 OK\r\n\r\n{\"Implements\":[\"NetworkDriver\"]}").is_ok());
        assert!(judge(b"HTTP/1.1 500 Internal\r\n\r\n").is_err());
        assert!(judge(b"HTTP/1.1 200 OK\r\n\r\n{}").is_err());
        assert!(judge(b"\x1b[2Jgarbage").is_err());
    }
}
