//! The serving-cost section of report.md: what each run costs to serve, and accuracy against
//! rows/s, the Pareto picture of a distillation (how much accuracy each speed-up costs).
use super::charts::{colour, legend, padded, save, Drawn, Figure, FONT};
use super::comparison::{measured_on, Comparison};
use crate::error::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::fmt::Write;
use std::path::Path;

/// The picture's name in the report folder.
pub const STEM: &str = "accuracy-vs-rows-per-s";

/// The serving-cost table and, when the runs were timed, the accuracy-against-rows/s picture.
pub fn serving_section(c: &Comparison, dir: &Path, md: &mut String) -> Result<()> {
    md.push_str("## Serving cost\n\nParameters of the model as `kd export` writes it (LoRA merged); FLOPs of one row's forward pass at the test rows' mean length, special tokens included.\n\n");
    md.push_str("| run | params at inference | mean tokens | GFLOPs/row | rows/s @32 | p50 ms @1 | p99 ms @1 | accuracy |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in &c.runs {
        let v = &r.serving;
        let t = v.timing.as_ref();
        let timed = |f: &dyn Fn(&crate::model::serving::Timing) -> f64, digits: usize| {
            t.map_or("–".into(), |t| format!("{:.digits$}", f(t)))
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {:.1} | {:.3} | {} | {} | {} | {:.2}% |",
            r.run,
            v.params_at_inference,
            v.mean_tokens,
            v.flops_per_row / 1e9,
            timed(&|t| t.rows_per_s, 1),
            timed(&|t| t.latency_p50_ms, 2),
            timed(&|t| t.latency_p99_ms, 2),
            100.0 * r.evaluation.accuracy
        );
    }
    let _ = writeln!(md, "\n{}.\n", measured_on(c));
    let chart = pareto(c);
    if chart.points.is_empty() {
        return Ok(());
    }
    save(&chart, &dir.join(STEM))?;
    let _ = write!(
        md,
        "The dashed line joins the runs no other run beats on both speed and accuracy (the Pareto frontier).\n\n![accuracy against rows/s]({STEM}.svg)\n\n"
    );
    Ok(())
}

/// One point per timed run.
pub fn pareto(c: &Comparison) -> Pareto {
    let points = c
        .runs
        .iter()
        .filter_map(|r| {
            let t = r.serving.timing.as_ref()?;
            Some((r.run.clone(), t.rows_per_s, 100.0 * r.evaluation.accuracy))
        })
        .collect();
    let on = c.runs.iter().find_map(|r| r.serving.timing.as_ref());
    Pareto {
        title: on.map_or(String::new(), |t| {
            format!("accuracy against throughput ({}, {})", t.device, t.dtype)
        }),
        points,
    }
}

/// Accuracy (%) against rows/s, one labelled point per run, the frontier dashed.
pub struct Pareto {
    pub title: String,
    /// (run, rows/s, accuracy %).
    pub points: Vec<(String, f64, f64)>,
}

impl Pareto {
    /// The points no other point beats on both axes, fastest first.
    pub fn frontier(&self) -> Vec<(f64, f64)> {
        let mut by_speed: Vec<(f64, f64)> = self.points.iter().map(|p| (p.1, p.2)).collect();
        by_speed.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
        let mut best = f64::NEG_INFINITY;
        by_speed.retain(|&(_, acc)| {
            let keep = acc > best;
            best = best.max(acc);
            keep
        });
        by_speed
    }
}

impl Figure for Pareto {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        // From 0, so that distances read as speed-ups; room on the right for the labels.
        let fastest = self.points.iter().map(|p| p.1).fold(0f64, f64::max);
        let x1 = if fastest > 0.0 { 1.25 * fastest } else { 1.0 };
        let (y0, y1) = padded(self.points.iter().map(|p| p.2), 0.25);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("rows/s at batch 32")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("test accuracy (%)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let dashed = BLACK.mix(0.5).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(self.frontier(), 6, 4, dashed))?
            .label("Pareto frontier")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], dashed));
        let beside = Pos::new(HPos::Left, VPos::Bottom);
        for (i, (name, speed, acc)) in self.points.iter().enumerate() {
            let color = colour(i);
            let p = (*speed, *acc);
            chart
                .draw_series(std::iter::once(Circle::new(p, 6, color.filled())))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 11, y), 5, color.filled()));
            let short = Path::new(name)
                .file_name()
                .map_or(name.clone(), |n| n.to_string_lossy().into_owned());
            let (px, py) = chart.backend_coord(&p);
            let style = TextStyle::from((FONT, 15)).pos(beside);
            root.draw(&Text::new(short, (px + 8, py - 4), style))?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_keeps_the_runs_nothing_beats() {
        let chart = Pareto {
            title: String::new(),
            points: [
                ("teacher", 100.0, 90.0),
                ("student", 900.0, 88.0),
                ("worse", 500.0, 85.0),
                ("tiny", 3000.0, 70.0),
            ]
            .map(|(n, s, a)| (n.to_string(), s, a))
            .into(),
        };
        assert_eq!(
            chart.frontier(),
            vec![(3000.0, 70.0), (900.0, 88.0), (100.0, 90.0)]
        );
    }
}
