//! touchwire: reload a Python web app in a VM or container the instant its code changes on the host.
//!
//! The host sends authenticated triggers over TCP ([`client`], [`send`]); the guest's receiver
//! ([`listen`]) runs a target's action for each. [`run`] is the whole program behind `main`.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod editor;
pub mod error;
pub mod hooks;
pub mod init;
pub mod listen;
pub mod livereload;
pub mod outcome;
pub mod output;
pub mod protocol;
pub mod ready;
pub mod relevance;
pub mod send;
pub mod status;
pub mod watch;

use anyhow::Result;
use clap::CommandFactory;
use cli::{Cli, Command};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        #[cfg(unix)]
        Command::Listen(args) => listen::start::command(args),
        #[cfg(not(unix))]
        Command::Listen(_) => Err(error::UsageError(
            "`touchwire listen` runs in the guest, on Linux or another Unix: on a Windows host run it in WSL2 or \
             the VM; watch, send, hooks, init, status and demo run here"
                .into(),
        )
        .into()),
        Command::Send(args) => send::command(args),
        Command::Watch(args) => watch::start::command(args),
        Command::Demo(args) => demo::command(args),
        Command::Hooks(args) => hooks::command(args),
        Command::Init(args) => init::command(args),
        Command::Status(args) => status::command(args),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "touchwire", &mut std::io::stdout());
            Ok(())
        }
    }
}
