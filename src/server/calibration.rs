//! The calibration chart of the runs page: the latest backtest's pairs (`hypod backtest`), each
//! proposal's 95 % predicted interval as a bar and the lift its later test measured as a dot
//! (green inside, red outside), sorted by predicted lift, drawn as a server-side SVG. The page
//! never runs a backtest: it draws the result the command kept. Every text in the SVG is
//! escaped here (the SVG goes into the page as markup, past the template's escaping).

use super::charts::escape;
use serde_json::Value;
use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One tested pair with an interval, as the chart needs it.
struct Point {
    low: f64,
    high: f64,
    realised: f64,
    inside: bool,
    label: String,
}

fn points(result: &Value) -> Vec<Point> {
    let Some(pairs) = result.get("pairs").and_then(Value::as_array) else {
        return Vec::new();
    };
    let text = |p: &Value, k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut points: Vec<Point> = pairs
        .iter()
        .filter(|p| !p.get("blocked").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|p| {
            let interval = p.get("predicted_interval")?.as_array()?;
            let (low, high) = (interval.first()?.as_f64()?, interval.get(1)?.as_f64()?);
            let realised = p.get("realised_lift")?.as_f64()?;
            if !(low.is_finite() && high.is_finite() && realised.is_finite()) {
                return None;
            }
            Some(Point {
                low,
                high,
                realised,
                inside: low <= realised && realised <= high,
                label: format!(
                    "{} · {} · {} for {} (cutoff {}, {}): predicted {:+.1}% to {:+.1}%, measured {:+.1}%",
                    text(p, "strategy"),
                    text(p, "moment"),
                    text(p, "lever"),
                    text(p, "segment"),
                    text(p, "cutoff"),
                    text(p, "experiment_id"),
                    low * 100.0,
                    high * 100.0,
                    realised * 100.0
                ),
            })
        })
        .collect();
    points.sort_by(|a, b| {
        (a.low + a.high)
            .total_cmp(&(b.low + b.high))
            .then(a.realised.total_cmp(&b.realised))
    });
    points
}

/// The chart of a kept backtest's result (its `--json` view), or `None` when no matched
/// proposal was tested with a predicted interval.
pub fn calibration_svg(result: &Value) -> Option<String> {
    let points = points(result);
    if points.is_empty() {
        return None;
    }
    let lo = points
        .iter()
        .map(|p| p.low.min(p.realised))
        .fold(0.0f64, f64::min);
    let hi = points
        .iter()
        .map(|p| p.high.max(p.realised))
        .fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.05).max(0.005);
    let (lo, hi) = (lo - pad, hi + pad);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * plot_h;
    let step = plot_w / points.len() as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="calibration-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="Predicted 95% intervals and measured lifts of {} tested proposals">"##,
        points.len()
    );
    // Axis: zero line and the range's ends, in percent.
    for v in [lo + pad, 0.0, hi - pad] {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{}" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#667">{:+.1}%</text>"##,
            WIDTH - RIGHT,
            y(v),
            y(v),
            if v == 0.0 { "#99a" } else { "#e3e6eb" },
            LEFT - 4.0,
            y(v) + 3.0,
            v * 100.0
        );
    }
    let bar = (step * 0.5).clamp(1.5, 10.0);
    for (i, p) in points.iter().enumerate() {
        let x = LEFT + step * (i as f64 + 0.5);
        let colour = if p.inside { "#1c6b35" } else { "#a32626" };
        let _ = write!(
            svg,
            r##"<g class="pair {}"><title>{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#c9d8f5"/><circle cx="{x:.1}" cy="{:.1}" r="{:.1}" fill="{colour}"/></g>"##,
            if p.inside { "inside" } else { "outside" },
            escape(&p.label),
            x - bar / 2.0,
            y(p.high),
            bar,
            (y(p.low) - y(p.high)).max(1.0),
            y(p.realised),
            (bar / 2.0).clamp(1.5, 3.5),
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-size="11" fill="#667">tested proposals, by predicted lift: bar = 95% predicted interval, dot = measured lift (green inside, red outside)</text></svg>"##,
        HEIGHT - 8.0
    );
    Some(svg)
}

/// What `runs_calibration.html` shows of a kept backtest: when it ran, its overall figures and
/// the chart (markup, escaped here).
pub fn view(kept: &crate::store::BacktestRecord) -> minijinja::Value {
    let result = &kept.result;
    minijinja::context! {
        ran_at => crate::store::timestamp(kept.ran_at),
        proposer => kept.proposer.clone(),
        from => result.get("from").cloned().unwrap_or(Value::Null),
        cutoffs => result.get("cutoffs").and_then(Value::as_array).map_or(0, Vec::len),
        overall => minijinja::Value::from_serialize(result.get("overall").unwrap_or(&Value::Null)),
        svg => calibration_svg(result).map(minijinja::Value::from_safe_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_each_tested_pair_and_escapes_its_text() {
        let result = serde_json::json!({"pairs": [
            {"predicted_interval": [0.01, 0.05], "realised_lift": 0.03, "lever": "<script>", "blocked": false},
            {"predicted_interval": [0.01, 0.05], "realised_lift": -0.02, "lever": "a&b"},
            {"predicted_interval": [0.01, 0.05], "realised_lift": null},
            {"predicted_interval": [0.01, 0.05], "realised_lift": 0.02, "blocked": true}
        ]});
        let svg = calibration_svg(&result).unwrap();
        assert_eq!(svg.matches("class=\"pair inside\"").count(), 1);
        assert_eq!(svg.matches("class=\"pair outside\"").count(), 1);
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
        assert!(svg.contains("a&amp;b"));
        assert!(calibration_svg(&serde_json::json!({"pairs": []})).is_none());
    }
}
