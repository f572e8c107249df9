//! The SSH backend's job operations on the hosts: launching the scheduler and
//! workers through each host's helper, reading their states, cancelling
//! them, finding them again by their `/proc` markers, reading their logs and
//! removing the cluster's files. Hosts are asked in parallel; a host that is
//! down is noted and skipped where that is safe. It knows the helper's
//! requests, not how they reach the host (see `helper`).

use std::collections::BTreeMap;
use std::time::Duration;

use muster_core::backend::{Role, SchedulerContact};
use muster_core::dask::{ProcessCommand, SchedulerEndpoint};
use muster_core::{ClusterSpec, Error, JobId, JobStatus, Result};
use serde_json::{Value, json};

use crate::placement::host_of;
use crate::{
    HostPlan, LaunchRequest, PendingScheduler, SshBackend, call_helper, is_unreachable, lock,
};

impl SshBackend {
    pub(crate) async fn launch_jobs(&self, role: &Role) -> Result<Vec<JobId>> {
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
        let answers = self
            .call_many(&hosts, &spec.name, |h| {
                let hi = layout
                    .hosts
                    .iter()
                    .position(|x| x.label == h.label)
                    .unwrap_or(0);
                json!({
                    "op": "launch",
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

    pub(crate) async fn job_status(
        &self,
        cluster: &str,
        ids: &[JobId],
    ) -> Result<BTreeMap<JobId, JobStatus>> {
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

    pub(crate) async fn cancel_jobs(&self, cluster: &str, ids: &[JobId]) -> Result<()> {
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

    pub(crate) async fn find_jobs(&self, cluster: &str) -> Result<Vec<(JobId, JobStatus)>> {
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

    pub(crate) async fn job_logs(&self, cluster: &str, id: &JobId) -> Result<String> {
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

    pub(crate) async fn endpoint_of(
        &self,
        spec: &ClusterSpec,
    ) -> Result<Option<SchedulerEndpoint>> {
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

    pub(crate) async fn forget_files(&self, cluster: &str) -> Result<()> {
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
