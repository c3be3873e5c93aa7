//! `hsm-csr serve`: log in once, then answer the cloud's RPC API. This
//! reads the flags and opens the tokens; the service is assembled and run
//! by the library ([`crate::service::builder`]).

use crate::Result;
use crate::service::builder::{OpenedToken, ServiceBuilder};
use crate::session_pool::Reconnect;

use super::{ServeArgs, token};

/// Runs the service until SIGINT/SIGTERM.
pub(crate) fn run(args: &ServeArgs) -> Result<()> {
    let config = token::load_config(&args.token)?;
    // The whole configuration, secrets included, is checked before the
    // token is opened: a mistake there must not cost a login.
    let builder = ServiceBuilder::new(&config, args.listen.as_deref())?;
    let targets = token::targets(&args.token, &config)?;
    // Every token is opened (and logged in to) before any pool starts: a
    // wrong PIN or a missing token stops the start, naming it. A wrong PIN
    // stops it after one C_Login: never retried.
    let mut tokens = Vec::with_capacity(targets.len());
    for target in &targets {
        let opened = token::open(target, &args.token)?;
        tokens.push(OpenedToken {
            backend: opened.backend,
            reconnect: Reconnect {
                module: target.module.clone(),
                selector: target.selector.clone(),
                pin: opened.pin,
            },
            name: target.display_name(),
        });
    }
    builder.serve(tokens)
}
