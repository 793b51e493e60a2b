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
pub mod hooks;
pub mod init;
pub mod listen;
pub mod livereload;
pub mod outcome;
pub mod output;
pub mod protocol;
pub mod ready;
pub mod send;
pub mod status;
pub mod watch;

use anyhow::{Context, Result};
use clap::CommandFactory;
use cli::{Cli, Command, Global};

/// A mistake in the command line or the configuration: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match cli.command {
        #[cfg(unix)]
        Command::Listen(args) => listen::start::command(global, args),
        #[cfg(not(unix))]
        Command::Listen(_) => Err(UsageError(
            "`touchwire listen` runs in the guest, on Linux or another Unix: on a Windows host run it in WSL2 or \
             the VM; watch, send, hooks, init, status and demo run here"
                .into(),
        )
        .into()),
        Command::Send(args) => send::command(global, args),
        Command::Watch(args) => watch::start::command(global, args),
        Command::Demo(args) => demo::command(args),
        Command::Hooks(args) => hooks::command(args),
        Command::Init(args) => init::command(args),
        Command::Status(args) => status::command(global, args),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "touchwire", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The exit code for an error: 2 for usage or configuration mistakes, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() { 2 } else { 1 }
}

fn locate(global: &Global) -> Result<config::Locate> {
    locate_from(global, std::env::current_dir().context("cannot read the current directory")?)
}

/// Where to look for configuration when it should come from `dir`'s repository.
fn locate_from(global: &Global, dir: std::path::PathBuf) -> Result<config::Locate> {
    Ok(config::Locate { config: global.config.clone(), token_file: global.token_file.clone(), cwd: dir })
}

fn credentials(config: &config::Config) -> Result<client::Credentials, UsageError> {
    let token = match &config.token_file.value {
        Some(path) => Some(auth::Token::read(path).map_err(|err| {
            UsageError(format!(
                "{err:#} (token_file from {}; `touchwire init --token` creates it)",
                config.token_file.source
            ))
        })?),
        None => None,
    };
    Ok(client::Credentials { token, file: config.token_file.value.clone() })
}
