//! Job identities and their normalised states, shared by every backend.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A backend's identifier of one launched unit (a process group, a batch job
/// or array task, a pod). For workers it is also the Dask worker name, so a
/// worker the scheduler retires maps straight to the job to cancel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_string())
    }
}

/// The state of a job, the same words on every backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted but not started (queued, scheduling, pulling).
    Pending,
    /// Started and not yet ended.
    Running,
    /// Ended without error, or cancelled on request.
    Finished,
    /// Ended with an error.
    Failed {
        /// What the backend reported: exit code, signal, and where the log is.
        reason: String,
    },
    /// The backend does not know the job (never existed, or forgotten).
    Unknown,
}

impl JobStatus {
    /// True while the job may still run or is running.
    pub fn is_active(&self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Running)
    }

    /// The one-word name shown in tables.
    pub fn word(&self) -> &'static str {
        match self {
            JobStatus::Pending => "Pending",
            JobStatus::Running => "Running",
            JobStatus::Finished => "Finished",
            JobStatus::Failed { .. } => "Failed",
            JobStatus::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobStatus::Failed { reason } => write!(f, "Failed ({reason})"),
            other => f.write_str(other.word()),
        }
    }
}
