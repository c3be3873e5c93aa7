//! What `acme` runs remember of each name between runs, by token and key
//! label ([`key`]), in
//! `<account file>.names.json` (mode 0600, replaced whole): the profile it
//! was issued with, for renew to ask for again ([`super::profile`]), and
//! the last renewal's failure, for `acme status`. Only labels still on
//! the token are written back, so the file stays as small as the token's
//! list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The key a name's state is kept under: its token's label and serial,
/// and its key label (the same name may be on two tokens, and two tokens
/// may share a label).
pub(crate) fn key(token: &str, serial: &str, label: &str) -> String {
    format!("{token}\t{serial}\t{label}")
}

/// The longest message kept of a failure, in characters.
const MAX_MESSAGE: usize = 500;

/// A renewal's failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LastError {
    /// When, seconds since the epoch.
    pub at: u64,
    /// The error code (`Acme.Refused`, ...).
    pub code: String,
    /// The message, on one line, at most 500 characters.
    pub message: String,
}

/// What is remembered of one name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct NameState {
    /// The profile it was last issued with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The last renewal's failure, until a renewal succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// The names' states, by key label.
#[derive(Debug, Default)]
pub(crate) struct Names {
    path: PathBuf,
    by_label: BTreeMap<String, NameState>,
}

impl Names {
    /// The states kept beside `account_file`; none when there is no file
    /// or it cannot be read. A profile that is not a valid profile name is
    /// not read back.
    pub(crate) fn load(account_file: &Path) -> Self {
        let path = super::beside::path(account_file, ".names.json");
        let mut by_label: BTreeMap<String, NameState> = super::beside::read(&path);
        for state in by_label.values_mut() {
            if state
                .profile
                .as_deref()
                .is_some_and(|p| super::profile::valid_name(p).is_err())
            {
                state.profile = None;
            }
        }
        Names { path, by_label }
    }

    /// What is remembered of `label`.
    pub(crate) fn get(&self, label: &str) -> Option<&NameState> {
        self.by_label.get(label)
    }

    /// The profile `label` was last issued with.
    pub(crate) fn profile(&self, label: &str) -> Option<&str> {
        self.get(label).and_then(|s| s.profile.as_deref())
    }

    /// Every label remembered.
    pub(crate) fn labels(&self) -> Vec<String> {
        self.by_label.keys().cloned().collect()
    }

    /// `label` was issued (or renewed) with `profile` (none: the CA's
    /// default); its last failure is forgotten.
    pub(crate) fn issued(&mut self, label: &str, profile: Option<&str>) {
        let state = self.by_label.entry(label.to_owned()).or_default();
        state.profile = profile.map(str::to_owned);
        state.last_error = None;
    }

    /// `label`'s renewal failed at `at` with `code` and `message`.
    pub(crate) fn failed(&mut self, label: &str, at: u64, code: &str, message: &str) {
        let message: String = super::one_line(message).chars().take(MAX_MESSAGE).collect();
        self.by_label
            .entry(label.to_owned())
            .or_default()
            .last_error = Some(LastError {
            at,
            code: code.to_owned(),
            message,
        });
    }

    /// Writes the states of `labels` back (mode 0600, replaced whole); a
    /// failure is a warning naming what the next runs lose.
    pub(crate) fn save(&self, labels: &[&str]) {
        let kept: BTreeMap<&String, &NameState> = self
            .by_label
            .iter()
            .filter(|(l, s)| labels.contains(&l.as_str()) && **s != NameState::default())
            .collect();
        let written = serde_json::to_string(&kept)
            .map_err(std::io::Error::from)
            .and_then(|text| super::beside::replace(&self.path, text.as_bytes()));
        if let Err(e) = written {
            log::warn!(
                "could not keep the names' profiles and last errors in {}: {e}; the next renewal orders without a profile",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_drop_what_left_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let account = dir.path().join("account.json");
        let mut names = Names::load(&account);
        assert_eq!(names.profile("hsm-csr:a"), None);
        names.issued("hsm-csr:a", Some("shortlived"));
        names.issued("hsm-csr:b", Some("classic"));
        names.failed(
            "hsm-csr:a",
            7,
            "Acme.Refused",
            &format!("line\nforged {}", "x".repeat(600)),
        );
        names.save(&["hsm-csr:a"]);
        let again = Names::load(&account);
        assert_eq!(again.profile("hsm-csr:a"), Some("shortlived"));
        assert_eq!(again.get("hsm-csr:b"), None);
        let error = again.get("hsm-csr:a").unwrap().last_error.clone().unwrap();
        assert_eq!((error.at, error.code.as_str()), (7, "Acme.Refused"));
        assert!(!error.message.contains('\n'), "{}", error.message);
        assert_eq!(error.message.chars().count(), MAX_MESSAGE);
        let path = dir.path().join("account.json.names.json");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A renewal forgets the failure.
        let mut names = again;
        names.issued("hsm-csr:a", None);
        assert_eq!(names.get("hsm-csr:a"), Some(&NameState::default()));
        // A profile that is not a profile name is not read back.
        std::fs::write(
            &path,
            r#"{"hsm-csr:a":{"Profile":"x y"},"hsm-csr:c":{"Profile":"classic"}}"#,
        )
        .unwrap();
        let read = Names::load(&account);
        assert_eq!(read.profile("hsm-csr:a"), None);
        assert_eq!(read.profile("hsm-csr:c"), Some("classic"));
    }
}
