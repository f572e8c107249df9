//! The YARN backend's operations for one cluster, over the REST client:
//! submit the service, flex and decommission workers, read instance states,
//! find the service from the ResourceManager alone, read logs from the
//! NodeManagers, and destroy the service checking that no container is left.
//! The `Backend` trait adapter (in `backend.rs`) only forwards to these.
//!
//! Ids: the scheduler is `scheduler-0`, workers are their YARN component
//! instance names (`worker-3`), which are also their Dask worker names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use muster_core::dask::SchedulerEndpoint;
use muster_core::{ClusterSpec, JobId, JobStatus, Rendered, RenderedItem};
use tokio::sync::Mutex;

use crate::client::YarnClient;
use crate::error::YarnError;
use crate::model::ServiceStatus;
use crate::options::YarnOptions;
use crate::service::{self, SCHEDULER_INSTANCE, WORKER};

/// States of YARN applications that still run or may.
pub const LIVE_APP_STATES: &str = "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING";

/// One cluster's YARN service.
#[derive(Debug)]
pub struct YarnOps {
    spec: ClusterSpec,
    opts: YarnOptions,
    service: String,
    /// The cluster's credential directory, where YARN localises the
    /// containers' TLS files from (`file://`).
    credentials: PathBuf,
    client: YarnClient,
    /// Serialises flex and decommission calls of this process, so each
    /// computes the instance names from the count the previous one left.
    changes: Mutex<()>,
    /// How long `down` waits for the containers to be gone.
    pub down_timeout: Duration,
}

impl YarnOps {
    /// The operations of cluster `spec` (validated) with its YARN options;
    /// with TLS, the containers' credentials are localised from
    /// `credentials` (the cluster's credential directory, made absolute).
    pub fn new(spec: &ClusterSpec, opts: &YarnOptions, credentials: &Path) -> Self {
        let user = opts.effective_user();
        YarnOps {
            spec: spec.clone(),
            opts: opts.clone(),
            service: YarnOptions::service_name(&spec.name),
            credentials: std::path::absolute(credentials)
                .unwrap_or_else(|_| credentials.to_path_buf()),
            client: YarnClient::new(&opts.resource_manager.urls(), &user),
            changes: Mutex::new(()),
            down_timeout: Duration::from_secs(120),
        }
    }

    /// The YARN service's name.
    pub fn service_name(&self) -> &str {
        &self.service
    }

    /// The REST client.
    pub fn client(&self) -> &YarnClient {
        &self.client
    }

    /// What a launch submits: for the scheduler, the service JSON (with no
    /// workers: they are added by flexing once it is READY) and the two
    /// container scripts decoded; for workers, the flex request.
    pub fn render_scheduler(&self) -> Rendered {
        let r = service::render(&self.spec, &self.opts, 0, &self.credentials);
        Rendered {
            items: vec![
                RenderedItem {
                    title: format!("POST /app/v1/services ({})", self.service),
                    text: r.service.to_json(),
                },
                RenderedItem {
                    title: "scheduler container script (base64 in launch_command)".into(),
                    text: r.scheduler_script,
                },
                RenderedItem {
                    title: "worker container script (base64 in launch_command)".into(),
                    text: r.worker_script,
                },
            ],
            ..Default::default()
        }
    }

    /// The request that adds `count` workers to a service that has
    /// `current` (shown with `current` = 0 in a dry run).
    pub fn render_workers(&self, current: u64, count: u64) -> Rendered {
        Rendered {
            items: vec![RenderedItem {
                title: format!("PUT /app/v1/services/{}/components/{WORKER}", self.service),
                text: serde_json::to_string_pretty(&service::flex_body(current + count))
                    .expect("json"),
            }],
            ..Default::default()
        }
    }

    /// Checks that the ResourceManager answers and accepts the user.
    pub async fn preflight(&self) -> Result<String, YarnError> {
        self.client.rm_version().await
    }

    /// Submits the service with its scheduler and no workers. When YARN
    /// refuses it (a stopped queue, a container larger than any node), what
    /// the refused submission left (its files, its name) is destroyed again,
    /// unless the refusal was that the name is taken: that is another
    /// cluster's service.
    pub async fn launch_scheduler(&self) -> Result<JobId, YarnError> {
        let r = service::render(&self.spec, &self.opts, 0, &self.credentials);
        if let Err(e) = self.client.create_service(&r.service).await {
            if let YarnError::Refused { field, .. } = &e
                && *field != Some("name")
                && let Err(cleanup) = self.client.destroy(&self.service).await
            {
                tracing::warn!(error = %cleanup, "could not remove what a refused submission left");
            }
            return Err(e);
        }
        Ok(JobId(SCHEDULER_INSTANCE.into()))
    }

    async fn require(&self) -> Result<ServiceStatus, YarnError> {
        match self.client.service(&self.service).await? {
            Some(s) if !s.components.is_empty() => Ok(s),
            Some(_) => Err(YarnError::Timeout {
                what: format!("the service master of {} to start", self.service),
                secs: 0,
            }),
            None => Err(YarnError::Refused {
                what: format!("changing {}", self.service),
                field: None,
                message: format!("YARN has no service {}", self.service),
            }),
        }
    }

    /// Adds `count` worker containers; returns the instance names YARN
    /// gives them (see [`service::worker_instances`]).
    pub async fn launch_workers(&self, count: u32) -> Result<Vec<JobId>, YarnError> {
        let _guard = self.changes.lock().await;
        let status = self.require().await?;
        let before = status.worker_names();
        let target = status.wanted_workers() + u64::from(count);
        self.client.flex(&self.service, WORKER, target).await?;
        let after = service::worker_instances(target, &status.decommissioned());
        Ok(after
            .into_iter()
            .filter(|n| !before.contains(n))
            .map(JobId)
            .collect())
    }

    /// The states of many instances in one query.
    pub async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>, YarnError> {
        let status = self.client.service(&self.service).await?;
        Ok(ids
            .iter()
            .map(|id| {
                let st = status
                    .as_ref()
                    .map_or(JobStatus::Unknown, |s| s.instance_status(id.as_str()));
                (id.clone(), st)
            })
            .collect())
    }

    /// Stops instances: workers are decommissioned (exactly those, never
    /// reused); the scheduler's id destroys the whole service. Waits until
    /// their containers are gone.
    pub async fn cancel(&self, ids: &[JobId]) -> Result<(), YarnError> {
        if ids.iter().any(|id| id.as_str() == SCHEDULER_INSTANCE) {
            return self.destroy().await;
        }
        let _guard = self.changes.lock().await;
        let Some(status) = self.client.service(&self.service).await? else {
            return Ok(());
        };
        if status.is_stopped() || status.components.is_empty() {
            return Ok(());
        }
        let live: BTreeSet<String> = status.worker_names().into_iter().collect();
        let remove: Vec<String> = ids
            .iter()
            .map(|id| id.0.clone())
            .filter(|id| live.contains(id))
            .collect();
        if remove.is_empty() {
            return Ok(());
        }
        let containers = self.containers_of(&status, &remove).await;
        self.client.decommission(&self.service, &remove).await?;
        self.wait_done(containers, Duration::from_secs(60))
            .await
            .map_err(|left| YarnError::LeftBehind {
                service: self.service.clone(),
                containers: left,
            })
    }

    /// The containers (with their NodeManager) running these instances now.
    async fn containers_of(
        &self,
        status: &ServiceStatus,
        instances: &[String],
    ) -> Vec<crate::model::AttemptContainer> {
        let ids: BTreeSet<&str> = instances
            .iter()
            .filter_map(|n| status.container(n).map(|c| c.id.as_str()))
            .collect();
        let Some(app) = &status.id else {
            return Vec::new();
        };
        match self.client.app_containers(app).await {
            Ok(all) => all
                .into_iter()
                .filter(|c| ids.contains(c.container_id.as_str()))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list the containers to wait for");
                Vec::new()
            }
        }
    }

    /// Waits until each container's NodeManager reports it DONE (or no
    /// longer knows it); returns those still running after `timeout`.
    async fn wait_done(
        &self,
        mut left: Vec<crate::model::AttemptContainer>,
        timeout: Duration,
    ) -> Result<(), Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut still = Vec::new();
            for c in left {
                let node = crate::model::node_url(&c.node_http_address);
                match self.client.node_container(&node, &c.container_id).await {
                    Ok(Some(nc)) if !nc.is_done() => still.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, container = %c.container_id, "NodeManager did not answer");
                        still.push(c)
                    }
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(still.into_iter().map(|c| c.container_id).collect());
            }
            left = still;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Destroys the service (stop + delete in one call) and waits until the
    /// RM has ended the application and every NodeManager that ran one of
    /// its containers reports it DONE.
    pub async fn destroy(&self) -> Result<(), YarnError> {
        let status = self.client.service(&self.service).await?;
        let app = status.as_ref().and_then(|s| s.id.clone());
        let containers = match &app {
            Some(id) => self.client.app_containers(id).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not list the service's containers before destroying it");
                Vec::new()
            }),
            None => Vec::new(),
        };
        tracing::info!(service = %self.service, containers = containers.len(), "destroying the YARN service");
        self.client.destroy(&self.service).await?;
        let mut left = self.wait_done(containers, self.down_timeout).await.err();
        // The application itself must have ended too (its master gone).
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(id) = &app {
            let live = self.client.apps("yarn-service", LIVE_APP_STATES).await?;
            if !live.iter().any(|a| &a.id == id) {
                break;
            }
            if Instant::now() >= deadline {
                left.get_or_insert_with(Vec::new).push(id.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        match left {
            None => Ok(()),
            Some(containers) => Err(YarnError::LeftBehind {
                service: self.service.clone(),
                containers,
            }),
        }
    }

    /// The cluster's live instances, found from the ResourceManager alone:
    /// a running `yarn-service` application named `muster-<cluster>` of this
    /// user, then its instances from the Services API.
    pub async fn discover(&self) -> Result<Vec<(JobId, JobStatus)>, YarnError> {
        let apps = self.client.apps("yarn-service", LIVE_APP_STATES).await?;
        let ours = apps
            .iter()
            .any(|a| a.name == self.service && a.user == self.client.user());
        if !ours {
            return Ok(Vec::new());
        }
        let Some(status) = self.client.service(&self.service).await? else {
            // Submitted a moment ago: the application is all there is.
            return Ok(vec![(JobId(SCHEDULER_INSTANCE.into()), JobStatus::Pending)]);
        };
        Ok(status
            .instances()
            .into_iter()
            .filter(|(_, st)| st.is_active())
            .map(|(n, st)| (JobId(n), st))
            .collect())
    }

    /// The scheduler's address and dashboard, once its container is READY.
    pub async fn scheduler_endpoint(&self) -> Result<Option<SchedulerEndpoint>, YarnError> {
        let Some(status) = self.client.service(&self.service).await? else {
            return Ok(None);
        };
        // With TLS the scheduler serves its HTTP API on its certificate too.
        let (comm, http) = match muster_core::dask::comm_scheme(&self.spec) {
            "tls" => ("tls", "https"),
            other => (other, "http"),
        };
        Ok(status.scheduler_host().map(|host| SchedulerEndpoint {
            address: format!("{comm}://{host}:{}", service::scheduler_port(&self.spec)),
            http_url: format!("{http}://{host}:{}", service::dashboard_port(&self.spec)),
        }))
    }

    /// An instance's output (its stderr, where Dask logs, then its stdout
    /// when not empty), read from its NodeManager.
    pub async fn logs(&self, id: &JobId) -> Result<String, YarnError> {
        let status =
            self.client
                .service(&self.service)
                .await?
                .ok_or_else(|| YarnError::Refused {
                    what: format!("logs of {id}"),
                    field: None,
                    message: format!("YARN has no service {}", self.service),
                })?;
        let Some(container) = status.container(id.as_str()) else {
            return Ok(format!("({id} has no container now)\n"));
        };
        let app = status.id.clone().unwrap_or_default();
        let node = self
            .client
            .app_containers(&app)
            .await?
            .into_iter()
            .find(|c| c.container_id == container.id)
            .map(|c| crate::model::node_url(&c.node_http_address))
            .ok_or_else(|| YarnError::Refused {
                what: format!("logs of {id}"),
                field: None,
                message: format!("the RM does not list container {}", container.id),
            })?;
        let mut text = self
            .client
            .node_log(&node, &container.id, "stderr.txt")
            .await?;
        let out = self
            .client
            .node_log(&node, &container.id, "stdout.txt")
            .await?;
        if !out.trim().is_empty() {
            text.push_str("--- stdout ---\n");
            text.push_str(&out);
        }
        Ok(text)
    }
}

/// The clusters muster runs on a ResourceManager for `user`: the names of
/// live `yarn-service` applications with muster's prefix.
pub async fn list_clusters(client: &YarnClient) -> Result<Vec<String>, YarnError> {
    let apps = client.apps("yarn-service", LIVE_APP_STATES).await?;
    let mut names: Vec<String> = apps
        .into_iter()
        .filter(|a| a.user == client.user())
        .filter_map(|a| {
            a.name
                .strip_prefix(crate::options::SERVICE_PREFIX)
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
