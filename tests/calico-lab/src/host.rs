//! Host-side kernel work, done by shelling out to `ip` and writing `/proc/sys`
//! (this is test tooling, not product code).
//!
//! * the veth pair Calico's plugin creates in `Join` and removes in `Leave`;
//! * Felix's part: per-interface sysctls, the `/32` route and the PERMANENT neighbour
//!   entry with the endpoint's MAC;
//! * the lab's "gateway sink": a host route for 169.254.1.1 over a veth whose peer stays
//!   down, so proxy ARP has a route to answer with and traffic to 169.254.1.1 is dropped
//!   on this machine (169.254.1.1 answers ARP, never ping).

use crate::log;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::process::Command;

pub const GATEWAY: &str = "169.254.1.1";
pub const SINK_IF: &str = "labgw0";
pub const SINK_PEER: &str = "labgw1";

/// Run `ip <args>`; Err carries the command and its stderr.
pub async fn ip(args: &[&str]) -> Result<String, String> {
    let out =
        Command::new("ip").args(args).output().await.map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The veth pair of `Join`: host side `cali…`, peer `temp…` (moved into the container and
/// renamed by Docker). Both are set up, like Calico's `CreateVeth`.
pub async fn create_veth(host: &str, temp: &str) -> Result<(), String> {
    for stale in [host, temp] {
        if link_exists(stale) {
            log!("removing stale link {stale} before creating the veth pair");
            let _ = ip(&["link", "del", stale]).await;
        }
    }
    // As the real plugin (v1.1.1+): CALICO_LIBNETWORK_VETH_MTU sets both ends' MTU
    // (the lab sets it to the host uplink's, so a task's path is no larger than the host's).
    match std::env::var("CALICO_LIBNETWORK_VETH_MTU").ok().filter(|m| m.parse::<u32>().is_ok()) {
        Some(mtu) => ip(&["link", "add", host, "mtu", &mtu, "type", "veth", "peer", "name", temp, "mtu", &mtu]).await?,
        None => ip(&["link", "add", host, "type", "veth", "peer", "name", temp]).await?,
    };
    ip(&["link", "set", temp, "up"]).await?;
    ip(&["link", "set", host, "up"]).await?;
    Ok(())
}

/// Remove a host link; a missing link is not an error.
pub async fn delete_link(name: &str) -> Result<(), String> {
    if !link_exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", name]).await {
        Ok(_) => Ok(()),
        Err(_) if !link_exists(name) => Ok(()),
        Err(e) => Err(e),
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(format!("/proc/sys/{path}"), value).map_err(|e| format!("writing {value} to /proc/sys/{path}: {e}"))
}

fn has_carrier(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier")).map(|s| s.trim() == "1").unwrap_or(false)
}

/// A host link's ifindex, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).ok()?.trim().parse().ok()
}

/// A host link's ifindex, if it exists and has carrier (its peer is up, in the container).
pub fn ready_ifindex(name: &str) -> Option<u32> {
    let index = ifindex(name)?;
    has_carrier(name).then_some(index)
}

/// Felix's host side for one endpoint. Waits (up to `wait`) for the host link to have
/// carrier, i.e. for Docker to have moved the peer into the container and set it up.
pub async fn felix_program(host_if: &str, addr: &str, mac: &str, wait: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if !link_exists(host_if) && start.elapsed() > Duration::from_millis(500) {
            return Err(format!("host interface {host_if} disappeared"));
        }
        if has_carrier(host_if) {
            break;
        }
        if start.elapsed() > wait {
            log!("felix: {host_if} has no carrier after {wait:?}; programming anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    write_sysctl(&format!("net/ipv4/conf/{host_if}/proxy_arp"), "1")?;
    write_sysctl(&format!("net/ipv4/neigh/{host_if}/proxy_delay"), "0")?;
    write_sysctl(&format!("net/ipv4/conf/{host_if}/rp_filter"), "1")?;
    write_sysctl(&format!("net/ipv4/conf/{host_if}/forwarding"), "1")?;
    write_sysctl(&format!("net/ipv4/conf/{host_if}/route_localnet"), "1")?;
    let dst = format!("{addr}/32");
    ip(&["route", "replace", &dst, "dev", host_if, "scope", "link", "proto", "boot"]).await?;
    ip(&["neigh", "replace", addr, "lladdr", mac, "dev", host_if, "nud", "permanent"]).await?;
    // `wait` > 0: called from Join; else at a resync, or once another plugin's veth was ready
    let since = if wait.is_zero() { "" } else { " after Join" };
    log!(
        "felix: programmed {host_if}: route {dst} scope link proto boot, neigh {addr} lladdr {mac} PERMANENT ({} ms{since})",
        start.elapsed().as_millis()
    );
    Ok(())
}

/// Make sure the host has a unicast route for 169.254.1.1 leaving through another
/// interface than the `cali…` links (what proxy ARP needs to answer), and that packets to
/// it are dropped here rather than sent to the host's default gateway.
pub async fn ensure_gateway_sink() -> Result<(), String> {
    if !link_exists(SINK_IF) {
        ip(&["link", "add", SINK_IF, "type", "veth", "peer", "name", SINK_PEER]).await?;
    }
    // the peer stays down: anything sent to 169.254.1.1 is dropped on this host
    ip(&["link", "set", SINK_PEER, "down"]).await?;
    ip(&["link", "set", SINK_IF, "up"]).await?;
    write_sysctl(&format!("net/ipv6/conf/{SINK_IF}/disable_ipv6"), "1").ok();
    ip(&["route", "replace", &format!("{GATEWAY}/32"), "dev", SINK_IF, "scope", "link"]).await?;
    Ok(())
}
