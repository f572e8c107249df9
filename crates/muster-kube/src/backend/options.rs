//! The options of `backend: {kind: kubernetes, ...}` and their validation:
//! every problem at once, each with its full path (`backend.worker.env.1X`,
//! `backend.worker_groups[1].name`). Only syntax and Kubernetes's own naming
//! rules are checked here (DNS-1123 names, label keys and values, quantities,
//! toleration operators); whether a context exists is checked against the
//! kubeconfig when the backend connects. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use muster_core::ClusterSpec;
use muster_core::spec::FieldError;
use serde::{Deserialize, Serialize};

use crate::resources::{LABEL_CLUSTER, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_WORKERGROUP};

/// The image used when the spec names none.
pub const DEFAULT_IMAGE: &str = "ghcr.io/dask/dask:latest";

/// The values of `image_pull_policy`.
pub const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
/// The values of `service_type`.
pub const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer"];
/// The values of a toleration's `operator`.
pub const OPERATORS: &[&str] = &["Exists", "Equal"];
/// The values of a toleration's `effect`.
pub const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn one_of(p: &mut Problems, field: &str, v: Option<&str>, allowed: &[&str]) {
    if let Some(v) = v
        && !allowed.contains(&v)
    {
        p.push(field, v, &format!("must be one of {}", allowed.join(", ")));
    }
}

/// One toleration (Kubernetes's fields, snake_case).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Toleration {
    /// The taint key (empty with `Exists`: every taint).
    #[serde(default)]
    pub key: Option<String>,
    /// `Exists` or `Equal` (default `Equal`).
    #[serde(default)]
    pub operator: Option<String>,
    /// The value for `Equal`.
    #[serde(default)]
    pub value: Option<String>,
    /// The effect matched (all when absent): `NoSchedule`,
    /// `PreferNoSchedule` or `NoExecute`.
    #[serde(default)]
    pub effect: Option<String>,
    /// For `NoExecute`: how long the pod stays once tainted.
    #[serde(default)]
    pub toleration_seconds: Option<i64>,
}

/// Resource requests and limits (`cpu: "500m"`, `memory: 2Gi`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Requests.
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    /// Limits.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// What a spec may add to the scheduler's or the workers' pods.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodOverrides {
    /// The container's resources.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Extra environment variables of the container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The pod's `nodeSelector`.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The pod's tolerations.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Extra labels of the pod.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the pod.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl PodOverrides {
    /// `self` with `over` on top: maps merged (`over` wins), tolerations
    /// appended, `over`'s resources when it has any.
    pub fn merged(&self, over: &PodOverrides) -> PodOverrides {
        let join = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            let mut m = a.clone();
            m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            m
        };
        PodOverrides {
            resources: over.resources.clone().or_else(|| self.resources.clone()),
            env: join(&self.env, &over.env),
            node_selector: join(&self.node_selector, &over.node_selector),
            tolerations: self
                .tolerations
                .iter()
                .chain(&over.tolerations)
                .cloned()
                .collect(),
            labels: join(&self.labels, &over.labels),
            annotations: join(&self.annotations, &over.annotations),
        }
    }
}

/// An extra group of workers (a DaskWorkerGroup `<cluster>-<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerGroup {
    /// The group's name within the cluster.
    pub name: String,
    /// How many workers it runs.
    #[serde(default)]
    pub workers: u32,
    /// Its pods' overrides, on top of `backend.worker`.
    #[serde(default)]
    pub worker: PodOverrides,
}

/// `backend:` of `kind: kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KubeOptions {
    /// The kubeconfig context (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// The namespace (default: the context's, else `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Dask image of the scheduler and the workers.
    #[serde(default)]
    pub image: Option<String>,
    /// Its pull policy: `Always`, `IfNotPresent` or `Never`.
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// The scheduler Service's type: `ClusterIP` (default), `NodePort` or
    /// `LoadBalancer`.
    #[serde(default)]
    pub service_type: Option<String>,
    /// Reach the scheduler through a port-forward even when the Service's
    /// IP is routable from here (also `MUSTER_KUBE_PORT_FORWARD=1`).
    #[serde(default)]
    pub port_forward: bool,
    /// The scheduler pod's overrides.
    #[serde(default)]
    pub scheduler: PodOverrides,
    /// Every worker pod's overrides.
    #[serde(default)]
    pub worker: PodOverrides,
    /// Extra worker groups beside the default one.
    #[serde(default)]
    pub worker_groups: Vec<WorkerGroup>,
}

impl KubeOptions {
    /// The Service type.
    pub fn service_type(&self) -> &str {
        self.service_type.as_deref().unwrap_or("ClusterIP")
    }

    /// The image.
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(DEFAULT_IMAGE)
    }

    /// Every problem of these options and of the parts of `spec` this
    /// backend constrains, each under `prefix` (`backend`).
    pub fn validate(&self, prefix: &str, spec: &ClusterSpec) -> Vec<FieldError> {
        let mut p = Problems(Vec::new(), prefix.to_string());
        if let Some(c) = &self.context
            && (c.is_empty() || c.chars().any(char::is_control))
        {
            p.push(
                "context",
                c,
                "must be a non-empty context name of the kubeconfig",
            );
        }
        if let Some(ns) = &self.namespace
            && let Err(r) = dns1123_label(ns)
        {
            p.push("namespace", ns, &r);
        }
        if let Some(img) = &self.image
            && (img.is_empty() || img.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            p.push("image", img, "must be an image reference without spaces");
        }
        one_of(
            &mut p,
            "image_pull_policy",
            self.image_pull_policy.as_deref(),
            PULL_POLICIES,
        );
        one_of(
            &mut p,
            "service_type",
            self.service_type.as_deref(),
            SERVICE_TYPES,
        );
        // The Service `<name>-scheduler` is a DNS-1035 label.
        let name = &spec.name;
        let core_name_ok = muster_core::spec::check_name(name).is_ok();
        if core_name_ok && name.len() > MAX_CLUSTER_NAME {
            p.0.push(FieldError {
                field: "name".into(),
                value: name.clone(),
                reason: format!(
                    "at most {MAX_CLUSTER_NAME} characters on Kubernetes (the Service {name}-scheduler is a DNS label)"
                ),
            });
        }
        if core_name_ok && !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            p.0.push(FieldError {
                field: "name".into(),
                value: name.clone(),
                reason: "must start with a lower-case letter on Kubernetes (the Service <name>-scheduler is a DNS-1035 label)".into(),
            });
        }
        if spec.worker.processes != 1 {
            p.0.push(FieldError {
                field: "worker.processes".into(),
                value: spec.worker.processes.to_string(),
                reason: "must be 1 on Kubernetes: one pod is one Dask worker".into(),
            });
        }
        if let Some(e) = muster_core::kinds::placement_needs_batch(spec) {
            p.0.push(e);
        }
        check_pod(&mut p, "scheduler", &self.scheduler);
        check_pod(&mut p, "worker", &self.worker);
        let mut seen = BTreeSet::new();
        for (i, g) in self.worker_groups.iter().enumerate() {
            let at = format!("worker_groups[{i}]");
            if let Err(r) = dns1123_label(&g.name) {
                p.push(&format!("{at}.name"), &g.name, &r);
            } else if g.name == "default" {
                p.push(&format!("{at}.name"), &g.name, "is the cluster's own group");
            } else if !seen.insert(g.name.clone()) {
                p.push(&format!("{at}.name"), &g.name, "used by another group");
            } else if name.len() + 1 + g.name.len() > 63 {
                p.push(
                    &format!("{at}.name"),
                    &g.name,
                    "the group <cluster>-<name> must be at most 63 characters (it is a label value)",
                );
            }
            check_pod(&mut p, &format!("{at}.worker"), &g.worker);
        }
        p.0
    }
}

/// Longest cluster name on Kubernetes: `<name>-scheduler` is at most 63.
pub const MAX_CLUSTER_NAME: usize = 63 - "-scheduler".len();

struct Problems(Vec<FieldError>, String);

impl Problems {
    fn push(&mut self, field: &str, value: &str, reason: &str) {
        self.0.push(FieldError {
            field: format!("{}.{field}", self.1),
            value: value.to_string(),
            reason: reason.to_string(),
        });
    }
}

fn check_pod(p: &mut Problems, at: &str, o: &PodOverrides) {
    if let Some(r) = &o.resources {
        for (what, m) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (k, v) in m {
                let field = format!("{at}.resources.{what}.{k}");
                if let Err(e) = qualified_name(k) {
                    p.push(&field, k, &format!("resource name {e}"));
                }
                if let Err(e) = quantity(v) {
                    p.push(&field, v, &e);
                }
            }
        }
    }
    for k in o.env.keys() {
        if let Err(e) = env_name(k) {
            p.push(&format!("{at}.env.{k}"), k, &e);
        }
    }
    for (k, v) in &o.node_selector {
        check_label(p, &format!("{at}.node_selector.{k}"), k, v);
    }
    for (k, v) in &o.labels {
        let field = format!("{at}.labels.{k}");
        check_label(p, &field, k, v);
        if [
            LABEL_CLUSTER,
            LABEL_COMPONENT,
            LABEL_WORKERGROUP,
            LABEL_MANAGED_BY,
        ]
        .contains(&k.as_str())
        {
            p.push(&field, k, "is set by muster");
        }
    }
    for k in o.annotations.keys() {
        if let Err(e) = qualified_name(k) {
            p.push(&format!("{at}.annotations.{k}"), k, &e);
        }
    }
    for (i, t) in o.tolerations.iter().enumerate() {
        let field = format!("{at}.tolerations[{i}]");
        let key = t.key.as_deref().unwrap_or("");
        if !key.is_empty()
            && let Err(e) = qualified_name(key)
        {
            p.push(&format!("{field}.key"), key, &e);
        }
        one_of(
            p,
            &format!("{field}.operator"),
            t.operator.as_deref(),
            OPERATORS,
        );
        one_of(p, &format!("{field}.effect"), t.effect.as_deref(), EFFECTS);
        let op = t.operator.as_deref().unwrap_or("Equal");
        if key.is_empty() && op != "Exists" {
            p.push(
                &format!("{field}.operator"),
                "Equal",
                "an empty key needs operator Exists",
            );
        }
        if op == "Exists" && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            p.push(
                &format!("{field}.value"),
                t.value.as_deref().unwrap_or(""),
                "must be empty with operator Exists",
            );
        }
        if let Some(v) = t.value.as_deref()
            && let Err(e) = label_value(v)
        {
            p.push(&format!("{field}.value"), v, &e);
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            p.push(
                &format!("{field}.toleration_seconds"),
                "",
                "only with effect NoExecute",
            );
        }
    }
}

fn check_label(p: &mut Problems, field: &str, k: &str, v: &str) {
    if let Err(e) = qualified_name(k) {
        p.push(field, k, &format!("key {e}"));
    }
    if let Err(e) = label_value(v) {
        p.push(field, v, &format!("value {e}"));
    }
}

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err("must be a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

fn dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| dns1123_label(l).is_ok())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63, possibly empty.
fn name_part(s: &str) -> bool {
    s.len() <= 63
        && (s.is_empty()
            || (s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))))
}

/// A label or annotation key: `[prefix/]name`.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let ok = !name.is_empty() && name_part(name) && prefix.is_none_or(dns1123_subdomain);
    if ok {
        Ok(())
    } else {
        Err("must be [DNS-subdomain/]name, the name at most 63 of letters, digits, '-', '_', '.', alphanumeric at both ends".into())
    }
}

/// A label value: empty, or as a key's name part.
pub fn label_value(s: &str) -> Result<(), String> {
    if name_part(s) {
        Ok(())
    } else {
        Err(
            "must be at most 63 of letters, digits, '-', '_', '.', alphanumeric at both ends"
                .into(),
        )
    }
}

/// An environment variable name as Kubernetes accepts it.
pub fn env_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("must be letters, digits, '-', '.', '_', not starting with a digit".into())
    }
}

/// A resource quantity: a decimal number with an optional suffix
/// (`500m`, `2Gi`, `1.5`, `1e3`).
pub fn quantity(s: &str) -> Result<(), String> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(end);
    let num_ok = !num.is_empty() && num != "." && num.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    if num_ok && suffix_ok {
        Ok(())
    } else {
        Err("must be a Kubernetes quantity such as 500m, 2, 1.5Gi".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_names() {
        for ok in ["1", "500m", "2Gi", "1.5", "1e3", "0.5G"] {
            assert!(quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1x", "Gi", "1.2.3", "1 Gi", "$(x)"] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
        assert!(qualified_name("example.com/team").is_ok());
        assert!(qualified_name("team").is_ok());
        assert!(qualified_name("Bad Key").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(label_value("").is_ok() && label_value("x y").is_err());
        assert!(env_name("MY_VAR").is_ok() && env_name("1X").is_err() && env_name("A=B").is_err());
        assert!(dns1123_label("team-a").is_ok() && dns1123_label("Team").is_err());
    }
}

#[cfg(test)]
mod spec_tests {
    use muster_core::kinds::BackendKind;

    use crate::backend::KubeKind;

    fn fields(yaml: &str) -> Vec<String> {
        let spec = muster_core::ClusterSpec::from_yaml(yaml, None).unwrap();
        KubeKind
            .validate(&spec)
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let got = fields(
            r#"
name: demo
worker: {processes: 2}
scheduler: {placement: job}
backend:
  kind: kubernetes
  context: ""
  namespace: Team_A
  image: "two words"
  image_pull_policy: Sometimes
  service_type: Internal
  scheduler:
    annotations: {"bad key!": x}
    node_selector: {k: "not ok"}
  worker:
    env: {"1X": y}
    labels: {"dask.org/component": x}
    resources: {requests: {cpu: lots}, limits: {"bad name!": "1"}}
    tolerations:
      - {operator: Exists, value: v}
      - {key: k, operator: Maybe, effect: Never, toleration_seconds: 5}
      - {operator: Equal}
  worker_groups:
    - {name: gpu}
    - {name: gpu}
    - {name: default}
    - {name: GPU}
    - {name: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}
"#,
        );
        insta::assert_debug_snapshot!("kubernetes_validation", got);
    }

    #[test]
    fn names_too_long_or_starting_with_a_digit_for_the_service() {
        assert_eq!(
            fields(&format!(
                "name: {}\nbackend: {{kind: kubernetes}}",
                "a".repeat(54)
            )),
            ["name"]
        );
        assert_eq!(
            fields("name: 9lives\nbackend: {kind: kubernetes}"),
            ["name"]
        );
        assert!(fields("name: ok\nbackend: {kind: kubernetes}").is_empty());
    }

    #[test]
    fn unknown_fields_are_named() {
        assert_eq!(
            fields("name: a\nbackend: {kind: kubernetes, bogus: 1}"),
            ["backend.bogus"]
        );
        assert_eq!(
            fields("name: a\nbackend: {kind: kubernetes, worker: {envv: {}}}"),
            ["backend.worker.envv"]
        );
        // Unknown keys do not hide the known ones' problems: all at once.
        let mut got = fields(
            "name: a\nbackend: {kind: kubernetes, bogus: 1, service_type: Internal, \
             worker_groups: [{name: gpu, replica: 2}]}",
        );
        got.sort();
        assert_eq!(
            got,
            [
                "backend.bogus",
                "backend.service_type",
                "backend.worker_groups[0].replica"
            ]
        );
    }
}
