//! A minimal Docker Engine API lookup, used like Calico's plugin uses `NetworkInspect` in
//! CreateEndpoint: when the plugin meets a network it has no record of (its state directory
//! was wiped, e.g. /run after a reboot, while Docker kept the network), it reads the
//! network's options from Docker.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// `GET /networks/<id>` over the Docker socket → the network's `Options` map.
pub async fn network_options(sock: &Path, id: &str) -> Result<serde_json::Map<String, Value>, String> {
    let v = network_inspect(sock, id).await?;
    Ok(v.get("Options").and_then(Value::as_object).cloned().unwrap_or_default())
}

/// `GET /networks/<id>` → the network's name (Calico names the endpoint's profile after it).
pub async fn network_name(sock: &Path, id: &str) -> Result<String, String> {
    let v = network_inspect(sock, id).await?;
    v.get("Name").and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("network {id} has no name"))
}

async fn network_inspect(sock: &Path, id: &str) -> Result<Value, String> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return Err(format!("refusing odd network id {id:?}"));
    }
    let work = async {
        let mut s = UnixStream::connect(sock).await.map_err(|e| format!("connecting to {}: {e}", sock.display()))?;
        let req = format!("GET /networks/{id} HTTP/1.0\r\nHost: docker\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .map_err(|_| "timed out talking to dockerd".to_string())??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| "malformed HTTP answer from dockerd".to_string())?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("dockerd answered {status} for network {id}: {}", body.trim()));
    }
    serde_json::from_str(body).map_err(|e| format!("parsing network inspect: {e}"))
}
