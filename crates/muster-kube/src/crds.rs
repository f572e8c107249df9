//! The CustomResourceDefinitions of the four Dask kinds, generated from the
//! Rust types in [`crate::resources`]: the one source of the chart's `crds/`
//! directory (`muster operator crds` prints them, `scripts/generate.sh`
//! writes them). Pure: no API calls.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Map, Value};

use crate::resources::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};

/// The four CRDs, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        DaskCluster::crd(),
        DaskWorkerGroup::crd(),
        DaskJob::crd(),
        DaskAutoscaler::crd(),
    ]
    .into_iter()
    .map(slim)
    .collect()
}

/// Which core type an embedded schema is, told by its properties.
fn core_kind(schema: &Map<String, Value>) -> Option<&'static str> {
    let props = schema.get("properties")?.as_object()?;
    if props.contains_key("containers") && props.contains_key("volumes") {
        Some("PodSpec")
    } else if props.contains_key("clusterIP") && props.contains_key("ports") {
        Some("ServiceSpec")
    } else {
        None
    }
}

/// Drop the field descriptions inside the embedded PodSpec and ServiceSpec
/// schemas (k8s-openapi's, ~85% of the bytes: a DaskJob CRD would be ~1 MB of
/// JSON, near etcd's object limit), keeping every type and validation and a
/// one-line pointer to the core type's documentation.
fn slim(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("description");
                m.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(kind) = core_kind(m) {
                    m.values_mut().for_each(strip);
                    let doc = format!(
                        "A core/v1 {kind}; `kubectl explain` its core type for the fields."
                    );
                    m.insert("description".into(), Value::String(doc));
                } else {
                    m.values_mut().for_each(walk);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut v);
    serde_json::from_value(v).expect("a slimmed CRD is still a CRD")
}

/// One CRD as a YAML document, with a header saying it is generated.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(crd)?;
    Ok(format!(
        "# Generated from muster-kube's Rust types by scripts/generate.sh; do not edit.\n{body}"
    ))
}

/// The file name of a CRD in the chart's `crds/` directory (`daskclusters.yaml`).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// All four CRDs as one multi-document YAML stream.
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let docs = all().iter().map(to_yaml).collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}
