//! The one retry policy type, configured per job kind.
//!
//! Delays grow exponentially with jitter, computed with `backon`. A policy
//! only does arithmetic: the worker that fails an attempt writes the next
//! attempt time into the database outbox, so a scheduled retry survives any
//! worker restart.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Exponential back-off with jitter, bounded by attempts and by age.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub first_delay: Duration,
    /// Upper bound of any single delay, before jitter.
    pub max_delay: Duration,
    /// Growth factor between consecutive delays.
    pub factor: f32,
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// No attempt is scheduled later than this after the first one.
    pub max_age: Duration,
    /// Adds up to one extra delay's worth of randomness to spread retries
    /// of jobs that failed together.
    pub jitter: bool,
}

impl RetryPolicy {
    /// Returns the delay before the next attempt, or `None` when the job has
    /// used its attempts or would outlive its maximum age.
    ///
    /// `attempts_done` counts finished attempts (at least 1 when called after
    /// a failure); `age` is the time since the first attempt was queued.
    pub fn next_delay(&self, attempts_done: u32, age: Duration) -> Option<Duration> {
        if attempts_done == 0 {
            return Some(Duration::ZERO);
        }
        if attempts_done >= self.max_attempts {
            return None;
        }
        let delay = self.backoff().nth(attempts_done as usize - 1)?;
        if age.saturating_add(delay) > self.max_age {
            return None;
        }
        Some(delay)
    }

    /// Returns the delays of a whole schedule, for documentation and tests.
    pub fn schedule(&self) -> Vec<Duration> {
        self.backoff().collect()
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(36_000),
            factor: 6.0,
            max_attempts: 8,
            max_age: Duration::from_secs(2 * 86_400),
            jitter,
        }
    }

    #[test]
    fn delays_grow_by_factor_up_to_max() {
        let schedule = policy(false).schedule();
        let seconds: Vec<u64> = schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, [5, 30, 180, 1080, 6480, 36_000, 36_000]);
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = policy(false);
        assert_eq!(policy.next_delay(0, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(
            policy.next_delay(1, Duration::ZERO),
            Some(Duration::from_secs(5))
        );
        assert!(policy.next_delay(7, Duration::ZERO).is_some());
        assert_eq!(policy.next_delay(8, Duration::ZERO), None);
    }

    #[test]
    fn age_bounds_the_schedule() {
        let mut policy = policy(false);
        policy.max_age = Duration::from_secs(60);
        assert!(policy.next_delay(2, Duration::from_secs(20)).is_some());
        assert_eq!(policy.next_delay(2, Duration::from_secs(40)), None);
    }

    #[test]
    fn jitter_stays_within_one_extra_delay() {
        let policy = policy(true);
        for _ in 0..100 {
            let delay = policy.next_delay(2, Duration::ZERO).unwrap();
            assert!(delay >= Duration::from_secs(30), "{delay:?}");
            assert!(delay <= Duration::from_secs(60), "{delay:?}");
        }
    }
}
