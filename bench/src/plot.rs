//! `--plot FILE.svg`: request latency by percentile, committed operations per
//! second, the longest request of each second, and the ledger process's
//! resident memory over the run.

use crate::sample::Sample;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

/// The run's time series.
pub struct OverTime<'a> {
    pub per_second: &'a [u64],
    pub per_second_max_us: &'a [u64],
    /// Memory samples (empty when the run kept none).
    pub samples: &'a [Sample],
}

pub fn plot(
    path: &Path,
    title: &str,
    latency: &Histogram<u64>,
    over_time: &OverTime,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| format!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (1100, 840)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(410);
    let (left, right) = top.split_horizontally(550);
    let per_second = over_time.per_second;

    // x = "nines": 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99.
    let points: Vec<(f64, f64)> = (0..=400)
        .map(|i| {
            let nines = i as f64 / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, latency.value_at_quantile(q) as f64 / 1_000.0)
        })
        .collect();
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("request latency by percentile (ms)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..4f64, 0f64..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("percentile: 0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99")
        .y_desc("ms")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(points, &BLUE))
        .map_err(|x| e(&x))?;

    let tmax = per_second.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    let secs = per_second.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&right)
        .caption("committed operations per second", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs, 0f64..tmax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ops/s")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(
            per_second
                .iter()
                .enumerate()
                .map(|(i, n)| (i as f64 + 0.5, *n as f64)),
            &RED,
        ))
        .map_err(|x| e(&x))?;
    let (low_left, low_right) = bottom.split_horizontally(550);
    let max_ms: Vec<(f64, f64)> = over_time
        .per_second_max_us
        .iter()
        .enumerate()
        .map(|(i, us)| (i as f64 + 0.5, *us as f64 / 1e3))
        .collect();
    line_chart(
        &low_left,
        "longest request completed in each second (ms)",
        ("seconds", "ms"),
        &max_ms,
        &MAGENTA,
    )
    .map_err(|x| e(&x))?;
    let rss: Vec<(f64, f64)> = over_time
        .samples
        .iter()
        .filter_map(|s| Some((s.t_s, s.rss_mb?)))
        .collect();
    line_chart(
        &low_right,
        "ledger process resident memory (MiB)",
        ("seconds", "MiB"),
        &rss,
        &BLACK,
    )
    .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawError = DrawingAreaErrorKind<std::io::Error>;

/// One series over time, from 0 on both axes.
fn line_chart(
    area: &Area,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    points: &[(f64, f64)],
    colour: &RGBColor,
) -> Result<(), DrawError> {
    let xmax = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), colour))?;
    Ok(())
}
