//! A small stderr logger for the `log` facade: warnings and errors always,
//! debug output with `HSM_CSR_LOG=debug`. Nothing logged carries a PIN.
//!
//! Records from dependencies are shown only at debug level: cryptoki logs
//! every vendor mechanism number it does not know as an "error", which is
//! noise to an operator.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let ours = metadata.target().starts_with("hsm_csr");
        metadata.level() <= log::max_level() && (ours || log::max_level() >= LevelFilter::Debug)
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug | Level::Trace => "debug",
            };
            // A closed stderr must not turn a log line into a panic.
            let _ = writeln!(std::io::stderr(), "hsm-csr: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

pub fn init() {
    let level = match std::env::var("HSM_CSR_LOG").as_deref() {
        Ok("debug") | Ok("trace") => LevelFilter::Debug,
        Ok("info") => LevelFilter::Info,
        Ok("warn") => LevelFilter::Warn,
        // `serve` logs a line per request at info level.
        _ if std::env::args_os().nth(1).is_some_and(|a| a == "serve") => LevelFilter::Info,
        _ => LevelFilter::Warn,
    };
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(level);
    }
}
