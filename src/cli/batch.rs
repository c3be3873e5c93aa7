//! `hsm-csr batch`: many requests from a JSON-lines file, one answer per
//! line, in order, made by several sessions in parallel.
//!
//! Each input line is a request with the API's parameter names
//! (`{"CommonName": "...", "SANs": "..."}`); each output line is the API's
//! response, or `{"RequestId","Code","Message"}` for a line that failed. A
//! failing line rolls back only its own key and does not stop the others.

use super::create::out_file::OutFile;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use hsm_csr::audit::{Actor, Trail};
use hsm_csr::backend::pkcs11::orphans;
use hsm_csr::backend::pkcs11::session_pool::open_sessions;
use hsm_csr::{CsrRequest, Error, ErrorClass, Result, issue_csr_audited, new_request_id};

use super::{BatchArgs, token};

/// An input line: its text, or why it is not text.
type Line = std::result::Result<String, std::str::Utf8Error>;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LineError<'a> {
    request_id: &'a str,
    code: &'a str,
    message: String,
    /// 1-based input line number.
    line: usize,
}

/// Runs `batch`. A failing line is answered in its output line and the run
/// goes on; the run then ends with exit code 2 when every failure was a bad
/// request line, 1 otherwise. Problems with the whole run (input,
/// output, token) stop it at once.
pub fn run(args: &BatchArgs) -> Result<()> {
    let input = read_input(&args.input)?;
    // Checked and opened before any key is made, by create --out's rules: a
    // stranger's symlink in a sticky directory is refused, and a regular
    // file is replaced only once every answer is in.
    let mut out_file = args
        .output
        .as_deref()
        .map(|path| OutFile::open_as("--output", path))
        .transpose()?;
    // Lines are read as bytes: one that is not UTF-8 fails on its own,
    // like any other bad line.
    let lines: Vec<Vec<u8>> = input.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    // The last line end ends the last line; it starts none.
    let lines = match lines.split_last() {
        Some((last, rest)) if last.is_empty() => rest.to_vec(),
        _ => lines,
    };
    let requests: Vec<(usize, Line)> = lines
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            if l.last() == Some(&b'\r') {
                l.pop();
            }
            (i + 1, String::from_utf8(l).map_err(|e| e.utf8_error()))
        })
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .collect();

    let config = token::load_config(&args.token)?;
    let mut key_options = config.key.options();
    if let Some(p) = &args.label_prefix {
        key_options.label_prefix = p.clone();
    }
    let key_options = key_options
        .validate()?
        .owned_by(super::create::owner(args.owner.as_deref())?);
    let target = token::target(&args.token, &config)?;
    let audit_log = config.audit.open()?;
    let trail = audit_log.as_ref().map(|log| Trail {
        log,
        actor: Actor::local_user(),
    });
    let mut opened = token::open(&target, &args.token)?;
    token::sweep(&mut opened.backend, key_options.label_prefix());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args
        .workers
        .unwrap_or(cores)
        .clamp(1, requests.len().max(1));
    let backends = open_sessions(opened.backend, workers)?;

    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(requests.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} CSRs  {elapsed} elapsed, about {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut out: Box<dyn Write> = match out_file.as_mut() {
        Some(file) => Box::new(Streamed(file)),
        None => Box::new(std::io::stdout().lock()),
    };

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // (input index, the answer line, the key's URI when one was made, the failure's class)
    let (tx, rx) = mpsc::channel::<(usize, String, Option<String>, Option<ErrorClass>)>();
    let (mut ok, mut failed, mut worst) = (0usize, 0usize, ErrorClass::Request);
    let mut undelivered: Vec<String> = Vec::new();
    let written = std::thread::scope(|scope| -> std::io::Result<()> {
        for mut backend in backends {
            let tx = tx.clone();
            let trail = trail.clone();
            let (next, stop, requests, key_options, defaults) = (
                &next,
                &stop,
                &requests,
                &key_options,
                &config.subject.defaults,
            );
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((line_no, line)) = requests.get(i) else {
                        break;
                    };
                    let request_id = new_request_id();
                    let result = line
                        .as_ref()
                        .map_err(|e| {
                            Error::Malformed(format!(
                                "line {line_no} is not UTF-8 text (byte {} is invalid)",
                                e.valid_up_to() + 1
                            ))
                        })
                        .and_then(|line| {
                            serde_json::from_str::<CsrRequest>(line).map_err(|e| {
                                Error::Malformed(format!("line {line_no} is not a request: {e}"))
                            })
                        })
                        .and_then(|r| r.validate(defaults))
                        .and_then(|v| {
                            let trail = trail.clone();
                            issue_csr_audited(
                                &mut backend,
                                &v,
                                key_options,
                                request_id.clone(),
                                trail,
                            )
                        });
                    if result.is_err() {
                        orphans::report(&backend.destroy_orphans(), &format!("line {line_no}: "));
                    }
                    let message = match result {
                        Ok(response) => (
                            i,
                            serde_json::to_string(&response).unwrap_or_default(),
                            Some(response.key_uri.clone()),
                            None,
                        ),
                        Err(e) => (
                            i,
                            serde_json::to_string(&LineError {
                                request_id: &request_id,
                                code: e.code(),
                                message: e.to_string(),
                                line: *line_no,
                            })
                            .unwrap_or_default(),
                            None,
                            Some(e.class()),
                        ),
                    };
                    if tx.send(message).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Answers arrive in any order; they are written in input order. If
        // writing fails, the workers stop taking lines, and every key whose
        // answer was not written is reported, so that it can be deleted.
        let mut pending: BTreeMap<usize, (String, Option<String>)> = BTreeMap::new();
        let mut next_out = 0;
        let mut write_error = None;
        for (i, text, key_uri, class) in rx {
            progress.inc(1);
            match class {
                None => ok += 1,
                Some(c) => {
                    failed += 1;
                    if c != ErrorClass::Request {
                        worst = ErrorClass::Internal;
                    }
                }
            }
            pending.insert(i, (text, key_uri));
            while write_error.is_none() {
                let Some((text, key_uri)) = pending.remove(&next_out) else {
                    break;
                };
                if let Err(e) = writeln!(out, "{text}") {
                    stop.store(true, Ordering::Relaxed);
                    undelivered.extend(key_uri);
                    write_error = Some(e);
                }
                next_out += 1;
            }
        }
        undelivered.extend(pending.into_values().filter_map(|(_, uri)| uri));
        match write_error {
            Some(e) => Err(e),
            None => out.flush(),
        }
    });
    progress.finish_and_clear();
    drop(out);
    // A regular --output file is replaced only now, once every answer is in.
    let written = written.and_then(|()| out_file.as_mut().map_or(Ok(()), OutFile::commit));
    written.map_err(|e| Error::Output {
        detail: if undelivered.is_empty() {
            e.to_string()
        } else {
            format!(
                "{e}; these keys were made but their answers not written, delete them with `hsm-csr keys delete`: {}",
                undelivered.join(" ")
            )
        },
        rolled_back: false,
    })?;
    let _ = writeln!(
        std::io::stderr(),
        "batch: {ok} CSRs made, {failed} failed, {} lines in {:.1} s with {workers} session(s)",
        ok + failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        let message = format!(
            "{failed} of {} lines failed; their answers say why.",
            ok + failed
        );
        return Err(match worst {
            ErrorClass::Request => Error::Malformed(message),
            _ => Error::Internal(message),
        });
    }
    Ok(())
}

/// Most bytes of `--input`.
const MAX_INPUT_BYTES: u64 = 64 << 20;

/// `--input`: a regular file, or `-` for standard input; at most
/// [`MAX_INPUT_BYTES`] either way (a FIFO or `/dev/zero` named as a file
/// is refused, not read until memory runs out).
fn read_input(path: &std::path::Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        return hsm_csr::files::read_bounded(std::io::stdin().lock(), MAX_INPUT_BYTES).map_err(
            |e| match e {
                hsm_csr::files::Bounded::TooBig => Error::Config(format!(
                    "--input - (standard input) is larger than {MAX_INPUT_BYTES} bytes."
                )),
                hsm_csr::files::Bounded::Io(e) => {
                    Error::Config(format!("cannot read --input - (standard input): {e}"))
                }
            },
        );
    }
    hsm_csr::files::read_regular(path, MAX_INPUT_BYTES, "--input")
}

/// `batch --output` as a stream: lines go to [`OutFile::append`].
struct Streamed<'a>(&'a mut OutFile);

impl Write for Streamed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf).map(|()| buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
