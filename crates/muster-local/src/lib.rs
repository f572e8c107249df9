//! muster-local: the embedded default backend. The Dask scheduler and every
//! worker job run as detached processes on this machine, each in its own
//! session so they outlive the command that started them, with output in the
//! cluster's state directory. Every process carries its cluster's marker in
//! its environment, so [`Backend::discover`] finds them through `/proc` even
//! when the registry is gone. This crate knows nothing of other backends.
//!
//! Per cluster, under `$MUSTER_HOME/clusters/<name>/`:
//! `scheduler.json` (the scheduler file), `logs/<job>.log`, `jobs/<job>.pid`
//! and `jobs/<job>.exit` (the exit code, written by a small `sh` wrapper when
//! the job ends, or `cancelled`).

pub mod procs;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_core::access::{Direct, SchedulerAccess};
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, SchedulerContact,
    Warnings,
};
use muster_core::dask::{self, ProcessCommand, SchedulerEndpoint};
use muster_core::runner::LocalRunner;
use muster_core::spec::ClusterSpec;
use muster_core::tls::Party;
use muster_core::{Error, Home, JobId, JobStatus, Result};
use nix::sys::signal::Signal;

/// The `sh` program that runs a job and records how it ended. The job's argv
/// follows as positional parameters, so nothing is ever re-parsed by a shell.
const WRAPPER: &str = r#""$@"; echo $? > "$MUSTER_EXIT_FILE""#;

/// How long a cancelled job gets to shut down after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// How long to wait after SIGKILL before declaring processes left behind.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The `local` kind: no options of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalKind;

impl muster_core::kinds::BackendKind for LocalKind {
    fn kind(&self) -> &'static str {
        "local"
    }
    fn validate(&self, spec: &ClusterSpec) -> Vec<muster_core::spec::FieldError> {
        let mut errs = muster_core::kinds::no_options(spec);
        errs.extend(muster_core::kinds::placement_needs_batch(spec));
        errs
    }
    fn build(&self, spec: &ClusterSpec, home: &Home) -> Result<std::sync::Arc<dyn Backend>> {
        Ok(std::sync::Arc::new(LocalBackend::new(
            home.clone(),
            spec.clone(),
        )))
    }
}

/// The local backend of one cluster.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    home: Home,
    spec: ClusterSpec,
    scheduler_dir: Option<PathBuf>,
}

impl LocalBackend {
    /// The backend of the cluster `spec`, keeping its files under `home`.
    pub fn new(home: Home, spec: ClusterSpec) -> Self {
        LocalBackend {
            home,
            spec,
            scheduler_dir: None,
        }
    }

    /// Publishes each cluster's scheduler file as `<dir>/<cluster>/scheduler.json`
    /// instead of in the cluster's state directory: for a scheduler whose
    /// workers run elsewhere and read it from a shared filesystem (the batch
    /// backends' `log_directory`). The directory must exist before launch.
    pub fn with_scheduler_dir(mut self, dir: PathBuf) -> Self {
        self.scheduler_dir = Some(dir);
        self
    }

    fn cluster(&self) -> &str {
        &self.spec.name
    }

    fn home_str(&self) -> String {
        self.home.root().display().to_string()
    }

    /// Where the cluster's credentials are (this machine runs every process).
    fn tls_dir(&self) -> String {
        muster_core::tls::local_dir(&self.home, self.cluster())
            .display()
            .to_string()
    }

    fn jobs_dir(&self, cluster: &str) -> PathBuf {
        self.home.cluster_dir(cluster).join("jobs")
    }

    fn log_path(&self, cluster: &str, job: &str) -> PathBuf {
        self.home
            .cluster_dir(cluster)
            .join("logs")
            .join(format!("{job}.log"))
    }

    fn pid_path(&self, cluster: &str, job: &str) -> PathBuf {
        self.jobs_dir(cluster).join(format!("{job}.pid"))
    }

    fn exit_path(&self, cluster: &str, job: &str) -> PathBuf {
        self.jobs_dir(cluster).join(format!("{job}.exit"))
    }

    fn scheduler_path(&self, cluster: &str) -> PathBuf {
        match &self.scheduler_dir {
            Some(dir) => dir.join(cluster).join("scheduler.json"),
            None => self.home.cluster_dir(cluster).join("scheduler.json"),
        }
    }

    /// Workers started with the scheduler wait for its file (this machine
    /// shares its filesystem with itself).
    fn contact(&self, role: &Role) -> Option<SchedulerContact> {
        matches!(role, Role::Scheduler)
            .then(|| SchedulerContact::File(self.scheduler_path(self.cluster())))
    }

    /// The jobs a request launches, with their exact commands (pure).
    fn plan(&self, role: &Role) -> Vec<(JobId, ProcessCommand)> {
        let spec = &self.spec;
        let mut jobs = match role {
            Role::Scheduler => {
                let host = spec.scheduler.host.as_deref().unwrap_or("127.0.0.1");
                let id = JobId(format!("{}-scheduler", spec.name));
                let mut cmd = dask::scheduler_command(spec, host, &self.scheduler_path(&spec.name));
                dask::secure(&mut cmd, spec, Party::Scheduler, &self.tls_dir());
                vec![(id, cmd)]
            }
            Role::Workers {
                first_index,
                count,
                contact,
            } => (0..u64::from(*count))
                .map(|i| {
                    let id = JobId(format!("{}-w{}", spec.name, first_index + i));
                    let mut cmd = dask::worker_command(spec, id.as_str(), contact);
                    dask::secure(&mut cmd, spec, Party::Worker, &self.tls_dir());
                    (id, cmd)
                })
                .collect(),
        };
        for (id, cmd) in &mut jobs {
            cmd.env.insert(procs::ENV_HOME.into(), self.home_str());
            cmd.env.insert(procs::ENV_CLUSTER.into(), spec.name.clone());
            cmd.env.insert(procs::ENV_JOB.into(), id.0.clone());
        }
        jobs
    }

    /// Starts one job detached: its own session, stdin from /dev/null, output
    /// to its log, pid recorded. Returns once the process exists.
    fn spawn(&self, cluster: &str, id: &JobId, cmd: &ProcessCommand) -> Result<()> {
        let log_path = self.log_path(cluster, id.as_str());
        let pid_path = self.pid_path(cluster, id.as_str());
        let exit_path = self.exit_path(cluster, id.as_str());
        for dir in [log_path.parent(), pid_path.parent()].into_iter().flatten() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let _ = fs::remove_file(&exit_path);
        let log = File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        tracing::debug!(job = %id, argv = ?cmd.argv, env = ?cmd.env, "spawn");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("muster-job")
            .args(&cmd.argv)
            .envs(&cmd.env)
            .env("MUSTER_EXIT_FILE", &exit_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        detach(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", cmd.argv.join(" ")), e))?;
        fs::write(&pid_path, child.id().to_string())
            .map_err(|e| Error::io(format!("writing {}", pid_path.display()), e))?;
        // Reap the child if this process lives longer than it; otherwise it is
        // re-parented when we exit.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }

    fn job_status(&self, cluster: &str, id: &JobId) -> JobStatus {
        let pid = fs::read_to_string(self.pid_path(cluster, id.as_str()))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let Some(pid) = pid else {
            return JobStatus::Unknown;
        };
        if procs::is_job_alive(pid, &self.home_str(), cluster, id.as_str()) {
            return JobStatus::Running;
        }
        // The wrapper may be gone while the job's children still exit.
        let exit = fs::read_to_string(self.exit_path(cluster, id.as_str())).ok();
        match exit.as_deref().map(str::trim) {
            Some("0") | Some("cancelled") => JobStatus::Finished,
            Some(code) => JobStatus::Failed {
                reason: exit_reason(code, &self.log_path(cluster, id.as_str())),
            },
            None => {
                if procs::scan(&self.home_str(), cluster)
                    .iter()
                    .any(|p| p.job == id.0)
                {
                    JobStatus::Running
                } else {
                    JobStatus::Failed {
                        reason: format!(
                            "the process vanished without an exit status (killed?); log: {}",
                            self.log_path(cluster, id.as_str()).display()
                        ),
                    }
                }
            }
        }
    }
}

/// Describes an exit code the way a person wants to read it.
fn exit_reason(code: &str, log: &Path) -> String {
    let what = match code.parse::<i32>() {
        Ok(c) if c > 128 && c < 160 => format!("killed by signal {}", c - 128),
        Ok(c) => format!("exited with code {c}"),
        Err(_) => format!("ended with status {code:?}"),
    };
    format!("{what}; log: {}", log.display())
}

pub use muster_core::runner::detach;

#[async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tls: true,
            ..Capabilities::default()
        }
    }

    fn scheduler_access(&self) -> std::sync::Arc<dyn SchedulerAccess> {
        std::sync::Arc::new(Direct)
    }

    async fn preflight(&self) -> Result<Warnings> {
        dask::check_pythons(&LocalRunner, &self.spec).await?;
        Ok(Vec::new())
    }

    fn render(&self, role: &Role) -> Result<Rendered> {
        let items = self
            .plan(role)
            .into_iter()
            .map(|(id, cmd)| RenderedItem {
                title: format!(
                    "{id} (detached; log {})",
                    self.log_path(self.cluster(), id.as_str()).display()
                ),
                text: cmd.to_shell(),
            })
            .collect();
        Ok(Rendered {
            items,
            contact: self.contact(role),
        })
    }

    async fn launch(&self, role: &Role) -> Result<Launched> {
        let cluster = self.cluster();
        if matches!(role, Role::Scheduler) {
            let path = self.scheduler_path(cluster);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing stale {}", path.display()), e)),
            }
        }
        let mut ids = Vec::new();
        for (id, cmd) in self.plan(role) {
            self.spawn(cluster, &id, &cmd)?;
            ids.push(id);
        }
        Ok(Launched {
            jobs: ids,
            contact: self.contact(role),
            warnings: Vec::new(),
        })
    }

    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        let cluster = self.cluster();
        Ok(ids
            .iter()
            .map(|id| (id.clone(), self.job_status(cluster, id)))
            .collect())
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<()> {
        let cluster = self.cluster();
        if ids.is_empty() {
            return Ok(());
        }
        tracing::debug!(?ids, "cancel");
        let home = self.home_str();
        let wanted: std::collections::BTreeSet<&str> = ids.iter().map(JobId::as_str).collect();
        let mut termed = std::collections::BTreeSet::new();
        let start = Instant::now();
        let mut killed = false;
        loop {
            let live: Vec<_> = procs::scan(&home, cluster)
                .into_iter()
                .filter(|p| wanted.contains(p.job.as_str()))
                .collect();
            if live.is_empty() {
                break;
            }
            if start.elapsed() >= GRACE {
                if start.elapsed() >= GRACE + KILL_WAIT && killed {
                    return Err(Error::LeftBehind {
                        cluster: cluster.to_string(),
                        jobs: live
                            .iter()
                            .map(|p| format!("{} (pid {})", p.job, p.pid))
                            .collect(),
                    });
                }
                for p in &live {
                    procs::signal(p.pid, Signal::SIGKILL);
                }
                killed = true;
            } else {
                for p in &live {
                    if termed.insert(p.pid) {
                        procs::signal(p.pid, Signal::SIGTERM);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in ids {
            let exit = self.exit_path(cluster, id.as_str());
            if self.pid_path(cluster, id.as_str()).exists() && !exit.exists() {
                let _ = fs::write(&exit, "cancelled");
            }
        }
        Ok(())
    }

    async fn discover(&self) -> Result<Discovered> {
        let found = procs::scan(&self.home_str(), self.cluster());
        Ok(Discovered {
            jobs: procs::by_job(&found)
                .into_keys()
                .map(|job| (JobId::from(job), JobStatus::Running))
                .collect(),
            warnings: Vec::new(),
        })
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        let cluster = self.cluster();
        let path = self.log_path(cluster, id.as_str());
        match fs::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Usage(format!(
                "no log for job {id:?} of cluster {cluster:?} (see `muster get workers {cluster}`)"
            ))),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    async fn scheduler_endpoint(&self, _scheduler: &JobId) -> Result<Option<SchedulerEndpoint>> {
        dask::read_scheduler_file(&self.scheduler_path(self.cluster()))
    }

    async fn forget(&self) -> Result<Warnings> {
        // Everything lives in the cluster directory, which the registry removes.
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::SchedulerContact;

    fn spec(yaml: &str) -> ClusterSpec {
        let s = ClusterSpec::from_yaml(yaml, None).unwrap();
        s.validate().unwrap();
        s
    }

    fn render(spec: &ClusterSpec, role: Role) -> String {
        let backend = LocalBackend::new(Home::at("/home/u/.local/state/muster"), spec.clone());
        let r = backend.render(&role).unwrap();
        r.items
            .iter()
            .map(|i| format!("# {}\n{}\n", i.title, i.text))
            .collect()
    }

    #[test]
    fn renders_the_scheduler() {
        let s = spec("name: demo\nscheduler: {port: 8786, dashboard_port: 8787}");
        insta::assert_snapshot!(render(&s, Role::Scheduler));
    }

    #[test]
    fn renders_workers_with_hostile_values_quoted() {
        let s = spec(
            r#"
name: demo
worker:
  cores: 4
  processes: 2
  memory: 4GiB
  python: "/opt/my env/bin/python"
  env: {EVIL: "$(touch /tmp/pwned); `id` 'x' \"y\""}
  extra_args: ["--resources", "GPU=1;reboot"]
"#,
        );
        let role = Role::Workers {
            first_index: 3,
            count: 2,
            contact: SchedulerContact::File(
                "/home/u/.local/state/muster/clusters/demo/scheduler.json".into(),
            ),
        };
        insta::assert_snapshot!(render(&s, role));
    }

    /// A command carrying the marker of `job` in `cluster`, as `plan` makes them.
    fn marked(backend: &LocalBackend, cluster: &str, job: &str, argv: &[&str]) -> ProcessCommand {
        ProcessCommand {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: [
                (procs::ENV_HOME.to_string(), backend.home_str()),
                (procs::ENV_CLUSTER.to_string(), cluster.to_string()),
                (procs::ENV_JOB.to_string(), job.to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn exit_reasons_read_well() {
        let log = Path::new("/l/w.log");
        assert_eq!(exit_reason("3", log), "exited with code 3; log: /l/w.log");
        assert_eq!(exit_reason("137", log), "killed by signal 9; log: /l/w.log");
    }

    #[tokio::test]
    async fn jobs_are_detached_found_by_marker_and_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(Home::at(dir.path()), spec("name: t"));
        let id = JobId::from("t-w0");
        let cmd = marked(&backend, "t", "t-w0", &["sleep", "30"]);
        backend.spawn("t", &id, &cmd).unwrap();
        let found = backend.discover().await.unwrap().jobs;
        assert_eq!(found, vec![(id.clone(), JobStatus::Running)]);
        assert_eq!(
            backend.status(std::slice::from_ref(&id)).await.unwrap()[&id],
            JobStatus::Running
        );
        // Its own session: not in ours.
        let pid: i32 = fs::read_to_string(backend.pid_path("t", "t-w0"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))
                .unwrap()
                .as_raw(),
            pid
        );
        backend.cancel(std::slice::from_ref(&id)).await.unwrap();
        assert!(backend.discover().await.unwrap().jobs.is_empty());
        assert_eq!(
            backend.status(std::slice::from_ref(&id)).await.unwrap()[&id],
            JobStatus::Finished
        );
        // Cancelling again, or an unknown job, is fine.
        backend.cancel(&[id, JobId::from("t-w9")]).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_job_reports_its_exit_code_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(Home::at(dir.path()), spec("name: f"));
        let id = JobId::from("f-w0");
        let cmd = marked(
            &backend,
            "f",
            "f-w0",
            &["sh", "-c", "echo boom >&2; exit 3"],
        );
        backend.spawn("f", &id, &cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let s = backend.status(std::slice::from_ref(&id)).await.unwrap()[&id].clone();
            if !s.is_active() || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match status {
            JobStatus::Failed { reason } => {
                assert!(reason.starts_with("exited with code 3; log: "), "{reason}")
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert_eq!(backend.logs(&id).await.unwrap(), "boom\n");
        assert_eq!(
            backend.status(&[JobId::from("nope")]).await.unwrap()[&JobId::from("nope")],
            JobStatus::Unknown
        );
    }

    #[tokio::test]
    async fn keeps_the_backend_contract() {
        // Real detached processes; the worker "python" is a stand-in that
        // runs without a scheduler (the contract needs none).
        let dir = tempfile::tempdir().unwrap();
        let python = dir.path().join("python");
        fs::write(&python, "#!/bin/sh\nexec sleep 60\n").unwrap();
        let mut perms = fs::metadata(&python).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&python, perms).unwrap();
        let s = spec(&format!(
            "name: ctr\nworker: {{python: {}}}",
            python.display()
        ));
        let backend = LocalBackend::new(Home::at(dir.path().join("home")), s);
        muster_core::testkit::contract::run(&backend, "ctr").await;
    }
}
