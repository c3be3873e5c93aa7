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
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        let argv = std::env::args_os().skip(2);
        let args =
            cli::GenerateCli::parse_from(std::iter::once("hsm-csr generate".into()).chain(argv));
        return match cli::generate::run(&args.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                cli::output::error(false, &hsm_csr::new_request_id(), &e);
                exit_code(&e)
            }
        };
    }
    let cli = Cli::parse();
    let request_id = hsm_csr::new_request_id();
    let (result, json) = match &cli.command {
        Command::Create(args) => (
            cli::create::run(args, &request_id),
            args.format == cli::Format::Json,
        ),
        Command::Keys(command) => (
            cli::keys::run(command),
            cli::keys::parts(command).0 == cli::ListFormat::Json,
        ),
        #[cfg(feature = "service")]
        Command::Serve(args) => (cli::serve::run(args), false),
        Command::Batch(args) => (cli::batch::run(args), false),
        Command::AttachCert(args) => (
            cli::attach::run(args, &request_id),
            args.format == cli::ListFormat::Json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::output::error(json, &request_id, &e);
            exit_code(&e)
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
