//! muster-hpc: the batch-scheduler backends, SLURM and PBS/TORQUE, as one
//! [`HpcBackend`] over a [`Dialect`]. Workers are submitted as job arrays
//! (adding k workers is one submission), every job's name carries the
//! cluster's `muster_<cluster>_` marker so `down` finds them from the queue
//! itself, and one listing command per poll gives the states of the whole
//! cluster. The Dask scheduler runs on the submitting host by default, as a
//! detached process managed by muster-local's [`LocalBackend`] (so no spawn or
//! process-scan code is duplicated here), or as a batch job of its own
//! (`scheduler.placement: job`), found through its scheduler file on a
//! shared directory.
//!
//! Every external command, and every file the jobs share with muster (job
//! output, PBS scripts, the scheduler file, cancel tombstones), goes through
//! a [`CommandRunner`]: unit tests inject recorded outputs, and with
//! `submit_host` an SSH runner drives a cluster behind its login node from
//! another machine. Rendering ([`script`]) and parsing ([`dialect`]) are
//! pure; this module is the thin I/O layer. It knows nothing of other
//! backends, and nothing of Dask beyond muster-core's command builders.

pub mod dialect;
pub mod files;
pub mod hpcspec;
pub mod jobqueue;
mod kind;
pub mod script;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_core::access::{Direct, SchedulerAccess};
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, SchedulerContact,
    Warnings,
};
use muster_core::dask::{self, SchedulerEndpoint};
use muster_core::runner::{CommandRunner, CommandSpec, LocalRunner};
use muster_core::spec::{ClusterSpec, Placement, SpecError};
use muster_core::{Error, Home, JobId, JobStatus, Result};
use muster_local::LocalBackend;

pub use dialect::Dialect;
use dialect::{QueueEntry, Tasks, resolve};
use hpcspec::is_plain_path;
pub use hpcspec::{HpcKind, HpcSpec, PbsFlavor};
pub use kind::{PBS, SLURM};
use script::{ScriptInput, ScriptRole};

/// The first IPv4 address of a network interface of this host, as Dask's
/// `--interface` would pick it.
fn interface_ipv4(name: &str) -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        (ifa.interface_name == name)
            .then(|| ifa.address?.as_sockaddr_in().map(|a| a.ip().to_string()))
            .flatten()
    })
}

/// How long a submit or listing command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `cancel` waits for cancelled jobs to leave the queue's active states.
const CANCEL_WAIT: Duration = Duration::from_secs(90);

/// One SLURM or PBS cluster, reached through `runner`.
#[derive(Debug, Clone)]
pub struct HpcBackend<R: CommandRunner = LocalRunner> {
    dialect: Dialect,
    hpc: HpcSpec,
    spec: ClusterSpec,
    home: Home,
    runner: R,
    access: Arc<dyn SchedulerAccess>,
    local: LocalBackend,
    /// Why the host-placed scheduler cannot start here (its interface has
    /// no address on this host); reported when it is rendered or launched.
    host_scheduler_error: Option<String>,
    user: Option<String>,
}

impl HpcBackend<LocalRunner> {
    /// The backend of a `slurm` or `pbs` cluster spec, running commands on
    /// this machine.
    pub fn for_spec(spec: &ClusterSpec, home: Home) -> Result<Self> {
        Self::for_spec_with(spec, home, LocalRunner, Arc::new(Direct))
    }
}

impl<R: CommandRunner> HpcBackend<R> {
    /// The backend of a `slurm` or `pbs` cluster spec, running commands
    /// through `runner` (e.g. over SSH on the section's `submit_host`) and
    /// reaching the scheduler through `access`.
    pub fn for_spec_with(
        spec: &ClusterSpec,
        home: Home,
        runner: R,
        access: Arc<dyn SchedulerAccess>,
    ) -> Result<Self> {
        let hpc = HpcSpec::of(spec).map_err(|e| SpecError::Invalid(vec![e]))?;
        let dialect = match HpcKind::of(spec) {
            Some(HpcKind::Slurm) => Dialect::Slurm,
            Some(HpcKind::Pbs) => Dialect::Pbs(hpc.flavor.unwrap_or(PbsFlavor::Torque)),
            None => {
                return Err(Error::Usage(format!(
                    "backend.kind: {:?} is not a batch scheduler",
                    spec.backend.kind()
                )));
            }
        };
        Ok(HpcBackend::new(
            dialect,
            hpc,
            spec.clone(),
            home,
            runner,
            access,
        ))
    }

    /// A backend of the cluster `spec` speaking `dialect` through `runner`,
    /// with state under `home`.
    pub fn new(
        dialect: Dialect,
        hpc: HpcSpec,
        spec: ClusterSpec,
        home: Home,
        runner: R,
        access: Arc<dyn SchedulerAccess>,
    ) -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty());
        let (host_spec, host_scheduler_error) = match Self::host_scheduler_spec(&spec) {
            Ok(s) => (s, None),
            Err(e) => (spec.clone(), Some(e.to_string())),
        };
        let mut local = LocalBackend::new(home.clone(), host_spec);
        if let Some(dir) = &hpc.log_directory {
            // The host-placed scheduler publishes its file where the jobs
            // can read it: the shared log directory, as a job-placed one does.
            local = local.with_scheduler_dir(PathBuf::from(dir.trim_end_matches('/')));
        }
        HpcBackend {
            dialect,
            hpc,
            local,
            host_scheduler_error,
            spec,
            home,
            runner,
            access,
            user,
        }
    }

    fn cluster(&self) -> &str {
        &self.spec.name
    }

    /// Lists only this user's jobs (`None`: everybody's).
    pub fn with_user(mut self, user: Option<String>) -> Self {
        self.user = user;
        self
    }

    /// The directory for a cluster's job output (and PBS bookkeeping).
    pub fn log_dir(&self, cluster: &str) -> String {
        match &self.hpc.log_directory {
            Some(dir) => format!("{}/{cluster}", dir.trim_end_matches('/')),
            None => self
                .home
                .cluster_dir(cluster)
                .join("logs")
                .display()
                .to_string(),
        }
    }

    /// Where the scheduler publishes its address, which the worker jobs
    /// read: next to the job output (on the shared filesystem) when it runs
    /// as a job or when a `log_directory` is given (muster-local's scheduler
    /// is told to write it there), else in the cluster's local state
    /// directory, where muster-local's scheduler writes it by default (and
    /// where the jobs' output goes too).
    fn scheduler_path(&self, spec: &ClusterSpec) -> String {
        match spec.scheduler.placement {
            Placement::Job => format!("{}/scheduler.json", self.log_dir(&spec.name)),
            Placement::Host if self.hpc.log_directory.is_some() => {
                format!("{}/scheduler.json", self.log_dir(&spec.name))
            }
            Placement::Host => self
                .home
                .cluster_dir(&spec.name)
                .join("scheduler.json")
                .display()
                .to_string(),
        }
    }

    /// Workers launched with the scheduler wait for its file on the shared
    /// filesystem, so they start in parallel with it.
    fn contact(&self, role: &Role) -> Option<SchedulerContact> {
        matches!(role, Role::Scheduler)
            .then(|| SchedulerContact::File(self.scheduler_path(&self.spec).into()))
    }

    /// The id of the scheduler when it runs on this host.
    fn local_scheduler_id(cluster: &str) -> String {
        format!("{cluster}-scheduler")
    }

    fn is_local(cluster: &str, id: &JobId) -> bool {
        id.as_str() == Self::local_scheduler_id(cluster)
    }

    /// The batch system's spelling of a muster job id (`demo-41_3` → `41_3`).
    fn bare<'a>(cluster: &str, id: &'a JobId) -> &'a str {
        id.as_str()
            .strip_prefix(cluster)
            .and_then(|r| r.strip_prefix('-'))
            .unwrap_or(id.as_str())
    }

    /// muster's job id of a batch id (`41_3` → `demo-41_3`).
    fn full(cluster: &str, bare: &str) -> JobId {
        JobId(format!("{cluster}-{bare}"))
    }

    /// The spec the host-placed scheduler runs with: unless a host is given,
    /// on the workers' `worker.interface` (as dask-jobqueue runs it), else
    /// listening on every interface, since workers run on other nodes.
    fn host_scheduler_spec(spec: &ClusterSpec) -> Result<ClusterSpec> {
        let mut s = spec.clone();
        if s.scheduler.host.is_none() {
            s.scheduler.host = Some(match &spec.worker.interface {
                Some(iface) => interface_ipv4(iface).ok_or_else(|| {
                    Error::Usage(format!(
                        "worker.interface {iface:?} has no IPv4 address on this host, where the scheduler runs (like dask-jobqueue, muster puts the scheduler on the workers' interface): set scheduler.host, or scheduler.placement: job"
                    ))
                })?,
                None => "0.0.0.0".into(),
            });
        }
        Ok(s)
    }

    fn template(&self) -> Result<Option<String>> {
        let Some(path) = &self.hpc.template else {
            return Ok(None);
        };
        let text = fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading job-script template {path}"), e))?;
        script::check_template(path, &text).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(Some(text))
    }

    fn checked_log_dir(&self, cluster: &str) -> Result<String> {
        let dir = self.log_dir(cluster);
        if !is_plain_path(&dir) {
            return Err(Error::Usage(format!(
                "log directory {dir:?} cannot be written into job directives (only letters, digits and / _ . - + @ , =): set backend.log_directory"
            )));
        }
        Ok(dir)
    }

    /// The script of a batch submission and the role it was rendered for.
    fn script_for(&self, role: &Role) -> Result<Option<(ScriptRole, String)>> {
        let spec = &self.spec;
        let role = match role {
            Role::Scheduler if spec.scheduler.placement == Placement::Host => return Ok(None),
            Role::Scheduler => ScriptRole::Scheduler {
                scheduler_file: self.scheduler_path(spec),
            },
            Role::Workers { count, contact, .. } => ScriptRole::Workers {
                count: *count,
                contact: contact.clone(),
            },
        };
        let log_dir = self.checked_log_dir(&spec.name)?;
        let template = self.template()?;
        let input = ScriptInput {
            dialect: self.dialect,
            spec,
            hpc: &self.hpc,
            role: &role,
            log_dir: &log_dir,
            template: template.as_deref(),
        };
        let refused = script::refused_skips(&input);
        if !refused.is_empty() {
            let lines: Vec<String> = refused
                .iter()
                .map(|(i, skip, line, why)| {
                    format!("backend.job_directives_skip[{i}]: {skip:?} would remove `{line}`, which muster needs: {why}")
                })
                .collect();
            return Err(Error::Usage(lines.join("\n")));
        }
        let text = script::render(&input);
        Ok(Some((role, text)))
    }

    /// Puts the credential files a job of `role` needs (the CA, and the
    /// scheduler's or the workers' certificate and key) owner-only into the
    /// cluster's log directory, where the job script names them. Contents go
    /// on the command's stdin, never on a command line.
    async fn put_credentials(&self, role: &ScriptRole) -> Result<()> {
        if !self.spec.scheduler.security.is_tls() {
            return Ok(());
        }
        let party = match role {
            ScriptRole::Scheduler { .. } => muster_core::tls::Party::Scheduler,
            ScriptRole::Workers { .. } => muster_core::tls::Party::Worker,
        };
        let creds = muster_core::tls::load(&self.home, self.cluster())?;
        let log_dir = self.log_dir(self.cluster());
        let dir = script::tls_dir(&log_dir);
        for (name, text) in creds.files_for(&[party]) {
            let path = format!("{dir}/{name}");
            self.file_op(
                "writing the TLS credentials",
                files::write_private_argv(&log_dir, &dir, &path),
                Some(text.as_bytes().to_vec()),
            )
            .await?;
        }
        Ok(())
    }

    fn submit_argv(&self, role: &ScriptRole, script_path: &str, log_dir: &str) -> Vec<String> {
        let array = match role {
            ScriptRole::Workers { count, .. } => Some(*count),
            ScriptRole::Scheduler { .. } => None,
        };
        self.dialect.submit_argv(array, script_path, log_dir)
    }

    async fn run(
        &self,
        argv: Vec<String>,
        stdin: Option<Vec<u8>>,
    ) -> Result<muster_core::CommandOutput> {
        let mut cmd = CommandSpec::new(argv);
        cmd.stdin = stdin;
        cmd.timeout = Some(COMMAND_TIMEOUT);
        tracing::debug!(argv = ?cmd.argv, "batch command");
        self.runner.run(&cmd).await
    }

    /// Runs a file operation (see [`files`]) and turns a failure into an
    /// error saying what was being done.
    async fn file_op(&self, what: &str, argv: Vec<String>, stdin: Option<Vec<u8>>) -> Result<()> {
        let program = argv[0].clone();
        let out = self.run(argv, stdin).await?;
        if out.code != 0 {
            return Err(Error::CommandFailed {
                program: format!("{program} ({what})"),
                code: out.code,
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(())
    }

    /// A shared file's text; `None` when it does not exist (yet).
    async fn read_text(&self, path: &str) -> Result<Option<String>> {
        let out = self.run(files::read_argv(path), None).await?;
        match out.code {
            0 => Ok(Some(out.stdout)),
            _ if files::is_missing(&out.stderr) => Ok(None),
            code => Err(Error::CommandFailed {
                program: format!("cat (reading {path})"),
                code,
                stderr: out.stderr.trim().to_string(),
            }),
        }
    }

    /// The one listing call of a poll.
    pub async fn list(&self) -> Result<Vec<QueueEntry>> {
        let argv = self.dialect.status_argv(self.user.as_deref());
        let program = argv[0].clone();
        let out = self.run(argv, None).await?;
        // TORQUE's qstat exits 153 when there is nothing to show.
        if out.code != 0 && !(out.code == 153 && out.stdout.trim().is_empty()) {
            return Err(Error::CommandFailed {
                program,
                code: out.code,
                stderr: out.stderr.trim().to_string(),
            });
        }
        self.dialect
            .parse_status(&out.stdout)
            .map_err(|e| Error::UnexpectedOutput { program, output: e })
    }

    /// PBS array tasks' own ids, as recorded by the tasks under SLURM's
    /// Torque wrapper (empty elsewhere): one command reads them all.
    async fn server_ids(&self, cluster: &str) -> Result<BTreeMap<String, String>> {
        if self.dialect == Dialect::Slurm {
            return Ok(BTreeMap::new());
        }
        let dir = format!("{}/ids", self.log_dir(cluster));
        let out = self.run(files::read_dir_argv(&dir), None).await?;
        // grep exits 1 when nothing matched and 2 when the directory does
        // not exist yet: both mean no ids recorded.
        Ok(files::parse_dir_listing(&dir, &out.stdout))
    }

    fn describe_failure(&self, cluster: &str, id: &JobId, status: JobStatus) -> JobStatus {
        match status {
            JobStatus::Failed { reason } => JobStatus::Failed {
                reason: format!(
                    "{reason}; stderr: {}/{}.err",
                    self.log_dir(cluster),
                    Self::bare(cluster, id)
                ),
            },
            other => other,
        }
    }

    fn statuses(
        &self,
        cluster: &str,
        entries: &[QueueEntry],
        server_ids: &BTreeMap<String, String>,
        ids: &[JobId],
    ) -> BTreeMap<JobId, JobStatus> {
        ids.iter()
            .map(|id| {
                let s = resolve(self.dialect, entries, server_ids, Self::bare(cluster, id));
                (id.clone(), self.describe_failure(cluster, id, s))
            })
            .collect()
    }

    /// Pending worker jobs of the cluster, counted task by task.
    fn queued_workers(&self, cluster: &str, entries: &[QueueEntry]) -> u32 {
        let marker = script::marker(cluster);
        let sched = format!("{marker}scheduler");
        entries
            .iter()
            .filter(|e| e.name.starts_with(&marker) && e.name != sched)
            .filter(|e| e.status == JobStatus::Pending)
            .map(|e| match &e.tasks {
                Tasks::Many(set) => set.len() as u32,
                _ => 1,
            })
            .sum()
    }

    async fn submit(&self, spec: &ClusterSpec, role: &ScriptRole, text: &str) -> Result<String> {
        let log_dir = self.checked_log_dir(&spec.name)?;
        let (argv, stdin) = match self.dialect {
            Dialect::Slurm => {
                self.file_op(
                    "creating the log directory",
                    files::mkdir_argv(&[&log_dir]),
                    None,
                )
                .await?;
                (
                    self.submit_argv(role, "", &log_dir),
                    Some(text.as_bytes().to_vec()),
                )
            }
            Dialect::Pbs(_) => {
                // qsub takes the script as a file: write it next to the
                // output, on the host that runs qsub.
                let dir = format!("{log_dir}/scripts");
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let kind = match role {
                    ScriptRole::Scheduler { .. } => "scheduler",
                    ScriptRole::Workers { .. } => "workers",
                };
                let path = format!("{dir}/{kind}-{stamp}.sh");
                self.file_op(
                    "writing the job script",
                    files::write_argv(&dir, &path),
                    Some(text.as_bytes().to_vec()),
                )
                .await?;
                (self.submit_argv(role, &path, &log_dir), None)
            }
        };
        let program = argv[0].clone();
        let out = self.run(argv, stdin).await?;
        if out.code != 0 {
            // Torque's qsub prints its errors on stdout.
            let mut msg = out.stderr.trim().to_string();
            if msg.is_empty() {
                msg = out.stdout.trim().to_string();
            }
            return Err(Error::CommandFailed {
                program,
                code: out.code,
                stderr: msg,
            });
        }
        self.dialect
            .parse_submit(&out.stdout)
            .ok_or_else(|| Error::UnexpectedOutput {
                program,
                output: out.stdout.trim().to_string(),
            })
    }

    /// The server ids to cancel for muster ids, the tasks to stop by a
    /// tombstone (SLURM's Torque wrapper cannot delete one array task), and
    /// of those the ones not started yet (they stop when they start, so
    /// `cancel` does not wait for them).
    fn cancel_plan(
        &self,
        cluster: &str,
        entries: &[QueueEntry],
        server_ids: &BTreeMap<String, String>,
        ids: &[JobId],
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let mut not_started = Vec::new();
        let mut cancel = BTreeSet::new();
        let mut tombstones = Vec::new();
        // The arrays of tasks that recorded a server id of their own.
        let array_of: BTreeMap<&str, &str> = server_ids
            .iter()
            .filter_map(|(task, raw)| Some((raw.as_str(), self.dialect.split_id(task)?.0)))
            .collect();
        for id in ids {
            let id = Self::bare(cluster, id);
            match (self.dialect, self.dialect.split_id(id)) {
                (Dialect::Slurm, _) | (_, None) => {
                    cancel.insert(id.to_string());
                }
                (Dialect::Pbs(_), Some((plain, None))) => {
                    // A raw id found by `discover` under SLURM's wrapper: its
                    // `qdel` cannot stop one array task by that id, only the
                    // whole array by the array's id (which is what `down`,
                    // the only caller passing such ids, wants).
                    cancel.insert(array_of.get(plain).copied().unwrap_or(plain).to_string());
                }
                (Dialect::Pbs(_), Some((array, Some(i)))) => {
                    if let Some(e) = entries
                        .iter()
                        .find(|e| e.array == array && e.tasks == Tasks::One(i))
                    {
                        // Real PBS/TORQUE list and delete `1234[5]` itself.
                        cancel.insert(e.server_id.clone());
                    } else if server_ids.contains_key(id) {
                        // A started task under SLURM's wrapper, whose `qdel`
                        // cannot stop one array task: the task's script
                        // watches for this tombstone and stops its worker.
                        tombstones.push(id.to_string());
                    } else if entries.iter().any(|e| {
                        e.array == array && e.tasks == Tasks::NotArray && e.status.is_active()
                    }) {
                        tombstones.push(id.to_string());
                        not_started.push(id.to_string());
                    } else {
                        cancel.insert(id.to_string());
                    }
                }
            }
        }
        (cancel.into_iter().collect(), tombstones, not_started)
    }
}

#[async_trait]
impl<R: CommandRunner + 'static> Backend for HpcBackend<R> {
    fn kind(&self) -> &'static str {
        match self.dialect {
            Dialect::Slurm => "slurm",
            Dialect::Pbs(_) => "pbs",
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tls: true,
            ..Capabilities::default()
        }
    }

    fn scheduler_access(&self) -> Arc<dyn SchedulerAccess> {
        self.access.clone()
    }

    async fn preflight(&self) -> Result<Warnings> {
        let spec = &self.spec;
        self.template()?;
        self.checked_log_dir(&spec.name)?;
        // The submitting host's python (the login node's with submit_host):
        // compute nodes see the same shared software tree on the clusters
        // muster targets. Over SSH this is also the first connection, so a
        // bad host key or an unreachable login node stops `up` here.
        dask::check_pythons(&self.runner, spec).await?;
        Ok(Vec::new())
    }

    fn render(&self, role: &Role) -> Result<Rendered> {
        let contact = self.contact(role);
        match self.script_for(role)? {
            None if self.host_scheduler_error.is_some() => Err(Error::Usage(
                self.host_scheduler_error.clone().unwrap_or_default(),
            )),
            None => Ok(Rendered {
                contact,
                ..self.local.render(role)?
            }),
            Some((role, text)) => {
                let log_dir = self.log_dir(self.cluster());
                let path = match self.dialect {
                    Dialect::Slurm => "<stdin>".to_string(),
                    Dialect::Pbs(_) => format!("{log_dir}/scripts/<script>.sh"),
                };
                let argv = self.submit_argv(&role, &path, &log_dir);
                let what = match role {
                    ScriptRole::Scheduler { .. } => "scheduler job".to_string(),
                    ScriptRole::Workers { count, .. } => format!("{count} workers, one job array"),
                };
                let on = match &self.hpc.submit_host {
                    Some(host) => format!(" (on {host})"),
                    None => String::new(),
                };
                Ok(Rendered {
                    items: vec![RenderedItem {
                        title: format!("{what}: {}{on}", shell_words::join(&argv)),
                        text,
                    }],
                    contact,
                })
            }
        }
    }

    async fn launch(&self, req: &Role) -> Result<Launched> {
        let spec = &self.spec;
        let contact = self.contact(req);
        if matches!(req, Role::Scheduler) {
            let path = self.scheduler_path(spec);
            self.file_op(
                "removing a stale scheduler file",
                files::remove_argv(&path),
                None,
            )
            .await?;
        }
        let Some((role, text)) = self.script_for(req)? else {
            if self.hpc.log_directory.is_some() {
                let dir = self.checked_log_dir(&spec.name)?;
                self.file_op(
                    "creating the log directory",
                    files::mkdir_argv(&[&dir]),
                    None,
                )
                .await?;
            }
            if let Some(why) = &self.host_scheduler_error {
                return Err(Error::Usage(why.clone()));
            }
            let launched = self.local.launch(req).await?;
            return Ok(Launched {
                contact,
                ..launched
            });
        };
        if let (ScriptRole::Workers { count, .. }, Some(cap)) = (&role, self.hpc.max_queued_jobs) {
            let queued = self.queued_workers(&spec.name, &self.list().await?);
            if queued + count > cap {
                // The queue is full now, not the user's input: it may drain.
                return Err(Error::backend(
                    self.kind(),
                    format!(
                        "backend.max_queued_jobs is {cap}: {queued} worker jobs are queued already, adding {count} would exceed it"
                    ),
                    true,
                ));
            }
        }
        self.put_credentials(&role).await?;
        let array = self.submit(spec, &role, &text).await?;
        let jobs = match role {
            ScriptRole::Scheduler { .. } => vec![Self::full(&spec.name, &array)],
            ScriptRole::Workers { count, .. } => (0..count)
                .map(|i| Self::full(&spec.name, &self.dialect.task_id(&array, i)))
                .collect(),
        };
        Ok(Launched {
            jobs,
            contact,
            warnings: Vec::new(),
        })
    }

    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        let cluster = self.cluster();
        let (local, batch): (Vec<JobId>, Vec<JobId>) = ids
            .iter()
            .cloned()
            .partition(|id| Self::is_local(cluster, id));
        let mut out = if local.is_empty() {
            BTreeMap::new()
        } else {
            self.local.status(&local).await?
        };
        if !batch.is_empty() {
            let entries = self.list().await?;
            let server_ids = self.server_ids(cluster).await?;
            out.extend(self.statuses(cluster, &entries, &server_ids, &batch));
        }
        Ok(out)
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<()> {
        let cluster = self.cluster();
        let (local, batch): (Vec<JobId>, Vec<JobId>) = ids
            .iter()
            .cloned()
            .partition(|id| Self::is_local(cluster, id));
        if !batch.is_empty() {
            let entries = self.list().await?;
            let known = self.server_ids(cluster).await?;
            let (server_ids, tombstones, not_started) =
                self.cancel_plan(cluster, &entries, &known, &batch);
            if !tombstones.is_empty() {
                let dir = format!("{}/cancelled", self.log_dir(cluster));
                self.file_op(
                    "leaving cancel tombstones",
                    files::touch_argv(&dir, &tombstones),
                    None,
                )
                .await?;
            }
            if !server_ids.is_empty() {
                let argv = self.dialect.cancel_argv(&server_ids);
                let out = self.run(argv, None).await?;
                // scancel/qdel of a finished or unknown job is not an error here.
                if out.code != 0 {
                    tracing::debug!(code = out.code, stdout = %out.stdout.trim(), stderr = %out.stderr.trim(), "cancel reported");
                }
            }
            // Wait until nothing cancelled is still active in the queue.
            let waiting: Vec<JobId> = batch
                .iter()
                .filter(|id| !not_started.iter().any(|t| t == Self::bare(cluster, id)))
                .cloned()
                .collect();
            let start = Instant::now();
            loop {
                let entries = self.list().await?;
                let known = self.server_ids(cluster).await?;
                let live: Vec<String> = self
                    .statuses(cluster, &entries, &known, &waiting)
                    .into_iter()
                    .filter(|(_, s)| s.is_active())
                    .map(|(id, _)| id.0)
                    .chain(
                        // Ids given as the server lists them (from discover).
                        entries
                            .iter()
                            .filter(|e| e.status.is_active() && server_ids.contains(&e.server_id))
                            .filter(|e| !not_started.contains(&e.server_id))
                            .map(|e| e.server_id.clone()),
                    )
                    .collect();
                if live.is_empty() {
                    break;
                }
                if start.elapsed() > CANCEL_WAIT {
                    return Err(Error::LeftBehind {
                        cluster: cluster.to_string(),
                        jobs: live,
                    });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        self.local.cancel(&local).await
    }

    async fn discover(&self) -> Result<Discovered> {
        let cluster = self.cluster();
        let mut found = self.local.discover().await?.jobs;
        let marker = script::marker(cluster);
        for e in self.list().await? {
            if !e.name.starts_with(&marker) || !e.status.is_active() {
                continue;
            }
            match (&e.tasks, self.dialect) {
                (Tasks::Many(set), Dialect::Slurm) => found.extend(set.iter().map(|i| {
                    let bare = self.dialect.task_id(&e.array, *i);
                    (Self::full(cluster, &bare), e.status.clone())
                })),
                (Tasks::One(i), Dialect::Slurm) => {
                    let bare = self.dialect.task_id(&e.array, *i);
                    found.push((Self::full(cluster, &bare), e.status.clone()))
                }
                _ => found.push((Self::full(cluster, &e.server_id), e.status.clone())),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        Ok(Discovered {
            jobs: found,
            warnings: Vec::new(),
        })
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        let cluster = self.cluster();
        if Self::is_local(cluster, id) {
            return self.local.logs(id).await;
        }
        let dir = self.log_dir(cluster);
        let mut text = String::new();
        let mut found = false;
        let bare = Self::bare(cluster, id);
        for ext in ["out", "err"] {
            if let Some(part) = self.read_text(&format!("{dir}/{bare}.{ext}")).await? {
                found = true;
                text.push_str(&part);
            }
        }
        if found {
            Ok(text)
        } else {
            Err(Error::Usage(format!(
                "no output yet for job {id} of cluster {cluster:?} (looked in {dir})"
            )))
        }
    }

    async fn scheduler_endpoint(&self, _scheduler: &JobId) -> Result<Option<SchedulerEndpoint>> {
        let path = self.scheduler_path(&self.spec);
        Ok(self
            .read_text(&path)
            .await?
            .and_then(|text| dask::parse_scheduler_file(&text)))
    }

    async fn forget(&self) -> Result<Warnings> {
        if self.spec.scheduler.security.is_tls() {
            let dir = script::tls_dir(&self.log_dir(self.cluster()));
            self.file_op(
                "removing the TLS credentials",
                files::remove_tree_argv(&dir),
                None,
            )
            .await?;
        }
        self.local.forget().await
    }
}

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod tests;
