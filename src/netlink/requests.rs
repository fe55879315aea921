//! The public face of the netlink layer: every request under the connection's
//! deadline, named in the error when it runs out.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{LinkState, NeighbourEntry, Netlink, RouteEntry};
use crate::error::MedicError;
use crate::workload::MacAddr;

/// The public face of every request: each one under the connection's deadline; a
/// timeout names the request (`netlink: reading link cali0 timed out after 2s`).
impl Netlink {
    /// Sets the per-request deadline (`call_timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Netlink {
        self.timeout = timeout;
        self
    }

    async fn within<T>(
        &self,
        what: impl FnOnce() -> String,
        request: impl Future<Output = Result<T, MedicError>>,
    ) -> Result<T, MedicError> {
        if let Some((what, cap)) = self.too_large.get() {
            return Err(MedicError::NamespaceTooLarge { what: what.clone(), cap: *cap });
        }
        let out = crate::error::within(self.timeout, || format!("netlink: {}", what()), request).await;
        if let Err(MedicError::NamespaceTooLarge { what, cap }) = &out {
            // Closing the socket ends the kernel's dump: nothing more of it is read,
            // parsed or queued in front of a later request.
            self.task.abort();
            let _ = self.too_large.set((what.clone(), *cap));
        }
        out
    }

    /// A link by name (RTM_GETLINK with IFLA_IFNAME); `None` when it does not exist.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkState>, MedicError> {
        self.within(|| format!("reading link {name}"), self.link_by_name_raw(name)).await
    }

    /// All links of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkState>, MedicError> {
        self.within(|| "listing links".into(), self.links_raw()).await
    }

    /// IPv4 addresses with the index of the link holding each.
    pub async fn ipv4_addresses(&self) -> Result<Vec<(u32, Ipv4Addr, u8)>, MedicError> {
        self.within(|| "listing addresses".into(), self.ipv4_addresses_raw()).await
    }

    /// IPv4 main-table routes.
    pub async fn ipv4_main_routes(&self) -> Result<Vec<RouteEntry>, MedicError> {
        self.within(|| "listing routes".into(), self.ipv4_main_routes_raw()).await
    }

    /// Where this namespace would send packets for `ip`: the output link.
    pub async fn route_oif(&self, ip: Ipv4Addr) -> Result<Option<u32>, MedicError> {
        self.within(|| format!("resolving route to {ip}"), self.route_oif_raw(ip)).await
    }

    /// The neighbour entry for `ip` on link `index` (single get or dump, per kernel).
    pub async fn neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<Option<NeighbourEntry>, MedicError> {
        self.within(|| format!("asking neighbour {ip}"), self.neighbour_raw(index, ip)).await
    }

    /// A link by index; `None` when it does not exist.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkState>, MedicError> {
        Ok(self.link_and_peer_netnsid(index).await?.map(|(l, _)| l))
    }

    /// A link by index and the id of its veth peer's namespace, where the kernel reports one.
    pub async fn link_and_peer_netnsid(&self, index: u32) -> Result<Option<(LinkState, Option<i32>)>, MedicError> {
        self.within(|| format!("reading link #{index}"), self.link_by_index_raw(index)).await
    }

    /// The id this namespace gives the namespace open at `fd`, if any.
    pub async fn nsid_of(&self, fd: std::os::fd::BorrowedFd<'_>) -> Result<Option<i32>, MedicError> {
        use std::os::fd::AsRawFd;
        self.within(|| "asking a namespace's id".into(), self.nsid_of_raw(fd.as_raw_fd())).await
    }

    /// Every IPv4 neighbour entry on link `index`.
    pub async fn neighbours_on(&self, index: u32) -> Result<Vec<(Ipv4Addr, NeighbourEntry)>, MedicError> {
        self.within(|| format!("listing neighbours on link #{index}"), self.neighbours_on_raw(index)).await
    }

    /// `ip link set <index> address <mac>`.
    pub async fn set_mac(&self, index: u32, mac: MacAddr, context: &str) -> Result<(), MedicError> {
        self.within(|| context.to_string(), self.set_mac_raw(index, mac, context)).await
    }

    /// `ip link set <index> up`.
    pub async fn set_up(&self, index: u32, context: &str) -> Result<(), MedicError> {
        self.within(|| context.to_string(), self.set_up_raw(index, context)).await
    }

    /// `ip addr add <ip>/<len> dev <index>`.
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix_len: u8, context: &str) -> Result<(), MedicError> {
        self.within(|| context.to_string(), self.add_address_raw(index, ip, prefix_len, context)).await
    }

    /// `ip route add <dst>/32 dev <index> scope link proto boot`.
    pub async fn add_link_route(&self, index: u32, destination: Ipv4Addr, context: &str) -> Result<(), MedicError> {
        self.within(|| context.to_string(), self.add_link_route_raw(index, destination, context)).await
    }

    /// `ip route add|replace default via <gateway> dev <index> proto boot`.
    pub async fn set_default_route(
        &self,
        index: u32,
        gateway: Ipv4Addr,
        replace: bool,
        context: &str,
    ) -> Result<(), MedicError> {
        self.within(|| context.to_string(), self.set_default_route_raw(index, gateway, replace, context)).await
    }
}
