//! The common name in the form every public CA accepts (docs/csr-rules.md).
//!
//! CA/Browser Forum Baseline Requirements, section 7.1.4.3 (subject
//! commonName): "If present, this field MUST contain exactly one entry that
//! is one of the values contained in the Certificate's subjectAltName
//! extension", encoded as "a character-for-character copy of the dNSName
//! entry value from the subjectAltName extension" for a domain name, and
//! for an IP address as dotted-decimal (IPv4) or the RFC 5952 text (IPv6).
//! ACME CAs check the same when they compare a CSR with its order (RFC 8555
//! section 7.4: "The CSR MUST indicate the exact same set of requested
//! identifiers as the initial newOrder request"), and clients such as
//! certbot order the CN along with the SANs.
//!
//! So a common name that is a domain name (wildcards included) or an IP
//! address:
//! - is among the SANs: added first when the caller left it out, not added
//!   twice when present in any spelling (case, U-label or A-label, `[::1]`
//!   or `0:0::1`: [`San`] values are canonical);
//! - is written into the CSR subject in that SAN's form: the A-label in
//!   lower case, or the canonical address text.
//!
//! Any other common name (`My Service`) is written as given and names no
//! SAN. The response's `CommonName` echoes what the caller sent.

use crate::error::{Error, Result};
use crate::san::{self, San};
use crate::subject::UB_COMMON_NAME;

/// Puts the SAN that `common_name` names into `sans` (first, unless already
/// there) and returns the commonName to write into the CSR subject.
///
/// # Errors
/// `InvalidValue.Malformed` when the name's A-label is longer than the 64
/// characters RFC 5280 allows a commonName (`ub-common-name`): a short
/// Unicode name can have a long A-label.
pub(crate) fn place(common_name: &str, sans: &mut Vec<San>) -> Result<String> {
    let Some(host) = san::host(common_name) else {
        return Ok(common_name.to_owned());
    };
    let subject_cn = match &host {
        San::Dns(name) => name.clone(),
        San::Ip(ip) => ip.to_string(),
        // `san::host` never names an email address.
        San::Email(_) => return Ok(common_name.to_owned()),
    };
    if subject_cn.len() > UB_COMMON_NAME {
        return Err(Error::malformed(format!(
            "CommonName {common_name:?} is {} characters as an A-label ({subject_cn}); a \
             commonName holds at most {UB_COMMON_NAME}. Use a shorter CommonName and put \
             this name in SANs.",
            subject_cn.len()
        )));
    }
    if !sans.contains(&host) {
        sans.insert(0, host);
    }
    Ok(subject_cn)
}

#[cfg(test)]
mod tests {
    use crate::request::{CsrRequest, SubjectDefaults, ValidRequest};
    use crate::san::San;

    fn valid(cn: &str, sans: Option<&str>) -> ValidRequest {
        CsrRequest {
            common_name: Some(cn.into()),
            sans: sans.map(Into::into),
            ..CsrRequest::default()
        }
        .validate(&SubjectDefaults::default())
        .unwrap()
    }

    fn dns(name: &str) -> San {
        San::Dns(name.into())
    }

    fn ip(addr: &str) -> San {
        San::Ip(addr.parse().unwrap())
    }

    #[test]
    fn a_common_name_left_out_of_the_sans_is_added_first() {
        let v = valid("cn.example.com", Some("other.example.com, third.example"));
        assert_eq!(
            v.sans,
            [
                dns("cn.example.com"),
                dns("other.example.com"),
                dns("third.example")
            ]
        );
        assert_eq!(v.subject.common_name, "cn.example.com");
    }

    #[test]
    fn a_common_name_already_among_the_sans_keeps_the_callers_order() {
        let v = valid("b.example", Some("a.example,b.example"));
        assert_eq!(v.sans, [dns("a.example"), dns("b.example")]);
    }

    #[test]
    fn without_sans_the_common_name_is_the_only_san() {
        assert_eq!(valid("example.com", None).sans, [dns("example.com")]);
        assert_eq!(valid("example.com", Some(" , ")).sans, [dns("example.com")]);
    }

    #[test]
    fn spellings_of_one_name_are_one_san() {
        for (cn, sans) in [
            ("Example.COM", "example.com"),
            ("example.com", "EXAMPLE.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("XN--BCHER-KVA.example", "BÜCHER.example"),
            ("*.Example.com", "*.example.COM"),
        ] {
            let v = valid(cn, Some(sans));
            assert_eq!(v.sans.len(), 1, "{cn} / {sans}: {:?}", v.sans);
        }
    }

    #[test]
    fn a_domain_common_name_is_written_as_its_a_label_and_echoed_as_sent() {
        let v = valid("bücher.example", Some("www.bücher.example"));
        assert_eq!(v.subject.common_name, "xn--bcher-kva.example");
        assert_eq!(v.common_name, "bücher.example");
        assert_eq!(
            v.sans,
            [
                dns("xn--bcher-kva.example"),
                dns("www.xn--bcher-kva.example")
            ]
        );
        // Upper case ASCII becomes the SAN's lower case, character for character.
        let v = valid(" Shop.Example.COM ", None);
        assert_eq!(v.subject.common_name, "shop.example.com");
        assert_eq!(v.common_name, "Shop.Example.COM");
    }

    #[test]
    fn a_wildcard_common_name_is_added_and_written_like_any_name() {
        let v = valid("*.Bücher.example", Some("bücher.example"));
        assert_eq!(v.subject.common_name, "*.xn--bcher-kva.example");
        assert_eq!(
            v.sans,
            [dns("*.xn--bcher-kva.example"), dns("xn--bcher-kva.example")]
        );
    }

    #[test]
    fn an_ip_common_name_is_an_ip_san_in_canonical_text() {
        let v = valid("10.0.0.1", Some("a.example"));
        assert_eq!(v.sans, [ip("10.0.0.1"), dns("a.example")]);
        assert_eq!(v.subject.common_name, "10.0.0.1");
        for cn in ["2001:DB8:0:0::1", "[2001:db8::1]", "2001:0db8:0000::0001"] {
            let v = valid(cn, Some("2001:db8::1"));
            assert_eq!(v.sans, [ip("2001:db8::1")], "{cn}");
            assert_eq!(v.subject.common_name, "2001:db8::1", "{cn}");
            assert_eq!(v.common_name, cn);
        }
    }

    #[test]
    fn other_common_names_are_kept_and_name_no_san() {
        for cn in [
            "My Service",
            "ops@example.com",
            "under_score.example",
            "example.com.",
        ] {
            let v = valid(cn, Some("a.example"));
            assert_eq!(v.sans, [dns("a.example")], "{cn}");
            assert_eq!(v.subject.common_name, cn);
            assert!(valid(cn, None).sans.is_empty(), "{cn}");
        }
    }

    #[test]
    fn an_a_label_longer_than_a_common_name_may_be_is_refused() {
        // 2 * 30 "ü" + "." is 61 characters; its A-label is 73.
        let cn = format!("{}.{}", "ü".repeat(30), "ü".repeat(30));
        let err = CsrRequest {
            common_name: Some(cn.clone()),
            ..CsrRequest::default()
        }
        .validate(&SubjectDefaults::default())
        .unwrap_err();
        assert_eq!(err.code(), "InvalidValue.Malformed");
        assert!(
            err.to_string().starts_with(&format!(
                "CommonName {cn:?} is 73 characters as an A-label (xn--"
            )),
            "{err}"
        );
        assert!(err.to_string().contains("at most 64"), "{err}");
    }

    #[test]
    fn an_a_label_of_exactly_64_characters_is_the_longest_accepted() {
        // "xn--bcher-kva." (14) + label + ".example" (8).
        let at = |n: usize| format!("bücher.{}.example", "a".repeat(n));
        let longest = valid(&at(42), None);
        assert_eq!(longest.subject.common_name.len(), 64);
        let err = CsrRequest {
            common_name: Some(at(43)),
            ..CsrRequest::default()
        }
        .validate(&SubjectDefaults::default())
        .unwrap_err();
        assert!(err.to_string().contains("is 65 characters"), "{err}");
    }

    #[test]
    fn at_most_one_san_is_added() {
        // 500 SANs stay 500 when the CN is among them, and become 501 when
        // it is not: the rule never multiplies what the caller sent.
        let list: Vec<String> = (0..500).map(|i| format!("h{i}.example")).collect();
        assert_eq!(valid("h7.example", Some(&list.join(","))).sans.len(), 500);
        assert_eq!(valid("cn.example", Some(&list.join(","))).sans.len(), 501);
    }
}
