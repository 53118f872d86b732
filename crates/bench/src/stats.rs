//! Summaries of latency samples (pure).

use std::time::Duration;

/// Latency summary of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: Duration,
    pub stddev: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

/// The nearest-rank percentile `p` (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts the samples and summarises them.
pub fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        return Summary::default();
    }
    let secs: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    let mean = secs.iter().sum::<f64>() / n as f64;
    let var = secs.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64;
    Summary {
        count: n,
        mean: Duration::from_secs_f64(mean),
        stddev: Duration::from_secs_f64(var.sqrt()),
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
        p999: percentile(&samples, 0.999),
        max: samples[n - 1],
    }
}

/// A duration for a table: µs below 1 ms, ms below 1 s, else s.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Kibibytes as MB (10^6 bytes), as `ps` users and the issue quote them.
pub fn fmt_mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let s: Vec<Duration> = (1..=1000).map(ms).collect();
        assert_eq!(percentile(&s, 0.5), ms(500));
        assert_eq!(percentile(&s, 0.99), ms(990));
        assert_eq!(percentile(&s, 0.999), ms(999));
        assert_eq!(percentile(&s, 1.0), ms(1000));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&[ms(7)], 0.999), ms(7));
    }

    #[test]
    fn summary_has_mean_and_population_stddev() {
        let s = summarize(vec![ms(2), ms(4), ms(4), ms(4), ms(5), ms(5), ms(7), ms(9)]);
        assert_eq!(s.count, 8);
        assert_eq!(s.mean, ms(5));
        assert_eq!(s.stddev, ms(2));
        assert_eq!(s.max, ms(9));
        assert_eq!(s.p50, ms(4));
    }

    #[test]
    fn durations_and_sizes_print_in_readable_units() {
        assert_eq!(fmt_duration(Duration::from_micros(183)), "183 µs");
        assert_eq!(fmt_duration(Duration::from_micros(1_830)), "1.83 ms");
        assert_eq!(fmt_duration(ms(42)), "42.00 ms");
        assert_eq!(fmt_duration(ms(12_300)), "12.30 s");
        assert_eq!(fmt_mb(17_285), "17.7 MB");
    }
}
