//! Ctrl-C (SIGINT) and SIGTERM while a command changes a cluster. `up` and
//! `scale` race their work against [`Signals::next`]; the loser is dropped
//! (releasing the cluster's lock) and the command then says what it did
//! about it. A second signal during that clean-up leaves at once, naming the
//! command that finishes the job. Only the signal plumbing and the
//! [`Interrupted`] error live here, not what each command does about it.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The signal that interrupted a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Ctrl-C.
    Int,
    /// `kill`, a batch system's time limit, a container stop.
    Term,
}

impl Interrupt {
    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal's number.
    pub fn exit_code(self) -> u8 {
        match self {
            Interrupt::Int => 130,
            Interrupt::Term => 143,
        }
    }
}

/// SIGINT and SIGTERM, caught (instead of ending the process) from
/// [`Signals::install`] on.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Catches both signals from now on.
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Interrupt {
        tokio::select! {
            _ = self.int.recv() => Interrupt::Int,
            _ = self.term.recv() => Interrupt::Term,
        }
    }

    /// From now on, a further signal ends the process at once after saying
    /// that `then` finishes what was left undone.
    pub fn leave_on_next(mut self, then: String) {
        tokio::spawn(async move {
            let sig = self.next().await;
            eprintln!(
                "error: interrupted again ({}): left without finishing; run `{then}`",
                sig.name()
            );
            std::process::exit(i32::from(sig.exit_code()));
        });
    }
}

/// A command stopped by a signal, after it handled it: what it did.
#[derive(Debug)]
pub struct Interrupted {
    /// The signal.
    pub signal: Interrupt,
    /// What the command did about it.
    pub message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}: {}", self.signal.name(), self.message)
    }
}

impl std::error::Error for Interrupted {}
