//! `ManagedCluster`: the one generic [`Cluster`] over any [`Backend`], with
//! its state in a [`FileStore`]. `up` launches and waits; `scale` sets the
//! desired size and runs the reconciler's rounds until it holds; `adapt`
//! changes the adaptive settings; `down` stops the supervising agent, then
//! everything the manager finds. What the agent does between commands is
//! the same [`round`](crate::reconcile::round). Orchestration lives here,
//! not in the CLI, so a Rust program gets the same agent, timeline and
//! clean `down`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

use crate::backend::{Backend, Role, Supervisor};
use crate::cluster::{Cluster, ClusterStatus, DownReport, Progress, WorkerRow, group_by_job};
use crate::dask::job_of_worker;
use crate::error::{Error, Result};
use crate::job::{JobId, JobStatus};
use crate::ops;
use crate::reconcile::{AgentControl, Clock, ClusterStore, RoundContext, SystemClock, Timeline};
use crate::registry::{ClusterRecord, FileStore, Home, Phase};
use crate::spec::{AdaptSpec, ClusterSpec, MAX_WORKERS};

mod waiting;

/// How long to wait between polls of the scheduler's worker list.
const POLL: Duration = Duration::from_millis(50);

/// A timeline that only logs (for clusters built without one).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogTimeline;

#[async_trait]
impl Timeline for LogTimeline {
    async fn record(&self, kind: &str, message: &str) -> Result<()> {
        tracing::info!(kind, "{message}");
        Ok(())
    }
}

/// The generic cluster: any [`Backend`] plus the file registry.
pub struct ManagedCluster {
    home: Home,
    store: FileStore,
    backend: Arc<dyn Backend>,
    record: ClusterRecord,
    timeout: Duration,
    timeline: Arc<dyn Timeline>,
    agent: Option<Arc<dyn AgentControl>>,
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
    /// The spec's backend-independent fields are validated here (the
    /// backend's own options were, when it was built).
    pub fn new(spec: ClusterSpec, backend: Arc<dyn Backend>, home: Home) -> Result<Self> {
        spec.validate()?;
        Ok(Self::with_record(ClusterRecord::new(spec), backend, home))
    }

    /// A handle for a cluster in the registry.
    pub fn open(name: &str, backend: Arc<dyn Backend>, home: Home) -> Result<Self> {
        let record = home
            .load(name)?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        Ok(Self::with_record(record, backend, home))
    }

    fn with_record(record: ClusterRecord, backend: Arc<dyn Backend>, home: Home) -> Self {
        ManagedCluster {
            store: FileStore::new(home.clone(), &record.name),
            home,
            backend,
            record,
            timeout: Duration::from_secs(120),
            timeline: Arc::new(LogTimeline),
            agent: None,
        }
    }

    /// Sets how long `up` and `scale` wait for workers (default 120 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where events go (default: the log only).
    pub fn with_timeline(mut self, timeline: Arc<dyn Timeline>) -> Self {
        self.timeline = timeline;
        self
    }

    /// Who starts and stops the cluster's agent, for backends supervised by
    /// one (default: nobody; nothing keeps the cluster between commands).
    pub fn with_agent(mut self, agent: Arc<dyn AgentControl>) -> Self {
        self.agent = Some(agent);
        self
    }

    /// The registry record as last read or written.
    pub fn record(&self) -> &ClusterRecord {
        &self.record
    }

    /// The backend driving this cluster.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The cluster's store.
    pub fn store(&self) -> &FileStore {
        &self.store
    }

    /// The cluster's timeline.
    pub fn timeline(&self) -> &Arc<dyn Timeline> {
        &self.timeline
    }

    fn spec(&self) -> &ClusterSpec {
        &self.record.spec
    }

    /// Starts the agent unless it runs, when this backend is supervised by
    /// one and the cluster runs. The new pid, when one was started. Failing
    /// to start it is reported, not fatal.
    pub fn ensure_agent(&self) -> Option<u32> {
        let agent = self.agent.as_ref()?;
        if self.backend.capabilities().supervisor != Supervisor::Agent
            || self.record.phase != Phase::Running
        {
            return None;
        }
        match agent.ensure(&self.record.name) {
            Ok(pid) => pid,
            Err(e) => {
                tracing::warn!(
                    "cannot start the agent of cluster {:?}: {e}",
                    self.record.name
                );
                None
            }
        }
    }

    /// Re-reads the record under the lock and checks that it is Running:
    /// the start of every change to a live cluster.
    async fn load_running(&mut self) -> Result<()> {
        let name = self.record.name.clone();
        self.record = self
            .store
            .load()
            .await?
            .ok_or_else(|| Error::NotFound(name.clone()))?;
        if self.record.phase != Phase::Running {
            return Err(Error::Usage(format!(
                "cluster {name:?} is {}, not Running",
                self.record.phase.word()
            )));
        }
        Ok(())
    }

    fn context(&self) -> (FileStore, Arc<dyn Timeline>, SystemClock) {
        (self.store.clone(), self.timeline.clone(), SystemClock)
    }

    /// Brings down whatever of the named cluster the backend finds, with or
    /// without a registry record, stopping its agent first (so it cannot
    /// relaunch workers) and again after (one restarted meanwhile by a
    /// concurrent command finds the record gone).
    pub async fn down_named(
        name: &str,
        backend: &dyn Backend,
        home: &Home,
        agent: Option<&dyn AgentControl>,
    ) -> Result<DownReport> {
        if let Some(a) = agent {
            a.stop(name)?;
        }
        let store = FileStore::new(home.clone(), name);
        let report = {
            let _guard = store.lock().await?;
            ops::bring_down(backend, &store).await?
        };
        if let Some(a) = agent {
            a.stop(name)?;
        }
        Ok(report)
    }

    async fn bring_up(&mut self, progress: &dyn Progress) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        progress.stage("starting scheduler");
        let launched = self.backend.launch(&Role::Scheduler).await?;
        let scheduler = launched
            .jobs
            .first()
            .cloned()
            .ok_or_else(|| Error::UnexpectedOutput {
                program: self.backend.kind().into(),
                output: "no job id for the scheduler".into(),
            })?;
        warn_all(progress, &launched.warnings);
        self.record.scheduler_job = Some(scheduler.clone());
        self.record.contact = launched.contact.clone();
        self.store.save(&self.record).await?;

        let wanted = self.spec().workers;
        let per_job = self.spec().worker.processes as usize;
        progress.workers(0, wanted as usize * per_job);
        let early = self.record.contact.is_some();
        if early {
            // Workers find the scheduler themselves: start them now.
            progress.stage("starting workers");
            let l =
                ops::launch_workers(self.backend.as_ref(), &self.store, &mut self.record, wanted)
                    .await?;
            warn_all(progress, &l.warnings);
        }
        progress.stage("waiting for the scheduler");
        let ep = self.wait_for_endpoint(&scheduler, deadline).await?;
        self.record.scheduler_address = Some(ep.address.clone());
        self.record.http_url = Some(ep.http_url.clone());
        self.store.save(&self.record).await?;
        if !early {
            progress.stage("starting workers");
            let l =
                ops::launch_workers(self.backend.as_ref(), &self.store, &mut self.record, wanted)
                    .await?;
            warn_all(progress, &l.warnings);
        }
        progress.stage("waiting for workers");
        // A backend may launch fewer workers than asked (hosts unreachable);
        // it says so in its warnings, and we wait for those it did launch.
        self.wait_for_workers(self.record.workers.len() * per_job, deadline, progress)
            .await
    }

    async fn rollback(&mut self) {
        let mut ids = self.record.workers.clone();
        ids.extend(self.record.scheduler_job.iter().cloned());
        if let Ok(found) = self.backend.discover().await {
            ids.extend(found.jobs.into_iter().map(|(id, _)| id));
        }
        ids.sort();
        ids.dedup();
        if let Err(e) = self.backend.cancel(&ids).await {
            tracing::warn!("cleaning up after a failed up: {e}");
        }
        if let Err(e) = self.backend.forget().await {
            tracing::warn!("cleaning up after a failed up: {e}");
        }
        if let Err(e) = self.store.remove().await {
            tracing::warn!("cleaning up after a failed up: {e}");
        }
        self.record.phase = Phase::Failed;
    }

    /// Runs rounds, holding the lock, until the recorded jobs match the
    /// desired size; a launch that fails fails the whole call.
    async fn reconcile_to(
        &mut self,
        wanted: u32,
        deadline: Instant,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (store, timeline, clock) = self.context();
        let ctx = RoundContext {
            backend: self.backend.as_ref(),
            store: &store,
            timeline: timeline.as_ref(),
            clock: &clock,
        };
        loop {
            let outcome = crate::rounds::run_held(&ctx).await?;
            if let Some(e) = outcome.failure {
                return Err(e);
            }
            if let Some(d) = &outcome.decision
                && d.action != crate::policy::Action::Hold
            {
                progress.stage(&d.reason);
            }
            if outcome.finished {
                return Err(Error::NotFound(self.record.name.clone()));
            }
            if outcome.jobs == wanted {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{wanted} worker jobs ({} now)", outcome.jobs),
                    after: self.timeout,
                });
            }
            clock
                .sleep(outcome.next_poll.min(Duration::from_millis(200)))
                .await;
        }
        self.record = store
            .load()
            .await?
            .ok_or_else(|| Error::NotFound(self.record.name.clone()))?;
        Ok(())
    }
}

fn warn_all(progress: &dyn Progress, warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
        progress.warn(w);
    }
}

#[async_trait]
impl Cluster for ManagedCluster {
    fn name(&self) -> &str {
        &self.record.name
    }

    async fn up(&mut self, progress: &dyn Progress) -> Result<()> {
        let span = tracing::info_span!("up", cluster = %self.record.name);
        self.up_inner(progress).instrument(span).await
    }

    async fn scale(&mut self, workers: u32, progress: &dyn Progress) -> Result<()> {
        let span = tracing::info_span!("scale", cluster = %self.record.name, workers);
        self.scale_inner(workers, progress).instrument(span).await
    }

    async fn adapt(&mut self, adapt: Option<AdaptSpec>) -> Result<()> {
        {
            let _guard = self.store.lock().await?;
            self.load_running().await?;
            let mut spec = self.record.spec.clone();
            if adapt.is_none() {
                spec.workers = self.record.workers.len() as u32;
            }
            spec.adapt = adapt;
            spec.validate()?;
            self.record.spec = spec;
            self.record.adapt_generation += 1;
            self.store.save(&self.record).await?;
        }
        let message = match &self.record.spec.adapt {
            Some(a) => format!(
                "adaptive scaling on: {} to {} worker jobs",
                a.minimum, a.maximum
            ),
            None => format!(
                "adaptive scaling off: holding at {} worker jobs",
                self.record.spec.workers
            ),
        };
        self.timeline.record("adapt", &message).await?;
        self.ensure_agent();
        Ok(())
    }

    async fn status(&self) -> Result<ClusterStatus> {
        let record = self
            .home
            .load(&self.record.name)?
            .ok_or_else(|| Error::NotFound(self.record.name.clone()))?;
        crate::waits::status_of(self.backend.as_ref(), &record).await
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
        self.backend.logs(&id).await
    }

    async fn down(&mut self) -> Result<DownReport> {
        let report = Self::down_named(
            &self.record.name,
            self.backend.as_ref(),
            &self.home,
            self.agent.as_deref(),
        )
        .await?;
        self.record.phase = Phase::Stopping;
        self.record.workers.clear();
        Ok(report)
    }
}

impl ManagedCluster {
    async fn up_inner(&mut self, progress: &dyn Progress) -> Result<()> {
        let name = self.record.name.clone();
        {
            let _guard = self.store.lock().await?;
            if self.store.load().await?.is_some() || !self.backend.discover().await?.jobs.is_empty()
            {
                return Err(Error::AlreadyExists(name));
            }
            progress.stage("checking the worker environment");
            let warnings = self.backend.preflight().await?;
            warn_all(progress, &warnings);
            self.record.phase = Phase::Starting;
            self.home.create(&self.record)?;
            match self.bring_up(progress).await {
                Ok(()) => {
                    self.record.phase = Phase::Running;
                    self.store.save(&self.record).await?;
                }
                Err(e) => {
                    progress.stage("cleaning up after the failure");
                    self.rollback().await;
                    return Err(e);
                }
            }
        }
        if let Some(a) = &self.record.spec.adapt {
            let msg = format!(
                "adaptive scaling on: {} to {} worker jobs",
                a.minimum, a.maximum
            );
            self.timeline.record("adapt", &msg).await?;
        }
        self.ensure_agent();
        Ok(())
    }

    async fn scale_inner(&mut self, workers: u32, progress: &dyn Progress) -> Result<()> {
        if workers > MAX_WORKERS {
            return Err(Error::Usage(format!(
                "workers: {workers} is more than the limit of {MAX_WORKERS}"
            )));
        }
        let deadline = Instant::now() + self.timeout;
        {
            let _guard = self.store.lock().await?;
            self.load_running().await?;
            let name = self.record.name.clone();
            if let Some(a) = &self.record.spec.adapt {
                return Err(Error::Usage(format!(
                    "cluster {name:?} scales itself ({}..={} workers): \
                     turn that off first with `muster adapt {name} --off`",
                    a.minimum, a.maximum
                )));
            }
            self.record.spec.workers = workers;
            // A new size is new settings: the policy starts afresh.
            self.record.adapt_generation += 1;
            self.store.save(&self.record).await?;
            self.reconcile_to(workers, deadline, progress).await?;
        }
        self.ensure_agent();
        progress.stage("waiting for workers");
        let per_job = self.spec().worker.processes as usize;
        self.wait_for_workers(self.record.workers.len() * per_job, deadline, progress)
            .await
    }
}

/// The workers of a status, grouped by job.
pub(crate) fn rows(
    record: &ClusterRecord,
    states: &std::collections::BTreeMap<JobId, JobStatus>,
    connected: &[crate::dask::WorkerInfo],
) -> (Vec<WorkerRow>, Vec<crate::dask::WorkerInfo>) {
    let processes = record.spec.worker.processes;
    let by_job = group_by_job(connected, processes);
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
    let known: std::collections::BTreeSet<&JobId> = record.workers.iter().collect();
    let unknown = connected
        .iter()
        .filter(|w| !known.contains(&JobId::from(job_of_worker(&w.name, processes))))
        .cloned()
        .collect();
    (workers, unknown)
}
