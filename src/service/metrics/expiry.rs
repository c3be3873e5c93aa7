//! Certificate expiry: the earliest notAfter among the certificates of the
//! keys in use on the tokens, and how many end within each of a fixed set
//! of day ranges, as the last pass over every key found them (`[retention]
//! every_s`). Keys a renewal replaced are left out: their certificates
//! are meant to run out.
//!
//! The `days_left` label takes one of six values fixed here, whatever is
//! on the tokens: no series per name or per certificate.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// `days_left` values and the days they start at; each range ends where
/// the next starts.
const RANGES: [(&str, i64); 6] = [
    ("expired", i64::MIN),
    ("0-1", 0),
    ("1-7", 1),
    ("7-30", 7),
    ("30-90", 30),
    ("90+", 90),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DaysLeft {
    days_left: &'static str,
}

/// The label of a certificate ending at `not_after`, seen at `now`.
fn range_of(not_after: u64, now: u64) -> &'static str {
    if not_after <= now {
        return RANGES[0].0;
    }
    let days = i64::try_from((not_after - now) / 86_400).unwrap_or(i64::MAX);
    RANGES
        .iter()
        .rev()
        .find(|(_, from)| days >= *from)
        .map_or(RANGES[0].0, |(label, _)| label)
}

/// The notAfter times of the last pass, seconds since the epoch.
#[derive(Debug, Default)]
pub(super) struct ExpiryCollector(pub(super) Arc<Mutex<Vec<u64>>>);

impl Collector for ExpiryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let ends = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut family = encoder.encode_descriptor(
            "hsm_csr_certificates",
            "Certificates of the keys in use, by days left until notAfter, as of the last pass over every key.",
            None,
            MetricType::Gauge,
        )?;
        for (label, _) in RANGES {
            let n = ends.iter().filter(|e| range_of(**e, now) == label).count();
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(family.encode_family(&DaysLeft { days_left: label })?)?;
        }
        if let Some(first) = ends.iter().min() {
            let family = encoder.encode_descriptor(
                "hsm_csr_certificate_earliest_expiry_seconds",
                "The earliest notAfter among the certificates of the keys in use (seconds since the Unix epoch).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(*first).unwrap_or(i64::MAX)).encode(family)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_fall_in_fixed_ranges() {
        let now = 1_000_000_000;
        let day = 86_400;
        assert_eq!(range_of(now - 1, now), "expired");
        assert_eq!(range_of(now, now), "expired");
        assert_eq!(range_of(now + 1, now), "0-1");
        assert_eq!(range_of(now + day - 1, now), "0-1");
        assert_eq!(range_of(now + day, now), "1-7");
        assert_eq!(range_of(now + 7 * day, now), "7-30");
        assert_eq!(range_of(now + 30 * day - 1, now), "7-30");
        assert_eq!(range_of(now + 30 * day, now), "30-90");
        assert_eq!(range_of(now + 90 * day, now), "90+");
        assert_eq!(range_of(u64::MAX, now), "90+");
        assert_eq!(range_of(0, now), "expired");
    }
}
