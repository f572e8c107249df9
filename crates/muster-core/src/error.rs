//! muster-core's error type, shared by the backends built on it.

use std::time::Duration;

use crate::spec::SpecError;

/// Result with muster's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong below the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is unusable; nothing was launched.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// An argument given to an operation is unusable (e.g. scaling a cluster
    /// that has no such worker).
    #[error("{0}")]
    Usage(String),
    /// An external command exited non-zero.
    #[error("{program} exited with code {code}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    CommandFailed {
        /// The program.
        program: String,
        /// Its exit code.
        code: i32,
        /// What it printed on stderr.
        stderr: String,
    },
    /// An external command could not be found.
    #[error("command not found: {program:?}")]
    CommandNotFound {
        /// The program.
        program: String,
    },
    /// A command or service answered something muster cannot read.
    #[error("unexpected output from {program}: {output}")]
    UnexpectedOutput {
        /// Who answered.
        program: String,
        /// What it said (trimmed).
        output: String,
    },
    /// The worker python cannot run Dask.
    #[error(
        "{python} cannot import distributed: {detail}\n  install it with: {python} -m pip install 'dask[distributed]'\n  or point the spec at a python that has it: --python /path/to/venv/bin/python"
    )]
    MissingDask {
        /// The interpreter that was tried.
        python: String,
        /// What went wrong.
        detail: String,
    },
    /// The Dask scheduler's HTTP API failed.
    #[error("scheduler API {url}: {message}")]
    Scheduler {
        /// The URL called.
        url: String,
        /// What failed.
        message: String,
        /// Whether retrying may help (connection refused, timeouts).
        transient: bool,
    },
    /// Something did not happen in time.
    #[error("timed out after {} waiting for {what}", humantime::format_duration(*after))]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// A job ended while muster was waiting for it.
    #[error("{what} failed: {reason}{}", log_tail.as_ref().map(|t| format!("\n--- last lines of its log ---\n{t}")).unwrap_or_default())]
    JobFailed {
        /// Which job.
        what: String,
        /// The backend's reason.
        reason: String,
        /// The end of its log, when available.
        log_tail: Option<String>,
    },
    /// The named cluster does not exist.
    #[error("cluster {0:?} not found (see `muster get clusters`)")]
    NotFound(String),
    /// A cluster of that name already runs.
    #[error("cluster {0:?} already exists (bring it down first with `muster down {0}`)")]
    AlreadyExists(String),
    /// The registry or a state file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A remote host could not be reached, refused us, or failed a command
    /// transport (not the command itself): connection refused or timed out,
    /// host key unknown or changed, authentication failed.
    #[error("host {host}: {message}")]
    Host {
        /// The host as the spec names it, with its address.
        host: String,
        /// What went wrong and, where it helps, what to do.
        message: String,
        /// Whether retrying may help (timeouts, refused connections).
        transient: bool,
    },
    /// A cluster manager, or the way to it, failed in a way that is not the
    /// user's input (a queue that is full, hosts with no room, a tunnel that
    /// broke): the backend's own words, the underlying error when there is
    /// one, and whether retrying later may help (the agent backs off and
    /// retries transient failures; `scale` reports them either way).
    #[error("{backend}: {message}")]
    Backend {
        /// The backend kind (or part) that failed.
        backend: String,
        /// What went wrong.
        message: String,
        /// Whether retrying later may help.
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Jobs of the cluster are still running after `down`.
    #[error("cluster {cluster:?} still has running jobs after down: {}", jobs.join(", "))]
    LeftBehind {
        /// The cluster.
        cluster: String,
        /// The jobs still found.
        jobs: Vec<String>,
    },
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A backend failure without an underlying error.
    pub fn backend(
        backend: impl Into<String>,
        message: impl Into<String>,
        transient: bool,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: message.into(),
            transient,
            source: None,
        }
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Scheduler { transient, .. }
            | Error::Host { transient, .. }
            | Error::Backend { transient, .. } => *transient,
            Error::Timeout { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// True when the error is the user's input, not a runtime failure
    /// (the CLI exits 2 for these).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Spec(_) | Error::Usage(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_keep_their_cause_and_say_if_retrying_helps() {
        let cause = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe closed");
        let e = Error::Backend {
            backend: "ssh".into(),
            message: "the tunnel broke".into(),
            transient: true,
            source: Some(Box::new(cause)),
        };
        assert_eq!(e.to_string(), "ssh: the tunnel broke");
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("pipe closed"));
        assert!(e.is_transient() && !e.is_usage());
        let full = Error::backend("slurm", "queue full", false);
        assert!(!full.is_transient() && !full.is_usage());
    }
}
