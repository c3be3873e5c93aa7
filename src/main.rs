//! `hsm-csr`: the command-line front end. All the work is in the library;
//! this file only maps errors to exit codes.

#![forbid(unsafe_code)]

mod cli;
mod logger;

use std::process::ExitCode;

use clap::Parser;
use hsm_csr::{Error, ErrorClass};

use cli::{Cli, Command};

fn main() -> ExitCode {
    logger::init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Create(args) => {
            let request_id = hsm_csr::new_request_id();
            match cli::create::run(args, &request_id) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    cli::output::error(args.format, &request_id, &e);
                    exit_code(&e)
                }
            }
        }
    }
}

/// The one place errors become exit codes: 2 for a bad request (the API's
/// 400s, and clap's usage errors), 3 for token or configuration problems,
/// 1 for failures while making the key or CSR (the API's 500s).
fn exit_code(e: &Error) -> ExitCode {
    ExitCode::from(match e.class() {
        ErrorClass::Request => 2,
        ErrorClass::Token => 3,
        ErrorClass::Internal => 1,
    })
}
