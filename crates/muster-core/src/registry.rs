//! The cluster registry under `$MUSTER_HOME`: one directory per cluster with a
//! `cluster.json` record, written atomically (temp file + rename), and a
//! per-cluster lock file so concurrent commands cannot interleave changes.
//! The registry is a cache of what muster launched; the cluster managers
//! themselves stay the truth (see `Backend::discover`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::SchedulerContact;
use crate::error::{Error, Result};
use crate::job::JobId;
use crate::policy::PolicyState;
use crate::spec::{ClusterSpec, check_name};

/// The root of muster's state: `$MUSTER_HOME`, else `$XDG_STATE_HOME/muster`,
/// else `~/.local/state/muster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at an explicit path.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The home the environment selects.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let root = if let Some(h) = var("MUSTER_HOME") {
            PathBuf::from(h)
        } else if let Some(x) = var("XDG_STATE_HOME") {
            PathBuf::from(x).join("muster")
        } else if let Some(h) = var("HOME") {
            PathBuf::from(h).join(".local/state/muster")
        } else {
            return Err(Error::Usage(
                "cannot find a state directory: set MUSTER_HOME or HOME".into(),
            ));
        };
        // Absolute, so processes started elsewhere agree on the marker.
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("current directory", e))?
                .join(root)
        };
        Ok(Home { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A short tag of this home (8 hex digits of the SHA-256 of its
    /// canonical path: its deepest existing ancestor resolved, the rest
    /// appended, so a home's tag is the same before and after its directory
    /// is created): what a batch job's name carries so that the queue,
    /// which knows nothing of homes, tells this home's jobs from another's.
    /// The hash is ring's, already linked for TLS; it must never change
    /// between versions, or a new muster would not recognise an older one's
    /// jobs.
    pub fn tag(&self) -> String {
        let mut rest = Vec::new();
        let mut at = self.root.as_path();
        let path = loop {
            if let Ok(real) = std::fs::canonicalize(at) {
                break rest.iter().rev().fold(real, |p: PathBuf, c| p.join(c));
            }
            match (at.parent(), at.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    at = parent;
                }
                _ => break self.root.clone(),
            }
        };
        let digest =
            ring::digest::digest(&ring::digest::SHA256, path.as_os_str().as_encoded_bytes());
        digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn clusters_dir(&self) -> PathBuf {
        self.root.join("clusters")
    }

    /// The directory of one cluster (its record, logs and job files).
    pub fn cluster_dir(&self, name: &str) -> PathBuf {
        self.clusters_dir().join(name)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.cluster_dir(name).join("cluster.json")
    }

    /// Takes the cluster's lock, waiting for any other muster command that
    /// holds it. The lock is released when the guard drops or the process dies.
    pub fn lock(&self, name: &str) -> Result<ClusterLock> {
        check_name(name)
            .map_err(|reason| Error::Usage(format!("cluster name {name:?}: {reason}")))?;
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                // Say who holds it (the holder wrote that into the file), on
                // stderr: a command must not wait silently.
                let text = fs::read_to_string(&path).unwrap_or_default();
                let mut lines = text.lines();
                let who = lines.next().filter(|l| !l.is_empty());
                let since = lines.next().and_then(|l| l.trim().parse::<u64>().ok());
                tracing::warn!(
                    "waiting for cluster {name}'s lock, held by {}{}",
                    who.unwrap_or("another muster command"),
                    since
                        .map(|t| format!(" for {}s", unix_now().saturating_sub(t)))
                        .unwrap_or_default()
                );
                file.lock()
                    .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
        write_holder(&file);
        Ok(ClusterLock { _file: file })
    }

    /// Reads a cluster's record, if there is one.
    pub fn load(&self, name: &str) -> Result<Option<ClusterRecord>> {
        let path = self.record_path(name);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                Error::io(
                    format!("reading {}", path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Creates a cluster's directory and writes its first record (`up`).
    pub fn create(&self, record: &ClusterRecord) -> Result<()> {
        let dir = self.cluster_dir(&record.name);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        self.save(record)
    }

    /// Replaces an existing cluster's record atomically: readers see the old
    /// or the new record, never a torn one. When the cluster's directory is
    /// gone (`down` ran, or someone deleted the registry), this is
    /// [`Error::NotFound`] and nothing is written: an agent whose round loaded
    /// the record just before must not bring the cluster back.
    pub fn save(&self, record: &ClusterRecord) -> Result<()> {
        let dir = self.cluster_dir(&record.name);
        if !dir.is_dir() {
            return Err(Error::NotFound(record.name.clone()));
        }
        let json = serde_json::to_vec_pretty(record).expect("a record always serialises");
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| Error::io(format!("writing in {}", dir.display()), e))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| Error::io("writing cluster record", e))?;
        tmp.persist(self.record_path(&record.name))
            .map_err(|e| Error::io("replacing cluster record", e.error))?;
        Ok(())
    }

    /// Removes a cluster's directory (record, logs, job files).
    pub fn remove(&self, name: &str) -> Result<()> {
        let dir = self.cluster_dir(name);
        // A process that does not hold the lock (an agent writing its
        // heartbeat as it exits) may add a file meanwhile: try again.
        let mut tries = 0;
        loop {
            match fs::remove_dir_all(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
            }
        }
    }

    /// Every cluster with a record, sorted by name. Unreadable records are
    /// skipped with a warning.
    pub fn list(&self) -> Result<Vec<ClusterRecord>> {
        let dir = self.clusters_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match self.load(&name) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping cluster {name}: {e}"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// The file registry as a [`ClusterStore`](crate::reconcile::ClusterStore):
/// the agent's and the CLI's store.
#[derive(Debug, Clone)]
pub struct FileStore {
    home: Home,
    name: String,
}

impl FileStore {
    /// The store of cluster `name` under `home`.
    pub fn new(home: Home, name: &str) -> Self {
        FileStore {
            home,
            name: name.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl crate::reconcile::ClusterStore for FileStore {
    fn name(&self) -> &str {
        &self.name
    }
    async fn lock(&self) -> Result<crate::reconcile::StoreGuard> {
        let home = self.home.clone();
        let name = self.name.clone();
        // flock may wait for another command: off the async threads.
        let lock = tokio::task::spawn_blocking(move || home.lock(&name))
            .await
            .map_err(|e| Error::io("waiting for the cluster lock", std::io::Error::other(e)))??;
        Ok(crate::reconcile::StoreGuard(Box::new(lock)))
    }
    async fn load(&self) -> Result<Option<ClusterRecord>> {
        self.home.load(&self.name)
    }
    async fn save(&self, record: &ClusterRecord) -> Result<()> {
        self.home.save(record)
    }
    async fn remove(&self) -> Result<()> {
        self.home.remove(&self.name)
    }
}

/// Records in the lock file who holds it (pid, command line, since when),
/// for a command that has to wait. Best effort: the lock is the flock, not
/// this text.
fn write_holder(mut file: &fs::File) {
    use std::io::{Seek, Write};
    let argv: Vec<String> = std::env::args()
        .map(|a| {
            a.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        })
        .collect();
    let text = format!(
        "pid {} (`{}`)\n{}\n",
        std::process::id(),
        argv.join(" "),
        unix_now()
    );
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(text.as_bytes()));
}

/// Holds a cluster's lock until dropped.
#[derive(Debug)]
pub struct ClusterLock {
    _file: File,
}

/// Where a cluster is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `up` is launching it.
    Starting,
    /// Up and serving.
    Running,
    /// `down` is stopping it.
    Stopping,
    /// `up` failed; what was launched has been cleaned up.
    Failed,
}

impl Phase {
    /// The word shown in tables.
    pub fn word(self) -> &'static str {
        match self {
            Phase::Starting => "Starting",
            Phase::Running => "Running",
            Phase::Stopping => "Stopping",
            Phase::Failed => "Failed",
        }
    }
}

/// What the registry remembers of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster's name.
    pub name: String,
    /// The spec it was brought up with (the worker count is the desired size).
    pub spec: ClusterSpec,
    /// Where it is in its life.
    pub phase: Phase,
    /// The scheduler's job.
    pub scheduler_job: Option<JobId>,
    /// The scheduler's comm address, once known.
    pub scheduler_address: Option<String>,
    /// The scheduler's dashboard/API base URL, once known.
    pub http_url: Option<String>,
    /// The worker jobs launched and not yet removed.
    pub workers: Vec<JobId>,
    /// The index the next worker gets (indices are never reused).
    pub next_worker_index: u64,
    /// When the cluster was created (Unix seconds).
    pub created_at: u64,
    /// Set while a launch of workers is under way and its jobs are not
    /// recorded yet. Found set by the next process holding the cluster's
    /// lock, it means the launching process died: the jobs it may have
    /// started are adopted from the manager (see
    /// `ManagedCluster::prune_ended`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub launching: bool,
    /// How new workers reach the scheduler, as its launch said (a scheduler
    /// file they wait for); absent: its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<SchedulerContact>,
    /// Bumped whenever the adaptive settings are set (`muster adapt`), even
    /// to the same values: the policy then starts afresh, unpaused.
    #[serde(default)]
    pub adapt_generation: u64,
    /// What the last round observed (kept apart from the desired size in
    /// `spec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// What the policy remembers between rounds, so a restarted agent
    /// resumes paused and backed off as it was.
    #[serde(default)]
    pub policy: PolicyMemory,
    /// The client's TLS files on this machine, when the cluster speaks TLS
    /// (muster's own HTTP calls trust exactly the CA named here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<crate::tls::PartyFiles>,
    /// The last worker jobs that ended on their own (newest last, at most
    /// [`KEEP_ENDED`]): gone from `workers` once a round saw them end, they
    /// stay listed with their state so `logs --all` still shows why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<EndedJob>,
}

/// How many ended worker jobs a record remembers.
pub const KEEP_ENDED: usize = 8;

/// A worker job that ended on its own, as the round that saw it recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedJob {
    /// The job.
    pub id: JobId,
    /// Its state when it was seen ended.
    pub status: crate::job::JobStatus,
}

/// One round's observation, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Observed {
    /// Worker jobs launched and not ended.
    pub jobs: u32,
    /// Of those, jobs with a Dask worker registered.
    pub connected: u32,
    /// The scheduler's adaptive target (Dask workers), when it answered.
    pub target: Option<u32>,
    /// When (Unix seconds).
    pub at: u64,
}

/// The policy's persisted memory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyMemory {
    /// The `adapt_generation` this memory belongs to.
    pub generation: u64,
    /// The settings it was built under; other settings start it afresh.
    #[serde(default)]
    pub settings: String,
    /// The policy's state (times since the Unix epoch).
    pub state: PolicyState,
    /// The kind of the last event written, so a situation that persists is
    /// written once.
    #[serde(default)]
    pub last_kind: String,
    /// The last decision's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
}

impl ClusterRecord {
    /// A fresh record for a spec about to be launched.
    pub fn new(spec: ClusterSpec) -> Self {
        ClusterRecord {
            name: spec.name.clone(),
            spec,
            phase: Phase::Starting,
            scheduler_job: None,
            scheduler_address: None,
            http_url: None,
            workers: Vec::new(),
            next_worker_index: 0,
            created_at: unix_now(),
            launching: false,
            contact: None,
            adapt_generation: 0,
            observed: None,
            policy: PolicyMemory::default(),
            credentials: None,
            ended: Vec::new(),
        }
    }

    /// Remembers worker jobs that ended on their own, keeping the last
    /// [`KEEP_ENDED`].
    pub fn remember_ended(&mut self, ended: impl IntoIterator<Item = EndedJob>) {
        self.ended.extend(ended);
        let extra = self.ended.len().saturating_sub(KEEP_ENDED);
        self.ended.drain(..extra);
    }

    /// The backend kind.
    pub fn backend(&self) -> &str {
        self.spec.backend.kind()
    }

    /// How long ago the cluster was created.
    pub fn age(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.created_at))
    }

    /// The dashboard link, once known.
    pub fn dashboard_link(&self) -> Option<String> {
        self.http_url.as_ref().map(|u| format!("{u}/status"))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ClusterRecord {
        ClusterRecord::new(ClusterSpec::from_yaml(&format!("name: {name}"), None).unwrap())
    }

    #[test]
    fn only_the_last_ended_jobs_are_remembered() {
        let mut r = record("demo");
        let ended = |i: u32| EndedJob {
            id: JobId(format!("demo-w{i}")),
            status: crate::job::JobStatus::Failed {
                reason: format!("exit {i}"),
            },
        };
        r.remember_ended((0..5).map(ended));
        r.remember_ended((5..12).map(ended));
        let ids: Vec<_> = r.ended.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), KEEP_ENDED);
        assert_eq!((ids[0], ids[KEEP_ENDED - 1]), ("demo-w4", "demo-w11"));
        // Old records (without the field) still load.
        let text = serde_json::to_string(&record("old")).unwrap();
        assert!(!text.contains("ended"));
        let back: ClusterRecord = serde_json::from_str(&text).unwrap();
        assert!(back.ended.is_empty());
    }

    #[test]
    fn a_homes_tag_is_a_stable_hash_of_its_canonical_path() {
        // A fixed value: the tag is in the names of jobs already queued, so
        // it must not change between versions (`sha256sum` of the path).
        assert_eq!(Home::at("/muster-test-no-such-dir/home").tag(), "dcc94582");
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("home");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(Home::at(&link).tag(), Home::at(&real).tag());
        assert_ne!(Home::at(dir.path()).tag(), Home::at(&real).tag());
        // The same tag before and after the home's directory exists.
        let before = Home::at(link.join("new/home")).tag();
        std::fs::create_dir_all(real.join("new/home")).unwrap();
        assert_eq!(Home::at(link.join("new/home")).tag(), before);
        assert_eq!(Home::at(real.join("new/home")).tag(), before);
    }

    #[test]
    fn save_load_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert!(home.list().unwrap().is_empty());
        assert_eq!(home.load("a").unwrap(), None);
        let mut a = record("a");
        home.create(&a).unwrap();
        home.create(&record("b")).unwrap();
        a.workers.push(JobId::from("a-w0"));
        home.save(&a).unwrap();
        assert_eq!(
            home.load("a").unwrap().unwrap().workers,
            vec![JobId::from("a-w0")]
        );
        let names: Vec<_> = home.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
        home.remove("a").unwrap();
        home.remove("a").unwrap();
        assert_eq!(home.load("a").unwrap(), None);
        // No temp files are left next to records.
        let left: Vec<_> = fs::read_dir(home.cluster_dir("b"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["cluster.json"]);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file_and_is_skipped_in_lists() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.create(&record("good")).unwrap();
        fs::create_dir_all(home.cluster_dir("bad")).unwrap();
        fs::write(home.record_path("bad"), "{not json").unwrap();
        assert!(
            home.load("bad")
                .unwrap_err()
                .to_string()
                .contains("cluster.json")
        );
        assert_eq!(home.list().unwrap().len(), 1);
    }

    #[test]
    fn the_lock_excludes_other_holders() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let guard = home.lock("a").unwrap();
        let path = dir.path().join("locks/a.lock");
        let other = File::open(&path).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(guard);
        other.try_lock().unwrap();
        assert!(home.lock("../evil").is_err());
    }
}
