//! Raw RPC calls to `hsm-csr serve`: requests signed as the SDKs sign them
//! (RPC HMAC-SHA1), sent over a bare TCP connection so that a test can
//! send exactly the bytes it means, well-formed or not.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hsm_csr::service::request_signing::{
    percent_encode, rpc_signature, rpc_string_to_sign, timestamp_now,
};

/// What came back: status, headers (lowercase names), body, and the
/// `Code` of an error body ("OK" for a 200).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub code: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The common parameters of a CreateCdnCertificateSigningRequest call by
/// `id`, then `extra` (which may repeat or override any of them), signed
/// with `secret` over every parameter as given; the query string, in the
/// order given.
pub fn signed_query(id: &str, secret: &str, extra: &[(&str, &str)]) -> String {
    let nonce = uuid::Uuid::new_v4().to_string();
    let now = timestamp_now();
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in [
        ("Action", "CreateCdnCertificateSigningRequest"),
        ("Version", "2018-05-10"),
        ("Format", "JSON"),
        ("AccessKeyId", id),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", now.as_str()),
    ] {
        if !extra.iter().any(|(e, _)| *e == k) {
            params.push((k.to_owned(), v.to_owned()));
        }
    }
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let signature = rpc_signature(secret, &rpc_string_to_sign("GET", &params));
    let mut q: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    q.push(format!("Signature={}", percent_encode(&signature)));
    q.join("&")
}

/// `GET /?query` on a connection of its own.
pub fn get(addr: &str, query: &str) -> Answer {
    exchange(
        addr,
        format!("GET /?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` as is on a new connection and reads the answer until
/// the server closes it (or 30 s pass).
pub fn exchange(addr: &str, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

/// Parses an HTTP/1.1 response (Content-Length bodies only).
pub fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let code = if status == 200 {
        "OK".to_owned()
    } else {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("Code")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("http:{status}"))
    };
    Answer {
        status,
        headers,
        body: body.to_owned(),
        code,
    }
}
