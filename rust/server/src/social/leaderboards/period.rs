//! Reset schedules: which period a moment falls in. A period is named by its start (unix ms, UTC);
//! boards that never reset have the single period 0.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub enum Schedule {
    Never,
    Daily,
    Weekly,
    Monthly,
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    pub fn parse(text: &str) -> ApiResult<Self> {
        match text.trim() {
            "" | "none" => Ok(Self::Never),
            "daily" => Ok(Self::Daily),
            "weekly" => Ok(Self::Weekly),
            "monthly" => Ok(Self::Monthly),
            expr => {
                // The cron crate wants seconds first; classic 5-field expressions start at :00.
                let full = if expr.split_whitespace().count() == 5 {
                    format!("0 {expr}")
                } else {
                    expr.to_owned()
                };
                full.parse::<cron::Schedule>()
                    .map(|s| Self::Cron(Box::new(s)))
                    .map_err(|e| {
                        ApiError::invalid(format!(
                            "reset must be none, daily, weekly, monthly or a cron expression: {e}"
                        ))
                    })
            }
        }
    }

    /// Start of the period containing `now_ms`.
    pub fn period_start(&self, now_ms: i64) -> i64 {
        let now = to_datetime(now_ms);
        let start = match self {
            Self::Never => return 0,
            Self::Daily => day_start(now),
            Self::Weekly => {
                day_start(now) - Duration::days(now.weekday().num_days_from_monday() as i64)
            }
            Self::Monthly => month_start(now.year(), now.month()),
            // The latest fire time at or before now (`after(t).next_back()` is strictly before t).
            Self::Cron(s) => match s.after(&(now + Duration::milliseconds(1))).next_back() {
                Some(t) => t,
                None => return 0,
            },
        };
        start.timestamp_millis()
    }

    /// Start of the period before the one starting at `period_start`; `None` for `Never`.
    pub fn previous_start(&self, period_start: i64) -> Option<i64> {
        match self {
            Self::Never => None,
            Self::Daily | Self::Weekly | Self::Monthly | Self::Cron(_) => {
                Some(self.period_start(period_start - 1))
            }
        }
    }

    /// When the period containing `now_ms` ends; `None` for `Never`.
    pub fn next_reset(&self, now_ms: i64) -> Option<i64> {
        let now = to_datetime(now_ms);
        let next = match self {
            Self::Never => return None,
            Self::Daily => day_start(now) + Duration::days(1),
            Self::Weekly => to_datetime(self.period_start(now_ms)) + Duration::days(7),
            Self::Monthly => {
                let (y, m) = if now.month() == 12 {
                    (now.year() + 1, 1)
                } else {
                    (now.year(), now.month() + 1)
                };
                month_start(y, m)
            }
            Self::Cron(s) => s.after(&now).next()?,
        };
        Some(next.timestamp_millis())
    }
}

fn to_datetime(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    month_start(t.year(), t.month()) + Duration::days(t.day0() as i64)
}

fn month_start(year: i32, month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn calendar_periods() {
        let now = ms(2026, 11, 25, 6, 30); // a Wednesday
        assert_eq!(Schedule::Daily.period_start(now), ms(2026, 11, 25, 0, 0));
        assert_eq!(Schedule::Weekly.period_start(now), ms(2026, 11, 23, 0, 0));
        assert_eq!(Schedule::Monthly.period_start(now), ms(2026, 11, 1, 0, 0));
        assert_eq!(Schedule::Never.period_start(now), 0);
        assert_eq!(
            Schedule::Monthly.next_reset(now),
            Some(ms(2026, 12, 1, 0, 0))
        );
        assert_eq!(
            Schedule::Monthly.previous_start(ms(2026, 1, 1, 0, 0)),
            Some(ms(2025, 12, 1, 0, 0))
        );
        assert_eq!(
            Schedule::Weekly.next_reset(now),
            Some(ms(2026, 11, 30, 0, 0))
        );
    }

    #[test]
    fn cron_periods() {
        let hourly = Schedule::parse("0 * * * *").unwrap();
        let now = ms(2026, 11, 25, 6, 30);
        assert_eq!(hourly.period_start(now), ms(2026, 11, 25, 6, 0));
        assert_eq!(
            hourly.period_start(ms(2026, 11, 25, 6, 0)),
            ms(2026, 11, 25, 6, 0)
        );
        assert_eq!(hourly.next_reset(now), Some(ms(2026, 11, 25, 7, 0)));
        assert_eq!(
            hourly.previous_start(ms(2026, 11, 25, 6, 0)),
            Some(ms(2026, 11, 25, 5, 0))
        );
        assert!(Schedule::parse("every tuesday").is_err());
    }
}
