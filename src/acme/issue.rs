//! `acme issue` as a library call: key pair and CSR on the token (the same
//! [`prepare_csr`] that `create` uses), the order, and the certificate
//! stored beside the key before the key is kept.

use x509_cert::ext::pkix::name::GeneralName;

use instant_acme::Identifier;

use super::{AcmeOptions, account, order, runtime};
use crate::backend::KeyBackend;
use crate::certificate::ParsedCertificate;
use crate::error::{AcmeFailure, Error, Result};
use crate::issue::{CsrResponse, PendingCsr, ValidKeyOptions, prepare_csr};
use crate::request::ValidRequest;
use crate::san::San;

/// What an issuance produced.
#[derive(Clone, Debug)]
pub(crate) struct Issued {
    /// The CSR response: PubMd5, KeyUri, CommonName, ...
    pub response: CsrResponse,
    /// The chain as the CA sent it, PEM, leaf first.
    pub chain_pem: String,
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// The leaf's notAfter, seconds since the Unix epoch.
    pub not_after: u64,
}

/// A certificate issued for a key pair that is not kept yet. Dropping it
/// removes the pair; [`Self::commit`] stores the certificate and keeps it.
#[must_use = "dropping a PendingCertificate removes its key pair"]
#[derive(Debug)]
pub(crate) struct PendingCertificate<'b> {
    csr: PendingCsr<'b>,
    issued: Issued,
}

impl PendingCertificate<'_> {
    /// What was issued.
    pub(crate) fn issued(&self) -> &Issued {
        &self.issued
    }

    /// Stores the leaf beside the key on the token, then keeps the pair.
    ///
    /// # Errors
    /// A token error when the certificate cannot be stored; the pair has
    /// then been removed.
    pub(crate) fn commit(self) -> Result<Issued> {
        let PendingCertificate { mut csr, issued } = self;
        match csr.store_certificate(&issued.leaf_der) {
            // Only now is its delivery recorded and does the key take its
            // final identity: until its certificate is beside it, a run
            // cut off at any point (while the CA validates, say) leaves a
            // marked key a sweep removes.
            Ok(()) => {
                csr.record_delivery()?.commit()?;
                Ok(issued)
            }
            Err(e) => Err(roll_back(csr, e)),
        }
    }

    /// Removes the key pair (the certificate was not stored).
    ///
    /// # Errors
    /// The backend's, when the pair cannot be removed.
    pub(crate) fn rollback(self) -> Result<()> {
        self.csr.rollback()
    }
}

/// Makes a key pair and CSR on the token and orders a certificate for it.
/// The account is opened (or created) before the key is made; from then
/// on any failure removes the pair before returning.
///
/// # Errors
/// `InvalidValue.Malformed` for names ACME cannot certify (e-mail SANs),
/// `Config.Invalid` for the account file, `Acme.*` naming the failed step,
/// or the CSR path's errors.
pub(crate) fn order_certificate<'b>(
    backend: &'b mut dyn KeyBackend,
    request: &ValidRequest,
    key_options: &ValidKeyOptions,
    opts: &AcmeOptions,
    request_id: String,
    audit: Option<crate::audit::Trail<'b>>,
    replaces: Option<&str>,
) -> Result<PendingCertificate<'b>> {
    let identifiers = identifiers(request)?;
    let rt = runtime()?;
    let account = rt.block_on(account::open(opts))?;
    let offered: Vec<(String, String)> = account
        .profiles()
        .map(|p| (p.name.to_owned(), p.description.to_owned()))
        .collect();
    let profile = super::profile::choose(&offered, &opts.profile)?;

    let pending = prepare_csr(backend, request, key_options, request_id, audit)?;
    let csr_der = match pem::parse(&pending.response().csr) {
        Ok(p) => p.into_contents(),
        Err(e) => return Err(roll_back(pending, Error::EncodeCsr(e.to_string()))),
    };
    let chain = match rt.block_on(order::obtain(
        &account,
        &identifiers,
        &csr_der,
        opts,
        (replaces, profile.as_deref()),
    )) {
        Ok(chain) => chain,
        Err(e) => return Err(roll_back(pending, e)),
    };
    match leaf_for(&chain, pending.public_key_der()) {
        Ok((leaf_der, not_after)) => {
            let response = pending.response().clone();
            Ok(PendingCertificate {
                csr: pending,
                issued: Issued {
                    response,
                    chain_pem: chain,
                    leaf_der,
                    not_after,
                },
            })
        }
        Err(e) => Err(roll_back(pending, e)),
    }
}

/// RFC 8555 section 7.1.3 identifiers for the request's SANs; a wildcard
/// stays `*.name`.
fn identifiers(request: &ValidRequest) -> Result<Vec<Identifier>> {
    request
        .sans
        .iter()
        .map(|san| match san {
            San::Dns(name) => Ok(Identifier::Dns(name.clone())),
            San::Ip(ip) => Ok(Identifier::Ip(*ip)),
            San::Email(e) => Err(Error::Malformed(format!(
                "SAN {e:?} is an e-mail address; ACME certifies only DNS names and IP addresses."
            ))),
        })
        .collect()
}

/// The chain's first certificate, which must be for `spki` (a CA that
/// answers with someone else's certificate is not believed); its DER and
/// notAfter.
fn leaf_for(chain: &str, spki: &[u8]) -> Result<(Vec<u8>, u64)> {
    let bad = |detail: String| Error::Acme {
        kind: AcmeFailure::BadCertificate,
        step: "certificate",
        detail,
    };
    let blocks = pem::parse_many(chain).map_err(|e| bad(format!("the chain is not PEM: {e}")))?;
    let first = blocks
        .first()
        .ok_or_else(|| bad("the chain is empty".into()))?;
    let leaf = ParsedCertificate::parse(pem::encode(first).as_bytes())
        .map_err(|e| bad(format!("the leaf: {e}")))?;
    if leaf.spki_der()? != spki {
        return Err(bad(format!(
            "the leaf is for another key (PubMd5 {})",
            leaf.pub_md5()?
        )));
    }
    let not_after = leaf.not_after_unix();
    Ok((leaf.der, not_after))
}

/// Removes the pending pair after `e`; the error says if that failed too.
fn roll_back(pending: PendingCsr<'_>, e: Error) -> Error {
    let key_uri = pending.response().key_uri.clone();
    match pending.rollback() {
        Ok(()) => e,
        Err(rollback) => Error::RollbackFailed {
            original: Box::new(e),
            rollback: rollback.to_string(),
            key_uri,
        },
    }
}

/// The DNS names and IP addresses a certificate is for, as `--sans` takes
/// them, and its common name.
pub(super) fn names_of(cert: &ParsedCertificate) -> (Option<String>, Vec<String>) {
    use x509_cert::ext::pkix::SubjectAltName;
    let tbs = cert.cert.tbs_certificate();
    let cn = tbs
        .subject()
        .common_name()
        .ok()
        .flatten()
        .map(|cn| cn.value().into_owned());
    let mut names = Vec::new();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for name in san.0 {
            match name {
                GeneralName::DnsName(d) => names.push(d.to_string()),
                GeneralName::IpAddress(ip) => {
                    let b = ip.as_bytes();
                    if let Ok(v4) = <[u8; 4]>::try_from(b) {
                        names.push(std::net::IpAddr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
                        names.push(std::net::IpAddr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    (cn, names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::CsrRequest;

    #[test]
    fn email_sans_are_refused_before_any_key_is_made() {
        let request = CsrRequest {
            common_name: Some("example.com".into()),
            sans: Some("example.com,a@example.com".into()),
            ..Default::default()
        }
        .validate(&Default::default())
        .unwrap();
        let e = identifiers(&request).unwrap_err();
        assert_eq!(e.code(), "InvalidValue.Malformed");
    }

    #[test]
    fn a_wildcard_keeps_its_star() {
        let request = CsrRequest {
            common_name: Some("*.example.com".into()),
            ..Default::default()
        }
        .validate(&Default::default())
        .unwrap();
        let ids = identifiers(&request).unwrap();
        assert_eq!(ids, vec![Identifier::Dns("*.example.com".into())]);
    }
}
