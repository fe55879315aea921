//! calico-medic: keeps Calico container networking (cali0 MAC, address, gateway
//! routes) healthy on Docker hosts, from the host, through rtnetlink.

pub mod agent;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datastore;
pub mod diagnose;
pub mod docker;
pub mod error;
pub mod hook;
pub mod http;
pub mod ipam;
pub mod kernel;
pub mod local_ips;
pub mod marathon;
pub mod medic;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod observe;
pub mod plugin;
pub mod policy;
pub mod prestart;
pub mod probe;
pub mod repair;
pub mod report;
pub mod sources;
pub mod workload;
