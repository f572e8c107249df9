//! The DaskWorkerGroup controller: each pass runs muster-core's reconciler
//! [`round`] for the group, with the group's pods as the backend
//! ([`GroupBackend`]), the group's status as the [`ClusterStore`] (written
//! by server-side apply) and Kubernetes Events on the group as the
//! `Timeline`. The desired size is `spec.worker.replicas` (a fixed size:
//! a DaskAutoscaler drives a group by writing that field, see
//! [`super::autoscaler`]). A shrink retires the group's own workers through
//! the scheduler by address, then deletes exactly those pods: other groups
//! are never touched, because a round only ever sees its own group's pods.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use muster_core::backend::SchedulerContact;
use muster_core::reconcile::{StoreGuard, SystemClock};
use muster_core::{ClusterRecord, ClusterStore, JobId, Phase, RoundContext, round};
use serde_json::json;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::backend::{GroupBackend, api_error};
use super::events::EventTimeline;
use super::{Context, Error};
use crate::children::{self, MANAGER};
use crate::resources::{DaskWorkerGroup, DaskWorkerGroupStatus};

const KIND: &str = "DaskWorkerGroup";

/// The group's status as muster-core's store.
struct StatusStore {
    api: Api<DaskWorkerGroup>,
    group: DaskWorkerGroup,
    record: Mutex<ClusterRecord>,
    lock: Arc<Mutex<()>>,
}

#[async_trait]
impl ClusterStore for StatusStore {
    fn name(&self) -> &str {
        self.group.metadata.name.as_deref().unwrap_or_default()
    }
    async fn lock(&self) -> muster_core::Result<StoreGuard> {
        Ok(StoreGuard(Box::new(self.lock.clone().lock_owned().await)))
    }
    async fn load(&self) -> muster_core::Result<Option<ClusterRecord>> {
        Ok(Some(self.record.lock().await.clone()))
    }
    async fn save(&self, rec: &ClusterRecord) -> muster_core::Result<()> {
        *self.record.lock().await = rec.clone();
        let status = DaskWorkerGroupStatus {
            replicas: Some(rec.workers.len() as i32),
            selector: Some(children::worker_selector(
                &self.group.spec.cluster,
                self.name(),
            )),
            connected: rec.observed.as_ref().map(|o| o.connected as i32),
            observed_generation: self.group.metadata.generation,
            conditions: Vec::new(),
            record: Some(serde_json::to_value(rec).unwrap_or_default()),
        };
        // Each round stamps its observation; writing only real changes keeps
        // the group's own watch from waking the controller on every round.
        if self.group.status.as_ref() == Some(&status)
            || same_but_time(self.group.status.as_ref(), &status)
        {
            return Ok(());
        }
        let body = json!({
            "apiVersion": DaskWorkerGroup::api_version(&()),
            "kind": KIND,
            "status": status,
        });
        self.api
            .patch_status(
                self.name(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| api_error("writing the worker group's status", e))?;
        Ok(())
    }
    async fn remove(&self) -> muster_core::Result<()> {
        Ok(())
    }
}

/// True when two statuses differ only in when the observation was made.
fn same_but_time(old: Option<&DaskWorkerGroupStatus>, new: &DaskWorkerGroupStatus) -> bool {
    fn untimed(s: &DaskWorkerGroupStatus) -> DaskWorkerGroupStatus {
        let mut s = s.clone();
        if let Some(serde_json::Value::Object(rec)) = s.record.as_mut()
            && let Some(serde_json::Value::Object(obs)) = rec.get_mut("observed")
        {
            obs.remove("at");
        }
        s
    }
    old.is_some_and(|o| untimed(o) == untimed(new))
}

/// The record to start from: the one in the status, or a fresh one.
fn record_of(group: &DaskWorkerGroup) -> ClusterRecord {
    if let Some(rec) = group
        .status
        .as_ref()
        .and_then(|s| s.record.clone())
        .and_then(|v| serde_json::from_value::<ClusterRecord>(v).ok())
    {
        return rec;
    }
    let name = group.name_any();
    let spec = serde_json::from_value(json!({"name": name})).expect("a default spec");
    ClusterRecord {
        name,
        spec,
        phase: Phase::Running,
        scheduler_job: Some(JobId(format!("{}-scheduler", group.spec.cluster))),
        scheduler_address: None,
        http_url: None,
        workers: Vec::new(),
        next_worker_index: 0,
        created_at: muster_core::registry::unix_now(),
        launching: false,
        contact: None,
        adapt_generation: 0,
        observed: None,
        policy: Default::default(),
        credentials: None,
        ended: Vec::new(),
    }
}

/// Reconciles one DaskWorkerGroup: one round of muster-core's reconciler.
pub async fn reconcile(group: Arc<DaskWorkerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span =
        tracing::info_span!("group", group = %group.name_any(), namespace = ?group.namespace());
    let result = reconcile_inner(&group, &ctx).instrument(span).await;
    ctx.metrics.reconciled(KIND, result.is_ok());
    result
}

async fn reconcile_inner(group: &DaskWorkerGroup, ctx: &Context) -> Result<Action, Error> {
    if group.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = group.namespace().unwrap_or_else(|| "default".into());
    let cluster = super::adopt(ctx, group, &group.spec.cluster).await?;
    let Some(http_url) = super::scheduler_http_url(ctx, &ns, &group.spec.cluster).await? else {
        tracing::debug!("no scheduler Service yet");
        return Ok(Action::requeue(Duration::from_secs(3)));
    };
    let mut rec = record_of(group);
    // The desired state comes from the resources, each pass.
    // The scheme its scheduler listens with (tls:// for a TLS DaskCluster).
    let address = match &cluster {
        Some(dc) => children::cluster_address(dc),
        None => children::scheduler_address(&group.spec.cluster, &ns, false),
    };
    rec.scheduler_address = Some(address.clone());
    rec.contact = Some(SchedulerContact::Address(address.clone()));
    rec.http_url = Some(http_url);
    rec.spec.workers = group.spec.worker.replicas.max(0) as u32;
    // A fixed size: an autoscaler drives the group through this field.
    rec.spec.adapt = None;
    let store = StatusStore {
        api: Api::namespaced(ctx.client.clone(), &ns),
        group: group.clone(),
        record: Mutex::new(rec),
        lock: ctx.group_lock(&ns, &group.name_any()).await,
    };
    let backend = GroupBackend::new(ctx.client.clone(), group.clone(), address);
    let timeline = EventTimeline {
        ctx,
        object: group.object_ref(&()),
        action: "Scale",
    };
    let outcome = round(&RoundContext {
        backend: &backend,
        store: &store,
        timeline: &timeline,
        clock: &SystemClock,
    })
    .await
    .map_err(|e| Error::Round(e.to_string()))?;
    Ok(Action::requeue(next_round(
        &outcome,
        group.spec.worker.replicas.max(0) as u32,
    )))
}

/// While a group is short of its size, polling stays this quick: pod
/// changes wake it through its watch, and polling only has to notice workers
/// connecting and the scheduler's view (the policy's 500 ms is the local
/// agent's).
const CONVERGING: Duration = Duration::from_secs(3);
/// A group whose every wanted worker is connected, after a round that did
/// nothing, is looked at this seldom: a pod that changes or a new size wakes
/// it at once through its watches, so only a worker that drops from the
/// scheduler while its pod runs waits this long to show in the status. (At
/// 3 s a steady 100-worker group cost 0.34 CPU-s a minute, 8.5x dask-kubernetes's
/// idle operator; bench/operator_up.py.)
const STEADY: Duration = Duration::from_secs(30);

/// When to run the group's next round, after `outcome`, with `desired`
/// workers wanted.
fn next_round(outcome: &muster_core::RoundOutcome, desired: u32) -> Duration {
    let settled = outcome.failure.is_none()
        && outcome
            .decision
            .as_ref()
            .is_some_and(|d| d.action == muster_core::policy::Action::Hold)
        && outcome.jobs == desired
        && outcome.connected == desired;
    if settled {
        STEADY
    } else {
        outcome.next_poll.clamp(CONVERGING, STEADY)
    }
}

/// After a failed reconcile: log it and look again soon.
pub fn error_policy(_g: Arc<DaskWorkerGroup>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("worker group reconcile failed: {err}");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::policy::{Action as Act, Decision, PolicyState};

    fn outcome(action: Act, jobs: u32, connected: u32) -> muster_core::RoundOutcome {
        muster_core::RoundOutcome {
            decision: Some(Decision {
                action,
                kind: "k",
                reason: String::new(),
                state: PolicyState::default(),
                next_poll: Duration::from_millis(500),
            }),
            next_poll: Duration::from_millis(500),
            finished: false,
            jobs,
            connected,
            failure: None,
        }
    }

    #[test]
    fn only_a_group_with_every_worker_connected_and_nothing_done_is_polled_seldom() {
        assert_eq!(next_round(&outcome(Act::Hold, 100, 100), 100), STEADY);
        // short of connected workers, just acted, or not yet observed: quick
        assert_eq!(next_round(&outcome(Act::Hold, 100, 99), 100), CONVERGING);
        assert_eq!(
            next_round(&outcome(Act::Launch(2), 100, 100), 102),
            CONVERGING
        );
        assert_eq!(next_round(&outcome(Act::Remove(1), 3, 3), 2), CONVERGING);
        let mut unobserved = outcome(Act::Hold, 2, 2);
        unobserved.decision = None;
        assert_eq!(next_round(&unobserved, 2), CONVERGING);
        let mut failed = outcome(Act::Hold, 2, 2);
        failed.failure = Some(muster_core::Error::Usage("x".into()));
        assert_eq!(next_round(&failed, 2), CONVERGING);
    }
}
