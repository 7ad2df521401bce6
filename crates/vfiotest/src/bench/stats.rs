//! Repeated samples summarized: min, median, max, and which samples are outliers.

use serde::Serialize;

/// A set of samples (seconds) summarized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Indexes of samples further from the median than 3 median absolute deviations (and
    /// more than 25 % of the median: a cell whose samples agree to the microsecond has none).
    pub outliers: Vec<usize>,
    pub samples: Vec<f64>,
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n % 2 {
        1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl Spread {
    /// Summarizes `samples`; `None` if there are none.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = median(&sorted);
        let mut deviations: Vec<f64> = sorted.iter().map(|s| (s - mid).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let mad = median(&deviations);
        let limit = (3.0 * mad).max(0.25 * mid);
        let outliers = samples.iter().enumerate().filter(|(_, s)| (*s - mid).abs() > limit).map(|(i, _)| i).collect();
        Some(Self { min: sorted[0], median: mid, max: sorted[sorted.len() - 1], outliers, samples: samples.to_vec() })
    }
}

/// Seconds for people: `1.23 ms`, `170 s`.
pub fn seconds(s: f64) -> String {
    match s {
        s if s >= 10.0 => format!("{s:.0} s"),
        s if s >= 1.0 => format!("{s:.2} s"),
        s if s >= 1e-3 => format!("{:.2} ms", s * 1e3),
        s => format!("{:.1} µs", s * 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_median_max_odd_and_even() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(s.samples, [4.0, 1.0, 2.0, 3.0], "in the order taken");
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn a_sample_far_from_the_rest_is_an_outlier_by_its_index() {
        let s = Spread::of(&[1.00, 1.02, 0.98, 5.0, 1.01]).unwrap();
        assert_eq!(s.outliers, [3]);
        assert!(Spread::of(&[1.00, 1.02, 0.98, 1.01]).unwrap().outliers.is_empty());
        // Identical samples but one a hair off: not an outlier (25 % floor).
        assert!(Spread::of(&[2e-6, 2e-6, 2e-6, 2.1e-6]).unwrap().outliers.is_empty());
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds(170.2), "170 s");
        assert_eq!(seconds(1.234), "1.23 s");
        assert_eq!(seconds(0.00123), "1.23 ms");
        assert_eq!(seconds(2.5e-6), "2.5 µs");
    }
}
