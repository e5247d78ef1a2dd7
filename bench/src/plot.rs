//! One PNG per metric: a bar per path and MTU at the median, a whisker over min-max; and
//! line plots over a logarithmic x axis (the scale suite's host counts).
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use crate::results::{NetPath, Results};

const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font plotters draws text with (fonts-dejavu-core, installed by setup).
pub fn init_font() -> Result<()> {
    let bytes = std::fs::read(FONT_FILE)
        .with_context(|| format!("{FONT_FILE} missing: run `cargo xtask setup`"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("cannot load {FONT_FILE}"))?;
    Ok(())
}

fn colour(p: NetPath) -> RGBColor {
    match p {
        NetPath::Bare => RGBColor(120, 120, 120),
        NetPath::LinuxVxlan => RGBColor(230, 140, 40),
        NetPath::Violin => RGBColor(40, 110, 200),
        NetPath::ViolinXdp => RGBColor(60, 170, 90),
    }
}

pub fn metric_png(r: &Results, metric: &str, file: &Path) -> Result<()> {
    let m = r
        .metrics
        .iter()
        .find(|m| m.id == metric)
        .context("unknown metric")?;
    let caption = format!("{} ({})", m.title, m.unit);
    let groups: Vec<Group> = r
        .mtus()
        .into_iter()
        .map(|mtu| Group {
            label: format!("MTU {mtu}"),
            metric: metric.to_string(),
            mtu,
        })
        .collect();
    bars(r, file, &caption, &m.unit, &groups, &NetPath::ALL, None)
}

/// One group of bars on a plot: a metric at an MTU.
pub struct Group {
    pub label: String,
    pub metric: String,
    pub mtu: u32,
}

/// One PNG of groups side by side, a bar per path in `paths` at the median with a
/// min-max whisker, and a red line at `line` (a target).
pub fn bars(
    r: &Results,
    file: &Path,
    caption: &str,
    unit: &str,
    groups: &[Group],
    paths: &[NetPath],
    line: Option<f64>,
) -> Result<()> {
    let mut top = line.unwrap_or(0.0);
    for g in groups {
        for p in paths {
            if let Some(s) = r.summary(&g.metric, g.mtu, *p) {
                top = top.max(s.max);
            }
        }
    }
    if top <= 0.0 {
        return Ok(());
    }
    let root = BitMapBackend::new(
        file,
        (960 + 20 * groups.len().saturating_sub(3) as u32, 520),
    )
    .into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let n = groups.len() as f64;
    // Long titles (the NEMO3D configurations) must still fit the width.
    let caption_size = if caption.len() > 70 { 15 } else { 20 };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", caption_size))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, 0.0..top * 1.3)
        .map_err(|e| anyhow!("{e}"))?;
    let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                labels[i].to_string()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let width = 0.8 / paths.len() as f64;
    for (pi, p) in paths.iter().enumerate() {
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            if let Some(s) = r.summary(&g.metric, g.mtu, *p) {
                let x0 = gi as f64 + 0.1 + pi as f64 * width;
                bars.push(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, s.median)],
                    colour(*p).filled(),
                ));
                let xc = x0 + width * 0.45;
                whiskers.push(PathElement::new(vec![(xc, s.min), (xc, s.max)], BLACK));
            }
        }
        chart
            .draw_series(bars)
            .map_err(|e| anyhow!("{e}"))?
            .label(p.label())
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour(*p).filled())
            });
        chart.draw_series(whiskers).map_err(|e| anyhow!("{e}"))?;
    }
    if let Some(y) = line {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, y), (n, y)],
                RED.stroke_width(2),
            )))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("target {y}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], RED));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// One PNG of series of (x, y) points over a logarithmic x axis (hosts), each a line
/// with its points marked, and a red line at `line` (a target).
pub fn lines(
    file: &Path,
    caption: &str,
    unit: &str,
    series: &[(String, Vec<(f64, f64)>)],
    line: Option<f64>,
) -> Result<()> {
    let points = series.iter().flat_map(|(_, v)| v.iter());
    let (mut x0, mut x1, mut top) = (f64::MAX, 0.0f64, line.unwrap_or(0.0));
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        top = top.max(y);
    }
    if x1 <= 0.0 || top <= 0.0 {
        return Ok(());
    }
    let root = BitMapBackend::new(file, (960, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), 0.0..top * 1.2)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("hosts")
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let palette = [
        RGBColor(40, 110, 200),
        RGBColor(230, 140, 40),
        RGBColor(60, 170, 90),
        RGBColor(150, 80, 170),
    ];
    for (i, (name, v)) in series.iter().enumerate() {
        let c = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(v.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    if let Some(l) = line {
        chart
            .draw_series(LineSeries::new(
                vec![(x0 * 0.8, l), (x1 * 1.25, l)],
                RED.stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label("target")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
