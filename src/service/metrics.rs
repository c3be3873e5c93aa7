//! `GET /metrics` in the OpenMetrics text format (prometheus-client):
//! requests by action and code, latency histograms for the whole request,
//! keygen and signing, sessions in use, the key pool, and (when Redis holds
//! the shared state) whether it answers.
//!
//! Every label value comes from a closed set fixed at compile time: the
//! action is one of the four API operations, `none` or `other`, whatever
//! the caller sent; the code is one of the `&'static str` codes this crate
//! answers with. So no request can add a line, a series or a byte to the
//! exposition beyond its counters (at most 6 actions × the crate's codes).

mod expiry;
mod owners;
mod tokens;

pub(super) use owners::{OTHER as OTHER_OWNER, OwnerStats};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::backend::pkcs11::pool::PoolStats;
use crate::issue::Timings;
use crate::service::tokens::TokenStats;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `action` label: the operation, never the caller's bytes.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum ActionLabel {
    /// CreateCdnCertificateSigningRequest.
    Cdn,
    /// CreateDcdnCertificateSigningRequest.
    Dcdn,
    /// SetCdnDomainCSRCertificate.
    SetCdn,
    /// SetDcdnDomainCSRCertificate.
    SetDcdn,
    /// No action was read (the request failed before).
    None,
    /// Any other value the caller sent.
    Other,
}

impl ActionLabel {
    /// The label for what a caller sent as `Action`.
    pub(crate) fn of(action: &str) -> ActionLabel {
        match action {
            "" => ActionLabel::None,
            "CreateCdnCertificateSigningRequest" => ActionLabel::Cdn,
            "CreateDcdnCertificateSigningRequest" => ActionLabel::Dcdn,
            "SetCdnDomainCSRCertificate" => ActionLabel::SetCdn,
            "SetDcdnDomainCSRCertificate" => ActionLabel::SetDcdn,
            _ => ActionLabel::Other,
        }
    }

    /// As written in the exposition and the log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActionLabel::Cdn => "CreateCdnCertificateSigningRequest",
            ActionLabel::Dcdn => "CreateDcdnCertificateSigningRequest",
            ActionLabel::SetCdn => "SetCdnDomainCSRCertificate",
            ActionLabel::SetDcdn => "SetDcdnDomainCSRCertificate",
            ActionLabel::None => "none",
            ActionLabel::Other => "other",
        }
    }
}

impl EncodeLabelValue for ActionLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: ActionLabel,
    /// Only ever one of the crate's own `&'static str` API codes, or "OK".
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionOnly {
    action: ActionLabel,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Values read at scrape time: sessions and the pool.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    busy: usize,
    workers: usize,
    pool: Option<PoolStats>,
}

#[derive(Debug, Default)]
struct SnapshotCollector(Arc<Mutex<Snapshot>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name, help, v: usize| {
            let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let counter = |encoder: &mut DescriptorEncoder<'_>, name, help, v: u64| {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
        };
        gauge(
            &mut encoder,
            "hsm_csr_sessions_in_use",
            "Worker sessions busy.",
            s.busy,
        )?;
        gauge(
            &mut encoder,
            "hsm_csr_sessions",
            "Worker sessions.",
            s.workers,
        )?;
        if let Some(p) = s.pool {
            gauge(
                &mut encoder,
                "hsm_csr_pool_depth",
                "Unassigned keys ready.",
                p.depth,
            )?;
            counter(
                &mut encoder,
                "hsm_csr_pool_hits",
                "Requests served from the pool.",
                p.hits,
            )?;
            counter(
                &mut encoder,
                "hsm_csr_pool_misses",
                "Requests that generated on demand.",
                p.misses,
            )?;
            counter(
                &mut encoder,
                "hsm_csr_pool_keys_made",
                "Keys the refiller made.",
                p.made,
            )?;
        }
        Ok(())
    }
}

/// The shared state's figures, in the exposition only when `[service]
/// redis_url` is set.
#[derive(Clone, Debug, Default)]
pub struct SharedStateMetrics {
    /// 1 while Redis answers, 0 while it does not.
    pub reachable: Gauge,
    /// Operations on Redis that failed.
    pub errors: Counter,
}

/// The service's counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<ActionOnly, Histogram, fn() -> Histogram>,
    keygen: Histogram,
    sign: Histogram,
    snapshot: Arc<Mutex<Snapshot>>,
    tokens: Arc<Mutex<Vec<TokenStats>>>,
    owners: Arc<Mutex<std::collections::BTreeMap<String, OwnerStats>>>,
    expiries: Arc<Mutex<Vec<u64>>>,
    quota_refusals: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<ActionOnly, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let (keygen, sign) = (histogram(), histogram());
        registry.register(
            "hsm_csr_requests",
            "Requests answered, by action and code",
            requests.clone(),
        );
        registry.register(
            "hsm_csr_request_seconds",
            "Whole request latency",
            request_seconds.clone(),
        );
        registry.register(
            "hsm_csr_keygen_seconds",
            "Key pair generation (or pool take) on the token",
            keygen.clone(),
        );
        registry.register(
            "hsm_csr_sign_seconds",
            "Signing the CertificationRequestInfo on the token",
            sign.clone(),
        );
        let snapshot = Arc::default();
        registry.register_collector(Box::new(SnapshotCollector(Arc::clone(&snapshot))));
        let tokens = Arc::default();
        registry.register_collector(Box::new(tokens::TokenCollector(Arc::clone(&tokens))));
        let owners = Arc::default();
        registry.register_collector(Box::new(owners::OwnerCollector(Arc::clone(&owners))));
        let expiries = Arc::default();
        registry.register_collector(Box::new(expiry::ExpiryCollector(Arc::clone(&expiries))));
        Metrics {
            owners,
            expiries,
            quota_refusals: Mutex::default(),
            registry,
            requests,
            request_seconds,
            keygen,
            sign,
            snapshot,
            tokens,
        }
    }
}

impl Metrics {
    /// Counts a request and its duration.
    pub(crate) fn observe_request(&self, action: ActionLabel, code: &'static str, d: Duration) {
        self.requests
            .get_or_create(&RequestLabels { action, code })
            .inc();
        self.request_seconds
            .get_or_create(&ActionOnly { action })
            .observe(d.as_secs_f64());
    }

    /// Adds the shared state's gauge and counter to the exposition.
    pub(crate) fn register_shared_state(&mut self) -> SharedStateMetrics {
        let m = SharedStateMetrics::default();
        self.registry.register(
            "hsm_csr_shared_state_reachable",
            "1 while the shared state (Redis) answers, 0 while it does not (calls are then answered 503)",
            m.reachable.clone(),
        );
        self.registry.register(
            "hsm_csr_shared_state_errors",
            "Operations on the shared state (Redis) that failed: calls refused with 503, and health checks",
            m.errors.clone(),
        );
        m
    }

    /// Records the phases of a CSR that was made.
    pub(crate) fn observe_phases(&self, t: Timings) {
        self.keygen.observe(t.keygen.as_secs_f64());
        self.sign.observe(t.sign.as_secs_f64());
    }

    /// Counts a call of access key `id` (from the configuration) refused
    /// by its quota.
    pub(super) fn quota_refused(&self, id: &str) {
        *self
            .quota_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default() += 1;
    }

    /// The owners' figures, for the next [`Self::render`]: `owners` as the
    /// tokens counted them, with the refusals counted here.
    pub(super) fn set_owners(&self, mut owners: std::collections::BTreeMap<String, OwnerStats>) {
        for (id, n) in self
            .quota_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if let Some(stats) = owners.get_mut(id) {
                stats.quota_refusals = *n;
            }
        }
        *self.owners.lock().unwrap_or_else(|p| p.into_inner()) = owners;
    }

    /// The notAfter of each certificate in use on the tokens, for the next
    /// [`Self::render`].
    pub(super) fn set_expiries(&self, ends: Vec<u64>) {
        *self.expiries.lock().unwrap_or_else(|p| p.into_inner()) = ends;
    }

    /// Each token's figures, for the next [`Self::render`].
    pub(crate) fn set_tokens(&self, tokens: Vec<TokenStats>) {
        *self.tokens.lock().unwrap_or_else(|p| p.into_inner()) = tokens;
    }

    /// The text exposition, with the session and pool figures of now.
    pub(crate) fn render(&self, busy: usize, workers: usize, pool: Option<PoolStats>) -> String {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Snapshot {
            busy,
            workers,
            pool,
        };
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = Metrics::default();
        m.observe_request(ActionLabel::Cdn, "OK", Duration::from_millis(30));
        let text = m.render(
            1,
            2,
            Some(PoolStats {
                depth: 3,
                hits: 4,
                misses: 5,
                made: 6,
            }),
        );
        assert!(text.contains("hsm_csr_requests_total{action=\"CreateCdnCertificateSigningRequest\",code=\"OK\"} 1"), "{text}");
        assert!(text.contains("hsm_csr_request_seconds_bucket{le=\"0.05\",action=\"CreateCdnCertificateSigningRequest\"} 1"), "{text}");
        assert!(text.contains("hsm_csr_request_seconds_bucket{le=\"0.025\",action=\"CreateCdnCertificateSigningRequest\"} 0"), "{text}");
        assert!(
            text.contains("\nhsm_csr_keygen_seconds_count 0\n"),
            "{text}"
        );
        for line in [
            "hsm_csr_pool_depth 3",
            "hsm_csr_sessions_in_use 1",
            "hsm_csr_pool_hits_total 4",
            "hsm_csr_pool_misses_total 5",
            "hsm_csr_pool_keys_made_total 6",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{line}: {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Whatever callers send as Action, the exposition holds one series per
    /// (known action | none | other, code): it cannot grow with requests.
    #[test]
    fn caller_values_never_become_labels() {
        let m = Metrics::default();
        let hostile = [
            "x\"} 1\nhsm_csr_forged 1\n#",
            &"A".repeat(30_000),
            "CreateCdnCertificateSigningRequest\n",
            "createcdncertificatesigningrequest",
        ];
        for (i, action) in hostile.iter().enumerate() {
            m.observe_request(
                ActionLabel::of(action),
                "InvalidAction.NotFound",
                Duration::from_millis(i as u64),
            );
        }
        let text = m.render(0, 1, None);
        assert!(!text.contains("forged") && !text.contains("AAAA"), "{text}");
        assert!(
            text.contains(
                "hsm_csr_requests_total{action=\"other\",code=\"InvalidAction.NotFound\"} 4"
            ),
            "{text}"
        );
        assert!(text.len() < 4096, "{} bytes", text.len());
    }

    #[test]
    fn action_labels() {
        assert_eq!(ActionLabel::of(""), ActionLabel::None);
        assert_eq!(
            ActionLabel::of("CreateDcdnCertificateSigningRequest").as_str(),
            "CreateDcdnCertificateSigningRequest"
        );
        assert_eq!(
            ActionLabel::of("CreateDcdnCertificateSigningRequestX"),
            ActionLabel::Other
        );
        for (action, _, _) in super::super::api::ACTIONS {
            assert_eq!(ActionLabel::of(action).as_str(), action);
        }
    }
}
