use super::line::{rfc3339, rfc3339_now};
use super::*;

fn event() -> Event {
    Event::new(EventKind::Created, "ID", &Actor::access_key("AK")).key(
        Some("a.example"),
        "00ff",
        "pkcs11:object=x",
    )
}

#[test]
fn dates() {
    assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(rfc3339(1_796_083_199, 999), "2026-11-30T23:59:59.999Z");
    assert_eq!(rfc3339(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
}

#[test]
fn now_is_the_clock_in_that_form() {
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let (before, now, after) = (secs(), rfc3339_now(), secs());
    // Seconds, not milliseconds: compared without the fraction.
    let whole = |t: u64| rfc3339(t, 0)[..19].to_owned();
    assert!(
        (before..=after).any(|t| whole(t) == now[..19]),
        "{now} is not between {} and {}",
        whole(before),
        whole(after)
    );
    assert_eq!(now.len(), "2026-12-07T01:02:03.456Z".len(), "{now}");
    assert!(now.ends_with('Z') && now.as_bytes()[19] == b'.', "{now}");
}

#[test]
fn a_line_is_one_json_object_of_printable_ascii() {
    let mut e = event();
    e.common_name =
        Some("a\nb\r\u{2028}\u{2029}\u{85}\u{7f}\"}\n{\"event\":\"deleted\" \u{1F600}".into());
    e.actor = Actor::access_key("k\n{\"x\":1}");
    let line = e.line();
    assert_eq!(line.last(), Some(&b'\n'));
    let body = &line[..line.len() - 1];
    assert!(
        body.iter().all(|b| (b' '..=b'~').contains(b)),
        "{}",
        String::from_utf8_lossy(body)
    );
    let back: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(back["common_name"], e.common_name.clone().unwrap().as_str());
    assert_eq!(back["actor"]["access_key"], "k\n{\"x\":1}");
    assert_eq!(back["event"], "created");
    assert_eq!(back["outcome"], "ok");
}

/// Only what is not ASCII (and DEL) is written as `\uXXXX`; the rest as
/// serde_json writes it, so a line stays greppable for a name as typed.
#[test]
fn only_what_is_not_ascii_is_escaped() {
    let mut e = event();
    e.common_name = Some("café.example\u{7f}x \u{1F600}".into());
    e.actor = Actor::access_key("AK-plain");
    let line = String::from_utf8(e.line()).unwrap();
    assert!(
        line.contains(r#""common_name":"caf\u00e9.example\u007fx \ud83d\ude00""#),
        "{line}"
    );
    assert!(line.contains(r#""access_key":"AK-plain""#), "{line}");
    assert!(line.contains(r#""key_uri":"pkcs11:object=x""#), "{line}");
}

#[test]
fn long_fields_are_cut_and_marked() {
    let mut e = event();
    e.key_uri = Some("é".repeat(10_000));
    e.replaced_by = Some("ü".repeat(10_000));
    let line = e.line();
    assert!(line.len() < 8 * 1024, "{}", line.len());
    let back: serde_json::Value = serde_json::from_slice(&line).unwrap();
    for field in ["key_uri", "replaced_by"] {
        let uri = back[field].as_str().unwrap();
        assert!(uri.ends_with("...[truncated]"));
        assert_eq!(uri.chars().count(), MAX_FIELD + "...[truncated]".len());
    }
}

#[test]
fn appends_one_line_per_event_and_refuses_what_is_not_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..25 {
                    log.record(&event()).unwrap();
                }
            });
        }
    });
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 200);
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = AuditLog::open(&link).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = AuditLog::open(dir.path()).unwrap_err();
    assert_eq!(e.code(), "Internal.Error");
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(AuditLog::open(Path::new("/dev/full")).is_err());
    assert!(AuditLog::open(&dir.path().join("no/such/dir/log")).is_err());

    // Replaced by a directory after the start: the next event fails.
    std::fs::rename(&path, dir.path().join("rotated")).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(log.record(&event()).is_err());
    std::fs::remove_dir(&path).unwrap();
    // Rotated away: a new file is started.
    log.record(&event()).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
}

#[test]
fn an_opened_fifo_or_link_is_refused_at_once() {
    // What open_file's check may be raced by: a FIFO or a link swapped in
    // just before the open. Neither blocks, neither is written.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    crate::files::mkfifo(&fifo);
    let started = std::time::Instant::now();
    assert!(open_checked(&fifo).is_err());
    let target = dir.path().join("target");
    std::fs::write(&target, "").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(open_checked(&link).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(std::fs::read(&target).unwrap(), b"");
}

#[test]
fn a_write_past_its_deadline_fails_the_call_and_is_not_waited_for() {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let got = within(std::time::Duration::from_millis(50), move || {
        let _ = wait.recv();
        Ok(())
    });
    let e = got.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("does not answer"), "{e}");
    // Once the stuck write ends, it is no longer counted.
    release.send(()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while STUCK_WRITES.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(within(std::time::Duration::from_secs(5), || Ok(())).is_ok());
}
