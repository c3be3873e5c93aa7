//! A hostile client against the real server: malformed,
//! oversized, duplicated, reordered, replayed, forged and slow requests,
//! each answered with its exact code; afterwards no panic, no forged log
//! line, bounded memory and /metrics, and exactly one key pair on the token
//! per delivered CSR.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::Token;
use crate::common::rpc::{self, Answer, exchange, get, signed_query};
use crate::common::server::Server;

/// A key that may call nothing: what any valid caller can do anyway.
const NOTHING_KEY: &str =
    "[[service.access_keys]]\nid = \"Nothing\"\nsecret_env = \"MAIN_SECRET\"\nactions = []\n";

/// A parameter given twice, under one signature.
const DUPLICATE: &str = "InvalidParameter";
/// An STS security token, which the service cannot honour.
const SECURITY_TOKEN: &str = "InvalidSecurityToken.MismatchWithAccessKey";

struct Tally {
    delivered: usize,
}

impl Tally {
    #[track_caller]
    fn expect(&mut self, what: &str, answer: &Answer, code: &str) {
        assert_eq!(answer.code, code, "{what}: {answer:?}");
        assert!(
            answer.header("x-acs-request-id").is_some(),
            "{what}: no x-acs-request-id: {answer:?}"
        );
        if code == "OK" {
            self.delivered += 1;
        }
    }
}

fn main_call(addr: &str, extra: &[(&str, &str)]) -> Answer {
    get(addr, &signed_query("MainKey", "s3cret", extra))
}

#[test]
fn hostile_requests_get_exact_codes_and_leave_nothing_behind() {
    let Some(token) = Token::private_softhsm("the service suite runs on a private token") else {
        return;
    };
    let server = Server::start_with(
        &token,
        "ec-p256",
        "rate_limit = 100000\nheader_timeout_ms = 1500\nbody_timeout_ms = 1500",
        NOTHING_KEY,
    );
    let addr = server.addr.clone();
    let mut t = Tally { delivered: 0 };

    // The metrics bomb: 300 unknown 30 KB actions from a key
    // granted nothing, and a forged log line in the action.
    let big = "A".repeat(30_000);
    for i in 0..300 {
        let action = format!("{big}{i}");
        let a = get(
            &addr,
            &signed_query("Nothing", "s3cret", &[("Action", &action)]),
        );
        t.expect("30 KB action", &a, "InvalidAction.NotFound");
    }
    let forged =
        "X\nhsm-csr: info: request RequestId=FORGED action=CreateCdnCertificateSigningRequest";
    let a = get(
        &addr,
        &signed_query("Nothing", "s3cret", &[("Action", forged)]),
    );
    t.expect("newline in Action", &a, "InvalidAction.NotFound");
    let a = get(
        &addr,
        &signed_query("Nothing", "s3cret", &[("CommonName", "ok.example.com")]),
    );
    t.expect("no grant", &a, "Forbidden.RAM");

    // Well-formed, reordered, replayed.
    let a = main_call(&addr, &[("CommonName", "plain.example.com")]);
    t.expect("valid call", &a, "OK");
    assert!(!a.body.contains("KeyUri"), "KeyUri is opt-in: {}", a.body);
    let q = signed_query("MainKey", "s3cret", &[("CommonName", "replay.example.com")]);
    let reversed: Vec<&str> = q.split('&').rev().collect();
    t.expect("reordered", &get(&addr, &reversed.join("&")), "OK");
    t.expect("replayed", &get(&addr, &q), "SignatureNonceUsed");

    // Duplicated parameters: two readings under one signature.
    let a = main_call(
        &addr,
        &[
            ("CommonName", "a.example.com"),
            ("CommonName", "b.example.com"),
        ],
    );
    t.expect("CommonName twice", &a, DUPLICATE);
    let a = main_call(
        &addr,
        &[
            ("CommonName", "c.example.com"),
            ("Action", "CreateCdnCertificateSigningRequest"),
            ("Action", "CreateDcdnCertificateSigningRequest"),
        ],
    );
    t.expect("Action twice", &a, DUPLICATE);

    // Malformed values.
    for (what, extra, code) in [
        ("no CommonName", vec![], "MissingCommonName"),
        (
            "newline in CN",
            vec![("CommonName", "a\nb.example.com")],
            "InvalidValue.Malformed",
        ),
        (
            "bidi override",
            vec![("CommonName", "moc.elpmaxe\u{202e}")],
            "InvalidValue.Malformed",
        ),
        (
            "zero width",
            vec![
                ("CommonName", "ok.example.com"),
                ("City", "Hang\u{200b}zhou"),
            ],
            "InvalidValue.Malformed",
        ),
        (
            "country",
            vec![("CommonName", "ok.example.com"), ("Country", "CHN")],
            "InvalidValue.Malformed",
        ),
        (
            "SAN",
            vec![("CommonName", "ok.example.com"), ("SANs", "a..example.com")],
            "InvalidValue.Malformed",
        ),
        (
            "65-char CN",
            vec![("CommonName", &*"c".repeat(65))],
            "InvalidValue.Malformed",
        ),
        (
            "version",
            vec![("CommonName", "ok.example.com"), ("Version", "2099-01-01")],
            "InvalidVersion",
        ),
        (
            "timestamp format",
            vec![("Timestamp", "20261130T000000Z")],
            "InvalidTimeStamp.Format",
        ),
        (
            "stale",
            vec![("Timestamp", "2020-02-29T00:00:00Z")],
            "InvalidTimeStamp.Expired",
        ),
        (
            "signature method",
            vec![("SignatureMethod", "HMAC-MD5")],
            "IncompleteSignature",
        ),
        (
            "security token",
            vec![("CommonName", "ok.example.com"), ("SecurityToken", "STS.x")],
            SECURITY_TOKEN,
        ),
        (
            "pool label as CN",
            vec![("CommonName", "pool:unassigned")],
            "OK",
        ),
    ] {
        t.expect(what, &main_call(&addr, &extra), code);
    }
    // Invalid UTF-8 percent-encoded in a value, signed as sent.
    let q = signed_query("MainKey", "s3cret", &[("CommonName", "ok.example.com")]) + "&City=%FF%FE";
    t.expect("invalid UTF-8", &get(&addr, &q), "InvalidValue.Malformed");
    t.expect(
        "unknown key",
        &get(&addr, &signed_query("Stranger", "x", &[])),
        "InvalidAccessKeyId.NotFound",
    );
    t.expect(
        "wrong secret",
        &get(&addr, &signed_query("MainKey", "wrong", &[])),
        "SignatureDoesNotMatch",
    );
    let unsigned = signed_query("MainKey", "s3cret", &[("CommonName", "x.example.com")]);
    let unsigned = unsigned.rsplit_once("&Signature=").unwrap().0;
    t.expect("no signature", &get(&addr, unsigned), "IncompleteSignature");

    // Oversized, garbage and wrong methods.
    let body = "CommonName=".to_owned() + &"a".repeat(100_000);
    let a = exchange(
        &addr,
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    t.expect("100 KB body", &a, "RequestTooLarge");
    let a = exchange(
        &addr,
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(20_000)
        )
        .as_bytes(),
    );
    t.expect("20 KB header", &a, "RequestTooLarge");
    for garbage in [
        &b"\x00\x01\x02 / HTTP/9.9\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let a = exchange(&addr, garbage);
        assert!(a.status != 200 && a.status != 500, "{garbage:?}: {a:?}");
    }
    let put = exchange(
        &addr,
        b"PUT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(put.status, 405, "{put:?}");

    // Slow: a body shorter than its Content-Length, and headers that never end.
    let started = Instant::now();
    let mut short = TcpStream::connect(&addr).unwrap();
    short
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    short
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nCommonName=")
        .unwrap();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = short.read_to_end(&mut rest);
    let a = rpc::parse(&rest);
    assert!(a.status == 408 || a.status == 0, "short body: {a:?}");
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "slow clients were held for {:?}",
        started.elapsed()
    );

    // Many valid callers at once.
    let oks = std::thread::scope(|s| {
        let calls: Vec<_> = (0..24)
            .map(|i| {
                let addr = &addr;
                s.spawn(move || {
                    main_call(addr, &[("CommonName", &format!("c{i}.example.com"))]).code
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().unwrap())
            .filter(|code| code == "OK")
            .count()
    });
    assert_eq!(oks, 24);
    t.delivered += oks;

    // The six scrapes after the bomb.
    for _ in 0..5 {
        server.get("/metrics").unwrap();
    }
    let metrics = server.get("/metrics").unwrap();
    assert!(
        metrics.len() < 1 << 20,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(
        !metrics.contains("AAAA") && !metrics.contains("FORGED"),
        "{metrics}"
    );
    let rss = server.rss_bytes();
    eprintln!(
        "hostile: {} CSRs delivered; server RSS {:.1} MB; /metrics {} bytes",
        t.delivered,
        rss as f64 / f64::from(1 << 20),
        metrics.len()
    );
    assert!(rss < 64 << 20, "server RSS {} MB", rss >> 20);
    let log = server.stop();
    assert!(!log.contains("panicked"), "{log}");
    for line in log.lines() {
        assert!(
            line.starts_with("hsm-csr: "),
            "a line not written by the logger: {line:?}"
        );
        assert!(
            !line.starts_with("hsm-csr: info: request RequestId=FORGED"),
            "{line}"
        );
    }
    assert_eq!(
        token.keys().len(),
        2 * t.delivered,
        "one key pair per delivered CSR, nothing else"
    );
}

/// Work a caller asks for counts against its rate limit whatever it asks:
/// a key granted nothing, calling an action that does not exist, is
/// throttled like any other.
#[test]
fn unknown_actions_count_against_the_callers_rate() {
    let Some(token) = Token::private_softhsm("the service suite runs on a private token") else {
        return;
    };
    let server = Server::start_with(&token, "ec-p256", "rate_limit = 2", NOTHING_KEY);
    let started = Instant::now();
    let codes: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let addr = &server.addr;
                s.spawn(move || {
                    let action = format!("NoSuchAction{i}");
                    get(
                        addr,
                        &signed_query("Nothing", "s3cret", &[("Action", &action)]),
                    )
                    .code
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let seconds = started.elapsed().as_secs() + 1;
    let admitted = codes
        .iter()
        .filter(|c| *c == "InvalidAction.NotFound")
        .count();
    let throttled = codes.iter().filter(|c| *c == "Throttling.User").count();
    assert_eq!(admitted + throttled, 20, "{codes:?}");
    assert!(
        admitted as u64 <= 2 * seconds,
        "{admitted} unknown-action calls admitted in {seconds} s at 2/s: {codes:?}"
    );
    server.stop();
}

/// Clients that send a request head and never its body, reconnecting as
/// fast as they are closed, on a server whose every place they could take:
/// a signed call still gets through at its first attempt, well before the
/// body timeout, and is never itself the connection closed to make room.
#[test]
fn stalled_bodies_at_the_connection_limit_cannot_lock_out_a_caller() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let Some(token) = Token::private_softhsm("the service suite runs on a private token") else {
        return;
    };
    let server = Server::start(
        &token,
        "ec-p256",
        "max_connections = 8\nheader_timeout_ms = 60000\nbody_timeout_ms = 60000",
    );
    let addr = server.addr.clone();
    let stop = AtomicBool::new(false);
    // Connections the server closed on a stalling client: it does so only
    // to make room, so once there are some, every place has been taken.
    let closed = AtomicUsize::new(0);
    let answer = std::thread::scope(|s| {
        for _ in 0..12 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = TcpStream::connect(&addr) else {
                        continue;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                    let _ =
                        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
                    // Held until the server closes it (or we stop).
                    let mut sink = [0u8; 512];
                    while !stop.load(Ordering::Relaxed) {
                        match c.read(&mut sink) {
                            Ok(0) => {
                                closed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }
            });
        }
        // The stalling clients stop however this ends, a failed assertion
        // included: the scope waits for them.
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + Duration::from_secs(30);
        while closed.load(Ordering::Relaxed) < 4 {
            assert!(
                Instant::now() < deadline,
                "the stalling clients never filled the connection limit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let asked = Instant::now();
        let answer = main_call(&addr, &[("CommonName", "through.example.com")]);
        let waited = asked.elapsed();
        (answer, waited)
    });
    let (answer, waited) = answer;
    assert_eq!(answer.code, "OK", "{answer:?}");
    // Half the 60 s timeouts: had the stalled connections kept their
    // places, the call would have waited for one of them to time out.
    assert!(
        waited < Duration::from_secs(30),
        "the call waited {waited:?} behind stalled bodies"
    );
    eprintln!(
        "hostile: behind 12 clients stalling their bodies at a limit of 8 connections, a signed call was answered in {:.2} s",
        waited.as_secs_f64()
    );
    server.stop();
    assert_eq!(token.keys().len(), 2);
}

/// Many clients each sending a huge request head that never ends: hyper's
/// read buffer is bounded, so memory is too.
#[test]
fn endless_request_heads_cannot_grow_memory() {
    let Some(token) = Token::private_softhsm("the service suite runs on a private token") else {
        return;
    };
    let server = Server::start(&token, "ec-p256", "");
    let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
    let mut held = Vec::new();
    for _ in 0..250 {
        let mut c = TcpStream::connect(&server.addr).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
        // 300 KB of header lines, no blank line; the server may close first.
        for _ in 0..300 {
            if c.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        held.push(c);
    }
    let rss = server.rss_bytes();
    eprintln!(
        "hostile: 250 clients sending 300 KB heads: server RSS {:.1} MB",
        rss as f64 / f64::from(1 << 20)
    );
    assert!(rss < 64 << 20, "server RSS {} MB", rss >> 20);
    drop(held);
    assert!(server.get("/healthz").unwrap().starts_with("HTTP/1.1 200"));
    server.stop();
}

/// Sets its flag when dropped, on a panic too.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
