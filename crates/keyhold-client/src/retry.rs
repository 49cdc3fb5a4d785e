//! When and how long to wait before trying a request again.
//!
//! 429 and 502/503/504 are retried for every method: the server did not act on the
//! request. So are connection failures (nothing was sent); a request that failed after
//! it was sent (a reset, a timeout) is repeated only when idempotent. Other 5xx are
//! retried only for idempotent methods, since a create that failed
//! half-way could otherwise be repeated. Waits grow exponentially with "full jitter"
//! (a uniform draw below the cap) so many clients that failed together do not come back
//! together; a `Retry-After` from the server is honoured up to the cap.

use std::time::Duration;

/// Retry settings. `max_retries = 0` disables retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Whether an answer with `status` to a request with this idempotency is retried.
    pub fn retryable_status(status: u16, idempotent: bool) -> bool {
        match status {
            429 | 502 | 503 | 504 => true,
            500..=599 => idempotent && status != 501,
            _ => false,
        }
    }

    /// The wait before retry number `attempt` (0-based), given a random draw in [0, 1).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, draw: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.cap);
        let jittered = exp.mul_f64(draw.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => ra.min(self.cap).max(jittered),
            None => jittered,
        }
    }
}

/// A uniform draw in [0, 1) from the system's random source (no extra dependency).
pub(crate) fn draw() -> f64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert!(RetryPolicy::retryable_status(429, false));
        assert!(RetryPolicy::retryable_status(503, false));
        assert!(!RetryPolicy::retryable_status(500, false));
        assert!(RetryPolicy::retryable_status(500, true));
        assert!(!RetryPolicy::retryable_status(501, true));
        assert!(!RetryPolicy::retryable_status(409, true));
        assert!(!RetryPolicy::retryable_status(404, true));
    }

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, None, 0.999_999).as_millis(), 99);
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(400));
        assert_eq!(p.delay(30, None, 0.999_999).as_secs(), 4);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(60)), 0.0), p.cap);
        let d = draw();
        assert!((0.0..1.0).contains(&d));
    }
}
