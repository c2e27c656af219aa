//! How well a model's probabilities match how often it is right: NLL, Brier score and expected
//! calibration error, and temperature scaling (Guo et al. 2017) fitted on validation rows.
use crate::model::probabilities;
use serde::{Deserialize, Serialize};

/// Equal-width confidence bins of the ECE.
pub const ECE_BINS: usize = 15;

/// Calibration scores of one set of predictions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Mean −log p(label).
    pub nll: f64,
    /// Mean over rows of Σ_c (p_c − [c = label])² (the multi-class Brier score, 0..2).
    pub brier: f64,
    /// Expected calibration error: Σ_bins (rows in bin / rows) · |accuracy − mean confidence|
    /// over 15 equal-width bins of the top probability.
    pub ece: f64,
}

/// One equal-width bin of the top probability (a bar of a reliability diagram).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Rows whose top probability falls in the bin.
    pub rows: usize,
    /// Their mean top probability (0 for an empty bin).
    pub confidence: f64,
    /// The fraction of them predicted right (0 for an empty bin).
    pub accuracy: f64,
}

/// The `ECE_BINS` bins of the top probability at `temperature`: bin b holds confidences in
/// (b/15, (b+1)/15] (the first also holds 0).
pub fn reliability(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
    temperature: f64,
) -> Vec<ReliabilityBin> {
    score_rows(logits, labels, classes, temperature).bins
}

/// Σ_bins (rows in bin / rows) · |accuracy − mean confidence|.
pub fn expected_calibration_error(bins: &[ReliabilityBin]) -> f64 {
    let n = bins.iter().map(|b| b.rows).sum::<usize>().max(1) as f64;
    bins.iter()
        .map(|b| b.rows as f64 / n * (b.accuracy - b.confidence).abs())
        .sum()
}

/// Scores row-major logits (rows × classes) against labels, at `temperature`.
pub fn calibration(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
    temperature: f64,
) -> Calibration {
    let n = labels.len().max(1) as f64;
    let s = score_rows(logits, labels, classes, temperature);
    Calibration {
        nll: s.nll_sum / n,
        brier: s.brier_sum / n,
        ece: expected_calibration_error(&s.bins),
    }
}

/// What one pass of softmaxes over the rows gives: summed NLL and Brier score, and the bins.
struct RowScores {
    nll_sum: f64,
    brier_sum: f64,
    bins: Vec<ReliabilityBin>,
}

fn score_rows(logits: &[f32], labels: &[u32], classes: usize, temperature: f64) -> RowScores {
    let (mut nll_sum, mut brier_sum) = (0.0, 0.0);
    let mut bins = vec![(0usize, 0f64, 0usize); ECE_BINS]; // rows, confidence sum, right
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let p = probabilities(row, temperature);
        nll_sum -= p[label as usize].max(f64::MIN_POSITIVE).ln();
        brier_sum += p
            .iter()
            .enumerate()
            .map(|(c, &pc)| (pc - f64::from(c == label as usize)).powi(2))
            .sum::<f64>();
        let (top, conf) =
            p.iter()
                .enumerate()
                .fold((0, f64::MIN), |b, (c, &v)| if v > b.1 { (c, v) } else { b });
        let bin = ((conf * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bins[bin].0 += 1;
        bins[bin].1 += conf;
        bins[bin].2 += usize::from(top == label as usize);
    }
    let bins = bins
        .into_iter()
        .map(|(rows, conf, right)| {
            let n = rows.max(1) as f64;
            ReliabilityBin {
                rows,
                confidence: conf / n,
                accuracy: right as f64 / n,
            }
        })
        .collect();
    RowScores {
        nll_sum,
        brier_sum,
        bins,
    }
}

/// The temperature that minimises the NLL of `logits` (golden-section search on log T over
/// [1/20, 20]; the NLL is convex in 1/T, so the search finds its minimum).
pub fn fit_temperature(logits: &[f32], labels: &[u32], classes: usize) -> f64 {
    let nll = |log_t: f64| calibration(logits, labels, classes, log_t.exp()).nll;
    let (mut a, mut b) = ((0.05f64).ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (nll(c), nll(d));
    while b - a > 1e-5 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = nll(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = nll(d);
        }
    }
    ((a + b) / 2.0).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_hand_computation() {
        // Two rows, two classes: p = (0.8, 0.2) right, p = (0.6, 0.4) wrong.
        let l = |p: f64| [0.0f32, (((1.0 - p) / p).ln()) as f32];
        let logits: Vec<f32> = [l(0.8), l(0.6)].concat();
        let c = calibration(&logits, &[0, 1], 2, 1.0);
        assert!((c.nll - (-(0.8f64.ln()) - 0.4f64.ln()) / 2.0).abs() < 1e-6);
        let brier = ((0.2f64.powi(2) * 2.0) + (0.6f64.powi(2) * 2.0)) / 2.0;
        assert!((c.brier - brier).abs() < 1e-6);
        // Bins: 0.8 falls in (0.733, 0.8], 0.6 in (0.533, 0.6]; |1 − 0.8|/2 + |0 − 0.6|/2.
        assert!((c.ece - (0.2 / 2.0 + 0.6 / 2.0)).abs() < 1e-6, "{}", c.ece);
        let bins = reliability(&logits, &[0, 1], 2, 1.0);
        assert_eq!(bins.len(), ECE_BINS);
        // Two non-empty bins (0.8 and 0.6 sit on bin edges, so which bins is up to rounding).
        let full: Vec<&ReliabilityBin> = bins.iter().filter(|b| b.rows > 0).collect();
        assert_eq!(full.len(), 2);
        assert!((full[0].confidence - 0.6).abs() < 1e-6 && full[0].accuracy == 0.0);
        assert!((full[1].confidence - 0.8).abs() < 1e-6 && full[1].accuracy == 1.0);
        assert_eq!(bins.iter().map(|b| b.rows).sum::<usize>(), 2);
    }

    #[test]
    fn the_fitted_temperature_undoes_a_scaling() {
        // Logits of a calibrated model (labels drawn from its own probabilities), multiplied by
        // 3: the fitted temperature is close to 3.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (mut logits, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let z: Vec<f32> = (0..3).map(|_| rng.random_range(-2.0..2.0)).collect();
            let p = probabilities(&z, 1.0);
            let u: f64 = rng.random();
            let label = if u < p[0] {
                0
            } else if u < p[0] + p[1] {
                1
            } else {
                2
            };
            logits.extend(z.iter().map(|v| v * 3.0));
            labels.push(label);
        }
        let t = fit_temperature(&logits, &labels, 3);
        assert!((t - 3.0).abs() < 0.3, "{t}");
        let before = calibration(&logits, &labels, 3, 1.0);
        let after = calibration(&logits, &labels, 3, t);
        assert!(after.nll < before.nll && after.ece < before.ece);
    }
}
