use clap::Args;

use super::{print_reports, ConfigArg, Status};
use crate::error::MedicError;
use crate::medic::Mode;
use crate::report::EndpointReport;

#[derive(Debug, Args)]
pub struct CheckCmd {
    /// Container id or name (repeatable); default: every calico container on the host.
    #[arg(long = "container", value_name = "ID|NAME")]
    pub containers: Vec<String>,
    /// Print an array of endpoint reports as JSON.
    #[arg(long)]
    pub json: bool,
    /// Show only endpoints with faults or errors.
    #[arg(long)]
    pub unhealthy: bool,
    /// Show only endpoints of this Marathon app id (exact), or of every app under a group when it ends with `/`
    /// (`/shop/`).
    #[arg(long, value_name = "APP_ID")]
    pub app: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

impl CheckCmd {
    pub async fn exec(self, docker_host: Option<&str>) -> Result<Status, MedicError> {
        let medic = self.config.medic(docker_host).await?;
        let all = self.containers.is_empty();
        let targets = if all { medic.docker.running_container_ids().await? } else { self.containers.clone() };
        let mut reports = Vec::new();
        let mut failed = false;
        for target in &targets {
            match medic.run_with_deadline(target, Mode::Check).await {
                Ok(outcome) => reports.extend(outcome.reports),
                // Scanning the whole host: non-calico containers are not ours, and one that
                // stopped or restarted since the listing is not there to check.
                Err(e) if all && (e.is_not_ours() || e.is_container_gone()) => {}
                Err(e) => {
                    eprintln!("calico-medic: {e}");
                    failed = true;
                }
            }
        }
        let filter = Filter { unhealthy: self.unhealthy, app: self.app.clone() };
        let checked = reports.len();
        let shown = filter.apply(reports);
        if filter.is_set() && shown.is_empty() {
            eprintln!("calico-medic: none of {checked} endpoints matches {}", filter.describe());
        }
        // The status is about what is shown.
        let mut status = print_reports(&shown, self.json);
        // A datastore that could not be read: the endpoints were checked from the host's view only.
        if medic.datastore().is_some_and(|ds| !ds.is_up()) {
            failed = true;
        }
        // Host-level datastore drift: only for a check of the whole host.
        if let Some(ds) = medic.datastore().filter(|ds| ds.is_up() && all && self.app.is_none()) {
            {
                let held = medic.docker.calico_endpoint_ids().await?;
                let view = ds.view();
                let orphans = crate::datastore::orphans(&view.endpoints, &held);
                for id in &orphans {
                    let line = crate::datastore::findings::describe_orphan(&ds.dir, id, &view.endpoints);
                    // JSON stays an array of endpoint reports on stdout.
                    if self.json {
                        eprintln!("calico-medic: datastore: {line}");
                    } else {
                        println!("datastore: {line}");
                    }
                }
                if !orphans.is_empty() && status == Status::Healthy {
                    status = Status::Faulty;
                }
            }
        }
        // The host's plugins, BGP and routes to other hosts: only for a check of the whole host.
        if all && self.app.is_none() && !plugins_up(&medic, self.json).await && status == Status::Healthy {
            status = Status::Faulty;
        }
        if all && self.app.is_none() && !across_hosts_ok(&medic, self.json).await && status == Status::Healthy {
            status = Status::Faulty;
        }
        Ok(if failed { Status::CouldNotCheck } else { status })
    }
}

/// One host line per calico plugin Docker would find (stderr with `--json`); false
/// when one does not answer. Each is asked under the call deadline, all at once.
async fn plugins_up(medic: &crate::medic::Medic, json: bool) -> bool {
    let deadline = medic.config.call_deadline();
    let names = crate::plugin::plugin_names(&medic.config.calico_drivers);
    let answers = futures::future::join_all(names.iter().map(|n| crate::plugin::activate(n, deadline))).await;
    let mut all_up = true;
    for (name, answer) in names.iter().zip(answers) {
        let line = match answer {
            crate::plugin::Answer::Absent => continue,
            crate::plugin::Answer::Up(took) => format!("plugin {name}: up ({:.1} ms)", took.as_secs_f64() * 1000.0),
            crate::plugin::Answer::Down(why) => {
                all_up = false;
                format!("plugin {name}: DOWN ({why}); docker run on its networks hangs or fails")
            }
        };
        if json {
            eprintln!("calico-medic: {line}");
        } else {
            println!("{line}");
        }
    }
    all_up
}

/// Host lines about other hosts (stderr with `--json`): BIRD's BGP peers, and every
/// other host's block without a route here. False when a peer is not Established or
/// a block is unrouted. BIRD absent: said, not a fault.
async fn across_hosts_ok(medic: &crate::medic::Medic, json: bool) -> bool {
    let (mut ok, mut lines) = (true, Vec::new());
    let deadline = medic.config.call_deadline();
    let socket = &medic.config.bgp.bird_socket;
    if !socket.is_empty() {
        match crate::bgp::show_protocols(socket.as_ref(), deadline, 1 << 20).await {
            Ok(None) => lines.push(format!("bgp: no BIRD here ({socket} missing)")),
            Ok(Some(rows)) => {
                let peers = crate::bgp::peers(&rows);
                let up = peers.iter().filter(|p| p.established()).count();
                lines.push(format!("bgp: {} peers, {up} established", peers.len()));
                for p in peers.iter().filter(|p| !p.established()) {
                    ok = false;
                    let addr = p.address.map_or_else(|| "?".into(), |a| a.to_string());
                    lines.push(format!("bgp: peer {} ({addr}) is {}, not Established", p.name, p.bgp_state));
                }
            }
            Err(e) => {
                ok = false;
                lines.push(format!("bgp: {e}"));
            }
        }
    }
    if let Some(ds) = medic.datastore().filter(|ds| ds.is_up()) {
        match (crate::bgp::read_topology(&ds.client).await, crate::bgp::host_routes(deadline).await) {
            (Ok(topo), Ok((routes, links))) => {
                let missing = crate::bgp::unrouted(&ds.settings.hostname, &topo, &routes, &links);
                let hosts = topo.remote_hosts(&ds.settings.hostname).count();
                lines.push(format!("remote blocks: {hosts} other hosts, {} blocks unrouted", missing.len()));
                for u in &missing {
                    ok = false;
                    lines.push(format!("remote block {} of {}: UNROUTED ({})", u.block, u.host, u.why));
                }
            }
            (Err(e), _) | (_, Err(e)) => lines.push(format!("remote blocks: not checked ({e})")),
        }
    }
    for line in lines {
        if json {
            eprintln!("calico-medic: {line}");
        } else {
            println!("{line}");
        }
    }
    ok
}

/// Which endpoint reports `check` shows (and computes its status over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only endpoints with faults or an error.
    pub unhealthy: bool,
    /// Only endpoints of this Marathon app id; a trailing `/` selects every app under that group.
    pub app: Option<String>,
}

impl Filter {
    pub fn is_set(&self) -> bool {
        self.unhealthy || self.app.is_some()
    }

    pub fn matches(&self, report: &EndpointReport) -> bool {
        if self.unhealthy && report.healthy && report.error.is_none() {
            return false;
        }
        match &self.app {
            Some(pattern) => app_matches(pattern, report.marathon_app_id.as_deref()),
            None => true,
        }
    }

    pub fn apply(&self, reports: Vec<EndpointReport>) -> Vec<EndpointReport> {
        reports.into_iter().filter(|r| self.matches(r)).collect()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.unhealthy {
            parts.push("--unhealthy".to_string());
        }
        if let Some(app) = &self.app {
            parts.push(format!("--app {app}"));
        }
        parts.join(" ")
    }
}

/// Marathon app ids are absolute (`/group/app`, as in `MARATHON_APP_ID`); a pattern without the leading
/// `/` is taken as absolute too. A pattern ending in `/` matches every app below that group, otherwise the
/// id must be equal. A container without an app id never matches.
pub fn app_matches(pattern: &str, app_id: Option<&str>) -> bool {
    let Some(id) = app_id else { return false };
    let absolute;
    let pattern = if pattern.starts_with('/') {
        pattern
    } else {
        absolute = format!("/{pattern}");
        &absolute
    };
    if pattern.ends_with('/') {
        id.starts_with(pattern) && id.len() > pattern.len()
    } else {
        id == pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;

    fn report(app: Option<&str>, healthy: bool, error: Option<&str>) -> EndpointReport {
        let workload = Workload {
            container_id: "c".into(),
            container_name: "n".into(),
            marathon_app_id: app.map(str::to_string),
            mesos_task_id: None,
            policy_label: None,
            pid: 1,
            started_at: String::new(),
            endpoints: Vec::new(),
        };
        let mut r = EndpointReport::new(&workload, "calico", "e", std::net::Ipv4Addr::new(10, 0, 0, 1));
        r.healthy = healthy;
        r.error = error.map(str::to_string);
        r
    }

    #[test]
    fn app_exact_and_group_prefix() {
        assert!(app_matches("/shop", Some("/shop")));
        assert!(!app_matches("/shop", Some("/shop/cart")));
        assert!(!app_matches("/shop", Some("/shopping")));
        assert!(!app_matches("/shop", None));
        assert!(app_matches("/group/", Some("/group/a")));
        assert!(app_matches("/group/", Some("/group/sub/b")));
        assert!(!app_matches("/group/", Some("/group")));
        assert!(!app_matches("/group/", Some("/groupie/a")));
        assert!(app_matches("shop", Some("/shop")), "relative ids are absolute, as Marathon reads them");
        assert!(app_matches("group/", Some("/group/a")));
        assert!(app_matches("/", Some("/any")));
        assert!(!app_matches("/", None));
    }

    #[test]
    fn unhealthy_keeps_faults_and_errors() {
        let f = Filter { unhealthy: true, app: None };
        assert!(!f.matches(&report(Some("/a"), true, None)));
        assert!(f.matches(&report(Some("/a"), false, None)));
        assert!(f.matches(&report(None, false, Some("cannot open netns"))));
        let none = Filter::default();
        assert!(!none.is_set());
        assert!(none.matches(&report(None, true, None)));
    }

    #[test]
    fn filters_combine() {
        let f = Filter { unhealthy: true, app: Some("/shop/".into()) };
        let reports = vec![
            report(Some("/shop/cart"), true, None),
            report(Some("/shop/cart"), false, None),
            report(Some("/billing"), false, None),
            report(None, false, None),
        ];
        let shown = f.apply(reports);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].marathon_app_id.as_deref(), Some("/shop/cart"));
        assert!(!shown[0].healthy);
        assert_eq!(f.describe(), "--unhealthy --app /shop/");
    }
}
