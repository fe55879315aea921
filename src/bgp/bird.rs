//! BIRD's control socket, as `calicoctl node status` reads it (calico/node v2.6:
//! `/var/run/calico/bird.ctl`). The protocol is lines: BIRD greets with `0001 BIRD
//! <version> ready.`; a command's reply is lines `DDDD-text` (more follow) or
//! ` text` (continuation of the previous code), ended by a line `DDDD text` (code,
//! space): `0000` is success, `8xxx`/`9xxx` errors. `show protocols` answers `2002-`
//! (the header) and `1002-` rows: name, protocol, table, state, since, info — for a
//! BGP peer the info is its BGP state (`Established`, `Active`, `Connect`, …).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::MedicError;

/// One row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub proto: String,
    pub state: String,
    pub info: String,
}

/// One BGP peer: Calico names them `Mesh_<a>_<b>_<c>_<d>` (the node-to-node mesh),
/// `Node_…` (a per-node peer) or `Global_…` (a global peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// The peer's address, from Calico's protocol name.
    pub address: Option<Ipv4Addr>,
    /// The BGP state (the first word of the info column), lower case.
    pub bgp_state: String,
}

impl Peer {
    pub fn established(&self) -> bool {
        self.bgp_state == "established"
    }
}

/// The rows of a `show protocols` reply (`text`: the reply's lines, greeting excluded).
pub fn parse_protocols(text: &str) -> Result<Vec<Protocol>, String> {
    let mut rows = Vec::new();
    let mut code = String::new();
    for line in text.lines() {
        let (line_code, rest) = match line.as_bytes() {
            [a, b, c, d, sep, ..]
                if [a, b, c, d].iter().all(|x| x.is_ascii_digit()) && (*sep == b'-' || *sep == b' ') =>
            {
                (line[..4].to_string(), &line[5..])
            }
            [b' ', ..] => (code.clone(), &line[1..]),
            _ if line.is_empty() => continue,
            _ => return Err(format!("not BIRD's protocol: {line:?}")),
        };
        if line_code.starts_with('8') || line_code.starts_with('9') {
            return Err(format!("BIRD: {}", rest.trim()));
        }
        if line_code == "1002" {
            let cols: Vec<&str> = rest.split_whitespace().collect();
            if cols.len() >= 4 {
                let info = cols.get(5..).map(|c| c.join(" ")).unwrap_or_default();
                rows.push(Protocol { name: cols[0].into(), proto: cols[1].into(), state: cols[3].into(), info });
            }
        }
        code = line_code;
    }
    Ok(rows)
}

/// The BGP protocols among `rows`, as peers.
pub fn peers(rows: &[Protocol]) -> Vec<Peer> {
    rows.iter()
        .filter(|r| r.proto == "BGP")
        .map(|r| {
            let address = r.name.split_once('_').and_then(|(_, a)| a.replace('_', ".").parse().ok());
            let first = r.info.split_whitespace().next().unwrap_or(&r.state);
            Peer { name: r.name.clone(), address, bgp_state: first.to_ascii_lowercase() }
        })
        .collect()
}

/// True when a reply is complete: its last line is `DDDD text` (code, space).
fn complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let mut lines = text.lines();
    let Some(last) = lines.next_back() else { return false };
    buf.ends_with(b"\n")
        && last.len() >= 5
        && last.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && last.as_bytes()[4] == b' '
}

/// Reads one reply (up to `max` bytes).
async fn read_reply(stream: &mut tokio::net::UnixStream, max: usize) -> Result<String, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    while !complete(&buf) {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("BIRD closed the socket".into());
        }
        if buf.len() + n > max {
            return Err(format!("BIRD's answer is larger than {max} bytes"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `show protocols` on BIRD's control socket, under `deadline`, at most `max` bytes.
/// `Ok(None)`: no socket there (no BIRD on this host).
pub async fn show_protocols(
    socket: &Path,
    deadline: Duration,
    max: usize,
) -> Result<Option<Vec<Protocol>>, MedicError> {
    if !socket.exists() {
        return Ok(None);
    }
    let what = || format!("BIRD's control socket {}", socket.display());
    let talk = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.map_err(|e| e.to_string())?;
        read_reply(&mut s, max).await?; // the greeting
        s.write_all(b"show protocols\n").await.map_err(|e| e.to_string())?;
        let reply = read_reply(&mut s, max).await?;
        parse_protocols(&reply)
    };
    match tokio::time::timeout(deadline, talk).await {
        Ok(Ok(rows)) => Ok(Some(rows)),
        Ok(Err(why)) => Err(MedicError::Bird(format!("{}: {why}", what()))),
        Err(_) => Err(MedicError::Bird(format!("{}: no answer within {deadline:?}", what()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BIRD 1.6.8's answer as calico/node's BIRD gives it (two mesh peers, one down).
    const REPLY: &str = "2002-name     proto    table    state  since       info\n\
1002-static1  Static   master   up     04:01:02    \n\
1002-kernel1  Kernel   master   up     04:01:02    \n\
1002-device1  Device   master   up     04:01:02    \n\
1002-Mesh_10_71_255_2 BGP      master   up     04:01:05    Established   \n\
1002-Mesh_10_71_255_3 BGP      master   start  04:01:02    Active        Socket: Connection refused\n\
0000 \n";

    #[test]
    fn show_protocols_rows_and_their_bgp_peers() {
        let rows = parse_protocols(REPLY).unwrap();
        assert_eq!(rows.len(), 5);
        let p = peers(&rows);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].address, Some(Ipv4Addr::new(10, 71, 255, 2)));
        assert!(p[0].established());
        assert_eq!((p[1].bgp_state.as_str(), p[1].established()), ("active", false));
        assert_eq!(rows[4].info, "Active Socket: Connection refused");
    }

    #[test]
    fn an_error_reply_and_garbage_are_errors_and_a_reply_ends_with_a_code_and_a_space() {
        assert!(parse_protocols("8003 No protocols match\n").unwrap_err().contains("No protocols match"));
        assert!(parse_protocols("HTTP/1.1 200 OK\n").is_err());
        assert!(complete(b"0001 BIRD 1.6.8 ready.\n"));
        assert!(!complete(b"2002-name proto\n1002-x BGP"));
        assert!(complete(REPLY.as_bytes()));
        assert!(!complete(b"2002-name proto\n"));
    }
}
