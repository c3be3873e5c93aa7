//! `hsm-csr keys prune`: retiring key pairs by policy
//! ([`crate::retention`]). A dry run by default: it
//! lists what would go and why; `--yes` removes them, each removal an
//! audit event (`deleted`, cause `Retired...`) when `[audit] path` is set.

use std::io::Write;

use crate::audit::{Actor, Trail};
use crate::owner::Owner;
use crate::retention::Policy;
use crate::retention::Pruned;
use crate::{Error, Result};

use super::{KeysPruneArgs, ListFormat, token};

/// Runs `keys prune`.
pub(crate) fn run(args: &KeysPruneArgs, request_id: &str) -> Result<()> {
    let policy = Policy {
        never_certified_after_days: args.never_certified_after,
        replaced_after_days: args.replaced_after,
        orphans: args.orphans,
    };
    if policy.is_empty() {
        return Err(Error::Config(
            "keys prune needs a policy: --never-certified-after DAYS, --replaced-after DAYS and/or --orphans."
                .into(),
        ));
    }
    let owner = args.owner.as_deref().map(Owner::new).transpose()?;
    let config = token::load_config(&args.token)?;
    let target = token::target(&args.token, &config)?;
    let audit_log = if args.yes { config.audit.open()? } else { None };
    let trail = audit_log.as_ref().map(|log| Trail {
        log,
        actor: Actor::local_user(),
    });
    let mut opened = token::open(&target, &args.token)?;
    let pruned = crate::retention::prune(
        &mut opened.backend,
        &policy,
        &config.key.label_prefix,
        owner.as_ref(),
        args.yes,
        trail.as_ref(),
        request_id,
    )?;
    let written = print(&pruned, args.format);
    let failed = pruned
        .iter()
        .filter(|p| matches!(p.removed, Some(Err(_))))
        .count();
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output {
            detail: e.to_string(),
            rolled_back: false,
        }),
        _ if failed > 0 => Err(Error::Token {
            op: "retiring key pairs (C_DestroyObject)",
            token: opened.backend.token_label().to_owned(),
            detail: format!(
                "{failed} of {} could not be removed; see above",
                pruned.len()
            )
            .into(),
        }),
        _ => Ok(()),
    }
}

fn print(pruned: &[Pruned], format: ListFormat) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let state = |p: &Pruned| match &p.removed {
        None => "would remove".to_owned(),
        Some(Ok(())) => "removed".to_owned(),
        Some(Err(e)) => format!("failed: {e}"),
    };
    match format {
        ListFormat::Json => {
            let rows: Vec<serde_json::Value> = pruned
                .iter()
                .map(|p| {
                    let k = &p.retiring.key;
                    serde_json::json!({
                        "Label": k.label, "Id": k.id, "Owner": k.owner, "PubMd5": k.pub_md5,
                        "KeyUri": k.key_uri, "Reason": p.retiring.reason.to_string(),
                        "Cause": p.retiring.reason.cause(), "Removed": p.removed.as_ref().map(Result::is_ok),
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)
        }
        ListFormat::Table => {
            for p in pruned {
                let k = &p.retiring.key;
                writeln!(
                    out,
                    "{}: {} [{}] owner {}: {}",
                    state(p),
                    if k.label.is_empty() {
                        "(no label)"
                    } else {
                        &k.label
                    },
                    k.key_uri,
                    k.owner.as_deref().unwrap_or("-"),
                    p.retiring.reason
                )?;
            }
            let removed = pruned
                .iter()
                .filter(|p| matches!(p.removed, Some(Ok(()))))
                .count();
            match pruned.first().map(|p| p.removed.is_some()) {
                None => writeln!(out, "nothing to retire"),
                Some(false) => writeln!(
                    out,
                    "{} key pair(s) would be retired (dry run: pass --yes to remove them)",
                    pruned.len()
                ),
                Some(true) => writeln!(out, "retired {removed} of {} key pair(s)", pruned.len()),
            }
        }
    }
}
