//! Line charts as plain SVG text: axes, ticks, one polyline per series, a legend, and shaded
//! bands naming the scenarios. Any browser shows them; no plotting crate needed.

use std::fmt::Write;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
    /// Scenario bands: (start, end, name) on the x axis.
    pub bands: &'a [(f64, f64, String)],
    /// Logarithmic y axis (for latencies spanning decades).
    pub log_y: bool,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step for a span divided in about `n` parts.
fn step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart<'_> {
    /// The SVG document.
    pub fn render(&self) -> String {
        let (w, h) = (960.0, 420.0);
        let (left, right, top, bottom) = (70.0, 180.0, 40.0, 50.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        let mut y_min_pos = f64::INFINITY;
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
            if y > 0.0 {
                y_min_pos = y_min_pos.min(y);
            }
        }
        for (a, b, _) in self.bands {
            x0 = x0.min(*a);
            x1 = x1.max(*b);
        }
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if !y1.is_finite() || y1 <= 0.0 {
            y1 = 1.0;
        }
        let (ly0, ly1) = if self.log_y {
            let lo = if y_min_pos.is_finite() {
                10f64.powf(y_min_pos.log10().floor())
            } else {
                0.1
            };
            (
                lo.log10(),
                10f64.powf(y1.log10().ceil()).log10().max(lo.log10() + 1.0),
            )
        } else {
            (0.0, y1 * 1.05)
        };
        let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| {
            let v = if self.log_y {
                y.max(10f64.powf(ly0)).log10()
            } else {
                y
            };
            top + ph - (v - ly0) / (ly1 - ly0) * ph
        };
        let mut o = String::new();
        let _ = write!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>
"#,
            left + pw / 2.0,
            esc(self.title)
        );
        for (i, (a, b, name)) in self.bands.iter().enumerate() {
            let fill = if i % 2 == 0 { "#f2f2f2" } else { "#e6eef7" };
            let _ = writeln!(
                o,
                r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{ph}" fill="{fill}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="end" transform="rotate(-90 {:.1} {:.1})">{}</text>"##,
                sx(*a),
                (sx(*b) - sx(*a)).max(0.5),
                sx(*a) + 11.0,
                top + 4.0,
                sx(*a) + 11.0,
                top + 4.0,
                esc(name)
            );
        }
        // Axes and ticks.
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#000"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#000"/>"##,
            top + ph,
            left + pw,
            top + ph,
            top + ph
        );
        let xs = step(x1 - x0, 10.0);
        let mut x = (x0 / xs).ceil() * xs;
        while x <= x1 + 1e-9 {
            let _ = writeln!(
                o,
                r##"<line x1="{:.1}" y1="{}" x2="{:.1}" y2="{}" stroke="#000"/><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
                sx(x),
                top + ph,
                sx(x),
                top + ph + 5.0,
                sx(x),
                top + ph + 18.0,
                fmt_num(x)
            );
            x += xs;
        }
        let y_ticks: Vec<f64> = if self.log_y {
            (ly0.round() as i32..=ly1.round() as i32)
                .map(|e| 10f64.powi(e))
                .collect()
        } else {
            let ys = step(ly1, 6.0);
            (0..)
                .map(|i| f64::from(i) * ys)
                .take_while(|y| *y <= ly1 + 1e-9)
                .collect()
        };
        for y in y_ticks {
            let _ = writeln!(
                o,
                r##"<line x1="{}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left,
                sy(y),
                left + pw,
                sy(y),
                left - 6.0,
                sy(y) + 4.0,
                fmt_num(y)
            );
        }
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            left + pw / 2.0,
            h - 12.0,
            esc(self.x_label),
            top + ph / 2.0,
            top + ph / 2.0,
            esc(self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if pts.len() == 1 {
                let _ = writeln!(
                    o,
                    r#"<circle cx="{}" r="2" fill="{color}"/>"#,
                    pts[0].replace(',', "\" cy=\"")
                );
            } else if !pts.is_empty() {
                let _ = writeln!(
                    o,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    pts.join(" ")
                );
            }
            let ly = top + 10.0 + i as f64 * 18.0;
            let _ = writeln!(
                o,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                left + pw + 10.0,
                left + pw + 30.0,
                left + pw + 36.0,
                ly + 4.0,
                esc(&s.name)
            );
        }
        o.push_str("</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_document() {
        let bands = vec![(0.0, 5.0, "idle".to_string())];
        let c = Chart {
            title: "a <b>",
            x_label: "s",
            y_label: "MiB",
            series: vec![
                Series {
                    name: "r0".into(),
                    points: vec![(0.0, 1.0), (10.0, 20.0)],
                },
                Series {
                    name: "r1".into(),
                    points: vec![(3.0, 5.0)],
                },
            ],
            bands: &bands,
            log_y: false,
        };
        let svg = c.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(
            svg.contains("a &lt;b&gt;") && svg.contains("<polyline") && svg.contains("<circle")
        );
        let log = Chart { log_y: true, ..c }.render();
        assert!(log.contains(">10<") || log.contains(">1<"), "{log}");
        assert_eq!(step(97.0, 10.0), 10.0);
        assert_eq!(fmt_num(0.5), "0.50");
    }
}
