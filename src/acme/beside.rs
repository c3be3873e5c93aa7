//! The files `acme` keeps beside the account file (`<account>.ari.json`,
//! `<account>.names.json`): where they are, read as empty when absent,
//! unreadable or not ours, and replaced whole.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A bigger file is not ours: read as empty.
const MAX_FILE: u64 = 16 << 20;

/// `<account_file><suffix>`.
pub(super) fn path(account_file: &Path, suffix: &str) -> PathBuf {
    let mut path = account_file.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// The JSON in `path`, or the default when there is no file, it cannot be
/// read, is bigger than 16 MiB, or does not parse (each run can ask the CA
/// again).
pub(super) fn read<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE).read_to_string(&mut text))
        .ok()
        .and_then(|_| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Replaces `path` whole with `bytes`, mode 0600: written to `path.tmp`,
/// synced, then renamed over it, so a reader sees the old file or the new.
pub(super) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
