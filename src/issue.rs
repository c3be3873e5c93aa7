//! The one operation: validate, make a key pair on the token, sign the
//! CertificationRequestInfo there, return the API's response.
//!
//! Atomic: once the key pair exists, any failure removes it before the
//! error is returned, and a [`PendingCsr`] that is dropped without
//! [`PendingCsr::commit`] removes it too, so a response that could not be
//! delivered leaves nothing behind on the token.
//!
//! With an audit [`Trail`], each step is recorded ([`crate::audit`]): the
//! key's creation as soon as it exists, its delivery before the response
//! is released ([`PendingCsr::record_delivery`]), its removal. When an
//! event cannot be written, the key pair is removed and the request fails.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::{EventKind, Trail};
use crate::backend::{GeneratedKey, KeyBackend, KeySpec};
use crate::csr;
use crate::error::Result;
use crate::fingerprint;
use crate::request::ValidRequest;
use crate::verify;

mod options;
mod rollback;

pub use options::{KeyOptions, ValidKeyOptions};
use rollback::{record_rollback, undo};

/// The API response, field names as the API spells them, plus `KeyUri`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CsrResponse {
    /// Uppercase UUID of this request.
    pub request_id: String,
    /// Lowercase hex MD5 of the DER SubjectPublicKeyInfo (see [`crate::fingerprint`]).
    pub pub_md5: String,
    /// The CSR as PEM with `\n` line ends.
    pub csr: String,
    /// The common name as the caller sent it (the subject carries its
    /// A-label form; see docs/csr-rules.md).
    pub common_name: String,
    /// RFC 7512 URI of the new private key.
    pub key_uri: String,
}

/// Where the time went, for `--timings` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// C_GenerateKeyPair plus reading the public key back.
    pub keygen: Duration,
    /// C_Sign.
    pub sign: Duration,
    /// Building the CertificationRequestInfo, verifying the signature on the
    /// host, and building the CSR, its PEM and PubMd5.
    pub encode: Duration,
}

/// A fresh uppercase UUID, as the API's `RequestId`.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()
}

/// A CSR whose key pair exists on the token but whose response has not been
/// delivered yet. Dropping it removes the key pair; [`Self::commit`] keeps it.
#[must_use = "dropping a PendingCsr removes its key pair; call commit() once the response is delivered"]
pub struct PendingCsr<'b> {
    backend: &'b mut dyn KeyBackend,
    key: Option<GeneratedKey>,
    response: CsrResponse,
    timings: Timings,
    audit: Option<Trail<'b>>,
    /// Whether the pair has its final identity ([`KeyBackend::settle`]).
    settled: bool,
}

impl std::fmt::Debug for PendingCsr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCsr")
            .field("response", &self.response)
            .finish_non_exhaustive()
    }
}

impl PendingCsr<'_> {
    /// The response to deliver.
    pub fn response(&self) -> &CsrResponse {
        &self.response
    }

    /// The new key's DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        self.key.as_ref().map_or(&[], |k| &k.spki_der)
    }

    /// Phase durations.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Records the `delivered` event, when there is an audit trail; call it
    /// right before the response is released, then [`Self::commit`].
    ///
    /// # Errors
    /// `Internal.Error` ([`crate::Error::Audit`]) when the event cannot be
    /// written: the key pair has then been removed.
    pub fn record_delivery(mut self) -> Result<Self> {
        if let Some(trail) = &self.audit {
            let r = &self.response;
            let delivered = trail.event(EventKind::Delivered, &r.request_id).key(
                Some(&r.common_name),
                &r.pub_md5,
                &r.key_uri,
            );
            if let Err(e) = trail.record(delivered) {
                return Err(match self.key.take() {
                    Some(key) => undo(&mut *self.backend, &key, Some(trail), r, e),
                    None => e,
                });
            }
        }
        self.settle()?;
        Ok(self)
    }

    /// Gives the pair its final identity, once: from here a crash leaves a
    /// key its caller may hold, so this comes after its `delivered` event
    /// and before its answer is released. Until then the pair keeps its
    /// "not yet delivered" mark, and a crash leaves a key that a sweep
    /// removes.
    ///
    /// # Errors
    /// The backend's; the key pair has then been removed.
    fn settle(&mut self) -> Result<()> {
        if self.settled {
            return Ok(());
        }
        let Some(key) = self.key.take() else {
            return Ok(());
        };
        match self.backend.settle(&key) {
            Ok(()) => {
                self.key = Some(key);
                self.settled = true;
                Ok(())
            }
            Err(e) => Err(undo(
                &mut *self.backend,
                &key,
                self.audit.as_ref(),
                &self.response,
                e,
            )),
        }
    }

    /// Stores a certificate issued for the new key beside it, before the
    /// pair is committed (see [`KeyBackend::store_certificate`]).
    ///
    /// # Errors
    /// The backend's.
    pub fn store_certificate(&mut self, cert_der: &[u8]) -> Result<()> {
        match &self.key {
            Some(key) => self.backend.store_certificate(key, cert_der),
            None => Err(crate::Error::Internal(
                "the key pair is already settled".into(),
            )),
        }
    }

    /// The response was delivered: keep the key pair on the token (giving
    /// it its final identity, if [`Self::record_delivery`] did not), and
    /// let the backend forget it ([`KeyBackend::forget`]).
    ///
    /// # Errors
    /// When the final identity cannot be given; the pair has then been
    /// removed.
    pub fn commit(mut self) -> Result<CsrResponse> {
        self.settle()?;
        if let Some(key) = self.key.take() {
            self.backend.forget(&key);
        }
        Ok(std::mem::take(&mut self.response))
    }

    /// The response could not be delivered: remove the key pair, reporting
    /// whether that worked.
    ///
    /// # Errors
    /// The backend's error when the pair cannot be removed.
    pub fn rollback(mut self) -> Result<()> {
        match self.key.take() {
            Some(key) => {
                let removed = self.backend.destroy(&key);
                self.record_rollback(&removed, "NotDelivered");
                removed
            }
            None => Ok(()),
        }
    }

    /// Records `rolled_back` (best effort: the key is gone either way).
    fn record_rollback(&self, removed: &Result<()>, cause: &str) {
        if let Some(trail) = &self.audit {
            record_rollback(trail, &self.response, removed, cause);
        }
    }
}

impl Drop for PendingCsr<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let removed = self.backend.destroy(&key);
            if let Err(e) = &removed {
                log::error!("could not remove undelivered key pair {}: {e}", key.uri);
            }
            self.record_rollback(&removed, "NotDelivered");
        }
    }
}

/// Makes the key pair and the CSR, but leaves the decision to keep the key
/// to the caller (see [`PendingCsr`]). With an `audit` trail, records
/// `created` (and, on failure, `rolled_back`) in it.
///
/// # Errors
/// `Internal.KeyError`, `Internal.EncodeKeyError`, `Internal.CreateCSRError`,
/// `Internal.EncodeCSRError` or a token error; `Internal.Error`
/// ([`crate::Error::Audit`]) when the `created` event cannot be written.
/// The key pair, if one was made, has been removed.
pub fn prepare_csr<'b>(
    backend: &'b mut dyn KeyBackend,
    request: &ValidRequest,
    key_options: &ValidKeyOptions,
    request_id: String,
    audit: Option<Trail<'b>>,
) -> Result<PendingCsr<'b>> {
    let alg = key_options.signature();
    let spec = KeySpec {
        key_type: key_options.key_type(),
        signature: alg,
        label: key_options.label_for(request),
        undelivered_label: format!("{}undelivered", key_options.label_prefix()),
        owner: key_options.owner().cloned(),
    };

    let t = Instant::now();
    let key = backend.generate(&spec)?;
    let mut timings = Timings {
        keygen: t.elapsed(),
        ..Timings::default()
    };
    // What the audit events say about the key before the CSR exists.
    let named = CsrResponse {
        request_id: request_id.clone(),
        pub_md5: fingerprint::pub_md5(&key.spki_der),
        common_name: request.subject.common_name.clone(),
        key_uri: key.uri.clone(),
        csr: String::new(),
    };
    if let Some(trail) = &audit {
        let created = trail.event(EventKind::Created, &request_id).key(
            Some(&named.common_name),
            &named.pub_md5,
            &named.key_uri,
        );
        if let Err(e) = trail.record(created) {
            return Err(undo(backend, &key, Some(trail), &named, e));
        }
    }

    let build = |backend: &mut dyn KeyBackend, timings: &mut Timings| -> Result<CsrResponse> {
        let t = Instant::now();
        let (info, tbs) = csr::certification_request_info(request, &key.spki_der)?;
        let encode_before = t.elapsed();

        let t = Instant::now();
        let raw = backend.sign(&key, alg, &tbs)?;
        timings.sign = t.elapsed();

        let t = Instant::now();
        let signature = alg.encode_signature(&raw)?;
        verify::token_signature(key.key_type, alg, &key.spki_der, &tbs, &signature)?;
        let der = csr::assemble(info, alg, &signature)?;
        let response = CsrResponse {
            request_id,
            pub_md5: fingerprint::pub_md5(&key.spki_der),
            csr: csr::to_pem(&der),
            common_name: request.common_name.clone(),
            key_uri: key.uri.clone(),
        };
        timings.encode = encode_before + t.elapsed();
        Ok(response)
    };
    match build(backend, &mut timings) {
        Ok(response) => Ok(PendingCsr {
            backend,
            key: Some(key),
            response,
            timings,
            audit,
            settled: false,
        }),
        Err(e) => Err(undo(backend, &key, audit.as_ref(), &named, e)),
    }
}

/// The delivery protocol of a front end that hands the response to
/// someone else (`serve`'s connection): `deliver` offers it and says
/// whether it will be taken; then the key's delivery is recorded, the key
/// takes its final identity and is kept ([`PendingCsr::record_delivery`],
/// [`PendingCsr::commit`]), all before `deliver`'s taker may release the
/// response; otherwise the key is removed. Returns the phase durations.
///
/// # Errors
/// When recording the delivery or settling the key fails; the key has
/// then been removed.
pub(crate) fn hand_over(
    pending: PendingCsr<'_>,
    deliver: &mut dyn FnMut(CsrResponse) -> bool,
) -> Result<Timings> {
    let timings = pending.timings();
    if deliver(pending.response().clone()) {
        pending.record_delivery()?.commit()?;
    } else if let Err(e) = pending.rollback() {
        log::error!("could not remove an undelivered key pair: {e}");
    } else {
        log::warn!("nobody took the response (timeout or shutdown); its key pair was removed");
    }
    Ok(timings)
}

/// Makes the key pair and the CSR and keeps the key: [`prepare_csr`]
/// followed by [`PendingCsr::record_delivery`] and [`PendingCsr::commit`].
/// With an `audit` trail, records `created`, then `delivered` before the
/// response is returned.
///
/// # Errors
/// As [`prepare_csr`] and [`PendingCsr::record_delivery`].
pub fn issue_csr(
    backend: &mut dyn KeyBackend,
    request: &ValidRequest,
    key_options: &ValidKeyOptions,
    request_id: String,
    audit: Option<Trail<'_>>,
) -> Result<CsrResponse> {
    prepare_csr(backend, request, key_options, request_id, audit)?
        .record_delivery()?
        .commit()
}

#[cfg(test)]
mod audit_tests;

#[cfg(test)]
mod tests;
