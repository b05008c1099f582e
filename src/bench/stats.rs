//! The pure arithmetic of a benchmark: latency percentiles, which artifacts are
//! encrypted, and the figures read from `/proc` for the server process.
//!
//! Kept free of I/O so that every number the report prints can be unit-tested.

/// Latencies in microseconds, sorted, so that percentiles are exact (100,000
/// samples are 400 KB: no need for an approximating histogram).
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    sorted_micros: Vec<u32>,
}

impl Latencies {
    /// Collects and sorts `micros`.
    pub fn new(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        Latencies {
            sorted_micros: micros,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted_micros.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.sorted_micros.is_empty()
    }

    /// The `quantile` (0.0–1.0) in milliseconds by the nearest-rank method: the
    /// smallest sample such that at least `quantile` of all samples are ≤ it.
    /// `None` without samples.
    pub fn percentile_ms(&self, quantile: f64) -> Option<f64> {
        let count = self.sorted_micros.len();
        if count == 0 {
            return None;
        }
        let quantile = quantile.clamp(0.0, 1.0);
        // Nearest rank: ceil(q * n), at least 1. The product is at most `count`,
        // which came from a `usize`, so the conversion back cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((quantile * count as f64).ceil() as usize).max(1);
        let micros = self.sorted_micros[rank.min(count) - 1];
        Some(f64::from(micros) / 1000.0)
    }

    /// The largest sample in milliseconds.
    pub fn max_ms(&self) -> Option<f64> {
        self.sorted_micros
            .last()
            .map(|&micros| f64::from(micros) / 1000.0)
    }
}

/// Whether artifact `index` of `total` is encrypted when `share` (0.0–1.0) of them
/// are: spread evenly, so that any prefix of the sequence has about the same share
/// (a connection that takes the first artifacts sees the same mix as the rest), and
/// exactly `floor(total * share)` of all are encrypted.
pub fn is_encrypted(index: usize, total: usize, share: f64) -> bool {
    if total == 0 {
        return false;
    }
    let share = share.clamp(0.0, 1.0);
    let below = |count: usize| (count as f64 * share).floor();
    below(index + 1) > below(index)
}

/// Resident memory figures of a process, in kibibytes, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far.
    pub peak_rss_kib: u64,
}

/// Parses the `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let value = rest.trim().strip_suffix("kB")?.trim();
            value.parse::<u64>().ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        peak_rss_kib: field("VmHWM")?,
    })
}

/// The CPU time (user + system) in clock ticks from a `/proc/<pid>/stat` text.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so the fields are counted from the last `)`: after it come field 3
/// (state) onwards, which puts `utime` (field 14) and `stime` (field 15) at
/// positions 11 and 12.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Kibibytes as mebibytes, rounded to a tenth.
pub fn kib_to_mib(kib: u64) -> f64 {
    round_to(kib as f64 / 1024.0, 1)
}

/// `value` rounded to `digits` decimal places (for a readable report).
pub fn round_to(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let latencies = Latencies::new((1..=100).rev().map(|ms| ms * 1000).collect());
        assert_eq!(latencies.len(), 100);
        assert_eq!(latencies.percentile_ms(0.5), Some(50.0));
        assert_eq!(latencies.percentile_ms(0.99), Some(99.0));
        assert_eq!(latencies.percentile_ms(1.0), Some(100.0));
        assert_eq!(latencies.percentile_ms(0.0), Some(1.0));
        assert_eq!(latencies.max_ms(), Some(100.0));
        let one = Latencies::new(vec![1500]);
        assert_eq!(one.percentile_ms(0.99), Some(1.5));
        assert_eq!(Latencies::new(Vec::new()).percentile_ms(0.5), None);
        assert_eq!(Latencies::new(Vec::new()).max_ms(), None);
    }

    #[test]
    fn encrypted_share_is_exact_and_spread() {
        for (total, share, expected) in [
            (1000, 0.2, 200),
            (1000, 0.0, 0),
            (1000, 1.0, 1000),
            (7, 0.5, 3),
            (0, 0.5, 0),
        ] {
            let count = (0..total)
                .filter(|&index| is_encrypted(index, total, share))
                .count();
            assert_eq!(count, expected, "{total} × {share}");
        }
        // Any window of ten consecutive artifacts holds two of a 20 % share.
        for start in 0..990 {
            let count = (start..start + 10)
                .filter(|&index| is_encrypted(index, 1000, 0.2))
                .count();
            assert_eq!(count, 2, "window at {start}");
        }
    }

    #[test]
    fn proc_status_and_stat() {
        let status = "Name:\tbtps\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                rss_kib: 10240,
                peak_rss_kib: 20480
            })
        );
        assert_eq!(parse_status("Name:\tbtps\n"), None);
        let stat = "4242 (b t)ps) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("4242 (btps) S 1"), None);
        assert_eq!(kib_to_mib(15 * 1024 + 512), 15.5);
    }
}
