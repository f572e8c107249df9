//! muster-hpc: the batch-scheduler backends, SLURM and PBS/TORQUE, as one
//! [`HpcBackend`] over a [`Dialect`]. Workers are submitted as job arrays
//! (adding k workers is one submission), every job's name carries the
//! cluster's `muster_<cluster>_<tag>_` marker, the tag naming the muster
//! home, so `down` finds them from the queue itself and `get clusters` finds
//! a home's clusters there without touching another home's, and one listing command per poll gives the states of the whole
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

mod backend;
pub mod dialect;
pub mod files;
pub mod hpcspec;
pub mod jobqueue;
mod kind;
mod queue;
pub mod script;

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use muster_core::access::{Direct, SchedulerAccess};
use muster_core::backend::{Role, SchedulerContact};
use muster_core::runner::{CommandRunner, LocalRunner};
use muster_core::spec::{ClusterSpec, Placement, SpecError};
use muster_core::{Error, Home, JobId, Result};
use muster_local::LocalBackend;

pub use dialect::Dialect;
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
    /// This home's tag in job names ([`script::job_tag`]).
    tag: String,
}

/// The clusters of `home` with live jobs in this machine's `kind` queue
/// (`squeue` or `qstat` on PATH), with their job ids, whether or not the
/// registry remembers them: found from the home's tag in the job names, so
/// other homes' jobs are never among them. A queue reached only through a
/// `submit_host` is not searched.
pub async fn home_clusters(
    kind: HpcKind,
    home: &Home,
) -> Result<std::collections::BTreeMap<String, Vec<JobId>>> {
    let mut spec = ClusterSpec::from_yaml("{}", None)?;
    spec.name = "listing".into();
    spec.backend = muster_core::BackendSpec::of_kind(match kind {
        HpcKind::Slurm => "slurm",
        HpcKind::Pbs => "pbs",
    });
    HpcBackend::for_spec(&spec, home.clone())?
        .home_clusters()
        .await
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
            tag: script::job_tag(dialect, &home.tag()),
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

    /// The same backend for the home of tag `home_tag` (tests pin a tag
    /// that does not depend on where their temporary home is).
    #[cfg(test)]
    pub(crate) fn with_home_tag(mut self, home_tag: &str) -> Self {
        self.tag = script::job_tag(self.dialect, home_tag);
        self
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
            tag: &self.tag,
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
}

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod tests;
