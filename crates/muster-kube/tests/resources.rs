//! The Dask resource types against manifests written the way dask-kubernetes's
//! documentation writes them: each parses into muster's types, and writing it
//! back loses no field; the generated CRDs are snapshot-tested.

use muster_kube::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup, crds};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every key of `sub` is in `sup` with the same value (`sup` may add defaults).
fn assert_contained(sub: &Value, sup: &Value, path: &str) {
    match (sub, sup) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let Some(w) = b.get(k) else {
                    panic!("{path}.{k} was dropped on the way through the Rust type");
                };
                assert_contained(v, w, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: list length changed");
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                assert_contained(v, w, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(sub, sup, "{path} changed"),
    }
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(yaml: &str) -> T {
    let original: Value = serde_yaml_ng::from_str(yaml).expect("example is YAML");
    let typed: T = serde_yaml_ng::from_str(yaml).expect("example parses into the Rust type");
    let written = serde_json::to_value(&typed).unwrap();
    assert_contained(&original, &written, "");
    let again: T = serde_json::from_value(written).unwrap();
    assert_eq!(typed, again, "a second trip changes nothing");
    typed
}

#[test]
fn daskcluster_example_round_trips() {
    let c: DaskCluster = round_trip(include_str!("examples/daskcluster.yaml"));
    assert_eq!(c.spec.worker.replicas, 2);
    assert_eq!(c.spec.idle_timeout, 0, "idleTimeout defaults to 0");
    assert_eq!(c.spec.scheduler.service.type_.as_deref(), Some("NodePort"));
}

#[test]
fn daskworkergroup_example_round_trips() {
    let g: DaskWorkerGroup = round_trip(include_str!("examples/daskworkergroup.yaml"));
    assert_eq!(g.spec.cluster, "example");
    let labels = g.spec.worker.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["team"], "analytics");
}

#[test]
fn daskjob_example_round_trips() {
    let j: DaskJob = round_trip(include_str!("examples/daskjob.yaml"));
    assert_eq!(j.spec.cluster.spec.worker.replicas, 2);
    assert_eq!(
        j.spec.backoff_limit, 6,
        "backoffLimit defaults like a batch Job's"
    );
}

#[test]
fn daskautoscaler_example_round_trips() {
    let a: DaskAutoscaler = round_trip(include_str!("examples/daskautoscaler.yaml"));
    assert_eq!((a.spec.minimum, a.spec.maximum), (1, 10));
    assert_eq!(a.spec.worker_group, None);
}

#[test]
fn worker_replicas_default_to_one() {
    let yaml = include_str!("examples/daskcluster.yaml").replace("    replicas: 2\n", "");
    let c: DaskCluster = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(c.spec.worker.replicas, 1);
}

#[test]
fn a_missing_required_field_is_named() {
    let yaml = "apiVersion: kubernetes.dask.org/v1\nkind: DaskAutoscaler\nmetadata: {name: a}\nspec: {cluster: c, minimum: 1}\n";
    let err = serde_yaml_ng::from_str::<DaskAutoscaler>(yaml).unwrap_err();
    assert!(err.to_string().contains("maximum"), "{err}");
}

#[test]
fn crds_have_dask_kubernetes_names_and_muster_subresources() {
    let all = crds::all();
    let names: Vec<_> = all
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "daskclusters.kubernetes.dask.org",
            "daskworkergroups.kubernetes.dask.org",
            "daskjobs.kubernetes.dask.org",
            "daskautoscalers.kubernetes.dask.org"
        ]
    );
    for crd in &all {
        let v = &crd.spec.versions[0];
        let sub = v.subresources.as_ref().expect("subresources");
        assert!(
            sub.status.is_some(),
            "{}: status subresource",
            crd.spec.names.kind
        );
        if let Some(scale) = &sub.scale {
            assert_eq!(scale.spec_replicas_path, ".spec.worker.replicas");
            assert_eq!(scale.status_replicas_path, ".status.replicas");
            assert_eq!(
                scale.label_selector_path.as_deref(),
                Some(".status.selector")
            );
        }
    }
    let scaled: Vec<_> = all
        .iter()
        .filter(|c| {
            c.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .scale
                .is_some()
        })
        .map(|c| c.spec.names.kind.as_str())
        .collect();
    assert_eq!(scaled, ["DaskCluster", "DaskWorkerGroup"]);
    assert_eq!(
        all[0].spec.names.short_names.as_deref(),
        Some(&["daskcluster".to_string(), "dsk".to_string()][..])
    );
}

/// Replace the embedded core schemas (PodSpec, ServiceSpec: thousands of
/// lines each, k8s-openapi's, not ours) by a marker, so that the snapshot
/// shows muster's own schema; the full CRDs are in the chart's `crds/`.
fn elide_core_schemas(v: &mut Value) {
    if let Value::Object(map) = v {
        let props = map.get("properties").and_then(Value::as_object);
        let marker = match props {
            Some(p) if p.contains_key("containers") && p.contains_key("volumes") => Some("PodSpec"),
            Some(p) if p.contains_key("clusterIP") && p.contains_key("ports") => {
                Some("ServiceSpec")
            }
            _ => None,
        };
        if let Some(m) = marker {
            *v = Value::String(format!("<k8s-openapi v1_34 {m} schema>"));
            return;
        }
        map.values_mut().for_each(elide_core_schemas);
    } else if let Value::Array(items) = v {
        items.iter_mut().for_each(elide_core_schemas);
    }
}

#[test]
fn crd_snapshots() {
    for crd in crds::all() {
        let mut v = serde_json::to_value(&crd).unwrap();
        elide_core_schemas(&mut v);
        insta::assert_yaml_snapshot!(crds::file_name(&crd), v);
    }
}
