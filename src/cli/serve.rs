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
    let service = Arc::new(Service::new(
        opened.backend,
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
