//! What the SSH backend knows of its hosts within one muster process: the
//! layout (which host runs what), the helper calls to one or many hosts,
//! the hosts found down, the jobs last seen, free ports probed for the
//! scheduler, the planning of new jobs onto slots, and the scheduler file's
//! distribution to the other hosts. It launches nothing itself (see `jobs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use futures_util::future::join_all;
use muster_core::backend::{Role, Warnings};
use muster_core::dask::{self, ProcessCommand, SchedulerEndpoint};
use muster_core::spec::SpecError;
use muster_core::{ClusterSpec, Error, JobId, Result};
use serde_json::{Value, json};

use crate::config;
use crate::placement::{Slot, host_of, place, scheduler_id, worker_id};
use crate::{
    HostAnswer, HostPlan, LaunchRequest, Layout, SCHEDULER_FILE, SshBackend, call_helper,
    default_start_method, is_unreachable, lock, runner,
};

impl SshBackend {
    /// The problems worked around since the last call, for its result.
    pub(crate) fn take_notes(&self) -> Warnings {
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

    pub(crate) fn note(&self, message: String) {
        tracing::warn!("{message}");
        lock(&self.notes).push(message);
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.ssh.command_timeout().duration()
    }

    /// Runs the helper on a host (see [`call_helper`]).
    pub(crate) async fn call(
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
    pub(crate) async fn call_many(
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

    pub(crate) fn worker_python(&self, host: &HostPlan) -> Option<String> {
        host.explicit_python
            .clone()
            .or_else(|| lock(&self.python).clone())
    }

    pub(crate) fn remember_free_port(&self, label: &str, probe: &Value) {
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
    pub(crate) fn planned_scheduler(
        &self,
        spec: &ClusterSpec,
        layout: &Layout,
    ) -> Option<(u16, String)> {
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
        Some((port, format!("tcp://{host}:{port}")))
    }

    pub(crate) fn remember_seen(&self, label: &str, jobs: &Value) {
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
    pub(crate) fn job_line(
        &self,
        cluster: &str,
        host: &HostPlan,
        id: &JobId,
        cmd: &ProcessCommand,
    ) -> String {
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
    pub(crate) fn plan(
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

    pub(crate) fn slots(&self, layout: &Layout) -> Vec<Slot> {
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
    pub(crate) async fn refresh(&self, cluster: &str, layout: &Layout) -> Result<()> {
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
    pub(crate) async fn finish_scheduler(
        &self,
        spec: &ClusterSpec,
    ) -> Result<Option<SchedulerEndpoint>> {
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
    pub(crate) async fn read_scheduler_file(&self, cluster: &str) -> Result<Option<String>> {
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
    pub(crate) async fn distribute(&self, spec: &ClusterSpec, text: &str) {
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

    pub(crate) fn hosts_of<'l>(
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
