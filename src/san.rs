//! The `SANs` parameter: a comma-separated list, typed entry by entry.
//!
//! RFC 5280 section 4.2.1.6:
//!
//! ```text
//! GeneralName ::= CHOICE {
//!      rfc822Name                      [1]     IA5String,
//!      dNSName                         [2]     IA5String,
//!      iPAddress                       [7]     OCTET STRING,
//!      ... }
//! ```
//!
//! An IPv4 or IPv6 literal becomes an `iPAddress`, an entry containing `@`
//! an `rfc822Name`, anything else a `dNSName`. dNSNames are "preferred name
//! syntax" (RFC 1034 section 3.5: letters, digits, hyphen, labels of at most
//! 63 octets, 253 in all), optionally with a leading `*.` wildcard label;
//! a non-ASCII name is converted to its IDNA A-label (RFC 5890), as RFC 5280
//! section 7.2 requires.

use std::collections::HashSet;
use std::net::IpAddr;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{Error, Result};

/// One typed subjectAltName entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum San {
    /// `dNSName`, already in A-label form.
    Dns(String),
    /// `iPAddress`.
    Ip(IpAddr),
    /// `rfc822Name`, domain part in A-label form.
    Email(String),
}

/// Parses the `SANs` parameter: entries are trimmed, empty entries are
/// skipped, duplicates are removed and the first occurrence's order is kept.
pub fn parse_sans(list: &str) -> Result<Vec<San>> {
    let mut out: Vec<San> = Vec::new();
    // A set, not `out.contains`: a 64 KiB list of distinct names would make
    // that quadratic.
    let mut seen = HashSet::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let san = parse_one(entry)?;
        if seen.insert(san.clone()) {
            out.push(san);
        }
    }
    Ok(out)
}

fn parse_one(entry: &str) -> Result<San> {
    // `[::1]` is a common way to write an IPv6 literal; accept it.
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(San::Ip(ip));
    }
    if entry.contains('@') {
        return email(entry).map(San::Email).ok_or_else(|| {
            Error::malformed(format!(
                "SANs entry {entry:?} is not a valid email address."
            ))
        });
    }
    dns_name(entry).map(San::Dns).ok_or_else(|| {
        Error::malformed(format!(
            "SANs entry {entry:?} is not a valid DNS name, IP address or email address."
        ))
    })
}

/// The common name as the SAN it names: a DNS name (A-label, lower case,
/// wildcard kept) or an IP address (`[::1]` accepted like in `SANs`); None
/// for any other text, such as `My Service` or an email address.
pub(crate) fn host(common_name: &str) -> Option<San> {
    let bare = common_name
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(common_name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(San::Ip(ip));
    }
    dns_name(common_name).map(San::Dns)
}

/// Validates a DNS name (optionally `*.`-prefixed) and returns its A-label form.
pub(crate) fn dns_name(name: &str) -> Option<String> {
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    // idna accepts a trailing root dot; a certificate name never has one.
    if rest.ends_with('.') {
        return None;
    }
    // UTS 46 maps some format characters (U+200B, U+FEFF, U+00AD, U+2060)
    // to nothing, so `exa\u{200B}mple.com` would silently become
    // `example.com`: the name asked for and the name certified would differ.
    if rest
        .chars()
        .any(|c| c.general_category() == GeneralCategory::Format)
    {
        return None;
    }
    // UTS 46 ToASCII with UseSTD3ASCIIRules, CheckHyphens and
    // VerifyDnsLength is the RFC 1034 preferred name syntax on the A-labels:
    // letters, digits and hyphens only, no label empty, over 63 octets or
    // starting or ending with '-', 253 octets in all. `rejects_malformed_entries`
    // holds idna to each of these rules.
    let ascii = idna::domain_to_ascii_strict(rest).ok()?;
    // A wildcard needs at least two labels under it (`*.com` is refused by
    // CAs); an all-numeric last label is an IP address or a typo, never a
    // host name (RFC 1123 section 2.1, RFC 3696 section 2).
    let numeric_tld = ascii
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if numeric_tld || (wildcard && !ascii.contains('.')) {
        return None;
    }
    let full = if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    };
    (full.len() <= 253).then_some(full)
}

/// Validates `local@domain` (RFC 5321 dot-atom local part, DNS domain) and
/// returns it with the domain in A-label form.
pub(crate) fn email(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(atext));
    if !local_ok || domain.starts_with("*.") {
        return None;
    }
    let domain = dns_name(domain)?;
    let full = format!("{local}@{domain}");
    (full.len() <= 253).then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_each_entry() {
        let sans =
            parse_sans(" a.example.com, 10.0.0.1 ,::1, [2001:db8::2], ops@example.com").unwrap();
        assert_eq!(
            sans,
            vec![
                San::Dns("a.example.com".into()),
                San::Ip("10.0.0.1".parse().unwrap()),
                San::Ip("::1".parse().unwrap()),
                San::Ip("2001:db8::2".parse().unwrap()),
                San::Email("ops@example.com".into()),
            ]
        );
    }

    #[test]
    fn dedups_keeping_first_order_and_skips_empty_entries() {
        let sans = parse_sans("b.example,a.example,,B.example, a.example ,").unwrap();
        assert_eq!(
            sans,
            vec![San::Dns("b.example".into()), San::Dns("a.example".into())]
        );
    }

    #[test]
    fn idn_becomes_a_label_and_wildcards_are_kept() {
        assert_eq!(
            dns_name("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(dns_name("*.Example.COM").as_deref(), Some("*.example.com"));
        assert_eq!(email("José@bücher.example"), None, "non-ASCII local part");
        assert_eq!(
            email("ops@bücher.example").as_deref(),
            Some("ops@xn--bcher-kva.example")
        );
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "exa mple.com",
            "-a.example",
            "a-.example",
            "a..example",
            "under_score.example",
            "a.*.example",
            "*",
            "*.com",
            "**.example",
            "example.com.",
            ".example",
            "*.",
            "*.*.example",
            "a*b.example",
            // R-LDH labels are reserved (RFC 5890 section 2.3.1); an xn--
            // label must be valid Punycode.
            "ab--cd.example",
            "xn--zz.example",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}.com", vec!["a".repeat(60); 5].join(".")),
            "@example.com",
            "a@",
            "a b@example.com",
            "a..b@example.com",
            "a@*.example.com",
            "999.1.1.1",
            "1.2.3",
            "a@b@c",
        ] {
            let err = parse_sans(bad).expect_err(bad);
            assert_eq!(err.code(), "InvalidValue.Malformed", "{bad}");
            assert!(err.to_string().contains("SANs"), "{bad}: {err}");
        }
    }

    #[test]
    fn format_characters_are_refused_not_dropped() {
        // idna refuses bidi controls but maps U+200B, U+FEFF, U+00AD, U+2060
        // and U+180E to nothing; all must be refused here.
        for c in [
            '\u{200b}',
            '\u{feff}',
            '\u{ad}',
            '\u{2060}',
            '\u{180e}',
            '\u{202e}',
            '\u{200d}',
            '\u{200e}',
            '\u{61c}',
            '\u{e0001}',
        ] {
            for entry in [
                format!("exa{c}mple.com"),
                format!("*.exa{c}mple.com"),
                format!("ops@exa{c}mple.com"),
                format!("o{c}ps@example.com"),
            ] {
                let err = parse_sans(&entry).expect_err(&entry);
                assert_eq!(err.code(), "InvalidValue.Malformed", "{entry:?}");
                assert!(err.to_string().contains("SANs entry"), "{entry:?}: {err}");
            }
            assert_eq!(dns_name(&format!("exa{c}mple.com")), None, "{c:?}");
        }
    }

    #[test]
    fn longest_legal_name_is_accepted() {
        // 3 * (62 + 1) + 60 + ".com" = 253, the RFC 1034 limit.
        let name = format!(
            "{}.{}.{}.{}.com",
            "a".repeat(62),
            "b".repeat(62),
            "c".repeat(62),
            "d".repeat(60)
        );
        assert_eq!(name.len(), 253);
        assert!(dns_name(&name).is_some());
        assert!(dns_name(&format!("e{name}")).is_none());
        // The `*.` counts too.
        let wild = format!("*.{}", &name[2..]);
        assert_eq!(dns_name(&wild), Some(wild.clone()));
        assert!(dns_name(&format!("*.e{}", &name[2..])).is_none());
    }

    #[test]
    fn a_labels_are_checked_and_folded() {
        assert_eq!(
            dns_name("XN--BCHER-KVA.Example").as_deref(),
            Some("xn--bcher-kva.example")
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// How a SAN is written back into a `SANs` list.
    fn show(san: &San) -> String {
        match san {
            San::Dns(s) | San::Email(s) => s.clone(),
            San::Ip(ip) => ip.to_string(),
        }
    }

    /// RFC 1034 section 3.5 preferred name syntax, lower case (A-labels are
    /// ASCII and idna folds case), at most 253 octets, optionally `*.`-led.
    fn is_preferred_name(name: &str, wildcard_ok: bool) -> bool {
        let rest = match name.strip_prefix("*.") {
            Some(rest) if wildcard_ok => rest,
            Some(_) => return false,
            None => name,
        };
        name.len() <= 253
            && rest.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    }

    /// One entry as an operator or an attacker might write it.
    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "(\\*\\.)?[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}",
            2 => "[a-zà-ÿ例テ-]{1,8}\\.(example|com|テスト|1)",
            2 => "[a-zA-Z0-9.!#+_-]{1,10}@[a-zü]{1,8}\\.[a-z]{2,4}",
            1 => any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            1 => any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
            1 => any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
            1 => "[ -~]{0,16}",
            1 => ".{0,12}",
        ]
    }

    /// A valid lower-case host name with at least two labels (single
    /// hyphens only: `ab--c` is a reserved R-LDH label, RFC 5890 2.3.1).
    fn host() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,4}(-[a-z0-9]{1,4})?(\\.[a-z0-9]{1,4}(-[a-z0-9]{1,4})?){0,2}\\.[a-z]{2,6}"
    }

    proptest! {
        #[test]
        fn any_list_parses_or_is_refused_without_panicking(
            entries in prop::collection::vec(entry(), 0..6),
            sep in "[ \t]{0,2},[ \t]{0,2}",
        ) {
            let list = entries.join(&sep);
            match parse_sans(&list) {
                Err(e) => {
                    prop_assert_eq!(e.code(), "InvalidValue.Malformed");
                    prop_assert!(e.to_string().starts_with("SANs entry "), "{}", e);
                }
                Ok(sans) => {
                    for (i, san) in sans.iter().enumerate() {
                        prop_assert!(!sans[..i].contains(san), "duplicate {:?}", san);
                        match san {
                            San::Dns(d) => prop_assert!(is_preferred_name(d, true), "{:?}", d),
                            San::Email(e) => {
                                let (local, domain) = e.rsplit_once('@').unwrap();
                                prop_assert!(!local.is_empty() && local.len() <= 64, "{:?}", e);
                                prop_assert!(is_preferred_name(domain, false), "{:?}", e);
                                prop_assert!(e.len() <= 255, "{:?}", e);
                            }
                            San::Ip(_) => {}
                        }
                    }
                    // The output is a fixed point: written back, it parses to itself.
                    let shown: Vec<String> = sans.iter().map(show).collect();
                    prop_assert_eq!(parse_sans(&shown.join(",")).unwrap(), sans.clone());
                    // Order kept, duplicates dropped: the entries parsed one
                    // by one, first occurrences only.
                    let mut want: Vec<San> = Vec::new();
                    for e in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                        let san = parse_sans(e).unwrap().remove(0);
                        if !want.contains(&san) {
                            want.push(san);
                        }
                    }
                    prop_assert_eq!(sans, want);
                }
            }
        }

        #[test]
        fn valid_names_are_kept_in_order_and_deduplicated_case_blind(
            pool in prop::collection::vec(host(), 1..5),
            picks in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 1..10),
        ) {
            let written: Vec<String> = picks
                .iter()
                .map(|(i, upper)| {
                    let h = i.get(&pool);
                    if *upper { h.to_ascii_uppercase() } else { h.clone() }
                })
                .collect();
            let mut want: Vec<San> = Vec::new();
            for w in &written {
                let san = San::Dns(w.to_ascii_lowercase());
                if !want.contains(&san) {
                    want.push(san);
                }
            }
            prop_assert_eq!(parse_sans(&written.join(", ")).unwrap(), want);
        }
    }
}
