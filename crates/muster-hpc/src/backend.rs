//! [`HpcBackend`]'s [`Backend`] face: preflight, render, launch, status,
//! cancel, discover, logs and forget, each one a short sequence of the
//! queue operations (see `queue`) and of the host scheduler's local backend.
//! What a script says is `script`'s; what a queue answer means is
//! `dialect`'s; this module only puts them in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_core::access::SchedulerAccess;
use muster_core::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, Warnings,
};
use muster_core::dask::{self, SchedulerEndpoint};
use muster_core::runner::CommandRunner;
use muster_core::{Error, JobId, JobStatus, Result};

use crate::script::{self, ScriptRole};
use crate::{CANCEL_WAIT, Dialect, HpcBackend, files};

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
        let marker = script::marker(cluster, &self.tag);
        for e in self.list().await? {
            if e.name.starts_with(&marker) && e.status.is_active() {
                found.extend(self.entry_jobs(cluster, &e));
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
