//! The allowed values of every numeric setting, written once: `RunConfig::validate` checks a
//! config's values against them, and the command line's value parsers check the flags of the
//! commands that have no config (predict, compare, report, cache, bench). A value out of range is
//! refused naming the flag (or key) and the value, never clamped or read as "no limit".

/// The values a numeric setting may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// A whole number of at least this.
    AtLeast(u64),
    /// A finite real number between `lo` and `hi`, each end included when its flag says so.
    Real {
        lo: f64,
        lo_in: bool,
        hi: f64,
        hi_in: bool,
    },
}

/// Counts and sizes: epochs, steps, rows per batch.
pub const COUNT: Limit = Limit::AtLeast(1);
/// A classifier needs two classes to choose between.
pub const CLASSES: Limit = Limit::AtLeast(2);
/// Learning rates, LoRA α, gradient-norm caps, peak TFLOP/s.
pub const POSITIVE: Limit = real(0.0, false, f64::INFINITY, false);
/// Label smoothing, validation fraction, LoRA dropout: 1 would leave nothing.
pub const FRACTION: Limit = real(0.0, true, 1.0, false);
/// Warmup ratio, the KD weight α, weight decay.
pub const WEIGHT: Limit = real(0.0, true, 1.0, true);
/// Past T = 100 the soft targets are uniform to f32 precision and T² overflows the loss long
/// before 1e30.
pub const TEMPERATURE: Limit = real(0.0, false, 100.0, true);
/// The representation term's weight β: 0 turns it off; a thousand times the KD term is far past
/// any useful balance (and would swamp the logits' ceiling check).
pub const REPR_WEIGHT: Limit = real(0.0, true, 1000.0, true);

const fn real(lo: f64, lo_in: bool, hi: f64, hi_in: bool) -> Limit {
    Limit::Real {
        lo,
        lo_in,
        hi,
        hi_in,
    }
}

impl Limit {
    /// Whether `v` is allowed (NaN and ±∞ never are).
    pub fn admits(&self, v: f64) -> bool {
        match *self {
            Limit::AtLeast(n) => v.is_finite() && v.fract() == 0.0 && v >= n as f64,
            Limit::Real {
                lo,
                lo_in,
                hi,
                hi_in,
            } => v.is_finite() && (v > lo || (lo_in && v == lo)) && (v < hi || (hi_in && v == hi)),
        }
    }

    /// What is allowed, as it reads after "is not": "a whole number ≥ 1", "in (0, 100]".
    pub fn describe(&self) -> String {
        match *self {
            Limit::AtLeast(n) => format!("a whole number ≥ {n}"),
            Limit::Real { lo, hi, .. } if lo == 0.0 && hi.is_infinite() => {
                "a positive number".into()
            }
            Limit::Real {
                lo,
                lo_in,
                hi,
                hi_in,
            } => format!(
                "in {}{lo}, {hi}{}",
                if lo_in { '[' } else { '(' },
                if hi_in { ']' } else { ')' }
            ),
        }
    }

    /// `Err("--FLAG VALUE is not …")` when `value` is out of range, naming the config key too
    /// (`[train] lr`); a setting without a flag is named by its key alone.
    pub fn check(&self, flag: Option<&str>, key: &str, value: f64) -> Result<(), String> {
        if self.admits(value) {
            return Ok(());
        }
        let allowed = self.describe();
        Err(match flag {
            Some(flag) => {
                format!("{flag} {value} is not {allowed} (the flag, or {key} in the config)")
            }
            None => format!("{key} = {value} is not {allowed}"),
        })
    }
}

/// A value parser for a whole-number flag: anything but a whole number in range (a negative
/// number, a fraction, a word) is refused with the range, which clap prints beside the flag and
/// the value.
pub fn whole(limit: Limit) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if limit.admits(n as f64) => Ok(n),
        _ => Err(format!("must be {}", limit.describe())),
    }
}

/// A value parser for a whole-number flag of a training command: negative numbers, fractions
/// and words are refused here with the range; values below it are left to
/// `RunConfig::validate`, which refuses them in one line naming the flag and the config key.
pub fn whole_number(limit: Limit) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("must be {}", limit.describe()))
    }
}

/// A value parser for a real-valued flag: refuses a value out of `limit` (negative numbers
/// included: the flag must also allow them through clap, `allow_negative_numbers`).
pub fn real_in(limit: Limit) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync {
    move |s: &str| match s.trim().parse::<f64>() {
        Ok(v) if limit.admits(v) => Ok(v),
        Ok(_) => Err(format!("must be {}", limit.describe())),
        Err(_) => Err(format!("not a number: must be {}", limit.describe())),
    }
}

/// A value parser for a seed: any whole number from 0 to 2⁶⁴ − 1.
pub fn seed(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| "must be a whole number ≥ 0".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_admit_their_values_only() {
        assert!(COUNT.admits(1.0) && !COUNT.admits(0.0) && !COUNT.admits(1.5));
        assert!(POSITIVE.admits(1e-9) && !POSITIVE.admits(0.0) && !POSITIVE.admits(f64::NAN));
        assert!(!POSITIVE.admits(f64::INFINITY) && !POSITIVE.admits(-5.0));
        assert!(FRACTION.admits(0.0) && !FRACTION.admits(1.0));
        assert!(WEIGHT.admits(1.0) && !WEIGHT.admits(1.01));
        assert!(TEMPERATURE.admits(100.0) && !TEMPERATURE.admits(0.0));
        assert_eq!(TEMPERATURE.describe(), "in (0, 100]");
        assert_eq!(FRACTION.describe(), "in [0, 1)");
        assert_eq!(
            POSITIVE
                .check(Some("--lr"), "[train] lr", -5.0)
                .unwrap_err(),
            "--lr -5 is not a positive number (the flag, or [train] lr in the config)"
        );
        assert_eq!(
            COUNT.check(None, "[train] log_every", 0.0).unwrap_err(),
            "[train] log_every = 0 is not a whole number ≥ 1"
        );
    }

    #[test]
    fn parsers_name_the_range() {
        assert_eq!(
            whole(COUNT)("-5").unwrap_err(),
            "must be a whole number ≥ 1"
        );
        assert_eq!(whole(COUNT)("0").unwrap_err(), "must be a whole number ≥ 1");
        assert_eq!(whole(COUNT)("7"), Ok(7));
        assert_eq!(whole_number(COUNT)("0"), Ok(0));
        assert!(whole_number(COUNT)("2.5").is_err());
        assert_eq!(
            real_in(POSITIVE)("-5").unwrap_err(),
            "must be a positive number"
        );
        assert!(real_in(POSITIVE)("nan").is_err() && real_in(POSITIVE)("x").is_err());
        assert_eq!(seed("-1").unwrap_err(), "must be a whole number ≥ 0");
    }
}
