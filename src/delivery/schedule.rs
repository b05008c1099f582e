//! When the next attempt is due (`08-delivery.md` §5.5): the configured delays
//! after each failed attempt, each with ±10 % jitter so that entries that failed
//! together do not retry together.

use std::time::Duration;

/// The delays between attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    /// The n-th retry waits `delays[n - 1]` after the attempt before it.
    pub fn new(delays: Vec<Duration>) -> Self {
        RetrySchedule { delays }
    }

    /// How long to wait after failed attempt number `attempts` (1 for the first),
    /// jittered by `jitter` in `[-1, 1]` (±10 %); `None` when the schedule is used
    /// up and the entry fails.
    pub fn delay_after(&self, attempts: u32, jitter: f64) -> Option<Duration> {
        let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
        let base = *self.delays.get(index)?;
        let factor = 1.0 + 0.1 * jitter.clamp(-1.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// A jitter value in `[-1, 1]` from the system's random source.
    pub fn random_jitter() -> f64 {
        let mut bytes = [0u8; 4];
        // Without randomness the schedule is simply not jittered.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            return 0.0;
        }
        f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX) * 2.0 - 1.0
    }

    /// How many attempts an entry gets in all (the first and every retry).
    pub fn attempts(&self) -> usize {
        self.delays.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes(list: &[u64]) -> RetrySchedule {
        RetrySchedule::new(list.iter().map(|m| Duration::from_secs(m * 60)).collect())
    }

    #[test]
    fn the_documented_schedule_and_its_end() {
        let schedule = minutes(&[1, 2, 4, 8, 16]);
        assert_eq!(schedule.attempts(), 6);
        let delays: Vec<_> = (1..=5)
            .map(|n| schedule.delay_after(n, 0.0).unwrap().as_secs())
            .collect();
        assert_eq!(delays, [60, 120, 240, 480, 960]);
        assert_eq!(schedule.delay_after(6, 0.0), None);
        assert_eq!(schedule.delay_after(0, 0.0), None);
        assert_eq!(minutes(&[]).delay_after(1, 0.0), None);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let schedule = minutes(&[10]);
        assert_eq!(schedule.delay_after(1, 1.0), Some(Duration::from_secs(660)));
        assert_eq!(
            schedule.delay_after(1, -1.0),
            Some(Duration::from_secs(540))
        );
        assert_eq!(schedule.delay_after(1, 7.0), Some(Duration::from_secs(660)));
        for _ in 0..100 {
            let jitter = RetrySchedule::random_jitter();
            assert!((-1.0..=1.0).contains(&jitter), "{jitter}");
        }
    }
}
