//! The request parameters of CreateCdnCertificateSigningRequest /
//! CreateDcdnCertificateSigningRequest, and their validation.
//!
//! Validation happens before any token call, so a bad request never costs a
//! key generation.

use serde::{Deserialize, Serialize};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::common_name;
use crate::error::{Error, Result};
use crate::san::{self, San};
use crate::subject::{Subject, UB_COMMON_NAME};

/// Upper bounds from RFC 5280 appendix A.1 (`ub-*`), counted in characters
/// (the common name's is [`crate::subject`]'s, which `common_name` shares).
const UB_ORGANIZATION_NAME: usize = 64;
const UB_ORGANIZATIONAL_UNIT_NAME: usize = 64;
const UB_STATE_NAME: usize = 128;
const UB_LOCALITY_NAME: usize = 128;
const UB_EMAILADDRESS_LENGTH: usize = 255;

/// A request as the API receives it: every field a string, optional ones
/// absent or empty when not given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CsrRequest {
    /// The certificate's common name (required).
    pub common_name: Option<String>,
    /// Comma-separated subjectAltNames.
    #[serde(rename = "SANs")]
    pub sans: Option<String>,
    /// organizationName; default "Alibaba Inc".
    pub organization: Option<String>,
    /// organizationalUnitName; default "Aliyun CDN".
    pub organization_unit: Option<String>,
    /// countryName, exactly two letters; default "CN".
    pub country: Option<String>,
    /// stateOrProvinceName; default "Zhejiang".
    pub state: Option<String>,
    /// localityName; default "Hangzhou".
    pub city: Option<String>,
    /// emailAddress (optional).
    pub email: Option<String>,
}

/// Values used for subject fields the request leaves out. `Default` gives
/// the API's documented defaults; the TOML config can override them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectDefaults {
    /// Default organizationName.
    pub organization: String,
    /// Default organizationalUnitName.
    pub organization_unit: String,
    /// Default countryName.
    pub country: String,
    /// Default stateOrProvinceName.
    pub state: String,
    /// Default localityName.
    pub city: String,
    /// Default emailAddress (none unless configured).
    pub email: Option<String>,
}

impl Default for SubjectDefaults {
    fn default() -> Self {
        SubjectDefaults {
            organization: "Alibaba Inc".into(),
            organization_unit: "Aliyun CDN".into(),
            country: "CN".into(),
            state: "Zhejiang".into(),
            city: "Hangzhou".into(),
            email: None,
        }
    }
}

/// A request that passed validation: what goes into the CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRequest {
    /// The common name as the caller sent it (trimmed): what the response's
    /// `CommonName` echoes and the key label carries.
    pub common_name: String,
    /// The subject, with defaults filled in. Its common name is the form a
    /// CA accepts (see `common_name`), which may differ from
    /// [`Self::common_name`].
    pub subject: Subject,
    /// The subjectAltNames, typed and de-duplicated. When the common name is
    /// a DNS name or an IP address, it is among them (first, when the caller
    /// left it out).
    pub sans: Vec<San>,
}

impl CsrRequest {
    /// Checks every field and fills in defaults.
    ///
    /// # Errors
    /// `MissingCommonName` when the common name is absent or blank;
    /// `InvalidValue.Malformed`, naming the field, for everything else.
    pub fn validate(&self, defaults: &SubjectDefaults) -> Result<ValidRequest> {
        let common_name = given(&self.common_name).ok_or(Error::MissingCommonName)?;
        let common_name = text("CommonName", common_name, UB_COMMON_NAME)?;

        let country = given(&self.country).unwrap_or(&defaults.country);
        if country.chars().count() != 2 {
            return Err(Error::malformed("Country must be 2 characters."));
        }
        if !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Error::malformed(
                "Country must be a two-letter ISO 3166 code, such as CN or US.",
            ));
        }

        let pick = |field: &'static str, value: &Option<String>, default: &str, ub: usize| {
            text(field, given(value).unwrap_or(default), ub)
        };
        let email = match given(&self.email).or(defaults.email.as_deref()) {
            None => None,
            Some(e) => {
                let e = text("Email", e, UB_EMAILADDRESS_LENGTH)?;
                Some(san::email(&e).ok_or_else(|| {
                    Error::malformed(format!("Email {e:?} is not a valid email address."))
                })?)
            }
        };
        let mut subject = Subject {
            country: country.to_ascii_uppercase(),
            state: pick("State", &self.state, &defaults.state, UB_STATE_NAME)?,
            city: pick("City", &self.city, &defaults.city, UB_LOCALITY_NAME)?,
            organization: pick(
                "Organization",
                &self.organization,
                &defaults.organization,
                UB_ORGANIZATION_NAME,
            )?,
            organization_unit: pick(
                "OrganizationUnit",
                &self.organization_unit,
                &defaults.organization_unit,
                UB_ORGANIZATIONAL_UNIT_NAME,
            )?,
            common_name: common_name.clone(),
            email,
        };

        let mut sans = san::parse_sans(self.sans.as_deref().unwrap_or(""))?;
        subject.common_name = common_name::place(&common_name, &mut sans)?;
        Ok(ValidRequest {
            common_name,
            subject,
            sans,
        })
    }
}

#[cfg(test)]
impl ValidRequest {
    /// `example.com` with the API's defaults, for tests of what comes after
    /// validation.
    pub(crate) fn example() -> ValidRequest {
        CsrRequest {
            common_name: Some("example.com".into()),
            ..CsrRequest::default()
        }
        .validate(&SubjectDefaults::default())
        .expect("example.com is a valid request")
    }
}

/// A field counts as given when it has non-blank content.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A subject value: trimmed, non-empty, at most `ub` characters, and free of
/// characters that make it display other than it is: controls (Cc), line and
/// paragraph separators (Zl, Zp), and format characters (Cf: bidi overrides
/// such as U+202E, zero-width U+200B, U+FEFF, soft hyphen), which would let
/// `CN=moc.elpmaxe` read as `example.com` to the person approving the CSR.
fn text(field: &str, value: &str, ub: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::malformed(format!("{field} must not be empty.")));
    }
    if value.chars().any(|c| {
        matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
    }) {
        return Err(Error::malformed(format!(
            "{field} must not contain control characters or line breaks."
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
    {
        // The code point, not the value: the value is what would mislead.
        return Err(Error::malformed(format!(
            "{field} must not contain invisible Unicode format characters \
             (bidi controls, zero-width characters); found U+{:04X}.",
            u32::from(c)
        )));
    }
    let n = value.chars().count();
    if n > ub {
        return Err(Error::malformed(format!(
            "{field} must be at most {ub} characters (got {n})."
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cn: &str) -> CsrRequest {
        CsrRequest {
            common_name: Some(cn.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_apis() {
        let v = req("example.com")
            .validate(&SubjectDefaults::default())
            .unwrap();
        let s = v.subject;
        assert_eq!(
            (
                s.country.as_str(),
                s.state.as_str(),
                s.city.as_str(),
                s.organization.as_str(),
                s.organization_unit.as_str()
            ),
            ("CN", "Zhejiang", "Hangzhou", "Alibaba Inc", "Aliyun CDN")
        );
        assert_eq!(s.email, None);
        assert_eq!(
            v.sans,
            vec![San::Dns("example.com".into())],
            "CN doubles as the SAN"
        );
    }

    /// (field setter, expected code, expected message fragment)
    #[test]
    fn validation_table() {
        type Case = (fn(&mut CsrRequest), &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (|r| r.common_name = None, "MissingCommonName", "CommonName"),
            (
                |r| r.common_name = Some("  ".into()),
                "MissingCommonName",
                "CommonName",
            ),
            (
                |r| r.common_name = Some("a".repeat(65)),
                "InvalidValue.Malformed",
                "CommonName must be at most 64",
            ),
            (
                |r| r.country = Some("CHN".into()),
                "InvalidValue.Malformed",
                "Country must be 2 characters.",
            ),
            (
                |r| r.country = Some("C".into()),
                "InvalidValue.Malformed",
                "Country must be 2 characters.",
            ),
            (
                |r| r.country = Some("C1".into()),
                "InvalidValue.Malformed",
                "ISO 3166",
            ),
            (
                |r| r.organization = Some("o".repeat(65)),
                "InvalidValue.Malformed",
                "Organization must be at most 64",
            ),
            (
                |r| r.organization_unit = Some("o".repeat(65)),
                "InvalidValue.Malformed",
                "OrganizationUnit must be at most 64",
            ),
            (
                |r| r.state = Some("s".repeat(129)),
                "InvalidValue.Malformed",
                "State must be at most 128",
            ),
            (
                |r| r.city = Some("c".repeat(129)),
                "InvalidValue.Malformed",
                "City must be at most 128",
            ),
            (
                |r| r.city = Some("Hang\nzhou".into()),
                "InvalidValue.Malformed",
                "City must not contain control",
            ),
            (
                |r| r.email = Some("not-an-email".into()),
                "InvalidValue.Malformed",
                "Email",
            ),
            (
                |r| r.email = Some("a@b@c.com".into()),
                "InvalidValue.Malformed",
                "Email",
            ),
            (
                |r| r.sans = Some("ok.example,bad name".into()),
                "InvalidValue.Malformed",
                "SANs entry \"bad name\"",
            ),
        ];
        for (i, (set, code, msg)) in cases.into_iter().enumerate() {
            let mut r = req("example.com");
            set(&mut r);
            let err = r
                .validate(&SubjectDefaults::default())
                .expect_err(&format!("case {i}"));
            assert_eq!(err.code(), code, "case {i}: {err}");
            assert!(err.to_string().contains(msg), "case {i}: {err}");
        }
    }

    /// Format characters (Cf) hide or reorder text: U+202E makes
    /// `moc.elpmaxe` display as `example.com`; the zero-width ones make two
    /// different strings look the same.
    const FORMAT_CHARS: [char; 8] = [
        '\u{202e}', '\u{202a}', '\u{2066}', '\u{200b}', '\u{200e}', '\u{feff}', '\u{ad}',
        '\u{2060}',
    ];

    #[test]
    fn format_characters_are_refused_in_every_subject_field() {
        type Set = fn(&mut CsrRequest, String);
        let fields: [(&str, Set); 6] = [
            ("CommonName", |r, v| r.common_name = Some(v)),
            ("Organization", |r, v| r.organization = Some(v)),
            ("OrganizationUnit", |r, v| r.organization_unit = Some(v)),
            ("State", |r, v| r.state = Some(v)),
            ("City", |r, v| r.city = Some(v)),
            ("Email", |r, v| r.email = Some(v)),
        ];
        for (field, set) in fields {
            for c in FORMAT_CHARS {
                let mut r = req("example.com");
                let value = if field == "Email" {
                    format!("ops{c}@example.com")
                } else {
                    format!("exa{c}mple")
                };
                set(&mut r, value);
                let err = r.validate(&SubjectDefaults::default()).unwrap_err();
                let want = format!(
                    "{field} must not contain invisible Unicode format characters \
                     (bidi controls, zero-width characters); found U+{:04X}.",
                    u32::from(c)
                );
                assert_eq!(err.code(), "InvalidValue.Malformed", "{field} {c:?}");
                assert_eq!(err.to_string(), want, "{field} {c:?}");
            }
        }
    }

    #[test]
    fn line_separators_are_refused_like_controls() {
        for c in ['\u{2028}', '\u{2029}', '\u{85}', '\u{1b}'] {
            let mut r = req("example.com");
            r.organization = Some(format!("Example{c}Ltd"));
            let err = r.validate(&SubjectDefaults::default()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "Organization must not contain control characters or line breaks.",
                "{c:?}"
            );
        }
    }

    #[test]
    fn other_non_ascii_text_is_still_accepted() {
        let mut r = req("例え.テスト");
        r.city = Some("Zürich".into());
        r.organization = Some("Ünïcødé 株式会社 🔐".into());
        // A combining mark (Mn) and a non-breaking space (Zs) are visible
        // text, not format characters.
        r.organization_unit = Some("Cafe\u{301}\u{a0}Ops".into());
        let s = r.validate(&SubjectDefaults::default()).unwrap().subject;
        assert_eq!(s.city, "Zürich");
        assert_eq!(s.organization_unit, "Cafe\u{301}\u{a0}Ops");
    }

    #[test]
    fn format_characters_in_configured_defaults_are_refused() {
        let d = SubjectDefaults {
            organization: "Example\u{202e}dtL".into(),
            ..Default::default()
        };
        let err = req("example.com").validate(&d).unwrap_err();
        assert_eq!(err.code(), "InvalidValue.Malformed");
        assert!(err.to_string().starts_with("Organization "), "{err}");
        assert!(err.to_string().contains("U+202E"), "{err}");
        let d = SubjectDefaults {
            email: Some("pki@exa\u{200b}mple.org".into()),
            ..Default::default()
        };
        let err = req("example.com").validate(&d).unwrap_err();
        assert!(err.to_string().starts_with("Email "), "{err}");
    }

    #[test]
    fn country_exact_message_and_case() {
        let mut r = req("example.com");
        r.country = Some("CHN".into());
        let err = r.validate(&SubjectDefaults::default()).unwrap_err();
        assert_eq!(err.to_string(), "Country must be 2 characters.");
        r.country = Some("us".into());
        assert_eq!(
            r.validate(&SubjectDefaults::default())
                .unwrap()
                .subject
                .country,
            "US"
        );
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let v = req(&"杭".repeat(64))
            .validate(&SubjectDefaults::default())
            .unwrap();
        assert_eq!(v.subject.common_name.chars().count(), 64);
    }

    #[test]
    fn configured_defaults_apply_and_blank_means_default() {
        let d = SubjectDefaults {
            organization: "Example Ltd".into(),
            country: "DE".into(),
            email: Some("pki@example.org".into()),
            ..Default::default()
        };
        let mut r = req("example.com");
        r.organization = Some(" ".into());
        let s = r.validate(&d).unwrap().subject;
        assert_eq!(
            (s.organization.as_str(), s.country.as_str()),
            ("Example Ltd", "DE")
        );
        assert_eq!(s.email.as_deref(), Some("pki@example.org"));
    }

    #[test]
    fn json_field_names_are_the_apis() {
        let r: CsrRequest = serde_json::from_str(
            r#"{"CommonName":"a.example","SANs":"b.example","OrganizationUnit":"x","Email":"a@a.example"}"#,
        )
        .unwrap();
        assert_eq!(r.sans.as_deref(), Some("b.example"));
        assert!(serde_json::from_str::<CsrRequest>(r#"{"CommonNam":"x"}"#).is_err());
    }
}
