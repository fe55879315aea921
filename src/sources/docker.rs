//! Following Docker: the event stream (resumed from the last event seen after a
//! reconnect, with a full resync each time), the mapping of one event to a notice,
//! and the running list (the resync).

use std::time::Duration;

use bollard::models::EventMessage;
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Notice, SourceCtx};
use crate::error::MedicError;
use crate::metrics::{DockerEventAction, DockerEventType};
use crate::report::unix_now;

/// What an event means for the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum EventAction {
    /// Started or restarted: check it now; latency counts from this event.
    Started {
        id: String,
        unix_seconds: f64,
    },
    /// Connected to or disconnected from a calico network.
    CalicoNetwork {
        id: String,
        connect: bool,
        unix_seconds: f64,
    },
    Died {
        id: String,
    },
    Destroyed {
        id: String,
    },
}

/// Docker's event time (nanoseconds where the API has them; API 1.24 has seconds).
fn event_time(ev: &EventMessage) -> f64 {
    ev.time_nano.map(|n| n as f64 / 1e9).or(ev.time.map(|t| t as f64)).unwrap_or_else(unix_now)
}

/// The event's type and action as bounded metric labels: exec events carry the
/// command in the action ("exec_start: sh -c …"), so only the part before `:` counts.
pub fn labels(ev: &EventMessage) -> (String, String) {
    let typ = ev.typ.map(|t| t.to_string()).unwrap_or_default();
    let action = ev.action.as_deref().unwrap_or_default();
    (typ, action.split(':').next().unwrap_or_default().to_string())
}

/// Pure: one Docker event → what to do, if anything. `calico_drivers` decides which
/// network events concern calico endpoints (the event's `type` attribute).
pub fn classify(ev: &EventMessage, calico_drivers: &[String]) -> Option<EventAction> {
    let (typ, action) = labels(ev);
    let actor = ev.actor.as_ref()?;
    let unix_seconds = event_time(ev);
    match (typ.as_str(), action.as_str()) {
        ("container", "start" | "restart") => Some(EventAction::Started { id: actor.id.clone()?, unix_seconds }),
        ("container", "die") => Some(EventAction::Died { id: actor.id.clone()? }),
        ("container", "destroy") => Some(EventAction::Destroyed { id: actor.id.clone()? }),
        ("network", "connect" | "disconnect") => {
            let attrs = actor.attributes.as_ref()?;
            if !attrs.get("type").is_some_and(|t| calico_drivers.contains(t)) {
                return None;
            }
            let id = attrs.get("container")?.clone();
            Some(EventAction::CalicoNetwork { id, connect: action == "connect", unix_seconds })
        }
        _ => None,
    }
}

/// The notice an event makes, if any.
fn notice(ev: &EventMessage, calico_drivers: &[String]) -> Option<Notice> {
    Some(match classify(ev, calico_drivers)? {
        EventAction::Started { id, unix_seconds } => Notice::Started { id, unix_seconds },
        EventAction::CalicoNetwork { id, connect, unix_seconds } => Notice::CalicoNetwork { id, connect, unix_seconds },
        EventAction::Died { id } => Notice::Died { id },
        EventAction::Destroyed { id } => Notice::Destroyed { id },
    })
}

/// Lists the running containers for the scheduler (which forgets the others and
/// queues every one for a full pass); returns how many run.
pub async fn resync(ctx: &SourceCtx) -> Result<usize, MedicError> {
    let docker = ctx.current.medic().docker.clone();
    let running = docker.running_containers().await?;
    let n = running.len();
    ctx.send(Notice::Listed { running });
    ctx.metrics.resync_done(unix_now());
    Ok(n)
}

/// Waits `delay`, beating the follower's heartbeat every second; false on shutdown.
async fn pause(ctx: &SourceCtx, delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let until = tokio::time::Instant::now() + delay;
    loop {
        ctx.health.follower_beat();
        let step = until.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(1));
        if step.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = shutdown.changed() => return false,
        }
    }
}

fn set_connected(ctx: &SourceCtx, up: bool) {
    ctx.metrics.docker_connected(up);
    ctx.health.set_docker_connected(up);
}

/// How one subscription ended.
enum Ended {
    Shutdown,
    /// The stream failed or ended: reconnect.
    Stream,
}

/// Follows Docker events until shutdown: reconnects with backoff, resumes from the
/// last event seen, and resyncs after every (re)connect — at most once every
/// `RESYNC_SPACING` (6 per minute), and after a backoff whenever a cycle fails,
/// even one where `/_ping` answered.
pub async fn follow_docker(ctx: SourceCtx, mut shutdown: watch::Receiver<bool>) {
    let mut since: Option<String> = None;
    let mut policy = Reconnect::default();
    let mut connected_before = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        ctx.health.follower_beat();
        let docker = ctx.current.medic().docker.clone();
        if let Err(e) = docker.ping().await {
            set_connected(&ctx, false);
            let retry = policy.failed();
            warn!(error = %e, retry_in = ?retry, "Docker unreachable; retrying");
            if !pause(&ctx, retry, &mut shutdown).await {
                return;
            }
            continue;
        }
        let wait = policy.resync_wait(std::time::Instant::now());
        if !wait.is_zero() {
            debug!(wait = ?wait, "next resync allowed later");
            if !pause(&ctx, wait, &mut shutdown).await {
                return;
            }
        }
        if connected_before {
            ctx.metrics.docker_reconnected();
            info!(url = %docker.endpoint(), "reconnected to Docker");
        }
        connected_before = true;
        let subscribed = std::time::Instant::now();
        if let Ended::Shutdown = subscription(&ctx, &mut since, &mut policy, &mut shutdown).await {
            return;
        }
        set_connected(&ctx, false);
        let retry = policy.stream_ended(subscribed.elapsed());
        if !retry.is_zero() {
            warn!(lasted = ?subscribed.elapsed(), "event stream ended early; reconnecting in {retry:?}");
            if !pause(&ctx, retry, &mut shutdown).await {
                return;
            }
        }
    }
}

/// One subscription: from a moment ago (or from the last event seen) so nothing
/// between the resync's list and the stream's start is lost (the queue absorbs
/// duplicates), then the resync, then events until the stream ends.
async fn subscription(
    ctx: &SourceCtx,
    since: &mut Option<String>,
    policy: &mut Reconnect,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let docker = ctx.current.medic().docker.clone();
    let start_from = since.clone().unwrap_or_else(|| format!("{:.9}", unix_now() - 1.0));
    let mut events = Box::pin(docker.events(Some(start_from)));
    set_connected(ctx, true);
    policy.resynced(std::time::Instant::now());
    ctx.health.follower_beat();
    match resync(ctx).await {
        Ok(n) => {
            info!(containers = n, "resync: running containers queued");
            ctx.health.set_resynced();
        }
        Err(e) => warn!(error = %e, "resync failed"),
    }
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ended::Shutdown,
            _ = beat.tick() => ctx.health.follower_beat(),
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    if let Some(n) = ev.time_nano {
                        *since = Some(format!("{}.{:09}", n / 1_000_000_000, n % 1_000_000_000));
                    } else if let Some(t) = ev.time {
                        *since = Some(t.to_string());
                    }
                    handle_event(ctx, &ev);
                }
                Some(Err(e)) => {
                    warn!(error = %e, "docker event stream error");
                    return Ended::Stream;
                }
                None => {
                    warn!("docker event stream ended (dockerd restarting?)");
                    return Ended::Stream;
                }
            }
        }
    }
}

fn handle_event(ctx: &SourceCtx, ev: &EventMessage) {
    let (typ, action) = labels(ev);
    // (the subscription's filter names every type and action the enums hold)
    if let Some((t, a)) = DockerEventType::parse(&typ).zip(DockerEventAction::parse(&action)) {
        ctx.metrics.docker_event(t, a);
    }
    debug!(event_type = %typ, event_action = %action, age_ms = (unix_now() - event_time(ev)) * 1000.0, "docker event");
    let drivers = ctx.current.medic().config.calico_drivers.clone();
    if let Some(n) = notice(ev, &drivers) {
        ctx.send(n);
    }
}

/// Minimum time between two reconnect resyncs: at most 6 a minute, however fast
/// Docker's event stream fails.
pub const RESYNC_SPACING: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// An event stream that lasted this long was a working connection: reconnect at once.
const STREAM_STABLE: Duration = Duration::from_secs(10);

/// The follower's reconnect policy, pure (times passed in): exponential backoff
/// after every failed cycle, and spaced resyncs.
#[derive(Debug)]
pub struct Reconnect {
    retry: Duration,
    last_resync: Option<std::time::Instant>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { retry: RETRY_MIN, last_resync: None }
    }
}

impl Reconnect {
    /// A cycle failed: how long to wait (doubling up to `RETRY_MAX`).
    pub fn failed(&mut self) -> Duration {
        let wait = self.retry;
        self.retry = (self.retry * 2).min(RETRY_MAX);
        wait
    }

    /// The event stream ended after `lived`: a long-lived stream reconnects at once
    /// (dockerd restarted); a short one is a failed cycle.
    pub fn stream_ended(&mut self, lived: Duration) -> Duration {
        if lived >= STREAM_STABLE {
            self.retry = RETRY_MIN;
            Duration::ZERO
        } else {
            self.failed()
        }
    }

    /// How long to wait before the next resync may run.
    pub fn resync_wait(&self, now: std::time::Instant) -> Duration {
        self.last_resync.map_or(Duration::ZERO, |at| RESYNC_SPACING.saturating_sub(now.saturating_duration_since(at)))
    }

    pub fn resynced(&mut self, now: std::time::Instant) {
        self.last_resync = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{EventActor, EventMessageTypeEnum};
    use std::collections::HashMap;

    fn event(typ: EventMessageTypeEnum, action: &str, id: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>()),
            }),
            time: Some(1_700_000_000),
            time_nano: None,
            ..Default::default()
        }
    }

    /// `/_ping` answers and `/events` fails at once, for ten simulated minutes:
    /// every cycle backs off, and no minute holds more than 6 resyncs.
    #[test]
    fn a_failing_event_stream_is_backed_off_and_resyncs_are_spaced() {
        let t0 = std::time::Instant::now();
        let mut now = t0;
        let mut policy = Reconnect::default();
        let mut resyncs = Vec::new();
        while now < t0 + Duration::from_secs(600) {
            now += policy.resync_wait(now);
            policy.resynced(now);
            resyncs.push(now);
            let wait = policy.stream_ended(Duration::from_millis(1));
            assert!(wait >= RETRY_MIN, "a failed cycle always waits");
            now += wait;
        }
        for (i, at) in resyncs.iter().enumerate() {
            let in_minute = resyncs[i..].iter().take_while(|t| **t < *at + Duration::from_secs(60)).count();
            assert!(in_minute <= 6, "{in_minute} resyncs within a minute");
        }
        assert!(resyncs.len() >= 55, "still resyncs steadily: {}", resyncs.len());
        // A stream that lived a while was a good connection: reconnect at once.
        assert_eq!(policy.stream_ended(Duration::from_secs(3600)), Duration::ZERO);
        assert_eq!(policy.failed(), RETRY_MIN, "backoff reset");
    }

    #[test]
    fn container_and_calico_network_events_map_to_actions() {
        let calico = vec!["calico".to_string()];
        let c = EventMessageTypeEnum::CONTAINER;
        let n = EventMessageTypeEnum::NETWORK;
        assert_eq!(
            classify(&event(c, "start", "abc", &[]), &calico),
            Some(EventAction::Started { id: "abc".into(), unix_seconds: 1_700_000_000.0 }),
            "API 1.24 events have only whole seconds"
        );
        assert_eq!(classify(&event(c, "die", "abc", &[]), &calico), Some(EventAction::Died { id: "abc".into() }));
        assert_eq!(
            classify(&event(c, "destroy", "abc", &[]), &calico),
            Some(EventAction::Destroyed { id: "abc".into() })
        );
        let connect = event(n, "connect", "net1", &[("container", "abc"), ("type", "calico"), ("name", "calico-lab")]);
        assert!(
            matches!(classify(&connect, &calico), Some(EventAction::CalicoNetwork { ref id, connect: true, .. }) if id == "abc")
        );
        let bridge = event(n, "connect", "net2", &[("container", "abc"), ("type", "bridge")]);
        assert_eq!(classify(&bridge, &calico), None, "not a calico network");
        assert_eq!(classify(&event(c, "exec_start: sh -c id", "abc", &[]), &calico), None);
        assert_eq!(labels(&event(c, "exec_start: sh -c id", "abc", &[])).1, "exec_start");
    }
}
