//! Charts for the web UI, drawn on the server as inline SVG: no script, no build step, nothing
//! fetched. Each chart is a `<figure>` holding the SVG (`role="img"`, a `<title>` and a `<desc>`
//! that reads every number), and a `<details>` table with the same numbers as text, so a screen
//! reader or a copy-paste gets what the bars show. Every text that goes into the markup is
//! escaped here; the figure is handed to the template as already-safe markup. Colours are SVG
//! presentation attributes (the pages' CSP allows no script; no `style` attribute is needed).
//! Pure functions: same input, same markup; never a NaN or an infinity in the output.

use crate::domain::units;
use std::fmt::Write;

/// How a chart's values read, on its axis, above its bars and in its table.
#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    /// A share of a whole, shown as an unsigned percentage (`18.8%`).
    Rate,
    /// A number of days (`81.5 days`).
    Days,
    /// Money in the configured currency, or "value units" without one.
    Money(Option<String>),
    /// A count of things.
    Count,
}

impl Unit {
    /// A value as the table and the description read it.
    pub fn format(&self, value: f64) -> String {
        match self {
            Unit::Rate => units::rate(value),
            Unit::Days => format!("{} days", trimmed(value, 1)),
            Unit::Money(currency) => units::money(value, currency.as_deref()),
            // `+ 0.0` turns a negative zero into a zero.
            Unit::Count => format!("{:.0}", value + 0.0),
        }
    }

    /// A value as an axis tick or a bar's label reads it (the axis label names the unit).
    fn short(&self, value: f64) -> String {
        match self {
            Unit::Rate => format!("{}%", trimmed(value * 100.0, 1)),
            Unit::Days => trimmed(value, 1),
            Unit::Money(_) => units::grouped(value),
            Unit::Count => format!("{value:.0}"),
        }
    }

    /// What the value axis measures, with its unit.
    pub fn axis_unit(&self) -> String {
        match self {
            Unit::Rate => "%".into(),
            Unit::Days => "days".into(),
            Unit::Money(currency) => currency.clone().unwrap_or_else(|| "value units".into()),
            Unit::Count => "count".into(),
        }
    }
}

/// One category on the horizontal axis (a quarter): its value, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    /// `None` (or a value that is not finite) draws nothing and reads "—".
    pub value: Option<f64>,
    /// Shown lighter and marked "partial": a quarter the history covers only in part.
    pub partial: bool,
    /// Said beside the value in the table and the description (e.g. "2 of 18").
    pub detail: Option<String>,
}

/// A horizontal band drawn behind the series (e.g. the healthy 30–50 % of the proven rate).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub low: f64,
    pub high: f64,
    pub label: String,
}

/// Bars, or a line through the points with an optional least-squares trend.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Bars,
    /// `trend`: the slope per category over the points that are not partial, drawn through
    /// their mean.
    Line {
        trend: Option<f64>,
    },
}

/// A chart of one series over categories.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The figure's `id` (the SVG's title and description ids derive from it).
    pub id: String,
    pub title: String,
    /// A sentence said below the title and first in the description.
    pub note: String,
    /// What the horizontal axis holds ("Quarter").
    pub x_label: String,
    /// What the values are ("Proven hypothesis rate"); the unit is added.
    pub y_label: String,
    pub unit: Unit,
    pub kind: Kind,
    pub points: Vec<Point>,
    pub band: Option<Band>,
}

/// One category of a stacked chart: a count per series.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub label: String,
    pub partial: bool,
    /// (series, count); a series absent here counts 0.
    pub parts: Vec<(String, f64)>,
}

/// Counts per category, stacked by series (experiments per quarter, by moment).
#[derive(Debug, Clone, PartialEq)]
pub struct StackedChart {
    pub id: String,
    pub title: String,
    pub note: String,
    pub x_label: String,
    pub y_label: String,
    /// The series, in stacking (and legend) order.
    pub series: Vec<String>,
    pub stacks: Vec<Stack>,
}

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 12.0;
const BOTTOM: f64 = 58.0;
const INK: &str = "#1d2330";
const MUTED: &str = "#667788";
const GRID: &str = "#e3e6eb";
const SERIES: &str = "#1f5fd1";
const PALETTE: [&str; 8] = [
    "#1f5fd1", "#e07b00", "#2e9e5b", "#a23bb5", "#c23b3b", "#6b7a8f", "#0f8ea0", "#8a6d00",
];

/// A chart's description for a screen reader: its note, then every reading per category.
fn describe(note: &str, x_label: &str, readings: &[String]) -> String {
    if readings.is_empty() {
        format!("{note} No data yet.")
    } else {
        format!(
            "{note} Per {}: {}.",
            x_label.to_lowercase(),
            readings.join("; ")
        )
    }
}

/// Text made safe for HTML and SVG, content and attribute values alike (control characters,
/// which XML does not allow, become spaces).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `value` with at most `digits` decimals, trailing zeros dropped (`81.5`, `95`).
fn trimmed(value: f64, digits: usize) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

/// A coordinate: one decimal, 0 for anything not finite.
fn c(value: f64) -> String {
    if value.is_finite() {
        trimmed(value, 1)
    } else {
        "0".into()
    }
}

fn finite(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

/// A "nice" step (1, 2, 2.5 or 5 times a power of ten) for about `ticks` ticks up to `max`,
/// and the axis top it gives. `max` ≤ 0 (nothing to show) gives an axis up to 1.
fn scale(max: f64, ticks: f64, whole: bool) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / ticks;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|f| f * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let step = if whole { step.ceil().max(1.0) } else { step };
    let top = (max / step - 1e-9).ceil().max(1.0) * step;
    (step, top)
}

/// The plot area and the vertical scale shared by every kind of chart.
struct Frame {
    top_margin: f64,
    step: f64,
    top: f64,
    slots: usize,
}

impl Frame {
    fn plot_height(&self) -> f64 {
        HEIGHT - self.top_margin - BOTTOM
    }
    fn base(&self) -> f64 {
        HEIGHT - BOTTOM
    }
    fn y(&self, value: f64) -> f64 {
        self.base() - (value / self.top).clamp(0.0, 1.0) * self.plot_height()
    }
    fn slot(&self) -> f64 {
        (WIDTH - LEFT - RIGHT) / self.slots.max(1) as f64
    }
    fn x(&self, index: usize) -> f64 {
        LEFT + self.slot() * (index as f64 + 0.5)
    }

    /// Grid lines with their tick labels, the axes, the axis labels and the category labels.
    fn axes(
        &self,
        svg: &mut String,
        unit: &Unit,
        x_label: &str,
        y_label: &str,
        cats: &[(&str, bool)],
    ) {
        let mut tick = 0.0;
        while tick <= self.top + self.step * 1e-6 {
            let y = self.y(tick);
            let _ = write!(
                svg,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GRID}"/><text x="{}" y="{}" text-anchor="end" font-size="11" fill="{MUTED}">{}</text>"#,
                c(LEFT),
                c(y),
                c(WIDTH - RIGHT),
                c(y),
                c(LEFT - 6.0),
                c(y + 4.0),
                escape(&unit.short(tick))
            );
            tick += self.step;
        }
        let _ = write!(
            svg,
            r#"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{INK}"/><line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="{INK}"/>"#,
            l = c(LEFT),
            b = c(self.base()),
            r = c(WIDTH - RIGHT),
            t = c(self.top_margin),
        );
        for (i, (label, partial)) in cats.iter().enumerate() {
            let x = self.x(i);
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="{INK}">{}</text>"#,
                c(x),
                c(self.base() + 15.0),
                escape(label)
            );
            if *partial {
                let _ = write!(
                    svg,
                    r#"<text x="{}" y="{}" text-anchor="middle" font-size="10" fill="{MUTED}" font-style="italic">partial</text>"#,
                    c(x),
                    c(self.base() + 27.0)
                );
            }
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="12" fill="{INK}">{}</text>"#,
            c(LEFT + (WIDTH - LEFT - RIGHT) / 2.0),
            c(HEIGHT - 8.0),
            escape(x_label)
        );
        let mid = self.top_margin + self.plot_height() / 2.0;
        let _ = write!(
            svg,
            r#"<text x="14" y="{m}" text-anchor="middle" font-size="12" fill="{INK}" transform="rotate(-90 14 {m})">{}</text>"#,
            escape(&format!("{y_label} ({})", unit.axis_unit())),
            m = c(mid),
        );
    }
}

/// The opening of a figure and its SVG: title, description.
fn open(id: &str, title: &str, note: &str, desc: &str) -> String {
    let id = escape(id);
    format!(
        r#"<figure class="chart" id="{id}"><figcaption><strong>{title}</strong> <span class="muted">{note}</span></figcaption><svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{id}-title {id}-desc" viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMidYMid meet"><title id="{id}-title">{title}</title><desc id="{id}-desc">{desc}</desc>"#,
        title = escape(title),
        note = escape(note),
        desc = escape(desc),
        w = c(WIDTH),
        h = c(HEIGHT),
    )
}

/// A category's label as the table and the description read it.
fn category(label: &str, partial: bool) -> String {
    if partial {
        format!("{label} (partial)")
    } else {
        label.to_string()
    }
}

/// The reading of one point: "18.8% (2 of 18)", or "—".
fn reading(unit: &Unit, point: &Point) -> String {
    match (finite(point.value), &point.detail) {
        (Some(v), Some(d)) => format!("{} ({d})", unit.format(v)),
        (Some(v), None) => unit.format(v),
        (None, _) => "—".into(),
    }
}

/// A chart of one series: bars or a line, with its band, as a figure with its table.
pub fn figure(chart: &Chart) -> String {
    let values: Vec<f64> = chart
        .points
        .iter()
        .filter_map(|p| finite(p.value))
        .collect();
    let mut max = values.iter().copied().fold(0.0, f64::max);
    if let Some(band) = &chart.band {
        max = max.max(band.high);
    }
    let whole = matches!(chart.unit, Unit::Count | Unit::Money(_));
    let (step, top) = scale(max, 4.0, whole);
    let frame = Frame {
        top_margin: 16.0,
        step,
        top,
        slots: chart.points.len(),
    };
    let readings: Vec<String> = chart
        .points
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                category(&p.label, p.partial),
                reading(&chart.unit, p)
            )
        })
        .collect();
    let desc = describe(&chart.note, &chart.x_label, &readings);
    let mut svg = open(&chart.id, &chart.title, &chart.note, &desc);
    if let Some(band) = &chart.band {
        let (y_high, y_low) = (frame.y(band.high), frame.y(band.low));
        let _ = write!(
            svg,
            r##"<rect class="band" x="{}" y="{}" width="{}" height="{}" fill="#2e9e5b" fill-opacity="0.14" stroke="#2e9e5b" stroke-opacity="0.5" stroke-dasharray="4 3"/><text x="{}" y="{}" font-size="11" fill="#1c6b35">{}</text>"##,
            c(LEFT),
            c(y_high),
            c(WIDTH - RIGHT - LEFT),
            c((y_low - y_high).max(0.0)),
            c(LEFT + 4.0),
            c(y_high + 12.0),
            escape(&band.label)
        );
    }
    let cats: Vec<(&str, bool)> = chart
        .points
        .iter()
        .map(|p| (p.label.as_str(), p.partial))
        .collect();
    frame.axes(&mut svg, &chart.unit, &chart.x_label, &chart.y_label, &cats);
    match chart.kind {
        Kind::Bars => bars(&mut svg, &frame, chart),
        Kind::Line { trend } => line(&mut svg, &frame, chart, trend),
    }
    svg.push_str("</svg>");
    table(
        &mut svg,
        &chart.x_label,
        &[format!("{} ({})", chart.y_label, chart.unit.axis_unit())],
        chart
            .points
            .iter()
            .map(|p| (category(&p.label, p.partial), vec![reading(&chart.unit, p)])),
    );
    svg.push_str("</figure>");
    svg
}

fn bars(svg: &mut String, frame: &Frame, chart: &Chart) {
    let width = (frame.slot() * 0.6).min(48.0);
    for (i, point) in chart.points.iter().enumerate() {
        let Some(value) = finite(point.value) else {
            continue;
        };
        let y = frame.y(value);
        let opacity = if point.partial { "0.4" } else { "1" };
        let _ = write!(
            svg,
            r#"<rect class="bar" data-category="{}" x="{}" y="{}" width="{}" height="{}" fill="{SERIES}" fill-opacity="{opacity}"/><text x="{}" y="{}" text-anchor="middle" font-size="10" fill="{INK}">{}</text>"#,
            escape(&point.label),
            c(frame.x(i) - width / 2.0),
            c(y),
            c(width),
            c(frame.base() - y),
            c(frame.x(i)),
            c(y - 4.0),
            escape(&chart.unit.short(value))
        );
    }
}

fn line(svg: &mut String, frame: &Frame, chart: &Chart, trend: Option<f64>) {
    // Segments join neighbouring points that both have a value.
    let mut previous: Option<(f64, f64)> = None;
    for (i, point) in chart.points.iter().enumerate() {
        let here = finite(point.value).map(|v| (frame.x(i), frame.y(v)));
        if let (Some((x1, y1)), Some((x2, y2))) = (previous, here) {
            let _ = write!(
                svg,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{SERIES}" stroke-width="2"/>"#,
                c(x1),
                c(y1),
                c(x2),
                c(y2)
            );
        }
        previous = here;
    }
    for (i, point) in chart.points.iter().enumerate() {
        let Some(value) = finite(point.value) else {
            continue;
        };
        let fill = if point.partial { "#ffffff" } else { SERIES };
        let _ = write!(
            svg,
            r#"<circle class="point" data-category="{}" cx="{}" cy="{}" r="4" fill="{fill}" stroke="{SERIES}" stroke-width="2"/><text x="{}" y="{}" text-anchor="middle" font-size="10" fill="{INK}">{}</text>"#,
            escape(&point.label),
            c(frame.x(i)),
            c(frame.y(value)),
            c(frame.x(i)),
            c(frame.y(value) - 8.0),
            escape(&chart.unit.short(value))
        );
    }
    // The trend: the least-squares line through the complete points, by their rank.
    let complete: Vec<(usize, f64)> = chart
        .points
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.partial)
        .filter_map(|(i, p)| finite(p.value).map(|v| (i, v)))
        .collect();
    if let (Some(slope), true) = (trend.filter(|s| s.is_finite()), complete.len() >= 2) {
        let n = complete.len() as f64;
        let mean_rank = (n - 1.0) / 2.0;
        let mean = complete.iter().map(|(_, v)| v).sum::<f64>() / n;
        let at = |rank: f64| mean + slope * (rank - mean_rank);
        let (first, last) = (complete[0].0, complete[complete.len() - 1].0);
        let _ = write!(
            svg,
            r##"<line class="trend" x1="{}" y1="{}" x2="{}" y2="{}" stroke="#e07b00" stroke-width="2" stroke-dasharray="6 4"/>"##,
            c(frame.x(first)),
            c(frame.y(at(0.0).max(0.0))),
            c(frame.x(last)),
            c(frame.y(at(n - 1.0).max(0.0)))
        );
    }
}

/// Counts per category stacked by series, with a legend, as a figure with its table.
pub fn stacked_figure(chart: &StackedChart) -> String {
    let count = |stack: &Stack, series: &str| {
        stack
            .parts
            .iter()
            .filter(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(0.0, |sum, v| sum + v)
    };
    let totals: Vec<f64> = chart
        .stacks
        .iter()
        .map(|s| chart.series.iter().map(|series| count(s, series)).sum())
        .collect();
    let (step, top) = scale(totals.iter().copied().fold(0.0, f64::max), 4.0, true);
    // The legend takes one row per as many names as fit in the width.
    let mut legend = String::new();
    let (mut x, mut row) = (LEFT, 0.0);
    for (i, name) in chart.series.iter().enumerate() {
        let width = 22.0 + 6.5 * name.chars().count() as f64;
        if x + width > WIDTH - RIGHT && x > LEFT {
            x = LEFT;
            row += 16.0;
        }
        let _ = write!(
            legend,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11" fill="{INK}">{}</text>"#,
            c(x),
            c(6.0 + row),
            PALETTE[i % PALETTE.len()],
            c(x + 14.0),
            c(15.0 + row),
            escape(name)
        );
        x += width;
    }
    let frame = Frame {
        top_margin: 30.0 + row,
        step,
        top,
        slots: chart.stacks.len(),
    };
    let readings: Vec<String> = chart
        .stacks
        .iter()
        .zip(&totals)
        .map(|(stack, total)| {
            let parts: Vec<String> = chart
                .series
                .iter()
                .filter(|s| count(stack, s) > 0.0)
                .map(|s| format!("{s} {}", Unit::Count.format(count(stack, s))))
                .collect();
            format!(
                "{} {} ({})",
                category(&stack.label, stack.partial),
                Unit::Count.format(*total),
                if parts.is_empty() {
                    "none".into()
                } else {
                    parts.join(", ")
                }
            )
        })
        .collect();
    let desc = describe(&chart.note, &chart.x_label, &readings);
    let mut svg = open(&chart.id, &chart.title, &chart.note, &desc);
    svg.push_str(&legend);
    let cats: Vec<(&str, bool)> = chart
        .stacks
        .iter()
        .map(|s| (s.label.as_str(), s.partial))
        .collect();
    frame.axes(
        &mut svg,
        &Unit::Count,
        &chart.x_label,
        &chart.y_label,
        &cats,
    );
    let width = (frame.slot() * 0.6).min(48.0);
    for (i, (stack, total)) in chart.stacks.iter().zip(&totals).enumerate() {
        let mut below = 0.0;
        let opacity = if stack.partial { "0.45" } else { "1" };
        for (k, series) in chart.series.iter().enumerate() {
            let value = count(stack, series);
            if value <= 0.0 {
                continue;
            }
            let (y_top, y_bottom) = (frame.y(below + value), frame.y(below));
            let _ = write!(
                svg,
                r#"<rect class="segment" x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="{opacity}"/>"#,
                c(frame.x(i) - width / 2.0),
                c(y_top),
                c(width),
                c((y_bottom - y_top).max(0.0)),
                PALETTE[k % PALETTE.len()],
            );
            below += value;
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="10" fill="{INK}">{}</text>"#,
            c(frame.x(i)),
            c(frame.y(*total) - 4.0),
            Unit::Count.format(*total)
        );
    }
    svg.push_str("</svg>");
    let mut columns: Vec<String> = chart.series.clone();
    columns.push("total".into());
    table(
        &mut svg,
        &chart.x_label,
        &columns,
        chart.stacks.iter().zip(&totals).map(|(stack, total)| {
            let mut cells: Vec<String> = chart
                .series
                .iter()
                .map(|s| Unit::Count.format(count(stack, s)))
                .collect();
            cells.push(Unit::Count.format(*total));
            (category(&stack.label, stack.partial), cells)
        }),
    );
    svg.push_str("</figure>");
    svg
}

/// The chart's numbers as a table, folded in a `<details>`.
fn table(
    out: &mut String,
    x_label: &str,
    columns: &[String],
    rows: impl Iterator<Item = (String, Vec<String>)>,
) {
    let _ = write!(
        out,
        r#"<details class="numbers"><summary>The numbers</summary><table><thead><tr><th scope="col">{}</th>"#,
        escape(x_label)
    );
    for column in columns {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, escape(column));
    }
    out.push_str("</tr></thead><tbody>");
    for (label, cells) in rows {
        let _ = write!(out, r#"<tr><th scope="row">{}</th>"#, escape(&label));
        for cell in cells {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></details>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, value: Option<f64>) -> Point {
        Point {
            label: label.into(),
            value,
            partial: false,
            detail: None,
        }
    }

    fn chart(points: Vec<Point>) -> Chart {
        Chart {
            id: "c".into(),
            title: "Proven rate".into(),
            note: "Healthy 30–50%.".into(),
            x_label: "Quarter".into(),
            y_label: "Proven hypothesis rate".into(),
            unit: Unit::Rate,
            kind: Kind::Bars,
            points,
            band: Some(Band {
                low: 0.3,
                high: 0.5,
                label: "healthy 30–50%".into(),
            }),
        }
    }

    /// Every number in the SVG's attributes is finite.
    fn assert_no_nan(svg: &str) {
        for bad in ["NaN", "inf", "Infinity"] {
            assert!(!svg.contains(bad), "{bad} in {svg}");
        }
    }

    /// The `attr` values of every element that opens with `<tag ` (a name and attributes).
    fn attrs(svg: &str, tag: &str, attr: &str) -> Vec<f64> {
        svg.split(&format!("<{tag}"))
            .skip(1)
            .filter_map(|rest| {
                let element = &rest[..rest.find('>')?];
                let at = element.find(&format!(" {attr}=\""))? + attr.len() + 3;
                let value = &element[at..];
                value[..value.find('"')?].parse().ok()
            })
            .collect()
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let hostile = r#"<script>alert("x")</script>&'"#;
        let mut chart = chart(vec![Point {
            label: hostile.into(),
            value: Some(0.2),
            partial: true,
            detail: Some(hostile.into()),
        }]);
        chart.id = hostile.into();
        chart.title = hostile.into();
        chart.note = hostile.into();
        chart.x_label = hostile.into();
        chart.y_label = hostile.into();
        chart.unit = Unit::Money(Some("<b>€</b>".into()));
        let svg = figure(&chart);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
        assert!(svg.contains("(&lt;b&gt;€&lt;/b&gt;)"), "{svg}");
        let stacked = stacked_figure(&StackedChart {
            id: "s".into(),
            title: hostile.into(),
            note: hostile.into(),
            x_label: "Quarter".into(),
            y_label: "Experiments".into(),
            series: vec![hostile.into()],
            stacks: vec![Stack {
                label: hostile.into(),
                partial: false,
                parts: vec![(hostile.into(), 2.0)],
            }],
        });
        assert!(!stacked.contains("<script"), "{stacked}");
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn an_empty_series_draws_axes_and_says_so() {
        let svg = figure(&chart(Vec::new()));
        assert_no_nan(&svg);
        assert!(svg.contains("No data yet."), "{svg}");
        assert!(!svg.contains("class=\"bar\""));
        assert!(svg.contains("<tbody></tbody>"));
        let stacked = stacked_figure(&StackedChart {
            id: "s".into(),
            title: "t".into(),
            note: "n".into(),
            x_label: "Quarter".into(),
            y_label: "Experiments".into(),
            series: Vec::new(),
            stacks: Vec::new(),
        });
        assert_no_nan(&stacked);
        assert!(stacked.contains("No data yet."));
    }

    #[test]
    fn a_single_quarter_is_one_centred_bar_under_the_band_scale() {
        let svg = figure(&chart(vec![point("2026-Q1", Some(0.2))]));
        assert_no_nan(&svg);
        let x = attrs(&svg, "rect class=\"bar\" data-category=\"2026-Q1\"", "x");
        let width = attrs(
            &svg,
            "rect class=\"bar\" data-category=\"2026-Q1\"",
            "width",
        );
        assert_eq!(x.len(), 1, "{svg}");
        // Centred in the plot.
        assert!((x[0] + width[0] / 2.0 - (LEFT + (WIDTH - LEFT - RIGHT) / 2.0)).abs() < 0.1);
        // The band and the bar share the scale: 0.2 is two thirds of 0.3.
        let base = HEIGHT - BOTTOM;
        let bar_y = attrs(&svg, "rect class=\"bar\" data-category=\"2026-Q1\"", "y")[0];
        let band_y = attrs(&svg, "rect class=\"band\"", "y")[0];
        let band_h = attrs(&svg, "rect class=\"band\"", "height")[0];
        let band_low = band_y + band_h;
        assert!(((base - bar_y) / (base - band_low) - 0.2 / 0.3).abs() < 0.01);
        assert!(svg.contains("<td>20.0%</td>"), "{svg}");
        assert!(svg.contains("2026-Q1 20.0%"));
    }

    #[test]
    fn all_zero_values_keep_a_finite_axis() {
        let mut zero = chart(vec![
            point("2025-Q1", Some(0.0)),
            point("2025-Q2", Some(0.0)),
        ]);
        zero.band = None;
        zero.unit = Unit::Money(None);
        let svg = figure(&zero);
        assert_no_nan(&svg);
        assert!(svg.contains("<td>0 value units</td>"), "{svg}");
        assert!(svg.contains("(value units)"));
        let heights = attrs(
            &svg,
            "rect class=\"bar\" data-category=\"2025-Q1\"",
            "height",
        );
        assert_eq!(heights, [0.0]);
        let stacked = stacked_figure(&StackedChart {
            id: "s".into(),
            title: "t".into(),
            note: "n".into(),
            x_label: "Quarter".into(),
            y_label: "Experiments".into(),
            series: vec!["search".into()],
            stacks: vec![Stack {
                label: "2025-Q1".into(),
                partial: false,
                parts: vec![("search".into(), 0.0)],
            }],
        });
        assert_no_nan(&stacked);
        assert!(stacked.contains("<td>0</td><td>0</td>"), "{stacked}");
    }

    #[test]
    fn missing_and_non_finite_values_read_as_a_dash_and_draw_nothing() {
        let mut line = chart(vec![
            point("2025-Q1", Some(95.0)),
            point("2025-Q2", None),
            point("2025-Q3", Some(f64::NAN)),
            point("2025-Q4", Some(f64::INFINITY)),
            point("2026-Q1", Some(61.0)),
        ]);
        line.unit = Unit::Days;
        line.band = None;
        line.kind = Kind::Line {
            trend: Some(f64::NAN),
        };
        let svg = figure(&line);
        assert_no_nan(&svg);
        assert_eq!(svg.matches("class=\"point\"").count(), 2);
        assert_eq!(svg.matches("<td>—</td>").count(), 3);
        assert!(!svg.contains("class=\"trend\""));
        assert!(svg.contains("<td>95 days</td>"));
    }

    #[test]
    fn partial_quarters_are_marked_and_left_out_of_the_trend() {
        let mut line = chart(vec![
            Point {
                partial: true,
                ..point("2024-Q4", Some(10.0))
            },
            point("2025-Q1", Some(90.0)),
            point("2025-Q2", Some(80.0)),
            point("2025-Q3", Some(70.0)),
            Point {
                partial: true,
                ..point("2025-Q4", Some(200.0))
            },
        ]);
        line.unit = Unit::Days;
        line.band = None;
        line.kind = Kind::Line { trend: Some(-10.0) };
        let svg = figure(&line);
        assert_no_nan(&svg);
        assert!(svg.contains("<th scope=\"row\">2024-Q4 (partial)</th>"));
        assert_eq!(svg.matches(">partial</text>").count(), 2);
        // The trend runs from the first complete quarter (90) to the last (70).
        let frame = Frame {
            top_margin: 16.0,
            step: 50.0,
            top: 200.0,
            slots: 5,
        };
        let y1 = attrs(&svg, "line class=\"trend\"", "y1")[0];
        let y2 = attrs(&svg, "line class=\"trend\"", "y2")[0];
        let x1 = attrs(&svg, "line class=\"trend\"", "x1")[0];
        assert!((y1 - frame.y(90.0)).abs() < 0.1, "{y1}");
        assert!((y2 - frame.y(70.0)).abs() < 0.1, "{y2}");
        assert!((x1 - frame.x(1)).abs() < 0.1);
    }

    #[test]
    fn stacks_add_up_and_the_table_has_a_total() {
        let svg = stacked_figure(&StackedChart {
            id: "s".into(),
            title: "Experiments per moment".into(),
            note: "n".into(),
            x_label: "Quarter".into(),
            y_label: "Experiments".into(),
            series: vec!["search".into(), "cart_checkout".into()],
            stacks: vec![
                Stack {
                    label: "2025-Q1".into(),
                    partial: false,
                    parts: vec![("search".into(), 3.0), ("cart_checkout".into(), 1.0)],
                },
                Stack {
                    label: "2025-Q2".into(),
                    partial: true,
                    parts: vec![("cart_checkout".into(), 2.0)],
                },
            ],
        });
        assert_no_nan(&svg);
        assert!(svg.contains("<th scope=\"row\">2025-Q1</th><td>3</td><td>1</td><td>4</td>"));
        assert!(
            svg.contains("<th scope=\"row\">2025-Q2 (partial)</th><td>0</td><td>2</td><td>2</td>")
        );
        assert!(
            svg.contains("2025-Q1 4 (search 3, cart_checkout 1)"),
            "{svg}"
        );
        assert_eq!(svg.matches("class=\"segment\"").count(), 3);
    }

    #[test]
    fn scales_are_nice() {
        let (step, top) = scale(0.5, 4.0, false);
        assert!((step - 0.2).abs() < 1e-12 && (top - 0.6).abs() < 1e-12);
        assert_eq!(scale(366_387.0, 4.0, false), (100_000.0, 400_000.0));
        assert_eq!(scale(0.0, 4.0, true), (1.0, 1.0));
        assert_eq!(scale(7.0, 4.0, true), (2.0, 8.0));
        assert_eq!(scale(f64::NAN, 4.0, false), (0.25, 1.0));
    }
}
