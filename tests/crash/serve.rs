//! `serve`, with and without a key pool, killed under load.

use super::{Plan, Signal, Tally, TokenObject, hsm_csr_pid, runs, signal, slowing};
use crate::common::Token;
use crate::common::server::{Launch, Server};
use crate::durable::Load;

/// Runs of `serve` under three callers' load, each killed 30 ms to 1.5 s
/// in; then one clean start and stop on the token.
fn killed(mode: &str, pool: &str) {
    let Some(token) = Token::private_softhsm("kills serve and counts every key on the token")
    else {
        return;
    };
    let audit = token.dir().join("audit.jsonl");
    let top = format!("{pool}[audit]\npath = \"{}\"\n", audit.display());
    let mut plan = Plan::new();
    let mut tally = Tally::default();
    let token_object = TokenObject::of(&token);
    for i in 0..runs() {
        let (sig, slowed) = Plan::run(i);
        let wrapper = if slowed { slowing(&audit) } else { Vec::new() };
        let server = Server::launch_on(
            &token,
            &Server::config(&token, "ec-p256", "workers = 3").extra(&top),
            &Launch {
                wrapper: &wrapper,
                ..Launch::default()
            },
        );
        let target = hsm_csr_pid(server.pid());
        let load = Load::start(std::slice::from_ref(&server.addr), 3, usize::MAX);
        std::thread::sleep(plan.delay(30, 1500));
        signal(target, sig);
        if let Signal::Int = sig {
            super::ended_within(target, 30, "serve after SIGINT");
        }
        server.wait();
        let (answered, _) = load.finish_with_unanswered();
        tally.ran(sig, slowed, &token_object);
        tally.received(answered);
    }
    Server::start_with(&token, "ec-p256", "", &top).stop();
    tally.check(mode, &plan, &token, &audit);
}

#[test]
fn serve_killed_anywhere_leaves_only_received_keys() {
    killed("serve", "");
}

#[test]
fn serve_with_a_pool_killed_anywhere_leaves_only_received_and_pool_keys() {
    killed("serve --pool", "[pool]\nsize = 6\n");
}
