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
mod helper;
mod hosts;
mod jobs;
pub mod placement;
pub mod runner;
pub mod session;
pub mod ssh_spec;
pub mod tunnel;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use muster_core::access::{Direct, SchedulerAccess};
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, Warnings,
};
use muster_core::dask::{ProcessCommand, SchedulerEndpoint};
use muster_core::spec::SpecError;
use muster_core::{ClusterSpec, Error, JobId, JobStatus, Result, SchedulerContact};
use serde_json::{Value, json};
pub use ssh_spec::{SshConnectSpec, SshHost, SshHostMap, SshSpec};

pub use config::{HostPlan, Layout, SshOptions};
pub use helper::call_helper;
pub use runner::SshRunner;
pub use session::{SshError, SshPool, SshTarget};

/// The scheduler file, in each host's cluster directory.
const SCHEDULER_FILE: &str = "scheduler.json";

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
        let (ssh, mut errs) = SshSpec::read(&spec.backend.options);
        if let Some(ssh) = ssh {
            ssh.validate(&mut errs);
        }
        errs.extend(muster_core::kinds::placement_needs_batch(spec));
        errs
    }
    fn build(
        &self,
        spec: &ClusterSpec,
        _home: &muster_core::Home,
    ) -> Result<std::sync::Arc<dyn Backend>> {
        Ok(std::sync::Arc::new(SshBackend::new(spec)?))
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
        let ssh = match SshSpec::read(&spec.backend.options) {
            (Some(ssh), errs) if errs.is_empty() => ssh,
            (_, errs) => return Err(SpecError::Invalid(errs).into()),
        };
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
        })
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

/// Workers launched with the scheduler wait for its file, relative to each
/// job's directory on its own host; muster copies it from the scheduler's
/// host to the others once it exists (hosts need not share a filesystem).
fn scheduler_contact(role: &Role) -> Option<SchedulerContact> {
    matches!(role, Role::Scheduler).then(|| SchedulerContact::File(SCHEDULER_FILE.into()))
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
            Some((41234, "tcp://h1:41234".to_string()))
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
            Some((8786, "tcp://[fd00::5]:8786".to_string()))
        );
        fixed.scheduler.host = Some("0.0.0.0".into());
        assert_eq!(backend.planned_scheduler(&fixed, layout), None);
    }
}
