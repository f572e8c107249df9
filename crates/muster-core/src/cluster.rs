//! The `Cluster` trait (the handle a user holds) and `ManagedCluster`, its one
//! generic implementation over any [`Backend`]: bring up, scale, inspect and
//! bring down, with the registry kept in step. The decisions (which workers to
//! remove) are pure functions; the rest is sequencing and waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use crate::dask::{SchedulerClient, SchedulerEndpoint, WorkerInfo, job_of_worker};
use crate::error::{Error, Result};
use crate::job::{JobId, JobStatus};
use crate::legacy::{Backend, LaunchRequest, Role, SchedulerContact};
use crate::registry::{ClusterLock, ClusterRecord, Home, Phase};
use crate::spec::{AdaptSpec, ClusterSpec, MAX_WORKERS};

/// Receives progress of long operations (the CLI draws a bar from it).
pub trait Progress: Send + Sync {
    /// A new stage began, e.g. "starting scheduler".
    fn stage(&self, _message: &str) {}
    /// `connected` of `wanted` Dask workers are registered.
    fn workers(&self, _connected: usize, _wanted: usize) {}
    /// Something went wrong but the operation went on (e.g. a host was
    /// unreachable and the cluster is smaller than asked for).
    fn warn(&self, _message: &str) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;
impl Progress for Quiet {}

/// A Dask cluster a user holds: bring it up, resize it, look at it, take it down.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// The cluster's name.
    fn name(&self) -> &str;
    /// Launches the scheduler and the spec's workers and waits until they are
    /// registered. On failure everything launched is stopped again.
    async fn up(&mut self, progress: &dyn Progress) -> Result<()>;
    /// Sets the number of worker jobs and waits until the scheduler sees them.
    /// Removed workers are retired through the scheduler (their data moves
    /// elsewhere) before their jobs are stopped.
    async fn scale(&mut self, workers: u32, progress: &dyn Progress) -> Result<()>;
    /// The cluster as the backend and the scheduler see it now.
    async fn status(&self) -> Result<ClusterStatus>;
    /// The scheduler's address (`tcp://...`), once up.
    fn scheduler_address(&self) -> Option<&str>;
    /// The dashboard link, once up.
    fn dashboard_link(&self) -> Option<String>;
    /// A job's log; the scheduler's when `job` is `None`.
    async fn logs(&self, job: Option<&JobId>) -> Result<String>;
    /// Stops every job of the cluster, verifies none is left, and forgets it.
    /// Succeeds when there was nothing to stop.
    async fn down(&mut self) -> Result<DownReport>;
}

/// One worker job as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    /// The job id, which is also the Dask worker name.
    pub name: String,
    /// The backend's state of the job.
    pub status: JobStatus,
    /// Dask workers of this job registered with the scheduler.
    pub connected: usize,
    /// Their addresses.
    pub addresses: Vec<String>,
}

/// A cluster's state, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub name: String,
    /// Its backend kind.
    pub backend: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// Seconds since it was created.
    pub age_seconds: u64,
    /// The scheduler job and its state.
    pub scheduler: Option<(JobId, JobStatus)>,
    /// The scheduler's address.
    pub scheduler_address: Option<String>,
    /// The dashboard link.
    pub dashboard_url: Option<String>,
    /// Whether the scheduler's HTTP API answered.
    pub scheduler_reachable: bool,
    /// Worker jobs wanted.
    pub desired_workers: u32,
    /// Dask workers per job.
    pub processes_per_worker: u32,
    /// Dask workers registered with the scheduler.
    pub connected_workers: usize,
    /// Every worker job.
    pub workers: Vec<WorkerRow>,
    /// Workers the scheduler knows that belong to no recorded job.
    pub unknown_workers: Vec<WorkerInfo>,
}

/// What `down` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// The cluster.
    pub name: String,
    /// Jobs stopped.
    pub stopped: Vec<JobId>,
    /// False when there was nothing of the cluster to stop or forget.
    pub existed: bool,
}

/// Who picks the connected worker jobs to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The newest jobs (predictable: what `scale` does).
    Newest,
    /// The scheduler's cheapest workers: idle first, least data, never one
    /// running a long-running task (what the adaptive agent does).
    SchedulerChooses,
}

/// A backend job-state query in flight.
type StatusCheck<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<BTreeMap<JobId, JobStatus>>> + Send + 'a>,
>;

/// How long to wait between polls of the scheduler's worker list.
const POLL: Duration = Duration::from_millis(50);
/// How often to ask the backend for job states while waiting.
const STATUS_EVERY: Duration = Duration::from_millis(1000);

/// The generic cluster: any [`Backend`] plus the registry.
pub struct ManagedCluster {
    home: Home,
    backend: Arc<dyn Backend>,
    record: ClusterRecord,
    timeout: Duration,
}

impl std::fmt::Debug for ManagedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedCluster")
            .field("home", &self.home)
            .field("backend", &self.backend.kind())
            .field("record", &self.record)
            .finish()
    }
}

impl ManagedCluster {
    /// A handle for a new cluster; nothing is launched until [`Cluster::up`].
    /// The spec is validated here.
    pub fn new(spec: ClusterSpec, backend: Arc<dyn Backend>, home: Home) -> Result<Self> {
        spec.validate()?;
        Ok(ManagedCluster {
            home,
            backend,
            record: ClusterRecord::new(spec),
            timeout: Duration::from_secs(120),
        })
    }

    /// A handle for a cluster in the registry.
    pub fn open(name: &str, backend: Arc<dyn Backend>, home: Home) -> Result<Self> {
        let record = home
            .load(name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        Ok(ManagedCluster {
            home,
            backend,
            record,
            timeout: Duration::from_secs(120),
        })
    }

    /// Sets how long `up` and `scale` wait for workers (default 120 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The registry record as last read or written.
    pub fn record(&self) -> &ClusterRecord {
        &self.record
    }

    /// Takes the cluster's lock. The building blocks below
    /// ([`reload`](Self::reload), [`prune_ended`](Self::prune_ended),
    /// [`add_workers`](Self::add_workers), [`remove_workers`](Self::remove_workers))
    /// expect the caller to hold it, so a `scale`, a `down` and the adaptive
    /// agent never interleave their changes.
    pub fn lock(&self) -> Result<ClusterLock> {
        self.home.lock(&self.record.name)
    }

    /// Re-reads the record from the registry. False when it is gone (the
    /// cluster was brought down).
    pub fn reload(&mut self) -> Result<bool> {
        match self.home.load(&self.record.name)? {
            Some(r) => {
                self.record = r;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The record, for changes the caller then [`save`](Self::save)s.
    pub fn record_mut(&mut self) -> &mut ClusterRecord {
        &mut self.record
    }

    /// Writes the record to the registry.
    pub fn save(&self) -> Result<()> {
        self.home.save(&self.record)
    }

    /// The backend driving this cluster.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The scheduler's HTTP client.
    pub async fn scheduler_client(&self) -> Result<SchedulerClient> {
        self.client().await
    }

    /// Takes the cluster's lock, re-reads its record, and checks that it is
    /// Running: the start of every change to a live cluster.
    fn lock_running(&mut self) -> Result<ClusterLock> {
        let lock = self.lock()?;
        let name = self.record.name.clone();
        if !self.reload()? {
            return Err(Error::NotFound(name));
        }
        if self.record.phase != Phase::Running {
            return Err(Error::Usage(format!(
                "cluster {name:?} is {}, not Running",
                self.record.phase.word()
            )));
        }
        Ok(lock)
    }

    /// Turns adaptive scaling on with these settings, or off (`None`: the
    /// cluster keeps its current number of worker jobs). The whole spec is
    /// validated before anything is saved. Whoever runs the policy (the
    /// cluster's agent, see the `muster-adaptive` crate) picks the change up
    /// at its next round.
    pub fn set_adapt(&mut self, adapt: Option<AdaptSpec>) -> Result<()> {
        let _lock = self.lock_running()?;
        let mut spec = self.record.spec.clone();
        if adapt.is_none() {
            spec.workers = self.record.workers.len() as u32;
        }
        spec.adapt = adapt;
        spec.validate()?;
        self.record.spec = spec;
        self.home.save(&self.record)
    }

    /// Asks the backend for the states of the recorded worker jobs and forgets
    /// those that have ended on their own. Returns the states of the jobs kept
    /// and the jobs that ended (with how). Does not wait; saves the record
    /// when it changed. Call it holding the cluster's lock: it first adopts
    /// the jobs of a launch whose process died before recording them.
    pub async fn prune_ended(
        &mut self,
    ) -> Result<(BTreeMap<JobId, JobStatus>, Vec<(JobId, JobStatus)>)> {
        self.adopt_interrupted_launch().await?;
        let mut states = self
            .backend
            .status(&self.record.name, &self.record.workers)
            .await?;
        let mut ended = Vec::new();
        self.record.workers.retain(|id| {
            let s = states.get(id).cloned().unwrap_or(JobStatus::Unknown);
            if s.is_active() {
                true
            } else {
                ended.push((id.clone(), s));
                false
            }
        });
        for (id, _) in &ended {
            states.remove(id);
        }
        if !ended.is_empty() {
            self.home.save(&self.record)?;
        }
        Ok((states, ended))
    }

    /// After a launching process died between starting jobs and recording
    /// them (the record's `launching` mark is still set while this process
    /// holds the lock), records every live job of the cluster the manager
    /// knows and the record lacks, so none is left running unmanaged.
    async fn adopt_interrupted_launch(&mut self) -> Result<()> {
        if !self.record.launching {
            return Ok(());
        }
        let found = self.backend.discover(&self.record.name).await?;
        let adopted = unrecorded(&self.record, &found);
        if !adopted.is_empty() {
            tracing::warn!(
                cluster = %self.record.name,
                jobs = ?adopted,
                "adopted worker jobs started by an interrupted launch"
            );
        }
        self.record.workers.extend(adopted);
        self.record.launching = false;
        self.home.save(&self.record)
    }

    /// Launches `count` more worker jobs (as one batch: one array job where
    /// the manager has arrays) and records them. Does not wait for them to
    /// connect.
    pub async fn add_workers(&mut self, count: u32) -> Result<Vec<JobId>> {
        let contact = self
            .contact()
            .ok_or_else(|| Error::Usage("no scheduler address recorded".into()))?;
        self.launch_workers(count, contact).await
    }

    /// Removes `count` worker jobs safely: asks the scheduler to retire their
    /// Dask workers (it moves their data elsewhere and stops sending them
    /// tasks), and only then cancels the jobs. Jobs whose workers never
    /// connected go first (they hold nothing). Among connected jobs, `choice`
    /// says who picks: [`Removal::Newest`] (predictable, for `scale`) or
    /// [`Removal::SchedulerChooses`] (the scheduler's cheapest: idle, least
    /// data; for the adaptive agent). `states` are the jobs' states from
    /// [`prune_ended`](Self::prune_ended). Returns the jobs removed, which
    /// may be fewer than `count` when the scheduler declines some.
    pub async fn remove_workers(
        &mut self,
        count: usize,
        states: &BTreeMap<JobId, JobStatus>,
        choice: Removal,
    ) -> Result<Vec<JobId>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let connected = client.workers().await?;
        let processes = self.spec().worker.processes;
        let by_job = group_by_job(&connected, processes);
        let mut remove = choose_removals(&self.record.workers, states, &by_job, count);
        // With one Dask worker per job the scheduler can pick jobs itself;
        // with several it could split a job, so muster picks whole jobs.
        let retired = if choice == Removal::SchedulerChooses && processes == 1 {
            remove.retain(|id| !by_job.contains_key(id));
            let names = client.retire_cheapest(count - remove.len()).await?;
            let known: BTreeSet<&JobId> = self.record.workers.iter().collect();
            remove.extend(
                names
                    .iter()
                    .map(|n| JobId::from(n.as_str()))
                    .filter(|id| known.contains(id)),
            );
            names
        } else {
            let addresses: Vec<String> = remove
                .iter()
                .flat_map(|id| {
                    by_job
                        .get(id)
                        .into_iter()
                        .flatten()
                        .map(|w| w.address.clone())
                })
                .collect();
            client.retire_workers(&addresses).await?
        };
        tracing::debug!(
            ?remove,
            ?retired,
            "retired through the scheduler; cancelling"
        );
        self.backend.cancel(&self.record.name, &remove).await?;
        self.record.workers.retain(|id| !remove.contains(id));
        self.home.save(&self.record)?;
        Ok(remove)
    }

    /// Brings down whatever of the named cluster the backend finds, with or
    /// without a registry record.
    pub async fn down_by_name(
        name: &str,
        backend: Arc<dyn Backend>,
        home: Home,
    ) -> Result<DownReport> {
        let _lock = home.lock(name)?;
        let mut record = home.load(name)?;
        if let Some(r) = record.as_mut() {
            r.phase = Phase::Stopping;
            home.save(r)?;
        }
        let live = backend.discover(name).await?;
        let existed = record.is_some() || !live.is_empty();

        // Workers first, while the scheduler is there to see them leave cleanly.
        let scheduler = record.as_ref().and_then(|r| r.scheduler_job.clone());
        let mut ids: BTreeSet<JobId> = live.into_iter().map(|(id, _)| id).collect();
        if let Some(r) = &record {
            ids.extend(r.workers.iter().cloned());
            ids.extend(r.scheduler_job.iter().cloned());
        }
        let (sched_ids, worker_ids): (Vec<JobId>, Vec<JobId>) = ids
            .iter()
            .cloned()
            .partition(|id| Some(id) == scheduler.as_ref());
        backend.cancel(name, &worker_ids).await?;
        backend.cancel(name, &sched_ids).await?;

        // Check that the cancelled jobs are gone (with nothing to cancel,
        // and the lock held, there is nothing to check).
        if !ids.is_empty() {
            let left = backend.discover(name).await?;
            if !left.is_empty() {
                return Err(Error::LeftBehind {
                    cluster: name.to_string(),
                    jobs: left.into_iter().map(|(id, _)| id.0).collect(),
                });
            }
        }
        backend.forget(name).await?;
        home.remove(name)?;
        Ok(DownReport {
            name: name.to_string(),
            stopped: ids.into_iter().collect(),
            existed,
        })
    }

    fn spec(&self) -> &ClusterSpec {
        &self.record.spec
    }

    async fn client(&self) -> Result<SchedulerClient> {
        let url = self.record.http_url.as_deref().ok_or_else(|| {
            Error::Usage(format!(
                "cluster {:?} has no scheduler address yet (phase {})",
                self.record.name,
                self.record.phase.word()
            ))
        })?;
        Ok(SchedulerClient::new(&self.backend.http_url(url).await?))
    }

    /// The way new workers reach the scheduler: its file where the backend
    /// shares one (so workers may start before the scheduler is up), else
    /// its address.
    fn contact(&self) -> Option<SchedulerContact> {
        self.backend
            .scheduler_file(self.spec())
            .map(SchedulerContact::File)
            .or_else(|| {
                self.record
                    .scheduler_address
                    .clone()
                    .map(SchedulerContact::Address)
            })
    }

    async fn launch_workers(
        &mut self,
        count: u32,
        contact: SchedulerContact,
    ) -> Result<Vec<JobId>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let first_index = self.record.next_worker_index;
        // Reserve the indices before launching, so names are never reused even
        // if this process dies mid-launch; the mark tells the next process
        // holding the lock to look for jobs this one started but never
        // recorded.
        self.record.next_worker_index += u64::from(count);
        self.record.launching = true;
        self.home.save(&self.record)?;
        let req = LaunchRequest {
            spec: &self.record.spec,
            role: Role::Workers {
                first_index,
                count,
                contact,
            },
        };
        let ids = self.backend.launch(&req).await?;
        self.record.workers.extend(ids.iter().cloned());
        self.record.launching = false;
        self.home.save(&self.record)?;
        Ok(ids)
    }

    async fn failure(&self, what: String, id: &JobId, reason: String) -> Error {
        let log_tail = self
            .backend
            .logs(&self.record.name, id)
            .await
            .ok()
            .map(|text| tail_lines(&text, 15))
            .filter(|t| !t.is_empty());
        Error::JobFailed {
            what,
            reason,
            log_tail,
        }
    }

    async fn wait_for_endpoint(
        &mut self,
        scheduler: &JobId,
        deadline: Instant,
    ) -> Result<SchedulerEndpoint> {
        let mut last_status = Instant::now();
        loop {
            if let Some(ep) = self
                .backend
                .scheduler_endpoint(self.spec(), scheduler)
                .await?
            {
                return Ok(ep);
            }
            if last_status.elapsed() >= STATUS_EVERY / 4 {
                last_status = Instant::now();
                let st = self
                    .backend
                    .status(&self.record.name, std::slice::from_ref(scheduler))
                    .await?;
                match st.get(scheduler) {
                    Some(JobStatus::Pending | JobStatus::Running) => {}
                    Some(other) => {
                        let reason = match other {
                            JobStatus::Failed { reason } => reason.clone(),
                            s => format!("it is {s} before publishing its address"),
                        };
                        return Err(self
                            .failure(format!("scheduler job {scheduler}"), scheduler, reason)
                            .await);
                    }
                    None => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("the scheduler ({scheduler}) to publish its address"),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the scheduler reports exactly `wanted` Dask workers, failing
    /// early when a worker job of the cluster has ended.
    async fn wait_for_workers(
        &self,
        wanted: usize,
        deadline: Instant,
        progress: &dyn Progress,
    ) -> Result<()> {
        let client = self.client().await?;
        let mut last_status = Instant::now();
        let mut connected = 0;
        // The job-state check runs alongside the scheduler polls: on remote
        // backends one check can take longer than a worker takes to register.
        let mut check: Option<StatusCheck<'_>> = None;
        loop {
            match client.workers().await {
                Ok(ws) => {
                    connected = ws.len();
                    progress.workers(connected, wanted);
                    if connected == wanted {
                        return Ok(());
                    }
                }
                Err(e) if e.is_transient() => tracing::debug!("scheduler not answering yet: {e}"),
                Err(e) => return Err(e),
            }
            if check.is_none() && last_status.elapsed() >= self.backend.status_interval() {
                check = Some(self.backend.status(&self.record.name, &self.record.workers));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{wanted} workers to register ({connected} did)"),
                    after: self.timeout,
                });
            }
            let Some(pending) = check.as_mut() else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            tokio::select! {
                st = pending => {
                    check = None;
                    last_status = Instant::now();
                    if let Some((id, s)) = st?.iter().find(|(_, s)| !s.is_active()) {
                        let reason = match s {
                            JobStatus::Failed { reason } => reason.clone(),
                            other => format!("it is {other}"),
                        };
                        return Err(self.failure(format!("worker job {id}"), id, reason).await);
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn bring_up(&mut self, progress: &dyn Progress) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        progress.stage("starting scheduler");
        let req = LaunchRequest {
            spec: &self.record.spec,
            role: Role::Scheduler,
        };
        let scheduler = self
            .backend
            .launch(&req)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnexpectedOutput {
                program: self.backend.kind().into(),
                output: "no job id for the scheduler".into(),
            })?;
        self.record.scheduler_job = Some(scheduler.clone());
        self.home.save(&self.record)?;

        let wanted = self.spec().workers;
        let per_job = self.spec().worker.processes as usize;
        progress.workers(0, wanted as usize * per_job);
        let early = self.backend.scheduler_file(self.spec());
        if let Some(file) = &early {
            // Workers wait for the scheduler file themselves: start them now.
            progress.stage("starting workers");
            self.launch_workers(wanted, SchedulerContact::File(file.clone()))
                .await?;
        }
        progress.stage("waiting for the scheduler");
        let ep = self.wait_for_endpoint(&scheduler, deadline).await?;
        self.record.scheduler_address = Some(ep.address.clone());
        self.record.http_url = Some(ep.http_url.clone());
        self.home.save(&self.record)?;
        if early.is_none() {
            progress.stage("starting workers");
            self.launch_workers(wanted, SchedulerContact::Address(ep.address))
                .await?;
        }
        self.pass_notes(progress);
        progress.stage("waiting for workers");
        // A backend may launch fewer workers than asked (hosts unreachable);
        // it says so in its notes, and we wait for those it did launch.
        self.wait_for_workers(self.record.workers.len() * per_job, deadline, progress)
            .await
    }

    fn pass_notes(&self, progress: &dyn Progress) {
        for note in self.backend.take_notes() {
            tracing::info!("note from the backend: {note}");
            progress.warn(&note);
        }
    }

    async fn rollback(&mut self) {
        let name = self.record.name.clone();
        let mut ids = self.record.workers.clone();
        ids.extend(self.record.scheduler_job.iter().cloned());
        if let Ok(found) = self.backend.discover(&name).await {
            ids.extend(found.into_iter().map(|(id, _)| id));
        }
        ids.sort();
        ids.dedup();
        if let Err(e) = self.backend.cancel(&name, &ids).await {
            tracing::warn!("cleaning up after a failed up: {e}");
        }
        if let Err(e) = self.backend.forget(&name).await {
            tracing::warn!("cleaning up after a failed up: {e}");
        }
        if let Err(e) = self.home.remove(&name) {
            tracing::warn!("cleaning up after a failed up: {e}");
        }
        self.record.phase = Phase::Failed;
    }
}

#[async_trait]
impl Cluster for ManagedCluster {
    fn name(&self) -> &str {
        &self.record.name
    }

    async fn up(&mut self, progress: &dyn Progress) -> Result<()> {
        let name = self.record.name.clone();
        let _lock = self.home.lock(&name)?;
        if self.home.load(&name)?.is_some() || !self.backend.discover(&name).await?.is_empty() {
            return Err(Error::AlreadyExists(name));
        }
        progress.stage("checking the worker environment");
        self.backend.preflight(self.spec()).await?;
        self.record.phase = Phase::Starting;
        self.home.save(&self.record)?;
        match self.bring_up(progress).await {
            Ok(()) => {
                self.record.phase = Phase::Running;
                self.home.save(&self.record)
            }
            Err(e) => {
                progress.stage("cleaning up after the failure");
                self.rollback().await;
                Err(e)
            }
        }
    }

    async fn scale(&mut self, workers: u32, progress: &dyn Progress) -> Result<()> {
        if workers > MAX_WORKERS {
            return Err(Error::Usage(format!(
                "workers: {workers} is more than the limit of {MAX_WORKERS}"
            )));
        }
        let _lock = self.lock_running()?;
        let name = self.record.name.clone();
        if let Some(a) = &self.record.spec.adapt {
            return Err(Error::Usage(format!(
                "cluster {name:?} scales itself ({}..={} workers): \
                 turn that off first with `muster adapt {name} --off`",
                a.minimum, a.maximum
            )));
        }
        let deadline = Instant::now() + self.timeout;
        let (states, _ended) = self.prune_ended().await?;
        let current = self.record.workers.len() as u32;
        self.record.spec.workers = workers;
        if workers > current {
            progress.stage(&format!("starting {} workers", workers - current));
            self.add_workers(workers - current).await?;
        } else if workers < current {
            progress.stage(&format!("retiring {} workers", current - workers));
            self.remove_workers((current - workers) as usize, &states, Removal::Newest)
                .await?;
        }
        self.home.save(&self.record)?;
        self.pass_notes(progress);
        progress.stage("waiting for workers");
        let per_job = self.spec().worker.processes as usize;
        self.wait_for_workers(self.record.workers.len() * per_job, deadline, progress)
            .await
    }

    async fn status(&self) -> Result<ClusterStatus> {
        let record = self
            .home
            .load(&self.record.name)?
            .ok_or_else(|| Error::NotFound(self.record.name.clone()))?;
        let mut ids = record.workers.clone();
        ids.extend(record.scheduler_job.iter().cloned());
        let states = self.backend.status(&record.name, &ids).await?;
        let (reachable, connected) = match &record.http_url {
            Some(url) => match async {
                let url = self.backend.http_url(url).await?;
                SchedulerClient::new(&url).workers().await
            }
            .await
            {
                Ok(ws) => (true, ws),
                Err(e) => {
                    tracing::debug!("scheduler unreachable: {e}");
                    (false, Vec::new())
                }
            },
            None => (false, Vec::new()),
        };
        let processes = record.spec.worker.processes;
        let by_job = group_by_job(&connected, processes);
        let workers = record
            .workers
            .iter()
            .map(|id| {
                let ws = by_job.get(id).cloned().unwrap_or_default();
                WorkerRow {
                    name: id.0.clone(),
                    status: states.get(id).cloned().unwrap_or(JobStatus::Unknown),
                    connected: ws.len(),
                    addresses: ws.into_iter().map(|w| w.address).collect(),
                }
            })
            .collect();
        let known: BTreeSet<&JobId> = record.workers.iter().collect();
        let unknown_workers = connected
            .iter()
            .filter(|w| !known.contains(&JobId::from(job_of_worker(&w.name, processes))))
            .cloned()
            .collect();
        Ok(ClusterStatus {
            name: record.name.clone(),
            backend: record.backend().to_string(),
            phase: record.phase,
            age_seconds: record.age().as_secs(),
            scheduler: record.scheduler_job.clone().map(|id| {
                let s = states.get(&id).cloned().unwrap_or(JobStatus::Unknown);
                (id, s)
            }),
            scheduler_address: record.scheduler_address.clone(),
            dashboard_url: record.dashboard_link(),
            scheduler_reachable: reachable,
            desired_workers: record.spec.workers,
            processes_per_worker: processes,
            connected_workers: connected.len(),
            workers,
            unknown_workers,
        })
    }

    fn scheduler_address(&self) -> Option<&str> {
        self.record.scheduler_address.as_deref()
    }

    fn dashboard_link(&self) -> Option<String> {
        self.record.dashboard_link()
    }

    async fn logs(&self, job: Option<&JobId>) -> Result<String> {
        let id = match job {
            Some(id) => id.clone(),
            None => self
                .record
                .scheduler_job
                .clone()
                .ok_or_else(|| Error::Usage("the cluster has no scheduler job".into()))?,
        };
        self.backend.logs(&self.record.name, &id).await
    }

    async fn down(&mut self) -> Result<DownReport> {
        let report =
            Self::down_by_name(&self.record.name, self.backend.clone(), self.home.clone()).await?;
        self.record.phase = Phase::Stopping;
        self.record.workers.clear();
        Ok(report)
    }
}

/// Groups the scheduler's workers by the job they belong to.
pub fn group_by_job(workers: &[WorkerInfo], processes: u32) -> BTreeMap<JobId, Vec<WorkerInfo>> {
    let mut out: BTreeMap<JobId, Vec<WorkerInfo>> = BTreeMap::new();
    for w in workers {
        out.entry(JobId::from(job_of_worker(&w.name, processes)))
            .or_default()
            .push(w.clone());
    }
    out
}

/// The live jobs a discovery found that the record has neither as a worker
/// nor as the scheduler.
fn unrecorded(record: &ClusterRecord, found: &[(JobId, JobStatus)]) -> Vec<JobId> {
    found
        .iter()
        .filter(|(id, s)| {
            s.is_active()
                && record.scheduler_job.as_ref() != Some(id)
                && !record.workers.contains(id)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Chooses `k` worker jobs to remove: jobs whose workers never connected go
/// first (pending before running: they hold no data), then connected jobs,
/// newest first. `jobs` is in launch order.
pub fn choose_removals(
    jobs: &[JobId],
    states: &BTreeMap<JobId, JobStatus>,
    connected: &BTreeMap<JobId, Vec<WorkerInfo>>,
    k: usize,
) -> Vec<JobId> {
    let rank = |id: &JobId| -> u8 {
        match (connected.contains_key(id), states.get(id)) {
            (false, Some(JobStatus::Pending)) => 0,
            (false, _) => 1,
            (true, _) => 2,
        }
    };
    let mut order: Vec<(u8, usize, &JobId)> = jobs
        .iter()
        .enumerate()
        .map(|(i, id)| (rank(id), usize::MAX - i, id))
        .collect();
    order.sort();
    order
        .into_iter()
        .take(k)
        .map(|(_, _, id)| id.clone())
        .collect()
}

/// The last `n` lines of a text.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<JobId> {
        names.iter().map(|n| JobId::from(*n)).collect()
    }

    fn worker(name: &str) -> WorkerInfo {
        WorkerInfo {
            name: name.into(),
            address: format!("tcp://h:{}", name.len()),
        }
    }

    #[test]
    fn removal_prefers_unconnected_then_newest() {
        let jobs = ids(&["w0", "w1", "w2", "w3", "w4"]);
        let states: BTreeMap<_, _> = [
            ("w0", JobStatus::Running),
            ("w1", JobStatus::Running),
            ("w2", JobStatus::Pending),
            ("w3", JobStatus::Running),
            ("w4", JobStatus::Running),
        ]
        .into_iter()
        .map(|(k, v)| (JobId::from(k), v))
        .collect();
        let connected = group_by_job(&[worker("w0"), worker("w1"), worker("w4")], 1);
        assert_eq!(choose_removals(&jobs, &states, &connected, 1), ids(&["w2"]));
        assert_eq!(
            choose_removals(&jobs, &states, &connected, 2),
            ids(&["w2", "w3"])
        );
        assert_eq!(
            choose_removals(&jobs, &states, &connected, 4),
            ids(&["w2", "w3", "w4", "w1"])
        );
        assert_eq!(choose_removals(&jobs, &states, &connected, 9).len(), 5);
        assert!(choose_removals(&jobs, &states, &connected, 0).is_empty());
    }

    #[test]
    fn multi_process_workers_group_under_their_job() {
        let g = group_by_job(&[worker("c-w0-0"), worker("c-w0-1"), worker("c-w1-0")], 2);
        assert_eq!(g.len(), 2);
        assert_eq!(g[&JobId::from("c-w0")].len(), 2);
    }

    #[test]
    fn only_live_unrecorded_jobs_are_adopted() {
        let spec = ClusterSpec::from_yaml("name: c", None).unwrap();
        let mut record = ClusterRecord::new(spec);
        record.scheduler_job = Some(JobId::from("c-scheduler"));
        record.workers = ids(&["c-w0"]);
        let found: Vec<(JobId, JobStatus)> = [
            ("c-scheduler", JobStatus::Running),
            ("c-w0", JobStatus::Running),
            ("c-w1", JobStatus::Running),
            ("c-w2", JobStatus::Pending),
            ("c-w3", JobStatus::Finished),
        ]
        .into_iter()
        .map(|(k, v)| (JobId::from(k), v))
        .collect();
        assert_eq!(unrecorded(&record, &found), ids(&["c-w1", "c-w2"]));
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }
}
