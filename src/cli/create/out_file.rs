//! `create --out FILE`: the CSR goes to what the user named, and a failed
//! run never loses the file that was there.
//!
//! - A regular file, or a symbolic link to one, is replaced atomically: the
//!   PEM goes to a temporary file in the real file's directory (tempfile's
//!   `NamedTempFile`, which removes it if the run stops first), is fsync'ed
//!   and renamed over it by `persist` (POSIX rename(2): "If the link named by the new
//!   argument exists, it shall be removed and old renamed to new ... a link
//!   named new shall remain visible to other threads throughout the renaming
//!   operation"). A symlink stays; its target is replaced. The old file is
//!   kept beside it until stdout has the response too, so that it can be put
//!   back if stdout fails.
//! - A character device or FIFO is written in place. It is opened with
//!   O_NONBLOCK, so a FIFO with no reader is an error instead of a hang
//!   (POSIX open(2): "If O_NONBLOCK is set ... An open() for writing-only
//!   shall return an error if no process currently has the file open for
//!   reading", ENXIO).
//! - /dev/stdout, /dev/stderr, /dev/fd/N or /proc/PID/fd/N leading to a
//!   regular file (`--out /dev/stderr 2>>ops.log`) is refused: replacing
//!   that file would wipe what the shell appends to.
//! - Anything else (directory, socket, block device, dangling symlink) is
//!   refused, before the token is opened.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};
use tempfile::NamedTempFile;

/// How long a FIFO's or device's reader may take no data before the write
/// is given up.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Symlinks followed at most, as Linux's MAXSYMLINKS.
const MAX_LINKS: usize = 40;

/// Where `--out` goes, checked and opened before any key is made.
pub(crate) struct OutFile {
    /// The flag that named it (`--out`, `--chain-out`), for messages.
    flag: &'static str,
    /// What the user named, for messages.
    shown: PathBuf,
    dest: Dest,
}

enum Dest {
    /// A regular file, replaced by renaming `tmp` over `real`.
    Replace {
        real: PathBuf,
        /// The new file until it is renamed over `real`.
        tmp: Option<NamedTempFile>,
        /// The previous `real`, kept under another name once `tmp` has taken
        /// its place.
        backup: Option<PathBuf>,
        /// Whether `tmp` now is `real`.
        placed: bool,
    },
    /// A FIFO or character device, written as it is.
    InPlace { file: File, kind: &'static str },
}

impl OutFile {
    /// Checks `--out shown` and opens what will be written.
    pub(crate) fn open(shown: &Path) -> Result<OutFile> {
        Self::open_as("--out", shown)
    }

    /// As [`Self::open`], for the file another flag names.
    pub(crate) fn open_as(flag: &'static str, shown: &Path) -> Result<OutFile> {
        let mut out = Self::open_checked(flag, shown)?;
        out.flag = flag;
        Ok(out)
    }

    fn open_checked(flag: &'static str, shown: &Path) -> Result<OutFile> {
        let config = |what: String| Error::Config(format!("{flag} {} {what}", shown.display()));
        let cannot =
            |e: io::Error| Error::Config(format!("cannot write {flag} {}: {e}", shown.display()));
        if shown.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return Err(config("names a directory; name a file".into()));
        }
        let (real, meta) = resolve(shown).map_err(|e| match e {
            Resolve::Io(e) => cannot(e),
            Resolve::Refused(what) => config(what),
        })?;
        let Some(meta) = meta else {
            return new_file(shown, real, None).map_err(cannot);
        };
        let file_type = meta.file_type();
        if file_type.is_file() {
            return new_file(shown, real, Some(&meta)).map_err(cannot);
        }
        let kind = if file_type.is_fifo() {
            "FIFO"
        } else if file_type.is_char_device() {
            "character device"
        } else if file_type.is_dir() {
            return Err(config("is a directory; name a file".into()));
        } else if file_type.is_socket() {
            return Err(config(
                "is a socket; name a file, a FIFO or a character device".into(),
            ));
        } else if file_type.is_block_device() {
            return Err(config(
                "is a block device; a CSR is not written over a disk".into(),
            ));
        } else {
            return Err(config("is not a file".into()));
        };
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&real)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENXIO) if kind == "FIFO" => {
                    config("is a FIFO with no reader; start the reader first".into())
                }
                _ => cannot(e),
            })?;
        // The path may have been swapped since it was looked at.
        let opened = file.metadata().map_err(cannot)?.file_type();
        if !(opened.is_fifo() || opened.is_char_device()) {
            return Err(config("changed while it was opened".into()));
        }
        Ok(OutFile {
            flag,
            shown: shown.to_owned(),
            dest: Dest::InPlace { file, kind },
        })
    }

    /// Delivers `data`: a regular file is in place when this returns.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let shown = format!("{} {}", self.flag, self.shown.display());
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{shown}: {e}"));
        match &mut self.dest {
            Dest::InPlace { file, .. } => write_stream(file, data).map_err(context),
            Dest::Replace {
                real,
                tmp,
                backup,
                placed,
            } => {
                let Some(file) = tmp.as_mut() else {
                    return Err(context(io::Error::other("written once already")));
                };
                file.write_all(data).map_err(context)?;
                file.as_file().sync_all().map_err(context)?;
                *backup = keep_old(real).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{shown}: cannot keep the existing file until the run has succeeded: {e}"),
                    )
                })?;
                // On failure, dropping the returned file removes it.
                if let Some(Err(e)) = tmp.take().map(|file| file.persist(&*real)) {
                    if let Some(b) = backup.take() {
                        let _ = fs::remove_file(b);
                    }
                    return Err(context(e.error));
                }
                *placed = true;
                // Makes the rename itself durable; the file is in place
                // either way, so a failure here changes nothing for the run.
                if let Ok(dir) = File::open(dir_of(real)) {
                    let _ = dir.sync_all();
                }
                Ok(())
            }
        }
    }

    /// Streams `data` to the output (`batch --output`): a regular file's
    /// new content goes to its temporary file and replaces it only at
    /// [`Self::commit`]; a FIFO or device gets it at once.
    pub(crate) fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let shown = format!("{} {}", self.flag, self.shown.display());
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{shown}: {e}"));
        match &mut self.dest {
            Dest::InPlace { file, .. } => write_stream(file, data).map_err(context),
            Dest::Replace { tmp, .. } => match tmp.as_mut() {
                Some(file) => file.write_all(data).map_err(context),
                None => Err(context(io::Error::other("already in place"))),
            },
        }
    }

    /// After the last [`Self::append`]: puts a regular file in place
    /// (fsync'ed, renamed over the old one, which is dropped).
    pub(crate) fn commit(&mut self) -> io::Result<()> {
        if let Dest::Replace { tmp, .. } = &self.dest {
            if tmp.is_some() {
                self.write(&[])?;
            }
        }
        self.finish();
        Ok(())
    }

    /// After stdout failed: puts back what `--out` named before. Returns
    /// what the user should know about the file.
    pub(crate) fn take_back(&mut self) -> Option<String> {
        let shown = format!("{} {}", self.flag, self.shown.display());
        match &mut self.dest {
            Dest::InPlace { kind, .. } => Some(format!(
                "the output already went to {shown} (a {kind}); it names the removed key"
            )),
            Dest::Replace {
                real,
                backup,
                placed,
                ..
            } => {
                if !*placed {
                    return None;
                }
                match backup.take() {
                    Some(b) => fs::rename(&b, &*real).err().map(|e| {
                        format!(
                            "could not put back the previous {shown} ({e}); it is kept at {}",
                            b.display()
                        )
                    }),
                    None => fs::remove_file(&*real).err().map(|e| {
                        format!("could not remove {shown} ({e}); it names the removed key")
                    }),
                }
            }
        }
    }

    /// After stdout has the response: drops the previous file.
    pub(crate) fn finish(&mut self) {
        if let Dest::Replace { backup, .. } = &mut self.dest {
            if let Some(b) = backup.take() {
                let _ = fs::remove_file(b);
            }
        }
    }
}

enum Resolve {
    Io(io::Error),
    Refused(String),
}

/// Follows `path`'s symlinks to what they name: (that path, its metadata,
/// or None when nothing is there and `path` is not a link).
///
/// Links are read here rather than by the kernel, so the kernel's
/// fs.protected_symlinks does not apply; its rule is applied instead: in a
/// world-writable sticky directory (such as /tmp), a link is followed only
/// if it belongs to us or to the directory's owner, so that nobody can plant
/// a link there that makes root write over a file of their choosing.
fn resolve(path: &Path) -> std::result::Result<(PathBuf, Option<fs::Metadata>), Resolve> {
    let euid = rustix::process::geteuid().as_raw();
    let mut at = path.to_owned();
    for _ in 0..=MAX_LINKS {
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound && at == path => return Ok((at, None)),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // /dev/stderr and /proc/self/fd/N name pipes and terminals
                // by links only the kernel can follow.
                if let Ok(meta) = fs::metadata(path) {
                    let t = meta.file_type();
                    if t.is_fifo() || t.is_char_device() {
                        return Ok((path.to_owned(), Some(meta)));
                    }
                }
                return Err(Resolve::Refused(format!(
                    "is a dangling symbolic link (to {:?}); create the file first or name another path",
                    at
                )));
            }
            Err(e) => return Err(Resolve::Io(e)),
        };
        if !meta.file_type().is_symlink() {
            return Ok((at, Some(meta)));
        }
        refuse_open_regular_file(&at)?;
        let dir = fs::metadata(dir_of(&at)).map_err(Resolve::Io)?;
        let shared = dir.mode() & 0o1002 == 0o1002;
        if shared && meta.uid() != euid && meta.uid() != dir.uid() {
            return Err(Resolve::Refused(format!(
                "is a symbolic link in a world-writable sticky directory that belongs to someone else ({:?}); not followed",
                at
            )));
        }
        let target = fs::read_link(&at).map_err(Resolve::Io)?;
        at = dir_of(&at).join(target);
    }
    Err(Resolve::Refused(format!(
        "goes through more than {MAX_LINKS} symbolic links"
    )))
}

/// Refuses `link` when it is a procfs link to a regular file that a process
/// has open: /dev/stdout, /dev/stderr and /dev/fd/N lead to
/// /proc/self/fd/N, and proc(5) says of /proc/PID/fd: "one entry for each
/// file which the process has open, named by its file descriptor, and
/// which is a symbolic link to the actual file". Replacing that file would
/// wipe what the shell appends to (`2>>ops.log`). Such a link to a pipe,
/// terminal or other device is followed as any other.
fn refuse_open_regular_file(link: &Path) -> std::result::Result<(), Resolve> {
    let in_proc = fs::canonicalize(dir_of(link)).is_ok_and(|dir| dir.starts_with("/proc"));
    if !in_proc {
        return Ok(());
    }
    // The kernel follows the link to the open file itself, even one
    // renamed or deleted since it was opened.
    match fs::metadata(link) {
        Ok(meta) if meta.file_type().is_file() => Err(Resolve::Refused(
            "is a regular file opened by the shell; writing it would replace its contents: \
             name the file instead, or use --format pem > FILE"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Opens a temporary file beside `real` that will replace it: with the old
/// file's owner and mode, or 0644 less the umask for a new one.
fn new_file(shown: &Path, real: PathBuf, old: Option<&fs::Metadata>) -> io::Result<OutFile> {
    let Some(name) = real.file_name() else {
        return Err(io::Error::new(ErrorKind::InvalidInput, "not a file path"));
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    // O_CREAT | O_EXCL with this mode, less the umask.
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .rand_bytes(16)
        .permissions(Permissions::from_mode(if old.is_some() {
            0o600
        } else {
            0o644
        }))
        .tempfile_in(dir_of(&real))?;
    if let Some(old) = old {
        // Only root can give a file away; anyone else's new file stays theirs.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid()));
        tmp.as_file()
            .set_permissions(Permissions::from_mode(old.mode() & 0o777))?;
    }
    Ok(OutFile {
        flag: "--out",
        shown: shown.to_owned(),
        dest: Dest::Replace {
            real,
            tmp: Some(tmp),
            backup: None,
            placed: false,
        },
    })
}

/// Keeps the file at `real`, if any, under another name in its directory:
/// a hard link, or a copy where links cannot be made.
fn keep_old(real: &Path) -> io::Result<Option<PathBuf>> {
    let Some(name) = real.file_name() else {
        return Ok(None);
    };
    let mut backup_name = std::ffi::OsString::from(".");
    backup_name.push(name);
    backup_name.push(format!(".{}.old", uuid::Uuid::new_v4().simple()));
    let backup = real.with_file_name(backup_name);
    match fs::hard_link(real, &backup) {
        Ok(()) => return Ok(Some(backup)),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(_) => {}
    }
    let copied = (|| {
        let mut from = File::open(real)?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&backup)?;
        io::copy(&mut from, &mut to)?;
        let meta = from.metadata()?;
        let _ = std::os::unix::fs::fchown(&to, Some(meta.uid()), Some(meta.gid()));
        to.set_permissions(meta.permissions())?;
        to.sync_all()
    })();
    match copied {
        Ok(()) => Ok(Some(backup)),
        Err(e) => {
            let _ = fs::remove_file(&backup);
            match e.kind() {
                ErrorKind::NotFound if !real.exists() => Ok(None),
                _ => Err(e),
            }
        }
    }
}

/// Writes all of `data` to a non-blocking FIFO or device, waiting while its
/// reader is busy but not for a reader that takes nothing for
/// [`STALL_LIMIT`].
fn write_stream(file: &File, mut data: &[u8]) -> io::Result<()> {
    let mut deadline = Instant::now() + STALL_LIMIT;
    let mut file = file;
    while !data.is_empty() {
        match file.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                // `write` wrote at most what it was given.
                data = data.get(n..).unwrap_or_default();
                deadline = Instant::now() + STALL_LIMIT;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        format!("its reader took nothing for {} s", STALL_LIMIT.as_secs()),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The directory `path` is in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
