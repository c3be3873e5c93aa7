//! [`SessionPool::attach`]: a certificate attached on one of the pool's
//! sessions, as a request's CSR is made on one.

use std::sync::atomic::Ordering;

use super::{SessionPool, retry_on_lost_session};
use crate::attach::{Attached, attach_certificate};
use crate::certificate::ParsedCertificate;
use crate::error::{ErrorClass, Result};

impl SessionPool {
    /// Runs [`attach_certificate`] on an idle session, retried once on a
    /// fresh session when the token lost this one; None when no session is
    /// idle (the token is being reopened). A session that stops answering
    /// marks the pool for reconnecting, as [`Self::issue`] does.
    ///
    /// # Errors
    /// What [`attach_certificate`] failed with.
    pub fn attach(
        &self,
        cert: &ParsedCertificate,
        domain: &str,
        request_id: &str,
        deliver: &mut dyn FnMut(&Attached) -> bool,
    ) -> Result<Option<Attached>> {
        let Some(mut backend) = self.idle().pop() else {
            return Ok(None);
        };
        let done = retry_on_lost_session(
            &mut backend,
            |old| self.fresh_session(old),
            |backend| attach_certificate(backend, cert, Some(domain), request_id, deliver),
        );
        let check_session = done
            .as_ref()
            .is_err_and(|e| e.class() != ErrorClass::Request);
        if check_session && !matches!(backend.logged_in(), Ok(true)) {
            log::warn!("the session no longer answers; reconnecting to the token");
            self.broken.store(true, Ordering::Relaxed);
        }
        self.idle().push(backend);
        done.map(Some)
    }
}
