//! [`SessionPool::attach`]: a certificate attached on one of the pool's
//! sessions, as a request's CSR is made on one.

use super::SessionPool;
use crate::attach::{AttachPolicy, Attached, attach_certificate};
use crate::certificate::ParsedCertificate;
use crate::error::Result;
use crate::quota::Caller;

impl SessionPool {
    /// Runs [`attach_certificate`] for `caller` on an idle session (see
    /// `Self::on_session`); None when no session is idle (the token is
    /// being reopened).
    ///
    /// # Errors
    /// What [`attach_certificate`] failed with.
    pub fn attach(
        &self,
        cert: &ParsedCertificate,
        domain: &str,
        caller: &Caller,
        request_id: &str,
        deliver: &mut dyn FnMut(&Attached) -> bool,
    ) -> Result<Option<Attached>> {
        let policy = AttachPolicy::now(caller.max_certificates_per_key);
        self.on_session(|backend| {
            attach_certificate(
                backend,
                cert,
                Some(domain),
                &caller.principal,
                policy,
                request_id,
                deliver,
            )
        })
    }
}
