//! A latency histogram with fixed buckets held in atomics, so a hot path can record durations
//! without locks and without depending on a metrics library; exporters read a snapshot.
//!
//! A crate of its own so that the UDF host and the engine share it without one depending on the
//! other for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in nanoseconds, 0.5 ms to 10 s in 1-2.5-5 steps; larger values
/// land in the implicit `+Inf` bucket.
pub const BUCKET_BOUNDS_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Durations counted per bucket, plus their sum; every field an atomic.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKET_BOUNDS_NANOS.len() + 1],
    /// Sum of observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // `le` semantics: a value equal to a bound belongs to that bound's bucket.
        let index = BUCKET_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts so far; cumulative per bucket, as Prometheus exposes them.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(BUCKET_BOUNDS_NANOS.len());
        for bucket in &self.buckets[..BUCKET_BOUNDS_NANOS.len()] {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        // The count is the sum of the buckets read, so it never disagrees with them.
        let count = running + self.buckets[BUCKET_BOUNDS_NANOS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A [`Histogram`]'s counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bound of [`BUCKET_BOUNDS_NANOS`], the observations at or below it.
    pub cumulative: Vec<u64>,
    /// All observations, `+Inf` included.
    pub count: u64,
    /// Sum of observations, in nanoseconds.
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)` per bucket, `+Inf` left out.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BUCKET_BOUNDS_NANOS
            .iter()
            .map(|&nanos| nanos as f64 / 1e9)
            .zip(self.cumulative.iter().copied())
    }

    /// Sum of observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // ≤ 0.5 ms
        h.observe(Duration::from_micros(500)); // exactly 0.5 ms: still the first bucket
        h.observe(Duration::from_micros(501)); // ≤ 1 ms
        h.observe(Duration::from_millis(30)); // ≤ 50 ms
        h.observe(Duration::from_secs(10)); // the last bound
        h.observe(Duration::from_secs(11)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.cumulative, vec![2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5]);
        let buckets: Vec<(f64, u64)> = s.buckets().collect();
        assert_eq!(buckets.len(), BUCKET_BOUNDS_NANOS.len());
        assert_eq!(buckets[0], (0.0005, 2));
        assert_eq!(buckets[6], (0.05, 4));
        assert_eq!(buckets[13], (10.0, 5));
        assert_eq!(
            s.sum_nanos,
            100_000 + 500_000 + 501_000 + 30_000_000 + 21_000_000_000
        );
        assert!((s.sum_seconds() - 21.031101).abs() < 1e-9);
    }

    #[test]
    fn counts_are_cumulative_and_bounds_increase() {
        assert!(BUCKET_BOUNDS_NANOS.windows(2).all(|w| w[0] < w[1]));
        let h = Histogram::default();
        assert_eq!(h.snapshot().count, 0);
        assert!(h.snapshot().cumulative.iter().all(|&c| c == 0));
        for ms in [1, 2, 3, 700, 3000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*s.cumulative.last().unwrap(), s.count);
        // 1 ms ≤ 1 ms; 2 and 3 ms ≤ 2.5 and 5 ms; 700 ms ≤ 1 s; 3 s ≤ 5 s.
        assert_eq!(s.cumulative[1], 1);
        assert_eq!(s.cumulative[2], 2);
        assert_eq!(s.cumulative[3], 3);
        assert_eq!(s.cumulative[10], 4);
        assert_eq!(s.cumulative[11], 4);
        assert_eq!(s.cumulative[12], 5);
    }

    #[test]
    fn concurrent_observers_lose_nothing() {
        let h = std::sync::Arc::new(Histogram::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        h.observe(Duration::from_millis(7));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4000);
        assert_eq!(s.cumulative[4], 4000);
        assert_eq!(s.cumulative[3], 0);
        assert_eq!(s.sum_nanos, 4000 * 7_000_000);
    }
}
