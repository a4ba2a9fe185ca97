//! How numbers read on the web pages and in `queue list`'s text: money with its currency (or
//! "value units" when `program.currency` names none), ages in days, rates as unsigned
//! percentages (lifts keep their sign elsewhere), p-values with a floor ("< 0.001").

use chrono::{DateTime, Utc};

/// An amount of value per day, in the configured currency or "value units".
pub fn money(amount: f64, currency: Option<&str>) -> String {
    let unit = currency.unwrap_or("value units");
    format!("{} {unit}", whole(amount))
}

/// A number rounded to a whole, thousands grouped with thin separators (`96 084`).
pub fn grouped(amount: f64) -> String {
    whole(amount)
}

fn whole(amount: f64) -> String {
    let rounded = amount.round();
    if !rounded.is_finite() {
        return "—".into();
    }
    let digits = format!("{:.0}", rounded.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    if rounded < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// How long ago `since` was at `now`, in whole days ("less than a day", "1 day", "3 days").
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    match (now - since).num_days() {
        d if d < 1 => "less than a day".into(),
        1 => "1 day".into(),
        d => format!("{d} days"),
    }
}

/// A rate (a share of a whole, never negative) as a percentage without a sign: `18.8%`.
pub fn rate(value: f64) -> String {
    if value.is_finite() {
        format!("{:.1}%", value * 100.0)
    } else {
        "—".into()
    }
}

/// A p-value: three decimals, or `< 0.001` below that (never `0.0000`).
pub fn p_value(p: f64) -> String {
    if !p.is_finite() {
        "—".into()
    } else if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn money_names_its_currency_or_value_units() {
        assert_eq!(money(96083.5, Some("EUR")), "96 084 EUR");
        assert_eq!(money(16224.0, None), "16 224 value units");
        assert_eq!(money(-1234.4, None), "-1 234 value units");
        assert_eq!(money(12.0, Some("USD")), "12 USD");
        assert_eq!(money(f64::NAN, None), "— value units");
    }

    #[test]
    fn ages_are_whole_days() {
        let t = Utc.with_ymd_and_hms(2026, 10, 15, 9, 0, 0).unwrap();
        assert_eq!(age(t, t + chrono::Duration::hours(5)), "less than a day");
        assert_eq!(age(t, t + chrono::Duration::hours(30)), "1 day");
        assert_eq!(age(t, t + chrono::Duration::days(3)), "3 days");
        assert_eq!(age(t, t - chrono::Duration::days(3)), "less than a day");
    }

    #[test]
    fn rates_carry_no_sign_and_p_values_a_floor() {
        assert_eq!(rate(0.1875), "18.8%");
        assert_eq!(rate(0.0), "0.0%");
        assert_eq!(p_value(0.00001), "< 0.001");
        assert_eq!(p_value(0.0), "< 0.001");
        assert_eq!(p_value(0.0123), "0.012");
        assert_eq!(p_value(0.5), "0.500");
    }
}
