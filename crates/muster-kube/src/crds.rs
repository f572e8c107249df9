//! The CustomResourceDefinitions of the four Dask kinds, generated from the
//! Rust types in [`crate::resources`]: the one source of the chart's `crds/`
//! directory (`muster operator crds` prints them, `scripts/generate.sh`
//! writes them). Pure: no API calls.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::resources::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};

/// The four CRDs, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        DaskCluster::crd(),
        DaskWorkerGroup::crd(),
        DaskJob::crd(),
        DaskAutoscaler::crd(),
    ]
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
