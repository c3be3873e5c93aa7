//! When a certificate is renewed.
//!
//! Without ACME Renewal Information, once at most a third of its lifetime
//! is left: a 90-day certificate at 30 days, a 6-day one at 2 (a fixed day
//! count would renew the 6-day certificate the moment it is issued). Each
//! certificate is moved earlier by its own share of a further sixth of its
//! lifetime, never later, so that a fleet issued on one day is not renewed
//! on one day.
//!
//! With it, RFC 9773 section 4.2: "the client SHOULD select a uniform
//! random time within the suggested window to attempt to renew the
//! certificate. If the selected time is in the past, the client SHOULD
//! attempt renewal immediately."
//!
//! The random share comes from the certificate's own bytes, not from a new
//! draw each run: a timer that runs every hour would otherwise draw again
//! each hour and renew early far more often than a uniform choice does.
//! Across a fleet the shares are uniform; for one certificate the time is
//! the same in every run, so each run and its `NextRenewal` agree on it.

use md5::{Digest, Md5};

/// The certificate's share in `[0, 1)`, drawn from its DER (a digest: two
/// certificates of one fleet differ at least in their serial numbers).
pub(crate) fn share_of(cert_der: &[u8]) -> f64 {
    let digest = Md5::digest(cert_der);
    // The first 8 of MD5's 16 bytes.
    let first: [u8; 8] = digest.first_chunk().copied().unwrap_or_default();
    // The top 53 bits, exactly representable: the share is below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Without ARI: the time once at most a third of `not_before..not_after` is
/// left, moved earlier by `share` of a sixth of it (seconds since the
/// epoch). A certificate whose dates are the wrong way round is due at
/// once.
pub(crate) fn without_ari(not_before: u64, not_after: u64, share: f64) -> u64 {
    let lifetime = not_after.saturating_sub(not_before);
    let third = not_after - lifetime / 3;
    third.saturating_sub(fraction(lifetime / 6, share))
}

/// RFC 9773: a time inside `start..=end` (seconds since the epoch), at
/// `share` of the way. A window that ends before it starts is taken at
/// its start.
pub(crate) fn in_window(start: u64, end: u64, share: f64) -> u64 {
    start.saturating_add(fraction(end.saturating_sub(start), share))
}

/// `share` of `span`, rounded down, never more than `span`.
fn fraction(span: u64, share: f64) -> u64 {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((span as f64) * share).floor().min(span as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn a_third_of_the_lifetime_is_left_at_the_latest() {
        // 90 days: at 30 days left, or up to 15 days earlier.
        assert_eq!(without_ari(0, 90 * DAY, 0.0), 60 * DAY);
        assert_eq!(without_ari(0, 90 * DAY, 0.5), 60 * DAY - 15 * DAY / 2);
        let latest = without_ari(0, 90 * DAY, 0.999_999);
        assert!(latest > 45 * DAY && latest < 45 * DAY + 10, "{latest}");
        // 6 days, issued at t: 2 days left at the latest, never at issue.
        let t = 1_800_000_000;
        for share in [0.0, 0.3, 0.99] {
            let at = without_ari(t, t + 6 * DAY, share);
            assert!(at > t + 3 * DAY - 1 && at <= t + 4 * DAY, "{share}: {at}");
        }
        // The wrong way round: due at once (before anything now).
        assert_eq!(without_ari(100, 10, 0.5), 10);
    }

    #[test]
    fn a_windows_time_is_inside_it() {
        assert_eq!(in_window(1000, 2000, 0.0), 1000);
        assert_eq!(in_window(1000, 2000, 0.25), 1250);
        assert_eq!(in_window(1000, 2000, 0.999_999_9), 1999);
        assert_eq!(in_window(1000, 2000, 7.0), 2000);
        assert_eq!(in_window(1000, 2000, f64::NAN), 1000);
        assert_eq!(in_window(2000, 1000, 0.5), 2000);
        assert_eq!(in_window(u64::MAX - 1, u64::MAX, 0.9), u64::MAX - 1);
    }

    #[test]
    fn shares_are_stable_spread_and_below_one() {
        assert_eq!(share_of(b"serial 1"), share_of(b"serial 1"));
        let shares: Vec<f64> = (0..1000u32).map(|i| share_of(&i.to_be_bytes())).collect();
        assert!(shares.iter().all(|s| (0.0..1.0).contains(s)));
        // Ten bins of a uniform draw of 1000: each far from empty or full.
        let mut bins = [0usize; 10];
        for s in &shares {
            bins[(s * 10.0) as usize] += 1;
        }
        assert!(bins.iter().all(|&n| (60..=140).contains(&n)), "{bins:?}");
    }
}
