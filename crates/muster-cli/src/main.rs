//! The `muster` binary: parses the command line, sets up logging, runs one
//! subcommand and maps failures to exit codes (see [`exit_code`]). The only
//! crate that uses `anyhow`.

mod cli;
mod client_env;
mod commands;
mod contract;
mod down;
mod inspect;
mod interrupt;
mod kubernetes;
mod operator;
mod output;
mod progress;
mod unrecorded;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("MUSTER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The operator keeps no local state: it needs no $MUSTER_HOME.
    if let Command::Operator(a) = cli.command {
        return operator::run(a).await;
    }
    let home = commands::home(cli.home.as_deref())?;
    match cli.command {
        Command::Up(a) => commands::up(&home, a).await,
        Command::Down(a) => down::down(&home, a).await,
        Command::Scale(a) => commands::scale(&home, a).await,
        Command::Get(a) => inspect::get(&home, a).await,
        Command::Describe(a) => commands::describe(&home, a).await,
        Command::Logs(a) => inspect::logs(&home, a).await,
        Command::Env(a) => commands::env(&home, a),
        Command::Render(a) => commands::render(&home, a).await,
        Command::Adapt(a) => commands::adapt(&home, a).await,
        Command::Events(a) => commands::events(&home, a).await,
        Command::Agent(a) => commands::agent(&home, a).await,
        Command::PortForward(a) => commands::port_forward(&home, a).await,
        Command::Operator(_) => unreachable!("handled above"),
    }
}

/// The one exit-code rule (also in `muster --help` and the README):
/// 2 when the command as typed cannot be carried out (a bad flag or spec, a
/// cluster name the registry does not know), 130/143 when SIGINT/SIGTERM
/// stopped it (after it cleaned up), 1 for every other failure.
fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(i) = err.downcast_ref::<interrupt::Interrupted>() {
        return i.signal.exit_code();
    }
    let usage = err.chain().any(|e| {
        e.downcast_ref::<muster::Error>()
            .is_some_and(|e| e.is_usage() || matches!(e, muster::Error::NotFound(_)))
    });
    if usage { 2 } else { 1 }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent logs what it does to its log file by default.
    let verbose = match cli.command {
        Command::Agent(_) | Command::Operator(_) => cli.verbose.max(1),
        _ => cli.verbose,
    };
    init_logging(verbose);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}
