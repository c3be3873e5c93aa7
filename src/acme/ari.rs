//! ACME Renewal Information (RFC 9773): the certificate identifier, and the
//! window the CA suggests.
//!
//! RFC 9773 section 4.1: "The unique identifier is constructed by
//! concatenating the base64url-encoding \[RFC4648\] of the keyIdentifier
//! field of the certificate's Authority Key Identifier (AKI) extension
//! \[RFC5280\], the period character ".", and the base64url-encoding of the
//! DER-encoded Serial Number field (without the tag and length bytes). All
//! trailing "=" characters MUST be stripped from both parts of the unique
//! identifier."

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use der::Decode;
use instant_acme::CertificateIdentifier;
use serde::{Deserialize, Serialize};
use x509_cert::ext::pkix::AuthorityKeyIdentifier;

use super::{AcmeOptions, account, acme_error, runtime};
use crate::certificate::ParsedCertificate;
use crate::error::{AcmeFailure, Error, Result};

/// id-ce-authorityKeyIdentifier (RFC 5280 section 4.2.1.1).
const AKI: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.35");

/// The certificate's RFC 9773 identifier, or `None` when it has no
/// Authority Key Identifier with a keyIdentifier (a CA that offers ARI
/// puts one in every certificate it issues).
pub(crate) fn cert_id(cert: &ParsedCertificate) -> Option<String> {
    let tbs = cert.cert.tbs_certificate();
    let ext = tbs.extensions()?.iter().find(|e| e.extn_id == AKI)?;
    let aki = AuthorityKeyIdentifier::from_der(ext.extn_value.as_bytes()).ok()?;
    let key_id = aki.key_identifier?;
    // The serial number's content octets, as encoded: a leading zero that
    // keeps a positive number positive stays.
    Some(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(key_id.as_bytes()),
        URL_SAFE_NO_PAD.encode(tbs.serial_number().as_bytes())
    ))
}

/// The identifier as instant-acme sends it in `replaces` (RFC 9773
/// section 5).
pub(super) fn identifier(id: &str) -> Option<CertificateIdentifier<'static>> {
    let (aki, serial) = id.split_once('.')?;
    Some(CertificateIdentifier {
        authority_key_identifier: aki.to_owned().into(),
        serial: serial.to_owned().into(),
    })
}

/// RFC 9773 section 4.3.2: "values under one minute could be treated as if
/// they were one minute, and values over one day could be treated as if
/// they were one day."
const ASK_AGAIN: std::ops::RangeInclusive<u64> = 60..=86_400;

/// RFC 9773 section 4.3.3: after an error, "clients MUST NOT" ask again at
/// once; six hours, its example for a long-term error.
const AFTER_AN_ERROR: u64 = 6 * 3600;

/// What the CA last said of a certificate: its window (RFC 9773 section
/// 4.2), in seconds since the epoch, if it gave a valid one, and when to
/// ask again (its `Retry-After`, or six hours after an error).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Window {
    /// The suggested window, start and end.
    pub window: Option<(u64, u64)>,
    /// Not asked again before this time.
    pub ask_after: u64,
}

/// The windows runs learned, by certificate identifier, kept in
/// `<account file>.ari.json` so that the next run asks again only once the
/// CA's `Retry-After` has passed. Only the identifiers of certificates
/// still on the token are written back, so the file stays as small as
/// the token's list.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    path: PathBuf,
    known: BTreeMap<String, Window>,
    /// Whether the CA's directory offers `renewalInfo` (learned from it, or
    /// from windows it gave before).
    pub offered: bool,
}

impl Windows {
    /// The windows kept beside `account_file`; none when there is no file
    /// or it cannot be read (each run can ask the CA again).
    pub(crate) fn load(account_file: &Path) -> Self {
        let path = super::beside::path(account_file, ".ari.json");
        let known: BTreeMap<String, Window> = super::beside::read(&path);
        Windows {
            offered: !known.is_empty(),
            path,
            known,
        }
    }

    /// The window of `id`, start and end, if the CA gave a valid one.
    pub(crate) fn get(&self, id: &str) -> Option<(u64, u64)> {
        self.known.get(id).and_then(|w| w.window)
    }

    /// Asks the CA for the window of each of `ids` whose last answer's
    /// `Retry-After` has passed at `now`. A CA without `renewalInfo` in its
    /// directory leaves [`Self::offered`] false and no window; a
    /// certificate the CA does not answer for, or gives an invalid window
    /// (its end not after its start), keeps its old window, or none, with a
    /// warning, and is not asked for again for six hours; a CA that does
    /// not answer in time is not asked for the rest.
    ///
    /// # Errors
    /// As `account::open`: the account file, or a CA that does not answer.
    pub(crate) fn refresh(&mut self, opts: &AcmeOptions, ids: &[&str], now: u64) -> Result<()> {
        let stale: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| self.known.get(*id).is_none_or(|w| w.ask_after <= now))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let rt = runtime()?;
        rt.block_on(async {
            let account = account::open(opts).await?;
            for id in stale {
                let Some(cert_id) = identifier(id) else {
                    continue;
                };
                let answer = match tokio::time::timeout(
                    opts.timeout,
                    account.renewal_info(&cert_id),
                )
                .await
                {
                    // The directory has no renewalInfo: nothing to ask, and
                    // windows it gave before are not followed.
                    Ok(Err(instant_acme::Error::Unsupported(_))) => {
                        self.offered = false;
                        self.known.clear();
                        return Ok(());
                    }
                    Ok(answer) => answer.map_err(|e| acme_error("renewal info", &e)),
                    Err(_) => Err(Error::Acme {
                        kind: AcmeFailure::Unreachable,
                        step: "renewal info",
                        detail: format!("the CA did not answer within {}s", opts.timeout.as_secs()),
                    }),
                };
                let at = |t: time::OffsetDateTime| u64::try_from(t.unix_timestamp()).unwrap_or(0);
                let failed = |known: &mut BTreeMap<String, Window>, why: String| {
                    log::warn!(
                        "no renewal window for certificate {id} ({why}); not asked again for six hours"
                    );
                    let window = known.get(id).and_then(|w| w.window);
                    let ask_after = now.saturating_add(AFTER_AN_ERROR);
                    known.insert(id.to_owned(), Window { window, ask_after });
                };
                match answer {
                    Ok((info, retry_after)) => {
                        self.offered = true;
                        let (start, end) = (
                            at(info.suggested_window.start),
                            at(info.suggested_window.end),
                        );
                        // Section 4.2: such a window is invalid, "as though
                        // no response was received".
                        if end <= start {
                            failed(&mut self.known, format!("its window ends at {end}, not after its start {start}"));
                            continue;
                        }
                        let wait = retry_after
                            .as_secs()
                            .clamp(*ASK_AGAIN.start(), *ASK_AGAIN.end());
                        self.known.insert(
                            id.to_owned(),
                            Window {
                                window: Some((start, end)),
                                ask_after: now.saturating_add(wait),
                            },
                        );
                    }
                    Err(e) => {
                        let unreachable = matches!(
                            e,
                            Error::Acme {
                                kind: AcmeFailure::Unreachable,
                                ..
                            }
                        );
                        failed(&mut self.known, format!("{}: {e}", e.code()));
                        if unreachable {
                            log::warn!("the CA did not answer: no more renewal windows asked for in this run");
                            break;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Writes the windows of `ids` back (mode 0600, replaced whole); a
    /// failure is a warning: the next run asks the CA again.
    pub(crate) fn save(&self, ids: &[&str]) {
        let kept: BTreeMap<&String, &Window> = self
            .known
            .iter()
            .filter(|(id, _)| ids.contains(&id.as_str()))
            .collect();
        let write = || -> std::io::Result<()> {
            super::beside::replace(&self.path, serde_json::to_string(&kept)?.as_bytes())
        };
        if let Err(e) = write() {
            log::warn!(
                "could not keep the renewal windows in {}: {e}; the next run asks the CA again",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serial 0x87654321: its DER content starts with a zero byte, which the
    /// identifier keeps (RFC 9773's own example has this serial).
    const HIGH_SERIAL: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASCgAwIBAgIFAIdlQyEwCgYIKoZIzj0EAwIwGjEYMBYGA1UEAwwPYXJp
LmV4YW1wbGUuY29tMB4XDTI2MTIwNzEyNDExNFoXDTM2MTIwNDEyNDExNFowGjEY
MBYGA1UEAwwPYXJpLmV4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAEOjB2hHa+pAcnrvK7I4mlkD8ciCwgl+2Ch3RbG4i2pnV9aR2EJCs4j51Eh6eB
5epytvr3HSUPwy3Ncgvw9K2SOqNTMFEwHQYDVR0OBBYEFKx62Ea/yBExP85NZcYN
52IYUKDgMA8GA1UdEwEB/wQFMAMBAf8wHwYDVR0jBBgwFoAUrHrYRr/IETE/zk1l
xg3nYhhQoOAwCgYIKoZIzj0EAwIDSQAwRgIhAK9Wm4LibaF3TL+pgn7DaI77tlF0
8jImoeejvF5obmQUAiEA33eHAhCGJFJtsLUcN2ZTkq307ydPYT8NS0DQ30FV0pg=
-----END CERTIFICATE-----
";

    /// Serial 0x1234.
    const LOW_SERIAL: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgICEjQwCgYIKoZIzj0EAwIwGjEYMBYGA1UEAwwPYXJpLmV4
YW1wbGUuY29tMB4XDTI2MTIwNzEyNDExNFoXDTM2MTIwNDEyNDExNFowGjEYMBYG
A1UEAwwPYXJpLmV4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
I6nc6cYeTq96pWFaz4MyeTV31h3N0IgD6IP3gN1+OujPuQi9pyNnxVZGKdsOV8Qf
DDuCp65SXl3F9Gnw8dtt1KNTMFEwHQYDVR0OBBYEFPDbW33GDMve6Zr8/csy/FJv
rp2aMA8GA1UdEwEB/wQFMAMBAf8wHwYDVR0jBBgwFoAU8NtbfcYMy97pmvz9yzL8
Um+unZowCgYIKoZIzj0EAwIDSAAwRQIgZIyBqVP/HBPCyxJJW8g2NsPO3kd3eBUo
CL9Sx2kmGKoCIQDmJQzixvx7zKbE+gOP7zMHZKKGGhVYz8Uq5PFnkD73Rw==
-----END CERTIFICATE-----
";

    /// Python's `acme` package (`acme.client._renewal_info_path_component`,
    /// acme 5.9.0) gave these identifiers for the two certificates.
    #[test]
    fn identifiers_match_an_independent_client() {
        for (pem, id) in [
            (HIGH_SERIAL, "rHrYRr_IETE_zk1lxg3nYhhQoOA.AIdlQyE"),
            (LOW_SERIAL, "8NtbfcYMy97pmvz9yzL8Um-unZo.EjQ"),
        ] {
            let cert = ParsedCertificate::parse(pem.as_bytes()).unwrap();
            assert_eq!(cert_id(&cert).as_deref(), Some(id));
        }
    }

    /// A version 1 certificate, without extensions.
    const NO_AKI: &str = "-----BEGIN CERTIFICATE-----
MIIBHzCBxgIBBzAKBggqhkjOPQQDAjAcMRowGAYDVQQDDBFub2FraS5leGFtcGxl
LmNvbTAeFw0yNjEyMDcxMjQxMjJaFw0zNjEyMDQxMjQxMjJaMBwxGjAYBgNVBAMM
EW5vYWtpLmV4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEI6nc
6cYeTq96pWFaz4MyeTV31h3N0IgD6IP3gN1+OujPuQi9pyNnxVZGKdsOV8QfDDuC
p65SXl3F9Gnw8dtt1DAKBggqhkjOPQQDAgNIADBFAiEA3enio9c6T79/GtxtTwgl
DxLmR0dNkchaJO96vCCMfyYCIDUqaclBvzhMSNFRp22tTX1TMQNtXyoe9hTht9VT
JWhB
-----END CERTIFICATE-----
";

    #[test]
    fn no_authority_key_identifier_is_no_identifier() {
        let cert = ParsedCertificate::parse(NO_AKI.as_bytes()).unwrap();
        assert_eq!(cert_id(&cert), None);
    }
}
