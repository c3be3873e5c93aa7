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
            let text = record.args().to_string();
            let line = one_line(&text);
            // A closed stderr must not turn a log line into a panic.
            let _ = writeln!(std::io::stderr(), "hsm-csr: {level}: {line}");
        }
    }

    fn flush(&self) {}
}

/// Every record on one line of its own: control characters (a newline
/// above all), line and paragraph separators and Unicode format characters
/// (bidi overrides) are written as escapes, so that no value that reached
/// a message, whatever its origin, can start a forged line or hide text.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
    };
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

pub(super) fn init() {
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

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn records_cannot_break_lines_or_hide_text() {
        assert_eq!(one_line("plain ünïcode 杭州"), "plain ünïcode 杭州");
        let forged =
            one_line("action=x\nhsm-csr: info: request RequestId=FORGED\r\u{2028}\u{202e}");
        assert!(
            !forged.contains(['\n', '\r', '\u{2028}', '\u{202e}']),
            "{forged}"
        );
        assert!(
            forged.contains("\\u{a}hsm-csr") && forged.contains("\\u{202e}"),
            "{forged}"
        );
    }
}
