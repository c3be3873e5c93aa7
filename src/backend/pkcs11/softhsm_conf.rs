//! What to tell a SoftHSM2 user whose token cannot be found, and one who
//! runs a version that corrupts keys shared between processes.
//!
//! SoftHSM2 reads the token store's location from the file named by the
//! `SOFTHSM2_CONF` environment variable, else from its built-in default
//! (`/etc/softhsm/softhsm2.conf` on Debian, readable by root and the
//! `softhsm` group only). A private store, such as the quick start's, is
//! invisible without the variable: C_Initialize fails (default file not
//! readable) or finds no token (default store empty), and neither says why.

use std::ffi::OsStr;
use std::path::Path;

/// The environment variable SoftHSM2 reads.
pub(crate) const VAR: &str = "SOFTHSM2_CONF";

/// Whether `module` is SoftHSM2, by its file name (`libsofthsm2.so`).
pub(crate) fn is_softhsm(module: &Path) -> bool {
    module
        .file_name()
        .is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().contains("softhsm"))
}

/// For `serve` on SoftHSM2 before 2.7.0 (Debian 12 ships 2.6.1), None for
/// any other module or version, from C_GetInfo's manufacturerID and
/// libraryVersion. Its file store lets a process that reads an object
/// while another process writes it load a partial copy and write that
/// back with defaults for what it missed (SoftHSM issue #573, fixed in
/// 2.7.0 by pull requests #576 and #578): a key being made loses its
/// CKA_ID or comes back with CKA_SENSITIVE false. The warning names only
/// the version, never what the module says of itself.
pub(crate) fn shared_store_warning(manufacturer: &str, version: (u8, u8)) -> Option<String> {
    if manufacturer.trim() != "SoftHSM" || version >= (2, 7) {
        return None;
    }
    let (major, minor) = version;
    Some(format!(
        "SoftHSM {major}.{minor} can corrupt a key being made while another process reads \
         the token (SoftHSM issue #573, fixed in 2.7.0): keep other processes (replicas, \
         `hsm-csr create` or `keys`, pkcs11-tool) off this token while `serve` makes keys, \
         or upgrade SoftHSM; a key the token spoils is refused and removed, but one spoiled \
         after its delivery shows in `keys list` as a lone half"
    ))
}

/// What went wrong, as far as the hint is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// C_Initialize failed.
    Initialize,
    /// No token matched; `any_present` tells whether other tokens did show.
    NoMatch {
        /// Some initialised token is in the store.
        any_present: bool,
    },
}

/// A clause for the error message (no capital, no final period), or ""
/// when there is nothing to add.
/// `conf` is the value of `SOFTHSM2_CONF` (None when unset); it is quoted
/// with escapes, so it cannot break the message or a log line.
pub(crate) fn hint(module: &Path, conf: Option<&OsStr>, failure: Failure) -> String {
    if !is_softhsm(module) {
        return String::new();
    }
    match (conf, failure) {
        (None, Failure::Initialize) => format!(
            "{VAR} is not set, so SoftHSM2 read its default configuration \
             /etc/softhsm/softhsm2.conf, which only root and the softhsm group may read; \
             for a token store of your own, export {VAR}=/path/to/its/softhsm2.conf first"
        ),
        (None, Failure::NoMatch { .. }) => format!(
            "{VAR} is not set, so SoftHSM2 looked in its default token store; if your token \
             is in a store of your own, export {VAR}=/path/to/its/softhsm2.conf first"
        ),
        (Some(c), Failure::Initialize) => format!(
            "check {VAR}={:?}: the file and its directories.tokendir must exist and be \
             readable by this user",
            Path::new(c)
        ),
        (Some(c), Failure::NoMatch { any_present: false }) => format!(
            "{VAR}={:?} names a token store that holds no initialised token: check its \
             directories.tokendir",
            Path::new(c)
        ),
        (Some(_), Failure::NoMatch { any_present: true }) => String::new(),
    }
}

/// [`hint`] with the process's own `SOFTHSM2_CONF`.
pub(crate) fn hint_from_env(module: &Path, failure: Failure) -> String {
    hint(module, std::env::var_os(VAR).as_deref(), failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn only_for_softhsm() {
        for failure in [Failure::Initialize, Failure::NoMatch { any_present: false }] {
            let other = Path::new("/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so");
            assert_eq!(hint(other, None, failure), "");
            assert!(hint(Path::new(SOFTHSM), None, failure).contains("export SOFTHSM2_CONF="));
        }
        assert!(is_softhsm(Path::new("/opt/x/libSoftHSM2.so")));
    }

    #[test]
    fn only_softhsm_before_2_7_is_warned_of() {
        assert!(shared_store_warning("SoftHSM", (2, 6)).is_some());
        assert!(shared_store_warning("SoftHSM                         ", (2, 5)).is_some());
        assert!(shared_store_warning("SoftHSM", (1, 9)).is_some());
        assert_eq!(shared_store_warning("SoftHSM", (2, 7)), None);
        assert_eq!(shared_store_warning("SoftHSM", (3, 0)), None);
        assert_eq!(shared_store_warning("OpenSC Project", (0, 23)), None);
        assert_eq!(shared_store_warning("", (2, 6)), None);
    }

    #[test]
    fn names_the_store_in_use_when_set() {
        let conf = OsStr::new("/tmp/store/softhsm2.conf");
        let h = hint(
            Path::new(SOFTHSM),
            Some(conf),
            Failure::NoMatch { any_present: false },
        );
        assert!(
            h.contains("SOFTHSM2_CONF=\"/tmp/store/softhsm2.conf\""),
            "{h}"
        );
        let h = hint(Path::new(SOFTHSM), Some(conf), Failure::Initialize);
        assert!(h.contains("readable"), "{h}");
        // Another token is there: the label is the likelier mistake.
        let other = Failure::NoMatch { any_present: true };
        assert_eq!(hint(Path::new(SOFTHSM), Some(conf), other), "");
    }

    #[test]
    fn a_hostile_value_is_quoted_on_one_line() {
        let conf = OsStr::new("/x\nINFO forged line \u{1b}[2J");
        let h = hint(Path::new(SOFTHSM), Some(conf), Failure::Initialize);
        assert!(!h.contains('\n') && !h.contains('\u{1b}'), "{h}");
    }
}
