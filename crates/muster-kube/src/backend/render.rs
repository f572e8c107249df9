//! A muster spec as the Kubernetes objects `up` applies: one DaskCluster
//! (its scheduler and default worker group), a DaskWorkerGroup per extra
//! group and, with `adapt`, a DaskAutoscaler. Pure functions building typed
//! objects: every user string is a field value, never spliced into text;
//! words of a command line are escaped for the kubelet's `$(VAR)`
//! expansion. `render` prints exactly these objects as YAML. With
//! `scheduler.security: tls` (the default) they include the Secret of the
//! cluster's credentials, redacted until `up` fills it ([`super::tls`]),
//! mounted read-only into the scheduler's and workers' pods, whose Dask
//! commands name the files and use `tls://` addresses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec, Probe, ResourceRequirements, Secret,
    ServicePort, ServiceSpec, Toleration as KToleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use muster_core::backend::{SchedulerContact, WorkerName};
use muster_core::dask::{ProcessCommand, env_of_word, env_word, secure, worker_command};
use muster_core::tls::{Credentials, Party};
use muster_core::{AdaptSpec, ClusterSpec};

use super::options::{KubeOptions, PodOverrides, Resources};
use super::tls;
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
    /// The Secret of the cluster's TLS credentials (`scheduler.security:
    /// tls`): redacted as rendered, filled by [`Manifests::with_credentials`].
    pub secret: Option<Secret>,
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
        let mut out: Vec<_> = self.secret.iter().map(|s| item("Secret", s)).collect();
        out.push(item("DaskCluster", &self.cluster));
        out.extend(self.groups.iter().map(|g| item("DaskWorkerGroup", g)));
        out.extend(self.autoscaler.iter().map(|a| item("DaskAutoscaler", a)));
        out
    }

    /// The objects `up` submits: the Secret holding `creds` instead of the
    /// redacted values (nothing else changes).
    pub fn with_credentials(mut self, creds: &Credentials) -> Self {
        self.secret = self.secret.map(|s| tls::with_credentials(s, creds));
        self
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
            spec: worker_pod(spec, opts, &opts.worker, namespace),
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
                        spec: worker_pod(spec, opts, &over, namespace),
                    },
                },
            );
            group.metadata = meta(&gname, namespace, name, "workergroup");
            group
        })
        .collect();
    let autoscaler = spec.adapt.as_ref().map(|a| autoscaler(name, namespace, a));
    let secret = spec
        .scheduler
        .security
        .is_tls()
        .then(|| tls::redacted_secret(meta(&tls::secret_name(name), namespace, name, "tls")));
    Manifests {
        secret,
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

/// The Dask address workers use: the Service's DNS name, `tls://` for a
/// TLS cluster (Dask checks the certificate's chain, not the host name).
pub fn scheduler_address(spec: &ClusterSpec, namespace: &str) -> String {
    crate::children::scheduler_address(&spec.name, namespace, spec.scheduler.security.is_tls())
}

/// `dask <program>` with the TLS flags naming `party`'s mounted files
/// (nothing added with `security: none`). Only the flags are kept: the
/// scheduler's dashboard stays plain HTTP inside the cluster (Dask serves
/// it apart from the comm; see `scheduler_pod`).
fn dask_program(spec: &ClusterSpec, program: &str, party: Party) -> Vec<String> {
    let mut cmd = ProcessCommand {
        argv: vec!["dask".into(), program.into()],
        env: BTreeMap::new(),
    };
    secure(&mut cmd, spec, party, tls::MOUNT);
    cmd.argv
}

/// Mounts `party`'s credentials into the pod's (only) container.
fn mount_credentials(pod: &mut PodSpec, spec: &ClusterSpec, party: Party) {
    if !spec.scheduler.security.is_tls() {
        return;
    }
    pod.volumes = Some(vec![tls::volume(&spec.name, party)]);
    for c in &mut pod.containers {
        c.volume_mounts = Some(vec![tls::mount()]);
    }
}

// The dashboard and HTTP API (Dask's HTTP server, configured apart from
// the comm by `distributed.scheduler.dashboard.tls.*`) stay plain HTTP on
// Kubernetes: the operator, the readiness probe and muster's CLI call it
// inside the cluster or through a port-forward, and Dask's HTTPS server
// would not ask clients for a certificate anyway, so it would add no
// authentication. The comm, where code runs, is mutual TLS.
fn scheduler_pod(spec: &ClusterSpec, opts: &KubeOptions) -> PodSpec {
    let mut args = dask_program(spec, "scheduler", Party::Scheduler);
    args.extend([
        "--port".into(),
        COMM_PORT.to_string(),
        "--dashboard-address".into(),
        format!(":{HTTP_PORT}"),
    ]);
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
    let mut p = pod(container, &opts.scheduler);
    mount_credentials(&mut p, spec, Party::Scheduler);
    p
}

fn worker_pod(
    spec: &ClusterSpec,
    opts: &KubeOptions,
    over: &PodOverrides,
    namespace: &str,
) -> PodSpec {
    // A pod runs the image's own `dask worker`, not muster's warm launcher
    // (`worker.warm_start` is for the process backends): the command, and
    // its environment, are Dask's stock ones.
    let mut stock = spec.clone();
    stock.worker.warm_start = false;
    let spec = &stock;
    let mut cmd = worker_command(
        spec,
        WorkerName::FromEnv("DASK_WORKER_NAME".into()),
        &SchedulerContact::Address(env_word("DASK_SCHEDULER_ADDRESS")),
    );
    secure(&mut cmd, spec, Party::Worker, tls::MOUNT);
    // `python -m distributed.cli.dask_worker` is `dask worker` in an image.
    let mut args: Vec<String> = vec!["dask".into(), "worker".into()];
    args.extend(cmd.argv.iter().skip(3).map(|a| kube_word(a)));
    args.extend([
        "--dashboard-address".into(),
        format!(":{WORKER_DASHBOARD_PORT}"),
    ]);
    let mut env = cmd.env;
    if spec.scheduler.security.is_tls() {
        // The operator's default is a `tcp://` address; the user's own
        // value (below) still wins.
        env.insert(
            "DASK_SCHEDULER_ADDRESS".into(),
            scheduler_address(spec, namespace),
        );
    }
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
    let mut p = pod(container, over);
    mount_credentials(&mut p, spec, Party::Worker);
    p
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
                "Secret demo-tls",
                "DaskCluster demo",
                "DaskWorkerGroup demo-gpu",
                "DaskAutoscaler demo"
            ]
        );
        let back: DaskCluster = serde_yaml_ng::from_str(&r.items[1].text).unwrap();
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
    fn tls_pods_name_their_files_and_never_carry_them() {
        let s = spec(FULL);
        let opts: KubeOptions =
            muster_core::kinds::parse_options("backend", &s.backend.options).unwrap();
        let creds = Credentials::generate("demo").unwrap();
        let m = manifests(&s, &opts, "team-a").with_credentials(&creds);
        let sched = &m.cluster.spec.scheduler.spec;
        let args = sched.containers[0].args.as_ref().unwrap();
        assert_eq!(
            args[..10],
            [
                "dask",
                "scheduler",
                "--protocol",
                "tls",
                "--tls-ca-file",
                "/etc/muster/tls/ca.pem",
                "--tls-cert",
                "/etc/muster/tls/scheduler.pem",
                "--tls-key",
                "/etc/muster/tls/scheduler-key.pem"
            ]
        );
        for pod in [
            sched,
            &m.cluster.spec.worker.spec,
            &m.groups[0].spec.worker.spec,
        ] {
            let c = &pod.containers[0];
            let text = serde_json::to_string(&(&c.args, &c.env, &c.command)).unwrap();
            assert!(!text.contains("BEGIN"), "{text}");
            assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        }
        let env = m.groups[0].spec.worker.spec.containers[0]
            .env
            .clone()
            .unwrap();
        let addr = env
            .iter()
            .find(|e| e.name == "DASK_SCHEDULER_ADDRESS")
            .unwrap();
        assert_eq!(
            addr.value.as_deref(),
            Some("tls://demo-scheduler.team-a.svc.cluster.local:8786")
        );
        // The dashboard stays plain HTTP (the readiness probe and the
        // operator use it): no dashboard TLS configuration reaches the pod.
        let senv = serde_json::to_string(&sched.containers[0].env).unwrap();
        assert!(!senv.contains("DASHBOARD__TLS"), "{senv}");
        assert!(crate::children::speaks_tls(&m.cluster.spec));
        let data = m.secret.unwrap().string_data.unwrap();
        assert_eq!(data["scheduler-key.pem"], creds.scheduler.key);
    }

    #[test]
    fn security_none_renders_no_secret_and_plain_tcp() {
        let s = spec("name: small\nscheduler: {security: none}\nbackend: {kind: kubernetes}\n");
        let opts: KubeOptions =
            muster_core::kinds::parse_options("backend", &s.backend.options).unwrap();
        let m = manifests(&s, &opts, "default");
        assert!(m.secret.is_none() && !crate::children::speaks_tls(&m.cluster.spec));
        let text = serde_yaml_ng::to_string(&m.cluster).unwrap();
        assert!(!text.contains("tls") && !text.contains("volumes"), "{text}");
    }

    #[test]
    fn minimal_spec_defaults() {
        let s = spec("name: small\nbackend: {kind: kubernetes}\n");
        let opts: KubeOptions =
            muster_core::kinds::parse_options("backend", &s.backend.options).unwrap();
        let m = manifests(&s, &opts, "default");
        insta::assert_yaml_snapshot!("kubernetes_minimal", m.cluster);
        insta::assert_yaml_snapshot!("kubernetes_minimal_secret", m.secret);
        assert!(m.groups.is_empty() && m.autoscaler.is_none());
    }
}
