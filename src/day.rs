//! Whole days in UTC: the unit of the token's CKA_START_DATE and
//! CKA_END_DATE (CK_DATE), of the retention policy and of the audit log's
//! dates.

/// A day, as days since 1970-01-01 (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// Today, by this host's clock.
    pub fn today() -> Day {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Day(i64::try_from(secs / 86_400).unwrap_or(0))
    }

    /// `days` before this day.
    #[must_use]
    pub fn minus(self, days: u32) -> Day {
        Day(self.0 - i64::from(days))
    }

    /// The day of a civil date, None for one that does not exist.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day(era * 146_097 + doe - 719_468))
    }

    /// Year, month, day.
    pub fn ymd(self) -> (i64, u32, u32) {
        // Howard Hinnant's civil_from_days.
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month as u32, day as u32)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_civil_dates() {
        assert_eq!(Day::from_ymd(1970, 1, 1), Some(Day(0)));
        assert_eq!(Day::from_ymd(2026, 12, 6), Some(Day(20_793)));
        assert_eq!(Day(20_793).to_string(), "2026-12-06");
        for d in -800_000..800_000 {
            let (y, m, dd) = Day(d).ymd();
            assert_eq!(Day::from_ymd(y, m, dd), Some(Day(d)), "{d}");
        }
        assert_eq!(
            Day::from_ymd(2024, 2, 29).map(|d| d.to_string()).as_deref(),
            Some("2024-02-29")
        );
        for (y, m, d) in [
            (2025, 2, 29),
            (1900, 2, 29),
            (2026, 13, 1),
            (2026, 4, 31),
            (2026, 1, 0),
        ] {
            assert_eq!(Day::from_ymd(y, m, d), None, "{y}-{m}-{d}");
        }
        assert_eq!(Day(10).minus(0), Day(10));
        assert_eq!(Day(10).minus(11), Day(-1));
    }
}
