//! The `touchwire` binary: parse, run, print the error, map it to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = touchwire::cli::Cli::parse();
    match touchwire::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("touchwire: {err:#}");
            ExitCode::from(touchwire::error::exit_code(&err))
        }
    }
}
