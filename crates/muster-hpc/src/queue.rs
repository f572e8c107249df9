//! The batch queue's I/O for [`HpcBackend`]: building a submission's
//! argv, running a command with its timeout, file operations through the
//! runner (so they work behind a login node too), one listing of the
//! cluster's jobs, reading their states, and planning a cancellation (which
//! tasks, which tombstones, which never started). Parsing an answer is the
//! dialect's; this module only asks and passes the text on.

use std::collections::{BTreeMap, BTreeSet};

use muster_core::runner::{CommandRunner, CommandSpec};
use muster_core::spec::ClusterSpec;
use muster_core::{Error, JobId, JobStatus, Result};

use crate::dialect::{QueueEntry, Tasks, resolve};
use crate::script::{self, ScriptRole};
use crate::{COMMAND_TIMEOUT, Dialect, HpcBackend, files};

impl<R: CommandRunner> HpcBackend<R> {
    pub(crate) fn submit_argv(
        &self,
        role: &ScriptRole,
        script_path: &str,
        log_dir: &str,
    ) -> Vec<String> {
        let array = match role {
            ScriptRole::Workers { count, .. } => Some(*count),
            ScriptRole::Scheduler { .. } => None,
        };
        self.dialect.submit_argv(array, script_path, log_dir)
    }

    pub(crate) async fn run(
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
    pub(crate) async fn file_op(
        &self,
        what: &str,
        argv: Vec<String>,
        stdin: Option<Vec<u8>>,
    ) -> Result<()> {
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
    pub(crate) async fn read_text(&self, path: &str) -> Result<Option<String>> {
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

    /// The muster job ids (and states) one queue entry of `cluster` stands
    /// for: SLURM lists an array's tasks together, PBS each by its own id.
    pub(crate) fn entry_jobs(&self, cluster: &str, e: &QueueEntry) -> Vec<(JobId, JobStatus)> {
        match (&e.tasks, self.dialect) {
            (Tasks::Many(set), Dialect::Slurm) => set
                .iter()
                .map(|i| {
                    let bare = self.dialect.task_id(&e.array, *i);
                    (Self::full(cluster, &bare), e.status.clone())
                })
                .collect(),
            (Tasks::One(i), Dialect::Slurm) => {
                let bare = self.dialect.task_id(&e.array, *i);
                vec![(Self::full(cluster, &bare), e.status.clone())]
            }
            _ => vec![(Self::full(cluster, &e.server_id), e.status.clone())],
        }
    }

    /// The clusters of this backend's home that have live jobs in the
    /// queue, with those jobs' ids, found from the home's tag in the job
    /// names; the jobs of other homes and other tools are never among them.
    /// One listing call.
    pub async fn home_clusters(&self) -> Result<BTreeMap<String, Vec<JobId>>> {
        Ok(self.clusters_in(&self.list().await?))
    }

    /// [`Self::home_clusters`] of a listing already made.
    pub(crate) fn clusters_in(&self, entries: &[QueueEntry]) -> BTreeMap<String, Vec<JobId>> {
        let mut out: BTreeMap<String, Vec<JobId>> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.status.is_active()) {
            if let Some(cluster) = script::parse_job_name(&e.name, &self.tag) {
                let jobs = out.entry(cluster.to_string()).or_default();
                jobs.extend(self.entry_jobs(cluster, e).into_iter().map(|(id, _)| id));
            }
        }
        for jobs in out.values_mut() {
            jobs.sort();
            jobs.dedup();
        }
        out
    }

    /// PBS array tasks' own ids, as recorded by the tasks under SLURM's
    /// Torque wrapper (empty elsewhere): one command reads them all.
    pub(crate) async fn server_ids(&self, cluster: &str) -> Result<BTreeMap<String, String>> {
        if self.dialect == Dialect::Slurm {
            return Ok(BTreeMap::new());
        }
        let dir = format!("{}/ids", self.log_dir(cluster));
        let out = self.run(files::read_dir_argv(&dir), None).await?;
        // grep exits 1 when nothing matched and 2 when the directory does
        // not exist yet: both mean no ids recorded.
        Ok(files::parse_dir_listing(&dir, &out.stdout))
    }

    pub(crate) fn describe_failure(
        &self,
        cluster: &str,
        id: &JobId,
        status: JobStatus,
    ) -> JobStatus {
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

    pub(crate) fn statuses(
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
    pub(crate) fn queued_workers(&self, cluster: &str, entries: &[QueueEntry]) -> u32 {
        let marker = script::marker(cluster, &self.tag);
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

    pub(crate) async fn submit(
        &self,
        spec: &ClusterSpec,
        role: &ScriptRole,
        text: &str,
    ) -> Result<String> {
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
    pub(crate) fn cancel_plan(
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
