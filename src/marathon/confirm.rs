//! Marathon confirms a task before any kill, pure. A task's environment and labels
//! are its own words; Marathon's `GET /v2/apps/<app>/tasks` (1.4–1.10) is not: the
//! task must be listed under that app, on this host (Marathon's `host` is the Mesos
//! agent's `--hostname`: this host's name, its FQDN, one of its IPv4 addresses, or
//! `[marathon] agent_host`), with the endpoint's IP among its `ipAddresses`, in
//! `TASK_RUNNING`; where the app has health checks and `require_unhealthy` is on,
//! Marathon's own health results must show it failing too.

use std::net::Ipv4Addr;

use serde::Deserialize;

/// One task as Marathon lists it (the fields escalation checks).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MarathonTask {
    pub id: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub state: String,
    #[serde(default, rename = "ipAddresses")]
    pub ip_addresses: Vec<IpAddress>,
    #[serde(default, rename = "healthCheckResults")]
    pub health_check_results: Vec<HealthResult>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct IpAddress {
    #[serde(rename = "ipAddress")]
    pub ip_address: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HealthResult {
    #[serde(default)]
    pub alive: bool,
}

/// `GET /v2/apps/<app>/tasks`.
#[derive(Debug, Deserialize)]
pub struct AppTasks {
    pub tasks: Vec<MarathonTask>,
}

/// `GET /v2/apps/<app>`: only whether it has health checks.
#[derive(Debug, Deserialize)]
pub struct AppAnswer {
    pub app: AppDefinition,
}

#[derive(Debug, Deserialize)]
pub struct AppDefinition {
    #[serde(default, rename = "healthChecks")]
    pub health_checks: Vec<serde_json::Value>,
}

/// What this machine is called, as Marathon may name it.
#[derive(Debug, Clone, Default)]
pub struct ThisHost {
    /// The kernel's host name, and `[marathon] agent_host` when set.
    pub names: Vec<String>,
    pub ips: Vec<Ipv4Addr>,
}

impl ThisHost {
    /// Marathon's `host` is this machine: a name (or its FQDN: the same first label),
    /// or one of its IPv4 addresses.
    pub fn is(&self, marathon_host: &str) -> bool {
        let host = marathon_host.trim().to_ascii_lowercase();
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return self.ips.contains(&ip);
        }
        let first = |n: &str| n.split('.').next().unwrap_or_default().to_string();
        !host.is_empty()
            && self
                .names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .any(|n| n == host || (n.parse::<Ipv4Addr>().is_err() && first(&n) == first(&host)))
    }
}

/// Which check Marathon's answer failed.
#[derive(Debug, Clone, PartialEq)]
pub enum NotConfirmed {
    /// Marathon did not answer (or not in its format): why.
    Unanswered(String),
    /// The app does not list this task id.
    NotListed,
    /// Marathon runs the task on another host.
    OtherHost(String),
    /// Marathon knows no IP of the task.
    NoAddress,
    /// Marathon's IPs of the task are not the endpoint's.
    OtherAddress(Vec<String>),
    /// Not `TASK_RUNNING` (its state).
    NotRunning(String),
    /// The app has health checks and Marathon sees the task healthy (or not checked yet).
    Healthy,
}

impl NotConfirmed {
    /// The failed check, a bounded log value.
    pub fn check(&self) -> &'static str {
        match self {
            NotConfirmed::Unanswered(_) => "marathon_answer",
            NotConfirmed::NotListed => "task_listed",
            NotConfirmed::OtherHost(_) => "host",
            NotConfirmed::NoAddress | NotConfirmed::OtherAddress(_) => "ip_address",
            NotConfirmed::NotRunning(_) => "state",
            NotConfirmed::Healthy => "health",
        }
    }

    /// What Marathon said (tenant text is escaped by the caller).
    pub fn marathon_value(&self) -> String {
        match self {
            NotConfirmed::Unanswered(why) => why.clone(),
            NotConfirmed::OtherHost(h) => h.clone(),
            NotConfirmed::OtherAddress(ips) => ips.join(","),
            NotConfirmed::NotRunning(s) => s.clone(),
            NotConfirmed::NotListed | NotConfirmed::NoAddress => String::new(),
            NotConfirmed::Healthy => "healthy".into(),
        }
    }
}

/// Whether Marathon's view of `task` allows killing it; `health_checked`: the app
/// has health checks (`None`: not asked, only needed when `require_unhealthy`).
pub fn confirm(
    tasks: &[MarathonTask],
    task: &str,
    host: &ThisHost,
    endpoint_ips: &[Ipv4Addr],
    health_checked: Option<bool>,
    require_unhealthy: bool,
) -> Result<(), NotConfirmed> {
    let t = tasks.iter().find(|t| t.id == task).ok_or(NotConfirmed::NotListed)?;
    if !host.is(&t.host) {
        return Err(NotConfirmed::OtherHost(t.host.clone()));
    }
    if t.ip_addresses.is_empty() {
        return Err(NotConfirmed::NoAddress);
    }
    let ours =
        t.ip_addresses.iter().any(|a| a.ip_address.parse::<Ipv4Addr>().is_ok_and(|ip| endpoint_ips.contains(&ip)));
    if !ours {
        return Err(NotConfirmed::OtherAddress(t.ip_addresses.iter().map(|a| a.ip_address.clone()).collect()));
    }
    if t.state != "TASK_RUNNING" {
        return Err(NotConfirmed::NotRunning(t.state.clone()));
    }
    // Two independent witnesses: where Marathon checks the task's health, it must see it failing.
    if require_unhealthy && health_checked == Some(true) && !t.health_check_results.iter().any(|h| !h.alive) {
        return Err(NotConfirmed::Healthy);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 2);

    fn task(id: &str, host: &str, ips: &[&str], state: &str, alive: &[bool]) -> MarathonTask {
        MarathonTask {
            id: id.into(),
            host: host.into(),
            state: state.into(),
            ip_addresses: ips.iter().map(|i| IpAddress { ip_address: i.to_string() }).collect(),
            health_check_results: alive.iter().map(|a| HealthResult { alive: *a }).collect(),
        }
    }

    fn here() -> ThisHost {
        ThisHost { names: vec!["slave7".into()], ips: vec![Ipv4Addr::new(192, 168, 1, 7)] }
    }

    #[test]
    fn marathon_names_this_host_by_name_fqdn_or_address() {
        let h = here();
        assert!(h.is("slave7") && h.is("SLAVE7.dc1.example.com") && h.is("192.168.1.7"));
        assert!(!h.is("slave8") && !h.is("192.168.1.8") && !h.is(""));
        let fqdn = ThisHost { names: vec!["slave7.dc1.example.com".into()], ips: vec![] };
        assert!(fqdn.is("slave7"));
    }

    #[test]
    fn every_check_must_pass() {
        let h = here();
        let ok = [task("shop.1", "slave7", &["10.65.0.2"], "TASK_RUNNING", &[])];
        assert_eq!(confirm(&ok, "shop.1", &h, &[IP], None, true), Ok(()));
        assert_eq!(confirm(&ok, "shop.2", &h, &[IP], None, true), Err(NotConfirmed::NotListed));
        let elsewhere = [task("shop.1", "slave8", &["10.65.0.2"], "TASK_RUNNING", &[])];
        assert_eq!(confirm(&elsewhere, "shop.1", &h, &[IP], None, true).unwrap_err().check(), "host");
        let no_ip = [task("shop.1", "slave7", &[], "TASK_RUNNING", &[])];
        assert_eq!(confirm(&no_ip, "shop.1", &h, &[IP], None, true), Err(NotConfirmed::NoAddress));
        let other_ip = [task("shop.1", "slave7", &["10.65.0.9"], "TASK_RUNNING", &[])];
        assert_eq!(confirm(&other_ip, "shop.1", &h, &[IP], None, true).unwrap_err().check(), "ip_address");
        let staging = [task("shop.1", "slave7", &["10.65.0.2"], "TASK_STAGING", &[])];
        assert_eq!(confirm(&staging, "shop.1", &h, &[IP], None, true).unwrap_err().check(), "state");
    }

    #[test]
    fn with_health_checks_marathon_must_see_it_failing() {
        let h = here();
        let healthy = [task("shop.1", "slave7", &["10.65.0.2"], "TASK_RUNNING", &[true])];
        let unchecked = [task("shop.1", "slave7", &["10.65.0.2"], "TASK_RUNNING", &[])];
        let failing = [task("shop.1", "slave7", &["10.65.0.2"], "TASK_RUNNING", &[false])];
        assert_eq!(confirm(&healthy, "shop.1", &h, &[IP], Some(true), true), Err(NotConfirmed::Healthy));
        assert_eq!(confirm(&unchecked, "shop.1", &h, &[IP], Some(true), true), Err(NotConfirmed::Healthy));
        assert_eq!(confirm(&failing, "shop.1", &h, &[IP], Some(true), true), Ok(()));
        assert_eq!(confirm(&healthy, "shop.1", &h, &[IP], Some(true), false), Ok(()), "require_unhealthy off");
        assert_eq!(confirm(&healthy, "shop.1", &h, &[IP], Some(false), true), Ok(()), "no health checks");
    }

    #[test]
    fn marathons_shapes_parse() {
        let body = r#"{"tasks":[{"id":"shop.1","appId":"/shop","host":"slave7","slaveId":"s1","state":"TASK_RUNNING",
            "startedAt":"2026-12-06T00:00:00.000Z","stagedAt":"2026-12-06T00:00:00.000Z","version":"v",
            "ipAddresses":[{"ipAddress":"10.65.0.2","protocol":"IPv4"}],
            "healthCheckResults":[{"alive":false,"consecutiveFailures":3,"firstSuccess":null,"lastFailure":null,
            "lastSuccess":null,"lastFailureCause":"x","instanceId":"i"}]}]}"#;
        let tasks: AppTasks = serde_json::from_str(body).unwrap();
        assert_eq!(tasks.tasks[0].ip_addresses[0].ip_address, "10.65.0.2");
        assert!(!tasks.tasks[0].health_check_results[0].alive);
        let app: AppAnswer =
            serde_json::from_str(r#"{"app":{"id":"/shop","healthChecks":[{"protocol":"HTTP"}]}}"#).unwrap();
        assert_eq!(app.app.health_checks.len(), 1);
    }
}
