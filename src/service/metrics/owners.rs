//! Per-owner series: key pairs and certificates each access key owns on
//! the tokens (as the last pass over every key found them, see
//! `[retention] every_s`), and the calls refused by its quota.
//!
//! Label values are access key ids from the configuration only: keys of
//! every other owner (the command line's `local`, an `--owner` name, keys
//! with no owner) are added up under `(other)`, which no access key id can
//! spell. So the exposition grows with the configuration, never with what
//! is on the token or what callers send.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The label of every owner that is not a configured access key.
pub(in crate::service) const OTHER: &str = "(other)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabels {
    owner: String,
}

/// One owner's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::service) struct OwnerStats {
    pub(in crate::service) keys: usize,
    pub(in crate::service) certificates: usize,
    pub(in crate::service) quota_refusals: u64,
    pub(in crate::service) max_keys: Option<usize>,
}

/// The owners' figures of the last scrape, by label.
#[derive(Debug, Default)]
pub(super) struct OwnerCollector(pub(super) Arc<Mutex<BTreeMap<String, OwnerStats>>>);

fn gauge(v: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Collector for OwnerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let owners = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if owners.is_empty() {
            return Ok(());
        }
        type Value = fn(&OwnerStats) -> Option<usize>;
        let gauges: [(&str, &str, Value); 3] = [
            (
                "hsm_csr_owner_keys",
                "Key pairs each owner has on the tokens, as of the last pass over every key.",
                |s| Some(s.keys),
            ),
            (
                "hsm_csr_owner_certificates",
                "Certificates stored beside each owner's keys, as of the last pass over every key.",
                |s| Some(s.certificates),
            ),
            (
                "hsm_csr_owner_max_keys",
                "The key quota (max_keys) of each access key that has one.",
                |s| s.max_keys,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (owner, stats) in &owners {
                if let Some(v) = value(stats) {
                    let labels = OwnerLabels {
                        owner: owner.clone(),
                    };
                    gauge(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "hsm_csr_quota_refusals",
            "Calls refused with QuotaExceeded.Key, by access key.",
            None,
            MetricType::Counter,
        )?;
        for (owner, stats) in owners.iter().filter(|(o, _)| *o != OTHER) {
            let labels = OwnerLabels {
                owner: owner.clone(),
            };
            ConstCounter::new(stats.quota_refusals).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
