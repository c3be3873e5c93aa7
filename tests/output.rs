//! `create --out` and `batch --output` write to what the user named, and nothing else.

use std::fs;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Run, Token, mkfifo, skip, verified_text};

/// A fresh directory for `--out` files, so the token's own files are not in the way.
fn out_dir(token: &Token, name: &str) -> PathBuf {
    let dir = token.dir().join(name);
    fs::create_dir(&dir).unwrap();
    dir
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn create_pem_to(token: &Token, out: &Path) -> Run {
    token.create(&[
        "--common-name",
        "out.example",
        "--format",
        "pem",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[track_caller]
fn assert_refused(token: &Token, run: &Run, out: &Path, what: &str) {
    assert_eq!(run.code, 3, "--out {}: {}", out.display(), run.stderr);
    let expected = format!("Config.Invalid: --out {} {what}", out.display());
    assert!(run.stderr.starts_with(&expected), "{}", run.stderr);
    assert!(token.keys().is_empty(), "a refused --out left a key");
}

#[test]
fn out_to_a_character_device_writes_through_it() {
    let token = Token::new();
    let dir = out_dir(&token, "dev");
    // A node of its own rather than /dev/null: a regression must not be
    // able to replace the machine's /dev/null.
    let null = dir.join("null");
    let made = Command::new("mknod")
        .args([null.to_str().unwrap(), "c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    if !made.success() {
        skip(&token, "mknod needs root");
        return;
    }
    let run = create_pem_to(&token, &null).ok();
    verified_text(&run.stdout);
    assert!(
        fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device(),
        "the device node was replaced"
    );
    assert_eq!(names(&dir), ["null"]);
    assert_eq!(token.keys().len(), 2);
}

#[test]
fn out_through_a_symlink_replaces_its_target_and_keeps_the_link() {
    let token = Token::new();
    let real_dir = out_dir(&token, "real");
    let link_dir = out_dir(&token, "links");
    let real = real_dir.join("real.pem");
    fs::write(&real, "old\n").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
    let link = link_dir.join("link.pem");
    std::os::unix::fs::symlink("../real/real.pem", &link).unwrap();

    let run = create_pem_to(&token, &link).ok();
    verified_text(&run.stdout);
    let meta = fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("../real/real.pem"));
    assert_eq!(fs::read_to_string(&real).unwrap(), run.stdout);
    assert_eq!(
        fs::metadata(&real).unwrap().permissions().mode() & 0o7777,
        0o640,
        "the replaced file keeps its mode"
    );
    assert_eq!(names(&real_dir), ["real.pem"], "files left beside it");
    assert_eq!(names(&link_dir), ["link.pem"], "files left beside the link");
}

/// Makes a FIFO in `dir` and a `cat` reading it; returns them once `cat`
/// has it open, with a write end held open so that `cat` sees the end of
/// the data only once that is dropped too.
fn fifo_with_reader(dir: &Path) -> (PathBuf, std::process::Child, fs::File) {
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let reader = Command::new("cat")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Opening a FIFO's write end without blocking succeeds once it has a reader.
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(holder) => return (fifo, reader, holder),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cat never opened the FIFO: {e}"),
        }
    }
}

#[test]
fn out_to_a_fifo_with_a_reader_gets_the_csr() {
    let token = Token::new();
    let dir = out_dir(&token, "fifo");
    let (fifo, mut reader, holder) = fifo_with_reader(&dir);
    let run = create_pem_to(&token, &fifo);
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if reader.try_wait().unwrap().is_none() {
        // The FIFO was never written or closed: stop `cat` (our own child).
        reader.kill().unwrap();
    }
    let read = reader.wait_with_output().unwrap();
    let run = run.ok();
    assert_eq!(String::from_utf8(read.stdout).unwrap(), run.stdout);
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced"
    );
}

#[test]
fn out_to_a_link_only_the_kernel_can_follow_writes_through_it() {
    // As `--out /dev/stderr` is: /proc/self/fd/2 links to `pipe:[N]`,
    // which is no path. A link of the test's own stands in for
    // /dev/stderr, so that a regression cannot replace the machine's.
    let token = Token::new();
    let dir = out_dir(&token, "magic");
    let link = dir.join("stderr");
    std::os::unix::fs::symlink("/proc/self/fd/2", &link).unwrap();
    let run = token
        .create(&[
            "--common-name",
            "err.example",
            "--out",
            link.to_str().unwrap(),
        ])
        .ok();
    let csr = run.json()["Csr"].as_str().unwrap().to_owned();
    assert!(run.stderr.contains(&csr), "stderr: {}", run.stderr);
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
}

/// `create --common-name err.example --format pem --out OUT`, with stdout
/// and stderr as given.
fn create_to_streams(token: &Token, out: &Path, stdout: Stdio, stderr: Stdio) -> i32 {
    let mut cmd = token.hsm_csr();
    cmd.arg("create")
        .args(token.token_flags())
        .args(["--label-prefix", &token.prefix])
        .args(["--common-name", "err.example", "--format", "pem", "--out"])
        .arg(out)
        .stdout(stdout)
        .stderr(stderr);
    cmd.status().unwrap().code().unwrap_or(-1)
}

fn append_to(file: &Path) -> Stdio {
    fs::OpenOptions::new()
        .append(true)
        .open(file)
        .unwrap()
        .into()
}

#[test]
fn out_to_a_std_stream_the_shell_appends_to_a_file_is_refused_before_keygen() {
    // `hsm-csr create --out /dev/stderr 2>>ops.log`: /proc/self/fd/2 links
    // to ops.log itself, and replacing that would wipe the log.
    let token = Token::new();
    let dir = out_dir(&token, "appended");
    let log = dir.join("ops.log");
    // A link of the test's own stands in for /dev/stderr, so that a
    // regression cannot replace the machine's.
    let stderr_link = dir.join("stderr");
    std::os::unix::fs::symlink("/dev/stderr", &stderr_link).unwrap();
    for out in [
        stderr_link.as_path(),
        Path::new("/dev/fd/2"),
        Path::new("/proc/self/fd/2"),
    ] {
        fs::write(&log, "line1\n").unwrap();
        let code = create_to_streams(&token, out, Stdio::piped(), append_to(&log));
        let logged = fs::read_to_string(&log).unwrap();
        assert_eq!(code, 3, "--out {}: {logged}", out.display());
        let expected = format!(
            "line1\nConfig.Invalid: --out {} is a regular file opened by the shell",
            out.display()
        );
        assert!(logged.starts_with(&expected), "{logged}");
        assert!(logged.contains("--format pem > FILE"), "{logged}");
        assert!(token.keys().is_empty(), "a refused --out left a key");
    }
    assert_eq!(names(&dir), ["ops.log", "stderr"]);

    // `hsm-csr create --out /dev/stdout >> all.pem`.
    let all = dir.join("all.pem");
    fs::write(&all, "earlier\n").unwrap();
    let stdout_link = dir.join("stdout");
    std::os::unix::fs::symlink("/dev/stdout", &stdout_link).unwrap();
    fs::write(&log, "").unwrap();
    let code = create_to_streams(&token, &stdout_link, append_to(&all), append_to(&log));
    let logged = fs::read_to_string(&log).unwrap();
    assert_eq!(code, 3, "{logged}");
    assert!(
        logged.contains("is a regular file opened by the shell"),
        "{logged}"
    );
    assert_eq!(fs::read_to_string(&all).unwrap(), "earlier\n");
    assert!(token.keys().is_empty(), "a refused --out left a key");
}

#[test]
fn out_to_std_streams_that_are_pipes_writes_through_them() {
    let token = Token::new();
    for out in ["/dev/fd/2", "/proc/self/fd/2"] {
        let run = token
            .create(&["--common-name", "err.example", "--out", out])
            .ok();
        let csr = run.json()["Csr"].as_str().unwrap().to_owned();
        assert!(run.stderr.contains(&csr), "--out {out}: {}", run.stderr);
    }
    assert_eq!(token.keys().len(), 4);
}

#[test]
fn out_to_a_fifo_without_a_reader_fails_before_keygen() {
    let token = Token::new();
    let dir = out_dir(&token, "fifo");
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let run = create_pem_to(&token, &fifo);
    assert_refused(&token, &run, &fifo, "is a FIFO with no reader");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(names(&dir), ["fifo"]);
}

#[test]
fn failed_stdout_puts_the_previous_out_file_back() {
    let token = Token::new();
    let dir = out_dir(&token, "out");
    let existing = dir.join("existing.pem");
    fs::write(&existing, "old content\n").unwrap();
    let fresh = dir.join("fresh.pem");
    for out in [&existing, &fresh] {
        let run = Run::of(
            token
                .hsm_csr()
                .arg("create")
                .args(token.token_flags())
                .args(["--label-prefix", &token.prefix])
                .args(["--common-name", "full.example", "--format", "pem"])
                .arg("--out")
                .arg(out)
                .stdout(fs::File::create("/dev/full").unwrap()),
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("removed from the token"),
            "{}",
            run.stderr
        );
        assert!(token.keys().is_empty(), "the key pair was kept");
    }
    assert_eq!(fs::read_to_string(&existing).unwrap(), "old content\n");
    assert_eq!(
        names(&dir),
        ["existing.pem"],
        "a file for a removed key, or a backup, was left"
    );
}

#[test]
fn out_that_is_not_a_file_is_refused_before_keygen() {
    let token = Token::new();
    let dir = out_dir(&token, "odd");
    let subdir = dir.join("subdir");
    fs::create_dir(&subdir).unwrap();
    let run = create_pem_to(&token, &subdir);
    assert_refused(&token, &run, &subdir, "is a directory");

    let dangling = dir.join("dangling.pem");
    std::os::unix::fs::symlink("missing/nothing.pem", &dangling).unwrap();
    let run = create_pem_to(&token, &dangling);
    assert_refused(&token, &run, &dangling, "is a dangling symbolic link");
    assert!(fs::symlink_metadata(&dangling).unwrap().is_symlink());

    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let run = create_pem_to(&token, &socket);
    assert_refused(&token, &run, &socket, "is a socket");
    assert!(
        fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert_eq!(names(&dir), ["dangling.pem", "socket", "subdir"]);
}

#[test]
fn out_does_not_follow_a_stranger_s_symlink_in_a_sticky_directory() {
    // What fs.protected_symlinks does for open(2): in a world-writable
    // sticky directory such as /tmp, a link is followed only if it belongs
    // to the follower or to the directory's owner.
    let token = Token::new();
    let victim = out_dir(&token, "private").join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let shared = out_dir(&token, "shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let trap = shared.join("req.pem");
    std::os::unix::fs::symlink(&victim, &trap).unwrap();
    if std::os::unix::fs::lchown(&trap, Some(65534), Some(65534)).is_err() {
        skip(&token, "giving the link another owner needs root");
        return;
    }
    let run = create_pem_to(&token, &trap);
    assert_refused(
        &token,
        &run,
        &trap,
        "is a symbolic link in a world-writable",
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn batch_output_follows_the_out_rules_and_replaces_a_file_only_when_the_run_ends() {
    let token = Token::new();
    let input = token.dir().join("in.jsonl");
    fs::write(&input, "{\"CommonName\":\"batch-out.example\"}\n").unwrap();
    let batch_to = |out: &Path, token_arg: &str| {
        let mut cmd = token.hsm_csr();
        cmd.args(["batch", "--module", &token.module, "--token", token_arg])
            .args(["--label-prefix", &token.prefix])
            .args([
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ]);
        Run::of(&mut cmd)
    };
    // A run that fails (no such token) leaves the existing file as it was.
    let dir = out_dir(&token, "out");
    let existing = dir.join("answers.jsonl");
    fs::write(&existing, "earlier answers\n").unwrap();
    let run = batch_to(&existing, "no-such-token");
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(fs::read_to_string(&existing).unwrap(), "earlier answers\n");
    assert_eq!(names(&dir), ["answers.jsonl"], "no temporary file left");
    // While a run makes its keys (RSA-4096: seconds each), the file still
    // holds what it held; a run that succeeds replaces it whole.
    let slow = !token.lacks("rsa-4096");
    let config = token.dir().join("rsa.toml");
    fs::write(&config, if slow { "[key]\nbits = 4096\n" } else { "" }).unwrap();
    let mut cmd = token.hsm_csr();
    cmd.args([
        "batch",
        "--module",
        &token.module,
        "--token",
        &token.token_arg,
    ])
    .args([
        "--label-prefix",
        &token.prefix,
        "--config",
        config.to_str().unwrap(),
    ])
    .args([
        "--input",
        input.to_str().unwrap(),
        "--output",
        existing.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    if slow {
        assert_eq!(
            fs::read_to_string(&existing).unwrap(),
            "earlier answers\n",
            "emptied while the run was still making its keys"
        );
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&existing).unwrap();
    assert!(
        text.contains("batch-out.example") && !text.contains("earlier"),
        "{text}"
    );
    assert_eq!(names(&dir), ["answers.jsonl"]);
    // A stranger's symlink in a sticky directory is refused before any key.
    let victim = out_dir(&token, "private").join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let shared = out_dir(&token, "shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let trap = shared.join("answers.jsonl");
    std::os::unix::fs::symlink(&victim, &trap).unwrap();
    if std::os::unix::fs::lchown(&trap, Some(65534), Some(65534)).is_err() {
        skip(&token, "giving the link another owner needs root");
        return;
    }
    let before = token.keys().len();
    let run = batch_to(&trap, &token.token_arg);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("is a symbolic link in a world-writable"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(token.keys().len(), before, "no key made");
}
