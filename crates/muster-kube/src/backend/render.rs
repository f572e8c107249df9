//! A muster spec as the Kubernetes objects `up` applies: one DaskCluster
//! (its scheduler and default worker group), a DaskWorkerGroup per extra
//! group and, with `adapt`, a DaskAutoscaler. Pure functions building typed
//! objects: every user string is a field value, never spliced into text;
//! words of a command line are escaped for the kubelet's `$(VAR)`
//! expansion. `render` prints exactly these objects as YAML.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, Probe, ResourceRequirements,
    ServicePort, ServiceSpec, Toleration as KToleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use muster_core::backend::{SchedulerContact, WorkerName};
use muster_core::dask::{env_of_word, env_word, worker_command};
use muster_core::{AdaptSpec, ClusterSpec};

use super::options::{KubeOptions, PodOverrides, Resources};
use crate::children::{COMM_PORT, HTTP_PORT, default_group_name};
use crate::resources::{
    DaskAutoscaler, DaskAutoscalerSpec, DaskCluster, DaskClusterSpec, DaskSchedulerTemplate,
    DaskWorkerGroup, DaskWorkerGroupSpec, DaskWorkerTemplate, LABEL_CLUSTER, LABEL_COMPONENT,
    SimpleObjectMeta,
};

/// Label on the resources muster's CLI or library applied (how `get
/// clusters` tells them from DaskClusters applied by other tools).
pub const LABEL_CREATED_BY: &str = "app.kubernetes.io/created-by";
/// Its value.
pub const CREATED_BY: &str = "muster";
/// The field manager of muster's server-side applies.
pub const FIELD_MANAGER: &str = "muster";
/// The worker dashboard's port inside worker pods.
pub const WORKER_DASHBOARD_PORT: u16 = 8788;

/// Everything `up` applies, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The DaskCluster.
    pub cluster: DaskCluster,
    /// Extra worker groups.
    pub groups: Vec<DaskWorkerGroup>,
    /// The autoscaler of the default group, when `adapt` is set.
    pub autoscaler: Option<DaskAutoscaler>,
}

impl Manifests {
    /// Every object as YAML, titled `Kind name`.
    pub fn yaml(&self) -> Vec<(String, String)> {
        let mut out = vec![item("DaskCluster", &self.cluster)];
        out.extend(self.groups.iter().map(|g| item("DaskWorkerGroup", g)));
        out.extend(self.autoscaler.iter().map(|a| item("DaskAutoscaler", a)));
        out
    }
}

fn item<K: kube::Resource + serde::Serialize>(kind: &str, obj: &K) -> (String, String) {
    let name = obj.meta().name.clone().unwrap_or_default();
    let text = serde_yaml_ng::to_string(obj).expect("typed objects serialize");
    (format!("{kind} {name}"), text)
}

/// The objects of cluster `spec` in `namespace`.
pub fn manifests(spec: &ClusterSpec, opts: &KubeOptions, namespace: &str) -> Manifests {
    let name = spec.name.as_str();
    let cluster_spec = DaskClusterSpec {
        idle_timeout: 0,
        scheduler: DaskSchedulerTemplate {
            metadata: template_meta(&opts.scheduler),
            spec: scheduler_pod(spec, opts),
            service: ServiceSpec {
                type_: Some(opts.service_type().into()),
                ports: Some(vec![
                    service_port("tcp-comm", COMM_PORT),
                    service_port("http-dashboard", HTTP_PORT),
                ]),
                ..ServiceSpec::default()
            },
        },
        worker: DaskWorkerTemplate {
            replicas: spec.workers as i32,
            metadata: template_meta(&opts.worker),
            spec: worker_pod(spec, opts, &opts.worker),
        },
    };
    let mut cluster = DaskCluster::new(name, cluster_spec);
    cluster.metadata = meta(name, namespace, name, "cluster");
    let groups = opts
        .worker_groups
        .iter()
        .map(|g| {
            let over = opts.worker.merged(&g.worker);
            let gname = group_name(name, &g.name);
            let mut group = DaskWorkerGroup::new(
                &gname,
                DaskWorkerGroupSpec {
                    cluster: name.to_string(),
                    worker: DaskWorkerTemplate {
                        replicas: g.workers as i32,
                        metadata: template_meta(&over),
                        spec: worker_pod(spec, opts, &over),
                    },
                },
            );
            group.metadata = meta(&gname, namespace, name, "workergroup");
            group
        })
        .collect();
    let autoscaler = spec.adapt.as_ref().map(|a| autoscaler(name, namespace, a));
    Manifests {
        cluster,
        groups,
        autoscaler,
    }
}

/// The DaskAutoscaler `<cluster>` of the default group.
pub fn autoscaler(cluster: &str, namespace: &str, adapt: &AdaptSpec) -> DaskAutoscaler {
    let mut a = DaskAutoscaler::new(
        cluster,
        DaskAutoscalerSpec {
            cluster: cluster.to_string(),
            minimum: adapt.minimum as i32,
            maximum: adapt.maximum as i32,
            worker_group: None,
        },
    );
    a.metadata = meta(cluster, namespace, cluster, "autoscaler");
    a
}

/// The DaskWorkerGroup name of group `group` (`default`: the cluster's own).
pub fn group_name(cluster: &str, group: &str) -> String {
    if group == "default" {
        default_group_name(cluster)
    } else {
        format!("{cluster}-{group}")
    }
}

fn meta(name: &str, namespace: &str, cluster: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([
            (LABEL_CLUSTER.to_string(), cluster.to_string()),
            (LABEL_COMPONENT.to_string(), component.to_string()),
            (LABEL_CREATED_BY.to_string(), CREATED_BY.to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

fn template_meta(o: &PodOverrides) -> Option<SimpleObjectMeta> {
    let nonempty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let m = SimpleObjectMeta {
        labels: nonempty(&o.labels),
        annotations: nonempty(&o.annotations),
    };
    (m != SimpleObjectMeta::default()).then_some(m)
}

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: port.into(),
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::String(name.into())),
        ..ServicePort::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// A command-line word as the kubelet reads it: `$(VAR)` for a word that
/// stands for a variable, every other `$` doubled so nothing else expands.
fn kube_word(word: &str) -> String {
    match env_of_word(word) {
        Some(var) => format!("$({var})"),
        None => word.replace('$', "$$"),
    }
}

fn scheduler_pod(spec: &ClusterSpec, opts: &KubeOptions) -> PodSpec {
    let mut args: Vec<String> = vec![
        "dask".into(),
        "scheduler".into(),
        "--port".into(),
        COMM_PORT.to_string(),
        "--dashboard-address".into(),
        format!(":{HTTP_PORT}"),
    ];
    args.extend(spec.scheduler.extra_args.iter().cloned());
    let mut env = spec.scheduler.env.clone();
    env.extend(opts.scheduler.env.clone());
    let probe = Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/health".into()),
            port: IntOrString::String("http-dashboard".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(2),
        ..Probe::default()
    };
    let container = Container {
        name: "scheduler".into(),
        image: Some(opts.image().to_string()),
        image_pull_policy: opts.image_pull_policy.clone(),
        args: Some(args.iter().map(|a| kube_word(a)).collect()),
        env: env_vars(&env),
        ports: Some(vec![
            container_port("tcp-comm", COMM_PORT),
            container_port("http-dashboard", HTTP_PORT),
        ]),
        readiness_probe: Some(probe),
        resources: resources(opts.scheduler.resources.as_ref()),
        ..Container::default()
    };
    pod(container, &opts.scheduler)
}

fn worker_pod(spec: &ClusterSpec, opts: &KubeOptions, over: &PodOverrides) -> PodSpec {
    let cmd = worker_command(
        spec,
        WorkerName::FromEnv("DASK_WORKER_NAME".into()),
        &SchedulerContact::Address(env_word("DASK_SCHEDULER_ADDRESS")),
    );
    // `python -m distributed.cli.dask_worker` is `dask worker` in an image.
    let mut args: Vec<String> = vec!["dask".into(), "worker".into()];
    args.extend(cmd.argv.iter().skip(3).map(|a| kube_word(a)));
    args.extend([
        "--dashboard-address".into(),
        format!(":{WORKER_DASHBOARD_PORT}"),
    ]);
    let mut env = cmd.env;
    env.extend(over.env.clone());
    let container = Container {
        name: "worker".into(),
        image: Some(opts.image().to_string()),
        image_pull_policy: opts.image_pull_policy.clone(),
        args: Some(args),
        env: env_vars(&env),
        ports: Some(vec![container_port(
            "http-dashboard",
            WORKER_DASHBOARD_PORT,
        )]),
        resources: resources(over.resources.as_ref()),
        ..Container::default()
    };
    pod(container, over)
}

fn pod(container: Container, over: &PodOverrides) -> PodSpec {
    PodSpec {
        containers: vec![container],
        node_selector: (!over.node_selector.is_empty()).then(|| over.node_selector.clone()),
        tolerations: (!over.tolerations.is_empty()).then(|| {
            over.tolerations
                .iter()
                .map(|t| KToleration {
                    key: t.key.clone(),
                    operator: t.operator.clone(),
                    value: t.value.clone(),
                    effect: t.effect.clone(),
                    toleration_seconds: t.toleration_seconds,
                })
                .collect()
        }),
        ..PodSpec::default()
    }
}

fn env_vars(env: &BTreeMap<String, String>) -> Option<Vec<EnvVar>> {
    (!env.is_empty()).then(|| {
        env.iter()
            .map(|(k, v)| EnvVar {
                name: k.clone(),
                // The kubelet expands `$(VAR)` in values too.
                value: Some(v.replace('$', "$$")),
                value_from: None,
            })
            .collect()
    })
}

fn resources(r: Option<&Resources>) -> Option<ResourceRequirements> {
    let q = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        })
    };
    r.map(|r| ResourceRequirements {
        requests: q(&r.requests),
        limits: q(&r.limits),
        ..ResourceRequirements::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::kinds::BackendKind;

    fn spec(yaml: &str) -> ClusterSpec {
        ClusterSpec::from_yaml(yaml, None).unwrap()
    }

    const FULL: &str = r#"
name: demo
workers: 2
worker: {cores: 2, memory: 2GiB, extra_args: ["--resources", "GPU=1"]}
adapt: {minimum: 1, maximum: 5}
backend:
  kind: kubernetes
  namespace: team-a
  image: registry.example/dask:2026.8.0
  image_pull_policy: IfNotPresent
  service_type: NodePort
  scheduler:
    resources: {requests: {cpu: 500m, memory: 1Gi}}
    annotations: {example.com/owner: "data team"}
  worker:
    env: {HOSTILE: "$(rm -rf /); `x` 'y'", PLAIN: "ok"}
    node_selector: {kubernetes.io/arch: amd64}
    tolerations: [{key: dedicated, operator: Equal, value: dask, effect: NoSchedule}]
    labels: {team: a}
    resources: {limits: {memory: 2Gi}}
  worker_groups:
    - name: gpu
      workers: 1
      worker: {node_selector: {gpu: "true"}, resources: {limits: {nvidia.com/gpu: "1"}}}
"#;

    #[test]
    fn renders_every_object_up_applies() {
        let s = spec(FULL);
        assert!(super::super::KubeKind.validate(&s).is_empty());
        let opts: KubeOptions =
            muster_core::kinds::parse_options("backend", &s.backend.options).unwrap();
        let m = manifests(&s, &opts, "team-a");
        let text: Vec<String> = m
            .yaml()
            .into_iter()
            .map(|(t, y)| format!("# {t}\n{y}"))
            .collect();
        insta::assert_snapshot!("kubernetes_full", text.join("---\n"));
    }

    #[test]
    fn the_backend_renders_the_same_objects() {
        let s = spec(FULL);
        let home = muster_core::Home::at("/nonexistent");
        let b = super::super::KubeKind.build(&s, &home).unwrap();
        let r = b.render(&muster_core::Role::Scheduler).unwrap();
        let titles: Vec<&str> = r.items.iter().map(|i| i.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "DaskCluster demo",
                "DaskWorkerGroup demo-gpu",
                "DaskAutoscaler demo"
            ]
        );
        let back: DaskCluster = serde_yaml_ng::from_str(&r.items[0].text).unwrap();
        let opts: KubeOptions =
            muster_core::kinds::parse_options("backend", &s.backend.options).unwrap();
        assert_eq!(back, manifests(&s, &opts, "team-a").cluster);
    }

    #[test]
    fn hostile_strings_stay_data() {
        let s = spec(FULL);
        let opts: KubeOptions =
            muster_core::kinds::parse_options("backend", &s.backend.options).unwrap();
        let m = manifests(&s, &opts, "team-a");
        let c = &m.cluster.spec.worker.spec.containers[0];
        let env = c.env.as_ref().unwrap();
        let hostile = env.iter().find(|e| e.name == "HOSTILE").unwrap();
        // The kubelet reads `$$` as `$`: the pod sees the string as written.
        assert_eq!(hostile.value.as_deref(), Some("$$(rm -rf /); `x` 'y'"));
        let args = c.args.as_ref().unwrap();
        assert!(args.contains(&"$(DASK_WORKER_NAME)".to_string()));
        assert!(args.contains(&"$(DASK_SCHEDULER_ADDRESS)".to_string()));
        assert_eq!(kube_word("a$b"), "a$$b");
    }

    #[test]
    fn minimal_spec_defaults() {
        let s = spec("name: small\nbackend: {kind: kubernetes}\n");
        let opts: KubeOptions =
            muster_core::kinds::parse_options("backend", &s.backend.options).unwrap();
        let m = manifests(&s, &opts, "default");
        insta::assert_yaml_snapshot!("kubernetes_minimal", m.cluster);
        assert!(m.groups.is_empty() && m.autoscaler.is_none());
    }
}
