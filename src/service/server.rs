//! The accept loop of `hsm-csr serve`, for HTTP and HTTPS alike: HTTP/1.1
//! only (RFC 9112), at most a fixed number of connections at once, each
//! under the deadlines of [`super::deadline`], and a graceful stop.
//!
//! The connection limit is a semaphore taken before `accept`: when every
//! permit is held, further clients wait in the kernel's listen backlog
//! instead of being accepted and left hanging, and the process never runs
//! out of file descriptors for the token and its log.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::ServiceConfig;
use super::deadline::{Clock, Timeouts, Watched};
use crate::error::{Error, Result};

/// File descriptors kept free for everything but connections and token
/// sessions: stdio and the log, the listener, the runtime's own, and the
/// config and TLS files.
const RESERVED_FDS: u64 = 32;

/// File descriptors kept free per token session: SoftHSM2 opens an object
/// file and its lock file while it reads an object; a network HSM's module
/// holds a socket.
const FDS_PER_SESSION: u64 = 4;

/// How long accepting pauses after an error that is not the client's,
/// such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How serving ended after the stop signal.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out with connections still open; they are cut
    /// off when the runtime is dropped.
    DeadlinePassed,
}

/// `max_connections`, lowered to what the file-descriptor limit
/// (RLIMIT_NOFILE) allows once the process and its `sessions` token
/// sessions have theirs; and that limit.
fn connection_limit(max_connections: usize, sessions: usize) -> (usize, Option<u64>) {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let reserved = RESERVED_FDS.saturating_add(FDS_PER_SESSION.saturating_mul(sessions as u64));
    let allowed = soft.map_or(usize::MAX, |s| {
        usize::try_from(s.saturating_sub(reserved)).unwrap_or(usize::MAX)
    });
    let limit = max_connections
        .min(allowed)
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize)
        .max(1);
    (limit, soft)
}

/// Binds `[service] listen` and serves `router` there, over HTTPS when
/// `tls_cert` and `tls_key` are set, until SIGINT or SIGTERM; then lets
/// requests in flight finish for up to `shutdown_timeout_ms`.
///
/// # Errors
/// `Config.Invalid` when the address cannot be bound or the TLS files
/// cannot be used.
pub async fn run(config: &ServiceConfig, sessions: usize, router: Router) -> Result<Stopped> {
    let addr: SocketAddr = config
        .listen
        .parse()
        .map_err(|e| Error::Config(format!("[service] listen {:?}: {e}", config.listen)))?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(super::tls::acceptor(cert, key)?),
        _ => {
            return Err(Error::Config(
                "[service] tls_cert and tls_key go together.".into(),
            ));
        }
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    log::info!("listening on {scheme}://{addr} (HTTP/1.1)");
    let (max_connections, fd_limit) = connection_limit(config.max_connections, sessions);
    let fd_limit = fd_limit.map_or("unlimited".to_owned(), |n| n.to_string());
    log::info!(
        "accepting at most {max_connections} connections at once \
         ([service] max_connections {}, file-descriptor limit {fd_limit})",
        config.max_connections
    );
    if max_connections < config.max_connections {
        log::warn!(
            "the file-descriptor limit ({fd_limit}) allows fewer connections than \
             max_connections; raise it (ulimit -n, systemd LimitNOFILE=) to serve more"
        );
    }
    let grace = Duration::from_millis(config.shutdown_timeout_ms);
    let serving = Serving {
        router,
        tls,
        timeouts: Timeouts {
            header: Duration::from_millis(config.header_timeout_ms),
            idle: Duration::from_millis(config.idle_timeout_ms),
        },
        max_connections,
    };
    let stop = async move {
        shutdown_signal().await;
        log::info!(
            "stopping: no new requests; requests in flight have {} ms to finish",
            grace.as_millis()
        );
    };
    Ok(serve(listener, serving, stop, grace).await)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// What every connection shares.
#[derive(Clone)]
struct Serving {
    /// The application.
    router: Router,
    /// TLS, or None for plain HTTP.
    tls: Option<TlsAcceptor>,
    /// The per-connection deadlines.
    timeouts: Timeouts,
    /// Most connections open at once (see [`connection_limit`]).
    max_connections: usize,
}

/// Accepts connections on `listener` until `stop` completes, then lets
/// open connections finish their requests for up to `grace`.
async fn serve(
    listener: TcpListener,
    serving: Serving,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Stopped {
    let permits = Arc::new(Semaphore::new(serving.max_connections));
    let (stopping, stopped) = watch::channel(false);
    tokio::pin!(stop);
    let mut backing_off = false;
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        match accepted {
            Ok((stream, permit)) => {
                if std::mem::take(&mut backing_off) {
                    log::warn!("accepting connections again");
                }
                let serving = serving.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    connection(stream, serving, stopped).await;
                    drop(permit);
                });
            }
            Err(e) if is_the_clients(&e) => log::debug!("accept: {e}"),
            Err(e) => {
                if !std::mem::replace(&mut backing_off, true) {
                    log::warn!(
                        "cannot accept connections ({e}); retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    // New clients are refused from here on.
    drop(listener);
    let _ = stopping.send(true);
    let all = u32::try_from(serving.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, permits.acquire_many(all)).await {
        Ok(_) => Stopped::Drained,
        Err(_) => Stopped::DeadlinePassed,
    }
}

/// The next connection, once a permit for it is free.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> io::Result<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("connection limit closed"))?;
    let (stream, _) = listener.accept().await?;
    Ok((stream, permit))
}

/// Errors that concern one client only: accept the next one at once.
fn is_the_clients(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// One connection: the TLS handshake if any, then HTTP/1.1 until the client
/// leaves, a deadline passes, or the service stops.
async fn connection(
    stream: tokio::net::TcpStream,
    serving: Serving,
    mut stopped: watch::Receiver<bool>,
) {
    let clock = Clock::new(Instant::now(), serving.timeouts);
    let _ = stream.set_nodelay(true);
    match &serving.tls {
        None => http(stream, serving.router, clock, stopped).await,
        Some(acceptor) => {
            // The handshake counts towards the first request's header timeout.
            let deadline = clock.read_deadline().unwrap_or_else(Instant::now);
            let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return log::debug!("TLS handshake failed: {e}"),
                    Err(_) => return log::debug!("TLS handshake timed out"),
                },
                _ = stopped.wait_for(|s| *s) => return,
            };
            http(tls, serving.router, clock, stopped).await;
        }
    }
}

async fn http<S>(io: S, router: Router, clock: Arc<Clock>, mut stopped: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(router);
    let marks = Arc::clone(&clock);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        marks.request_started();
        let answer = hyper::service::Service::call(&app, request);
        let marks = Arc::clone(&marks);
        async move {
            let response = answer.await;
            marks.response_ready();
            response
        }
    });
    let mut builder = http1::Builder::new();
    // The timer is set for hyper's own use; its header timeout is replaced
    // by [`Watched`] (see super::deadline for why).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(Watched::new(io, clock)), service);
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return finished(done),
        _ = stopped.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    finished(conn.await);
}

fn finished(done: hyper::Result<()>) {
    if let Err(e) = done {
        log::debug!("connection closed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};

    use super::*;

    #[test]
    fn the_limit_stays_below_the_file_descriptor_limit() {
        let (limit, soft) = connection_limit(usize::MAX, 2);
        if let Some(soft) = soft {
            assert!((limit as u64) <= soft.saturating_sub(RESERVED_FDS + 2 * FDS_PER_SESSION));
        }
        assert!(limit >= 1);
        assert_eq!(connection_limit(0, 2).0, 1);
    }

    #[tokio::test]
    async fn clients_over_the_limit_wait_until_a_connection_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Serving {
            router: Router::new().route("/", axum::routing::get(|| async { "hi" })),
            tls: None,
            timeouts: Timeouts {
                header: Duration::from_millis(300),
                idle: Duration::from_millis(300),
            },
            max_connections: 1,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve(listener, serving, stopped, Duration::from_secs(10)));
        let (answer, first_open) = tokio::task::spawn_blocking(move || {
            // Takes the only slot and sends nothing.
            let mut first = std::net::TcpStream::connect(addr).unwrap();
            let mut second = std::net::TcpStream::connect(addr).unwrap();
            second
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            second
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut answer = String::new();
            let _ = second.read_to_string(&mut answer);
            first.set_nonblocking(true).unwrap();
            let first_open =
                matches!(first.read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
            (answer, first_open)
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(
            !first_open,
            "the second client was served while the first held the slot"
        );
        let _ = stop.send(());
        assert_eq!(server.await.unwrap(), Stopped::Drained);
    }
}
