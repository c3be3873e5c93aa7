//! Certificate profiles (draft-ietf-acme-profiles): the directory's
//! `meta.profiles` names what the CA offers ("An object whose keys are
//! profile names and whose values are descriptions", section 3), and a
//! new order may name one (`profile`, section 4). Let's Encrypt offers
//! `classic`, `tlsserver` and `shortlived` (6-day certificates).
//!
//! `acme issue --profile NAME` is checked against the directory before any
//! key is made; the profile a name was issued with is kept beside the
//! account ([`super::state`]) so that `acme renew` asks for it again.

use crate::error::{Error, Result};

/// Which profile a new order names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Profile {
    /// None: the CA's default.
    #[default]
    Default,
    /// Asked for (`--profile`): the order is not placed, and no key is
    /// made, unless the directory offers it.
    Asked(String),
    /// Kept from the certificate being renewed: dropped with a warning if
    /// the CA offers no profiles any more (the renewal is still due), else
    /// refused like an asked one.
    Kept(String),
}

impl Profile {
    /// The profile's name, if one is named.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Profile::Default => None,
            Profile::Asked(n) | Profile::Kept(n) => Some(n),
        }
    }
}

/// Checks a profile name as `--profile` takes it: 1 to 64 characters from
/// `A-Z a-z 0-9 . _ -`. The name goes into the order, the kept-profiles
/// file, logs and messages; CAs' names (`classic`, `shortlived`,
/// `tlsserver`) fit.
///
/// # Errors
/// A message saying what is allowed.
pub(crate) fn valid_name(name: &str) -> std::result::Result<String, String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err("a profile name is 1 to 64 characters from A-Z a-z 0-9 . _ -".into())
    }
}

/// The name to send on the new order, given what the directory offers
/// (name, description).
///
/// # Errors
/// `Config.Invalid` when the profile is not offered, listing what is.
pub(crate) fn choose(offered: &[(String, String)], profile: &Profile) -> Result<Option<String>> {
    let Some(name) = profile.name() else {
        return Ok(None);
    };
    if offered.iter().any(|(n, _)| n == name) {
        return Ok(Some(name.to_owned()));
    }
    if offered.is_empty() {
        if let Profile::Kept(_) = profile {
            log::warn!(
                "the certificate was issued with profile {name}, but the CA's directory offers no profiles now; ordered without one"
            );
            return Ok(None);
        }
        return Err(Error::Config(format!(
            "--profile {name}: the CA's directory offers no profiles (no meta.profiles); order without --profile."
        )));
    }
    let list: Vec<String> = offered
        .iter()
        .map(|(n, d)| {
            let d = super::one_line(d);
            let d: String = d.chars().take(80).collect();
            if d.is_empty() {
                super::one_line(n)
            } else {
                format!("{} ({d})", super::one_line(n))
            }
        })
        .collect();
    Err(Error::Config(format!(
        "profile {name} is not one the CA offers; it offers: {}.",
        list.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered() -> Vec<(String, String)> {
        vec![
            ("classic".into(), "90 days".into()),
            ("shortlived".into(), "6 days\nnew line".into()),
        ]
    }

    #[test]
    fn an_offered_profile_is_sent() {
        let p = Profile::Asked("shortlived".into());
        assert_eq!(
            choose(&offered(), &p).unwrap().as_deref(),
            Some("shortlived")
        );
        assert_eq!(choose(&offered(), &Profile::Default).unwrap(), None);
        assert_eq!(choose(&[], &Profile::Default).unwrap(), None);
    }

    #[test]
    fn an_unknown_profile_is_refused_with_what_is_offered() {
        let e = choose(&offered(), &Profile::Asked("tlsserver".into())).unwrap_err();
        assert_eq!(e.code(), "Config.Invalid");
        let text = e.to_string();
        assert!(text.contains("tlsserver"), "{text}");
        assert!(text.contains("classic (90 days)"), "{text}");
        // A description cannot start a line of its own in a log.
        assert!(text.contains(r"shortlived (6 days\nnew line)"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        // A kept profile the CA no longer offers, among others: refused too.
        let e = choose(&offered(), &Profile::Kept("tlsserver".into())).unwrap_err();
        assert_eq!(e.code(), "Config.Invalid");
    }

    #[test]
    fn a_ca_without_profiles_refuses_an_asked_one_and_drops_a_kept_one() {
        let e = choose(&[], &Profile::Asked("shortlived".into())).unwrap_err();
        assert!(e.to_string().contains("offers no profiles"), "{e}");
        assert_eq!(
            choose(&[], &Profile::Kept("shortlived".into())).unwrap(),
            None
        );
    }

    #[test]
    fn profile_names_are_bounded() {
        for good in ["classic", "shortlived", "tls-server_2.0", &"a".repeat(64)] {
            assert_eq!(valid_name(good).as_deref(), Ok(good));
        }
        for bad in ["", &"a".repeat(65), "a b", "a\n", "é", "a/b", "a\"b"] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }
}
