//! `hsm-csr serve`: log in once, then answer the cloud's RPC API.

use std::sync::Arc;

use hsm_csr::service::Service;
use hsm_csr::{Error, Result};

use super::{ServeArgs, token};

/// Runs the service until SIGINT/SIGTERM.
pub fn run(args: &ServeArgs) -> Result<()> {
    let config = token::load_config(&args.token)?;
    let mut service_config = config.service.clone();
    if let Some(listen) = &args.listen {
        service_config.listen = listen.clone();
    }
    let key_options = config.key.options()?;
    let target = token::target(&args.token, &config)?;
    // A wrong PIN stops the start here, after one C_Login: never retried.
    let opened = token::open(&target, &args.token, &config)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = if service_config.workers == 0 {
        cores
    } else {
        service_config.workers
    };
    let cap = opened
        .backend
        .max_rw_sessions()
        .map_or(wanted, |m| (m as usize).max(1));
    let workers = wanted.min(cap);
    let mut backends = vec![opened.backend];
    for _ in 1..workers {
        // The login belongs to the application, not the session: extra
        // sessions start logged in, and C_Login is not called again.
        backends.push(backends[0].another_session()?);
    }
    log::info!(
        "{workers} worker session(s) on token {:?}",
        backends[0].token_label()
    );
    let service = Arc::new(Service::new(
        backends,
        service_config,
        key_options,
        config.subject.defaults.clone(),
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("tokio runtime: {e}")))?;
    runtime.block_on(service.serve())
}
