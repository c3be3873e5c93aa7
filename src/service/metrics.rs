//! `GET /metrics` in the Prometheus text format (version 0.0.4): requests
//! by action and code, latency histograms for the whole request, keygen and
//! signing, sessions in use, and the key pool.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::backend::pkcs11::pool::PoolStats;
use crate::issue::Timings;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let plain = labels.trim_end_matches(',');
        let braces = if plain.is_empty() {
            String::new()
        } else {
            format!("{{{plain}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, String), u64>,
    request_seconds: BTreeMap<String, Histogram>,
    keygen: Histogram,
    sign: Histogram,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request and its duration.
    pub fn observe_request(&self, action: &str, code: &str, d: Duration) {
        let action = if action.is_empty() { "-" } else { action };
        let mut m = self.lock();
        *m.requests
            .entry((action.to_owned(), code.to_owned()))
            .or_default() += 1;
        m.request_seconds
            .entry(action.to_owned())
            .or_default()
            .observe(d);
    }

    /// Records the phases of a CSR that was made.
    pub fn observe_phases(&self, t: Timings) {
        let mut m = self.lock();
        m.keygen.observe(t.keygen);
        m.sign.observe(t.sign);
    }

    /// The text exposition.
    pub fn render(&self, busy: usize, workers: usize, pool: Option<PoolStats>) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP hsm_csr_requests_total Requests answered, by action and code.\n# TYPE hsm_csr_requests_total counter\n");
        for ((action, code), n) in &m.requests {
            let _ = writeln!(
                out,
                "hsm_csr_requests_total{{action=\"{action}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP hsm_csr_request_seconds Whole request latency.\n# TYPE hsm_csr_request_seconds histogram\n");
        for (action, h) in &m.request_seconds {
            h.render(
                &mut out,
                "hsm_csr_request_seconds",
                &format!("action=\"{action}\","),
            );
        }
        out.push_str("# HELP hsm_csr_keygen_seconds Key pair generation (or pool take) on the token.\n# TYPE hsm_csr_keygen_seconds histogram\n");
        m.keygen.render(&mut out, "hsm_csr_keygen_seconds", "");
        out.push_str("# HELP hsm_csr_sign_seconds Signing the CertificationRequestInfo on the token.\n# TYPE hsm_csr_sign_seconds histogram\n");
        m.sign.render(&mut out, "hsm_csr_sign_seconds", "");
        let _ = writeln!(
            out,
            "# HELP hsm_csr_sessions_in_use Worker sessions busy.\n# TYPE hsm_csr_sessions_in_use gauge\nhsm_csr_sessions_in_use {busy}"
        );
        let _ = writeln!(
            out,
            "# HELP hsm_csr_sessions Worker sessions.\n# TYPE hsm_csr_sessions gauge\nhsm_csr_sessions {workers}"
        );
        if let Some(p) = pool {
            let _ = writeln!(
                out,
                "# HELP hsm_csr_pool_depth Unassigned keys ready.\n# TYPE hsm_csr_pool_depth gauge\nhsm_csr_pool_depth {}",
                p.depth
            );
            let _ = writeln!(
                out,
                "# HELP hsm_csr_pool_hits_total Requests served from the pool.\n# TYPE hsm_csr_pool_hits_total counter\nhsm_csr_pool_hits_total {}",
                p.hits
            );
            let _ = writeln!(
                out,
                "# HELP hsm_csr_pool_misses_total Requests that generated on demand.\n# TYPE hsm_csr_pool_misses_total counter\nhsm_csr_pool_misses_total {}",
                p.misses
            );
            let _ = writeln!(
                out,
                "# HELP hsm_csr_pool_keys_made_total Keys the refiller made.\n# TYPE hsm_csr_pool_keys_made_total counter\nhsm_csr_pool_keys_made_total {}",
                p.made
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = Metrics::default();
        m.observe_request(
            "CreateCdnCertificateSigningRequest",
            "OK",
            Duration::from_millis(30),
        );
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
        assert!(text.contains("hsm_csr_request_seconds_bucket{action=\"CreateCdnCertificateSigningRequest\",le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("hsm_csr_request_seconds_bucket{action=\"CreateCdnCertificateSigningRequest\",le=\"0.025\"} 0"), "{text}");
        assert!(
            text.contains("\nhsm_csr_keygen_seconds_count 0\n"),
            "{text}"
        );
        assert!(
            text.contains("hsm_csr_pool_depth 3") && text.contains("hsm_csr_sessions_in_use 1"),
            "{text}"
        );
    }
}
