//! A token at a distance, for scripts/netbench.sh: relays a unix socket
//! (where `P11_KIT_SERVER_ADDRESS` points hsm-csr's p11-kit client) to
//! another (where `p11-kit server` listens), holding everything it reads
//! for a fixed delay in each direction before passing it on, in order, as
//! a network of that one-way latency would. A PKCS#11 call through p11-kit
//! is one request and one answer, so each call costs one round trip: twice
//! the delay.
//!
//! ```text
//! relay LISTEN_SOCKET UPSTREAM_SOCKET ONE_WAY_DELAY_MS
//! ```
//!
//! Local sockets only; it runs until killed (the script stops it).

#![allow(unreachable_pub, reason = "a test or example crate has no public API")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test (or example) that cannot go on fails on the spot, an index out of range included"
)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, delay] = args.as_slice() else {
        eprintln!("usage: relay LISTEN_SOCKET UPSTREAM_SOCKET ONE_WAY_DELAY_MS");
        std::process::exit(2);
    };
    let delay: f64 = delay.parse().expect("ONE_WAY_DELAY_MS: a number");
    let delay = Duration::from_secs_f64(delay / 1000.0);
    let _ = std::fs::remove_file(listen);
    let listener = UnixListener::bind(listen).expect("bind the listening socket");
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = UnixStream::connect(upstream) else {
            eprintln!("relay: cannot reach {upstream}");
            continue;
        };
        for (from, to) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server, client),
        ] {
            pipe(from, to, delay);
        }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn pipe(mut from: UnixStream, mut to: UnixStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
