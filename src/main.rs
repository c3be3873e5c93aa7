//! `hsm-csr`: the command-line front end. All of it is in the library's
//! [`hsm_csr::cli`]; this file only starts it.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hsm_csr::cli::main()
}
