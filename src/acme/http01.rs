//! The http-01 responder (RFC 8555 section 8.3): while an order is being
//! validated, `GET /.well-known/acme-challenge/<token>` answers the key
//! authorization of the tokens of that order, and every other request gets
//! 404. The listener closes when the responder is dropped.
//!
//! It listens to the world for the whole validation, so idle and slow
//! clients must not keep the CA out (what `serve` does too): at most
//! [`MAX_CONNECTIONS`] connections, [`PER_PEER`] from one address (an
//! IPv6 /64 counts as one address: one host is given a whole /64). At the
//! per-address limit a new connection takes the place of that address's
//! connection that has waited longest without sending a request; at the
//! total limit, of that connection of the address holding the most. The CA
//! connects from an address of its own (nobody else can complete a TCP
//! handshake from it) and sends its request at once, so a flood from other
//! addresses never reaches its connection, however fast it reconnects. A
//! request's headers must arrive within [`HEADER_LIMIT`], and a connection
//! lasts at most [`CONNECTION_LIMIT`].

use std::cmp::Reverse;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::error::{AcmeFailure, Error, Result};

const PREFIX: &str = "/.well-known/acme-challenge/";
/// Connections open at once.
const MAX_CONNECTIONS: usize = 64;
/// Connections open at once from one address.
const PER_PEER: usize = 16;
/// How long a client may take to send a request's headers.
const HEADER_LIMIT: Duration = Duration::from_secs(3);
/// How long one connection may last, headers included.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);
/// Tokens one order can register (one per identifier; RFC 8555 puts no
/// bound, CAs cap names per certificate at 100).
const MAX_TOKENS: usize = 1000;

type Tokens = Arc<Mutex<HashMap<String, String>>>;

/// One listener on an address, shared by the orders of this process that
/// are validated at once (`acme renew --jobs`): each adds its tokens. It
/// runs on a thread of its own, so it outlives no order and depends on
/// none's runtime, and closes once the last order's responder is dropped.
struct Listener {
    tokens: Tokens,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    #[cfg(test)]
    addr: SocketAddr,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The listeners of this process, by the address they were asked for.
static LISTENERS: Mutex<Vec<(SocketAddr, std::sync::Weak<Listener>)>> = Mutex::new(Vec::new());

/// A running responder for one order; dropping it takes its tokens back,
/// and stops the listener when no other order uses it.
pub(super) struct Http01 {
    listener: Option<Arc<Listener>>,
    mine: Mutex<Vec<String>>,
    #[cfg(test)]
    addr: SocketAddr,
}

impl Drop for Http01 {
    fn drop(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let mine = std::mem::take(&mut *self.mine.lock().unwrap_or_else(|p| p.into_inner()));
        {
            let mut tokens = listener.tokens.lock().unwrap_or_else(|p| p.into_inner());
            for token in mine {
                tokens.remove(&token);
            }
        }
        // The last one out closes the socket before another order can look
        // for a listener there and bind it again (the listener's thread
        // never takes this lock).
        let _listeners = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
        drop(listener);
    }
}

impl Http01 {
    /// Listens on `addr`, or joins this process's listener there.
    ///
    /// # Errors
    /// `Acme.ResponderFailed` when the address cannot be bound.
    #[allow(clippy::unused_async)]
    pub(super) async fn start(addr: SocketAddr) -> Result<Http01> {
        let mut listeners = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|(_, l)| l.strong_count() > 0);
        // Port 0 asks for a port of its own each time.
        let running = listeners
            .iter()
            .filter(|(a, _)| *a == addr && addr.port() != 0)
            .find_map(|(_, l)| l.upgrade());
        let listener = match running {
            Some(l) => l,
            None => {
                let l = Arc::new(listen(addr)?);
                listeners.push((addr, Arc::downgrade(&l)));
                l
            }
        };
        Ok(Http01 {
            #[cfg(test)]
            addr: listener.addr,
            listener: Some(listener),
            mine: Mutex::default(),
        })
    }

    /// Answers `token` with `key_authorization` from now on.
    ///
    /// # Errors
    /// `Acme.Refused` for a token that is not base64url (RFC 8555 section
    /// 8.1: "It MUST NOT contain any characters outside the base64url
    /// alphabet"), or past [`MAX_TOKENS`].
    pub(super) fn add(&self, token: &str, key_authorization: &str) -> Result<()> {
        valid_token(token)?;
        let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        if mine.len() >= MAX_TOKENS {
            return Err(Error::Acme {
                kind: AcmeFailure::Refused,
                step: "challenge",
                detail: format!("the order has more than {MAX_TOKENS} challenges"),
            });
        }
        if let Some(listener) = &self.listener {
            listener
                .tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(token.to_owned(), key_authorization.to_owned());
        }
        mine.push(token.to_owned());
        Ok(())
    }
}

/// Binds `addr` and serves it on a thread of its own until dropped.
fn listen(addr: SocketAddr) -> Result<Listener> {
    let failed = |e: std::io::Error| Error::Acme {
        kind: AcmeFailure::Responder,
        step: "http-01 responder",
        detail: format!("cannot listen on {addr}: {e}"),
    };
    let bound = std::net::TcpListener::bind(addr).map_err(failed)?;
    bound.set_nonblocking(true).map_err(failed)?;
    #[cfg(test)]
    let addr = bound.local_addr().unwrap_or(addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    let tokens: Tokens = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = Arc::clone(&tokens);
    let thread = std::thread::Builder::new()
        .name("http-01".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(bound) else {
                    return;
                };
                tokio::select! {
                    () = serve(listener, served) => {}
                    _ = stopped => {}
                }
            });
        })
        .map_err(failed)?;
    Ok(Listener {
        tokens,
        stop: Some(stop),
        thread: Some(thread),
        #[cfg(test)]
        addr,
    })
}

/// Refuses a challenge token outside the base64url alphabet, or empty or
/// long (it ends up in a URL path and a hook's environment).
pub(super) fn valid_token(token: &str) -> Result<()> {
    let ok = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Acme {
            kind: AcmeFailure::Refused,
            step: "challenge",
            detail: "the CA sent a challenge token outside the base64url alphabet".into(),
        })
    }
}

/// An open connection: who, since when, whether it sent a request, and
/// how to ask it to close.
struct Open {
    peer: IpAddr,
    since: Instant,
    asked: Arc<AtomicBool>,
    shed: Arc<Notify>,
}

/// The address a connection is counted under: an IPv6 address by its /64,
/// an IPv4-mapped one as the IPv4 address it is.
fn peer_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Closes the connection among `open` that has waited longest without
/// sending a request: among those of `peer`, when given, else among those
/// of the address with the most such connections. False when there is
/// none to close.
fn shed_one(open: &mut HashMap<u64, Open>, peer: Option<IpAddr>) -> bool {
    let waiting = |c: &Open| !c.asked.load(Ordering::Relaxed);
    let peer = peer.or_else(|| {
        // Per address: how many wait, and since when the oldest has.
        let mut counts: HashMap<IpAddr, (usize, Reverse<Instant>)> = HashMap::new();
        for c in open.values().filter(|c| waiting(c)) {
            let e = counts.entry(c.peer).or_insert((0, Reverse(c.since)));
            e.0 += 1;
            e.1 = e.1.max(Reverse(c.since));
        }
        counts.into_iter().max_by_key(|&(_, k)| k).map(|(p, _)| p)
    });
    let victim = open
        .iter()
        .filter(|(_, c)| peer.is_none_or(|p| c.peer == p) && waiting(c))
        .min_by_key(|(_, c)| c.since)
        .map(|(id, _)| *id);
    match victim.and_then(|id| open.remove(&id)) {
        Some(c) => {
            c.shed.notify_one();
            true
        }
        None => false,
    }
}

async fn serve(listener: TcpListener, tokens: Tokens) {
    let open: Arc<Mutex<HashMap<u64, Open>>> = Arc::default();
    let mut next = 0u64;
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            continue;
        };
        let peer = peer_of(addr.ip());
        let id = next;
        next += 1;
        let (asked, shed) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            let from_peer = open.values().filter(|c| c.peer == peer).count();
            if from_peer >= PER_PEER {
                shed_one(&mut open, Some(peer));
            }
            if open.len() >= MAX_CONNECTIONS && !shed_one(&mut open, None) {
                // Every connection is being answered (which takes no
                // time): this one is closed, and its client may retry.
                continue;
            }
            open.insert(
                id,
                Open {
                    peer,
                    since: Instant::now(),
                    asked: Arc::clone(&asked),
                    shed: Arc::clone(&shed),
                },
            );
        }
        let tokens = Arc::clone(&tokens);
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                asked.store(true, Ordering::Relaxed);
                answer(req, Arc::clone(&tokens))
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_LIMIT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_LIMIT, conn) => {}
                () = shed.notified() => {}
            }
            open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    tokens: Tokens,
) -> std::result::Result<Response<String>, Infallible> {
    let found = (req.method() == Method::GET || req.method() == Method::HEAD)
        .then(|| req.uri().path().strip_prefix(PREFIX))
        .flatten()
        .and_then(|token| {
            let tokens = tokens.lock().unwrap_or_else(|p| p.into_inner());
            tokens.get(token).cloned()
        });
    let mut response = match found {
        Some(key_authorization) => Response::new(key_authorization),
        None => {
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn answers_only_its_tokens_and_only_to_get() {
        let server = Http01::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        server.add("tok-1_A", "tok-1_A.thumb").unwrap();
        let req = |method: &str, path: &str| {
            format!("{method} {path} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
        };
        let ok = get(
            server.addr,
            &req("GET", "/.well-known/acme-challenge/tok-1_A"),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ntok-1_A.thumb"), "{ok}");
        for (method, path) in [
            ("GET", "/.well-known/acme-challenge/other"),
            (
                "GET",
                "/.well-known/acme-challenge/../acme-challenge/tok-1_A",
            ),
            ("GET", "/.well-known/acme-challenge/tok-1_A/"),
            ("GET", "/tok-1_A"),
            ("POST", "/.well-known/acme-challenge/tok-1_A"),
        ] {
            let answer = get(server.addr, &req(method, path)).await;
            assert!(
                answer.starts_with("HTTP/1.1 404"),
                "{method} {path}: {answer}"
            );
        }
    }

    #[tokio::test]
    async fn orders_at_once_share_one_address_and_each_takes_its_tokens_back() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let first = Http01::start(addr).await.unwrap();
        let second = Http01::start(addr).await.unwrap();
        first.add("one", "one.k").unwrap();
        second.add("two", "two.k").unwrap();
        assert!(fetch_at(addr, "one").await.ends_with("one.k"));
        assert!(fetch_at(addr, "two").await.ends_with("two.k"));
        drop(first);
        assert!(fetch_at(addr, "one").await.starts_with("HTTP/1.1 404"));
        assert!(fetch_at(addr, "two").await.ends_with("two.k"));
        drop(second);
        // The last one out closed the listener: the port is free again.
        std::net::TcpListener::bind(addr).unwrap();
    }

    async fn fetch_at(addr: SocketAddr, token: &str) -> String {
        let request = format!(
            "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        get(addr, &request).await
    }

    #[tokio::test]
    async fn idle_connections_cannot_keep_the_ca_out() {
        let server = Http01::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        server.add("tok", "tok.thumb").unwrap();
        // 200 clients that connect and send nothing, from the CA's own
        // address (loopback, as in the tests against pebble).
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
        }
        let fetch = get(
            server.addr,
            "GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        );
        let answer = tokio::time::timeout(Duration::from_secs(2), fetch)
            .await
            .expect("the CA's request waited behind idle connections");
        assert!(answer.ends_with("tok.thumb"), "{answer}");
        drop(idle);
    }

    /// Connects from `source` (any of 127.0.0.0/8 is loopback).
    async fn connect_from(source: &str, to: SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap()
    }

    #[tokio::test]
    async fn a_flood_from_other_addresses_never_closes_the_cas_connection() {
        let server = Http01::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        server.add("tok", "tok.thumb").unwrap();
        // The CA has connected and its request is not read yet (a loaded
        // host): the oldest connection without a request.
        let mut ca = connect_from("127.0.0.1", server.addr).await;
        // 400 connections from 12 other addresses, each sending a little,
        // many times over both caps.
        let mut flood = Vec::new();
        for i in 0..400 {
            let mut s = connect_from(&format!("127.0.0.{}", 2 + i % 12), server.addr).await;
            let _ = s.write_all(b"GET /.well-known/").await;
            flood.push(s);
        }
        ca.write_all(b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(2), ca.read_to_string(&mut answer))
            .await
            .expect("no answer")
            .expect("the CA's connection was closed");
        assert!(answer.ends_with("tok.thumb"), "{answer:?}");
    }

    fn open_at(peer: &str, age_ms: u64, asked: bool) -> Open {
        Open {
            peer: peer.parse().unwrap(),
            since: Instant::now() - Duration::from_millis(age_ms),
            asked: Arc::new(AtomicBool::new(asked)),
            shed: Arc::new(Notify::new()),
        }
    }

    #[test]
    fn the_oldest_waiting_connection_of_the_busiest_address_is_shed() {
        let mut open: HashMap<u64, Open> = [
            (0, open_at("10.0.0.1", 900, false)),
            (1, open_at("10.0.0.2", 800, true)),
            (2, open_at("10.0.0.2", 500, false)),
            (3, open_at("10.0.0.2", 400, false)),
            (4, open_at("10.0.0.3", 300, false)),
        ]
        .into();
        // 10.0.0.2 has two waiting: its older one goes, not 10.0.0.1's
        // older one, and never the one that sent a request.
        assert!(shed_one(&mut open, None));
        assert!(!open.contains_key(&2));
        // Now 10.0.0.1, .2 and .3 have one each: the oldest goes.
        assert!(shed_one(&mut open, None));
        assert!(!open.contains_key(&0));
        // For one address: its own oldest waiting one.
        assert!(shed_one(&mut open, Some("10.0.0.2".parse().unwrap())));
        assert!(!open.contains_key(&3));
        assert!(!shed_one(&mut open, Some("10.0.0.2".parse().unwrap())));
        assert!(open.contains_key(&1));
        assert!(shed_one(&mut open, None));
        assert_eq!(open.keys().collect::<Vec<_>>(), [&1]);
        assert!(!shed_one(&mut open, None));
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let p = |s: &str| peer_of(s.parse().unwrap());
        assert_eq!(p("2001:db8:1:2:aaaa::1"), p("2001:db8:1:2:bbbb::9"));
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
        assert_eq!(p("::ffff:192.0.2.7"), p("192.0.2.7"));
        assert_ne!(p("192.0.2.7"), p("192.0.2.8"));
    }

    #[tokio::test]
    async fn tokens_outside_base64url_are_refused() {
        let server = Http01::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        for token in ["", "a/b", "a b", "..", "a\nb", &"a".repeat(257)] {
            let e = server.add(token, "x").unwrap_err();
            assert_eq!(e.code(), "Acme.Refused", "{token:?}");
        }
    }
}
