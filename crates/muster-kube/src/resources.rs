//! The `kubernetes.dask.org/v1` custom resources: DaskCluster,
//! DaskWorkerGroup, DaskJob and DaskAutoscaler. Field names and shapes are
//! those of dask-kubernetes's CRDs (so its manifests and its Python
//! `KubeCluster` work unchanged); what muster adds is additive and optional:
//! a status subresource with `status.replicas` and `status.selector` (so the
//! scale subresource reads true numbers and an HPA can drive it),
//! `status.conditions`, `DaskAutoscaler.spec.workerGroup` and
//! `DaskJob.spec.backoffLimit`. This module owns the wire types only: it knows
//! nothing of how the operator reconciles them.

// `#[kube(printcolumn(type_ = ...))]` repeats keys by design; clippy reads
// them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Dask resource.
pub const GROUP: &str = "kubernetes.dask.org";
/// The one served and stored version.
pub const VERSION: &str = "v1";

/// Label on every child: the DaskCluster it belongs to.
pub const LABEL_CLUSTER: &str = "dask.org/cluster-name";
/// Label on every child: `scheduler`, `worker`, `workergroup` or `job-runner`.
pub const LABEL_COMPONENT: &str = "dask.org/component";
/// Label on worker pods: the DaskWorkerGroup that owns them.
pub const LABEL_WORKERGROUP: &str = "dask.org/workergroup-name";
/// Label marking objects muster's operator created (the orphan search uses it).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The part of `ObjectMeta` a template may set on the pods it makes:
/// labels and annotations, nothing that identifies an object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SimpleObjectMeta {
    /// Labels added to the object made from this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the object made from this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

fn one() -> i32 {
    1
}

/// How to run workers: how many, and the pod template for each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct DaskWorkerTemplate {
    /// Number of workers to run.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Labels and annotations for every worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    /// The worker pod's spec (its first container runs `dask worker`).
    pub spec: PodSpec,
}

/// How to run the scheduler: its pod and its Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct DaskSchedulerTemplate {
    /// Labels and annotations for the scheduler pod and Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    /// The scheduler pod's spec (its first container runs `dask scheduler`).
    pub spec: PodSpec,
    /// The Service `<cluster>-scheduler` in front of it.
    pub service: ServiceSpec,
}

/// A Dask cluster: one scheduler (pod + Service `<name>-scheduler`) and a
/// default worker group `<name>-default`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskCluster",
    plural = "daskclusters",
    singular = "daskcluster",
    shortname = "daskcluster",
    shortname = "dsk",
    namespaced,
    status = "DaskClusterStatus",
    derive = "PartialEq",
    doc = "A Dask cluster: a scheduler pod and Service and a default worker group.",
    scale(
        spec_replicas_path = ".spec.worker.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        description = "The number of desired worker Pods",
        json_path = ".spec.worker.replicas"
    ),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DaskClusterSpec {
    /// Delete the cluster once its scheduler has been idle this many
    /// seconds; 0 never deletes it.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub idle_timeout: i64,
    /// The scheduler.
    pub scheduler: DaskSchedulerTemplate,
    /// The default worker group.
    pub worker: DaskWorkerTemplate,
}

/// Where a DaskCluster is in its life (dask-kubernetes's values).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Accepted; children not made yet.
    Created,
    /// Children made; the scheduler is not answering yet.
    Pending,
    /// The scheduler answers.
    Running,
    /// The resource cannot be reconciled (see the `Ready` condition's message).
    Error,
}

/// What the operator last saw of a DaskCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskClusterStatus {
    /// Created, Pending, Running or Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Worker pods of the default group that exist and are not terminating
    /// (the scale subresource's status replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the default group's worker pods (for an HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The address clients and workers use to reach the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_address: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `SchedulerReady` and `Idle`, as Kubernetes conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `spec.worker.replicas` as last copied to the default group: the
    /// default group may also be scaled directly (Python `KubeCluster`
    /// does), so only a change of the cluster's own field is copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_worker_replicas: Option<i32>,
    /// Since when the scheduler has reported itself idle (for `idleTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<Time>,
}

/// An extra group of workers for a DaskCluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskWorkerGroup",
    plural = "daskworkergroups",
    singular = "daskworkergroup",
    shortname = "daskworkers",
    namespaced,
    status = "DaskWorkerGroupStatus",
    derive = "PartialEq",
    doc = "A group of identical Dask workers joined to a DaskCluster.",
    scale(
        spec_replicas_path = ".spec.worker.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        description = "The number of desired worker Pods",
        json_path = ".spec.worker.replicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DaskWorkerGroupSpec {
    /// Name of the DaskCluster whose scheduler these workers join.
    pub cluster: String,
    /// How many workers, and their pod template.
    pub worker: DaskWorkerTemplate,
}

/// What the operator last saw of a worker group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskWorkerGroupStatus {
    /// Worker pods that exist and are not terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of this group's worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Workers connected to the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<i32>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (all desired workers connected) and `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The reconciler's record of the group (its worker pods, the policy's
    /// memory): muster-core's `ClusterStore` kept in the resource (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub record: Option<serde_json::Value>,
}

/// The client pod of a DaskJob.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct DaskJobTemplate {
    /// Labels and annotations for the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    /// The runner pod's spec.
    pub spec: PodSpec,
}

/// The cluster a DaskJob runs against (a DaskCluster without its name).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct DaskJobCluster {
    /// Labels and annotations for the DaskCluster made for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    /// The DaskCluster's spec.
    pub spec: DaskClusterSpec,
}

fn six() -> i32 {
    6
}

/// A client pod run to completion against a fresh DaskCluster, which is
/// removed when the job ends.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskJob",
    plural = "daskjobs",
    singular = "daskjob",
    shortname = "djb",
    namespaced,
    status = "DaskJobStatus",
    derive = "PartialEq",
    doc = "A Dask client pod run to completion against its own DaskCluster.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.jobStatus"),
    printcolumn(
        name = "Number Of Workers",
        type_ = "integer",
        json_path = ".spec.cluster.spec.worker.replicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DaskJobSpec {
    /// The runner pod.
    pub job: DaskJobTemplate,
    /// The cluster made for the job, named like the job.
    pub cluster: DaskJobCluster,
    /// How many times a failed runner pod is replaced before the job is
    /// Failed (as a batch/v1 Job's `backoffLimit`).
    #[serde(default = "six")]
    #[schemars(range(min = 0))]
    pub backoff_limit: i32,
}

/// A DaskJob's phase (dask-kubernetes's values).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobPhase {
    /// Accepted.
    JobCreated,
    /// Its DaskCluster exists.
    ClusterCreated,
    /// The runner pod runs.
    Running,
    /// The runner pod exited 0; the cluster is removed.
    Successful,
    /// The runner failed more than `backoffLimit` times; the cluster is removed.
    Failed,
}

/// What the operator last saw of a DaskJob.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskJobStatus {
    /// JobCreated, ClusterCreated, Running, Successful or Failed.
    pub job_status: JobPhase,
    /// The DaskCluster made for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The current (or last) runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_runner_pod_name: Option<String>,
    /// When the first runner pod started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job reached Successful or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Runner pods that failed so far.
    #[serde(default)]
    pub failed: i32,
    /// `Complete` or `Failed`, as Kubernetes conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Adaptive bounds for one worker group of a DaskCluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskAutoscaler",
    plural = "daskautoscalers",
    singular = "daskautoscaler",
    namespaced,
    status = "DaskAutoscalerStatus",
    derive = "PartialEq",
    doc = "Adaptive scaling of one worker group of a DaskCluster between bounds.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        description = "Cluster to autoscale",
        json_path = ".spec.cluster"
    ),
    printcolumn(name = "Minimum", type_ = "integer", json_path = ".spec.minimum"),
    printcolumn(name = "Maximum", type_ = "integer", json_path = ".spec.maximum"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        description = "Workers last asked of the group",
        json_path = ".status.desiredWorkers"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        description = "Worker pods of the group",
        json_path = ".status.currentWorkers"
    ),
    printcolumn(
        name = "Decision",
        type_ = "string",
        description = "The policy's last decision",
        json_path = ".status.lastDecision",
        priority = 1
    ),
    printcolumn(
        name = "Group",
        type_ = "string",
        description = "Worker group scaled (default: <cluster>-default)",
        json_path = ".spec.workerGroup",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DaskAutoscalerSpec {
    /// Name of the DaskCluster to scale.
    pub cluster: String,
    /// Fewest workers.
    #[schemars(range(min = 0))]
    pub minimum: i32,
    /// Most workers.
    #[schemars(range(min = 0))]
    pub maximum: i32,
    /// The DaskWorkerGroup to scale; by default the cluster's own
    /// `<cluster>-default`. Other groups are never touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
}

/// What the autoscaler last saw and decided.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskAutoscalerStatus {
    /// The DaskWorkerGroup this autoscaler scales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
    /// The worker count last asked of the group (its `spec.worker.replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_workers: Option<i32>,
    /// The group's worker pods that exist and are not terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_workers: Option<i32>,
    /// Of those, workers connected to the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_workers: Option<i32>,
    /// The scheduler's adaptive target less the workers of the cluster's
    /// other groups: what this group is asked to supply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<i32>,
    /// The policy's last decision, as a stable word (`scale-up`,
    /// `scale-down`, `waiting`, `steady`, `unreachable`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// Why, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the group was last resized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The shared adaptive policy's state between rounds (opaque JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub policy_state: Option<serde_json::Value>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Active` (the policy runs) or why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An object whose fields the API server keeps as they are.
fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
