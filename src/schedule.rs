//! The schedule: the instants `[schedule] cron` in `timezone` fires at, as UTC instants (the
//! slot keys of the scheduler). Pure: parsing, validation and "the next slot after t".
//!
//! Expressions are crontab's: 5 fields (minute hour day-of-month month day-of-week), or 6 with
//! seconds first. Day-of-week numbers are crontab's (0 or 7 = Sunday, 1 = Monday); they are
//! translated for the `cron` crate, which numbers Sunday 1 (Quartz). An expression that
//! restricts both day-of-month and day-of-week is refused: crontab runs it when *either*
//! matches, the `cron` crate when *both* do, and a schedule must not mean two things.
//!
//! Daylight saving time, as classic (Vixie) cron: fire times are computed in wall-clock time,
//! then each wall-clock time becomes one instant. A time inside a spring-forward gap (02:30 on
//! the day 02:00–03:00 does not exist) fires once, at the end of the gap; a time inside a
//! fall-back overlap (01:30 happens twice) fires once, at its first occurrence. Several wall
//! times that land on one instant are one slot. The `cron` crate alone skips the first and
//! fires the second twice (measured, America/New_York 2025); so it only parses here, and the
//! walk through wall-clock time is ours.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

/// Why a schedule is refused; the message names what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("key `schedule.cron`: {expr:?}: {message}")]
    Cron { expr: String, message: String },
    #[error("key `schedule.timezone`: {0:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"America/New_York\", \"UTC\")")]
    Timezone(String),
}

/// A parsed, validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    inner: cron::Schedule,
    tz: Tz,
}

/// Bound on wall-clock fire times examined per call.
const MAX_STEPS: usize = 100_000;

impl Schedule {
    pub fn parse(cron_expr: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let tz = Tz::from_str(timezone.trim())
            .map_err(|_| ScheduleError::Timezone(timezone.to_string()))?;
        let fail = |message: String| ScheduleError::Cron {
            expr: cron_expr.to_string(),
            message,
        };
        let fields: Vec<&str> = cron_expr.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(fail(format!(
                    "has {n} fields; use a 5-field crontab (minute hour day month weekday) or 6 fields with seconds first"
                )))
            }
        };
        let (day_of_month, day_of_week) = (rest[2], rest[4]);
        if day_of_month != "*" && day_of_month != "?" && day_of_week != "*" && day_of_week != "?" {
            return Err(fail(
                "restricts both the day of the month and the day of the week; crontab would run it when either matches, so hypod asks for one of them to be `*`".into(),
            ));
        }
        let weekday = translate_weekdays(day_of_week).map_err(fail)?;
        let quartz = format!(
            "{seconds} {} {} {} {} {weekday}",
            rest[0], rest[1], rest[2], rest[3]
        );
        let inner = cron::Schedule::from_str(&quartz).map_err(|e| fail(e.to_string()))?;
        // A valid expression that never fires (e.g. February 30th) is a mistake too.
        if inner.upcoming(Utc).next().is_none() {
            return Err(fail("never fires".into()));
        }
        Ok(Schedule {
            expr: cron_expr.to_string(),
            inner,
            tz,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Walking forward from `after`'s own wall time is enough: a wall time inside a gap
        // resolves to the gap's end, which is later than `after` exactly when `after` is before
        // the gap, i.e. when that wall time is ahead of `after`'s; in an overlap, wall times
        // ahead of `after`'s that resolve to the first pass (before `after`) are filtered out.
        let start = after.with_timezone(&self.tz).naive_local();
        // The cron crate walks wall-clock time when given UTC and a naive time as if it were
        // UTC: no DST there. Each wall time is then resolved in the real zone.
        for wall in self
            .inner
            .after(&Utc.from_utc_datetime(&start))
            .take(MAX_STEPS)
        {
            let instant = self.resolve(wall.naive_utc())?;
            if instant > after {
                return Some(instant);
            }
        }
        None
    }

    /// Slots in `(from, to]`, at most `limit` of them.
    pub fn slots_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::new();
        let mut at = from;
        while slots.len() < limit {
            match self.next_after(at) {
                Some(next) if next <= to => {
                    slots.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        slots
    }

    /// The instant a wall-clock time stands for: itself; the first of two in an overlap; the
    /// end of the gap for a time that does not exist.
    fn resolve(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => self.end_of_gap(wall),
        }
    }

    /// The first instant whose wall-clock time is at or after `wall`, for a `wall` inside a
    /// gap: bisection over the hours around it (wall time is monotone there).
    fn end_of_gap(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let before = wall - Duration::hours(12);
        let offset = self
            .tz
            .offset_from_local_datetime(&before)
            .earliest()?
            .fix()
            .local_minus_utc();
        let guess = Utc.from_utc_datetime(&(wall - Duration::seconds(i64::from(offset))));
        let (mut lo, mut hi) = (guess - Duration::hours(6), guess + Duration::hours(6));
        let wall_of = |t: DateTime<Utc>| t.with_timezone(&self.tz).naive_local();
        if wall_of(hi) < wall {
            return None;
        }
        while hi - lo > Duration::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            if wall_of(mid) >= wall {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        // Transitions fall on whole seconds.
        match hi.with_nanosecond(0) {
            Some(whole) if wall_of(whole) >= wall => Some(whole),
            _ => Some(hi),
        }
    }
}

/// Crontab's day-of-week field (0–7, 0 and 7 = Sunday, names, ranges, lists, steps) in the
/// `cron` crate's numbering (1 = Sunday … 7 = Saturday), as an explicit list.
fn translate_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let day = |s: &str| -> Result<u32, String> {
        let names = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        if let Some(i) = names.iter().position(|n| s.eq_ignore_ascii_case(n)) {
            return Ok(i as u32);
        }
        match s.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(format!(
                "day of week {s:?} is not 0–7 (0 and 7 are Sunday) or a name such as MON"
            )),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("step {step:?} in the day of week is not a number ≥ 1")
                })?,
            ),
            None => (item, 1),
        };
        let (first, last) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None if step > 1 => (day(range)?, 6),
                None => (day(range)?, day(range)?),
            },
        };
        if first > last {
            return Err(format!("day-of-week range {range:?} runs backwards"));
        }
        let mut d = first;
        while d <= last {
            days[(d % 7) as usize] = true;
            d += step;
        }
    }
    let list: Vec<String> = (0..7)
        .filter(|d| days[*d])
        .map(|d| (d + 1).to_string())
        .collect();
    if list.is_empty() {
        return Err("the day of week selects no day".into());
    }
    Ok(list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a test instant")
            .with_timezone(&Utc)
    }

    fn slots(expr: &str, tz: &str, from: &str, to: &str) -> Vec<String> {
        Schedule::parse(expr, tz)
            .expect("valid")
            .slots_between(utc(from), utc(to), 100)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn new_york_spring_forward_runs_a_skipped_time_once_after_the_gap() {
        // 2025-03-09: 02:00 EST → 03:00 EDT. 02:30 does not exist: it runs at 03:00 EDT.
        assert_eq!(
            slots(
                "30 2 * * *",
                "America/New_York",
                "2025-03-08T00:00:00Z",
                "2025-03-11T00:00:00Z"
            ),
            vec![
                "2025-03-08T07:30:00+00:00", // 02:30 EST
                "2025-03-09T07:00:00+00:00", // 03:00 EDT, right after the gap
                "2025-03-10T06:30:00+00:00", // 02:30 EDT
            ]
        );
    }

    #[test]
    fn new_york_fall_back_runs_a_repeated_time_once() {
        // 2025-11-02: 02:00 EDT → 01:00 EST. 01:30 happens twice: it runs at the first.
        assert_eq!(
            slots(
                "30 1 * * *",
                "America/New_York",
                "2025-11-01T00:00:00Z",
                "2025-11-04T00:00:00Z"
            ),
            vec![
                "2025-11-01T05:30:00+00:00",
                "2025-11-02T05:30:00+00:00", // 01:30 EDT, not again at 06:30 (01:30 EST)
                "2025-11-03T06:30:00+00:00",
            ]
        );
    }

    #[test]
    fn berlin_both_transitions() {
        // 2025-03-30: 02:00 CET → 03:00 CEST; 2025-10-26: 03:00 CEST → 02:00 CET.
        assert_eq!(
            slots(
                "30 2 * * *",
                "Europe/Berlin",
                "2025-03-29T00:00:00Z",
                "2025-03-31T12:00:00Z"
            ),
            vec![
                "2025-03-29T01:30:00+00:00",
                "2025-03-30T01:00:00+00:00", // 03:00 CEST, the end of the gap
                "2025-03-31T00:30:00+00:00",
            ]
        );
        assert_eq!(
            slots(
                "30 2 * * *",
                "Europe/Berlin",
                "2025-10-25T00:00:00Z",
                "2025-10-27T12:00:00Z"
            ),
            vec![
                "2025-10-25T00:30:00+00:00",
                "2025-10-26T00:30:00+00:00", // 02:30 CEST, the first of the two
                "2025-10-27T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn an_every_fifteen_minutes_schedule_through_the_gap_has_one_slot_per_instant() {
        // 01:45 EST, then 02:00, 02:15, 02:30, 02:45 all land on 03:00 EDT: one slot.
        assert_eq!(
            slots(
                "*/15 * * * *",
                "America/New_York",
                "2025-03-09T06:40:00Z",
                "2025-03-09T07:20:00Z"
            ),
            vec![
                "2025-03-09T06:45:00+00:00",
                "2025-03-09T07:00:00+00:00",
                "2025-03-09T07:15:00+00:00",
            ]
        );
    }

    #[test]
    fn weekdays_are_crontab_numbered() {
        // `1-5` is Monday to Friday in crontab (the cron crate alone reads Sunday–Thursday).
        let s = Schedule::parse("0 9 * * 1-5", "UTC").unwrap();
        let week = s.slots_between(utc("2025-06-01T00:00:00Z"), utc("2025-06-08T00:00:00Z"), 10);
        let days: Vec<Weekday> = week.iter().map(|t| t.weekday()).collect();
        assert_eq!(
            days,
            vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri
            ]
        );
        for sunday in ["0", "7", "SUN", "sun"] {
            let s = Schedule::parse(&format!("0 9 * * {sunday}"), "UTC").unwrap();
            let next = s.next_after(utc("2025-06-02T00:00:00Z")).unwrap();
            assert_eq!(next.weekday(), Weekday::Sun, "{sunday}");
        }
        assert_eq!(translate_weekdays("*/2").unwrap(), "1,3,5,7");
        assert_eq!(translate_weekdays("5-7").unwrap(), "1,6,7");
    }

    #[test]
    fn a_day_of_second_slots_is_quick() {
        // 43 200 slots of a two-second schedule; each step is one cron step, not hours of them.
        let s = Schedule::parse("*/2 * * * * *", "Europe/Berlin").unwrap();
        let day = s.slots_between(
            utc("2025-03-30T00:00:00Z"),
            utc("2025-03-31T00:00:00Z"),
            100_000,
        );
        assert_eq!(day.len(), 43_200);
        assert!(day.windows(2).all(|w| w[1] - w[0] == Duration::seconds(2)));
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::parse("*/2 * * * * *", "UTC").unwrap();
        let t = utc("2025-01-01T00:00:01Z");
        assert_eq!(s.next_after(t), Some(utc("2025-01-01T00:00:02Z")));
    }

    #[test]
    fn bad_schedules_name_the_key() {
        for (expr, tz, needle) in [
            ("a b c d e", "UTC", "schedule.cron"),
            ("0 2 * *", "UTC", "has 4 fields"),
            ("0 2 * * 8", "UTC", "day of week"),
            ("0 2 1 * 1", "UTC", "either matches"),
            ("0 0 30 2 *", "UTC", "never fires"),
            ("0 2 * * *", "Mars/Olympus_Mons", "schedule.timezone"),
        ] {
            let err = Schedule::parse(expr, tz).unwrap_err().to_string();
            assert!(err.contains(needle), "{expr} {tz}: {err}");
        }
    }
}
