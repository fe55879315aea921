//! What `calico-medic hook prestart` repaired, told to the daemon over a datagram
//! socket (`prestart.hook_socket`, 0600, under the unit's `RuntimeDirectory=`): the
//! post-start pass then confirms it as it does the follower's, and counts it as
//! `start_repairs_total{path="hook"}`. The hook skips it when nobody listens.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::sandboxes::PrestartResult;
use super::Inner;
use crate::metrics::StartPath;

/// One repair by the hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookReport {
    pub container: String,
    pub host_interface: String,
    /// When it was verified (unix seconds), and how long the hook had run by then.
    pub repaired_at: f64,
    pub latency: f64,
}

/// Largest report read; anything longer is not one.
const MAX_REPORT_BYTES: usize = 4096;

/// Sends a report without waiting (a daemon that is not there, or busy, is skipped).
pub fn send(socket: &Path, report: &HookReport) -> std::io::Result<()> {
    let s = UnixDatagram::unbound()?;
    s.set_nonblocking(true)?;
    let bytes = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    s.send_to(&bytes, socket).map(|_| ())
}

/// A report as received; `None` for anything that is not one.
pub fn parse(datagram: &[u8]) -> Option<HookReport> {
    let r: HookReport = serde_json::from_slice(datagram).ok()?;
    let id_like = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (id_like(&r.container) && id_like(&r.host_interface) && r.repaired_at.is_finite() && r.latency.is_finite())
        .then_some(r)
}

impl Inner {
    /// Listens on `prestart.hook_socket` (re-created, 0600), on the calling runtime.
    pub(super) fn listen_for_hooks(self: &Arc<Self>) {
        let path = self.current.medic().config.prestart.hook_socket.clone();
        let _ = std::fs::remove_file(&path);
        // systemd's RuntimeDirectory= makes the directory; a hand-started agent makes it here.
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            let _ = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)));
        }
        let bound = UnixDatagram::bind(&path).and_then(|s| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        let socket = match bound {
            Ok(s) => s,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "pre-start: hook reports unavailable; hook repairs count as after start");
                return;
            }
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let Ok(socket) = tokio::net::UnixDatagram::from_std(socket) else { return };
            let mut buf = vec![0u8; MAX_REPORT_BYTES];
            while let Ok(n) = socket.recv(&mut buf).await {
                let Some(inner) = me.upgrade() else { return };
                let Some(r) = parse(&buf[..n]) else {
                    debug!(bytes = n, "pre-start: not a hook report; ignored");
                    continue;
                };
                let result = PrestartResult {
                    repaired: true,
                    container: Some(r.container),
                    repaired_at: r.repaired_at,
                    latency: r.latency,
                    path: StartPath::Hook,
                };
                inner.record(&r.host_interface, result);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_and_junk_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let r = HookReport {
            container: "ab12".into(),
            host_interface: "cali0123456789a".into(),
            repaired_at: 1.5,
            latency: 0.002,
        };
        send(&path, &r).unwrap();
        let mut buf = [0u8; MAX_REPORT_BYTES];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(parse(&buf[..n]), Some(r.clone()));
        let evil = HookReport { host_interface: "cali0\n\u{1b}[2J".into(), ..r };
        assert_eq!(parse(&serde_json::to_vec(&evil).unwrap()), None);
        assert_eq!(parse(b"{}"), None);
        assert!(send(
            &dir.path().join("nobody"),
            &HookReport { container: "x".into(), host_interface: "y".into(), repaired_at: 0.0, latency: 0.0 }
        )
        .is_err());
    }
}
