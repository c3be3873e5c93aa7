//! HTTPS to the CA: the client instant-acme would build (hyper with
//! rustls, the platform's roots or `--ca-root`), wrapped to read what
//! instant-acme drops: the `Retry-After` of a `429 Too Many Requests`
//! (RFC 8555 section 6.6: "the server MAY include a Retry-After header
//! field"), which [`rate_limited_for`] hands to the run that was refused.

use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

thread_local! {
    /// The last 429's Retry-After on this thread, until taken. Each order
    /// runs on its own thread's current-thread runtime (`acme renew
    /// --jobs` gives each worker a thread), so a worker reads its own.
    static RATE_LIMITED: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// How long the CA asked to wait in the last 429 this thread's orders got
/// (its `Retry-After`, in seconds or as an HTTP date), if one came since
/// the last call.
pub(crate) fn rate_limited_for() -> Option<Duration> {
    RATE_LIMITED.with(Cell::take)
}

type Inner = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The client, with the CA's 429s noted.
pub(super) struct Client(Arc<Inner>);

impl Client {
    /// Trusting `root` (PEM) alone, or the platform's roots.
    ///
    /// # Errors
    /// What stood in the way, as text.
    pub(super) fn new(root: Option<&Path>) -> std::result::Result<Client, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match root {
            Some(root) => {
                let der = CertificateDer::from_pem_file(root).map_err(|e| e.to_string())?;
                let mut roots = rustls::RootCertStore::empty();
                roots.add(der).map_err(|e| e.to_string())?;
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None => builder
                .try_with_platform_verifier()
                .map_err(|e| e.to_string())?,
        };
        let connector = builder.https_only().enable_http1().enable_http2().build();
        Ok(Client(Arc::new(
            HyperClient::builder(TokioExecutor::new()).build(connector),
        )))
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let answer = HttpClient::request(&*self.0, req);
        Box::pin(async move {
            let rsp = answer.await?;
            if rsp.parts.status == http::StatusCode::TOO_MANY_REQUESTS {
                let wait = rsp
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after);
                RATE_LIMITED.with(|slot| slot.set(wait));
            }
            Ok(rsp)
        })
    }
}

/// A `Retry-After` value (RFC 9110 section 10.2.3): delay-seconds, or an
/// HTTP-date (then the time from now, zero if past).
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        let wait = retry_after(&later).unwrap();
        assert!((3590..=3600).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(retry_after("soon"), None);
        assert_eq!(retry_after("-5"), None);
    }
}
