//! muster-core's `Backend` for one DaskWorkerGroup: each worker job is one
//! pod named with its Dask worker name (no Deployment per worker). Launch
//! creates the pods, status lists the group's pods once, cancel deletes
//! exactly the pods named, and discovery finds them by their labels, so the
//! API server is the truth. The scheduler belongs to the DaskCluster
//! controller, never to this backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, Supervisor, Warnings,
};
use muster_core::dask::SchedulerEndpoint;
use muster_core::{Direct, Error, JobId, JobStatus, Result, SchedulerAccess};

use crate::children::{self, worker_pod};
use crate::resources::DaskWorkerGroup;

/// The pods of one worker group.
pub struct GroupBackend {
    pods: Api<Pod>,
    group: DaskWorkerGroup,
    /// The scheduler address new worker pods are given.
    scheduler: String,
}

impl GroupBackend {
    /// The backend of `group` (as read from the API server, with its uid),
    /// whose new workers reach the scheduler at `scheduler`.
    pub fn new(client: kube::Client, group: DaskWorkerGroup, scheduler: String) -> Self {
        let ns = group
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        GroupBackend {
            pods: Api::namespaced(client, &ns),
            group,
            scheduler,
        }
    }

    fn name(&self) -> &str {
        self.group.metadata.name.as_deref().unwrap_or_default()
    }

    fn selector(&self) -> String {
        children::worker_selector(&self.group.spec.cluster, self.name())
    }

    fn names(&self, role: &Role) -> Result<Vec<String>> {
        match role {
            Role::Workers {
                first_index, count, ..
            } => Ok((0..u64::from(*count))
                .map(|i| children::worker_name(self.name(), first_index + i))
                .collect()),
            Role::Scheduler => Err(Error::Usage(
                "a worker group launches workers only; the DaskCluster makes the scheduler".into(),
            )),
        }
    }
}

/// A Kubernetes API failure in muster-core's terms (server errors and
/// transport failures may pass; a refusal will not).
pub fn api_error(what: &str, e: kube::Error) -> Error {
    let transient = match &e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    };
    Error::Host {
        host: "the Kubernetes API server".into(),
        message: format!("{what}: {e}"),
        transient,
    }
}

fn status_of(pod: &Pod) -> JobStatus {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if pod.metadata.deletion_timestamp.is_some() {
        return JobStatus::Finished;
    }
    match phase {
        "Running" => JobStatus::Running,
        "Succeeded" => JobStatus::Finished,
        "Failed" => JobStatus::Failed {
            reason: pod
                .status
                .as_ref()
                .and_then(|s| s.reason.clone().or(s.message.clone()))
                .unwrap_or_else(|| "the pod failed".into()),
        },
        _ => JobStatus::Pending,
    }
}

#[async_trait]
impl Backend for GroupBackend {
    fn kind(&self) -> &'static str {
        "kube"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            supervisor: Supervisor::Operator,
            status_interval: Duration::from_secs(5),
            ..Capabilities::default()
        }
    }

    fn scheduler_access(&self) -> Arc<dyn SchedulerAccess> {
        // The published URL is the scheduler Service's cluster IP.
        Arc::new(Direct)
    }

    async fn preflight(&self) -> Result<Warnings> {
        Ok(Vec::new())
    }

    fn render(&self, role: &Role) -> Result<Rendered> {
        let items = self
            .names(role)?
            .iter()
            .map(|n| RenderedItem {
                title: format!("pod {n}"),
                text: serde_yaml_ng::to_string(&worker_pod(&self.group, n, &self.scheduler))
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Rendered {
            items,
            contact: None,
        })
    }

    async fn launch(&self, role: &Role) -> Result<Launched> {
        let mut launched = Launched::default();
        for name in self.names(role)? {
            match self
                .pods
                .create(
                    &PostParams::default(),
                    &worker_pod(&self.group, &name, &self.scheduler),
                )
                .await
            {
                // Already there: a launch interrupted before it was recorded.
                Ok(_) => launched.jobs.push(JobId(name)),
                Err(kube::Error::Api(s)) if s.code == 409 => launched.jobs.push(JobId(name)),
                Err(e) if launched.jobs.is_empty() => {
                    return Err(api_error(&format!("creating pod {name}"), e));
                }
                Err(e) => {
                    launched.warnings.push(format!("creating pod {name}: {e}"));
                    break;
                }
            }
        }
        Ok(launched)
    }

    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        let found = self.discover().await?;
        let by_name: BTreeMap<_, _> = found.jobs.into_iter().collect();
        Ok(ids
            .iter()
            .map(|id| {
                let s = by_name.get(id).cloned().unwrap_or(JobStatus::Finished);
                (id.clone(), s)
            })
            .collect())
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<()> {
        for id in ids {
            match self.pods.delete(&id.0, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_error(&format!("deleting pod {}", id.0), e)),
            }
        }
        Ok(())
    }

    async fn discover(&self) -> Result<Discovered> {
        let list = self
            .pods
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| api_error("listing worker pods", e))?;
        Ok(Discovered {
            jobs: list
                .items
                .iter()
                .map(|p| {
                    (
                        JobId(p.metadata.name.clone().unwrap_or_default()),
                        status_of(p),
                    )
                })
                .collect(),
            warnings: Vec::new(),
        })
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        self.pods
            .logs(&id.0, &LogParams::default())
            .await
            .map_err(|e| api_error(&format!("reading the log of pod {}", id.0), e))
    }

    async fn scheduler_endpoint(&self, _scheduler: &JobId) -> Result<Option<SchedulerEndpoint>> {
        Ok(None)
    }

    async fn forget(&self) -> Result<Warnings> {
        Ok(Vec::new())
    }
}
