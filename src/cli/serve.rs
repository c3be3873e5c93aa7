//! `hsm-csr serve`: log in once, then answer the cloud's RPC API.

use std::sync::Arc;

use hsm_csr::backend::pkcs11::pool::KeyPool;
use hsm_csr::service::coordination::RedisCoordinator;
use hsm_csr::service::{AccessKeys, Service};
use hsm_csr::session_pool::{Reconnect, SessionPool};
use hsm_csr::{Error, Result};

use super::{ServeArgs, token};

/// Runs the service until SIGINT/SIGTERM.
#[allow(
    clippy::too_many_lines,
    reason = "assembles the whole service; that assembly is to move into the library as a builder, which will split it"
)]
pub fn run(args: &ServeArgs) -> Result<()> {
    let config = token::load_config(&args.token)?;
    let mut service_config = config.service.clone();
    if let Some(listen) = &args.listen {
        listen.parse::<std::net::SocketAddr>().map_err(|_| {
            Error::Config(format!(
                "--listen {listen:?} must be an IP address and port, such as 127.0.0.1:8080 or [::1]:8080."
            ))
        })?;
        service_config.listen = listen.clone();
    }
    let key_options = config.key.options().validate()?;
    // The whole configuration, secrets included, is checked before the
    // token is opened: a mistake there must not cost a login.
    let keys = AccessKeys::load(
        &service_config.access_keys,
        service_config.max_certificates_per_key,
    )?;
    let shared_state = hsm_csr::service::redis::client(&service_config)?;
    if let (Some(cert), Some(key)) = (&service_config.tls_cert, &service_config.tls_key) {
        hsm_csr::service::tls::acceptor(cert, key)?;
    }
    let targets = token::targets(&args.token, &config)?;
    let audit_log = config.audit.open()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = if service_config.workers == 0 {
        cores
    } else {
        service_config.workers
    };
    // With Redis, every replica holds a lease there, and pool claims and
    // sweeps of keys left undelivered by dead replicas go through it.
    let coordination = match &shared_state {
        Some(client) => {
            let coordinator = Arc::new(RedisCoordinator::new(
                client.clone(),
                &service_config.redis_key_prefix,
            ));
            if let Err(e) = coordinator.refresh_lease() {
                log::warn!(
                    "{e}: pooled keys are not shared and no key is delivered until it answers"
                );
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let thread = coordinator.keep_lease(Arc::clone(&stop));
            Some((coordinator, (thread, stop)))
        }
        None => None,
    };
    // Every token is opened (and logged in to) before any pool starts: a
    // wrong PIN or a missing token stops the start, naming it.
    let mut tokens: Vec<(Arc<SessionPool>, String)> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        // A wrong PIN stops the start here, after one C_Login: never retried.
        let opened = token::open(target, &args.token)?;
        let identity = (
            opened.backend.token_label().to_owned(),
            opened.backend.token_serial().to_owned(),
        );
        if let Some(earlier) = seen.iter().position(|s| *s == identity) {
            return Err(Error::Config(format!(
                "[[tokens]] number {} and number {} reach the same token (label {:?}, serial {:?}): list each token once.",
                earlier + 1,
                i + 1,
                identity.0,
                identity.1
            )));
        }
        seen.push(identity);
        let mut backend = opened.backend;
        // Objects on each token show in /metrics, with or without max_objects.
        backend.count_objects_for_metrics()?;
        if let Some((coordinator, _)) = &coordination {
            backend.set_coordinator(Arc::clone(coordinator) as _);
        }
        let mut sessions = SessionPool::open(
            backend,
            share(workers, targets.len(), i),
            Reconnect {
                module: target.module.clone(),
                selector: target.selector.clone(),
                pin: opened.pin,
            },
            key_options.clone(),
            key_pool(&config, &key_options)?,
        )?;
        sessions.keep_inventory(&config.retention, audit_log.clone());
        tokens.push((Arc::new(sessions), target.display_name()));
    }
    for (sessions, _) in &tokens {
        sessions.start_key_pool()?;
    }
    let pools: Vec<Arc<SessionPool>> = tokens.iter().map(|(s, _)| Arc::clone(s)).collect();
    let mut service = Service::with_tokens(
        tokens,
        service_config,
        keys,
        config.subject.defaults.clone(),
    )
    .with_audit(audit_log);
    if let Some(client) = shared_state {
        service = service.with_shared_state(client);
    }
    let service = Arc::new(service);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("tokio runtime: {e}")))?;
    let served = runtime.block_on(service.serve());
    // Cancels the handlers cut off by the shutdown deadline and waits for
    // their workers, which remove the key pairs nobody received.
    drop(runtime);
    for sessions in pools {
        sessions.close();
    }
    if let Some((_, (thread, stop))) = coordination {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = thread.join();
    }
    served
}

/// Token `i`'s share of `workers` over `n` tokens: as even as it gets, at
/// least one each.
fn share(workers: usize, n: usize, i: usize) -> usize {
    (workers / n + usize::from(i < workers % n)).max(1)
}

/// A key pool for one token, when `[pool] size` asks for one.
fn key_pool(
    config: &hsm_csr::config::Config,
    key_options: &hsm_csr::issue::ValidKeyOptions,
) -> Result<Option<Arc<KeyPool>>> {
    if config.pool.size == 0 {
        return Ok(None);
    }
    let pool_type = match &config.pool.key_type {
        Some(t) => t.with_bits(config.key.bits),
        None => key_options.key_type(),
    };
    if pool_type != key_options.key_type() {
        return Err(Error::Config(format!(
            "[pool] key_type {pool_type} differs from [key] type {}: its keys would never be used.",
            key_options.key_type()
        )));
    }
    Ok(Some(Arc::new(KeyPool::new(
        config.pool.size,
        pool_type,
        format!("{}pool:unassigned", key_options.label_prefix()),
    ))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn workers_are_spread_evenly_at_least_one_each() {
        let shares = |w, n| (0..n).map(|i| super::share(w, n, i)).collect::<Vec<_>>();
        assert_eq!(shares(4, 2), [2, 2]);
        assert_eq!(shares(5, 2), [3, 2]);
        assert_eq!(shares(1, 3), [1, 1, 1]);
        assert_eq!(shares(8, 1), [8]);
    }
}
