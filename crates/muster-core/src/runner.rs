//! `CommandRunner`: runs an argv (with optional stdin) and returns its exit code
//! and output. The local implementation lives here; an SSH one lives in
//! muster-ssh. Backends that shell out are generic over it so tests can inject
//! recorded outputs.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// A command to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program and arguments; never passed through a shell.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Bytes written to the command's standard input.
    pub stdin: Option<Vec<u8>>,
    /// Give up (and kill the command) after this long.
    pub timeout: Option<Duration>,
}

impl CommandSpec {
    /// A command with these arguments and nothing else.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CommandSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// The program name, for messages.
    pub fn program(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }
}

/// The result of a finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// Turns a non-zero exit into [`Error::CommandFailed`].
    pub fn check(self, program: &str) -> Result<Self> {
        if self.code == 0 {
            Ok(self)
        } else {
            Err(Error::CommandFailed {
                program: program.to_string(),
                code: self.code,
                stderr: self.stderr.trim().to_string(),
            })
        }
    }
}

/// Something that runs commands: on this machine, or on a remote host.
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs the command to completion. A command that cannot be started is
    /// [`Error::CommandNotFound`] or [`Error::Io`]; a non-zero exit is *not* an
    /// error here (see [`CommandOutput::check`]).
    async fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput>;
}

/// Runs commands on this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalRunner;

#[async_trait]
impl CommandRunner for LocalRunner {
    async fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput> {
        tracing::debug!(argv = ?cmd.argv, "run");
        let (program, args) = cmd
            .argv
            .split_first()
            .ok_or_else(|| Error::CommandNotFound {
                program: String::new(),
            })?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::CommandNotFound {
                    program: program.clone(),
                },
                _ => Error::io(format!("cannot start {program}"), e),
            })?;
        if let (Some(input), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
            stdin
                .write_all(input)
                .await
                .map_err(|e| Error::io(format!("writing to {program}"), e))?;
        }
        let wait = child.wait_with_output();
        let output = match cmd.timeout {
            Some(limit) => tokio::time::timeout(limit, wait)
                .await
                .map_err(|_| Error::Timeout {
                    what: format!("{program} to finish"),
                    after: limit,
                })?,
            None => wait.await,
        }
        .map_err(|e| Error::io(format!("waiting for {program}"), e))?;
        let out = CommandOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        tracing::debug!(program = %program, code = out.code, "done");
        Ok(out)
    }
}

/// Puts the child in a session of its own, so it survives the terminal and the
/// command that started it, and its whole tree shares one process group.
/// The one place in muster that runs code between fork and exec (local jobs
/// and the per-cluster agent both start this way).
#[allow(unsafe_code)]
pub fn detach(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent;
    // it is the only call made between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_with_stdin_and_reports_codes() {
        let mut cmd = CommandSpec::new(["sh", "-c", "cat; echo err >&2; exit 3"]);
        cmd.stdin = Some(b"hello".to_vec());
        let out = LocalRunner.run(&cmd).await.unwrap();
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "err\n");
        let err = out.check("sh").unwrap_err();
        assert!(err.to_string().contains("exited with code 3"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let err = LocalRunner
            .run(&CommandSpec::new(["/nonexistent/prog"]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CommandNotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn timeouts_kill_the_command() {
        let mut cmd = CommandSpec::new(["sleep", "10"]);
        cmd.timeout = Some(Duration::from_millis(100));
        let err = LocalRunner.run(&cmd).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }
}
