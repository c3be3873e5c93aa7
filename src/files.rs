//! Reading the files the configuration and the flags name (PIN files,
//! secrets, the config itself, `batch --input`, `attach-cert --cert`):
//! regular files only, read up to a bound.
//!
//! A FIFO, a character device or a socket where a file is meant would make
//! a plain read wait forever (a FIFO with no writer) or read until memory
//! runs out (`/dev/zero`). So the file is opened without blocking
//! (O_NONBLOCK: opening a FIFO with no writer returns at once) and without
//! becoming the controlling terminal, checked with fstat to be a regular
//! file (what was opened, not what the path named a moment before), and
//! read up to `max` bytes: more is an error, never a truncation.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Most bytes of a PIN or secret file.
pub(crate) const MAX_SECRET_BYTES: u64 = 4096;
/// Most bytes of a configuration file.
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The content of the regular file `path`, at most `max` bytes; `what`
/// names it in errors (`PIN file`, `--input`, ...).
///
/// # Errors
/// `Config.Invalid` naming `what` and the path when it cannot be opened,
/// is not a regular file, or holds more than `max` bytes.
pub(crate) fn read_regular(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::Config(format!("cannot read {what} {shown}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::Config(format!("cannot read {what} {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::Config(format!(
            "{what} {shown} is not a regular file ({}); name a file.",
            kind(&meta)
        )));
    }
    if meta.len() > max {
        return Err(too_big(what, &shown, max));
    }
    read_bounded(file, max).map_err(|e| match e {
        Bounded::TooBig => too_big(what, &shown, max),
        Bounded::Io(e) => Error::Config(format!("cannot read {what} {shown}: {e}")),
    })
}

/// Why [`read_bounded`] stopped.
pub(crate) enum Bounded {
    /// More than the bound.
    TooBig,
    /// A read failed.
    Io(std::io::Error),
}

/// Everything `reader` gives, when that is at most `max` bytes.
///
/// # Errors
/// [`Bounded::TooBig`] past `max`; [`Bounded::Io`] when a read fails.
pub(crate) fn read_bounded(reader: impl Read, max: u64) -> std::result::Result<Vec<u8>, Bounded> {
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Bounded::Io)?;
    if bytes.len() as u64 > max {
        return Err(Bounded::TooBig);
    }
    Ok(bytes)
}

fn too_big(what: &str, shown: &std::path::Display<'_>, max: u64) -> Error {
    Error::Config(format!("{what} {shown} is larger than {max} bytes."))
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Makes a FIFO at `path`, for the unit tests of what refuses one.
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    assert!(
        std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular(&file, 5, "f").unwrap(), b"12345");
        let e = read_regular(&file, 4, "PIN file").unwrap_err();
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let e = read_regular(&fifo, 5, "PIN file").unwrap_err();
        assert!(
            e.to_string().contains("is not a regular file (a FIFO)"),
            "{e}"
        );
        for (path, kind) in [("/dev/zero", "a character device"), ("/tmp", "a directory")] {
            let e = read_regular(Path::new(path), 5, "--config").unwrap_err();
            assert!(e.to_string().contains(kind), "{e}");
        }
        // A symlink to a regular file is that file.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_regular(&link, 5, "f").unwrap(), b"12345");
        // A stream that grows past the bound is cut off and refused.
        assert!(matches!(
            read_bounded(std::io::repeat(0), 10),
            Err(Bounded::TooBig)
        ));
    }
}
