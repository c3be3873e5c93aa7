//! `hsm-csr acme status`: each certificate `acme renew` looks after, with
//! what a run would do with it, from the token and the files beside the
//! account alone (the CA is not asked).

use std::io::Write;

use serde::Serialize;

use crate::acme;
use crate::{Error, Result};

use super::super::{ListFormat, output, token};
use super::args::AcmeStatusArgs;
use super::{now_or, rfc3339};

/// One certificate, as `acme status --format json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    /// The token's label.
    token: String,
    common_name: String,
    /// Its DNS names and IP addresses.
    names: Vec<String>,
    key_uri: String,
    pub_md5: Option<String>,
    /// RFC 3339.
    not_after: String,
    /// Whole days left (negative: expired that many days ago, or less).
    days_left: i64,
    /// The CA's suggested window (RFC 9773), as last asked.
    window: Option<Window>,
    /// When `renew` renews it (RFC 3339); at or before now: due.
    next_renewal: String,
    due: bool,
    profile: Option<String>,
    last_error: Option<acme::state::LastError>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Window {
    start: String,
    end: String,
}

pub(super) fn run(args: &AcmeStatusArgs) -> Result<()> {
    let config = token::load_config(&args.token)?;
    let prefix = args
        .label_prefix
        .clone()
        .unwrap_or_else(|| config.key.label_prefix.clone());
    // Every configured token ([[tokens]]), or the one named.
    let mut listed = Vec::new();
    for target in token::targets(&args.token, &config)? {
        let opened = token::open(&target, &args.token)?;
        let label = opened.backend.token_label().to_owned();
        let serial = opened.backend.token_serial().to_owned();
        listed.push((label, serial, opened.backend.list_keys()?));
    }
    let now = now_or(args.now);
    let when = args.days.map_or(acme::When::Scheduled, |days| {
        acme::When::EndsWithin(u64::from(days) * 86_400)
    });
    let windows = acme::ari::Windows::load(&args.account);
    let names = acme::state::Names::load(&args.account);
    let windows = &windows;
    let mut groups: Vec<(u64, (&str, &str), acme::Due)> = listed
        .iter()
        .flat_map(|(token, serial, keys)| {
            acme::renewable(keys, &prefix).into_iter().map(move |d| {
                (
                    acme::due_at(&d, when, windows),
                    (token.as_str(), serial.as_str()),
                    d,
                )
            })
        })
        .collect();
    groups.sort_by(|a, b| (a.0, &a.2.common_name).cmp(&(b.0, &b.2.common_name)));
    let rows: Vec<Status> =
        groups
            .into_iter()
            .map(|(at, (token, serial), d)| {
                let state = names.get(&acme::state::key(token, serial, &d.old.label));
                let left = i128::from(d.not_after) - i128::from(now);
                Status {
                    token: token.to_owned(),
                    names: d.sans.clone(),
                    key_uri: d.old.key_uri.clone(),
                    pub_md5: d.old.pub_md5.clone(),
                    not_after: rfc3339(d.not_after),
                    days_left: i64::try_from(left.div_euclid(86_400)).unwrap_or(i64::MIN),
                    window: d.cert_id.as_deref().and_then(|id| windows.get(id)).map(
                        |(start, end)| Window {
                            start: rfc3339(start),
                            end: rfc3339(end),
                        },
                    ),
                    next_renewal: rfc3339(at),
                    due: at <= now,
                    profile: state.and_then(|s| s.profile.clone()),
                    last_error: state.and_then(|s| s.last_error.clone()),
                    common_name: d.common_name,
                }
            })
            .collect();
    let mut out = std::io::stdout().lock();
    let written = match args.format {
        ListFormat::Json => serde_json::to_writer_pretty(&mut out, &rows)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        ListFormat::Table => write_table(&mut out, &rows),
    };
    written.map_err(|e| Error::Output {
        detail: e.to_string(),
        rolled_back: false,
    })
}

/// `acme status` as a table, with a last line of counts.
fn write_table(out: &mut std::io::StdoutLock<'_>, rows: &[Status]) -> std::io::Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.common_name.clone(),
                s.not_after.clone(),
                s.days_left.to_string(),
                s.window
                    .as_ref()
                    .map_or_else(|| "-".into(), |w| format!("{}..{}", w.start, w.end)),
                if s.due {
                    format!("due ({})", s.next_renewal)
                } else {
                    s.next_renewal.clone()
                },
                s.profile.clone().unwrap_or_else(|| "-".into()),
                s.last_error
                    .as_ref()
                    .map_or_else(|| "-".into(), |e| format!("{}: {}", e.code, e.message)),
                s.token.clone(),
            ]
        })
        .collect();
    output::table(
        out,
        &[
            "NAME",
            "NOT AFTER",
            "DAYS",
            "ARI WINDOW",
            "NEXT RENEWAL",
            "PROFILE",
            "LAST ERROR",
            "TOKEN",
        ],
        &cells,
    )
    .and_then(|()| {
        let due = rows.iter().filter(|s| s.due).count();
        let failed = rows.iter().filter(|s| s.last_error.is_some()).count();
        writeln!(
            out,
            "{} certificate(s): {due} due, {failed} whose last renewal failed",
            rows.len()
        )
    })
}
