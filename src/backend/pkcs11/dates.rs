//! CK_DATE (PKCS #11 v2.40 section 3.3: "YYYY", "MM", "DD" in ASCII
//! digits), the type of CKA_START_DATE and CKA_END_DATE, to and from
//! [`Day`].

use crate::day::Day;

/// The day a CK_DATE names; None for an empty or malformed one.
pub(super) fn day_of(date: &cryptoki::types::Date) -> Option<Day> {
    let digits = |b: &[u8]| -> Option<i64> { std::str::from_utf8(b).ok()?.parse().ok() };
    let (y, m, d) = (
        digits(&date.year)?,
        digits(&date.month)?,
        digits(&date.day)?,
    );
    Day::from_ymd(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?)
}

/// The CK_DATE of `day`.
pub(super) fn date_of(day: Day) -> cryptoki::types::Date {
    let (y, m, d) = day.ymd();
    let y = y.clamp(0, 9999).unsigned_abs();
    let (m, d) = (u64::from(m), u64::from(d));
    // The decimal digit of `n` worth `place`.
    let digit = |n: u64, place: u64| b'0' + (n / place % 10) as u8;
    cryptoki::types::Date::new(
        [digit(y, 1000), digit(y, 100), digit(y, 10), digit(y, 1)],
        [digit(m, 10), digit(m, 1)],
        [digit(d, 10), digit(d, 1)],
    )
}
