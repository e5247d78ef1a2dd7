//! Plots of simulated runs over time: where each environment was (figures 6.4 and 6.6),
//! times with and without adaptation (6.5 and 6.7), and series such as demand and borrowed
//! machines (5.2-5.6).
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::{coord::types::RangedCoordf64, prelude::*};

const PALETTE: [RGBColor; 6] = [
    RGBColor(40, 110, 200),
    RGBColor(230, 140, 40),
    RGBColor(60, 170, 90),
    RGBColor(150, 80, 180),
    RGBColor(120, 120, 120),
    RGBColor(200, 60, 60),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The series' legend, boxed, at `at`.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(at)
        .draw()
        .map_err(err)
}

/// One bar of a Gantt row: `[from, to)` in seconds, in `at` (a domain, or "migrating").
pub struct Bar<'a> {
    pub row: &'a str,
    pub from_s: f64,
    pub to_s: f64,
    pub at: &'a str,
}

/// Panels side by side (e.g. without and with adaptation), a row per environment, each
/// bar coloured by where the environment was; "migrating" is red.
pub fn gantt(
    file: &Path,
    caption: &str,
    rows: &[String],
    places: &[String],
    panels: &[(&str, Vec<Bar>)],
) -> Result<()> {
    let end = panels
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|b| b.to_s))
        .fold(1.0, f64::max)
        / 60.0;
    let root = BitMapBackend::new(file, (1100, 180 + 40 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(caption, ("sans-serif", 18)).map_err(err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    let colour = |at: &str| -> RGBColor {
        if at == "migrating" {
            RGBColor(220, 30, 30)
        } else {
            let i = places.iter().position(|p| p == at).unwrap_or(0);
            PALETTE[i % 4]
        }
    };
    for ((title, bars), area) in panels.iter().zip(areas) {
        let n = rows.len() as f64;
        let mut chart = ChartBuilder::on(&area)
            .caption(*title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..end * 1.02, 0.0..n)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len() * 2 + 1)
            .y_label_formatter(&|y| {
                let i = y.floor() as usize;
                if (y - y.floor() - 0.5).abs() < 0.01 && i < rows.len() {
                    rows[rows.len() - 1 - i].clone()
                } else {
                    String::new()
                }
            })
            .x_desc("minutes")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(bars.iter().filter_map(|b| {
                let r = rows.iter().position(|x| x == b.row)?;
                let y = (rows.len() - 1 - r) as f64;
                Some(Rectangle::new(
                    [(b.from_s / 60.0, y + 0.15), (b.to_s / 60.0, y + 0.85)],
                    colour(b.at).filled(),
                ))
            }))
            .map_err(err)?;
        for p in places.iter().map(String::as_str).chain(["migrating"]) {
            let c = colour(p);
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(err)?
                .label(p)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Grouped bars: per label, one bar per series (e.g. without and with adaptation).
pub fn grouped_bars(
    file: &Path,
    caption: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, Vec<f64>)],
) -> Result<()> {
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max)
        .max(1e-9);
    let root = BitMapBackend::new(file, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let n = labels.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 17))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, 0.0..top * 1.25)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len() * 2 + 1)
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
        .map_err(err)?;
    let width = 0.8 / series.len().max(1) as f64;
    for (si, (name, values)) in series.iter().enumerate() {
        let c = PALETTE[si % PALETTE.len()];
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let x0 = i as f64 + 0.1 + si as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, *v)], c.filled())
            }))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Lines over time (x in hours).
pub fn lines(
    file: &Path,
    caption: &str,
    unit: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let (mut x1, mut y0, mut y1) = (1e-9f64, 0.0f64, 1e-9f64);
    for (_, pts) in series {
        for (x, y) in pts {
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
    }
    let root = BitMapBackend::new(file, (1000, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let pad = (y1 - y0) * 0.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 17))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x1, (y0 - if y0 < 0.0 { pad } else { 0.0 })..(y1 + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc(unit)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (si, (name, pts)) in series.iter().enumerate() {
        let c = PALETTE[si % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], c.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(err)?;
    Ok(())
}
