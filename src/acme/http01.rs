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
mod tests;
