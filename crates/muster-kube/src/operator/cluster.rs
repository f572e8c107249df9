//! The DaskCluster controller: makes the scheduler pod, its Service and the
//! default worker group when missing (owned by the cluster, so deleting it
//! deletes them), copies a change of `spec.worker.replicas` to the default
//! group (so `kubectl scale daskcluster` works, while the group may also be
//! scaled on its own, as Python `KubeCluster` does), and writes the status
//! by server-side apply from what it observes each time, so the phase
//! cannot stick in Pending behind a missed event (dask-kubernetes#968).
//! A phase change is published as a Kubernetes Event. With `idleTimeout`,
//! the cluster is deleted once its scheduler has reported itself idle for
//! that long (timed on the operator's clock from the first idle answer, so
//! clock skew with the scheduler's pod does not matter).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use muster_core::dask::SchedulerClient;
use serde_json::json;
use tracing::Instrument;

use super::{Context, Error, RESYNC};
use crate::children::{self, MANAGER};
use crate::resources::{ClusterPhase, DaskCluster, DaskClusterStatus, DaskWorkerGroup};

const KIND: &str = "DaskCluster";

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same.
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

async fn create_if_missing<K>(api: &Api<K>, obj: &K) -> Result<bool, Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    if api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading {name}")))?
        .is_some()
    {
        return Ok(false);
    }
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("creating {name}"))(e)),
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Reconciles one DaskCluster.
pub async fn reconcile(dc: Arc<DaskCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span =
        tracing::info_span!("cluster", cluster = %dc.name_any(), namespace = ?dc.namespace());
    let result = reconcile_inner(&dc, &ctx).instrument(span).await;
    ctx.metrics.reconciled(KIND, result.is_ok());
    result
}

async fn reconcile_inner(dc: &DaskCluster, ctx: &Context) -> Result<Action, Error> {
    if dc.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the owned children.
        return Ok(Action::await_change());
    }
    let name = dc.name_any();
    let ns = dc.namespace().unwrap_or_else(|| "default".into());
    let previous = dc.status.clone().unwrap_or_default();
    let generation = dc.metadata.generation;
    let problems = children::validate_cluster(dc);
    let mut status = DaskClusterStatus {
        observed_generation: generation,
        selector: Some(children::worker_selector(
            &name,
            &children::default_group_name(&name),
        )),
        scheduler_address: Some(children::cluster_address(dc)),
        applied_worker_replicas: previous.applied_worker_replicas,
        idle_since: previous.idle_since.clone(),
        replicas: previous.replicas,
        ..DaskClusterStatus::default()
    };
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        status.phase = Some(ClusterPhase::Error);
        status.conditions = vec![condition(
            "Ready",
            false,
            "Invalid",
            &message,
            generation,
            &previous.conditions,
        )];
        write_status(ctx, dc, &status, previous.phase).await?;
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let groups: Api<DaskWorkerGroup> = Api::namespaced(client.clone(), &ns);
    create_if_missing(&pods, &children::scheduler_pod(dc)).await?;
    services
        .patch(
            &format!("{name}-scheduler"),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&children::scheduler_service(dc)),
        )
        .await
        .map_err(Error::kube(format!("applying Service {name}-scheduler")))?;
    let group_name = children::default_group_name(&name);
    let wanted = dc.spec.worker.replicas;
    if create_if_missing(&groups, &children::default_worker_group(dc)).await? {
        status.applied_worker_replicas = Some(wanted);
    } else if status.applied_worker_replicas != Some(wanted) {
        // Only a change of the cluster's own field is copied to the group.
        groups
            .patch(
                &group_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"worker": {"replicas": wanted}}})),
            )
            .await
            .map_err(Error::kube(format!("scaling DaskWorkerGroup {group_name}")))?;
        publish(
            ctx,
            dc,
            EventType::Normal,
            "Scaling",
            &format!("default group {group_name} set to {wanted} workers"),
        )
        .await;
        status.applied_worker_replicas = Some(wanted);
    }
    let group = groups
        .get_opt(&group_name)
        .await
        .map_err(Error::kube(format!("reading {group_name}")))?;
    status.replicas = Some(
        group
            .and_then(|g| g.status)
            .and_then(|s| s.replicas)
            .unwrap_or(0),
    );
    let scheduler = pods
        .get_opt(&format!("{name}-scheduler"))
        .await
        .map_err(Error::kube("reading the scheduler pod"))?;
    let ready = scheduler.as_ref().is_some_and(pod_ready);
    status.phase = Some(if ready {
        ClusterPhase::Running
    } else {
        ClusterPhase::Pending
    });
    let (reason, message) = if ready {
        ("SchedulerReady", "the scheduler pod is ready")
    } else {
        (
            "SchedulerStarting",
            "waiting for the scheduler pod to be ready",
        )
    };
    status.conditions = vec![condition(
        "Ready",
        ready,
        reason,
        message,
        generation,
        &previous.conditions,
    )];
    let mut next = if ready {
        RESYNC
    } else {
        Duration::from_secs(5)
    };
    if ready && dc.spec.idle_timeout > 0 {
        let limit = Duration::from_secs(dc.spec.idle_timeout as u64);
        let idle = match super::scheduler_http_url(ctx, &ns, &name).await? {
            Some(url) => SchedulerClient::new(&url)
                .idle_since()
                .await
                .map(|s| s.is_some())
                .ok(),
            None => None,
        };
        let now = Timestamp::now();
        match idle {
            Some(true) => {
                let since = status.idle_since.get_or_insert(Time(now)).0;
                let idle_for = now.duration_since(since).as_secs_f64().max(0.0);
                if let Some(left) = idle_left(idle_for, limit) {
                    next = next.min(left.max(Duration::from_secs(1)));
                } else {
                    let note = format!(
                        "the scheduler has been idle {idle_for:.0}s (idleTimeout {}s): deleting the cluster",
                        dc.spec.idle_timeout
                    );
                    publish(ctx, dc, EventType::Normal, "IdleTimeout", &note).await;
                    Api::<DaskCluster>::namespaced(client.clone(), &ns)
                        .delete(&name, &DeleteParams::background())
                        .await
                        .map_err(Error::kube(format!("deleting idle DaskCluster {name}")))?;
                    return Ok(Action::await_change());
                }
            }
            Some(false) => status.idle_since = None,
            // Unknown (the scheduler did not answer): keep what was seen.
            None => {}
        }
        let idle_cond = status.idle_since.is_some();
        status.conditions.push(condition(
            "Idle",
            idle_cond,
            if idle_cond {
                "SchedulerIdle"
            } else {
                "SchedulerBusy"
            },
            &format!("idleTimeout {}s", dc.spec.idle_timeout),
            generation,
            &previous.conditions,
        ));
        next = next.min(Duration::from_secs(5));
    }
    write_status(ctx, dc, &status, previous.phase).await?;
    Ok(Action::requeue(next))
}

/// How much longer a scheduler idle for `idle_for` seconds may stay so
/// under `limit`; `None` once the limit is reached.
pub fn idle_left(idle_for: f64, limit: Duration) -> Option<Duration> {
    let left = limit.as_secs_f64() - idle_for;
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

async fn write_status(
    ctx: &Context,
    dc: &DaskCluster,
    status: &DaskClusterStatus,
    before: Option<ClusterPhase>,
) -> Result<(), Error> {
    let name = dc.name_any();
    let api: Api<DaskCluster> =
        Api::namespaced(ctx.client.clone(), &dc.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": DaskCluster::api_version(&()),
        "kind": KIND,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!(
        "writing the status of DaskCluster {name}"
    )))?;
    if status.phase != before
        && let Some(phase) = status.phase
    {
        let (kind, note) = match phase {
            ClusterPhase::Error => (
                EventType::Warning,
                status
                    .conditions
                    .first()
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            ),
            _ => (
                EventType::Normal,
                match before {
                    Some(b) => format!("phase {b:?} -> {phase:?}"),
                    None => format!("phase {phase:?}"),
                },
            ),
        };
        publish(ctx, dc, kind, &format!("{phase:?}"), &note).await;
    }
    Ok(())
}

/// Publishes one Event on the cluster; a failure to publish is logged, not fatal.
pub async fn publish(ctx: &Context, dc: &DaskCluster, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx.recorder.publish(&ev, &dc.object_ref(&())).await {
        Ok(()) => {
            ctx.metrics.events.inc();
        }
        Err(e) => tracing::warn!("publishing an Event: {e}"),
    };
}

/// After a failed reconcile: log it and look again soon.
pub fn error_policy(_dc: Arc<DaskCluster>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("reconcile failed: {err}");
    Action::requeue(Duration::from_secs(10))
}
