//! `create` and `batch` killed anywhere; the next run of the same command
//! sweeps what they left.

use std::path::Path;
use std::process::Command;

use super::{
    Plan, Tally, TokenObject, answered, config, interrupted, runs, slowing, timed, wrapped,
};
use crate::common::Token;

fn create(token: &Token, config: &Path, n: usize) -> Command {
    let mut cmd = token.hsm_csr();
    cmd.arg("create")
        .args(token.token_flags())
        .arg("--config")
        .arg(config)
        .args([
            "--common-name",
            &format!("c{n}.crash.example"),
            "--format",
            "json",
        ]);
    cmd
}

#[test]
fn create_killed_anywhere_leaves_only_received_keys() {
    let Some(token) = Token::private_softhsm("kills create and counts every key on the token")
    else {
        return;
    };
    let audit = token.dir().join("audit.jsonl");
    // RSA: keygen takes long enough for kills to land in every phase.
    let config = config(&token, "crash.toml", &audit, "type = \"rsa\"");
    let mut plan = Plan::new();
    let mut tally = Tally::default();
    let token_object = TokenObject::of(&token);
    let (full, out) = timed(create(&token, &config, usize::MAX));
    tally.received(answered(&out));
    for i in 0..runs() {
        let (sig, slowed) = Plan::run(i);
        let wrapper = if slowed { slowing(&audit) } else { Vec::new() };
        let out = interrupted(
            wrapped(create(&token, &config, i), &wrapper),
            plan.within(full, slowed),
            sig,
            "create",
        );
        tally.ran(sig, slowed, &token_object);
        tally.received(answered(&out));
    }
    tally.received(answered(&timed(create(&token, &config, runs())).1));
    tally.check("create", &plan, &token, &audit);
}

/// `batch` of 16 lines into `out`, 4 sessions.
fn batch(token: &Token, config: &Path, input: &Path, out: &Path) -> Command {
    let mut cmd = token.hsm_csr();
    cmd.arg("batch")
        .args(token.token_flags())
        .arg("--config")
        .arg(config)
        .args(["--workers", "4", "--input"])
        .arg(input)
        .arg("--output")
        .arg(out);
    cmd
}

/// The answers in `out`, or, for a run that did not end, in the temporary
/// file beside it (`.NAME.<random>.tmp`).
fn batch_answers(out: &Path) -> Vec<String> {
    let dir = out.parent().unwrap();
    let name = out.file_name().unwrap().to_str().unwrap();
    let mut md5s = answered(&std::fs::read_to_string(out).unwrap_or_default());
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap().file_name();
        let entry = entry.to_str().unwrap();
        if entry.starts_with(&format!(".{name}.")) && entry.ends_with(".tmp") {
            md5s.extend(answered(&std::fs::read_to_string(dir.join(entry)).unwrap()));
        }
    }
    md5s
}

#[test]
fn batch_killed_anywhere_leaves_only_keys_whose_answers_were_written() {
    let Some(token) = Token::private_softhsm("kills batch and counts every key on the token")
    else {
        return;
    };
    let audit = token.dir().join("audit.jsonl");
    let config = config(&token, "crash.toml", &audit, "type = \"rsa\"");
    let input = token.dir().join("requests.jsonl");
    let lines: Vec<String> = (1..=16)
        .map(|n| format!(r#"{{"CommonName":"b{n}.crash.example"}}"#))
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let mut plan = Plan::new();
    let mut tally = Tally::default();
    let token_object = TokenObject::of(&token);
    let first = token.dir().join("answers-first.jsonl");
    let (full, _) = timed(batch(&token, &config, &input, &first));
    tally.received(batch_answers(&first));
    // Twice the runs: the window the old code left open was hit in 7 of 30.
    for i in 0..2 * runs() {
        let (sig, slowed) = Plan::run(i);
        let wrapper = if slowed { slowing(&audit) } else { Vec::new() };
        let out = token.dir().join(format!("answers-{i}.jsonl"));
        interrupted(
            wrapped(batch(&token, &config, &input, &out), &wrapper),
            plan.within(full, slowed),
            sig,
            "batch",
        );
        tally.ran(sig, slowed, &token_object);
        tally.received(batch_answers(&out));
    }
    let last = token.dir().join("answers-last.jsonl");
    timed(batch(&token, &config, &input, &last));
    tally.received(batch_answers(&last));
    // Every answer goes to a file: a key settled and not in it is a key
    // whose line the run had not written when it was killed (an answer
    // made early must wait, unsettled, for the lines before it).
    tally.check_unread("batch", &plan, &token, &audit, false);
}
