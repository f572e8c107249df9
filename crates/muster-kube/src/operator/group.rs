//! The DaskWorkerGroup controller: each pass runs muster-core's reconciler
//! [`round`] for the group, with the group's pods as the backend
//! ([`GroupBackend`]), the group's status as the [`ClusterStore`] (written
//! by server-side apply) and Kubernetes Events on the group as the
//! [`Timeline`]. The desired size is `spec.worker.replicas`, or the bounds
//! of the DaskAutoscaler naming this group (`spec.workerGroup`, or the
//! cluster's default group when it names none); other groups are never
//! touched, because a round only ever sees its own group's pods.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use muster_core::backend::SchedulerContact;
use muster_core::reconcile::{StoreGuard, SystemClock};
use muster_core::{Backend, ops};
use muster_core::{ClusterRecord, ClusterStore, JobId, Phase, RoundContext, Timeline, round};
use serde_json::json;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::backend::{GroupBackend, api_error};
use super::{Context, Error};
use crate::children::{self, HTTP_PORT, MANAGER};
use crate::resources::{DaskAutoscaler, DaskWorkerGroup, DaskWorkerGroupStatus};

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

/// Kubernetes Events on the group, one per decision.
struct EventTimeline<'a> {
    ctx: &'a Context,
    group: &'a DaskWorkerGroup,
}

#[async_trait]
impl Timeline for EventTimeline<'_> {
    async fn record(&self, kind: &str, message: &str) -> muster_core::Result<()> {
        let warn = kind.ends_with("failed") || kind == "died" || kind == "paused";
        let reason: String = kind
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect();
        let ev = Event {
            type_: if warn {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason,
            note: Some(message.chars().take(1000).collect()),
            action: "Scale".into(),
            secondary: None,
        };
        match self
            .ctx
            .recorder
            .publish(&ev, &self.group.object_ref(&()))
            .await
        {
            Ok(()) => {
                self.ctx.metrics.events.inc();
            }
            Err(e) => tracing::warn!("publishing an Event: {e}"),
        }
        Ok(())
    }
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
    }
}

/// The autoscaler that drives `group`, if any.
async fn autoscaler_for(
    ctx: &Context,
    group: &DaskWorkerGroup,
    ns: &str,
) -> Result<Option<DaskAutoscaler>, Error> {
    let api: Api<DaskAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing DaskAutoscalers"))?;
    let name = group.name_any();
    Ok(all.items.into_iter().find(|a| {
        let target = a
            .spec
            .worker_group
            .clone()
            .unwrap_or_else(|| children::default_group_name(&a.spec.cluster));
        a.spec.cluster == group.spec.cluster && target == name
    }))
}

/// Reconciles one DaskWorkerGroup. muster-core's round is not `Send` (it
/// is written for the single-threaded agent), so it runs on a blocking
/// thread that polls it on this runtime; the runtime's thread still drives
/// its I/O.
pub async fn reconcile(group: Arc<DaskWorkerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span =
        tracing::info_span!("group", group = %group.name_any(), namespace = ?group.namespace());
    let handle = tokio::runtime::Handle::current();
    let (g, c) = (group.clone(), ctx.clone());
    let result = tokio::task::spawn_blocking(move || {
        handle.block_on(async move { reconcile_inner(&g, &c).instrument(span).await })
    })
    .await
    .unwrap_or_else(|e| Err(Error::Round(format!("the round's thread: {e}"))));
    ctx.metrics.reconciled(KIND, result.is_ok());
    result
}

async fn reconcile_inner(group: &DaskWorkerGroup, ctx: &Context) -> Result<Action, Error> {
    if group.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = group.namespace().unwrap_or_else(|| "default".into());
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let svc_name = format!("{}-scheduler", group.spec.cluster);
    let Some(ip) = services
        .get_opt(&svc_name)
        .await
        .map_err(Error::kube(format!("reading Service {svc_name}")))?
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
    else {
        tracing::debug!("no scheduler Service yet");
        return Ok(Action::requeue(Duration::from_secs(3)));
    };
    let mut rec = record_of(group);
    // The desired state comes from the resources, each pass.
    let address = children::scheduler_address(&group.spec.cluster, &ns);
    rec.scheduler_address = Some(address.clone());
    rec.contact = Some(SchedulerContact::Address(address));
    rec.http_url = Some(format!("http://{ip}:{HTTP_PORT}"));
    rec.spec.workers = group.spec.worker.replicas.max(0) as u32;
    let adapt = autoscaler_for(ctx, group, &ns).await?.map(|a| {
        let mut spec: muster_core::spec::AdaptSpec = serde_json::from_value(json!({
            "minimum": a.spec.minimum.max(0),
            "maximum": a.spec.maximum.max(0),
        }))
        .expect("adapt bounds");
        spec.minimum = spec.minimum.min(spec.maximum);
        spec
    });
    if adapt != rec.spec.adapt {
        rec.spec.adapt = adapt;
        rec.adapt_generation += 1;
    }
    let store = StatusStore {
        api: Api::namespaced(ctx.client.clone(), &ns),
        group: group.clone(),
        record: Mutex::new(rec),
        lock: ctx.group_lock(&ns, &group.name_any()).await,
    };
    let backend = GroupBackend::new(ctx.client.clone(), group.clone());
    let timeline = EventTimeline { ctx, group };
    shrink(&backend, &store, &timeline).await?;
    let outcome = round(&RoundContext {
        backend: &backend,
        store: &store,
        timeline: &timeline,
        clock: &SystemClock,
    })
    .await
    .map_err(|e| Error::Round(e.to_string()))?;
    let next = outcome
        .next_poll
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    Ok(Action::requeue(next))
}

/// A fixed size below the group's pods: retire the newest through the
/// scheduler, then delete exactly those pods, as muster-core's `scale` does
/// (the round itself only grows a fixed size). Only this group's pods are
/// candidates.
async fn shrink(
    backend: &GroupBackend,
    store: &StatusStore,
    timeline: &EventTimeline<'_>,
) -> Result<(), Error> {
    let _guard = store
        .lock()
        .await
        .map_err(|e| Error::Round(e.to_string()))?;
    let mut rec = store.record.lock().await.clone();
    let wanted = rec.spec.workers as usize;
    if rec.spec.adapt.is_some() || rec.workers.len() <= wanted {
        return Ok(());
    }
    let round_err = |e: muster_core::Error| Error::Round(e.to_string());
    let states = backend.status(&rec.workers).await.map_err(round_err)?;
    let n = rec.workers.len() - wanted;
    match ops::remove_workers(backend, store, &mut rec, n, &states, ops::Removal::Newest).await {
        Ok(ids) => {
            let names: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
            let note = format!(
                "fixed size {wanted}: retired through the scheduler, then deleted {}",
                names.join(", ")
            );
            timeline
                .record("scale-down", &note)
                .await
                .map_err(round_err)?;
        }
        Err(e) => {
            timeline
                .record("retire-failed", &format!("removing {n} failed: {e}"))
                .await
                .map_err(round_err)?;
        }
    }
    Ok(())
}

/// After a failed reconcile: log it and look again soon.
pub fn error_policy(_g: Arc<DaskWorkerGroup>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("worker group reconcile failed: {err}");
    Action::requeue(Duration::from_secs(5))
}
