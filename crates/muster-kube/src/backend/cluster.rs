//! `KubeCluster`: core's `Cluster` for `kind: kubernetes`. The operator is
//! the supervisor (no local agent): `up` applies the DaskCluster (and its
//! groups and autoscaler) and waits for the scheduler and the workers;
//! `scale` patches a group's replicas and waits; `adapt` applies or deletes
//! the DaskAutoscaler; `status` reads the DaskCluster, the pods and the
//! scheduler; `down` deletes and waits until the API server lists no pod of
//! the cluster (and no credentials Secret). The local registry only caches
//! the spec (so later commands know the context and namespace) and, for a
//! TLS cluster, keeps the client's credentials that `up` made beside it
//! (core's `tls::create`; the scheduler's and workers' go into the Secret);
//! the API server is the truth.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use muster_core::access::{Direct, SchedulerAccess};
use muster_core::cluster::{Cluster, ClusterStatus, DownReport, Progress, WorkerRow};
use muster_core::dask::{SchedulerClient, comm_scheme};
use muster_core::tls::{Party, PartyFiles};
use muster_core::{
    AdaptSpec, ClusterRecord, ClusterSpec, Error, Home, JobId, JobStatus, Phase, Result,
};
use tokio::sync::OnceCell;

use super::client::{Target, component, connect, poll};
use super::forward::{PortForward, forced_by_env};
use super::options::KubeOptions;
use super::render::{self, group_name};
use crate::children::{COMM_PORT, HTTP_PORT};
use crate::resources::ClusterPhase;

/// One muster cluster on Kubernetes.
pub struct KubeCluster {
    spec: ClusterSpec,
    opts: KubeOptions,
    home: Home,
    target: OnceCell<Target>,
    access: OnceCell<Arc<dyn SchedulerAccess>>,
    forward: OnceCell<Arc<PortForward>>,
    scheduler_address: Option<String>,
    http_url: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("name", &self.spec.name)
            .finish()
    }
}

/// The options of a validated spec of kind `kubernetes`.
pub fn options(spec: &ClusterSpec) -> Result<KubeOptions> {
    muster_core::kinds::parse_options("backend", &spec.backend.options)
        .map_err(|e| Error::Spec(muster_core::SpecError::Invalid(vec![e])))
}

impl KubeCluster {
    /// A handle for cluster `spec` (validated), caching under `home`.
    /// Connects nothing yet.
    pub fn new(spec: ClusterSpec, home: Home) -> Result<Self> {
        let opts = options(&spec)?;
        Ok(KubeCluster {
            spec,
            opts,
            home,
            target: OnceCell::new(),
            access: OnceCell::new(),
            forward: OnceCell::new(),
            scheduler_address: None,
            http_url: None,
            timeout: Duration::from_secs(300),
        })
    }

    /// The handle of a cluster in the registry.
    pub fn open(record: &ClusterRecord, home: Home) -> Result<Self> {
        let mut c = KubeCluster::new(record.spec.clone(), home)?;
        c.scheduler_address = record.scheduler_address.clone();
        c.http_url = record.http_url.clone();
        Ok(c)
    }

    /// How long `up` and `scale` wait.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The spec.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The connection (made on first use).
    pub async fn target(&self) -> Result<&Target> {
        self.target.get_or_try_init(|| connect(&self.opts)).await
    }

    /// True when the scheduler is reached through a port-forward.
    pub fn port_forwarded(&self) -> bool {
        self.opts.port_forward || forced_by_env()
    }

    async fn forward(&self) -> Result<Arc<PortForward>> {
        let t = self.target().await?.clone();
        let pod = format!("{}-scheduler", self.spec.name);
        Ok(self
            .forward
            .get_or_init(|| async move { Arc::new(PortForward::new(t.api::<Pod>(), &pod)) })
            .await
            .clone())
    }

    /// How this process reaches the scheduler's HTTP API.
    pub async fn access(&self) -> Result<Arc<dyn SchedulerAccess>> {
        if !self.port_forwarded() {
            return Ok(Arc::new(Direct));
        }
        let f = self.forward().await?;
        Ok(self
            .access
            .get_or_init(|| async move { f as Arc<dyn SchedulerAccess> })
            .await
            .clone())
    }

    /// The scheduler's addresses for a client here: (comm, http), through
    /// the port-forward when it is on, else the Service's cluster IP.
    async fn client_addresses(&self) -> Result<Option<(String, String)>> {
        let t = self.target().await?;
        let Some(ip) = t.scheduler_ip(&self.spec.name).await? else {
            return Ok(None);
        };
        // `tls://` to a loopback port or a cluster IP alike: Dask checks
        // that the scheduler's certificate chains to the cluster's CA, not
        // the host name it was reached by.
        let scheme = comm_scheme(&self.spec);
        if self.port_forwarded() {
            let f = self.forward().await?;
            let comm = f.local(COMM_PORT).await?;
            let http = f.local(HTTP_PORT).await?;
            Ok(Some((
                format!("{scheme}://{comm}"),
                format!("http://{http}"),
            )))
        } else {
            Ok(Some((
                format!("{scheme}://{ip}:{COMM_PORT}"),
                format!("http://{ip}:{HTTP_PORT}"),
            )))
        }
    }

    /// The client's credential files (made by `up`), for a TLS cluster.
    pub fn credentials(&self) -> Option<PartyFiles> {
        self.spec.scheduler.security.is_tls().then(|| {
            PartyFiles::in_dir(
                &muster_core::tls::local_dir(&self.home, &self.spec.name),
                Party::Client,
            )
        })
    }

    /// Loopback addresses (comm, http) forwarded to the scheduler pod,
    /// whatever the spec says, open while this handle lives.
    pub async fn forward_addresses(&self) -> Result<(String, String)> {
        let f = self.forward().await?;
        let comm = f.local(COMM_PORT).await?;
        let http = f.local(HTTP_PORT).await?;
        Ok((
            format!("{}://{comm}", comm_scheme(&self.spec)),
            format!("http://{http}"),
        ))
    }

    /// The registry record of this cluster in `phase`.
    fn record_in(&self, phase: Phase) -> Result<ClusterRecord> {
        let mut rec = match self.home.load(&self.spec.name)? {
            Some(r) => r,
            None => ClusterRecord::new(self.spec.clone()),
        };
        rec.spec = self.spec.clone();
        rec.phase = phase;
        rec.scheduler_job = Some(JobId(format!("{}-scheduler", self.spec.name)));
        rec.scheduler_address = self.scheduler_address.clone();
        rec.http_url = self.http_url.clone();
        rec.credentials = self.credentials();
        Ok(rec)
    }

    /// Replaces the record (which `up` created); a cluster brought down
    /// meanwhile stays down (`NotFound`).
    fn save(&self, phase: Phase) -> Result<()> {
        self.home.save(&self.record_in(phase)?)
    }

    /// Workers wanted in all groups.
    fn wanted(&self) -> u32 {
        self.spec.workers
            + self
                .opts
                .worker_groups
                .iter()
                .map(|g| g.workers)
                .sum::<u32>()
    }

    /// Waits until the scheduler answers and `wanted` workers of `group`
    /// (every group: `None`) are Running pods registered with it.
    async fn wait_workers(
        &self,
        group: Option<&str>,
        wanted: usize,
        progress: &dyn Progress,
    ) -> Result<()> {
        let t = self.target().await?;
        let name = self.spec.name.as_str();
        let access = self.access().await?;
        let last = std::sync::Mutex::new((usize::MAX, 0usize));
        let done = poll(self.timeout, Duration::from_millis(500), || async {
            let Some(dc) = t.cluster(name).await? else {
                return Err(Error::backend(
                    "kubernetes",
                    format!("DaskCluster {name} is gone"),
                    false,
                ));
            };
            if let Some(st) = &dc.status
                && st.phase == Some(ClusterPhase::Error)
            {
                let why = st
                    .conditions
                    .iter()
                    .map(|c| c.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Error::backend(
                    "kubernetes",
                    format!("DaskCluster {name} is in phase Error: {why}"),
                    false,
                ));
            }
            let Some(ip) = t.scheduler_ip(name).await? else {
                return Ok(None);
            };
            let pods = t.pods(name).await?;
            // A forward to a pod that does not run yet fails on every try.
            let scheduler_up = pods
                .iter()
                .any(|p| component(p) == "scheduler" && pod_status(p) == JobStatus::Running);
            if !scheduler_up {
                return Ok(None);
            }
            let url = access.http_url(&format!("http://{ip}:{HTTP_PORT}")).await?;
            let Ok(workers) = SchedulerClient::new(&url).workers().await else {
                return Ok(None);
            };
            let live: Vec<&str> = pods
                .iter()
                .filter(|p| component(p) == "worker" && p.metadata.deletion_timestamp.is_none())
                .filter(|p| group.is_none_or(|g| worker_group(p) == Some(g)))
                .filter_map(|p| p.metadata.name.as_deref())
                .collect();
            let connected = workers
                .iter()
                .filter(|w| live.contains(&w.name.as_str()))
                .count();
            let mut l = last.lock().expect("progress lock");
            if *l != (connected, wanted) {
                progress.workers(connected, wanted);
                *l = (connected, wanted);
            }
            Ok((live.len() == wanted && connected == wanted).then_some(()))
        })
        .await?;
        done.ok_or_else(|| Error::Timeout {
            what: format!("{wanted} workers of {name} on Kubernetes"),
            after: self.timeout,
        })
    }
}

fn worker_group(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::resources::LABEL_WORKERGROUP))
        .map(String::as_str)
}

/// A pod's state as core's job state.
pub fn pod_status(p: &Pod) -> JobStatus {
    if p.metadata.deletion_timestamp.is_some() {
        return JobStatus::Finished;
    }
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => JobStatus::Pending,
        Some("Running") => JobStatus::Running,
        Some("Succeeded") => JobStatus::Finished,
        Some("Failed") => JobStatus::Failed {
            reason: p
                .status
                .as_ref()
                .and_then(|s| s.message.clone().or(s.reason.clone()))
                .unwrap_or_else(|| "pod failed".into()),
        },
        _ => JobStatus::Unknown,
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    fn name(&self) -> &str {
        &self.spec.name
    }

    async fn up(&mut self, progress: &dyn Progress) -> Result<()> {
        let name = self.spec.name.clone();
        if self.home.load(&name)?.is_some() {
            return Err(Error::Usage(format!(
                "cluster {name:?} already exists in the registry (muster down {name} first)"
            )));
        }
        progress.stage("connecting to Kubernetes");
        let t = self.target().await?.clone();
        t.require_operator().await?;
        if t.cluster(&name).await?.is_some() {
            return Err(Error::Usage(format!(
                "DaskCluster {name} already exists in namespace {}",
                t.namespace
            )));
        }
        if !self.spec.scheduler.security.is_tls() {
            progress.warn(muster_core::spec::INSECURE_WARNING);
        }
        let mut m = render::manifests(&self.spec, &self.opts, &t.namespace);
        // `create` makes the cluster's directory; `save` only replaces.
        self.home.create(&self.record_in(Phase::Starting)?)?;
        if self.spec.scheduler.security.is_tls() {
            // As core does: all of them owner-only in the cluster's state
            // directory (`down` removes it); the Secret gets the scheduler's
            // and the workers'.
            progress.stage("making TLS credentials");
            match muster_core::tls::create(&self.home, &name) {
                Ok((creds, _)) => m = m.with_credentials(&creds),
                Err(e) => {
                    let _ = self.home.remove(&name);
                    return Err(e);
                }
            }
        }
        progress.stage("applying DaskCluster");
        let result = async {
            t.apply(&m).await?;
            progress.stage("waiting for the scheduler and workers");
            self.wait_workers(None, self.wanted() as usize, progress)
                .await?;
            if let Some((comm, http)) = self.client_addresses().await? {
                self.scheduler_address = Some(comm);
                self.http_url = Some(http);
            }
            Ok::<(), Error>(())
        }
        .await;
        match result {
            Ok(()) => self.save(Phase::Running),
            Err(e) => {
                let _ = self.down().await;
                Err(e)
            }
        }
    }

    async fn scale(&mut self, workers: u32, progress: &dyn Progress) -> Result<()> {
        self.scale_group("default", workers, progress).await
    }

    async fn adapt(&mut self, adapt: Option<AdaptSpec>) -> Result<()> {
        let t = self.target().await?.clone();
        let name = self.spec.name.clone();
        match &adapt {
            Some(a) => {
                t.apply_autoscaler(&render::autoscaler(&name, &t.namespace, a))
                    .await?
            }
            None => {
                // Off: keep the size the autoscaler left.
                let group =
                    t.groups(&name).await?.into_iter().find(|g| {
                        g.metadata.name.as_deref() == Some(&group_name(&name, "default"))
                    });
                let now = group
                    .and_then(|g| g.status.and_then(|s| s.replicas))
                    .unwrap_or(self.spec.workers as i32);
                t.delete_autoscaler(&name).await?;
                t.set_replicas(&name, None, now.max(0) as u32).await?;
                self.spec.workers = now.max(0) as u32;
            }
        }
        self.spec.adapt = adapt;
        self.save(Phase::Running)
    }

    async fn status(&self) -> Result<ClusterStatus> {
        let t = self.target().await?;
        let name = self.spec.name.as_str();
        let dc = t.cluster(name).await?;
        let pods = t.pods(name).await?;
        let access = self.access().await?;
        let ip = t.scheduler_ip(name).await?;
        let mut reachable = false;
        let mut dask = Vec::new();
        if let Some(ip) = &ip {
            let url = access.http_url(&format!("http://{ip}:{HTTP_PORT}")).await?;
            if let Ok(w) = SchedulerClient::new(&url).workers().await {
                reachable = true;
                dask = w;
            }
        }
        let mut scheduler = None;
        let mut workers = Vec::new();
        // Terminating pods are on their way out: not the cluster's any more.
        for p in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let pname = p.metadata.name.clone().unwrap_or_default();
            match component(p) {
                "scheduler" => scheduler = Some((JobId(pname), pod_status(p))),
                "worker" => {
                    let mine: Vec<String> = dask
                        .iter()
                        .filter(|w| w.name == pname)
                        .map(|w| w.address.clone())
                        .collect();
                    workers.push(WorkerRow {
                        name: pname,
                        status: pod_status(p),
                        connected: mine.len(),
                        addresses: mine,
                    });
                }
                _ => {}
            }
        }
        let known: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
        let unknown = dask
            .iter()
            .filter(|w| !known.contains(&w.name.as_str()))
            .cloned()
            .collect();
        let phase = match dc.as_ref() {
            None => Phase::Failed,
            Some(d) if d.metadata.deletion_timestamp.is_some() => Phase::Stopping,
            Some(d) => match d.status.as_ref().and_then(|s| s.phase) {
                Some(ClusterPhase::Running) => Phase::Running,
                Some(ClusterPhase::Error) => Phase::Failed,
                _ => Phase::Starting,
            },
        };
        let created = dc
            .as_ref()
            .and_then(|d| d.metadata.creation_timestamp.as_ref())
            .map(|t| t.0.as_second().max(0) as u64)
            .unwrap_or_else(muster_core::registry::unix_now);
        let desired = match dc.as_ref() {
            Some(d) => d.spec.worker.replicas.max(0) as u32,
            None => 0,
        };
        let addrs = self.client_addresses().await.ok().flatten();
        Ok(ClusterStatus {
            name: name.to_string(),
            backend: "kubernetes".into(),
            phase,
            age_seconds: muster_core::registry::unix_now().saturating_sub(created),
            scheduler,
            scheduler_address: addrs.as_ref().map(|a| a.0.clone()),
            dashboard_url: addrs.as_ref().map(|a| format!("{}/status", a.1)),
            scheduler_reachable: reachable,
            desired_workers: desired,
            processes_per_worker: 1,
            connected_workers: workers.iter().map(|w| w.connected).sum(),
            workers,
            unknown_workers: unknown,
        })
    }

    fn scheduler_address(&self) -> Option<&str> {
        self.scheduler_address.as_deref()
    }

    fn dashboard_link(&self) -> Option<String> {
        self.http_url.as_ref().map(|u| format!("{u}/status"))
    }

    async fn logs(&self, job: Option<&JobId>) -> Result<String> {
        let pod = match job {
            Some(j) => j.as_str().to_string(),
            None => format!("{}-scheduler", self.spec.name),
        };
        self.target().await?.log(&pod).await
    }

    async fn down(&mut self) -> Result<DownReport> {
        let name = self.spec.name.clone();
        let t = self.target().await?.clone();
        let report = down_in(&t, &name, self.timeout).await?;
        self.home.remove(&name)?;
        Ok(report)
    }
}

/// Deletes cluster `name` in `t`'s namespace and waits until the API server
/// lists none of its pods and no DaskCluster; the pods deleted are reported.
pub async fn down_in(t: &Target, name: &str, timeout: Duration) -> Result<DownReport> {
    let before: Vec<JobId> = t
        .pods(name)
        .await?
        .iter()
        .filter_map(|p| p.metadata.name.clone().map(JobId))
        .collect();
    let existed = t.delete_all(name).await? || !before.is_empty();
    if !before.is_empty() {
        // Pods left by a DaskCluster deleted some other way.
        t.delete_pods(name).await?;
    }
    let gone =
        poll(timeout, Duration::from_millis(500), || async {
            let left = t.pods(name).await?;
            Ok((left.is_empty()
                && t.cluster(name).await?.is_none()
                && t.secret(name).await?.is_none())
            .then_some(()))
        })
        .await?;
    if gone.is_none() {
        let left: Vec<String> = t
            .pods(name)
            .await?
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        return Err(Error::LeftBehind {
            cluster: name.to_string(),
            jobs: left,
        });
    }
    Ok(DownReport {
        name: name.to_string(),
        stopped: before,
        existed,
        warnings: Vec::new(),
    })
}

impl KubeCluster {
    /// Sets group `group`'s workers (`default`: the cluster's own group)
    /// and waits until that many are registered. Refused while the
    /// autoscaler drives the default group.
    pub async fn scale_group(
        &mut self,
        group: &str,
        workers: u32,
        progress: &dyn Progress,
    ) -> Result<()> {
        let t = self.target().await?.clone();
        let name = self.spec.name.clone();
        if group == "default" {
            if t.autoscaler(&name).await?.is_some() {
                return Err(Error::Usage(format!(
                    "cluster {name:?} scales adaptively; turn it off first (muster adapt {name} --off)"
                )));
            }
            t.set_replicas(&name, None, workers).await?;
            self.spec.workers = workers;
        } else {
            let Some(g) = self.opts.worker_groups.iter_mut().find(|g| g.name == group) else {
                return Err(Error::Usage(format!(
                    "cluster {name:?} has no worker group {group:?}"
                )));
            };
            g.workers = workers;
            t.set_replicas(&name, Some(&group_name(&name, group)), workers)
                .await?;
            self.spec.backend.options.insert(
                "worker_groups".into(),
                serde_json::to_value(&self.opts.worker_groups).expect("options serialize"),
            );
        }
        self.save(Phase::Running)?;
        let gname = group_name(&name, group);
        self.wait_workers(Some(&gname), workers as usize, progress)
            .await
    }
}
