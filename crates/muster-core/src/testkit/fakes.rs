//! The fakes of the test kit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access::{Direct, SchedulerAccess};
use crate::backend::{
    Backend, Capabilities, Discovered, Launched, Rendered, RenderedItem, Role, SchedulerContact,
    Warnings,
};
use crate::dask::SchedulerEndpoint;
use crate::error::{Error, Result};
use crate::job::{JobId, JobStatus};
use crate::reconcile::{Clock, ClusterStore, StoreGuard, Timeline};
use crate::registry::ClusterRecord;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backend whose jobs live in memory: launches start them Running (or
/// fail, when told to), cancel finishes them, `kill` ends one on its own.
#[derive(Debug, Default)]
pub struct FakeBackend {
    name: String,
    jobs: Mutex<BTreeMap<JobId, JobStatus>>,
    endpoint: Mutex<Option<SchedulerEndpoint>>,
    fail_launches: Mutex<Option<String>>,
    /// Launch calls made (failed ones included).
    pub launches: AtomicU32,
}

impl FakeBackend {
    /// A fake backend of cluster `name`.
    pub fn new(name: &str) -> Self {
        FakeBackend {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// The scheduler endpoint to publish once the scheduler is launched.
    pub fn with_endpoint(self, address: &str, http_url: &str) -> Self {
        *lock(&self.endpoint) = Some(SchedulerEndpoint {
            address: address.into(),
            http_url: http_url.into(),
        });
        self
    }

    /// Makes every launch fail with this stderr (`None`: succeed again).
    pub fn fail_launches(&self, stderr: Option<&str>) {
        *lock(&self.fail_launches) = stderr.map(str::to_string);
    }

    /// Ends a job on its own, as a crash would.
    pub fn kill(&self, id: &JobId) {
        lock(&self.jobs).insert(
            id.clone(),
            JobStatus::Failed {
                reason: "killed".into(),
            },
        );
    }

    /// The jobs still active.
    pub fn active(&self) -> Vec<JobId> {
        lock(&self.jobs)
            .iter()
            .filter(|(_, s)| s.is_active())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn planned(&self, role: &Role) -> Vec<JobId> {
        match role {
            Role::Scheduler => vec![JobId(format!("{}-scheduler", self.name))],
            Role::Workers {
                first_index, count, ..
            } => (0..u64::from(*count))
                .map(|i| JobId(format!("{}-w{}", self.name, first_index + i)))
                .collect(),
        }
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn scheduler_access(&self) -> Arc<dyn SchedulerAccess> {
        Arc::new(Direct)
    }
    async fn preflight(&self) -> Result<Warnings> {
        Ok(Vec::new())
    }
    fn render(&self, role: &Role) -> Result<Rendered> {
        Ok(Rendered {
            items: self
                .planned(role)
                .into_iter()
                .map(|id| RenderedItem {
                    title: id.0.clone(),
                    text: format!("run {id}"),
                })
                .collect(),
            contact: matches!(role, Role::Scheduler)
                .then(|| SchedulerContact::File("scheduler.json".into())),
        })
    }
    async fn launch(&self, role: &Role) -> Result<Launched> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        if let Some(stderr) = lock(&self.fail_launches).clone() {
            return Err(Error::CommandFailed {
                program: "fake-submit".into(),
                code: 1,
                stderr,
            });
        }
        let jobs = self.planned(role);
        let mut all = lock(&self.jobs);
        for id in &jobs {
            all.insert(id.clone(), JobStatus::Running);
        }
        Ok(Launched {
            contact: self.render(role)?.contact,
            jobs,
            warnings: Vec::new(),
        })
    }
    async fn status(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobStatus>> {
        let all = lock(&self.jobs);
        Ok(ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    all.get(id).cloned().unwrap_or(JobStatus::Unknown),
                )
            })
            .collect())
    }
    async fn cancel(&self, ids: &[JobId]) -> Result<()> {
        let mut all = lock(&self.jobs);
        for id in ids {
            if let Some(s) = all.get_mut(id)
                && s.is_active()
            {
                *s = JobStatus::Finished;
            }
        }
        Ok(())
    }
    async fn discover(&self) -> Result<Discovered> {
        let jobs = lock(&self.jobs)
            .iter()
            .filter(|(_, s)| s.is_active())
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        Ok(Discovered {
            jobs,
            warnings: Vec::new(),
        })
    }
    async fn logs(&self, id: &JobId) -> Result<String> {
        match lock(&self.jobs).get(id) {
            Some(_) => Ok(format!("log of {id}\n")),
            None => Err(Error::Usage(format!("no job {id}"))),
        }
    }
    async fn scheduler_endpoint(&self, _scheduler: &JobId) -> Result<Option<SchedulerEndpoint>> {
        Ok(lock(&self.endpoint).clone())
    }
    async fn forget(&self) -> Result<Warnings> {
        Ok(Vec::new())
    }
}

/// A cluster's state in memory, with a real (async) lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    name: String,
    record: Mutex<Option<ClusterRecord>>,
    held: Arc<tokio::sync::Mutex<()>>,
}

impl MemoryStore {
    /// A store holding `record`.
    pub fn new(record: ClusterRecord) -> Self {
        MemoryStore {
            name: record.name.clone(),
            record: Mutex::new(Some(record)),
            held: Arc::default(),
        }
    }
    /// The record now.
    pub fn get(&self) -> Option<ClusterRecord> {
        lock(&self.record).clone()
    }
}

#[async_trait]
impl ClusterStore for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }
    async fn lock(&self) -> Result<StoreGuard> {
        Ok(StoreGuard(Box::new(self.held.clone().lock_owned().await)))
    }
    async fn load(&self) -> Result<Option<ClusterRecord>> {
        Ok(self.get())
    }
    async fn save(&self, record: &ClusterRecord) -> Result<()> {
        *lock(&self.record) = Some(record.clone());
        Ok(())
    }
    async fn remove(&self) -> Result<()> {
        *lock(&self.record) = None;
        Ok(())
    }
}

/// Events kept in memory, as (kind, message).
#[derive(Debug, Default)]
pub struct MemoryTimeline(pub Mutex<Vec<(String, String)>>);

impl MemoryTimeline {
    /// The kinds recorded so far.
    pub fn kinds(&self) -> Vec<String> {
        lock(&self.0).iter().map(|(k, _)| k.clone()).collect()
    }
}

#[async_trait]
impl Timeline for MemoryTimeline {
    async fn record(&self, kind: &str, message: &str) -> Result<()> {
        lock(&self.0).push((kind.to_string(), message.to_string()));
        Ok(())
    }
}

/// A clock that stands still until a test (or a `sleep`) advances it.
#[derive(Debug)]
pub struct TestClock(Mutex<Duration>);

impl Default for TestClock {
    fn default() -> Self {
        // Some wall-clock-like time, so Unix-second arithmetic looks real.
        TestClock(Mutex::new(Duration::from_secs(1_800_000_000)))
    }
}

impl TestClock {
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *lock(&self.0) += by;
    }
}

#[async_trait]
impl Clock for TestClock {
    fn now(&self) -> Duration {
        *lock(&self.0)
    }
    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

/// The scheduler routes the reconciler reads (`get_workers`,
/// `adaptive_target`, `check_idle`, `retire_workers`), served on loopback
/// from values a test sets; `up: false` drops connections.
#[derive(Debug, Clone)]
pub struct FakeScheduler {
    /// Base URL of the API.
    pub url: String,
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug)]
struct FakeState {
    up: bool,
    target: u32,
    workers: Vec<String>,
    /// (busy tasks, bytes) per worker name, for `/json/identity.json`.
    loads: BTreeMap<String, (u64, u64)>,
}

impl FakeScheduler {
    /// Starts serving on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let state = Arc::new(Mutex::new(FakeState {
            up: true,
            target: 0,
            workers: Vec::new(),
            loads: BTreeMap::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let st = shared.clone();
                tokio::spawn(async move {
                    let req = read_request(&mut sock).await;
                    let body = {
                        let mut s = lock(&st);
                        if !s.up {
                            return;
                        }
                        answer(&mut s, &req)
                    };
                    let status = if body.is_empty() {
                        "404 Not Found"
                    } else {
                        "200 OK"
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        FakeScheduler { url, state }
    }
    /// Sets the adaptive target.
    pub fn set_target(&self, target: u32) {
        lock(&self.state).target = target;
    }
    /// Sets the Dask workers registered (by name).
    pub fn set_workers(&self, names: &[JobId]) {
        lock(&self.state).workers = names.iter().map(|n| n.0.clone()).collect();
    }
    /// Sets a worker's load: tasks on it and bytes it holds.
    pub fn set_load(&self, name: &str, busy: u64, bytes: u64) {
        lock(&self.state)
            .loads
            .insert(name.to_string(), (busy, bytes));
    }
    /// The workers registered now (by name).
    pub fn workers(&self) -> Vec<String> {
        lock(&self.state).workers.clone()
    }
    /// Answers, or drops every connection.
    pub fn set_up(&self, up: bool) {
        lock(&self.state).up = up;
    }
}

/// One HTTP request, headers and body (up to its Content-Length).
async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn answer(s: &mut FakeState, req: &str) -> String {
    let worker =
        |n: &String| format!("{{\"name\": \"{n}\", \"address\": \"tcp://127.0.0.1:1/{n}\"}}");
    if req.starts_with("GET /api/v1/adaptive_target") {
        format!("{{\"workers\": {}}}", s.target)
    } else if req.starts_with("GET /api/v1/get_workers") {
        let ws: Vec<String> = s.workers.iter().map(worker).collect();
        format!(
            "{{\"num_workers\": {}, \"workers\": [{}]}}",
            ws.len(),
            ws.join(", ")
        )
    } else if req.starts_with("GET /json/identity.json") {
        let ws: Vec<String> = s
            .workers
            .iter()
            .map(|n| {
                let (busy, bytes) = s.loads.get(n).copied().unwrap_or_default();
                format!(
                    "\"tcp://127.0.0.1:1/{n}\": {{\"name\": \"{n}\", \"metrics\": \
                     {{\"task_counts\": {{\"executing\": {busy}}}, \"managed_bytes\": {bytes}}}}}"
                )
            })
            .collect();
        format!("{{\"workers\": {{{}}}}}", ws.join(", "))
    } else if req.starts_with("GET /api/v1/check_idle") {
        "{\"idle_since\": null}".to_string()
    } else if req.starts_with("POST /api/v1/retire_workers") {
        // Retires what was asked by address, or the newest `n`.
        let body = req.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let mut gone = Vec::new();
        if let Some(addrs) = v["workers"].as_array() {
            for a in addrs.iter().filter_map(|a| a.as_str()) {
                if let Some(name) = a.rsplit('/').next() {
                    gone.push(name.to_string());
                }
            }
        } else if let Some(n) = v["n"].as_u64() {
            let k = s.workers.len().saturating_sub(n as usize);
            gone = s.workers[k..].to_vec();
        }
        s.workers.retain(|w| !gone.contains(w));
        let map: Vec<String> = gone
            .iter()
            .map(|n| format!("\"tcp://127.0.0.1:1/{n}\": {{\"name\": \"{n}\"}}"))
            .collect();
        format!("{{{}}}", map.join(", "))
    } else {
        String::new()
    }
}
