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
