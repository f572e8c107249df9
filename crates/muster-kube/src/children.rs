//! The objects the operator makes for a Dask resource, as pure functions of
//! it: the scheduler pod and its Service `<cluster>-scheduler`, the default
//! DaskWorkerGroup `<cluster>-default`, and one worker pod per Dask worker,
//! named with the worker's Dask name. Each carries dask-kubernetes's labels
//! (`dask.org/cluster-name`, `dask.org/component`,
//! `dask.org/workergroup-name`) and a controller owner reference, so that
//! deleting a DaskCluster garbage-collects everything under it. This is the
//! one text that is dry run, snapshot and what is submitted; no API calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Pod, PodSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use muster_core::dask::{HTTP_ROUTES, HTTP_ROUTES_ENV};

use crate::resources::{
    DaskCluster, DaskClusterSpec, DaskJob, DaskWorkerGroup, DaskWorkerGroupSpec, LABEL_CLUSTER,
    LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_WORKERGROUP, SimpleObjectMeta,
};

/// The value of `app.kubernetes.io/managed-by` on everything muster makes.
pub const MANAGER: &str = "muster-operator";
/// The Dask scheduler's comm port (the Service's `tcp-comm`).
pub const COMM_PORT: u16 = 8786;
/// The scheduler's dashboard/HTTP API port (the Service's `http-dashboard`).
pub const HTTP_PORT: u16 = 8787;

/// Why a resource cannot be reconciled as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The field's full path (`metadata.name`, `spec.worker.spec.containers`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn invalid(field: &str, problem: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Longest cluster name: `<name>-scheduler` must be a DNS-1035 label (63).
pub const MAX_CLUSTER_NAME: usize = 63 - "-scheduler".len();

/// Every problem with a DaskCluster that the schema cannot express, at once.
pub fn validate_cluster(cluster: &DaskCluster) -> Vec<Invalid> {
    let mut problems = Vec::new();
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_CLUSTER_NAME {
        problems.push(invalid(
            "metadata.name",
            format!(
                "{} characters; at most {MAX_CLUSTER_NAME}, so that the Service {name}-scheduler is a valid name",
                name.len()
            ),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        problems.push(invalid(
            "metadata.name",
            "must start with a lowercase letter (the Service <name>-scheduler is a DNS-1035 label)",
        ));
    }
    if cluster.spec.scheduler.spec.containers.is_empty() {
        problems.push(invalid("spec.scheduler.spec.containers", "no container"));
    }
    if cluster.spec.worker.spec.containers.is_empty() {
        problems.push(invalid("spec.worker.spec.containers", "no container"));
    }
    problems
}

fn name_of<K: Resource>(obj: &K) -> &str {
    obj.meta().name.as_deref().unwrap_or_default()
}

/// The labels every child of `cluster` carries, plus a component.
pub fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

/// The selector of one group's worker pods (status.selector, for `kubectl
/// scale` and an HPA).
pub fn worker_selector(cluster: &str, group: &str) -> String {
    format!("{LABEL_CLUSTER}={cluster},{LABEL_COMPONENT}=worker,{LABEL_WORKERGROUP}={group}")
}

/// Template labels/annotations first, then muster's own (which win).
fn meta(
    name: &str,
    namespace: Option<&str>,
    template: Option<&SimpleObjectMeta>,
    own: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
) -> ObjectMeta {
    let mut labels = template.and_then(|t| t.labels.clone()).unwrap_or_default();
    labels.extend(own);
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        annotations: template.and_then(|t| t.annotations.clone()),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Adds `name=value` to every container that does not set `name` itself.
fn default_env(spec: &mut PodSpec, name: &str, value: &str) {
    for c in &mut spec.containers {
        let env = c.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == name) {
            env.push(EnvVar {
                name: name.to_string(),
                value: Some(value.to_string()),
                value_from: None,
            });
        }
    }
}

/// The scheduler's in-cluster comm address (what workers and clients use):
/// `tls://` when `tls`, else `tcp://`.
pub fn scheduler_address(cluster: &str, namespace: &str, tls: bool) -> String {
    let scheme = if tls { "tls" } else { "tcp" };
    format!("{scheme}://{cluster}-scheduler.{namespace}.svc.cluster.local:{COMM_PORT}")
}

/// True when the scheduler of `spec` listens with TLS: a scheduler
/// container's command or arguments carry one of `dask scheduler`'s TLS
/// flags (`--tls-cert`, `--tls-key`, `--tls-ca-file`, as `--flag value` or
/// `--flag=value`) or `--protocol tls`. muster renders the first form; a
/// hand-written DaskCluster may use either.
pub fn speaks_tls(spec: &DaskClusterSpec) -> bool {
    spec.scheduler.spec.containers.iter().any(|c| {
        let words: Vec<&str> = c
            .command
            .iter()
            .chain(c.args.iter())
            .flatten()
            .flat_map(|w| w.split_whitespace())
            .collect();
        words.iter().enumerate().any(|(i, w)| {
            let flag = w.split('=').next().unwrap_or_default();
            matches!(flag, "--tls-cert" | "--tls-key" | "--tls-ca-file")
                || *w == "--protocol=tls"
                || (*w == "--protocol" && words.get(i + 1) == Some(&"tls"))
        })
    })
}

/// The comm address of `cluster`'s scheduler, with the scheme its
/// scheduler listens with.
pub fn cluster_address(cluster: &DaskCluster) -> String {
    scheduler_address(
        name_of(cluster),
        cluster.metadata.namespace.as_deref().unwrap_or("default"),
        speaks_tls(&cluster.spec),
    )
}

/// The metadata of the scheduler's pod and Service, both `<cluster>-scheduler`.
fn scheduler_meta(cluster: &DaskCluster) -> ObjectMeta {
    let name = name_of(cluster);
    meta(
        &format!("{name}-scheduler"),
        cluster.metadata.namespace.as_deref(),
        cluster.spec.scheduler.metadata.as_ref(),
        labels(name, "scheduler"),
        cluster.controller_owner_ref(&()),
    )
}

/// The scheduler pod `<cluster>-scheduler`, with the HTTP API routes on.
pub fn scheduler_pod(cluster: &DaskCluster) -> Pod {
    let mut spec = cluster.spec.scheduler.spec.clone();
    default_env(&mut spec, HTTP_ROUTES_ENV, HTTP_ROUTES);
    Pod {
        metadata: scheduler_meta(cluster),
        spec: Some(spec),
        status: None,
    }
}

/// The Service `<cluster>-scheduler`; selects the scheduler pod when the
/// template gives no selector.
pub fn scheduler_service(cluster: &DaskCluster) -> Service {
    let name = name_of(cluster);
    let mut spec = cluster.spec.scheduler.service.clone();
    if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
        let mut sel = labels(name, "scheduler");
        sel.remove(LABEL_MANAGED_BY);
        spec.selector = Some(sel);
    }
    Service {
        metadata: scheduler_meta(cluster),
        spec: Some(spec),
        status: None,
    }
}

/// The name of a cluster's default worker group.
pub fn default_group_name(cluster: &str) -> String {
    format!("{cluster}-default")
}

/// The default DaskWorkerGroup `<cluster>-default`, from `spec.worker`.
pub fn default_worker_group(cluster: &DaskCluster) -> DaskWorkerGroup {
    let name = name_of(cluster);
    let mut group = DaskWorkerGroup::new(
        &default_group_name(name),
        DaskWorkerGroupSpec {
            cluster: name.to_string(),
            worker: cluster.spec.worker.clone(),
        },
    );
    group.metadata = meta(
        &default_group_name(name),
        cluster.metadata.namespace.as_deref(),
        None,
        labels(name, "workergroup"),
        cluster.controller_owner_ref(&()),
    );
    group
}

/// The Dask name (and pod name) of a group's worker number `index`.
pub fn worker_name(group: &str, index: u64) -> String {
    format!("{group}-worker-{index}")
}

/// One worker pod, named with its Dask worker name, owned by its group;
/// `scheduler` is the address it is given (its cluster's
/// [`cluster_address`]) unless its template sets one.
pub fn worker_pod(group: &DaskWorkerGroup, worker: &str, scheduler: &str) -> Pod {
    let group_name = name_of(group);
    let cluster = &group.spec.cluster;
    let mut spec = group.spec.worker.spec.clone();
    default_env(&mut spec, "DASK_WORKER_NAME", worker);
    default_env(&mut spec, "DASK_SCHEDULER_ADDRESS", scheduler);
    // A worker that exits is replaced by the reconciler under a new name:
    // the kubelet must not restart it in place under the old one.
    spec.restart_policy = Some("Never".into());
    let mut own = labels(cluster, "worker");
    own.insert(LABEL_WORKERGROUP.into(), group_name.to_string());
    Pod {
        metadata: meta(
            worker,
            group.metadata.namespace.as_deref(),
            group.spec.worker.metadata.as_ref(),
            own,
            group.controller_owner_ref(&()),
        ),
        spec: Some(spec),
        status: None,
    }
}

/// The DaskCluster a DaskJob runs against: named like the job, owned by it.
pub fn job_cluster(job: &DaskJob) -> DaskCluster {
    let name = name_of(job);
    let mut cluster = DaskCluster::new(name, job.spec.cluster.spec.clone());
    cluster.metadata = meta(
        name,
        job.metadata.namespace.as_deref(),
        job.spec.cluster.metadata.as_ref(),
        labels(name, "cluster"),
        job.controller_owner_ref(&()),
    );
    cluster
}

/// The name of a DaskJob's runner pod for attempt `attempt` (0 first).
pub fn runner_name(job: &str, attempt: i32) -> String {
    match attempt {
        0 => format!("{job}-runner"),
        n => format!("{job}-runner-{n}"),
    }
}

/// The selector of a DaskJob's runner pods.
pub fn runner_selector(job: &str) -> String {
    format!("{LABEL_CLUSTER}={job},{LABEL_COMPONENT}=job-runner")
}

/// A DaskJob's runner pod for one attempt, with `DASK_SCHEDULER_ADDRESS`
/// of the job's cluster, owned by the job (it outlives the cluster, so its
/// log stays readable). Its restart policy is `Never`: a failed runner is
/// replaced by a new pod, counted against `backoffLimit`.
pub fn runner_pod(job: &DaskJob, attempt: i32) -> Pod {
    let name = name_of(job);
    let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
    let mut spec = job.spec.job.spec.clone();
    default_env(
        &mut spec,
        "DASK_SCHEDULER_ADDRESS",
        &scheduler_address(name, namespace, speaks_tls(&job.spec.cluster.spec)),
    );
    spec.restart_policy = Some("Never".into());
    Pod {
        metadata: meta(
            &runner_name(name, attempt),
            job.metadata.namespace.as_deref(),
            job.spec.job.metadata.as_ref(),
            labels(name, "job-runner"),
            job.controller_owner_ref(&()),
        ),
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> DaskCluster {
        let mut c: DaskCluster =
            serde_yaml_ng::from_str(include_str!("../tests/examples/daskcluster.yaml")).unwrap();
        c.metadata.namespace = Some("team-a".into());
        c.metadata.uid = Some("0000-uid".into());
        c
    }

    #[test]
    fn renders_the_scheduler_pod_and_service() {
        let c = cluster();
        insta::assert_yaml_snapshot!("scheduler_pod", scheduler_pod(&c));
        insta::assert_yaml_snapshot!("scheduler_service", scheduler_service(&c));
    }

    #[test]
    fn renders_the_default_group_and_a_worker_pod() {
        let c = cluster();
        let mut g = default_worker_group(&c);
        insta::assert_yaml_snapshot!("default_group", g);
        g.metadata.uid = Some("1111-uid".into());
        insta::assert_yaml_snapshot!(
            "worker_pod",
            worker_pod(&g, &worker_name("example-default", 3), &cluster_address(&c))
        );
    }

    #[test]
    fn a_scheduler_with_tls_flags_is_reached_at_tls() {
        let mut c = cluster();
        assert_eq!(
            cluster_address(&c),
            "tcp://example-scheduler.team-a.svc.cluster.local:8786"
        );
        let tls = "tls://example-scheduler.team-a.svc.cluster.local:8786";
        for args in [
            &["dask", "scheduler", "--tls-cert", "/c.pem"][..],
            &["dask", "scheduler", "--tls-ca-file=/ca.pem"],
            &["dask", "scheduler", "--protocol", "tls"],
            &["dask", "scheduler", "--protocol=tls"],
            &["sh", "-c", "exec dask scheduler --tls-key /k.pem"],
        ] {
            c.spec.scheduler.spec.containers[0].command = None;
            c.spec.scheduler.spec.containers[0].args =
                Some(args.iter().map(|a| a.to_string()).collect());
            assert_eq!(cluster_address(&c), tls, "{args:?}");
        }
        for args in [
            &["dask", "scheduler", "--protocol", "tcp"][..],
            &["echo", "--tls-certainly"],
        ] {
            c.spec.scheduler.spec.containers[0].args =
                Some(args.iter().map(|a| a.to_string()).collect());
            assert!(!speaks_tls(&c.spec), "{args:?}");
        }
        // A DaskJob's runner is pointed at its cluster the same way.
        let mut job: DaskJob =
            serde_yaml_ng::from_str(include_str!("../tests/examples/daskjob.yaml")).unwrap();
        job.spec.cluster.spec.scheduler.spec.containers[0].args =
            Some(vec!["--protocol=tls".into()]);
        let env = runner_pod(&job, 0).spec.unwrap().containers[0].env.clone();
        let addr = env
            .unwrap()
            .into_iter()
            .find(|e| e.name == "DASK_SCHEDULER_ADDRESS");
        assert!(addr.unwrap().value.unwrap().starts_with("tls://"));
    }

    #[test]
    fn user_env_wins_and_hostile_values_stay_literal() {
        let mut c = cluster();
        let hostile = "$(rm -rf /); `x` 'y' \"z\"\n";
        c.spec.worker.spec.containers[0].env = Some(vec![EnvVar {
            name: "DASK_SCHEDULER_ADDRESS".into(),
            value: Some(hostile.into()),
            value_from: None,
        }]);
        let mut g = default_worker_group(&c);
        g.metadata.uid = Some("1".into());
        let pod = worker_pod(&g, "example-default-worker-0", &cluster_address(&c));
        let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
        let addr: Vec<_> = env
            .iter()
            .filter(|e| e.name == "DASK_SCHEDULER_ADDRESS")
            .collect();
        assert_eq!(addr.len(), 1);
        assert_eq!(addr[0].value.as_deref(), Some(hostile));
        assert!(env.iter().any(|e| e.name == "DASK_WORKER_NAME"
            && e.value.as_deref() == Some("example-default-worker-0")));
    }

    #[test]
    fn renders_a_jobs_cluster_and_runner_pods() {
        let mut job: DaskJob =
            serde_yaml_ng::from_str(include_str!("../tests/examples/daskjob.yaml")).unwrap();
        job.metadata.namespace = Some("team-a".into());
        job.metadata.uid = Some("2222-uid".into());
        let c = job_cluster(&job);
        assert_eq!(c.metadata.name, job.metadata.name);
        let o = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.controller), ("DaskJob", Some(true)));
        insta::assert_yaml_snapshot!("runner_pod", runner_pod(&job, 0));
        let retry = runner_pod(&job, 2);
        assert_eq!(retry.metadata.name.as_deref(), Some("example-job-runner-2"));
        assert_eq!(retry.spec.unwrap().restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn every_child_is_owned() {
        let c = cluster();
        for owners in [
            scheduler_pod(&c).metadata.owner_references,
            scheduler_service(&c).metadata.owner_references,
            default_worker_group(&c).metadata.owner_references,
        ] {
            let o = &owners.unwrap()[0];
            assert_eq!(
                (o.kind.as_str(), o.name.as_str()),
                ("DaskCluster", "example")
            );
            assert_eq!(o.controller, Some(true));
        }
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut c = cluster();
        c.metadata.name = Some(format!("9{}", "a".repeat(60)));
        c.spec.worker.spec.containers.clear();
        let fields: Vec<_> = validate_cluster(&c).into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "metadata.name",
                "spec.worker.spec.containers"
            ]
        );
        assert!(validate_cluster(&cluster()).is_empty());
    }
}
