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
    let text = format!("{:04}{m:02}{d:02}", y.clamp(0, 9999));
    let b = text.as_bytes();
    cryptoki::types::Date::new([b[0], b[1], b[2], b[3]], [b[4], b[5]], [b[6], b[7]])
}
