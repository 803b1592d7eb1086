//! `pql backtest --report FILE.html`: one self-contained page (inline SVG, CSS and a little
//! JS; nothing is fetched when it is viewed) with the backtest's charts: the funnel by stage,
//! the time from sign-up to PQL, the score distribution with the tier thresholds, precision and
//! recall over a range of score thresholds (with outcomes), and, with `--compare`, a second
//! definition side by side.
//!
//! The charts are SVG drawn here, so the page reads without JS; the script only adds hover
//! read-outs and marks the page rendered (`data-charts` on `<body>`, which the browser test
//! checks).

use std::collections::HashMap;
use std::fmt::Write as _;

use pql_engine::backtest::{AccountResult, Accuracy, Summary};
use pql_engine::{Definition, Stage, Timestamp};

/// One definition's backtest.
pub struct Side<'a> {
    pub definition: &'a Definition,
    pub results: &'a [AccountResult],
    pub summary: &'a Summary,
    pub accuracy: Option<&'a Accuracy>,
}

/// The whole page.
pub struct Page<'a> {
    pub events_file: &'a str,
    pub events: u64,
    pub as_of: Option<Timestamp>,
    pub sides: Vec<Side<'a>>,
    /// Known conversions (account → time), when outcomes were given.
    pub conversions: Option<&'a HashMap<String, Timestamp>>,
}

const COLORS: [&str; 2] = ["#2563eb", "#d97706"];
const W: f64 = 520.0;
const H: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{:.1}%", 100.0 * x))
}

/// A "nice" upper bound for an axis.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn svg_open(out: &mut String, kind: &str, label: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" data-chart="{kind}" role="img" aria-label="{}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(label)
    );
}

fn y_axis(out: &mut String, max: f64, as_percent: bool) {
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let label = if as_percent {
            format!("{}%", fmt_num(v * 100.0))
        } else {
            fmt_num(v)
        };
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
}

/// Vertical bars, one per label.
fn bar_chart(kind: &str, label: &str, labels: &[String], values: &[f64], color: &str) -> String {
    let mut out = String::new();
    svg_open(&mut out, kind, label);
    let max = nice_max(values.iter().copied().fold(0.0, f64::max));
    y_axis(&mut out, max, false);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = labels.len().max(1) as f64;
    let slot = plot_w / n;
    for (i, (l, v)) in labels.iter().zip(values).enumerate() {
        let h = plot_h * v / max;
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let y = TOP + plot_h - h;
        let _ = write!(
            out,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{color}" data-value="{}"><title>{}: {}</title></rect><text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="value" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            slot * 0.7,
            fmt_num(*v),
            escape(l),
            fmt_num(*v),
            x + slot * 0.35,
            H - BOTTOM + 16.0,
            escape(l),
            x + slot * 0.35,
            (y - 4.0).max(TOP + 8.0),
            fmt_num(*v)
        );
    }
    out.push_str("</svg>");
    out
}

/// A histogram of `values` over `[0, hi)` in `bins` bins, with vertical markers.
fn histogram(
    (kind, label): (&str, &str),
    values: &[f64],
    bins: usize,
    hi: f64,
    markers: &[(f64, String)],
    x_label: &str,
    color: &str,
) -> String {
    let mut counts = vec![0f64; bins];
    let width = hi / bins as f64;
    for v in values {
        let i = ((v / width).floor().max(0.0) as usize).min(bins - 1);
        counts[i] += 1.0;
    }
    let mut out = String::new();
    svg_open(&mut out, kind, label);
    let max = nice_max(counts.iter().copied().fold(0.0, f64::max));
    y_axis(&mut out, max, false);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x_of = |v: f64| LEFT + plot_w * (v / hi).clamp(0.0, 1.0);
    for (i, c) in counts.iter().enumerate() {
        let h = plot_h * c / max;
        let lo = width * i as f64;
        let _ = write!(
            out,
            r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}" data-value="{}"><title>{} to {} {x_label}: {} accounts</title></rect>"#,
            x_of(lo) + 0.5,
            TOP + plot_h - h,
            (plot_w / bins as f64 - 1.0).max(0.5),
            fmt_num(*c),
            fmt_num(lo),
            fmt_num(lo + width),
            fmt_num(*c)
        );
    }
    for i in 0..=5 {
        let v = hi * f64::from(i) / 5.0;
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(v),
            H - BOTTOM + 16.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        H - 6.0,
        escape(x_label)
    );
    for (i, (v, name)) in markers.iter().enumerate() {
        let x = x_of(*v);
        let _ = write!(
            out,
            r#"<line class="threshold" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}"/><text class="threshold-label" x="{:.1}" y="{:.1}">{}</text>"#,
            TOP + plot_h,
            x + 3.0,
            TOP + 10.0 + 12.0 * i as f64,
            escape(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Lines over a shared x axis (values in 0..=1, drawn as percentages).
fn line_chart(
    kind: &str,
    label: &str,
    xs: &[f64],
    series: &[(&str, &str, Vec<Option<f64>>)],
    markers: &[(f64, String)],
    x_label: &str,
) -> String {
    let mut out = String::new();
    svg_open(&mut out, kind, label);
    y_axis(&mut out, 1.0, true);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let hi = xs.last().copied().unwrap_or(1.0).max(1e-9);
    let x_of = |v: f64| LEFT + plot_w * (v / hi).clamp(0.0, 1.0);
    let y_of = |v: f64| TOP + plot_h - plot_h * v.clamp(0.0, 1.0);
    for (name, color, ys) in series {
        let mut d = String::new();
        for (x, y) in xs.iter().zip(ys) {
            if let Some(y) = y {
                let _ = write!(
                    d,
                    "{}{:.1},{:.1} ",
                    if d.is_empty() { "M" } else { "L" },
                    x_of(*x),
                    y_of(*y)
                );
            }
        }
        let _ = write!(
            out,
            r#"<path class="line" d="{}" stroke="{color}" fill="none" stroke-width="2"><title>{}</title></path>"#,
            d.trim_end(),
            escape(name)
        );
        for (x, y) in xs.iter().zip(ys) {
            if let Some(y) = y {
                let _ = write!(
                    out,
                    r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{} at score ≥ {}: {}</title></circle>"#,
                    x_of(*x),
                    y_of(*y),
                    escape(name),
                    fmt_num(*x),
                    percent(Some(*y))
                );
            }
        }
    }
    for i in 0..=5 {
        let v = hi * f64::from(i) / 5.0;
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(v),
            H - BOTTOM + 16.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        H - 6.0,
        escape(x_label)
    );
    for (i, (v, name)) in markers.iter().enumerate() {
        let x = x_of(*v);
        let _ = write!(
            out,
            r#"<line class="threshold" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}"/><text class="threshold-label" x="{:.1}" y="{:.1}">{}</text>"#,
            TOP + plot_h,
            x + 3.0,
            TOP + 10.0 + 12.0 * i as f64,
            escape(name)
        );
    }
    let mut lx = LEFT + 8.0;
    for (name, color, _) in series {
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            TOP + 2.0,
            lx + 14.0,
            TOP + 11.0,
            escape(name)
        );
        lx += 110.0;
    }
    out.push_str("</svg>");
    out
}

/// Accounts that reached each step of the product-led path.
pub fn funnel(
    side: &Side<'_>,
    conversions: Option<&HashMap<String, Timestamp>>,
) -> Vec<(String, f64)> {
    let r = side.results;
    let activated = r
        .iter()
        .filter(|a| {
            a.qualified
                || a.decision.activated
                || a.stage != Stage::SignedUp && a.stage != Stage::Disqualified
        })
        .count();
    let mut steps = vec![
        ("signed up".to_owned(), r.len() as f64),
        ("activated".to_owned(), activated as f64),
        ("PQL".to_owned(), side.summary.qualified as f64),
    ];
    if let Some(c) = conversions {
        let converted = r
            .iter()
            .filter(|a| a.qualified && c.contains_key(&a.account))
            .count();
        steps.push(("PQL → converted".to_owned(), converted as f64));
    }
    steps
}

/// Precision and recall of "score at the as-of time ≥ t" against the conversions, for `t` in
/// `thresholds`.
pub fn precision_recall(
    results: &[AccountResult],
    conversions: &HashMap<String, Timestamp>,
    thresholds: &[f64],
) -> Vec<(Option<f64>, Option<f64>)> {
    let converted = results
        .iter()
        .filter(|r| conversions.contains_key(&r.account))
        .count();
    thresholds
        .iter()
        .map(|t| {
            let flagged: Vec<&AccountResult> =
                results.iter().filter(|r| r.decision.score >= *t).collect();
            let hits = flagged
                .iter()
                .filter(|r| conversions.contains_key(&r.account))
                .count();
            let precision = (!flagged.is_empty()).then(|| hits as f64 / flagged.len() as f64);
            let recall = (converted > 0).then(|| hits as f64 / converted as f64);
            (precision, recall)
        })
        .collect()
}

fn side_charts(
    page: &Page<'_>,
    side: &Side<'_>,
    color: &str,
    score_hi: f64,
    days_hi: f64,
) -> Vec<(String, String)> {
    let d = side.definition;
    let mut charts = Vec::new();
    let steps = funnel(side, page.conversions);
    let (labels, values): (Vec<String>, Vec<f64>) = steps.into_iter().unzip();
    charts.push((
        "Funnel".to_owned(),
        bar_chart(
            "funnel",
            &format!("funnel of {}", d.name),
            &labels,
            &values,
            color,
        ),
    ));
    let stages: Vec<(String, f64)> = side
        .summary
        .by_stage
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), *n as f64))
        .collect();
    let (labels, values): (Vec<String>, Vec<f64>) = stages.into_iter().unzip();
    charts.push((
        "Accounts by stage (as of the end)".to_owned(),
        bar_chart("stages", "accounts by stage", &labels, &values, color),
    ));
    let days: Vec<f64> = side.results.iter().filter_map(|r| r.days_to_pql).collect();
    let median = side
        .summary
        .median_days_to_pql
        .map(|m| vec![(m, format!("median {}", fmt_num(m)))])
        .unwrap_or_default();
    charts.push((
        format!("Time from sign-up to PQL ({} PQLs)", days.len()),
        histogram(
            ("time-to-pql", "days from sign-up to PQL"),
            &days,
            20,
            days_hi,
            &median,
            "days",
            color,
        ),
    ));
    let scores: Vec<f64> = side.results.iter().map(|r| r.decision.score).collect();
    let markers = vec![
        (d.tiers.warm, format!("warm {}", fmt_num(d.tiers.warm))),
        (d.tiers.hot, format!("hot {}", fmt_num(d.tiers.hot))),
    ];
    charts.push((
        "Score distribution (as of the end)".to_owned(),
        histogram(
            ("scores", "score distribution"),
            &scores,
            25,
            score_hi,
            &markers,
            "score",
            color,
        ),
    ));
    if let Some(conversions) = page.conversions {
        let xs: Vec<f64> = (0..=40).map(|i| score_hi * f64::from(i) / 40.0).collect();
        let pr = precision_recall(side.results, conversions, &xs);
        let (p, r): (Vec<Option<f64>>, Vec<Option<f64>>) = pr.into_iter().unzip();
        charts.push((
            "Precision and recall of “score ≥ threshold”".to_owned(),
            line_chart(
                "precision-recall",
                "precision and recall over score thresholds",
                &xs,
                &[("precision", "#16a34a", p), ("recall", "#9333ea", r)],
                &markers,
                "score threshold",
            ),
        ));
    }
    charts
}

fn summary_table(page: &Page<'_>) -> String {
    let mut out = String::from(r#"<table class="summary"><thead><tr><th></th>"#);
    for side in &page.sides {
        let _ = write!(
            out,
            "<th>{}<br><code>{}</code></th>",
            escape(&side.definition.name),
            escape(&side.definition.version)
        );
    }
    out.push_str("</tr></thead><tbody>");
    let mut row = |name: &str, cell: &dyn Fn(&Side<'_>) -> String| {
        let _ = write!(out, "<tr><th>{}</th>", escape(name));
        for side in &page.sides {
            let _ = write!(out, "<td>{}</td>", escape(&cell(side)));
        }
        out.push_str("</tr>");
    };
    row("accounts", &|s| s.summary.accounts.to_string());
    row("PQLs", &|s| {
        format!(
            "{} ({})",
            s.summary.qualified,
            percent(
                (s.summary.accounts > 0)
                    .then(|| s.summary.qualified as f64 / s.summary.accounts as f64)
            )
        )
    });
    row("median days to PQL", &|s| {
        s.summary
            .median_days_to_pql
            .map_or_else(|| "n/a".into(), |d| format!("{d:.1}"))
    });
    row("tiers warm / hot", &|s| {
        format!(
            "{} / {}",
            fmt_num(s.definition.tiers.warm),
            fmt_num(s.definition.tiers.hot)
        )
    });
    if page.conversions.is_some() {
        row("precision", &|s| {
            percent(s.accuracy.and_then(|a| a.precision))
        });
        row("recall", &|s| percent(s.accuracy.and_then(|a| a.recall)));
        row("lift", &|s| {
            s.accuracy
                .and_then(|a| a.lift)
                .map_or_else(|| "n/a".into(), |l| format!("{l:.1}×"))
        });
    }
    out.push_str("</tbody></table>");
    out
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#111827;background:#f9fafb}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#4b5563;margin-bottom:16px}
.cols{display:grid;grid-template-columns:repeat(var(--sides),minmax(0,1fr));gap:16px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px}
.card h3{font-size:14px;margin:0 0 8px}
svg.chart{max-width:100%;height:auto}
.grid{stroke:#e5e7eb}.tick,.axis,.legend,.value{font-size:11px;fill:#4b5563}
.threshold{stroke:#dc2626;stroke-dasharray:4 3}.threshold-label{font-size:11px;fill:#dc2626}
.bar:hover,.point:hover{opacity:.7}
table.summary{border-collapse:collapse;background:#fff}
table.summary th,table.summary td{border:1px solid #e5e7eb;padding:4px 10px;text-align:left}
#readout{position:fixed;right:16px;bottom:16px;background:#111827;color:#fff;padding:4px 8px;border-radius:4px;font-size:12px;display:none}
"#;

const SCRIPT: &str = r#"
(function () {
  var charts = document.querySelectorAll('svg.chart');
  var readout = document.getElementById('readout');
  charts.forEach(function (svg) {
    svg.addEventListener('mousemove', function (e) {
      var t = e.target.querySelector ? e.target.querySelector('title') : null;
      if (t) { readout.textContent = t.textContent; readout.style.display = 'block'; }
    });
    svg.addEventListener('mouseleave', function () { readout.style.display = 'none'; });
  });
  document.body.setAttribute('data-charts', String(charts.length));
})();
"#;

/// The page, as one HTML document.
pub fn render(page: &Page<'_>) -> String {
    let score_hi = nice_max(
        page.sides
            .iter()
            .flat_map(|s| {
                s.results
                    .iter()
                    .map(|r| r.decision.score)
                    .chain([s.definition.tiers.hot * 1.2])
            })
            .fold(0.0, f64::max),
    );
    let days_hi = nice_max(
        page.sides
            .iter()
            .flat_map(|s| s.results.iter().filter_map(|r| r.days_to_pql))
            .fold(1.0, f64::max),
    );
    let title = match page.sides.as_slice() {
        [one] => format!("Backtest: {}", one.definition.name),
        sides => format!(
            "Backtest: {}",
            sides
                .iter()
                .map(|s| s.definition.name.as_str())
                .collect::<Vec<_>>()
                .join(" vs ")
        ),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title><style>{STYLE}</style></head><body style="--sides:{}">"#,
        escape(&title),
        page.sides.len()
    );
    let _ = write!(
        out,
        r#"<h1>{}</h1><div class="meta">{} events from <code>{}</code>, as of {}{}</div>"#,
        escape(&title),
        page.events,
        escape(page.events_file),
        page.as_of
            .map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339),
        if page.conversions.is_some() {
            ", with known outcomes"
        } else {
            ""
        }
    );
    out.push_str("<h2>Summary</h2>");
    out.push_str(&summary_table(page));
    let per_side: Vec<Vec<(String, String)>> = page
        .sides
        .iter()
        .enumerate()
        .map(|(i, s)| side_charts(page, s, COLORS[i % COLORS.len()], score_hi, days_hi))
        .collect();
    let rows = per_side.first().map_or(0, Vec::len);
    for row in 0..rows {
        let _ = write!(
            out,
            "<h2>{}</h2><div class=\"cols\">",
            escape(&per_side[0][row].0)
        );
        for (i, charts) in per_side.iter().enumerate() {
            let _ = write!(
                out,
                r#"<div class="card"><h3>{} <code>{}</code></h3>{}</div>"#,
                escape(&page.sides[i].definition.name),
                escape(&page.sides[i].definition.version),
                charts[row].1
            );
        }
        out.push_str("</div>");
    }
    if page.conversions.is_some() {
        out.push_str("<p class=\"meta\">Precision and recall by threshold count an account as flagged when its score at the as-of time is at or above the threshold (the score alone, without the PQL rule's milestones, fit and gates); the summary's figures are the full rule's, first qualification before conversion.</p>");
    }
    let _ = write!(
        out,
        r#"<div id="readout"></div><script>{SCRIPT}</script></body></html>"#
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn nice_axis_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(42.0), 50.0);
        assert_eq!(nice_max(120.0), 200.0);
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let svg = histogram(
            ("h", "h"),
            &[0.0, 1.0, 9.9, 10.0, 55.0],
            10,
            10.0,
            &[],
            "x",
            "#000",
        );
        let total: f64 = svg
            .split("data-value=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse::<f64>().unwrap())
            .sum();
        assert_eq!(total, 5.0);
    }
}
