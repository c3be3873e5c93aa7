//! The `hsm-csr` binary's whole run: the subcommand's work, and the one
//! place its errors become exit codes.

use std::process::ExitCode;

use clap::Parser;

use super::{Cli, Command, logger};
use crate::{Error, ErrorClass, cli};

/// Runs `hsm-csr` with this process's arguments and returns its exit code
/// (2, 3 or 1 by the error's class; 10 when `acme renew` had nothing to do).
pub fn main() -> ExitCode {
    logger::init();
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        let argv = std::env::args_os().skip(2);
        let args =
            cli::GenerateCli::parse_from(std::iter::once("hsm-csr generate".into()).chain(argv));
        return match cli::generate::run(&args.command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                cli::output::error(false, &crate::new_request_id(), &e);
                exit_code(&e)
            }
        };
    }
    let cli = Cli::parse();
    let request_id = crate::new_request_id();
    #[cfg_attr(not(feature = "acme"), allow(unused_mut))]
    let mut nothing_to_do = false;
    #[cfg_attr(not(feature = "service"), allow(unused_mut))]
    let mut answered_with: Option<ErrorClass> = None;
    let (result, json) = match &cli.command {
        Command::Create(args) => (
            cli::create::run(args, &request_id),
            args.format == cli::Format::Json,
        ),
        Command::Keys(command) => (
            cli::keys::run(command, &request_id),
            cli::keys::parts(command).0 == cli::ListFormat::Json,
        ),
        #[cfg(feature = "service")]
        Command::Serve(args) => (cli::serve::run(args), false),
        #[cfg(feature = "service")]
        Command::Call(args) => (
            cli::call::run(args).map(|class| answered_with = class),
            false,
        ),
        Command::Batch(args) => (cli::batch::run(args), false),
        Command::AttachCert(args) => (
            cli::attach::run(args, &request_id),
            args.format == cli::ListFormat::Json,
        ),
        #[cfg(feature = "acme")]
        Command::Acme(command) => (
            cli::acme::run(command, &request_id).map(|outcome| {
                nothing_to_do = outcome == cli::acme::Outcome::NothingToDo;
            }),
            match command {
                cli::AcmeCommand::Issue(_) => true,
                cli::AcmeCommand::Status(args) => args.format == cli::ListFormat::Json,
                cli::AcmeCommand::Renew(_) => false,
            },
        ),
    };
    match result {
        Ok(()) if nothing_to_do => ExitCode::from(NOTHING_TO_DO),
        Ok(()) if answered_with.is_some() => answered_with.map_or(ExitCode::SUCCESS, class_exit),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::output::error(json, &request_id, &e);
            exit_code(&e)
        }
    }
}

/// `acme renew` found no certificate due: a success that did nothing, told
/// apart from 0 (renewed) so that a deploy step runs only after a renewal.
const NOTHING_TO_DO: u8 = 10;

/// The one place errors become exit codes: 2 for a bad request (the API's
/// 400s, a name the ACME CA refused or could not validate, and clap's usage
/// errors), 3 for token or configuration problems (and a failed dns-01
/// hook), 1 for failures while making the key or CSR (the API's 500s) and
/// for an ACME CA that does not answer. `acme renew` adds 10 for nothing
/// to do ([`NOTHING_TO_DO`]).
/// `call` exits the same way for the error a service answered: 2 for its
/// 4xx, 1 for its 5xx.
fn exit_code(e: &Error) -> ExitCode {
    class_exit(e.class())
}

fn class_exit(class: ErrorClass) -> ExitCode {
    ExitCode::from(match class {
        ErrorClass::Request => 2,
        ErrorClass::Token => 3,
        ErrorClass::Internal => 1,
    })
}
