//! muster-kube: muster on Kubernetes. [`resources`] holds the
//! `kubernetes.dask.org/v1` custom resource types (wire-compatible with
//! dask-kubernetes's), and [`crds`] the CustomResourceDefinitions generated
//! from them, which the Helm chart and `manifests/` carry. This crate knows
//! the Kubernetes API and Dask's pod conventions; it does not know any other
//! cluster manager, nor the command line.

pub mod backend;
pub mod children;
pub mod crds;
pub mod resources;

pub use resources::{
    DaskAutoscaler, DaskAutoscalerSpec, DaskAutoscalerStatus, DaskCluster, DaskClusterSpec,
    DaskClusterStatus, DaskJob, DaskJobSpec, DaskJobStatus, DaskWorkerGroup, DaskWorkerGroupSpec,
    DaskWorkerGroupStatus,
};
pub mod operator;
