//! The report's pictures, each drawn twice from one description: STEM.svg (crisp, for report.md
//! and browsers) and STEM.png (for viewers without SVG). Text is set in DejaVu Sans, embedded in
//! the binary, so a PNG drawn on a machine without system fonts still has its labels.
use crate::error::{KdError, Result};
use crate::training::calibration::ReliabilityBin;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

pub(super) const FONT: &str = "sans-serif";
pub(super) type Drawn<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A picture that can be drawn on any plotters backend.
pub trait Figure {
    /// Pixel size of the picture.
    fn size(&self) -> (u32, u32) {
        (820, 520)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB>;
}

/// Writes `figure` to STEM.svg and STEM.png (into a staged folder: the report is swapped in
/// whole, so files are written in place).
pub fn save(figure: &impl Figure, stem: &Path) -> Result<()> {
    register_font();
    let size = figure.size();
    let failed = |path: &Path, e: &dyn std::fmt::Display| KdError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let svg_path = stem.with_extension("svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        figure.draw(&root).map_err(|e| failed(&svg_path, &e))?;
        root.present().map_err(|e| failed(&svg_path, &e))?;
    }
    std::fs::write(&svg_path, svg).map_err(|e| KdError::io(&svg_path, e))?;
    let png_path = stem.with_extension("png");
    let root = BitMapBackend::new(&png_path, size).into_drawing_area();
    figure.draw(&root).map_err(|e| failed(&png_path, &e))?;
    root.present().map_err(|e| failed(&png_path, &e))
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ] {
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                tracing::warn!(
                    "the embedded DejaVu Sans font did not load: drawing charts will fail"
                );
            }
        }
    });
}

/// One named line of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines over a shared pair of axes, with a legend.
pub struct LineChart {
    pub title: String,
    /// Label only whole numbers on the x axis (steps, epochs).
    pub whole_x: bool,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

impl Figure for LineChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = padded(all().map(|p| p.0), 0.02);
        let (y0, y1) = padded(all().map(|p| p.1), 0.05);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|v| match (self.whole_x, v.fract() == 0.0) {
                (true, true) => format!("{v:.0}"),
                (true, false) => String::new(),
                (false, _) => format!("{v}"),
            })
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let color = colour(i);
            let style = color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
            if s.points.len() <= 30 {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    }
}

/// A grid of shaded cells with text in each: a confusion matrix, or a T × α sweep.
pub struct HeatMap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Column names, left to right.
    pub columns: Vec<String>,
    /// Row names, top to bottom.
    pub rows: Vec<String>,
    /// `shade[row][column]` in 0..=1 (darker is more).
    pub shade: Vec<Vec<f64>>,
    /// `text[row][column]`.
    pub text: Vec<Vec<String>>,
}

impl Figure for HeatMap {
    fn size(&self) -> (u32, u32) {
        let side = |n: usize| (140 + 110 * n as u32).clamp(420, 1400);
        (side(self.columns.len()) + 80, side(self.rows.len()))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let (nx, ny) = (self.columns.len(), self.rows.len());
        let longest = self
            .rows
            .iter()
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(1);
        // Cell (column x, row r) is the unit square at (x, ny − 1 − r): row 0 on top. The axes'
        // own labels are off; names are set at the cells' centres below.
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 20))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size((9 * longest as u32 + 48).min(260))
            .build_cartesian_2d(0f64..nx.max(1) as f64, 0f64..ny.max(1) as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, 16))
            .draw()?;
        let centred = Pos::new(HPos::Center, VPos::Center);
        for (r, name) in self.rows.iter().enumerate() {
            let y = (ny - 1 - r) as f64;
            for x in 0..nx {
                let v = self.shade[r][x].clamp(0.0, 1.0);
                let (x0, x1) = (x as f64, x as f64 + 1.0);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, y), (x1, y + 1.0)],
                    blues(v).filled(),
                )))?;
                let ink = if v > 0.55 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 17)).color(&ink).pos(centred);
                chart.draw_series(std::iter::once(Text::new(
                    self.text[r][x].clone(),
                    (x0 + 0.5, y + 0.5),
                    style,
                )))?;
            }
            let (px, py) = chart.backend_coord(&(0.0, y + 0.5));
            let style = TextStyle::from((FONT, 15)).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(name.clone(), (px - 8, py), style))?;
        }
        for (x, name) in self.columns.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(x as f64 + 0.5, 0.0));
            let style = TextStyle::from((FONT, 15)).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(name.clone(), (px, py + 8), style))?;
        }
        Ok(())
    }
}

/// Accuracy against confidence per bin, one line per set of probabilities, with the diagonal of
/// perfect calibration and, in grey bars, the share of rows in each bin.
pub struct ReliabilityDiagram {
    pub title: String,
    /// (legend, bins) per line.
    pub series: Vec<(String, Vec<ReliabilityBin>)>,
}

impl Figure for ReliabilityDiagram {
    fn size(&self) -> (u32, u32) {
        (640, 600)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("confidence (top probability)")
            .y_desc("accuracy")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        if let Some((_, bins)) = self.series.last() {
            let total = bins.iter().map(|b| b.rows).sum::<usize>().max(1) as f64;
            let width = 1.0 / bins.len() as f64;
            let grey = RGBColor(200, 200, 200).mix(0.7);
            chart
                .draw_series(bins.iter().enumerate().map(|(b, bin)| {
                    let x = b as f64 * width;
                    let top = bin.rows as f64 / total;
                    Rectangle::new([(x, 0.0), (x + width, top)], grey.filled())
                }))?
                .label("share of rows per bin")
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 22, y + 6)], grey.filled()));
        }
        let diagonal = BLACK.mix(0.6).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                diagonal,
            ))?
            .label("perfect calibration")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], diagonal));
        for (i, (name, bins)) in self.series.iter().enumerate() {
            let color = colour(i);
            let style = color.stroke_width(2);
            let points: Vec<(f64, f64)> = bins
                .iter()
                .filter(|b| b.rows > 0)
                .map(|b| (b.confidence, b.accuracy))
                .collect();
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}

/// The legend of a chart, in a framed box.
pub(super) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Drawn<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// The range of `values`, widened by `pad` of its span (and never empty).
pub(super) fn padded(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-9);
    let (lo, hi) = (lo - pad * span, hi + pad * span);
    if hi - lo < 1e-6 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// Line colours (matplotlib's tab10: distinct, and readable on white).
pub(super) fn colour(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

/// White to dark blue.
fn blues(v: f64) -> RGBColor {
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * v).round() as u8;
    RGBColor(lerp(247, 8), lerp(251, 48), lerp(255, 107))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(padded([1.0, 3.0].into_iter(), 0.0), (1.0, 3.0));
        assert_eq!(padded([2.0].into_iter(), 0.0), (1.5, 2.5));
        assert_eq!(padded(std::iter::empty(), 0.1), (0.0, 1.0));
        let (lo, hi) = padded([0.0, 10.0, f64::NAN].into_iter(), 0.1);
        assert!((lo + 1.0).abs() < 1e-12 && (hi - 11.0).abs() < 1e-12);
    }
}
