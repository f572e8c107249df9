//! `backend: {kind: kubernetes}`: muster's own custom resources applied
//! from the CLI and the library, reconciled by muster's operator (which is
//! the clusters' supervisor, so no local agent runs). [`options`] reads and
//! checks the spec, [`render`] builds the objects (pure), [`client`] talks
//! to the API server, [`cluster`] is core's `Cluster` over them and
//! [`forward`] reaches the scheduler through a port-forward; [`tls`] is the
//! Secret and the mounts of the cluster's credentials. This module
//! does not know the operator's internals, only the resources' contract.

pub mod client;
pub mod cluster;
pub mod forward;
pub mod options;
pub mod render;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use muster_core::access::{Direct, SchedulerAccess};
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, Supervisor, Warnings,
};
use muster_core::dask::SchedulerEndpoint;
use muster_core::kinds::{BackendKind, parse_options, read_options};
use muster_core::spec::{FieldError, SpecError};
use muster_core::{ClusterSpec, Error, Home, JobId, JobStatus, Result};
use tokio::sync::OnceCell;

pub use cluster::KubeCluster;
pub use options::KubeOptions;

/// The `kind` name in specs.
pub const KIND: &str = "kubernetes";

/// The namespace used to render when the spec names none and no
/// kubeconfig is read (render is pure).
pub const RENDER_NAMESPACE: &str = "default";

/// `kind: kubernetes` in the kind table.
#[derive(Debug, Clone, Copy)]
pub struct KubeKind;

impl BackendKind for KubeKind {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, spec: &ClusterSpec) -> Vec<FieldError> {
        // Every unknown key (with its full path) and unreadable value, then
        // what the options that could be read say.
        let (opts, mut problems) = read_options::<KubeOptions>("backend", &spec.backend.options);
        if let Some(o) = opts {
            problems.extend(o.validate("backend", spec));
        }
        problems
    }

    fn build(&self, spec: &ClusterSpec, _home: &Home) -> Result<Arc<dyn Backend>> {
        let opts = parse_options::<KubeOptions>("backend", &spec.backend.options)
            .map_err(|e| SpecError::Invalid(vec![e]))?;
        Ok(Arc::new(KubeBackend {
            spec: spec.clone(),
            opts,
            target: OnceCell::new(),
        }))
    }
}

/// The `Backend` view of a Kubernetes cluster: rendering, and the pods as
/// jobs. Launching belongs to the operator (through [`KubeCluster`]), so
/// `launch` refuses.
pub struct KubeBackend {
    spec: ClusterSpec,
    opts: KubeOptions,
    target: OnceCell<client::Target>,
}

impl KubeBackend {
    async fn target(&self) -> Result<&client::Target> {
        self.target
            .get_or_try_init(|| client::connect(&self.opts))
            .await
    }
}

#[async_trait]
impl Backend for KubeBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            supervisor: Supervisor::Operator,
            status_interval: Duration::from_secs(2),
            // `up` puts the credentials in a Secret that the pods mount.
            tls: true,
        }
    }

    fn scheduler_access(&self) -> Arc<dyn SchedulerAccess> {
        Arc::new(Direct)
    }

    async fn preflight(&self) -> Result<Warnings> {
        self.target().await?.require_operator().await?;
        Ok(Vec::new())
    }

    /// Everything `up` applies, for the scheduler role (the workers are the
    /// DaskCluster's replicas, so the worker role renders nothing more).
    fn render(&self, role: &Role) -> Result<Rendered> {
        let items = match role {
            Role::Scheduler => {
                let ns = self.opts.namespace.as_deref().unwrap_or(RENDER_NAMESPACE);
                render::manifests(&self.spec, &self.opts, ns)
                    .yaml()
                    .into_iter()
                    .map(|(title, text)| RenderedItem { title, text })
                    .collect()
            }
            Role::Workers { .. } => Vec::new(),
        };
        Ok(Rendered {
            items,
            contact: None,
        })
    }

    async fn launch(&self, _role: &Role) -> Result<Launched> {
        Err(Error::Usage(
            "kubernetes clusters are launched by muster's operator: use KubeCluster (muster up)"
                .into(),
        ))
    }

    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        let pods = self.target().await?.pods(&self.spec.name).await?;
        Ok(ids
            .iter()
            .map(|id| {
                let st = pods
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(id.as_str()))
                    .map(cluster::pod_status)
                    .unwrap_or(JobStatus::Unknown);
                (id.clone(), st)
            })
            .collect())
    }

    async fn cancel(&self, _ids: &[JobId]) -> Result<()> {
        Err(Error::Usage(
            "worker pods are the operator's: scale the cluster instead".into(),
        ))
    }

    async fn discover(&self) -> Result<Discovered> {
        let pods = self.target().await?.pods(&self.spec.name).await?;
        Ok(Discovered {
            jobs: pods
                .iter()
                .filter_map(|p| Some((JobId(p.metadata.name.clone()?), cluster::pod_status(p))))
                .collect(),
            warnings: Vec::new(),
        })
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        self.target().await?.log(id.as_str()).await
    }

    async fn scheduler_endpoint(&self, _scheduler: &JobId) -> Result<Option<SchedulerEndpoint>> {
        Ok(None)
    }

    async fn forget(&self) -> Result<Warnings> {
        Ok(Vec::new())
    }
}
