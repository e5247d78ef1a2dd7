//! One PNG per metric: a bar per path and MTU at the median, a whisker over min-max.
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
    let mtus = r.mtus();
    let mut top: f64 = 0.0;
    for mtu in &mtus {
        for p in NetPath::ALL {
            if let Some(s) = r.summary(metric, *mtu, p) {
                top = top.max(s.max);
            }
        }
    }
    if top <= 0.0 {
        return Ok(());
    }
    let root = BitMapBackend::new(file, (960, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let groups = mtus.len() as f64;
    let caption = format!("{} ({})", m.title, m.unit);
    // Long titles (the NEMO3D configurations) must still fit the width.
    let caption_size = if caption.len() > 70 { 15 } else { 20 };
    let mut chart = ChartBuilder::on(&root)
        .caption(&caption, ("sans-serif", caption_size))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..groups, 0.0..top * 1.15)
        .map_err(|e| anyhow!("{e}"))?;
    let labels = mtus.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(mtus.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                format!("MTU {}", labels[i])
            } else {
                String::new()
            }
        })
        .y_desc(m.unit.as_str())
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let width = 0.8 / NetPath::ALL.len() as f64;
    for (pi, p) in NetPath::ALL.iter().enumerate() {
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (gi, mtu) in mtus.iter().enumerate() {
            if let Some(s) = r.summary(metric, *mtu, *p) {
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

/// One PNG of several metrics side by side: a group per (label, metric id), a bar per
/// path in `paths` at the median with a min-max whisker, and a red line at `line`
/// (a target), all at MTU `mtu`.
pub fn grouped_png(
    r: &Results,
    file: &Path,
    caption: &str,
    unit: &str,
    groups: &[(String, String)],
    paths: &[NetPath],
    line: Option<f64>,
) -> Result<()> {
    let mtu = r.mtus().first().copied().unwrap_or(1500);
    let mut top = line.unwrap_or(0.0);
    for (_, metric) in groups {
        for p in paths {
            if let Some(s) = r.summary(metric, mtu, *p) {
                top = top.max(s.max);
            }
        }
    }
    if top <= 0.0 {
        return Ok(());
    }
    let root = BitMapBackend::new(file, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let n = groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, 0.0..top * 1.15)
        .map_err(|e| anyhow!("{e}"))?;
    let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                labels[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let width = 0.8 / paths.len() as f64;
    for (pi, p) in paths.iter().enumerate() {
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (gi, (_, metric)) in groups.iter().enumerate() {
            if let Some(s) = r.summary(metric, mtu, *p) {
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
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
