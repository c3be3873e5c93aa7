//! `hsm-csr batch`: many requests from a JSON-lines file, one answer per
//! line, in order, made by several sessions in parallel.
//!
//! Each input line is a request with the API's parameter names
//! (`{"CommonName": "...", "SANs": "..."}`); each output line is the API's
//! response, or `{"RequestId","Code","Message"}` for a line that failed. A
//! failing line rolls back only its own key and does not stop the others.

use super::create::out_file::OutFile;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::audit::{Actor, Trail};
use crate::backend::pkcs11::orphans;
use crate::session_pool::open_sessions;
use crate::{
    CsrRequest, Error, ErrorClass, PendingCsr, Result, ValidRequest, new_request_id, prepare_csr,
};

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
pub(crate) fn run(args: &BatchArgs) -> Result<()> {
    let input = read_input(&args.input)?;
    // Checked and opened before any key is made, by create --out's rules: a
    // stranger's symlink in a sticky directory is refused, and a regular
    // file is replaced only once every answer is in.
    let mut out_file = args
        .output
        .as_deref()
        .map(|path| OutFile::open_as("--output", path))
        .transpose()?;
    let requests = numbered_lines(&input);

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
    let note = super::in_flight::sweep_if_needed(&mut opened.backend, key_options.label_prefix());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args
        .workers
        .unwrap_or(cores)
        .clamp(1, requests.len().max(1));
    let backends = open_sessions(opened.backend, workers)?;

    let progress = progress_bar(requests.len());
    let out: Box<dyn Write + Send> = match out_file.as_mut() {
        Some(file) => Box::new(Streamed(file)),
        None => Box::new(std::io::stdout()),
    };

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let answers = Answers::new(out, &progress);
    std::thread::scope(|scope| {
        for mut backend in backends {
            let trail = trail.clone();
            let (next, stop, answers, requests, key_options, defaults) = (
                &next,
                &stop,
                &answers,
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
                    let made = parse_line(*line_no, line, defaults).and_then(|v| {
                        prepare_csr(
                            &mut backend,
                            &v,
                            key_options,
                            request_id.clone(),
                            trail.clone(),
                        )
                    });
                    let failed = made.is_err();
                    if !answers.answer(i, *line_no, &request_id, made) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if failed {
                        orphans::report(&backend.destroy_orphans(), &format!("line {line_no}: "));
                    }
                }
            });
        }
    });
    progress.finish_and_clear();
    let Tally {
        ok,
        failed,
        worst,
        error,
        removed,
        undelivered,
        ..
    } = answers.into_tally();
    let written = match error {
        Some(e) => Err(e),
        // A regular --output file is replaced only now, once every answer is in.
        None => out_file.as_mut().map_or(Ok(()), OutFile::commit),
    };
    written.map_err(|e| unwritten(&e, removed, &undelivered))?;
    if failed == 0 {
        note.done();
    }
    summary(ok, failed, worst, workers, started)
}

/// The run's last line on stderr, and its verdict: an error naming how
/// many lines failed, of the worst class among them.
fn summary(
    ok: usize,
    failed: usize,
    worst: ErrorClass,
    workers: usize,
    started: Instant,
) -> Result<()> {
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

/// The input's non-blank lines, numbered from 1, each as text or as the
/// reason it is not UTF-8.
fn numbered_lines(input: &[u8]) -> Vec<(usize, Line)> {
    // Lines are read as bytes: one that is not UTF-8 fails on its own,
    // like any other bad line.
    let lines: Vec<Vec<u8>> = input.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    // The last line end ends the last line; it starts none.
    let lines = match lines.split_last() {
        Some((last, rest)) if last.is_empty() => rest.to_vec(),
        _ => lines,
    };
    lines
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            if l.last() == Some(&b'\r') {
                l.pop();
            }
            (i + 1, String::from_utf8(l).map_err(|e| e.utf8_error()))
        })
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .collect()
}

/// A progress bar on a terminal, none otherwise.
fn progress_bar(len: usize) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} CSRs  {elapsed} elapsed, about {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    }
}

/// The run's error when an answer could not be written: which keys were
/// removed, and which were left on the token.
fn unwritten(e: &std::io::Error, removed: usize, undelivered: &[String]) -> Error {
    let mut detail = e.to_string();
    if removed > 0 {
        detail +=
            &format!("; the {removed} key pair(s) whose answers were not written were removed");
    }
    if !undelivered.is_empty() {
        detail += &format!(
            "; these keys were made but their answers not written, and could not be removed; delete them with `hsm-csr keys delete`: {}",
            undelivered.join(" ")
        );
    }
    Error::Output {
        detail,
        rolled_back: false,
    }
}

/// A line's request, checked.
fn parse_line(
    line_no: usize,
    line: &Line,
    defaults: &crate::SubjectDefaults,
) -> Result<ValidRequest> {
    let line = line.as_ref().map_err(|e| {
        Error::Malformed(format!(
            "line {line_no} is not UTF-8 text (byte {} is invalid)",
            e.valid_up_to() + 1
        ))
    })?;
    serde_json::from_str::<CsrRequest>(line)
        .map_err(|e| Error::Malformed(format!("line {line_no} is not a request: {e}")))?
        .validate(defaults)
}

/// The answers, written in input order, each by the worker that made it
/// when its turn comes. A key takes its final identity (its `delivered`
/// event, then [`PendingCsr::record_delivery`]) only in its turn, right
/// before its line is written, so that a run killed at any point leaves
/// no settled key whose line is not in the output: answers made early
/// wait, still marked "not yet delivered", for the ones before them.
struct Answers<'w> {
    tally: Mutex<Tally<'w>>,
    turn: Condvar,
    progress: &'w ProgressBar,
}

/// What the run wrote and counted.
struct Tally<'w> {
    out: Box<dyn Write + Send + 'w>,
    /// The index of the next line to write.
    next: usize,
    ok: usize,
    failed: usize,
    worst: ErrorClass,
    /// The first write that failed; no line is written after it.
    error: Option<std::io::Error>,
    /// Keys whose answers were not written, removed.
    removed: usize,
    /// URIs of keys whose answers were not written and which could not be
    /// removed.
    undelivered: Vec<String>,
}

impl<'w> Answers<'w> {
    fn new(out: Box<dyn Write + Send + 'w>, progress: &'w ProgressBar) -> Self {
        Answers {
            tally: Mutex::new(Tally {
                out,
                next: 0,
                ok: 0,
                failed: 0,
                worst: ErrorClass::Request,
                error: None,
                removed: 0,
                undelivered: Vec::new(),
            }),
            turn: Condvar::new(),
            progress,
        }
    }

    /// Waits for input index `i`'s turn, then writes its answer: for a key,
    /// the delivery is recorded and the key settled first, and the key is
    /// removed if its line cannot be written. Returns false once a write
    /// has failed (the run stops taking lines).
    fn answer(
        &self,
        i: usize,
        line_no: usize,
        request_id: &str,
        outcome: Result<PendingCsr<'_>>,
    ) -> bool {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        while tally.next != i {
            tally = self.turn.wait(tally).unwrap_or_else(|p| p.into_inner());
        }
        let going = tally.write_answer(line_no, request_id, outcome);
        tally.next += 1;
        drop(tally);
        self.turn.notify_all();
        self.progress.inc(1);
        going
    }

    fn into_tally(self) -> Tally<'w> {
        self.tally.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tally<'_> {
    fn write_answer(
        &mut self,
        line_no: usize,
        request_id: &str,
        outcome: Result<PendingCsr<'_>>,
    ) -> bool {
        // After a failed write nothing more is written; the counts no
        // longer matter (the run fails on that write).
        if self.error.is_some() {
            if let Ok(pending) = outcome {
                self.remove(pending);
            }
            return false;
        }
        let settled = outcome.and_then(PendingCsr::record_delivery);
        let text = match &settled {
            Ok(pending) => serde_json::to_string(pending.response()),
            Err(e) => serde_json::to_string(&LineError {
                request_id,
                code: e.code(),
                message: e.to_string(),
                line: line_no,
            }),
        }
        .unwrap_or_default();
        if let Err(e) = writeln!(self.out, "{text}").and_then(|()| self.out.flush()) {
            self.error = Some(e);
            if let Ok(pending) = settled {
                self.remove(pending);
            }
            return false;
        }
        match settled.and_then(PendingCsr::commit) {
            Ok(_) => self.ok += 1,
            Err(e) => {
                self.failed += 1;
                if e.class() != ErrorClass::Request {
                    self.worst = ErrorClass::Internal;
                }
            }
        }
        true
    }

    /// Removes a key whose answer is not written.
    fn remove(&mut self, pending: PendingCsr<'_>) {
        let uri = pending.response().key_uri.clone();
        match pending.rollback() {
            Ok(()) => self.removed += 1,
            Err(_) => self.undelivered.push(uri),
        }
    }
}

/// Most bytes of `--input`.
const MAX_INPUT_BYTES: u64 = 64 << 20;

/// `--input`: a regular file, or `-` for standard input; at most
/// [`MAX_INPUT_BYTES`] either way (a FIFO or `/dev/zero` named as a file
/// is refused, not read until memory runs out).
fn read_input(path: &std::path::Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        return crate::files::read_bounded(std::io::stdin().lock(), MAX_INPUT_BYTES).map_err(|e| {
            match e {
                crate::files::Bounded::TooBig => Error::Config(format!(
                    "--input - (standard input) is larger than {MAX_INPUT_BYTES} bytes."
                )),
                crate::files::Bounded::Io(e) => {
                    Error::Config(format!("cannot read --input - (standard input): {e}"))
                }
            }
        });
    }
    crate::files::read_regular(path, MAX_INPUT_BYTES, "--input")
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
