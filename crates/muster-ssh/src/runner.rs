//! [`SshRunner`]: muster-core's `CommandRunner` over SSH. An argv is turned
//! into one command line for the remote login shell with every element
//! single-quoted, so hostile strings arrive as the same argv on the other side;
//! the environment goes through `env`, never through the shell. Any backend
//! that is generic over `CommandRunner` (e.g. a batch scheduler driven through
//! a login node) can use it as is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use muster_core::runner::{CommandOutput, CommandRunner, CommandSpec};
use muster_core::{Error, Result};

use crate::session::{SshPool, SshTarget};
use crate::tunnel::Tunnel;

/// Quotes one word for a POSIX shell: unchanged when it is plainly safe,
/// else in single quotes (with `'` written as `'\''`).
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command line the remote shell runs for `cmd`: `exec env K=V ... argv`
/// (or `exec argv`), every word quoted.
pub fn command_line(cmd: &CommandSpec) -> Result<String> {
    if cmd.argv.is_empty() {
        return Err(Error::CommandNotFound {
            program: String::new(),
        });
    }
    for word in cmd.argv.iter().chain(cmd.env.iter().map(|(_, v)| v)) {
        if word.contains('\0') {
            return Err(Error::Usage(format!(
                "cannot pass an argument with a NUL byte over SSH: {word:?}"
            )));
        }
    }
    let mut words = vec!["exec".to_string()];
    if !cmd.env.is_empty() {
        words.push("env".into());
        for (k, v) in &cmd.env {
            let valid = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(Error::Usage(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
            words.push(quote(&format!("{k}={v}")));
        }
    }
    if cmd.argv[0].starts_with('-') || (!cmd.env.is_empty() && cmd.argv[0].contains('=')) {
        return Err(Error::Usage(format!(
            "program name {:?} would be read as an option or assignment",
            cmd.argv[0]
        )));
    }
    words.extend(cmd.argv.iter().map(|a| quote(a)));
    Ok(words.join(" "))
}

/// Runs commands on one remote host over SSH, through a shared [`SshPool`]
/// (sessions are reused; connections are bounded).
#[derive(Debug, Clone)]
pub struct SshRunner {
    target: Arc<SshTarget>,
    pool: SshPool,
    default_timeout: Duration,
    /// Forwardings opened by [`SshRunner::reach`], by remote address;
    /// shared by clones, closed with the last one.
    tunnels: Arc<tokio::sync::Mutex<HashMap<(String, u16), Tunnel>>>,
}

impl SshRunner {
    /// A runner for `target`, sharing `pool` with other runners. Commands
    /// without their own timeout get `default_timeout`.
    pub fn new(target: SshTarget, pool: SshPool, default_timeout: Duration) -> Self {
        SshRunner {
            target: Arc::new(target),
            pool,
            default_timeout,
            tunnels: Arc::default(),
        }
    }

    /// A runner for a destination such as `user@login.example.org:22`,
    /// resolved through `~/.ssh/config` (or `options.ssh_config`) like
    /// `ssh` would, with a pool of its own.
    pub fn connect_to(destination: &str, options: &crate::config::SshOptions) -> Result<Self> {
        let target = crate::config::resolve_destination(destination, options)?;
        Ok(SshRunner::new(
            target,
            SshPool::new(options.parallelism),
            options.command_timeout,
        ))
    }

    /// Where this runner runs commands.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }
}

#[async_trait]
impl CommandRunner for SshRunner {
    async fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput> {
        let line = command_line(cmd)?;
        tracing::debug!(host = %self.target.describe(), argv = ?cmd.argv, env = ?cmd.env, "ssh run");
        let timeout = cmd.timeout.unwrap_or(self.default_timeout);
        let out = self
            .pool
            .exec(&self.target, line, cmd.stdin.clone(), timeout)
            .await
            .map_err(|e| match e {
                crate::session::SshError::Timeout(..) => Error::Timeout {
                    what: format!("{} on {}", cmd.program(), self.target.describe()),
                    after: timeout,
                },
                e => e.into_error(&self.target),
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // The remote shell reports a missing program as 127.
        if out.code == 127 && (stderr.contains("not found") || stderr.contains("No such file")) {
            return Err(Error::CommandNotFound {
                program: format!("{} (on {})", cmd.program(), self.target.describe()),
            });
        }
        tracing::debug!(host = %self.target.describe(), program = %cmd.program(), code = out.code, "ssh done");
        Ok(CommandOutput {
            code: out.code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }
}

impl SshRunner {
    /// An address on this machine through which `host:port`, as this
    /// runner's host sees it, is reached: a tunnel through the host (opened
    /// on first use, reused, reopened if its connection was lost).
    pub async fn reach(&self, host: &str, port: u16) -> Result<(String, u16)> {
        let mut tunnels = self.tunnels.lock().await;
        let key = (host.to_string(), port);
        if let Some(t) = tunnels.get(&key).filter(|t| t.is_open()) {
            let a = t.local_addr();
            return Ok((a.ip().to_string(), a.port()));
        }
        let (target, h) = (self.target.clone(), host.to_string());
        let tunnel = tokio::task::spawn_blocking(move || Tunnel::open(&target, &h, port))
            .await
            .map_err(|e| Error::Backend {
                backend: "ssh".into(),
                message: "the tunnel's task failed".into(),
                transient: false,
                source: Some(Box::new(e)),
            })?
            .map_err(|e| e.into_error(&self.target))?;
        let a = tunnel.local_addr();
        tunnels.insert(key, tunnel);
        Ok((a.ip().to_string(), a.port()))
    }
}

/// A scheduler whose HTTP API only this runner's host can reach (inside a
/// batch cluster behind its login node) is reached through a tunnel.
#[async_trait]
impl muster_core::access::SchedulerAccess for SshRunner {
    async fn http_url(&self, published: &str) -> Result<String> {
        let Some((host, port)) = muster_core::dask::http_host_port(published) else {
            return Ok(published.to_string());
        };
        let (near_host, near_port) = self.reach(&host, port).await?;
        Ok(
            muster_core::dask::with_host_port(published, &near_host, near_port)
                .unwrap_or_else(|| published.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::runner::LocalRunner;

    const HOSTILE: &[&str] = &[
        "plain",
        "",
        "two words",
        "it's",
        "'",
        "\"dq\"",
        "$(touch /tmp/muster-pwned)",
        "`id`",
        "a;b|c&d",
        "$HOME ${HOME}",
        "\\backslash\\",
        "new\nline",
        "tab\there",
        "*",
        "~",
        "-n",
        "!bang",
        "ünïcödé",
        "#hash",
        "a=b",
    ];

    #[test]
    fn command_lines_snapshot() {
        let mut cmd = CommandSpec::new(["sbatch", "--parsable", "--job-name=x; rm -rf /"]);
        cmd.env = vec![("NOTE".into(), "it's $(id)".into())];
        insta::assert_snapshot!(command_line(&cmd).unwrap(), @r#"exec env 'NOTE=it'\''s $(id)' sbatch --parsable '--job-name=x; rm -rf /'"#);
        let plain = CommandSpec::new(["squeue", "-h", "-o", "%i %T"]);
        insta::assert_snapshot!(command_line(&plain).unwrap(), @"exec squeue -h -o '%i %T'");
    }

    #[test]
    fn bad_commands_are_refused() {
        assert!(command_line(&CommandSpec::new(Vec::<String>::new())).is_err());
        assert!(command_line(&CommandSpec::new(["a\0b"])).is_err());
        assert!(command_line(&CommandSpec::new(["-oProxyCommand=x"])).is_err());
        let mut cmd = CommandSpec::new(["true"]);
        cmd.env = vec![("BAD KEY".into(), "v".into())];
        assert!(command_line(&cmd).is_err());
    }

    /// The quoted line, run by a real `sh -c` here, yields exactly the argv.
    #[tokio::test]
    async fn hostile_words_survive_a_real_shell() {
        let mut argv = vec!["printf".to_string(), "[%s]\\n".to_string()];
        argv.extend(HOSTILE.iter().map(|s| s.to_string()));
        let mut cmd = CommandSpec::new(argv);
        cmd.env = vec![("EVIL".into(), "$(id) `id` 'q'".into())];
        let line = command_line(&cmd).unwrap();
        let out = LocalRunner
            .run(&CommandSpec::new(["sh", "-c", &line]))
            .await
            .unwrap();
        let expected: String = HOSTILE.iter().map(|s| format!("[{s}]\n")).collect();
        assert_eq!(out.stdout, expected);
        assert!(!std::path::Path::new("/tmp/muster-pwned").exists());
        let env_line = command_line(&{
            let mut c = CommandSpec::new(["sh", "-c", "printf %s \"$EVIL\""]);
            c.env = cmd.env.clone();
            c
        })
        .unwrap();
        let out = LocalRunner
            .run(&CommandSpec::new(["sh", "-c", &env_line]))
            .await
            .unwrap();
        assert_eq!(out.stdout, "$(id) `id` 'q'");
    }
}
