//! SSH connections: where to connect ([`SshTarget`]), the blocking connect
//! with host-key checking and key/agent authentication, running one command
//! on a session, and a bounded pool that keeps sessions for reuse. Blocking
//! ssh2 calls run on tokio's blocking threads; every wait has a limit.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssh2::Session;
use tokio::sync::Semaphore;

mod trust;
use trust::{authenticate, check_host_key};

/// Everything needed to open an SSH connection to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The host as the user named it (an alias, name or address); used in
    /// messages.
    pub alias: String,
    /// The name or address to connect to (the ssh config's `HostName`).
    pub hostname: String,
    /// The port.
    pub port: u16,
    /// The login name.
    pub user: String,
    /// Private key files to try, in order (missing ones are skipped).
    pub identities: Vec<PathBuf>,
    /// Try the ssh agent first (`IdentitiesOnly no`).
    pub use_agent: bool,
    /// known_hosts files to check the host key against; the first is the one
    /// new keys are added to (with `accept_new_host_keys`).
    pub known_hosts: Vec<PathBuf>,
    /// Record the key of a host that is not known yet instead of refusing it.
    pub accept_new_host_keys: bool,
    /// Limit for the TCP connect, the handshake and authentication.
    pub connect_timeout: Duration,
}

impl SshTarget {
    /// `alias (hostname:port)`, for messages.
    pub fn describe(&self) -> String {
        if self.alias == self.hostname && self.port == 22 {
            self.alias.clone()
        } else {
            format!("{} ({}:{})", self.alias, self.hostname, self.port)
        }
    }

    /// The key identifying this target's sessions in a pool.
    fn pool_key(&self) -> String {
        format!("{}@{}:{}", self.user, self.hostname, self.port)
    }
}

/// Why an SSH operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// No TCP connection (refused, unreachable, timed out, name unknown).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The host's key is not in known_hosts.
    #[error(
        "host key not known ({key_type} {fingerprint}); nothing was run there. Check the key and add it to {known_hosts}, or set accept_new_host_keys: true (in backend, or in backend.ssh with submit_host) to trust new hosts on first use"
    )]
    UnknownHostKey {
        /// The key's algorithm.
        key_type: String,
        /// Its SHA-256 fingerprint.
        fingerprint: String,
        /// Where it would be recorded.
        known_hosts: String,
    },
    /// The host's key differs from the recorded one.
    #[error(
        "HOST KEY HAS CHANGED ({key_type} {fingerprint} does not match {known_hosts}); someone may be intercepting the connection, or the host was reinstalled. Nothing was run there. If the change is expected, remove the old key (ssh-keygen -R) and connect again"
    )]
    ChangedHostKey {
        /// The key's algorithm.
        key_type: String,
        /// Its SHA-256 fingerprint.
        fingerprint: String,
        /// The file holding the old key.
        known_hosts: String,
    },
    /// Authentication was refused.
    #[error("authentication as {user} failed (tried: {tried})")]
    Auth {
        /// The login name.
        user: String,
        /// The methods tried.
        tried: String,
    },
    /// The SSH protocol failed after connecting (handshake, channel, I/O).
    #[error("{0}")]
    Protocol(String),
    /// Something took longer than allowed.
    #[error("timed out after {0:?} {1}")]
    Timeout(Duration, String),
}

impl SshError {
    /// True when trying again later may help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Connect(_) | SshError::Timeout(..) | SshError::Protocol(_)
        )
    }

    /// True for host-key problems, which must stop an operation everywhere.
    pub fn is_security(&self) -> bool {
        matches!(
            self,
            SshError::UnknownHostKey { .. } | SshError::ChangedHostKey { .. }
        )
    }

    /// As muster's error, naming the host.
    pub fn into_error(self, target: &SshTarget) -> muster_core::Error {
        muster_core::Error::Host {
            host: target.describe(),
            transient: self.is_transient(),
            message: self.to_string(),
        }
    }
}

/// Opens an authenticated session (blocking): TCP connect, handshake, host
/// key check, authentication, each bounded by the connect timeout.
pub fn connect(t: &SshTarget) -> Result<Session, SshError> {
    tracing::debug!(host = %t.describe(), user = %t.user, "ssh connect");
    let addrs: Vec<_> = (t.hostname.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| SshError::Connect(format!("cannot resolve {}: {e}", t.hostname)))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, t.connect_timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        SshError::Connect(last.unwrap_or_else(|| format!("no address for {}", t.hostname)))
    })?;
    let _ = tcp.set_nodelay(true);
    let mut session = Session::new().map_err(|e| SshError::Protocol(e.to_string()))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(t.connect_timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    session.handshake().map_err(|e| match e.code() {
        ssh2::ErrorCode::Session(-9) => {
            SshError::Timeout(t.connect_timeout, "waiting for the SSH handshake".into())
        }
        _ => SshError::Protocol(format!("SSH handshake failed: {e}")),
    })?;
    check_host_key(&session, t)?;
    authenticate(&session, t)?;
    Ok(session)
}

/// What a remote command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Exit status (-1 when it ended by a signal or sent none).
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Runs one command line on a session (blocking), feeding `stdin`.
pub fn exec(
    session: &Session,
    command: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Exec, SshError> {
    session.set_timeout(timeout.as_millis().min(u128::from(u32::MAX)) as u32);
    let io = |what: &str, e: &dyn std::fmt::Display| {
        let text = e.to_string();
        if text.contains("Timed out") || text.contains("timed out") {
            SshError::Timeout(timeout, format!("for the remote command ({what})"))
        } else {
            SshError::Protocol(format!("{what}: {text}"))
        }
    };
    let mut channel = session
        .channel_session()
        .map_err(|e| io("opening a channel", &e))?;
    channel.exec(command).map_err(|e| io("exec", &e))?;
    if let Some(input) = stdin {
        channel
            .write_all(input)
            .map_err(|e| io("writing stdin", &e))?;
    }
    channel.send_eof().map_err(|e| io("closing stdin", &e))?;
    let mut stdout = Vec::new();
    channel
        .read_to_end(&mut stdout)
        .map_err(|e| io("reading stdout", &e))?;
    let mut stderr = Vec::new();
    channel
        .stderr()
        .read_to_end(&mut stderr)
        .map_err(|e| io("reading stderr", &e))?;
    channel.wait_close().map_err(|e| io("closing", &e))?;
    let code = match channel.exit_signal() {
        Ok(sig) if sig.exit_signal.is_some() => -1,
        _ => channel.exit_status().unwrap_or(-1),
    };
    Ok(Exec {
        code,
        stdout,
        stderr,
    })
}

/// A remote program that answers requests line by line over one channel of a
/// session of its own, kept running between requests: the login shell and
/// the program start once, however many requests follow. It ends when the
/// channel closes (its stdin reaches its end).
pub struct Conversation {
    // Declared before the session so that it closes first.
    channel: ssh2::Channel,
    session: Session,
    /// Output read past the last answer.
    pending: Vec<u8>,
}

/// How a [`Conversation`] answered one request.
pub enum Reply {
    /// The answer line (the marker stripped); the conversation goes on.
    Line(String),
    /// The program ended without answering: its exit code and output, as
    /// from a one-off command. The conversation is over.
    Ended(Exec),
}

impl Conversation {
    /// Starts `command` on a new connection and writes `preamble` to its
    /// stdin (blocking).
    pub fn open(
        t: &SshTarget,
        command: &str,
        preamble: &[u8],
        timeout: Duration,
    ) -> Result<Self, SshError> {
        let session = connect(t)?;
        session.set_timeout(millis(timeout));
        let io = io_error(timeout);
        let mut channel = session
            .channel_session()
            .map_err(|e| io("opening a channel", &e))?;
        channel.exec(command).map_err(|e| io("exec", &e))?;
        channel
            .write_all(preamble)
            .map_err(|e| io("writing stdin", &e))?;
        Ok(Conversation {
            channel,
            session,
            pending: Vec::new(),
        })
    }

    /// Sends one request line and reads lines until one starts with
    /// `marker` (other output, e.g. from login scripts, is skipped).
    pub fn ask(
        &mut self,
        request: &str,
        marker: &str,
        timeout: Duration,
    ) -> Result<Reply, SshError> {
        self.session.set_timeout(millis(timeout));
        let io = io_error(timeout);
        let mut line = request.as_bytes().to_vec();
        line.push(b'\n');
        self.channel
            .write_all(&line)
            .and_then(|()| self.channel.flush())
            .map_err(|e| io("writing the request", &e))?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&l[..end]).into_owned();
                if let Some(answer) = text.strip_prefix(marker) {
                    self.drain_stderr();
                    return Ok(Reply::Line(answer.to_string()));
                }
            }
            let n = self
                .channel
                .read(&mut buf)
                .map_err(|e| io("reading the answer", &e))?;
            if n == 0 {
                break;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        // End of output: the program exited (or never started).
        let mut stderr = Vec::new();
        let _ = self.channel.stderr().read_to_end(&mut stderr);
        let _ = self.channel.wait_close();
        let code = match self.channel.exit_signal() {
            Ok(sig) if sig.exit_signal.is_some() => -1,
            _ => self.channel.exit_status().unwrap_or(-1),
        };
        Ok(Reply::Ended(Exec {
            code,
            stdout: std::mem::take(&mut self.pending),
            stderr,
        }))
    }

    /// Reads whatever the program wrote to stderr so far without waiting
    /// (logged at debug level): left unread it would fill the channel's
    /// window over a long conversation and stall its stdout.
    fn drain_stderr(&mut self) {
        self.session.set_blocking(false);
        let mut buf = [0u8; 4096];
        let mut text = Vec::new();
        while let Ok(n) = self.channel.stderr().read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        self.session.set_blocking(true);
        if !text.is_empty() {
            tracing::debug!(stderr = %String::from_utf8_lossy(&text).trim(), "remote program's stderr");
        }
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// Maps an ssh2 I/O failure to a timeout or a protocol error.
fn io_error(timeout: Duration) -> impl Fn(&str, &dyn std::fmt::Display) -> SshError {
    move |what, e| {
        let text = e.to_string();
        if text.contains("Timed out") || text.contains("timed out") {
            SshError::Timeout(timeout, format!("for the remote command ({what})"))
        } else {
            SshError::Protocol(format!("{what}: {text}"))
        }
    }
}

/// Sessions kept open for reuse, with a bound on how many connections run at
/// once (over all hosts). Cheap to clone; share one per process.
#[derive(Clone)]
pub struct SshPool {
    limit: Arc<Semaphore>,
    idle: Arc<Mutex<HashMap<String, Vec<Session>>>>,
    /// Idle conversations, by target and command.
    talks: Arc<Mutex<HashMap<String, Vec<Conversation>>>>,
}

impl std::fmt::Debug for SshPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool")
            .field("available", &self.limit.available_permits())
            .finish()
    }
}

impl SshPool {
    /// A pool letting at most `parallelism` connections work at once.
    pub fn new(parallelism: usize) -> Self {
        SshPool {
            limit: Arc::new(Semaphore::new(parallelism.max(1))),
            idle: Arc::default(),
            talks: Arc::default(),
        }
    }

    /// Runs a command line on the target: on an idle session if there is one
    /// (reconnecting once if it turns out dead), else on a new connection.
    /// At most `parallelism` of these run at a time; the whole call is bounded
    /// by the connect timeout plus `timeout`.
    pub async fn exec(
        &self,
        target: &SshTarget,
        command: String,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Exec, SshError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| SshError::Protocol("the SSH pool is closed".into()))?;
        let key = target.pool_key();
        let idle = self.idle.clone();
        let t = target.clone();
        let overall = target.connect_timeout + timeout + Duration::from_secs(2);
        let job = tokio::task::spawn_blocking(move || {
            let reused = idle.lock().ok().and_then(|mut m| m.get_mut(&key)?.pop());
            let run = |s: &Session| exec(s, &command, stdin.as_deref(), timeout);
            let (session, result) = match reused {
                Some(s) => match run(&s) {
                    // A kept session may have died (host gone, idle timeout):
                    // one fresh try before giving up.
                    Err(SshError::Protocol(e)) => {
                        tracing::debug!(host = %t.describe(), "kept session failed ({e}); reconnecting");
                        let s = connect(&t)?;
                        let r = run(&s);
                        (s, r)
                    }
                    r => (s, r),
                },
                None => {
                    let s = connect(&t)?;
                    let r = run(&s);
                    (s, r)
                }
            };
            if result.is_ok()
                && let Ok(mut m) = idle.lock()
            {
                m.entry(key).or_default().push(session);
            }
            result
        });
        match tokio::time::timeout(overall, job).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(SshError::Protocol(format!("ssh task failed: {join}"))),
            Err(_) => Err(SshError::Timeout(overall, "for the host to answer".into())),
        }
    }

    /// Sends one request line to a [`Conversation`] running `command` on the
    /// target: an idle one if there is one (starting afresh once if it turns
    /// out dead), else a new one fed `preamble` first. Bounded like
    /// [`SshPool::exec`]; a conversation that failed or ended is dropped, one
    /// that answered is kept for the next request.
    pub async fn ask(
        &self,
        target: &SshTarget,
        command: String,
        preamble: Vec<u8>,
        request: String,
        marker: &'static str,
        timeout: Duration,
    ) -> Result<Reply, SshError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| SshError::Protocol("the SSH pool is closed".into()))?;
        let key = format!("{}\n{command}", target.pool_key());
        let talks = self.talks.clone();
        let t = target.clone();
        let overall = target.connect_timeout + timeout + Duration::from_secs(2);
        let job = tokio::task::spawn_blocking(move || {
            let open = || Conversation::open(&t, &command, &preamble, timeout);
            let kept = talks.lock().ok().and_then(|mut m| m.get_mut(&key)?.pop());
            let (talk, reply) = match kept {
                Some(mut c) => match c.ask(&request, marker, timeout) {
                    // A kept conversation may have died (host gone, idle
                    // timeout, the program ended): one fresh try.
                    r @ (Err(SshError::Protocol(_)) | Ok(Reply::Ended(_))) => {
                        let why = match r {
                            Err(e) => e.to_string(),
                            _ => "it ended".into(),
                        };
                        tracing::debug!(host = %t.describe(), "kept conversation failed ({why}); starting anew");
                        let mut c = open()?;
                        let r = c.ask(&request, marker, timeout);
                        (c, r)
                    }
                    r => (c, r),
                },
                None => {
                    let mut c = open()?;
                    let r = c.ask(&request, marker, timeout);
                    (c, r)
                }
            };
            if let Ok(Reply::Line(_)) = &reply
                && let Ok(mut m) = talks.lock()
            {
                m.entry(key).or_default().push(talk);
            } else {
                // Not reused: close it now, so the remote program ends.
                let mut talk = talk;
                let _ = talk.channel.close();
            }
            reply
        });
        match tokio::time::timeout(overall, job).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(SshError::Protocol(format!("ssh task failed: {join}"))),
            Err(_) => Err(SshError::Timeout(overall, "for the host to answer".into())),
        }
    }

    /// Opens a connection to check the host is reachable and trusted
    /// (and keeps it for the next command).
    pub async fn check(&self, target: &SshTarget) -> Result<(), SshError> {
        self.exec(target, "true".into(), None, target.connect_timeout)
            .await
            .map(|_| ())
    }
}
