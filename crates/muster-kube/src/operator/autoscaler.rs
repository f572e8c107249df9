//! The DaskAutoscaler controller: per-group adaptive scaling. Each pass
//! observes one worker group (its live pods, which of them the scheduler
//! has connected, and the scheduler's adaptive target less the workers of
//! the cluster's other groups), decides with muster-core's pure
//! [`decide`] (the same policy every backend runs; its memory kept in
//! `status.policyState`, so a new leader resumes a scale-down window or a
//! backoff), and acts by writing only that group's `spec.worker.replicas`.
//! The group's own round then launches, or retires its own workers through
//! the scheduler by address and deletes exactly those pods: no other
//! group's worker is ever a candidate (dask-kubernetes#914). Decisions are
//! Kubernetes Events on the autoscaler; the status says desired, current,
//! connected, target, the last decision and why.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use muster_core::dask::SchedulerClient;
use muster_core::policy::{Action, Mode, Observation, Policy, PolicyState, decide};
use muster_core::reconcile::{Clock, SystemClock};
use muster_core::spec::AdaptSpec;
use muster_core::{Timeline, units::Seconds};
use serde_json::json;
use tracing::Instrument;

use super::events::EventTimeline;
use super::{Context, Error};
use crate::children::{self, MANAGER};
use crate::resources::{DaskAutoscaler, DaskAutoscalerStatus, DaskWorkerGroup};

const KIND: &str = "DaskAutoscaler";

/// Time between observations of one group.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// The shared policy with these bounds (muster's adaptive defaults; the
/// interval is the operator's).
pub fn policy(minimum: u32, maximum: u32) -> Policy {
    let a = AdaptSpec {
        interval: Seconds(INTERVAL),
        ..AdaptSpec::new(minimum, maximum)
    };
    Policy {
        mode: Mode::Adaptive { minimum, maximum },
        processes: 1,
        interval: a.interval.duration(),
        scale_down_wait: a.scale_down_wait.duration(),
        cooldown: a.cooldown.duration(),
        max_pending: a.max_pending,
        idle_timeout: None,
        max_launch_failures: a.max_launch_failures,
        max_replacements: a.max_replacements,
    }
}

/// One look at a group: `pods` are its live worker pods (named with their
/// Dask names), `workers` the names the scheduler has connected (`None`
/// when it could not be asked), `cluster_target` its adaptive target.
/// The group's target is the cluster's less the connected workers that are
/// not this group's: what this group is asked to supply.
pub fn observation(
    pods: &[String],
    workers: Option<&[String]>,
    cluster_target: Option<u32>,
) -> Observation {
    let mine: BTreeSet<&str> = pods.iter().map(String::as_str).collect();
    let (connected, others) = match workers {
        Some(ws) => {
            let connected = ws.iter().filter(|w| mine.contains(w.as_str())).count() as u32;
            (connected, ws.len() as u32 - connected)
        }
        None => (0, 0),
    };
    Observation {
        target: workers.and(cluster_target.map(|t| t.saturating_sub(others))),
        jobs: pods.len() as u32,
        connected,
        died: 0,
        idle_for: None,
    }
}

/// The group's `spec.worker.replicas` after a decision: grown or shrunk
/// from the pods that exist, or, holding, the current value kept within
/// the bounds.
pub fn replicas_after(action: Action, jobs: u32, replicas: i32, minimum: u32, maximum: u32) -> i32 {
    match action {
        Action::Launch(n) => (jobs + n) as i32,
        Action::Remove(n) => jobs.saturating_sub(n) as i32,
        Action::Hold | Action::ShutDown => replicas.clamp(minimum as i32, maximum as i32),
    }
}

/// Why an autoscaler cannot act as written, naming the field; `None` when it can.
pub fn invalid(a: &DaskAutoscaler) -> Option<String> {
    (a.spec.minimum > a.spec.maximum).then(|| {
        format!(
            "spec.minimum: {} is greater than spec.maximum {}",
            a.spec.minimum, a.spec.maximum
        )
    })
}

/// The group an autoscaler scales.
pub fn target_group(a: &DaskAutoscaler) -> String {
    a.spec
        .worker_group
        .clone()
        .unwrap_or_else(|| children::default_group_name(&a.spec.cluster))
}

fn condition(ok: bool, reason: &str, message: &str, a: &DaskAutoscaler) -> Condition {
    let status = if ok { "True" } else { "False" };
    let previous = a
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let since = previous
        .iter()
        .find(|c| c.type_ == "Active" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: "Active".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: a.metadata.generation,
        last_transition_time: since,
    }
}

/// Reconciles one DaskAutoscaler.
pub async fn reconcile(a: Arc<DaskAutoscaler>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let span =
        tracing::info_span!("autoscaler", autoscaler = %a.name_any(), namespace = ?a.namespace());
    let result = reconcile_inner(&a, &ctx).instrument(span).await;
    ctx.metrics.reconciled(KIND, result.is_ok());
    result
}

async fn reconcile_inner(a: &DaskAutoscaler, ctx: &Context) -> Result<Requeue, Error> {
    if a.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let ns = a.namespace().unwrap_or_else(|| "default".into());
    super::adopt(ctx, a, &a.spec.cluster).await?;
    let timeline = EventTimeline {
        ctx,
        object: a.object_ref(&()),
        action: "Scale",
    };
    let previous = a.status.clone().unwrap_or_default();
    let group_name = target_group(a);
    let mut status = DaskAutoscalerStatus {
        worker_group: Some(group_name.clone()),
        observed_generation: a.metadata.generation,
        ..previous.clone()
    };
    let stop = |status: &mut DaskAutoscalerStatus, reason: &str, message: String| {
        status.conditions = vec![condition(false, reason, &message, a)];
        status.last_decision = Some(reason.to_string());
        status.reason = Some(message);
    };
    if let Some(problem) = invalid(a) {
        stop(&mut status, "Invalid", problem);
        write_status(ctx, a, &previous, &status, &timeline).await?;
        return Ok(Requeue::await_change());
    }
    if let Some(other) = rival(ctx, a, &ns, &group_name).await? {
        let why = format!(
            "DaskAutoscaler {other} already scales group {group_name}; this one does nothing"
        );
        stop(&mut status, "Conflict", why);
        write_status(ctx, a, &previous, &status, &timeline).await?;
        return Ok(Requeue::requeue(Duration::from_secs(30)));
    }
    let groups: Api<DaskWorkerGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let group = groups
        .get_opt(&group_name)
        .await
        .map_err(Error::kube(format!("reading DaskWorkerGroup {group_name}")))?;
    let group = match group {
        Some(g) if g.spec.cluster == a.spec.cluster => g,
        Some(g) => {
            let why = format!(
                "spec.workerGroup: group {group_name} belongs to cluster {}, not {}",
                g.spec.cluster, a.spec.cluster
            );
            stop(&mut status, "Invalid", why);
            write_status(ctx, a, &previous, &status, &timeline).await?;
            return Ok(Requeue::requeue(Duration::from_secs(30)));
        }
        None => {
            let why = format!("waiting for DaskWorkerGroup {group_name}");
            stop(&mut status, "GroupMissing", why);
            write_status(ctx, a, &previous, &status, &timeline).await?;
            return Ok(Requeue::requeue(Duration::from_secs(5)));
        }
    };
    let pods = live_pods(ctx, &ns, &a.spec.cluster, &group_name).await?;
    let (workers, target) = match super::scheduler_http_url(ctx, &ns, &a.spec.cluster).await? {
        Some(url) => ask_scheduler(&url).await,
        None => (None, None),
    };
    let obs = observation(&pods, workers.as_deref(), target);
    let (minimum, maximum) = (a.spec.minimum.max(0) as u32, a.spec.maximum.max(0) as u32);
    let policy = policy(minimum, maximum);
    let state: PolicyState = previous
        .policy_state
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let now = SystemClock.now();
    let d = decide(&policy, &state, &obs, now);
    let replicas = group.spec.worker.replicas;
    let wanted = replicas_after(d.action, obs.jobs, replicas, minimum, maximum);
    let mut next_state = d.state.clone();
    if previous.last_decision.as_deref() != Some(d.kind) || d.action != Action::Hold {
        // Best effort, as the round's timeline.
        let _ = timeline.record(d.kind, &d.reason).await;
    }
    if wanted != replicas {
        let patched = groups
            .patch(
                &group_name,
                &PatchParams::apply(MANAGER),
                &Patch::Merge(json!({"spec": {"worker": {"replicas": wanted}}})),
            )
            .await;
        match patched {
            Ok(_) => {
                if matches!(d.action, Action::Launch(_)) {
                    next_state = next_state.after_launch(&policy, now, None);
                }
                status.last_scale_time = Some(Time(Timestamp::now()));
            }
            Err(e) => {
                let why = format!("setting {group_name} to {wanted} workers: {e}");
                if matches!(d.action, Action::Launch(_)) {
                    next_state = next_state.after_launch(&policy, now, Some(&why));
                }
                let _ = timeline.record("scale-failed", &why).await;
            }
        }
    }
    status.desired_workers = Some(wanted);
    status.current_workers = Some(obs.jobs as i32);
    status.connected_workers = Some(obs.connected as i32);
    status.target = obs.target.map(|t| t as i32);
    status.last_decision = Some(d.kind.to_string());
    status.reason = Some(d.reason.clone());
    status.policy_state = serde_json::to_value(&next_state).ok();
    status.conditions = vec![condition(
        true,
        "PolicyRunning",
        &format!("scaling {group_name} between {minimum} and {maximum} workers"),
        a,
    )];
    write_status(ctx, a, &previous, &status, &timeline).await?;
    Ok(Requeue::requeue(
        d.next_poll.clamp(Duration::from_secs(1), INTERVAL * 5),
    ))
}

/// The scheduler's connected worker names and adaptive target; `None`s
/// when it cannot be asked (the policy then holds).
async fn ask_scheduler(url: &str) -> (Option<Vec<String>>, Option<u32>) {
    let client = SchedulerClient::new(url);
    let workers = match client.workers().await {
        Ok(ws) => ws.into_iter().map(|w| w.name).collect::<Vec<_>>(),
        Err(e) => {
            tracing::debug!("asking the scheduler for its workers: {e}");
            return (None, None);
        }
    };
    match client.adaptive_target().await {
        Ok(t) => (Some(workers), Some(t)),
        Err(e) => {
            tracing::debug!("asking the scheduler for its target: {e}");
            (None, None)
        }
    }
}

/// The names of the group's worker pods that exist and are not ending.
async fn live_pods(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    group: &str,
) -> Result<Vec<String>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&children::worker_selector(cluster, group)))
        .await
        .map_err(Error::kube(format!("listing the pods of {group}")))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| p.metadata.name)
        .collect())
}

/// An older DaskAutoscaler that scales the same group (it wins), if any.
async fn rival(
    ctx: &Context,
    a: &DaskAutoscaler,
    ns: &str,
    group: &str,
) -> Result<Option<String>, Error> {
    let api: Api<DaskAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing DaskAutoscalers"))?;
    let key = |x: &DaskAutoscaler| (x.metadata.creation_timestamp.clone(), x.name_any());
    Ok(all
        .items
        .iter()
        .filter(|o| o.name_any() != a.name_any())
        .filter(|o| o.spec.cluster == a.spec.cluster && target_group(o) == group)
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .find(|o| key(o) < key(a))
        .map(|o| o.name_any()))
}

/// Writes the status by server-side apply when it changed (a steady
/// autoscaler writes nothing), and publishes a change of its condition.
async fn write_status(
    ctx: &Context,
    a: &DaskAutoscaler,
    previous: &DaskAutoscalerStatus,
    status: &DaskAutoscalerStatus,
    timeline: &EventTimeline<'_>,
) -> Result<(), Error> {
    if previous == status {
        return Ok(());
    }
    let was = previous.conditions.first().map(|c| c.reason.clone());
    let now = status.conditions.first();
    if let Some(c) = now
        && was.as_deref() != Some(c.reason.as_str())
        && c.status == "False"
    {
        timeline.publish_as(&c.reason, true, &c.message).await;
    }
    let api: Api<DaskAutoscaler> =
        Api::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": DaskAutoscaler::api_version(&()),
        "kind": KIND,
        "status": status,
    });
    api.patch_status(
        &a.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!(
        "writing the status of DaskAutoscaler {}",
        a.name_any()
    )))?;
    Ok(())
}

/// After a failed reconcile: log it and look again soon.
pub fn error_policy(_a: Arc<DaskAutoscaler>, err: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!("autoscaler reconcile failed: {err}");
    Requeue::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_group_target_leaves_out_the_other_groups_workers() {
        let pods = names(&["c-default-worker-0", "c-default-worker-1"]);
        let ws = names(&["c-default-worker-0", "c-other-worker-0", "c-other-worker-1"]);
        let o = observation(&pods, Some(&ws), Some(10));
        assert_eq!((o.jobs, o.connected, o.target), (2, 1, Some(8)));
        // Idle: the others already cover it, so this group is asked for none.
        let o = observation(&pods, Some(&ws), Some(1));
        assert_eq!(o.target, Some(0));
        // No scheduler, no load signal: the policy holds.
        assert_eq!(observation(&pods, None, Some(3)).target, None);
    }

    #[test]
    fn a_burst_grows_within_the_bounds_and_idle_shrinks_to_the_minimum() {
        let p = policy(1, 4);
        let pods = names(&["g-worker-0"]);
        let ws = pods.clone();
        let d = decide(
            &p,
            &PolicyState::default(),
            &observation(&pods, Some(&ws), Some(50)),
            Duration::ZERO,
        );
        assert_eq!(d.action, Action::Launch(3));
        assert_eq!(replicas_after(d.action, 1, 1, 1, 4), 4);
        // Idle with four: wait out the window, then back to the minimum.
        let pods = names(&["g-worker-0", "g-worker-1", "g-worker-2", "g-worker-3"]);
        let obs = observation(&pods, Some(&pods), Some(0));
        let mut state = PolicyState::default();
        let mut t = Duration::from_secs(100);
        let mut last = Action::Hold;
        for _ in 0..10 {
            let d = decide(&p, &state, &obs, t);
            state = d.state;
            last = d.action;
            if last != Action::Hold {
                break;
            }
            t += INTERVAL;
        }
        assert_eq!(last, Action::Remove(3));
        assert_eq!(replicas_after(last, 4, 4, 1, 4), 1);
        // Holding keeps a hand-set size within the bounds.
        assert_eq!(replicas_after(Action::Hold, 2, 9, 1, 4), 4);
        assert_eq!(replicas_after(Action::Hold, 2, 0, 1, 4), 1);
    }

    #[test]
    fn bounds_the_wrong_way_round_name_the_field() {
        let a = DaskAutoscaler::new(
            "a",
            crate::resources::DaskAutoscalerSpec {
                cluster: "c".into(),
                minimum: 5,
                maximum: 2,
                worker_group: None,
            },
        );
        assert!(invalid(&a).unwrap().starts_with("spec.minimum: 5"));
        assert_eq!(target_group(&a), "c-default");
    }
}
