//! Slow and idle clients, connection limits and HTTP methods.
//! Each test holds raw connections to `hsm-csr serve` on 127.0.0.1 and
//! checks that the server closes them, never that it does so quickly:
//! every wait is bounded by [`BOUND`], far above the configured timeouts.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::serve_config::ServeConfig;
use crate::common::server::{Launch, Server, self_signed};
use crate::common::{Run, Token, python, repo};

/// How long a test waits for something the server should do within a
/// second or two (the timeouts these tests configure).
const BOUND: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection or [`BOUND`] passes: what
/// it sent, and whether it closed.
fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + BOUND;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // Reset: the server closed with our bytes unread.
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// One response on a kept-alive connection: head and body.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-response");
        data.push(byte[0]);
    }
    let head = String::from_utf8(data).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

/// One SDK call (tests/tools/call.py): Ok, or what the client said.
fn sdk_call(server: &Server) -> Result<(), String> {
    let out = Command::new(python())
        .arg(repo().join("tests/tools/call.py"))
        .arg(&server.addr)
        .arg("1")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn idle_connections_cannot_lock_out_a_signed_call() {
    let token = Token::new();
    // Fewer file descriptors than the idle connections below, and a header
    // timeout longer than the call may take: it must get through while
    // every idle connection could still hold its place.
    let server = Server::start_limited(&token, token.ec_or_rsa(), "header_timeout_ms = 30000", 256);
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        let half: &[u8] = if i % 2 == 0 {
            b"GET /?Action=Cre"
        } else {
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
        };
        s.write_all(half).unwrap();
        idle.push(s);
    }
    // Queued behind all of them; served once the oldest make room for it.
    let asked = Instant::now();
    let deadline = asked + Duration::from_secs(25);
    let mut attempts = 1;
    while let Err(said) = sdk_call(&server) {
        assert!(
            Instant::now() < deadline,
            "a signed call never got through 300 idle connections:\n{said}"
        );
        attempts += 1;
    }
    let waited = asked.elapsed();
    assert_eq!(attempts, 1, "the first signed call must get through");
    let health = server.get("/healthz").unwrap_or_default();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop(idle);
    let log = server.stop();
    let limit: usize = log
        .lines()
        .find_map(|l| l.split("at most ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the connection limit is logged:\n{log}"));
    assert!(limit < 256, "the limit stays below the fd limit:\n{log}");
    eprintln!(
        "connections: with 300 idle connections held and 256 file descriptors, a signed call \
         succeeded after {:.2} s (attempt {attempts}; header timeout 30 s, connection limit {limit})",
        waited.as_secs_f64()
    );
    assert_eq!(token.keys().len(), 2, "{log}");
}

#[test]
fn headers_sent_byte_by_byte_are_cut_off_at_the_header_timeout() {
    let token = Token::new();
    let server = Server::start(&token, token.ec_or_rsa(), "header_timeout_ms = 1000");
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
    // Each byte arrives well within any per-read timeout; the whole head never does.
    let deadline = Instant::now() + BOUND;
    let mut closed = false;
    while !closed && Instant::now() < deadline {
        closed = s.write_all(b"a").is_err();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed, "a drip-fed request head held its connection");
    assert!(
        server
            .get("/healthz")
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200")
    );
    server.stop();
}

#[test]
fn a_body_shorter_than_its_length_is_refused_after_the_body_timeout() {
    let token = Token::new();
    let server = Server::start(&token, token.ec_or_rsa(), "body_timeout_ms = 1000");
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(
        b"POST /?Format=JSON HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nAction=Cre",
    )
    .unwrap();
    let (answer, closed) = read_until_closed(&mut s);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains(r#""Code":"RequestTimeout""#), "{answer}");
    assert!(closed, "the connection stays open after a short body");
    let log = server.stop();
    assert!(log.contains("code=RequestTimeout"), "{log}");
    assert!(token.keys().is_empty());
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let token = Token::new();
    // The header timeout is far longer: the idle timeout alone closes it.
    let server = Server::start(
        &token,
        token.ec_or_rsa(),
        "idle_timeout_ms = 1000\nheader_timeout_ms = 60000",
    );
    let mut s = TcpStream::connect(&server.addr).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let answer = read_response(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200"), "kept alive: {answer}");
    }
    let (rest, closed) = read_until_closed(&mut s);
    assert!(closed, "an idle kept-alive connection stays open");
    assert!(rest.is_empty(), "{rest:?}");
    server.stop();
}

#[test]
fn a_client_that_reads_no_responses_is_closed_after_the_idle_timeout() {
    let token = Token::new();
    let server = Server::start(
        &token,
        token.ec_or_rsa(),
        "idle_timeout_ms = 1000\nheader_timeout_ms = 60000",
    );
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Pipelined requests, no response read: the responses fill the socket
    // buffers, the server's writes stall, and it stops reading ours.
    let requests = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(100);
    let deadline = Instant::now() + BOUND;
    let mut closed = false;
    while !closed && Instant::now() < deadline {
        closed = match s.write(&requests) {
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
    }
    assert!(closed, "a client that reads nothing held its connection");
    assert!(
        server
            .get("/healthz")
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200")
    );
    server.stop();
}

#[test]
fn only_get_and_post_reach_the_rpc_endpoint_over_http_1_1() {
    let token = Token::new();
    let server = Server::start(&token, token.ec_or_rsa(), "");
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"] {
        let answer = server.raw(
            format!(
                "{method} /?Action=CreateCdnCertificateSigningRequest HTTP/1.1\r\n\
                 Host: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 405"), "{method}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nallow: get, post\r\n"),
            "{method}: {answer}"
        );
    }
    let answer = server.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut s);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "answered in HTTP/2: {answer:?}"
    );
    assert!(closed, "an HTTP/2 connection stays open");
    server.stop();
    assert!(token.keys().is_empty());
}

#[test]
fn https_has_the_same_limits_and_serves_http_1_1_only() {
    let token = Token::new();
    let (cert, key) = self_signed(&token);
    let server = Server::launch_on(
        &token,
        &Server::config(&token, token.ec_or_rsa(), "header_timeout_ms = 1000").tls(&cert, &key),
        &Launch::default(),
    );

    // A TLS handshake that never starts.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let (_, closed) = read_until_closed(&mut s);
    assert!(closed, "a connection without a handshake stays open");

    // ALPN offers h2 first; half a request after the handshake; then a signed call.
    let out = Command::new(python())
        .args([
            "-c",
            "import datetime,json,socket,ssl,sys,urllib.parse,urllib.request,uuid\n\
             from alibabacloud_tea_openapi.utils import Utils\n\
             addr,ca=sys.argv[1],sys.argv[2]\n\
             host,port=addr.rsplit(':',1)\n\
             ctx=ssl.create_default_context(cafile=ca)\n\
             ctx.set_alpn_protocols(['h2','http/1.1'])\n\
             s=ctx.wrap_socket(socket.create_connection((host,int(port))),server_hostname=host)\n\
             print('alpn',s.selected_alpn_protocol())\n\
             s.sendall(b'GET /?Action=Cre')\n\
             s.settimeout(20)\n\
             try:\n  state='closed' if s.recv(1)==b'' else 'answered'\n\
             except socket.timeout:\n  state='open'\n\
             except (ConnectionError,ssl.SSLError):\n  state='closed'\n\
             print('stalled',state)\n\
             p={'Action':'CreateCdnCertificateSigningRequest','Version':'2018-05-10','CommonName':'tls.example.com',\n\
                'AccessKeyId':'MainKey','SignatureMethod':'HMAC-SHA1','SignatureVersion':'1.0','Format':'JSON',\n\
                'SignatureNonce':str(uuid.uuid4()),'Timestamp':datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ')}\n\
             p['Signature']=Utils.get_rpcsignature(p,'GET','s3cret')\n\
             r=urllib.request.urlopen('https://'+addr+'/?'+urllib.parse.urlencode(p),context=ssl.create_default_context(cafile=ca))\n\
             print(r.status, json.loads(r.read())['CommonName'])\n",
            &server.addr,
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        "alpn http/1.1\nstalled closed\n200 tls.example.com",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
    assert_eq!(token.keys().len(), 2);
}

#[test]
fn unusable_tls_files_are_named_in_the_error() {
    let token = Token::new();
    let (_, key) = self_signed(&token);
    // A key of another certificate.
    let other = token.dir().join("other.key");
    std::fs::rename(&key, &other).unwrap();
    let (cert, key) = self_signed(&token);
    let garbage = token.dir().join("not-pem.txt");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    std::fs::write(token.dir().join("pin"), "1234\n").unwrap();
    for (c, k, named) in [
        (&garbage, &key, &garbage),
        (&cert, &garbage, &garbage),
        (&key, &cert, &key),
        (&cert, &other, &other),
    ] {
        let config = ServeConfig::for_token(&token)
            .tls(c, k)
            .access_key("K", "S", "[\"*\"]")
            .write(token.dir());
        let mut cmd = token.hsm_csr();
        cmd.current_dir(token.dir())
            .env_remove("HSM_CSR_PIN")
            .env("S", "x")
            .args(["serve", "--config"])
            .arg(&config);
        let run = Run::of(&mut cmd);
        assert_ne!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr.contains("Config.Invalid")
                && run.stderr.contains(&named.display().to_string()),
            "{}",
            run.stderr
        );
    }
}
