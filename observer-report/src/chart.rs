//! The coverage-over-time chart: an inline SVG line chart (no script), one line per measure.
use std::fmt::Write as _;

use super::{html::escape, model::format_percent, timeline::TimelinePoint};

const W: f64 = 880.0;
const H: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 36.0;

/// (label, colour, value of a point) for each line of the chart.
type Series<'a> = (&'a str, &'a str, fn(&TimelinePoint) -> Option<f64>);

const SERIES: [Series<'static>; 4] = [
    ("lines", "#1f77b4", |p| p.totals.lines.percent()),
    ("functions", "#2ca02c", |p| p.totals.functions.percent()),
    ("branches", "#d62728", |p| p.totals.branches.percent()),
    ("regions", "#9467bd", |p| {
        p.totals.regions.and_then(|r| r.percent())
    }),
];

/// The x position of each point: seconds since the first dump ended when every point has its
/// time and time moves on, the point's index otherwise.
fn xs(points: &[TimelinePoint]) -> (Vec<f64>, &'static str) {
    let times: Option<Vec<u64>> = points.iter().map(|p| p.end_ns).collect();
    if let Some(t) = times {
        let first = t.first().copied().unwrap_or(0);
        let last = t.last().copied().unwrap_or(0);
        if last > first && t.windows(2).all(|w| w[1] >= w[0]) {
            let span = (last - first) as f64 / 1e9;
            let (unit, label) = if span > 3.0 * 3600.0 {
                (3600.0, "hours since the first dump")
            } else if span > 600.0 {
                (60.0, "minutes since the first dump")
            } else {
                (1.0, "seconds since the first dump")
            };
            return (
                t.iter().map(|&x| (x - first) as f64 / 1e9 / unit).collect(),
                label,
            );
        }
    }
    (
        (1..=points.len()).map(|i| i as f64).collect(),
        "artifacts collected",
    )
}

/// Round tick step for a span (1, 2, 5 times a power of ten), about `n` ticks.
fn tick_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

/// The chart as an `<svg>` element, or a short note when there is nothing to draw.
pub fn svg(points: &[TimelinePoint]) -> String {
    if points.is_empty() {
        return "<p class=\"note\">No artifact was reported: no timeline.</p>".to_string();
    }
    let (x, x_label) = xs(points);
    let x_min = x.first().copied().unwrap_or(0.0);
    let x_max = x.last().copied().unwrap_or(1.0).max(x_min + 1e-9);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |v: f64| {
        if points.len() == 1 {
            LEFT + pw / 2.0
        } else {
            LEFT + (v - x_min) / (x_max - x_min) * pw
        }
    };
    let sy = |pct: f64| TOP + (100.0 - pct.clamp(0.0, 100.0)) / 100.0 * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         aria-label=\"coverage after each artifact\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    // Grid and y axis: 0..100 %.
    for pct in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let y = sy(pct);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{pct}%</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    // x ticks.
    if points.len() > 1 {
        let step = tick_step(x_max - x_min, 8.0);
        let mut v = (x_min / step).ceil() * step;
        while v <= x_max + 1e-9 {
            let px = sx(v);
            let _ = write!(
                s,
                "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" class=\"axis\"/>\
                 <text x=\"{px:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph + 4.0,
                TOP + ph + 16.0,
                fmt_num(v)
            );
            v += step;
        }
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"label\" text-anchor=\"middle\">{}</text>",
        LEFT + pw / 2.0,
        H - 4.0,
        escape(x_label)
    );
    // One polyline per measure, with a dot (and a tooltip) per point.
    let mut legend_x = LEFT + 8.0;
    for (name, colour, value) in SERIES {
        let pts: Vec<(f64, f64, &TimelinePoint)> = points
            .iter()
            .zip(&x)
            .filter_map(|(p, &xv)| value(p).map(|v| (sx(xv), v, p)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(px, v, _)| format!("{px:.1},{:.1}", sy(*v)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        // Dots only while they stay readable.
        if pts.len() <= 200 {
            for (px, v, p) in &pts {
                let _ = write!(
                    s,
                    "<circle cx=\"{px:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}</title></circle>",
                    sy(*v),
                    escape(&format!(
                        "#{} seq {} pid {} {}: {name} {}%",
                        p.index,
                        p.seq,
                        p.pid,
                        p.module,
                        format_percent(*v)
                    ))
                );
            }
        }
        let _ = write!(
            s,
            "<rect x=\"{legend_x:.1}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{name}</text>",
            8.0,
            legend_x + 16.0,
            13.0
        );
        legend_x += 90.0;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counts, Totals};

    fn p(i: usize, end: Option<u64>, hit: u64) -> TimelinePoint {
        TimelinePoint {
            index: i,
            seq: i as u64,
            pid: 7,
            tid: None,
            runtime: "llvm".into(),
            module: "<m&m>".into(),
            trigger: None,
            end_ns: end,
            totals: Totals {
                lines: Counts::new(hit, 10),
                ..Totals::default()
            },
            module_added: None,
        }
    }

    #[test]
    fn chart() {
        let s = svg(&[p(1, Some(1_000_000_000), 2), p(2, Some(3_000_000_000), 5)]);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("seconds since the first dump"));
        assert!(s.contains("<polyline"));
        // Module names are escaped in tooltips.
        assert!(s.contains("&lt;m&amp;m&gt;"));
        assert!(!s.contains("<m&m>"));
        let s = svg(&[p(1, Some(0), 2), p(2, Some(3600 * 1_000_000_000), 5)]);
        assert!(s.contains("minutes since the first dump"));
        let s = svg(&[p(1, None, 2), p(2, None, 5)]);
        assert!(s.contains("artifacts collected"));
        assert!(svg(&[]).contains("no timeline"));
        assert!(svg(&[p(1, Some(5), 1)]).contains("<circle"));
    }

    #[test]
    fn ticks() {
        assert_eq!(tick_step(10.0, 8.0), 2.0);
        assert_eq!(tick_step(1000.0, 8.0), 200.0);
        assert_eq!(tick_step(3.0, 8.0), 0.5);
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(0.5), "0.5");
    }
}
