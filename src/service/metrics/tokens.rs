//! The per-token series: one set per configured token, labelled with its
//! index and its configured label (or serial), both from the configuration
//! file, never from a caller; the label value is escaped by the encoder.
//! So the exposition grows with the tokens configured (at most
//! `MAX_TOKENS`), never with requests.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::service::tokens::TokenStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    token: String,
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    token: String,
    label: String,
    result: &'static str,
}

/// The tokens' figures of the last scrape.
#[derive(Debug, Default)]
pub(super) struct TokenCollector(pub(super) Arc<Mutex<Vec<TokenStats>>>);

/// A per-token gauge: name, help, and its value for a token (None: no series).
type TokenGauge = (&'static str, &'static str, fn(&TokenStats) -> Option<usize>);

fn gauge(v: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Collector for TokenCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let tokens = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if tokens.is_empty() {
            return Ok(());
        }
        let labels = |t: &TokenStats| TokenLabels {
            token: t.index.to_string(),
            label: t.name.clone(),
        };
        let gauges: [TokenGauge; 6] = [
            (
                "hsm_csr_token_objects",
                "Objects on the token, as last counted (at start and every 30 s) and moved since.",
                |t| t.capacity.map(|c| c.0),
            ),
            (
                "hsm_csr_token_max_objects",
                "The token's [token] max_objects.",
                |t| t.capacity.and_then(|c| c.1),
            ),
            (
                "hsm_csr_token_up",
                "1 while the token is in rotation, 0 while it is being reconnected.",
                |t| Some(usize::from(t.up)),
            ),
            (
                "hsm_csr_token_sessions",
                "Worker sessions on the token.",
                |t| Some(t.sessions),
            ),
            (
                "hsm_csr_token_sessions_in_use",
                "Worker sessions busy on the token.",
                |t| Some(t.in_use),
            ),
            (
                "hsm_csr_token_pool_depth",
                "Unassigned keys ready on the token.",
                |t| t.pool.map(|p| p.depth),
            ),
        ];
        for (name, help, value) in gauges {
            if tokens.iter().all(|t| value(t).is_none()) {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for t in &tokens {
                if let Some(v) = value(t) {
                    let l = labels(t);
                    gauge(v).encode(family.encode_family(&l)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "hsm_csr_token_calls",
            "Calls given a session on the token, by result.",
            None,
            MetricType::Counter,
        )?;
        for t in &tokens {
            for (result, n) in [("ok", t.ok), ("failed", t.failed)] {
                let l = ResultLabels {
                    token: t.index.to_string(),
                    label: t.name.clone(),
                    result,
                };
                ConstCounter::new(n).encode(family.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::pkcs11::pool::PoolStats;
    use crate::service::metrics::Metrics;
    use crate::service::tokens::TokenStats;

    #[test]
    fn one_series_set_per_token_labelled_by_index_and_configured_label() {
        let m = Metrics::default();
        assert!(!m.render(0, 1, None).contains("hsm_csr_token_"));
        m.set_tokens(vec![
            TokenStats {
                index: 0,
                name: "prod-a".into(),
                up: true,
                sessions: 2,
                in_use: 1,
                ok: 7,
                failed: 0,
                pool: Some(PoolStats {
                    depth: 3,
                    ..PoolStats::default()
                }),
                capacity: Some((200, Some(256))),
            },
            TokenStats {
                index: 1,
                // What a hostile label would try; labels are checked in the
                // config, and escaped here whatever they hold.
                name: "b\"} 1\nhsm_csr_forged 1".into(),
                up: false,
                sessions: 2,
                in_use: 0,
                ok: 4,
                failed: 2,
                pool: None,
                capacity: None,
            },
        ]);
        let text = m.render(1, 4, None);
        for line in [
            "hsm_csr_token_up{token=\"0\",label=\"prod-a\"} 1",
            "hsm_csr_token_sessions_in_use{token=\"0\",label=\"prod-a\"} 1",
            "hsm_csr_token_pool_depth{token=\"0\",label=\"prod-a\"} 3",
            "hsm_csr_token_objects{token=\"0\",label=\"prod-a\"} 200",
            "hsm_csr_token_max_objects{token=\"0\",label=\"prod-a\"} 256",
            "hsm_csr_token_calls_total{token=\"0\",label=\"prod-a\",result=\"ok\"} 7",
            "hsm_csr_token_up{token=\"1\",label=\"b\\\"} 1\\nhsm_csr_forged 1\"} 0",
            "hsm_csr_token_calls_total{token=\"1\",label=\"b\\\"} 1\\nhsm_csr_forged 1\",result=\"failed\"} 2",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{line}:\n{text}");
        }
        assert!(!text.contains("\nhsm_csr_forged"), "{text}");
        assert!(!text.contains("pool_depth{token=\"1\""), "{text}");
    }
}
