//! A bounded load client for `hsm-csr serve`, on loopback only. It signs
//! CreateCdnCertificateSigningRequest calls as the SDKs do (RPC,
//! HMAC-SHA1, GET) with the crate's own signer, speaks HTTP/1.1 over plain
//! threads and blocking sockets, and costs the two cores next to nothing,
//! so the figures are the server's and not the client's.
//!
//! ```text
//! load ADDRS closed COUNT CONCURRENCY DEADLINE_S  COUNT calls over CONCURRENCY keep-alive connections
//! load ADDRS rate RPS SECONDS                     open loop: one call every 1/RPS s for SECONDS
//! load ADDRS burst COUNT [SPREAD_MS]              COUNT calls released at once (or evenly within SPREAD_MS)
//! load ADDRS replay FILE                          each call recorded in FILE, sent again to another address
//! ```
//!
//! ADDRS is one loopback address or several, comma-separated (replicas):
//! call n goes to the (n mod count)th. With `LOAD_RECORD=FILE`, each
//! successful call appends a line to FILE: the index of the address it
//! went to, its signed query, and the PubMd5 it got (tab-separated); the
//! `replay` mode sends each such query again, unchanged, to the next
//! address, which must refuse it as a replay. With `LOAD_TIMELINE=FILE`,
//! every call appends the Unix time in milliseconds at which it was
//! answered and its outcome, so that a script can tell when answers
//! changed (an outage, a recovery).
//!
//! The access key is read from `LOAD_AK_ID` / `LOAD_AK_SECRET`. Every mode
//! stops by itself. Latency is taken from the moment a call was due, not
//! when it was sent, so a late client cannot hide a slow server. Prints one
//! JSON line: count, ok, throttled, errors (other codes), seconds,
//! throughput (ok per second), p50_ms, p99_ms, max_ms (of successful
//! calls) and codes.

#![allow(unreachable_pub, reason = "a test or example crate has no public API")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test (or example) that cannot go on fails on the spot, an index out of range included"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hsm_csr::service::request_signing::{
    percent_encode, rpc_signature, rpc_string_to_sign, timestamp_now,
};

/// What one call came back with: `"ok"` or the error code, and its latency.
type Outcome = (String, Duration);

/// Where successful calls are recorded (`LOAD_RECORD`), shared by the
/// client threads.
static RECORD: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
    std::sync::OnceLock::new();

/// Where every call's answer time and outcome go (`LOAD_TIMELINE`).
static TIMELINE: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
    std::sync::OnceLock::new();

fn append_to(file: &std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>>, line: &str) {
    if let Some(Some(file)) = file.get() {
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(file, "{line}").expect("write a LOAD_ file");
    }
}

fn record(line: &str) {
    append_to(&RECORD, line);
}

struct Client {
    index: usize,
    addr: SocketAddr,
    id: String,
    secret: String,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(addrs: &[SocketAddr], n: usize) -> Client {
        let index = n % addrs.len();
        Client {
            index,
            addr: addrs[index],
            id: std::env::var("LOAD_AK_ID").expect("LOAD_AK_ID"),
            secret: std::env::var("LOAD_AK_SECRET").expect("LOAD_AK_SECRET"),
            conn: None,
        }
    }

    fn connect(&mut self) -> std::io::Result<()> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(180)))?;
            self.conn = Some(BufReader::new(s));
        }
        Ok(())
    }

    /// The signed query string of one call.
    fn query(&self, n: usize) -> String {
        let params: Vec<(String, String)> = [
            ("Action", "CreateCdnCertificateSigningRequest".to_owned()),
            ("Version", "2018-05-10".to_owned()),
            ("Format", "JSON".to_owned()),
            ("AccessKeyId", self.id.clone()),
            ("SignatureMethod", "HMAC-SHA1".to_owned()),
            ("SignatureVersion", "1.0".to_owned()),
            ("SignatureNonce", uuid::Uuid::new_v4().to_string()),
            ("Timestamp", timestamp_now()),
            ("CommonName", format!("load{n}.example.com")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let signature = rpc_signature(&self.secret, &rpc_string_to_sign("GET", &params));
        let mut q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        q.push(format!("Signature={}", percent_encode(&signature)));
        q.join("&")
    }

    /// One call; the latency runs from `due`.
    fn call(&mut self, n: usize, due: Instant) -> Outcome {
        let query = self.query(n);
        self.send(&query, due)
    }

    /// Sends `query` as it is; the latency runs from `due`.
    fn send(&mut self, query: &str, due: Instant) -> Outcome {
        let code = match self.exchange(query) {
            Ok(code) => code,
            Err(e) => {
                self.conn = None;
                format!("io:{:?}", e.kind())
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        append_to(&TIMELINE, &format!("{}\t{code}", now.as_millis()));
        (code, due.elapsed())
    }

    fn exchange(&mut self, query: &str) -> std::io::Result<String> {
        self.connect()?;
        let conn = self.conn.as_mut().expect("connected");
        write!(
            conn.get_mut(),
            "GET /?{query} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.addr
        )?;
        let mut status = String::new();
        conn.read_line(&mut status)?;
        let status: u16 = status
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let (mut length, mut close) = (0usize, false);
        loop {
            let mut line = String::new();
            conn.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        if close {
            self.conn = None;
        }
        let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
        };
        if status == 200 {
            let pub_md5 = field("PubMd5").unwrap_or_default();
            record(&format!("{}\t{query}\t{pub_md5}", self.index));
            return Ok("ok".into());
        }
        let code = field("Code").unwrap_or_else(|| format!("http:{status}"));
        Ok(code)
    }
}

/// `closed`: CONCURRENCY clients, each sending its next call when the last
/// one is answered, until COUNT calls are done or the deadline passes.
fn closed(
    addrs: &[SocketAddr],
    count: usize,
    concurrency: usize,
    deadline: Duration,
) -> Vec<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + deadline;
    let threads: Vec<_> = (0..concurrency)
        .map(|c| {
            let next = Arc::clone(&next);
            let addrs = addrs.to_vec();
            std::thread::spawn(move || {
                let mut client = Client::new(&addrs, c);
                let mut out = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count || Instant::now() >= stop_at {
                        return out;
                    }
                    out.push(client.call(n, Instant::now()));
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect()
}

/// `rate` and `burst`: call `n` is due at `start + offsets[n]` (sorted),
/// with `start` a little in the future. Each call gets its own thread,
/// started shortly before it is due, and connects then: a connection
/// opened long before would sit idle (servers close those), and hundreds
/// of them would weigh on the server. Only calls due soon or in flight hold
/// a thread.
fn scheduled(addrs: &[SocketAddr], offsets: &[Duration]) -> (Vec<Outcome>, Instant) {
    const LEAD: Duration = Duration::from_millis(200);
    let start = Instant::now() + LEAD;
    let sleep_until = |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));
    let mut threads = Vec::with_capacity(offsets.len());
    for (n, &offset) in offsets.iter().enumerate() {
        let due = start + offset;
        sleep_until(due.checked_sub(LEAD).unwrap_or(due));
        let mut client = Client::new(addrs, n);
        threads.push(
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let connected = client.connect();
                    sleep_until(due);
                    match connected {
                        Ok(()) => client.call(n, due),
                        Err(e) => (format!("io:{:?}", e.kind()), due.elapsed()),
                    }
                })
                .expect("spawn a client thread"),
        );
    }
    let results = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    (results, start)
}

/// `replay`: every call recorded in `file`, sent again as it was, one
/// after another, each to the address after the one that answered it.
fn replay(addrs: &[SocketAddr], file: &str) -> (Vec<Outcome>, Instant) {
    let started = Instant::now();
    let text = std::fs::read_to_string(file).expect("read the recorded calls");
    let results = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let index: usize = fields.next()?.parse().ok()?;
            let query = fields.next()?;
            let mut client = Client::new(addrs, index + 1);
            Some(client.send(query, Instant::now()))
        })
        .collect();
    (results, started)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i}: {what}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addrs: Vec<SocketAddr> = args
        .get(1)
        .expect("ADDRS, e.g. 127.0.0.1:8080 or 127.0.0.1:8081,127.0.0.1:8082")
        .split(',')
        .map(|a| a.parse().expect("ADDRS: IP:port[,IP:port...]"))
        .collect();
    assert!(
        addrs.iter().all(|a| a.ip().is_loopback()),
        "load goes to loopback only"
    );
    let open = |var: &str| {
        std::env::var_os(var).map(|path| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open {var}: {e}"));
            std::sync::Mutex::new(file)
        })
    };
    RECORD.set(open("LOAD_RECORD")).expect("set once");
    TIMELINE.set(open("LOAD_TIMELINE")).expect("set once");
    let (results, started) = match args.get(2).map(String::as_str) {
        Some("closed") => {
            let started = Instant::now();
            let results = closed(
                &addrs,
                arg(&args, 3, "COUNT"),
                arg(&args, 4, "CONCURRENCY"),
                Duration::from_secs_f64(arg(&args, 5, "DEADLINE_S")),
            );
            (results, started)
        }
        Some("rate") => {
            let (rps, seconds): (f64, f64) = (arg(&args, 3, "RPS"), arg(&args, 4, "SECONDS"));
            let offsets: Vec<_> = (0..(rps * seconds).round() as usize)
                .map(|n| Duration::from_secs_f64(n as f64 / rps))
                .collect();
            scheduled(&addrs, &offsets)
        }
        Some("burst") => {
            let count: usize = arg(&args, 3, "COUNT");
            let spread = args
                .get(4)
                .map_or(0.0, |_| arg::<f64>(&args, 4, "SPREAD_MS"));
            let offsets: Vec<_> = (0..count)
                .map(|n| Duration::from_secs_f64(spread / 1000.0 * n as f64 / count as f64))
                .collect();
            scheduled(&addrs, &offsets)
        }
        Some("replay") => replay(&addrs, &arg::<String>(&args, 3, "FILE")),
        _ => panic!("mode: closed, rate, burst or replay"),
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for (code, _) in &results {
        *codes.entry(code).or_default() += 1;
    }
    let mut ok: Vec<f64> = results
        .iter()
        .filter(|(c, _)| c == "ok")
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    ok.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ok.get(((p * ok.len() as f64).ceil() as usize).saturating_sub(1))
            .map(|ms| (ms * 10.0).round() / 10.0)
    };
    let throttled = codes.get("Throttling.User").copied().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "count": results.len(),
            "ok": ok.len(),
            "throttled": throttled,
            "errors": results.len() - ok.len() - throttled,
            "seconds": (elapsed * 100.0).round() / 100.0,
            "throughput": (ok.len() as f64 / elapsed * 100.0).round() / 100.0,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            "codes": codes,
        })
    );
}
