//! The retry policy: bounded attempts, exponential backoff with full jitter, `Retry-After`.

use std::time::Duration;

use rand::RngExt;

/// How a destination is retried within one delivery.
///
/// * Failures that may pass (timeouts, connection errors, `408`, `5xx`) are retried after a
///   delay drawn uniformly from `[0, min(cap, base * 2^(attempt-1))]` ("full jitter": retries
///   of many alerts spread out instead of hammering a recovering receiver in waves), at most
///   `max_attempts` attempts in all; then the delivery is *parked* with its last error.
/// * `429 Too Many Requests` waits what `Retry-After` says (seconds), else the backoff delay;
///   it counts towards `max_rate_limited` instead, so a receiver that is merely slow (Slack
///   allows about one message per second) is waited for rather than given up on.
/// * Other `4xx` cannot pass by retrying: parked at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_rate_limited: u32,
    pub base: Duration,
    pub cap: Duration,
    /// The longest `Retry-After` honoured (longer ones are capped to it).
    pub max_retry_after: Duration,
    /// Each request's timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_rate_limited: 60,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The longest exponential delay before attempt `attempt + 1` (`attempt` >= 1 failed).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt after `attempt` failures: full jitter.
    pub fn backoff(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// The wait after a `429`: `Retry-After` (capped), else the backoff.
    pub fn rate_limited(
        &self,
        retry_after: Option<Duration>,
        attempt: u32,
        rng: &mut impl rand::Rng,
    ) -> Duration {
        match retry_after {
            Some(wait) => wait.min(self.max_retry_after),
            None => self.backoff(attempt, rng),
        }
    }

    /// The longest a delivery can take with every attempt failing slowly (for the lease).
    pub fn worst_case(&self) -> Duration {
        let mut total = self
            .timeout
            .saturating_mul(self.max_attempts + self.max_rate_limited);
        for attempt in 1..self.max_attempts {
            total += self.ceiling(attempt);
        }
        total + self.max_retry_after.saturating_mul(self.max_rate_limited)
    }
}

/// Parses `Retry-After` given in seconds (the HTTP-date form is not used by the receivers we
/// target and is treated as absent).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn full_jitter_stays_under_an_exponential_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_millis(200));
        assert_eq!(policy.ceiling(2), Duration::from_millis(400));
        assert_eq!(policy.ceiling(4), Duration::from_millis(1600));
        assert_eq!(policy.ceiling(30), Duration::from_secs(10));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..1000).map(|_| policy.backoff(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        // Spread over the whole range, not bunched at the ceiling.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(700)));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            policy.rate_limited(parse_retry_after("2"), 1, &mut rng),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.rate_limited(parse_retry_after("3600"), 1, &mut rng),
            Duration::from_secs(60)
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
