//! `hsm-csr generate` (hidden): the files a package ships beside the
//! binary, made from the same clap definitions as `--help`, so they never
//! drift from it. scripts/package.sh runs it on the built binary.

use std::path::Path;

use crate::{Error, Result};
use clap::CommandFactory;

use super::{Cli, GenerateCommand};

/// Writes what `command` asks for and prints the paths written.
pub(crate) fn run(command: &GenerateCommand) -> Result<()> {
    match command {
        GenerateCommand::Man { dir } => {
            create_dir(dir)?;
            // One page per visible subcommand: hsm-csr.1, hsm-csr-create.1, ...
            clap_mangen::generate_to(Cli::command(), dir).map_err(|e| write_error(dir, &e))?;
            println!("{}", dir.display());
        }
        GenerateCommand::Completions { shell, dir } => {
            create_dir(dir)?;
            let path = clap_complete::generate_to(*shell, &mut Cli::command(), "hsm-csr", dir)
                .map_err(|e| write_error(dir, &e))?;
            println!("{}", path.display());
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, &e))
}

fn write_error(dir: &Path, e: &std::io::Error) -> Error {
    Error::Config(format!("cannot write to --dir {}: {e}", dir.display()))
}
