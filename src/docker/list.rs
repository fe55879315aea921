//! Docker's container lists: the running ones (resync), the created ones stuck on a
//! calico network, and the endpoint ids held on calico networks (orphans).

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;

use super::DockerClient;
use crate::error::MedicError;

impl DockerClient {
    /// One container listing under the call deadline.
    async fn list(
        &self,
        opts: bollard::query_parameters::ListContainersOptions,
    ) -> Result<Vec<bollard::models::ContainerSummary>, MedicError> {
        let list =
            async { self.docker.list_containers(Some(opts)).await.map_err(|e| self.map_err(e, "listing containers")) };
        self.within(|| "listing containers".into(), list).await
    }

    /// IDs of running containers (resync candidates).
    pub async fn running_container_ids(&self) -> Result<Vec<String>, MedicError> {
        Ok(self.running_containers().await?.into_iter().map(|(id, _)| id).collect())
    }

    /// Running containers, each with whether the listing shows it on a calico network
    /// (so it can be counted as "not yet checked" before its first pass).
    pub async fn running_containers(&self) -> Result<Vec<(String, bool)>, MedicError> {
        let mut filters = HashMap::new();
        filters.insert("status", vec!["running"]);
        let opts = ListContainersOptionsBuilder::default().filters(&filters).build();
        let list = self.list(opts).await?;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let calico = self.on_calico(&c).await;
            let Some(id) = c.id else { continue };
            out.push((id, calico));
        }
        Ok(out)
    }

    /// Whether a listed container is on a calico network (by id, else by name: a
    /// created container's listing names its networks only).
    async fn on_calico(&self, c: &bollard::models::ContainerSummary) -> bool {
        for (name, s) in c.network_settings.iter().flat_map(|n| n.networks.iter().flatten()) {
            let net = s.network_id.as_deref().filter(|i| !i.is_empty()).unwrap_or(name);
            if self.is_calico_network(net).await.unwrap_or(false) {
                return true;
            }
        }
        false
    }

    /// Containers created but not started whose networks include a calico one: (id,
    /// name, Docker's creation time in unix seconds). A start that hangs in network
    /// setup (a hung plugin) leaves its container so.
    pub async fn created_on_calico(&self) -> Result<Vec<(String, String, i64)>, MedicError> {
        let mut filters = HashMap::new();
        filters.insert("status", vec!["created"]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let list = self.list(opts).await?;
        let mut out = Vec::new();
        for c in list {
            if !self.on_calico(&c).await {
                continue;
            }
            let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string());
            if let (Some(id), Some(created)) = (c.id, c.created) {
                out.push((id, name.unwrap_or_default(), created));
            }
        }
        Ok(out)
    }

    /// Endpoint ids Docker holds on calico networks, over every container in any
    /// state (a stopped one holds none): what Calico's datastore should hold for this
    /// engine, so a datastore endpoint missing here has no container.
    pub async fn calico_endpoint_ids(&self) -> Result<std::collections::HashSet<String>, MedicError> {
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        let list = self.list(opts).await?;
        let mut out = std::collections::HashSet::new();
        for c in list {
            for net in c.network_settings.iter().flat_map(|n| n.networks.iter().flatten()).map(|(_, s)| s) {
                let (Some(nid), Some(eid)) = (&net.network_id, &net.endpoint_id) else { continue };
                if !eid.is_empty() && self.is_calico_network(nid).await? {
                    out.insert(eid.clone());
                }
            }
        }
        Ok(out)
    }

    /// Every IPv4 address a running container holds on a calico network, as Docker's
    /// listing shows it: (container id, container name, address). Only containers on a
    /// calico network are listed (Docker's `network` filter over the calico networks' ids).
    pub async fn calico_addresses(&self) -> Result<Vec<(String, String, std::net::Ipv4Addr)>, MedicError> {
        let ids = self.calico_network_ids().await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut filters = HashMap::new();
        filters.insert("status", vec!["running"]);
        filters.insert("network", ids.iter().map(String::as_str).collect());
        let opts = ListContainersOptionsBuilder::default().filters(&filters).build();
        let list = self.list(opts).await?;
        let mut out = Vec::new();
        for c in list {
            let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string());
            let Some(id) = c.id.clone() else { continue };
            for s in c.network_settings.iter().flat_map(|n| n.networks.iter().flatten()).map(|(_, s)| s) {
                let on_calico = s.network_id.as_ref().is_some_and(|n| ids.contains(n));
                if let Some(ip) = s.ip_address.as_deref().and_then(|a| a.parse().ok()).filter(|_| on_calico) {
                    out.push((id.clone(), name.clone().unwrap_or_default(), ip));
                }
            }
        }
        Ok(out)
    }

    /// Running containers on the network named `network` (ids).
    pub async fn running_on_network(&self, network: &str) -> Result<Vec<String>, MedicError> {
        let mut filters = HashMap::new();
        filters.insert("status", vec!["running"]);
        filters.insert("network", vec![network]);
        let opts = ListContainersOptionsBuilder::default().filters(&filters).build();
        let list = self.list(opts).await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }
}
