//! Local forwarding over SSH (what `ssh -L` does): a listener on this
//! machine's loopback whose connections are carried to `host:port` as the
//! remote host sees it, through `direct-tcpip` channels of one dedicated
//! session. muster uses it to reach the HTTP API of a scheduler that runs
//! inside a cluster only its login node can reach.
//!
//! libssh2 serialises everything on a session, and a blocking read on one
//! channel would stall the others, so the session runs non-blocking and one
//! thread moves the bytes of every connection, sleeping briefly when there
//! is nothing to move. The traffic is a few small HTTP requests; simplicity
//! wins over throughput here.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ssh2::{Channel, Session};

use crate::session::{SshError, SshTarget, connect};

/// How long the pump sleeps when no connection had anything to move.
const IDLE: Duration = Duration::from_millis(2);
/// Most bytes buffered per direction and connection.
const BUFFER: usize = 64 * 1024;
/// How long opening a channel may take before the connection is dropped.
const OPEN_LIMIT: Duration = Duration::from_secs(15);
/// Seconds between keepalives, which also notice a lost connection.
const KEEPALIVE: u32 = 30;
/// libssh2's "try again" (LIBSSH2_ERROR_EAGAIN) on a non-blocking session.
const EAGAIN: ssh2::ErrorCode = ssh2::ErrorCode::Session(-37);

/// An open forwarding; closed (listener, session, thread) when dropped.
#[derive(Debug)]
pub struct Tunnel {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
}

impl Tunnel {
    /// Connects to `via` and listens on `127.0.0.1:<free port>`; every
    /// connection accepted there is carried to `host:port`, resolved and
    /// connected to by `via`'s sshd. Blocking (it opens an SSH session).
    pub fn open(via: &SshTarget, host: &str, port: u16) -> Result<Tunnel, SshError> {
        let session = connect(via)?;
        let io = |e: std::io::Error| SshError::Protocol(format!("local tunnel end: {e}"));
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let local = listener.local_addr().map_err(io)?;
        session.set_blocking(false);
        session.set_keepalive(true, KEEPALIVE);
        let stop = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(AtomicBool::new(true));
        let pump = Pump {
            session,
            listener,
            host: host.to_string(),
            port,
            conns: Vec::new(),
        };
        let (flag, up) = (stop.clone(), alive.clone());
        std::thread::Builder::new()
            .name(format!("muster-tunnel-{port}"))
            .spawn(move || {
                pump.run(&flag);
                up.store(false, Ordering::Relaxed);
            })
            .map_err(io)?;
        tracing::debug!(via = %via.describe(), to = %format!("{host}:{port}"), %local, "ssh tunnel open");
        Ok(Tunnel { local, stop, alive })
    }

    /// The local end to connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// False once the SSH connection behind it is lost (open a new one).
    pub fn is_open(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One forwarded connection.
struct Conn {
    tcp: TcpStream,
    channel: Option<Channel>,
    accepted: Instant,
    /// Bytes read from the local client, not yet sent to the channel.
    up: Vec<u8>,
    /// Bytes read from the channel, not yet written to the client.
    down: Vec<u8>,
    client_done: bool,
    eof_sent: bool,
    remote_done: bool,
    dead: bool,
}

struct Pump {
    session: Session,
    listener: TcpListener,
    host: String,
    port: u16,
    conns: Vec<Conn>,
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

impl Pump {
    fn run(mut self, stop: &AtomicBool) {
        let mut next_keepalive = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_keepalive {
                match self.session.keepalive_send() {
                    Ok(secs) => {
                        next_keepalive = Instant::now() + Duration::from_secs(secs.max(1).into())
                    }
                    Err(e) if e.code() == EAGAIN => {
                        next_keepalive = Instant::now() + Duration::from_secs(1)
                    }
                    Err(e) => {
                        tracing::warn!("ssh tunnel to {}:{} lost: {e}", self.host, self.port);
                        break;
                    }
                }
            }
            let mut moved = self.accept();
            for i in 0..self.conns.len() {
                moved |= self.step(i);
            }
            self.conns.retain_mut(|c| {
                let finished = c.dead || (c.remote_done && c.down.is_empty());
                if finished {
                    let _ = c.tcp.shutdown(Shutdown::Both);
                    if let Some(ch) = c.channel.as_mut() {
                        let _ = ch.close();
                    }
                }
                !finished
            });
            if !moved {
                std::thread::sleep(IDLE);
            }
        }
        tracing::debug!(to = %format!("{}:{}", self.host, self.port), "ssh tunnel closed");
    }

    fn accept(&mut self) -> bool {
        match self.listener.accept() {
            Ok((tcp, _)) => {
                if tcp.set_nonblocking(true).is_ok() {
                    let _ = tcp.set_nodelay(true);
                    self.conns.push(Conn {
                        tcp,
                        channel: None,
                        accepted: Instant::now(),
                        up: Vec::new(),
                        down: Vec::new(),
                        client_done: false,
                        eof_sent: false,
                        remote_done: false,
                        dead: false,
                    });
                }
                true
            }
            Err(e) if would_block(&e) => false,
            Err(e) => {
                tracing::debug!("tunnel accept: {e}");
                false
            }
        }
    }

    /// Moves what can be moved on connection `i`; true if anything moved.
    fn step(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        if c.channel.is_none() {
            match self
                .session
                .channel_direct_tcpip(&self.host, self.port, None)
            {
                Ok(ch) => c.channel = Some(ch),
                Err(e) if e.code() == EAGAIN => {
                    // EAGAIN: the open is under way.
                    if c.accepted.elapsed() > OPEN_LIMIT {
                        tracing::debug!("tunnel: opening a channel timed out");
                        c.dead = true;
                    }
                    return false;
                }
                Err(e) => {
                    tracing::debug!(to = %format!("{}:{}", self.host, self.port), "tunnel: {e}");
                    c.dead = true;
                    return false;
                }
            }
        }
        let ch = c.channel.as_mut().expect("opened above");
        let mut moved = false;
        // Client → remote.
        if !c.client_done {
            match fill(&mut c.tcp, &mut c.up) {
                Flow::Moved => moved = true,
                Flow::End => c.client_done = true,
                Flow::Idle => {}
                Flow::Broken => c.dead = true,
            }
        }
        match drain(ch, &mut c.up) {
            Flow::Moved => moved = true,
            Flow::Broken => c.dead = true,
            _ => {}
        }
        if c.client_done && c.up.is_empty() && !c.eof_sent {
            match ch.send_eof() {
                Ok(()) => c.eof_sent = true,
                Err(e) if e.code() == EAGAIN => {}
                Err(_) => c.dead = true,
            }
        }
        // Remote → client. A channel read of 0 bytes is an end only at EOF.
        if !c.remote_done {
            match fill(ch, &mut c.down) {
                Flow::Moved => moved = true,
                Flow::End if ch.eof() => c.remote_done = true,
                Flow::End | Flow::Idle => {}
                Flow::Broken => c.dead = true,
            }
        }
        match drain(&mut c.tcp, &mut c.down) {
            Flow::Moved => moved = true,
            Flow::Broken => c.dead = true,
            _ => {}
        }
        moved
    }
}

/// What one non-blocking read or write did.
enum Flow {
    Moved,
    /// Nothing to do now (it would block, or nothing to move).
    Idle,
    /// A read returned 0 bytes.
    End,
    Broken,
}

/// Reads what `from` has into `buf`, up to [`BUFFER`] bytes held.
fn fill(from: &mut impl Read, buf: &mut Vec<u8>) -> Flow {
    if buf.len() >= BUFFER {
        return Flow::Idle;
    }
    let mut chunk = [0u8; 16 * 1024];
    match from.read(&mut chunk) {
        Ok(0) => Flow::End,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Flow::Moved
        }
        Err(e) if would_block(&e) => Flow::Idle,
        Err(_) => Flow::Broken,
    }
}

/// Writes what `to` takes of `buf`, dropping it from `buf`.
fn drain(to: &mut impl Write, buf: &mut Vec<u8>) -> Flow {
    if buf.is_empty() {
        return Flow::Idle;
    }
    match to.write(buf) {
        Ok(0) => Flow::Idle,
        Ok(n) => {
            buf.drain(..n);
            Flow::Moved
        }
        Err(e) if would_block(&e) => Flow::Idle,
        Err(_) => Flow::Broken,
    }
}
