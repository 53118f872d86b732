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

/// The median of `values` (the mean of the middle two when their count is even); None when
/// empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The upper bounds (seconds) of every `*_seconds` histogram's buckets the services export,
/// as Prometheus text writes them.
pub const SECONDS_BUCKETS: &[&str] = &[
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "30", "60", "120", "300", "600", "1800", "3600",
];

/// From Prometheus text: the smallest bucket bound of histogram `name` (with `labels`) holding
/// at least the share `q` of its observations, and how many there were. None without any.
pub fn bucket_quantile(
    text: &str,
    name: &str,
    labels: &[(&str, &str)],
    q: f64,
) -> Option<(Duration, u64)> {
    let bucket = format!("{name}_bucket");
    let count = |le: &str| {
        let mut l = labels.to_vec();
        l.push(("le", le));
        ballast_runtime::metrics::sample(text, &bucket, &l)
    };
    let total = count("+Inf")?;
    if total < 1.0 {
        return None;
    }
    let le = SECONDS_BUCKETS
        .iter()
        .find(|le| count(le).is_some_and(|c| c >= q * total))?;
    Some((Duration::from_secs_f64(le.parse().ok()?), total as u64))
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

    #[test]
    fn a_histograms_quantile_is_the_first_bucket_holding_that_share() {
        let text = "# TYPE d histogram\n\
            d_bucket{class=\"nfs\",le=\"0.01\"} 50\n\
            d_bucket{class=\"nfs\",le=\"0.025\"} 90\n\
            d_bucket{class=\"nfs\",le=\"0.05\"} 99\n\
            d_bucket{class=\"nfs\",le=\"0.1\"} 100\n\
            d_bucket{class=\"nfs\",le=\"+Inf\"} 100\n";
        let nfs = [("class", "nfs")];
        let ms = Duration::from_millis;
        assert_eq!(bucket_quantile(text, "d", &nfs, 0.5), Some((ms(10), 100)));
        assert_eq!(bucket_quantile(text, "d", &nfs, 0.9), Some((ms(25), 100)));
        assert_eq!(bucket_quantile(text, "d", &nfs, 0.99), Some((ms(50), 100)));
        assert_eq!(bucket_quantile(text, "d", &[("class", "x")], 0.5), None);
    }

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
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[0.63, 0.51, 0.58]), Some(0.58));
        assert_eq!(median(&[40.0, 10.0, 30.0, 20.0]), Some(25.0));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
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
