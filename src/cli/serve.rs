//! `hsm-csr serve`: log in once, then answer the cloud's RPC API.

use std::sync::Arc;

use hsm_csr::backend::pkcs11::pool::KeyPool;
use hsm_csr::backend::pkcs11::session_pool::{Reconnect, SessionPool};
use hsm_csr::service::coordination::RedisCoordinator;
use hsm_csr::service::{AccessKeys, Service};
use hsm_csr::{Error, Result};

use super::{ServeArgs, token};

/// Runs the service until SIGINT/SIGTERM.
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
    let keys = AccessKeys::load(&service_config.access_keys)?;
    if let (Some(cert), Some(key)) = (&service_config.tls_cert, &service_config.tls_key) {
        hsm_csr::service::tls::acceptor(cert, key)?;
    }
    let target = token::target(&args.token, &config)?;
    // A wrong PIN stops the start here, after one C_Login: never retried.
    let opened = token::open(&target, &args.token, &config)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = if service_config.workers == 0 {
        cores
    } else {
        service_config.workers
    };
    let pool = if config.pool.size > 0 {
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
        Some(Arc::new(KeyPool::new(
            config.pool.size,
            pool_type,
            format!("{}pool:unassigned", key_options.label_prefix()),
        )))
    } else {
        None
    };
    let mut backend = opened.backend;
    let lease = match hsm_csr::service::redis::client(&service_config)? {
        Some(client) => {
            let coordinator = Arc::new(RedisCoordinator::new(
                client,
                &service_config.redis_key_prefix,
            ));
            if let Err(e) = coordinator.refresh_lease() {
                log::warn!(
                    "{e}: pooled keys are not shared and no key is delivered until it answers"
                );
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            backend.set_coordinator(Arc::clone(&coordinator) as _);
            Some((coordinator.keep_lease(Arc::clone(&stop)), stop))
        }
        None => None,
    };
    let sessions = Arc::new(SessionPool::open(
        backend,
        wanted,
        Reconnect {
            module: target.module.clone(),
            selector: target.selector.clone(),
            pin: opened.pin,
        },
        key_options,
        pool,
    )?);
    sessions.start_key_pool()?;
    let service = Arc::new(Service::new(
        Arc::clone(&sessions),
        service_config,
        keys,
        config.subject.defaults.clone(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("tokio runtime: {e}")))?;
    let served = runtime.block_on(service.serve());
    // Cancels the handlers cut off by the shutdown deadline and waits for
    // their workers, which remove the key pairs nobody received.
    drop(runtime);
    sessions.close();
    if let Some((thread, stop)) = lease {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = thread.join();
    }
    served
}
