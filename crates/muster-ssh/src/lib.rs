//! muster-ssh: muster over SSH. Two things live here:
//!
//! - [`SshRunner`], muster-core's `CommandRunner` on a remote host (ssh2,
//!   host keys checked against known_hosts, key and agent authentication,
//!   `~/.ssh/config` honoured, pooled sessions with a bound on parallel
//!   connections, a timeout on every connect and command). Any backend that
//!   shells out can run its commands through a login node with it, and
//!   reach addresses only the login node can reach through its [`tunnel`]s.
//! - [`SshBackend`], the `ssh` backend: the Dask scheduler on one host and
//!   workers spread over the others, started detached (own session, all
//!   streams redirected) by a small Python helper that the host's own Python
//!   runs (one per host for the whole muster process, fed a request per
//!   line), so processes outlive the connection and are found again through
//!   `/proc` markers that include the host (hosts may share a pid space).
//!
//! It knows nothing of other backends; the Dask command lines come from
//! muster-core.

pub mod config;
pub mod placement;
pub mod runner;
pub mod session;
pub mod ssh_spec;
pub mod tunnel;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use muster_core::access::{Direct, SchedulerAccess};
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, Warnings,
};
use muster_core::dask::{self, ProcessCommand, SchedulerEndpoint};
use muster_core::spec::SpecError;
use muster_core::tls::Party;
use muster_core::{ClusterSpec, Error, JobId, JobStatus, Result, SchedulerContact};
use serde_json::{Value, json};
pub use ssh_spec::{SshConnectSpec, SshHost, SshHostMap, SshSpec};

pub use config::{HostPlan, Layout, SshOptions};
pub use runner::SshRunner;
pub use session::{SshError, SshPool, SshTarget};

use placement::{Slot, host_of, place, scheduler_id, worker_id};

/// The helper program run by each host's Python (see `helper.py`).
const HELPER: &str = include_str!("helper.py");
/// The program `python -c` runs to start the helper as a server: it reads the
/// helper's source, one JSON string, from the first line of stdin.
const SERVE: &str = "import sys,json;exec(json.loads(sys.stdin.buffer.readline().decode()))";
/// The marker the helper prints before its JSON answer, so shell noise from
/// login scripts on stdout cannot confuse the parser.
const ANSWER: &str = "MUSTER-HELPER ";
/// The scheduler file, in each host's cluster directory.
const SCHEDULER_FILE: &str = "scheduler.json";
/// The credentials' directory, relative to a host's cluster directory where
/// the jobs run (the helper creates it 0700, its files 0600).
const TLS_DIR: &str = muster_core::tls::DIR_NAME;

/// The environment variable that sets how a nanny starts its worker process
/// (Dask's `distributed.worker.multiprocessing-method`).
pub const START_METHOD_ENV: &str = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD";

/// A job of several nannies (`worker.processes` > 1) starts its worker
/// processes with Dask's `forkserver` method unless `worker.env` chooses one:
/// one server process imports `distributed` once (Dask preloads it) and
/// forks each worker process, instead of Dask's default `spawn`, where each
/// one is a fresh interpreter importing it again. The workers are the same
/// full Dask workers, restarted by their nannies. A job of one process gains
/// nothing from it (the server costs what the one spawned process would), so
/// it keeps Dask's default.
fn default_start_method(spec: &ClusterSpec, cmd: &mut ProcessCommand) {
    if spec.worker.nanny && spec.worker.processes > 1 {
        cmd.env
            .entry(START_METHOD_ENV.to_string())
            .or_insert_with(|| "forkserver".to_string());
    }
}

/// The `ssh` kind: its options are [`SshSpec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SshKind;

impl muster_core::kinds::BackendKind for SshKind {
    fn kind(&self) -> &'static str {
        "ssh"
    }
    fn validate(&self, spec: &ClusterSpec) -> Vec<muster_core::spec::FieldError> {
        let mut errs = Vec::new();
        match muster_core::kinds::parse_options::<SshSpec>("backend", &spec.backend.options) {
            Ok(ssh) => ssh.validate(&mut errs),
            Err(e) => errs.push(e),
        }
        errs.extend(muster_core::kinds::placement_needs_batch(spec));
        errs
    }
    fn build(
        &self,
        spec: &ClusterSpec,
        home: &muster_core::Home,
    ) -> Result<std::sync::Arc<dyn Backend>> {
        Ok(std::sync::Arc::new(
            SshBackend::new(spec)?.with_home(home.clone()),
        ))
    }
}

/// A request to launch part of the cluster (what to launch, for the spec).
struct LaunchRequest<'a> {
    spec: &'a ClusterSpec,
    role: Role,
}

/// The SSH backend of one cluster.
pub struct SshBackend {
    ssh: SshSpec,
    spec: ClusterSpec,
    pool: SshPool,
    layout: OnceLock<std::result::Result<Layout, SpecError>>,
    /// The worker python of the spec, once seen (status and down get no spec).
    python: Mutex<Option<String>>,
    /// Hosts found unreachable in this process, with the reason.
    down: Mutex<BTreeMap<String, String>>,
    /// Live jobs per host as last seen in this process.
    seen: Mutex<BTreeMap<String, BTreeSet<JobId>>>,
    /// Hosts whose python was found able to run Dask in this process.
    probed: Mutex<BTreeSet<String>>,
    /// A port each host's last probe found free (for the scheduler).
    free_ports: Mutex<BTreeMap<String, u16>>,
    endpoint: Mutex<Option<SchedulerEndpoint>>,
    /// The scheduler file's text, once read.
    scheduler_text: Mutex<Option<String>>,
    /// The scheduler's launch, still waiting on its host for the scheduler
    /// file while the workers start.
    pending: Mutex<Option<PendingScheduler>>,
    notes: Mutex<Vec<String>>,
    /// Where the cluster's TLS credentials were made (this machine's state
    /// directory); each launch sends a host the files its jobs need.
    home: Option<muster_core::Home>,
}

/// A scheduler launch in flight.
struct PendingScheduler {
    id: JobId,
    label: String,
    handle: tokio::task::JoinHandle<HostAnswer>,
    /// The address it will listen on, when muster chose its port: workers
    /// launched meanwhile get it directly instead of waiting for the file.
    address: Option<String>,
}

impl std::fmt::Debug for SshBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshBackend")
            .field("ssh", &self.ssh)
            .finish()
    }
}

/// One host's answer to a helper call, or why there is none.
type HostAnswer = std::result::Result<Value, Error>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// True for errors that mean "the host is not there" rather than "the host
/// is there and refused or misbehaved".
fn is_unreachable(e: &Error) -> bool {
    matches!(
        e,
        Error::Host {
            transient: true,
            ..
        } | Error::Timeout { .. }
    )
}

impl SshBackend {
    /// The backend of the `ssh` cluster `spec`. Nothing connects until it
    /// is used.
    pub fn new(spec: &ClusterSpec) -> Result<Self> {
        let ssh: SshSpec = muster_core::kinds::parse_options("backend", &spec.backend.options)
            .map_err(|e| SpecError::Invalid(vec![e]))?;
        let pool = SshPool::new(ssh.parallelism as usize);
        Ok(SshBackend {
            ssh,
            spec: spec.clone(),
            pool,
            layout: OnceLock::new(),
            python: Mutex::new(Some(spec.worker.python.clone())),
            down: Mutex::default(),
            seen: Mutex::default(),
            probed: Mutex::default(),
            free_ports: Mutex::default(),
            endpoint: Mutex::new(None),
            scheduler_text: Mutex::new(None),
            pending: Mutex::new(None),
            notes: Mutex::default(),
            home: None,
        })
    }

    /// Takes the cluster's TLS credentials from `home` (where `up` made
    /// them) to the hosts at launch.
    pub fn with_home(mut self, home: muster_core::Home) -> Self {
        self.home = Some(home);
        self
    }

    /// The credential files (name → PEM text) the jobs of `role` need on a
    /// host: the CA and the party's certificate and key. Empty for
    /// `security: none`. They travel inside the helper's request, over the
    /// SSH session's stdin, and the helper writes them owner-only.
    fn tls_files(&self, party: Party) -> Result<BTreeMap<String, String>> {
        let (true, Some(home)) = (self.spec.scheduler.security.is_tls(), &self.home) else {
            return Ok(BTreeMap::new());
        };
        let creds = muster_core::tls::load(home, &self.spec.name)?;
        Ok(creds
            .files_for(&[party])
            .into_iter()
            .map(|(name, text)| (name, text.to_string()))
            .collect())
    }

    /// The problems worked around since the last call, for its result.
    fn take_notes(&self) -> Warnings {
        std::mem::take(&mut *lock(&self.notes))
    }

    /// The resolved hosts (hostfile and ssh config read once).
    pub fn layout(&self, spec: Option<&ClusterSpec>) -> Result<&Layout> {
        if let Some(s) = spec {
            *lock(&self.python) = Some(s.worker.python.clone());
        }
        let layout = self.layout.get_or_init(|| {
            config::layout(&self.ssh).map_err(|e| match e {
                Error::Spec(s) => s,
                other => SpecError::Invalid(vec![muster_core::spec::FieldError {
                    field: "backend".into(),
                    value: "ssh".into(),
                    reason: other.to_string(),
                }]),
            })
        });
        layout.as_ref().map_err(|e| Error::Spec(e.clone()))
    }

    fn note(&self, message: String) {
        tracing::warn!("{message}");
        lock(&self.notes).push(message);
    }

    fn timeout(&self) -> Duration {
        self.ssh.command_timeout.duration()
    }

    /// Runs the helper on a host (see [`call_helper`]).
    async fn call(
        &self,
        host: &HostPlan,
        python: Option<&str>,
        cluster: &str,
        request: Value,
        timeout: Duration,
    ) -> HostAnswer {
        call_helper(
            self.pool.clone(),
            host.clone(),
            python.map(str::to_string),
            self.ssh.state_dir.clone(),
            cluster.to_string(),
            request,
            timeout,
        )
        .await
    }

    /// Calls the helper on several hosts at once (bounded by the pool), each
    /// with its worker python.
    async fn call_many(
        &self,
        hosts: &[&HostPlan],
        cluster: &str,
        request: impl Fn(&HostPlan) -> Value,
    ) -> Vec<HostAnswer> {
        let timeout = self.timeout();
        join_all(hosts.iter().map(|h| {
            let py = self.worker_python(h);
            let req = request(h);
            async move { self.call(h, py.as_deref(), cluster, req, timeout).await }
        }))
        .await
    }

    fn worker_python(&self, host: &HostPlan) -> Option<String> {
        host.explicit_python
            .clone()
            .or_else(|| lock(&self.python).clone())
    }

    fn remember_free_port(&self, label: &str, probe: &Value) {
        if let Some(port) = probe["free_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
        {
            lock(&self.free_ports).insert(label.to_string(), port);
        }
    }

    /// The scheduler's address, known before it starts when its port is
    /// fixed (the spec's, or one its host's probe found free) and it
    /// listens on a concrete address: `(spec with that port, address)`.
    fn planned_scheduler(&self, spec: &ClusterSpec, layout: &Layout) -> Option<(u16, String)> {
        let h = &layout.hosts[layout.scheduler];
        let port = match spec.scheduler.port {
            0 => *lock(&self.free_ports).get(&h.label)?,
            p => p,
        };
        let host = match spec.scheduler.host.as_deref() {
            None => h.target.hostname.as_str(),
            Some("0.0.0.0" | "::" | "" | "*") => return None,
            Some(other) => other,
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Some((port, format!("{}://{host}:{port}", dask::comm_scheme(spec))))
    }

    fn remember_seen(&self, label: &str, jobs: &Value) {
        let ids: BTreeSet<JobId> = jobs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j.as_str().map(JobId::from))
            .collect();
        lock(&self.seen).insert(label.to_string(), ids);
        lock(&self.down).remove(label);
    }

    /// The exact command a job runs and the directory it runs in, as a shell
    /// line for `render` (the helper starts it the same way, without a shell).
    fn job_line(&self, cluster: &str, host: &HostPlan, id: &JobId, cmd: &ProcessCommand) -> String {
        let dir = format!("{}/ssh/{cluster}/{}", self.ssh.state_dir, host.label);
        let mut marked = cmd.clone();
        marked
            .env
            .insert("MUSTER_HOME".into(), self.ssh.state_dir.clone());
        marked.env.insert("MUSTER_CLUSTER".into(), cluster.into());
        marked.env.insert("MUSTER_JOB".into(), id.0.clone());
        marked.env.insert("MUSTER_HOST".into(), host.label.clone());
        format!(
            "cd {} && {} </dev/null >logs/{id}.log 2>&1 &  # in a new session (setsid)",
            runner::quote(&dir),
            marked.to_shell()
        )
    }

    /// The jobs a request launches: (host index, id, command). Workers are
    /// placed on hosts with room given what runs where (`slots`).
    fn plan(
        &self,
        req: &LaunchRequest<'_>,
        layout: &Layout,
        slots: &[Slot],
    ) -> (Vec<(usize, JobId, ProcessCommand)>, u32) {
        let spec = req.spec;
        match &req.role {
            Role::Scheduler => {
                let h = &layout.hosts[layout.scheduler];
                let listen = spec
                    .scheduler
                    .host
                    .clone()
                    .unwrap_or_else(|| h.target.hostname.clone());
                let mut with_port = spec.clone();
                if let Some((port, _)) = self.planned_scheduler(spec, layout) {
                    with_port.scheduler.port = port;
                }
                let mut cmd =
                    dask::scheduler_command(&with_port, &listen, Path::new(SCHEDULER_FILE));
                // Jobs run in the host's cluster directory; the helper
                // writes the credentials into its `tls` subdirectory.
                dask::secure(&mut cmd, spec, Party::Scheduler, TLS_DIR);
                if spec.scheduler.python.is_none()
                    && let Some(py) = &h.explicit_python
                {
                    cmd.argv[0] = py.clone();
                }
                (
                    vec![(layout.scheduler, scheduler_id(&spec.name, &h.label), cmd)],
                    0,
                )
            }
            Role::Workers {
                first_index,
                count,
                contact,
            } => {
                let (choice, unplaced) = place(*count, slots);
                let jobs = choice
                    .into_iter()
                    .enumerate()
                    .map(|(i, slot)| {
                        let hi = layout.worker_hosts[slot];
                        let h = &layout.hosts[hi];
                        let id = worker_id(&spec.name, first_index + i as u64, &h.label);
                        let mut cmd = dask::worker_command(spec, id.as_str(), contact);
                        dask::secure(&mut cmd, spec, Party::Worker, TLS_DIR);
                        default_start_method(spec, &mut cmd);
                        if let Some(py) = &h.explicit_python {
                            cmd.argv[0] = py.clone();
                        }
                        (hi, id, cmd)
                    })
                    .collect();
                (jobs, unplaced)
            }
        }
    }

    fn slots(&self, layout: &Layout) -> Vec<Slot> {
        let seen = lock(&self.seen);
        let down = lock(&self.down);
        layout
            .worker_hosts
            .iter()
            .map(|&i| {
                let label = &layout.hosts[i].label;
                Slot {
                    current: seen.get(label).map_or(0, |s| {
                        s.iter()
                            .filter(|id| !id.as_str().contains("-scheduler."))
                            .count() as u32
                    }),
                    capacity: self.ssh.workers_per_host,
                    reachable: !down.contains_key(label),
                }
            })
            .collect()
    }

    /// Scans the worker hosts this process has not seen yet, so placement
    /// knows what runs where.
    async fn refresh(&self, cluster: &str, layout: &Layout) -> Result<()> {
        let missing: Vec<&HostPlan> = {
            let seen = lock(&self.seen);
            let down = lock(&self.down);
            layout
                .worker_hosts
                .iter()
                .map(|&i| &layout.hosts[i])
                .filter(|h| !seen.contains_key(&h.label) && !down.contains_key(&h.label))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let answers = self
            .call_many(&missing, cluster, |_| json!({"op": "scan"}))
            .await;
        for (h, a) in missing.iter().zip(answers) {
            match a {
                Ok(v) => self.remember_seen(&h.label, &v["jobs"]),
                Err(e) if is_unreachable(&e) => {
                    lock(&self.down).insert(h.label.clone(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits for the scheduler launch in flight and reads its answer: the
    /// scheduler file's text, or why there is none.
    async fn finish_scheduler(&self, spec: &ClusterSpec) -> Result<Option<SchedulerEndpoint>> {
        let Some(p) = lock(&self.pending).take() else {
            return Ok(lock(&self.endpoint).clone());
        };
        let layout = self.layout(Some(spec))?;
        let host = layout
            .by_label(&p.label)
            .expect("the scheduler's host is in the layout");
        let v = p.handle.await.map_err(|e| Error::UnexpectedOutput {
            program: "muster-ssh".into(),
            output: format!("the scheduler launch task failed: {e}"),
        })??;
        let started = v["started"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(p.id.as_str())));
        let text = v["scheduler_file"].as_str().map(str::to_string);
        if let (true, Some(text)) = (started, text)
            && let Some(ep) = dask::parse_scheduler_file(&text)
        {
            *lock(&self.scheduler_text) = Some(text);
            *lock(&self.endpoint) = Some(ep.clone());
            return Ok(Some(ep));
        }
        let reason = if !started {
            format!("it could not be started: {}", v["failed"])
        } else {
            match v["exited"].as_i64() {
                Some(code) => format!("it exited with code {code} before publishing its address"),
                None => format!(
                    "it did not publish its address within {}s",
                    self.timeout().as_secs()
                ),
            }
        };
        let log_tail = self
            .job_logs(&spec.name, &p.id)
            .await
            .ok()
            .map(|t| muster_core::cluster::tail_lines(&t, 15));
        let _ = self
            .cancel_jobs(&spec.name, std::slice::from_ref(&p.id))
            .await;
        Err(Error::JobFailed {
            what: format!("scheduler job {} on {}", p.id, host.target.describe()),
            reason,
            log_tail,
        })
    }

    /// Reads the scheduler file from the scheduler's host (a later command,
    /// e.g. `scale`, that did not launch the scheduler itself).
    async fn read_scheduler_file(&self, cluster: &str) -> Result<Option<String>> {
        if let Some(t) = lock(&self.scheduler_text).clone() {
            return Ok(Some(t));
        }
        let layout = self.layout(None)?;
        let host = &layout.hosts[layout.scheduler];
        let v = self
            .call(
                host,
                self.worker_python(host).as_deref(),
                cluster,
                json!({"op": "read_scheduler"}),
                self.timeout(),
            )
            .await?;
        let text = v["text"].as_str().map(str::to_string);
        if let Some(t) = &text
            && let Some(ep) = dask::parse_scheduler_file(t)
        {
            *lock(&self.endpoint) = Some(ep);
            *lock(&self.scheduler_text) = text.clone();
        }
        Ok(text)
    }

    /// Copies the scheduler file to every reachable worker host but the
    /// scheduler's, where waiting workers pick it up.
    async fn distribute(&self, spec: &ClusterSpec, text: &str) {
        let Ok(layout) = self.layout(Some(spec)) else {
            return;
        };
        let hosts: Vec<&HostPlan> = {
            let down = lock(&self.down);
            layout
                .worker_hosts
                .iter()
                .filter(|&&i| i != layout.scheduler)
                .map(|&i| &layout.hosts[i])
                .filter(|h| !down.contains_key(&h.label))
                .collect()
        };
        let answers = self
            .call_many(
                &hosts,
                &spec.name,
                |_| json!({"op": "put_scheduler", "text": text}),
            )
            .await;
        for (h, a) in hosts.iter().zip(answers) {
            if let Err(e) = a {
                self.note(format!(
                    "could not give the scheduler's address to {}; its workers will not connect: {e}",
                    h.label
                ));
            }
        }
    }

    fn hosts_of<'l>(
        &self,
        layout: &'l Layout,
        cluster: &str,
        ids: &[JobId],
    ) -> (BTreeMap<&'l str, Vec<JobId>>, Vec<JobId>) {
        let mut by_host: BTreeMap<&str, Vec<JobId>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for id in ids {
            match host_of(cluster, id).and_then(|l| layout.by_label(l)) {
                Some(h) => by_host
                    .entry(h.label.as_str())
                    .or_default()
                    .push(id.clone()),
                None => unknown.push(id.clone()),
            }
        }
        (by_host, unknown)
    }
}

#[async_trait]
impl Backend for SshBackend {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Each check is a request to each host's helper and a scan of
            // its /proc: cheap, but while workers start the CPU is theirs.
            status_interval: Duration::from_secs(3),
            tls: true,
            ..Capabilities::default()
        }
    }

    fn scheduler_access(&self) -> std::sync::Arc<dyn SchedulerAccess> {
        // The scheduler runs on one of the hosts, which this machine reaches.
        std::sync::Arc::new(Direct)
    }

    async fn preflight(&self) -> Result<Warnings> {
        let spec = &self.spec;
        let layout = self.layout(Some(spec))?;
        let sched_python = spec.scheduler.python.clone();
        let hosts: Vec<&HostPlan> = {
            let probed = lock(&self.probed);
            let down = lock(&self.down);
            layout
                .hosts
                .iter()
                .enumerate()
                .filter(|(i, h)| {
                    // Checked moments ago by discover, or known to be down.
                    let fresh = probed.contains(&h.label)
                        && !(*i == layout.scheduler && sched_python.is_some());
                    let known_down = down.contains_key(&h.label) && *i != layout.scheduler;
                    !(fresh || known_down)
                })
                .map(|(_, h)| h)
                .collect()
        };
        let answers = self
            .call_many(&hosts, &spec.name, |h| {
                let mut others = Vec::new();
                if h.label == layout.hosts[layout.scheduler].label
                    && let Some(p) = &sched_python
                {
                    others.push(p.clone());
                }
                json!({"op": "probe", "other_pythons": others})
            })
            .await;
        let mut failures = Vec::new();
        for (h, answer) in hosts.iter().zip(answers) {
            let is_scheduler = h.label == layout.hosts[layout.scheduler].label;
            match answer {
                Ok(v) => {
                    if let Some(err) = v["error"].as_str() {
                        return Err(Error::MissingDask {
                            python: format!(
                                "{} on {}",
                                v["python"].as_str().unwrap_or("python"),
                                h.target.describe()
                            ),
                            detail: err.into(),
                        });
                    }
                    if let Some([py, err]) = v["other_errors"]
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(|e| e.as_array())
                        .map(Vec::as_slice)
                    {
                        return Err(Error::MissingDask {
                            python: format!(
                                "{} on {}",
                                py.as_str().unwrap_or("?"),
                                h.target.describe()
                            ),
                            detail: err.as_str().unwrap_or("?").into(),
                        });
                    }
                    self.remember_seen(&h.label, &v["jobs"]);
                    self.remember_free_port(&h.label, &v);
                    lock(&self.probed).insert(h.label.clone());
                }
                // A host that is not there: the cluster can go on without it,
                // unless it was to run the scheduler.
                Err(e) if is_unreachable(&e) && !is_scheduler => {
                    self.note(format!(
                        "host {} is unreachable, no workers will be placed there: {e}",
                        h.label
                    ));
                    lock(&self.down).insert(h.label.clone(), e.to_string());
                    failures.push(format!("{}: {e}", h.label));
                }
                // Host key problems, authentication, a broken python: stop.
                Err(e) => return Err(e),
            }
        }
        if spec.workers > 0 && self.slots(layout).iter().all(|s| !s.reachable) {
            failures.extend(lock(&self.down).iter().map(|(h, e)| format!("{h}: {e}")));
            failures.sort();
            failures.dedup();
            return Err(Error::Usage(format!(
                "no worker host can be reached:\n  {}",
                failures.join("\n  ")
            )));
        }
        Ok(self.take_notes())
    }

    fn render(&self, role: &Role) -> Result<Rendered> {
        let req = &LaunchRequest {
            spec: &self.spec,
            role: role.clone(),
        };
        let layout = self.layout(Some(req.spec))?;
        let slots = self.slots(layout);
        let (jobs, unplaced) = self.plan(req, layout, &slots);
        let mut items: Vec<RenderedItem> = jobs
            .iter()
            .map(|(hi, id, cmd)| {
                let h = &layout.hosts[*hi];
                RenderedItem {
                    title: format!("{id} on {} as {}", h.target.describe(), h.target.user),
                    text: self.job_line(&req.spec.name, h, id, cmd),
                }
            })
            .collect();
        if unplaced > 0 {
            items.push(RenderedItem {
                title: "not placed".into(),
                text: format!(
                    "{unplaced} workers: no host with room (workers_per_host: {})",
                    self.ssh
                        .workers_per_host
                        .map_or("no limit".to_string(), |n| n.to_string())
                ),
            });
        }
        Ok(Rendered {
            items,
            contact: scheduler_contact(role),
        })
    }

    async fn launch(&self, role: &Role) -> Result<Launched> {
        let jobs = self.launch_jobs(role).await?;
        Ok(Launched {
            jobs,
            contact: scheduler_contact(role),
            warnings: self.take_notes(),
        })
    }

    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        self.job_status(&self.spec.name, ids).await
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<()> {
        self.cancel_jobs(&self.spec.name, ids).await
    }

    async fn discover(&self) -> Result<Discovered> {
        let jobs = self.find_jobs(&self.spec.name).await?;
        Ok(Discovered {
            jobs,
            warnings: self.take_notes(),
        })
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        self.job_logs(&self.spec.name, id).await
    }

    async fn scheduler_endpoint(&self, _scheduler: &JobId) -> Result<Option<SchedulerEndpoint>> {
        self.endpoint_of(&self.spec).await
    }

    async fn forget(&self) -> Result<Warnings> {
        self.forget_files(&self.spec.name).await?;
        Ok(self.take_notes())
    }
}

impl SshBackend {
    async fn launch_jobs(&self, role: &Role) -> Result<Vec<JobId>> {
        let req = &LaunchRequest {
            spec: &self.spec,
            role: role.clone(),
        };
        let spec = req.spec;
        let layout = self.layout(Some(spec))?;
        // Workers launched while the scheduler starts get its address when
        // muster chose its port: they start their worker processes (and
        // import Dask) at once and connect as soon as it listens, instead of
        // waiting for a scheduler file muster copies over after it is up.
        let early = match (&req.role, lock(&self.pending).as_ref()) {
            (
                Role::Workers {
                    first_index,
                    count,
                    contact: SchedulerContact::File(_),
                },
                Some(PendingScheduler {
                    address: Some(address),
                    ..
                }),
            ) => Some(LaunchRequest {
                spec,
                role: Role::Workers {
                    first_index: *first_index,
                    count: *count,
                    contact: SchedulerContact::Address(address.clone()),
                },
            }),
            _ => None,
        };
        let req = early.as_ref().unwrap_or(req);
        if matches!(req.role, Role::Workers { .. }) {
            self.refresh(&spec.name, layout).await?;
        }
        let slots = self.slots(layout);
        let (jobs, unplaced) = self.plan(req, layout, &slots);
        if let Role::Workers { count, .. } = &req.role
            && unplaced > 0
        {
            let down = lock(&self.down).clone();
            let why = if down.is_empty() {
                format!(
                    "every worker host is full (workers_per_host: {})",
                    self.ssh.workers_per_host.unwrap_or(0)
                )
            } else {
                down.iter()
                    .map(|(h, e)| format!("{h}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            if unplaced == *count {
                // Hosts full or unreachable now: room may come back.
                return Err(Error::backend(
                    "ssh",
                    format!("no host has room for {count} more workers: {why}"),
                    true,
                ));
            }
            self.note(format!(
                "{unplaced} of {count} workers could not be placed: {why}"
            ));
        }
        let mut by_host: BTreeMap<usize, Vec<(JobId, ProcessCommand)>> = BTreeMap::new();
        for (hi, id, cmd) in jobs {
            by_host.entry(hi).or_default().push((id, cmd));
        }
        let job_list = |hi: usize| -> Vec<Value> {
            by_host[&hi]
                .iter()
                .map(|(id, cmd)| json!({"id": id.0, "argv": cmd.argv, "env": cmd.env}))
                .collect()
        };
        let wait = self
            .timeout()
            .saturating_sub(Duration::from_secs(2))
            .max(Duration::from_secs(1));

        let contact = match &req.role {
            Role::Scheduler => {
                // Started in the background: the helper waits on the host for
                // the scheduler file while the workers are launched and import
                // Dask; `scheduler_endpoint` collects it.
                let h = &layout.hosts[layout.scheduler];
                let (id, _) = &by_host[&layout.scheduler][0];
                let python = spec
                    .scheduler
                    .python
                    .clone()
                    .or_else(|| self.worker_python(h));
                let request = json!({
                    "op": "launch",
                    "tls_files": self.tls_files(Party::Scheduler)?,
                    "jobs": job_list(layout.scheduler),
                    "wait_scheduler_file": true,
                    "wait_seconds": wait.as_secs_f64(),
                    "record_python": true,
                });
                *lock(&self.endpoint) = None;
                *lock(&self.scheduler_text) = None;
                let handle = tokio::spawn(call_helper(
                    self.pool.clone(),
                    h.clone(),
                    python,
                    self.ssh.state_dir.clone(),
                    spec.name.clone(),
                    request,
                    self.timeout(),
                ));
                *lock(&self.pending) = Some(PendingScheduler {
                    id: id.clone(),
                    label: h.label.clone(),
                    handle,
                    address: self.planned_scheduler(spec, layout).map(|(_, a)| a),
                });
                lock(&self.seen)
                    .entry(h.label.clone())
                    .or_default()
                    .insert(id.clone());
                return Ok(vec![id.clone()]);
            }
            Role::Workers { contact, .. } => contact.clone(),
        };

        // Workers. With the scheduler file as contact they need its text on
        // their host: known already, fetched from the scheduler's host (a
        // later `scale`), or copied there once the scheduler is up (`up`).
        let by_file = matches!(contact, SchedulerContact::File(_));
        let in_flight = lock(&self.pending).is_some();
        if by_file && in_flight && by_host.contains_key(&layout.scheduler) {
            // Workers beside the scheduler read its file directly; wait for
            // it so they never see a stale one.
            self.finish_scheduler(spec).await?;
        }
        let still_pending = lock(&self.pending).is_some();
        let text = match (by_file, still_pending) {
            (false, _) | (true, true) => None,
            (true, false) => self.read_scheduler_file(&spec.name).await?,
        };
        let hosts: Vec<&HostPlan> = by_host.keys().map(|&i| &layout.hosts[i]).collect();
        let tls_files = self.tls_files(Party::Worker)?;
        let answers = self
            .call_many(&hosts, &spec.name, |h| {
                let hi = layout
                    .hosts
                    .iter()
                    .position(|x| x.label == h.label)
                    .unwrap_or(0);
                json!({
                    "op": "launch",
                    "tls_files": tls_files,
                    "jobs": job_list(hi),
                    "record_python": true,
                    "scheduler_file_text": text,
                    "remove_stale_scheduler_file": by_file && hi != layout.scheduler,
                })
            })
            .await;
        let mut started = Vec::new();
        for (h, answer) in hosts.iter().zip(answers) {
            let v = match answer {
                Ok(v) => v,
                Err(e) => {
                    self.note(format!("could not start workers on {}: {e}", h.label));
                    if is_unreachable(&e) {
                        lock(&self.down).insert(h.label.clone(), e.to_string());
                    }
                    continue;
                }
            };
            for f in v["failed"].as_array().into_iter().flatten() {
                self.note(format!("could not start {} on {}: {}", f[0], h.label, f[1]));
            }
            let ids: Vec<JobId> = v["started"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(JobId::from))
                .collect();
            lock(&self.seen)
                .entry(h.label.clone())
                .or_default()
                .extend(ids.iter().cloned());
            started.extend(ids);
        }
        if started.is_empty() && !by_host.is_empty() {
            return Err(Error::Usage(
                "no worker could be started on any host (see the notes above)".into(),
            ));
        }
        Ok(started)
    }

    async fn job_status(&self, cluster: &str, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        let layout = self.layout(None)?;
        // A scheduler whose launch is still waiting on its host runs (the
        // launch reports it if it stops); no need to ask over another
        // connection while it starts.
        let starting = lock(&self.pending)
            .as_ref()
            .filter(|p| !p.handle.is_finished())
            .map(|p| p.id.clone());
        let (asked, known): (Vec<JobId>, Vec<JobId>) = ids
            .iter()
            .cloned()
            .partition(|id| Some(id) != starting.as_ref());
        let (by_host, unknown) = self.hosts_of(layout, cluster, &asked);
        let mut out: BTreeMap<JobId, JobStatus> = unknown
            .into_iter()
            .map(|id| (id, JobStatus::Unknown))
            .chain(known.into_iter().map(|id| (id, JobStatus::Running)))
            .collect();
        let hosts: Vec<&HostPlan> = by_host.keys().filter_map(|l| layout.by_label(l)).collect();
        let answers = self
            .call_many(
                &hosts,
                cluster,
                |h| json!({"op": "status", "jobs": by_host[h.label.as_str()]}),
            )
            .await;
        for (h, answer) in hosts.iter().zip(answers) {
            let jobs = &by_host[h.label.as_str()];
            match answer {
                Ok(v) => {
                    for id in jobs {
                        let s = &v["jobs"][id.as_str()];
                        let st = match s["state"].as_str() {
                            Some("running") => JobStatus::Running,
                            Some("finished") => JobStatus::Finished,
                            Some("failed") => JobStatus::Failed {
                                reason: s["reason"].as_str().unwrap_or("failed").into(),
                            },
                            _ => JobStatus::Unknown,
                        };
                        out.insert(id.clone(), st);
                    }
                }
                Err(e) => {
                    let reason = if is_unreachable(&e) {
                        format!("lost: host {} is unreachable ({e})", h.label)
                    } else {
                        format!("lost: cannot query host {} ({e})", h.label)
                    };
                    for id in jobs {
                        out.insert(
                            id.clone(),
                            JobStatus::Failed {
                                reason: reason.clone(),
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    async fn cancel_jobs(&self, cluster: &str, ids: &[JobId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let layout = self.layout(None)?;
        let (by_host, _unknown) = self.hosts_of(layout, cluster, ids);
        let hosts: Vec<&HostPlan> = by_host.keys().filter_map(|l| layout.by_label(l)).collect();
        let answers = self
            .call_many(
                &hosts,
                cluster,
                |h| json!({"op": "cancel", "jobs": by_host[h.label.as_str()]}),
            )
            .await;
        let mut left = Vec::new();
        let mut failed = Vec::new();
        for (h, answer) in hosts.iter().zip(answers) {
            match answer {
                Ok(v) => {
                    if let Some(m) = v["left"].as_object() {
                        left.extend(
                            m.iter()
                                .map(|(j, p)| format!("{j} on {} (pids {p})", h.label)),
                        );
                    }
                    if let Some(s) = lock(&self.seen).get_mut(&h.label) {
                        for id in &by_host[h.label.as_str()] {
                            s.remove(id);
                        }
                    }
                }
                Err(e) => failed.push((h, e)),
            }
        }
        if let Some((h, e)) = failed.into_iter().next() {
            return Err(Error::Host {
                host: h.target.describe(),
                message: format!(
                    "cannot stop {} there: {e}; run the command again once the host is back",
                    by_host[h.label.as_str()]
                        .iter()
                        .map(|j| j.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                transient: true,
            });
        }
        if !left.is_empty() {
            return Err(Error::LeftBehind {
                cluster: cluster.into(),
                jobs: left,
            });
        }
        Ok(())
    }

    async fn find_jobs(&self, cluster: &str) -> Result<Vec<(JobId, JobStatus)>> {
        let layout = self.layout(None)?;
        let hosts: Vec<&HostPlan> = layout.hosts.iter().collect();
        // With a known python, the same round trip also checks Dask there,
        // which spares `up` a second one in preflight.
        let answers = self
            .call_many(&hosts, cluster, |h| match self.worker_python(h) {
                Some(_) => json!({"op": "probe"}),
                None => json!({"op": "scan"}),
            })
            .await;
        let mut out = Vec::new();
        for (h, answer) in hosts.iter().zip(answers) {
            match answer {
                Ok(v) => {
                    self.remember_seen(&h.label, &v["jobs"]);
                    self.remember_free_port(&h.label, &v);
                    if v["distributed"].is_string() && v["error"].is_null() {
                        lock(&self.probed).insert(h.label.clone());
                    }
                    out.extend(
                        v["jobs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|j| j.as_str())
                            .map(|j| (JobId::from(j), JobStatus::Running)),
                    );
                }
                Err(e) if is_unreachable(&e) => {
                    self.note(format!(
                        "host {} is unreachable; processes there were not looked for: {e}",
                        h.label
                    ));
                    lock(&self.down).insert(h.label.clone(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn job_logs(&self, cluster: &str, id: &JobId) -> Result<String> {
        let layout = self.layout(None)?;
        let host = host_of(cluster, id)
            .and_then(|l| layout.by_label(l))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no job {id:?} in cluster {cluster:?} (see `muster get workers {cluster}`)"
                ))
            })?;
        let v = self
            .call(
                host,
                self.worker_python(host).as_deref(),
                cluster,
                json!({"op": "logs", "job": id.0}),
                self.timeout(),
            )
            .await?;
        match v["text"].as_str() {
            Some(t) => Ok(t.to_string()),
            None => Err(Error::Usage(format!(
                "no log for job {id:?} of cluster {cluster:?} on {} ({})",
                host.label,
                v["missing"].as_str().unwrap_or("")
            ))),
        }
    }

    async fn endpoint_of(&self, spec: &ClusterSpec) -> Result<Option<SchedulerEndpoint>> {
        if let Some(ep) = lock(&self.endpoint).clone() {
            return Ok(Some(ep));
        }
        let pending = {
            let p = lock(&self.pending);
            p.as_ref().map(|p| p.handle.is_finished())
        };
        match pending {
            Some(false) => Ok(None),
            Some(true) => {
                let addressed = lock(&self.pending).as_ref().and_then(|p| p.address.clone());
                let ep = self.finish_scheduler(spec).await?;
                let text = lock(&self.scheduler_text).clone();
                match (addressed, text) {
                    // The workers got the address itself.
                    (Some(planned), _) => {
                        if ep.as_ref().is_some_and(|e| e.address != planned) {
                            tracing::debug!(%planned, published = ?ep.as_ref().map(|e| &e.address), "the scheduler published another address than planned");
                        }
                    }
                    (None, Some(text)) => self.distribute(spec, &text).await,
                    (None, None) => {}
                }
                Ok(ep)
            }
            None => {
                self.read_scheduler_file(&spec.name).await?;
                Ok(lock(&self.endpoint).clone())
            }
        }
    }

    async fn forget_files(&self, cluster: &str) -> Result<()> {
        let layout = self.layout(None)?;
        let hosts: Vec<&HostPlan> = layout
            .hosts
            .iter()
            .filter(|h| !lock(&self.down).contains_key(&h.label))
            .collect();
        let answers = self
            .call_many(&hosts, cluster, |_| json!({"op": "forget"}))
            .await;
        for (h, a) in hosts.iter().zip(answers) {
            if let Err(e) = a {
                self.note(format!(
                    "could not remove muster's files on {}: {e}",
                    h.label
                ));
            }
        }
        Ok(())
    }
}

/// Workers launched with the scheduler wait for its file, relative to each
/// job's directory on its own host; muster copies it from the scheduler's
/// host to the others once it exists (hosts need not share a filesystem).
fn scheduler_contact(role: &Role) -> Option<SchedulerContact> {
    matches!(role, Role::Scheduler).then(|| SchedulerContact::File(SCHEDULER_FILE.into()))
}

/// Runs muster's helper on a host. `python` is the interpreter to use; when
/// `None`, the one recorded at launch on that host is used, else
/// `python3`.
pub async fn call_helper(
    pool: SshPool,
    host: HostPlan,
    python: Option<String>,
    state_dir: String,
    cluster: String,
    mut request: Value,
    timeout: Duration,
) -> HostAnswer {
    let host = &host;
    let python = python.as_deref();
    let remote_dir = state_dir.trim();
    let remote_dir = remote_dir
        .strip_prefix("~/")
        .unwrap_or(remote_dir)
        .to_string();
    request["state_dir"] = json!(state_dir);
    request["cluster"] = json!(cluster);
    request["host"] = json!(host.label);
    let req = request.to_string();
    // The helper runs as a server (see helper.py): its source comes first on
    // stdin as one JSON string, then one request per line.
    let serve = runner::quote(SERVE);
    let line = match python {
        Some(py) => format!("exec {} -c {serve}", runner::quote(py)),
        None => {
            let file = format!("{}/ssh/{cluster}/{}/python", remote_dir, host.label);
            format!(
                "cd && P=$(cat {} 2>/dev/null); exec \"${{P:-python3}}\" -c {serve}",
                runner::quote(&file),
            )
        }
    };
    let mut shown = request.clone();
    if let Some(files) = shown.get_mut("tls_files").and_then(Value::as_object_mut) {
        for text in files.values_mut() {
            *text = json!("<redacted>");
        }
    }
    tracing::debug!(host = %host.target.describe(), python = ?python, request = %shown, "ssh helper");
    let mut preamble = serde_json::to_string(HELPER).expect("a string serializes");
    preamble.push('\n');
    let reply = pool
        .ask(
            &host.target,
            line,
            preamble.into_bytes(),
            req,
            ANSWER,
            timeout,
        )
        .await
        .map_err(|e| e.into_error(&host.target))?;
    let out = match reply {
        session::Reply::Line(answer) => {
            tracing::debug!(host = %host.target.describe(), "ssh helper answered");
            return serde_json::from_str(&answer).map_err(|e| Error::UnexpectedOutput {
                program: format!("muster helper on {}", host.target.describe()),
                output: format!("{e}: {answer}"),
            });
        }
        session::Reply::Ended(out) => out,
    };
    // It ended without answering.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = muster_core::cluster::tail_lines(stderr.trim(), 5);
    if out.code == 127 {
        Err(Error::MissingDask {
            python: format!(
                "{} on {}",
                python.unwrap_or("python3"),
                host.target.describe()
            ),
            detail: format!("no such program: {tail}"),
        })
    } else {
        Err(Error::CommandFailed {
            program: format!("muster helper on {}", host.target.describe()),
            code: out.code,
            stderr: tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ClusterSpec {
        let s = ClusterSpec::from_yaml(yaml, None).unwrap();
        s.validate().unwrap();
        s
    }

    fn render(spec: &ClusterSpec, role: Role) -> String {
        let backend = SshBackend::new(spec).unwrap();
        let r = backend.render(&role).unwrap();
        r.items
            .iter()
            .map(|i| format!("# {}\n{}\n", i.title, i.text))
            .collect()
    }

    const HOSTILE: &str = r#"
name: demo
backend:
  kind: ssh
  hosts: ["root@h1:2222", {host: h2, python: "/opt/my env/bin/python"}, {host: 10.0.0.3, user: bob, name: third}]
  ssh_config: /dev/null
  known_hosts: /dev/null
  user: deploy
  workers_per_host: 1
  state_dir: "/srv/muster state/$(id)"
worker:
  cores: 2
  python: /venv/bin/python
  env: {EVIL: "$(touch /tmp/pwned); `id` 'x' \"y\""}
  extra_args: ["--resources", "GPU=1;reboot"]
scheduler: {env: {NOTE: "it's"}}
"#;

    #[test]
    fn renders_scheduler_and_workers_with_hostile_values_quoted() {
        let s = spec(HOSTILE);
        insta::assert_snapshot!(render(&s, Role::Scheduler));
        let workers = Role::Workers {
            first_index: 7,
            count: 3,
            contact: SchedulerContact::File(SCHEDULER_FILE.into()),
        };
        // Two hosts take workers, one each: the third is not placed.
        insta::assert_snapshot!(render(&s, workers));
    }

    #[test]
    fn the_scheduler_address_is_planned_from_a_probed_free_port() {
        let s = spec(HOSTILE);
        let backend = SshBackend::new(&s).unwrap();
        let layout = backend.layout(Some(&s)).unwrap();
        assert_eq!(backend.planned_scheduler(&s, layout), None, "no probe yet");
        backend.remember_free_port("h1", &json!({"free_port": 41234}));
        assert_eq!(
            backend.planned_scheduler(&s, layout),
            Some((41234, "tls://h1:41234".to_string()))
        );
        let item = backend.render(&Role::Scheduler).unwrap();
        assert!(
            item.items[0].text.contains("--port 41234"),
            "{}",
            item.items[0].text
        );
        // A port in the spec wins; an IPv6 listen address is bracketed; a
        // wildcard listen address says nothing about where to connect.
        let mut fixed = s.clone();
        fixed.scheduler.port = 8786;
        fixed.scheduler.host = Some("fd00::5".into());
        assert_eq!(
            backend.planned_scheduler(&fixed, layout),
            Some((8786, "tls://[fd00::5]:8786".to_string()))
        );
        fixed.scheduler.host = Some("0.0.0.0".into());
        assert_eq!(backend.planned_scheduler(&fixed, layout), None);
    }
}
