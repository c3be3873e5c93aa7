//! Whether a certificate covers a domain, as RFC 6125 section 6.4 has a
//! client check it:
//! - the names are the subjectAltName dNSNames; only when there are none
//!   is the subject's common name used (section 6.4.4);
//! - names compare case-insensitively, as A-labels (section 6.4.1; the
//!   domain asked for is converted by UTS 46, a certificate must already
//!   hold A-labels);
//! - a `*` matches only as the whole left-most label, and exactly one
//!   label (section 6.4.3, and the CA/Browser Forum baseline requirements
//!   that forbid `f*.example.com`); never over a single label under it
//!   (`*.com`).
//!
//! A domain asked for may itself be a wildcard (a CDN domain such as
//! `*.example.com`): only the same wildcard name covers it.

use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use super::ParsedCertificate;
use crate::error::{Error, Result};

/// Names listed in a `Certificate.MissMatch` message; the rest are counted.
const NAMES_SHOWN: usize = 8;

impl ParsedCertificate {
    /// The DNS names the certificate is for, lowercase: its
    /// subjectAltName dNSNames, or its common name when it has none.
    pub fn dns_names(&self) -> Vec<String> {
        let tbs = self.cert.tbs_certificate();
        let from_san: Vec<String> = tbs
            .get_extension::<SubjectAltName>()
            .ok()
            .flatten()
            .map(|(_, san)| {
                san.0
                    .into_iter()
                    .filter_map(|n| match n {
                        GeneralName::DnsName(d) => Some(d.to_string().to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !from_san.is_empty() {
            return from_san;
        }
        tbs.subject()
            .common_name()
            .ok()
            .flatten()
            .map(|cn| vec![cn.value().to_ascii_lowercase()])
            .unwrap_or_default()
    }

    /// Fails with `Certificate.MissMatch` unless the certificate covers
    /// `domain`.
    ///
    /// # Errors
    /// As above; `InvalidValue.Malformed` when `domain` is not a DNS name.
    pub fn check_domain(&self, domain: &str) -> Result<()> {
        let want = crate::san::dns_name(domain).ok_or_else(|| {
            Error::malformed(format!(
                "DomainName {} is not a valid domain name.",
                shown(domain)
            ))
        })?;
        let names = self.dns_names();
        if names.iter().any(|n| covers(n, &want)) {
            return Ok(());
        }
        Err(Error::CertificateMismatch {
            domain: want,
            covers: listing(&names),
        })
    }
}

/// The certificate's names for a message: the first [`NAMES_SHOWN`], each
/// [`shown`], and how many more.
fn listing(names: &[String]) -> String {
    if names.is_empty() {
        return "no DNS names".into();
    }
    let mut listed: Vec<String> = names.iter().take(NAMES_SHOWN).map(|n| shown(n)).collect();
    if names.len() > NAMES_SHOWN {
        listed.push(format!("and {} more", names.len() - NAMES_SHOWN));
    }
    listed.join(", ")
}

/// `name` quoted, escaped (no control character gets through) and cut to
/// 80 characters: certificate and request text goes into messages and log
/// lines.
fn shown(name: &str) -> String {
    let cut: String = name.chars().take(80).collect();
    let more = if cut.len() < name.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

/// Whether certificate name `pattern` covers `domain` (both lowercase
/// A-labels).
fn covers(pattern: &str, domain: &str) -> bool {
    if pattern == domain {
        return true;
    }
    match (pattern.strip_prefix("*."), domain.split_once('.')) {
        (Some(suffix), Some((first, rest))) => {
            suffix.contains('.') && !first.is_empty() && first != "*" && rest == suffix
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_exactly_one_whole_label() {
        assert!(covers("example.com", "example.com"));
        assert!(covers("*.example.com", "www.example.com"));
        assert!(covers("*.example.com", "xn--bcher-kva.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("www.example.com", "example.com"));
        assert!(!covers("www.example.com", "www.example.com.evil"));
        assert!(!covers("*.com", "example.com"), "not over a single label");
        assert!(
            !covers("w*.example.com", "www.example.com"),
            "no partial label"
        );
        assert!(!covers("*w.example.com", "www.example.com"));
        assert!(!covers("www.*.com", "www.example.com"));
        assert!(!covers("*", "example"));
        assert!(!covers("*.*.example.com", "a.b.example.com"));
    }

    #[test]
    fn a_wildcard_domain_is_covered_only_by_the_same_wildcard() {
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "*.a.example.com"));
        assert!(!covers("www.example.com", "*.example.com"));
    }

    fn fixture() -> ParsedCertificate {
        ParsedCertificate::parse(include_bytes!(
            "../../tests/fixtures/mock-www.example.com.pem"
        ))
        .unwrap()
    }

    #[test]
    fn the_domain_is_checked_against_the_san_names() {
        let cert = fixture();
        assert_eq!(cert.dns_names(), ["www.example.com", "*.wild.example.com"]);
        cert.check_domain("www.example.com").unwrap();
        cert.check_domain("WWW.Example.COM").unwrap();
        cert.check_domain("cdn.wild.example.com").unwrap();
        cert.check_domain("*.wild.example.com").unwrap();
        let e = cert.check_domain("example.com").unwrap_err();
        assert_eq!(e.code(), "Certificate.MissMatch");
        assert!(
            e.to_string().starts_with(
                "The certificate does not match the domain. (\"example.com\" is not among"
            ),
            "{e}"
        );
        let e = cert.check_domain("a.b.wild.example.com").unwrap_err();
        assert_eq!(e.code(), "Certificate.MissMatch");
    }

    #[test]
    fn a_malformed_domain_is_refused_without_echoing_control_characters() {
        let cert = fixture();
        for bad in [
            "www.example.com\nforged=1",
            "",
            "exa mple.com",
            "example.com.",
        ] {
            let e = cert.check_domain(bad).unwrap_err();
            assert_eq!(e.code(), "InvalidValue.Malformed", "{bad:?}");
            assert!(!e.to_string().chars().any(char::is_control), "{e:?}");
        }
        let long = "a".repeat(5000);
        assert!(cert.check_domain(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn names_are_shown_escaped_and_short() {
        assert_eq!(shown("a\nb\u{1b}"), r#""a\nb\u{1b}""#);
        let long = shown(&"x".repeat(500));
        assert!(long.len() < 100 && long.ends_with("\"..."), "{long}");
        assert_eq!(shown(&"x".repeat(80)), format!("{:?}", "x".repeat(80)));
    }

    #[test]
    fn at_most_eight_names_are_listed() {
        let names = |n: usize| (0..n).map(|i| format!("n{i}.example")).collect::<Vec<_>>();
        assert_eq!(listing(&[]), "no DNS names");
        let eight = listing(&names(NAMES_SHOWN));
        assert!(eight.ends_with("\"n7.example\""), "{eight}");
        assert!(!eight.contains("more"), "{eight}");
        let nine = listing(&names(NAMES_SHOWN + 1));
        assert!(nine.ends_with("\"n7.example\", and 1 more"), "{nine}");
    }
}
