//! One order, from `newOrder` to the certificate chain (RFC 8555 section
//! 7.4): authorizations answered, challenges set ready, the order polled
//! until ready, finalised with the token-signed CSR, and polled until the
//! certificate is there.

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use super::dns01::{self, Record};
use super::http01::{Http01, valid_token};
use super::{AcmeOptions, Responder, call, problem_text};
use crate::error::{AcmeFailure, Error, Result};

/// Orders a certificate for `identifiers` with `csr_der`; the PEM chain,
/// leaf first.
///
/// # Errors
/// `Acme.*`, naming the step that failed.
pub(super) async fn obtain(
    account: &Account,
    identifiers: &[Identifier],
    csr_der: &[u8],
    opts: &AcmeOptions,
    (replaces, profile): (Option<&str>, Option<&str>),
) -> Result<String> {
    let replacing = replaces.and_then(super::ari::identifier);
    let without_replaces = || match profile {
        Some(p) => NewOrder::new(identifiers).profile(p),
        None => NewOrder::new(identifiers),
    };
    let mut new_order = without_replaces();
    if let Some(id) = &replacing {
        new_order = new_order.replaces(id.clone());
    }
    let mut order = match call("new order", opts.timeout, account.new_order(&new_order)).await {
        // RFC 9773 section 5: a CA refuses `replaces` for a certificate
        // another order replaced (`alreadyReplaced`), another account's,
        // or one it does not know; the renewal is still due. A CA whose
        // order does not echo `replaces` (acme2certifier 0.46) did not take
        // it into account: instant-acme refuses that order.
        Err(Error::Acme { kind, detail, .. })
            if replacing.is_some()
                && (kind == AcmeFailure::Refused || detail.contains("replaces field mismatch")) =>
        {
            log::warn!(
                "the CA did not take the order as replacing {} ({detail}); ordered without replaces",
                replaces.unwrap_or_default()
            );
            call(
                "new order",
                opts.timeout,
                account.new_order(&without_replaces()),
            )
            .await?
        }
        other => other?,
    };
    // Section 4 of draft-ietf-acme-profiles: the order names the profile
    // the CA applies; one that does not echo it may issue its default.
    if let Some(asked) = profile {
        let echoed = order.state().profile.clone();
        if echoed.as_deref() != Some(asked) {
            log::warn!(
                "the CA's order names profile {}, not {asked}: it may issue its default",
                echoed
                    .as_deref()
                    .map_or_else(|| "none".to_owned(), super::one_line)
            );
        }
    }

    let http01 = match opts.responder {
        Responder::Http01(addr) => Some(Http01::start(addr).await?),
        Responder::Dns01 { .. } => None,
    };
    let mut published = Vec::new();
    let ordered: Vec<String> = identifiers
        .iter()
        .map(|id| id.authorized(false).to_string())
        .collect();
    let answered = answer(&mut order, &ordered, opts, http01.as_ref(), &mut published).await;
    let ready = match answered {
        Ok(()) => wait_ready(&mut order, opts).await,
        Err(e) => Err(e),
    };
    drop(http01);
    if let Responder::Dns01 {
        cleanup: Some(cleanup),
        hook_timeout,
        ..
    } = &opts.responder
    {
        for record in &published {
            if let Err(e) = dns01::run("dns-01 cleanup hook", cleanup, record, *hook_timeout).await
            {
                log::warn!("{e}");
            }
        }
    }
    ready?;

    call("finalize", opts.timeout, order.finalize_csr(csr_der)).await?;
    let policy = RetryPolicy::new().timeout(opts.validation_timeout);
    call(
        "certificate",
        opts.validation_timeout + opts.timeout,
        order.poll_certificate(&policy),
    )
    .await
}

/// Sets up a response for each pending authorization and tells the CA.
async fn answer(
    order: &mut instant_acme::Order,
    ordered: &[String],
    opts: &AcmeOptions,
    http01: Option<&Http01>,
    published: &mut Vec<Record>,
) -> Result<()> {
    let wanted = match opts.responder {
        Responder::Http01(_) => ChallengeType::Http01,
        Responder::Dns01 { .. } => ChallengeType::Dns01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = call("authorization", opts.timeout, async {
        authorizations.next().await.transpose()
    })
    .await?
    {
        let mut authz = authz;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(Error::Acme {
                    kind: AcmeFailure::Refused,
                    step: "authorization",
                    detail: format!("authorization for {} is {other:?}", authz.identifier()),
                });
            }
        }
        let name = authz.identifier().to_string();
        in_order(&name, ordered)?;
        let offered: Vec<String> = authz
            .challenges
            .iter()
            .map(|c| format!("{:?}", c.r#type))
            .collect();
        let Some(mut challenge) = authz.challenge(wanted.clone()) else {
            return Err(Error::Acme {
                kind: AcmeFailure::Refused,
                step: "authorization",
                detail: format!(
                    "the CA offers no {wanted:?} challenge for {name} (it offers {})",
                    offered.join(", ")
                ),
            });
        };
        valid_token(&challenge.token)?;
        let key_authorization = challenge.key_authorization();
        match (&opts.responder, http01) {
            (Responder::Http01(_), Some(server)) => {
                server.add(&challenge.token, key_authorization.as_str())?;
            }
            (
                Responder::Dns01 {
                    hook, hook_timeout, ..
                },
                _,
            ) => {
                let identifier = challenge.identifier();
                let domain = match identifier.identifier {
                    Identifier::Dns(d) => d.clone(),
                    _ => {
                        return Err(Error::Acme {
                            kind: AcmeFailure::Refused,
                            step: "authorization",
                            detail: format!("dns-01 cannot validate {name}; use --http-01"),
                        });
                    }
                };
                let record = Record {
                    domain,
                    validation: key_authorization.dns_value(),
                    token: challenge.token.clone(),
                };
                dns01::run("dns-01 hook", hook, &record, *hook_timeout).await?;
                published.push(record);
            }
            (Responder::Http01(_), None) => {
                return Err(Error::Internal("http-01 responder missing".into()));
            }
        }
        call("challenge", opts.timeout, challenge.set_ready()).await?;
    }
    Ok(())
}

/// Refuses to answer for a name that is not in the order: the name reaches
/// a hook's environment, and a CA has no business asking about others.
fn in_order(name: &str, ordered: &[String]) -> Result<()> {
    if ordered.iter().any(|o| o == name) {
        Ok(())
    } else {
        Err(Error::Acme {
            kind: AcmeFailure::Refused,
            step: "authorization",
            detail: format!(
                "the CA asks to validate {}, which is not in the order",
                super::one_line(name)
            ),
        })
    }
}

/// Polls until the order is ready; when it turns invalid, says which
/// challenge failed and why (the challenge's problem document).
async fn wait_ready(order: &mut instant_acme::Order, opts: &AcmeOptions) -> Result<()> {
    let policy = RetryPolicy::new().timeout(opts.validation_timeout);
    let polled = tokio::time::timeout(
        opts.validation_timeout + opts.timeout,
        order.poll_ready(&policy),
    )
    .await;
    let why = match polled {
        Ok(Ok(OrderStatus::Ready)) => return Ok(()),
        Ok(Ok(status)) => format!("the order is {status:?}"),
        Ok(Err(instant_acme::Error::Api(problem))) => problem_text(&problem),
        Ok(Err(e)) => return Err(super::acme_error("validation", &e)),
        Err(_) => {
            return Err(Error::Acme {
                kind: AcmeFailure::Unreachable,
                step: "validation",
                detail: format!(
                    "the order was not ready after {}s",
                    opts.validation_timeout.as_secs()
                ),
            });
        }
    };
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    loop {
        let next = tokio::time::timeout(opts.timeout, authorizations.next()).await;
        let Ok(Some(Ok(mut authz))) = next else {
            break;
        };
        if tokio::time::timeout(opts.timeout, authz.refresh())
            .await
            .is_err()
        {
            break;
        }
        let name = authz.identifier().to_string();
        for c in &authz.challenges {
            if let Some(problem) = &c.error {
                reasons.push(format!("{name}: {}", problem_text(problem)));
            }
        }
    }
    Err(Error::Acme {
        kind: AcmeFailure::ChallengeFailed,
        step: "validation",
        detail: if reasons.is_empty() {
            why
        } else {
            reasons.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ordered_names_are_answered() {
        let ids = [
            Identifier::Dns("*.example.com".into()),
            Identifier::Dns("example.com".into()),
            Identifier::Ip("192.0.2.1".parse().unwrap()),
        ];
        let ordered: Vec<String> = ids
            .iter()
            .map(|id| id.authorized(false).to_string())
            .collect();
        // As instant-acme shows an authorization's identifier: the
        // wildcard flag gives the `*.` back (RFC 8555 section 7.1.4).
        let wildcard = Identifier::Dns("example.com".into());
        in_order(&wildcard.authorized(true).to_string(), &ordered).unwrap();
        in_order("example.com", &ordered).unwrap();
        in_order("192.0.2.1", &ordered).unwrap();
        for other in ["other.example.com", "$(reboot)", "example.com\nx"] {
            let e = in_order(other, &ordered).unwrap_err();
            assert_eq!(e.code(), "Acme.Refused");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
