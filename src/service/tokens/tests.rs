//! Spreading calls over tokens, with tokens that break and come back; the
//! tokens are counters, since only the choice of token is under test.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::issue::{CsrResponse, Timings};
use crate::request::ValidRequest;

#[derive(Default)]
struct Counted {
    sessions: usize,
    broken: AtomicBool,
}

impl Counted {
    fn new(sessions: usize) -> Arc<Counted> {
        Arc::new(Counted {
            sessions,
            ..Counted::default()
        })
    }
}

impl Sessions for Counted {
    fn total(&self) -> usize {
        self.sessions
    }
    fn sessions_open(&self) -> usize {
        self.sessions
    }
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
    fn token_name(&self) -> String {
        "counted".into()
    }
    fn health(&self) -> crate::Result<bool> {
        if self.is_broken() {
            Err(Error::Token {
                op: "reaching the token",
                token: "counted".into(),
                detail: "gone".into(),
            })
        } else {
            Ok(true)
        }
    }
    fn key_pool(&self) -> Option<PoolStats> {
        None
    }
    fn issue(
        &self,
        _: &ValidRequest,
        _: &str,
        _: &crate::quota::Caller,
        _: Option<&crate::audit::Trail<'_>>,
        _: &mut dyn FnMut(CsrResponse) -> bool,
    ) -> crate::Result<Option<Timings>> {
        unreachable!("only sessions are handed out here")
    }
    fn reopen(&self) -> crate::Result<()> {
        self.broken.store(false, Ordering::Relaxed);
        Ok(())
    }
    fn attach(
        &self,
        _: &crate::certificate::ParsedCertificate,
        _: &str,
        _: &crate::quota::Caller,
        _: &str,
        _: &mut dyn FnMut(&crate::attach::Attached) -> bool,
    ) -> crate::Result<Option<crate::attach::Attached>> {
        unreachable!("only sessions are handed out here")
    }
}

fn two(a: &Arc<Counted>, b: &Arc<Counted>) -> Tokens<Counted> {
    Tokens::new(vec![named(a, "a"), named(b, "b")])
}

fn named(sessions: &Arc<Counted>, name: &str) -> NamedSessions<Counted> {
    NamedSessions {
        sessions: Arc::clone(sessions),
        name: name.to_owned(),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[tokio::test]
async fn idle_tokens_take_calls_in_turn() {
    let (a, b) = (Counted::new(2), Counted::new(2));
    let tokens = two(&a, &b);
    let mut got = Vec::new();
    for _ in 0..6 {
        // Each permit is given back at once: both tokens stay idle.
        got.push(tokens.acquire(("k", 1), soon()).await.unwrap().0);
    }
    assert_eq!(got, [0, 1, 0, 1, 0, 1]);
}

#[tokio::test]
async fn the_least_busy_token_gets_the_call() {
    let (a, b) = (Counted::new(3), Counted::new(3));
    let tokens = two(&a, &b);
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(tokens.acquire(("k", 1), soon()).await.unwrap());
    }
    let on_a = held.iter().filter(|(lane, _)| *lane == 0).count();
    assert_eq!(on_a, 3, "three calls on each token");
    assert_eq!(tokens.busy(), 6);
    // Both full: the next caller waits, and gets the first permit back.
    held.retain(|(lane, _)| *lane == 0);
    assert_eq!(tokens.acquire(("k", 1), soon()).await.unwrap().0, 1);
}

#[tokio::test]
async fn a_broken_token_gets_no_calls_and_rejoins_once_reopened() {
    let (a, b) = (Counted::new(1), Counted::new(1));
    let tokens = two(&a, &b);
    a.broken.store(true, Ordering::Relaxed);
    for _ in 0..4 {
        assert_eq!(tokens.acquire(("k", 1), soon()).await.unwrap().0, 1);
    }
    let stats = tokens.stats();
    assert_eq!((stats[0].up, stats[1].up), (false, true));
    a.reopen().unwrap();
    let lanes: Vec<usize> = [
        tokens.acquire(("k", 1), soon()).await.unwrap(),
        tokens.acquire(("k", 1), soon()).await.unwrap(),
    ]
    .iter()
    .map(|(l, _)| *l)
    .collect();
    assert_eq!(lanes, [0, 1], "back in rotation");
}

#[tokio::test]
async fn no_token_in_rotation_is_unavailable_at_once() {
    let (a, b) = (Counted::new(1), Counted::new(1));
    let tokens = two(&a, &b);
    a.broken.store(true, Ordering::Relaxed);
    b.broken.store(true, Ordering::Relaxed);
    let far = Instant::now() + Duration::from_secs(3600);
    assert_eq!(
        tokens.acquire(("k", 1), far).await.err(),
        Some(NoSession::Unavailable)
    );
    let one = Tokens::new(vec![named(&a, "a")]);
    assert_eq!(
        one.acquire(("k", 1), far).await.err(),
        Some(NoSession::Unavailable)
    );
}

/// While the only healthy token is busy, a caller waits for it (it is not
/// sent to the broken one), and gives up at its deadline.
#[tokio::test]
async fn a_busy_healthy_token_is_waited_for_never_bypassed() {
    let (a, b) = (Counted::new(1), Counted::new(1));
    let tokens = Arc::new(two(&a, &b));
    a.broken.store(true, Ordering::Relaxed);
    let held = tokens.acquire(("k", 1), soon()).await.unwrap();
    assert_eq!(held.0, 1);
    let short = Instant::now() + Duration::from_millis(50);
    assert_eq!(
        tokens.acquire(("k", 1), short).await.err(),
        Some(NoSession::Timeout)
    );
    let waiter = {
        let tokens = Arc::clone(&tokens);
        tokio::spawn(async move { tokens.acquire(("k", 1), soon()).await.map(|(l, _)| l) })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(held);
    assert_eq!(waiter.await.unwrap(), Ok(1));
}

/// A token that rejoins wakes the callers waiting for a session, without
/// a call on another token having to end first.
#[tokio::test]
async fn a_token_that_rejoins_serves_the_waiting_callers() {
    let (a, b) = (Counted::new(2), Counted::new(1));
    let tokens = Arc::new(two(&a, &b));
    a.broken.store(true, Ordering::Relaxed);
    let _busy = tokens.acquire(("k", 1), soon()).await.unwrap();
    // The reconnect holds all of a's permits while a is broken.
    let reconnect = tokens.permit(
        Arc::clone(&tokens.lanes[0].permits)
            .try_acquire_many_owned(2)
            .unwrap(),
    );
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let tokens = Arc::clone(&tokens);
            tokio::spawn(async move { tokens.acquire(("k", 1), soon()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.reopen().unwrap();
    drop(reconnect);
    let mut held = Vec::new();
    for w in waiters {
        held.push(
            tokio::time::timeout(Duration::from_millis(200), w)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    assert!(held.iter().all(|(l, _)| *l == 0));
}

#[test]
fn health_says_which_token_is_down_and_serves_while_one_is_up() {
    let gone = || {
        Err(Error::Token {
            op: "C_GetSessionInfo",
            token: "b".into(),
            detail: "CKR_DEVICE_REMOVED".into(),
        })
    };
    let json = |(code, health): (u16, Health)| (code, serde_json::to_string(&health).unwrap());
    let (code, body) = json(health_body(&[
        (0, "a".into(), Ok(true)),
        (1, "b\"x".into(), gone()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        (v["Token"].as_str(), v["LoggedIn"].as_bool()),
        (Some("degraded"), Some(true))
    );
    assert_eq!(v["Tokens"][1]["Label"], "b\"x");
    assert_eq!(v["Tokens"][1]["Token"], "unreachable");
    assert_eq!(v["Tokens"][1]["Error"], "Token.Error");
    assert!(!body.contains("CKR_DEVICE_REMOVED"), "{body}");
    let (code, body) = json(health_body(&[(0, "a".into(), gone())]));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, v["Token"].as_str()), (503, Some("unreachable")));
    let (code, body) = json(health_body(&[(0, "a".into(), Ok(true))]));
    assert_eq!(code, 200);
    // The keys in the order the service always wrote them (serde_json's
    // sorted map, before /healthz became a struct).
    assert_eq!(
        body,
        r#"{"LoggedIn":true,"Token":"reachable","Tokens":[{"Index":0,"Label":"a","LoggedIn":true,"Token":"reachable"}]}"#
    );
    let (_, body) = json(health_body(&[(0, "a".into(), gone())]));
    assert_eq!(
        body,
        r#"{"Error":"Token.Error","LoggedIn":false,"Token":"unreachable","Tokens":[{"Error":"Token.Error","Index":0,"Label":"a","LoggedIn":false,"Token":"unreachable"}]}"#
    );
}

#[test]
fn names_cannot_break_a_line_or_grow() {
    assert_eq!(shown("a\nb\u{7}"), "a?b?");
    assert_eq!(shown(&"x".repeat(1000)).len(), 64);
}
