//! The YARN backend behind muster-core's `Backend` trait: a thin adapter
//! that forwards every call to [`YarnOps`] and turns [`YarnError`] into
//! core's error (kept as the source, with its transient flag). It owns no
//! logic of its own, so porting it to a changed trait is mechanical.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use muster_core::access::{Direct, SchedulerAccess};
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, Role, Supervisor, Warnings,
};
use muster_core::dask::SchedulerEndpoint;
use muster_core::kinds::{BackendKind, parse_options, read_options};
use muster_core::spec::{FieldError, SpecError};
use muster_core::{ClusterSpec, Error, Home, JobId, JobStatus, Result};

use crate::error::YarnError;
use crate::ops::YarnOps;
use crate::options::YarnOptions;

/// The `kind` name of this backend in specs.
pub const KIND: &str = "yarn";

/// `kind: yarn` in the kind table: reads and checks the `backend:` options
/// (every problem with its full path) and builds the cluster's backend.
#[derive(Debug, Clone, Copy)]
pub struct YarnKind;

/// The options of a spec whose `backend.kind` is `yarn`.
pub fn options_of(spec: &ClusterSpec) -> std::result::Result<YarnOptions, FieldError> {
    parse_options::<YarnOptions>("backend", &spec.backend.options)
}

impl BackendKind for YarnKind {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, spec: &ClusterSpec) -> Vec<FieldError> {
        let (opts, mut errs) = read_options::<YarnOptions>("backend", &spec.backend.options);
        if let Some(opts) = opts {
            errs.extend(opts.validate("backend", spec));
        }
        errs
    }

    fn build(&self, spec: &ClusterSpec, home: &Home) -> Result<Arc<dyn Backend>> {
        let opts = options_of(spec).map_err(|e| SpecError::Invalid(vec![e]))?;
        Ok(Arc::new(YarnBackend::new(
            spec,
            &opts,
            &muster_core::tls::local_dir(home, &spec.name),
        )))
    }
}

/// One cluster on YARN.
#[derive(Debug)]
pub struct YarnBackend {
    ops: YarnOps,
}

impl YarnBackend {
    /// The backend of cluster `spec` (validated) with its YARN options
    /// (validated with [`YarnOptions::validate`]); `credentials` is the
    /// cluster's credential directory (`muster_core::tls::local_dir`).
    pub fn new(spec: &ClusterSpec, opts: &YarnOptions, credentials: &std::path::Path) -> Self {
        YarnBackend {
            ops: YarnOps::new(spec, opts, credentials),
        }
    }

    /// The operations underneath.
    pub fn ops(&self) -> &YarnOps {
        &self.ops
    }
}

/// Core's error for a YARN error: a short summary, the YARN error as the
/// source (its message names the field YARN refused, the URL, the status).
pub fn to_core(e: YarnError) -> Error {
    let message = match &e {
        YarnError::Unreachable { .. } => "the ResourceManager is unreachable",
        YarnError::Http { .. } => "a REST call failed",
        YarnError::Refused { .. } => "YARN refused the request",
        YarnError::UnexpectedAnswer { .. } => "YARN gave an answer muster cannot read",
        YarnError::Timeout { .. } => "YARN took too long",
        YarnError::LeftBehind { .. } => "containers were left behind",
    };
    Error::Backend {
        backend: KIND.into(),
        message: message.into(),
        transient: e.is_transient(),
        source: Some(Box::new(e)),
    }
}

#[async_trait]
impl Backend for YarnBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            supervisor: Supervisor::Agent,
            // One GET of the service per status; the RM serves everyone.
            status_interval: Duration::from_secs(2),
            // The credentials travel as STATIC config files YARN localises
            // (service.rs); containers start with core's `secure` flags.
            tls: true,
        }
    }

    fn scheduler_access(&self) -> Arc<dyn SchedulerAccess> {
        Arc::new(Direct)
    }

    async fn preflight(&self) -> Result<Warnings> {
        let version = self.ops.preflight().await.map_err(to_core)?;
        tracing::debug!(%version, rm = self.ops.client().active_rm(), "ResourceManager answers");
        Ok(Vec::new())
    }

    fn render(&self, role: &Role) -> Result<Rendered> {
        Ok(match role {
            Role::Scheduler => self.ops.render_scheduler(),
            Role::Workers { count, .. } => self.ops.render_workers(0, u64::from(*count)),
        })
    }

    async fn launch(&self, role: &Role) -> Result<Launched> {
        let jobs = match role {
            Role::Scheduler => vec![self.ops.launch_scheduler().await.map_err(to_core)?],
            // Workers find the scheduler through YARN's `${SCHEDULER-0_HOST}`,
            // whatever contact the caller passes.
            Role::Workers { count, .. } => {
                self.ops.launch_workers(*count).await.map_err(to_core)?
            }
        };
        Ok(Launched {
            jobs,
            contact: None,
            warnings: Vec::new(),
        })
    }

    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        self.ops.status(ids).await.map_err(to_core)
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<()> {
        self.ops.cancel(ids).await.map_err(to_core)
    }

    async fn discover(&self) -> Result<Discovered> {
        Ok(Discovered {
            jobs: self.ops.discover().await.map_err(to_core)?,
            warnings: Vec::new(),
        })
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        self.ops.logs(id).await.map_err(to_core)
    }

    async fn scheduler_endpoint(&self, _scheduler: &JobId) -> Result<Option<SchedulerEndpoint>> {
        self.ops.scheduler_endpoint().await.map_err(to_core)
    }

    async fn forget(&self) -> Result<Warnings> {
        // Nothing is kept on this machine: the service is the whole state.
        Ok(Vec::new())
    }
}
