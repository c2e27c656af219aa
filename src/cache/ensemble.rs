//! The teachers of a distillation as one teacher: the mean of their probabilities at the
//! distillation temperature, read from their caches row by row.
use super::file::LogitCache;
use crate::model::probabilities;

/// The teachers' logits for `rows`, as one teacher: with one cache its logits; with several,
/// T·log of the mean of their probabilities at temperature T, whose softmax at T is that mean
/// (so the KD term is KL(mean of the teachers' distributions ‖ student)).
pub fn ensemble(caches: &[LogitCache], rows: &[usize], temperature: f64) -> Vec<f32> {
    if let [one] = caches {
        return one.gather(rows);
    }
    let classes = caches[0].header().classes;
    let all: Vec<Vec<f32>> = caches.iter().map(|c| c.gather(rows)).collect();
    let mut out = Vec::with_capacity(rows.len() * classes);
    for r in 0..rows.len() {
        let mut mean = vec![0f64; classes];
        for logits in &all {
            let p = probabilities(&logits[r * classes..(r + 1) * classes], temperature);
            for (m, p) in mean.iter_mut().zip(p) {
                *m += p / caches.len() as f64;
            }
        }
        // A probability that underflowed to 0 would make the KD term 0·∞.
        out.extend(
            mean.iter()
                .map(|&p| (temperature * p.max(1e-300).ln()) as f32),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{fingerprint, write, CacheHeader};

    #[test]
    fn an_ensemble_is_the_mean_of_the_teachers_probabilities_at_t() {
        use crate::data::Example;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Example> = (0..2)
            .map(|i| Example {
                text: format!("row {i}"),
                label: Some(i),
                ..Default::default()
            })
            .collect();
        let open = |name: &str, logits: &[f32]| {
            let header = CacheHeader {
                rows: 2,
                classes: 3,
                fingerprint: fingerprint(&data),
                labelled: 2,
                unlabelled_fingerprint: fingerprint(&[]),
                teacher: name.into(),
                run_id: None,
            };
            write(&dir.path().join(name), &header, logits).unwrap();
            LogitCache::open(&dir.path().join(name)).unwrap()
        };
        let a = open("a", &[1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        let b = open("b", &[0.0, 0.0, 3.0, 5.0, -1.0, 2.0]);
        let t = 2.0;
        let softmax = |z: &[f64]| -> Vec<f64> {
            let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        let got = ensemble(&[a, b], &[1, 0], t);
        // Row order follows `rows`: row 1 first.
        for (k, (za, zb)) in [
            ([0.0, 0.0, 0.0], [5.0, -1.0, 2.0]),
            ([1.0, 2.0, 0.0], [0.0, 0.0, 3.0]),
        ]
        .iter()
        .enumerate()
        {
            let pa = softmax(&za.map(|v: f64| v / t));
            let pb = softmax(&zb.map(|v: f64| v / t));
            let from_logits = softmax(
                &got[k * 3..k * 3 + 3]
                    .iter()
                    .map(|&v| v as f64 / t)
                    .collect::<Vec<_>>(),
            );
            for c in 0..3 {
                let want = (pa[c] + pb[c]) / 2.0;
                assert!((from_logits[c] - want).abs() < 1e-6, "row {k} class {c}");
            }
        }
        let single = open("c", &[1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(ensemble(&[single], &[0], t), vec![1.0, 2.0, 0.0]);
    }
}
