//! When to retry, and how long to wait: pure functions, so the policy is tested apart from the network.
//!
//! - 429: wait exactly `Retry-After` (Dataverse's service protection says when to come back), for any
//!   request, because a throttled request was not processed. The client's other requests, later ones
//!   included, wait for it too (the throttle gate in `client/send.rs`).
//! - 502, 503, 504, timeouts and resets: jittered exponential backoff, for idempotent requests only.
//!   Not 500: Dataverse answers 500 for a plug-in's unhandled exception and other failures that repeat,
//!   so waiting only spends the caller's deadline (Microsoft's sample policy does retry it).
//! - A connection that was never made: backoff, for any request, because nothing reached the server.
//! - A request that could not be built (or a URL Dataverse would refuse for its length): never.
//! - Nothing waits past the caller's deadline: if the wait would leave less than [`MIN_ATTEMPT`] before
//!   it, the last error stands (a 429 stays a 429 rather than becoming a timeout).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::Error;

/// The least time worth starting a retry with. A retry squeezed in just before the deadline would
/// time out, and turn a clear answer (a 429, a 503) into a vaguer deadline error.
pub const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// When the caller needs an answer by (a Lambda invocation's deadline, less a margin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: retries stop only when the retry budget is spent.
    pub fn none() -> Self {
        Self(None)
    }

    pub fn after(duration: Duration) -> Self {
        Self(Some(Instant::now() + duration))
    }

    /// The time left, or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether `wait` ends before the deadline.
    pub fn allows(&self, wait: Duration) -> bool {
        self.remaining().is_none_or(|left| wait < left)
    }

    /// Whether waiting `wait` still leaves [`MIN_ATTEMPT`] for the attempt after it.
    pub fn allows_retry_after(&self, wait: Duration) -> bool {
        self.allows(wait.saturating_add(MIN_ATTEMPT))
    }

    /// `limit`, cut to the time left: how long the next step may take. `None` when no time is left.
    pub fn cap(&self, limit: Duration) -> Option<Duration> {
        match self.remaining() {
            None => Some(limit),
            Some(left) if left.is_zero() => None,
            Some(left) => Some(left.min(limit)),
        }
    }

    /// `work`'s output, or `None` when the deadline comes first. With no time left, `work` is not
    /// started at all.
    pub async fn run<F: std::future::IntoFuture>(&self, work: F) -> Option<F::Output> {
        match self.remaining() {
            None => Some(work.await),
            Some(left) if left.is_zero() => None,
            Some(left) => tokio::time::timeout(left, work).await.ok(),
        }
    }

    /// An earlier deadline, `margin` before this one (for work that must finish first).
    pub fn less(&self, margin: Duration) -> Self {
        Self(
            self.0
                .map(|at| at.checked_sub(margin).unwrap_or_else(Instant::now)),
        )
    }
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff step; each later one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest a single request may take (the deadline may cut it shorter).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether repeating a request can cause a second effect. A POST that creates a row is the one
/// request here that is not safe to repeat once it may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Safe,
    OnlyIfUnsent,
}

/// How much later than `Retry-After` a retry goes: up to a quarter of the wait, at most a second.
///
/// Never earlier: Dataverse would refuse it again. But every Lambda environment that was refused in
/// the same second is told the same instant, and if they all come back at once they exceed the
/// concurrency limit together (52 requests at once) and are refused again. Spreading them over up to
/// a second lets them in one after another; measured in `tests/e2e/benches/limits.rs`.
fn spread(wait: Duration, jitter: f64) -> Duration {
    (wait / 4)
        .min(Duration::from_secs(1))
        .mul_f64(jitter.clamp(0.0, 1.0))
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, or `None` to give up with `error`.
    /// `jitter` is a number in `[0, 1)`; the caller draws it.
    pub fn delay(
        &self,
        attempt: u32,
        error: &Error,
        repeat: Repeat,
        jitter: f64,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let backoff = || self.backoff(attempt, jitter);
        match error {
            // A request that could not even be built fails the same way every time.
            Error::Transport { source, .. } if source.is_builder() => None,
            Error::Api {
                status: 429,
                retry_after,
                ..
            } => Some(retry_after.map_or_else(backoff, |wait| wait + spread(wait, jitter))),
            Error::Api {
                status: 502..=504, ..
            } if repeat == Repeat::Safe => Some(backoff()),
            Error::Token { status, .. } if *status == 429 || *status >= 500 => Some(backoff()),
            Error::Transport { unsent: true, .. } => Some(backoff()),
            Error::Transport { unsent: false, .. } | Error::Deadline { .. }
                if repeat == Repeat::Safe =>
            {
                Some(backoff())
            }
            _ => None,
        }
    }

    /// Exponential backoff with "equal jitter": half the step is fixed, half random, so waits spread
    /// out but never collapse to zero.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        step / 2 + step.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// The longest `Retry-After` taken as given; a longer one is read as this. Dataverse's service
/// protection counts over 5-minute windows and asks for waits within them, so a value of hours or
/// more comes from a fault somewhere on the way. Taken whole, it would close the throttle gate of a
/// warm process for as long (every later invocation failing at once with the 429), and a wait of
/// around 2^64 seconds overflows `Instant`, which panics. An hour still fails at once any request
/// whose deadline is an invocation's (15 minutes at most), as the full value would have.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Reads `Retry-After`: delay-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        // Digits too many for a u64 are still a number of seconds: a very long wait.
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => Duration::MAX,
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, retry_after: Option<u64>) -> Error {
        Error::Api {
            status,
            code: None,
            message: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn waits_retry_after_on_429_even_for_a_create_and_at_most_a_second_more() {
        let policy = RetryPolicy::default();
        for repeat in [Repeat::Safe, Repeat::OnlyIfUnsent] {
            assert_eq!(
                policy.delay(1, &api(429, Some(7)), repeat, 0.0),
                Some(Duration::from_secs(7))
            );
            assert_eq!(
                policy.delay(1, &api(429, Some(7)), repeat, 0.5),
                Some(Duration::from_millis(7_500))
            );
            // A short wait spreads by a quarter of itself, not a whole second.
            assert_eq!(
                policy.delay(1, &api(429, Some(1)), repeat, 1.0),
                Some(Duration::from_millis(1_250))
            );
        }
    }

    #[test]
    fn backs_off_on_gateway_errors_only_when_repeating_is_safe() {
        let policy = RetryPolicy::default();
        for status in [502, 503, 504] {
            assert!(
                policy
                    .delay(1, &api(status, None), Repeat::Safe, 0.5)
                    .is_some()
            );
            assert_eq!(
                policy.delay(1, &api(status, None), Repeat::OnlyIfUnsent, 0.5),
                None
            );
        }
        for status in [400, 401, 403, 404, 412, 500, 501] {
            assert_eq!(policy.delay(1, &api(status, None), Repeat::Safe, 0.5), None);
        }
    }

    #[test]
    fn gives_up_when_the_attempts_are_spent() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(
            policy
                .delay(2, &api(503, None), Repeat::Safe, 0.0)
                .is_some()
        );
        assert_eq!(policy.delay(3, &api(503, None), Repeat::Safe, 0.0), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(policy.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(policy.backoff(3, 0.0), Duration::from_millis(200));
        assert_eq!(policy.backoff(30, 1.0), Duration::from_millis(1000));
    }

    #[test]
    fn reads_retry_after_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn a_retry_after_too_long_to_be_real_is_read_as_the_cap() {
        for value in [
            "99999999999999999999",
            "18446744073709551615",
            "3601",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(value), Some(MAX_RETRY_AFTER), "{value}");
        }
        assert_eq!(
            parse_retry_after("3600"),
            Some(Duration::from_secs(3600)),
            "the cap itself is taken as given"
        );
    }

    #[test]
    fn a_deadline_caps_a_step_and_stops_work_that_outlasts_it() {
        let limit = Duration::from_secs(2);
        assert_eq!(Deadline::none().cap(limit), Some(limit));
        assert_eq!(Deadline::after(Duration::ZERO).cap(limit), None);
        let short = Deadline::after(Duration::from_millis(500))
            .cap(limit)
            .unwrap();
        assert!(short <= Duration::from_millis(500));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(Deadline::none().run(async { 7 }).await, Some(7));
            let started = std::cell::Cell::new(false);
            let gone = Deadline::after(Duration::ZERO);
            assert_eq!(gone.run(async { started.set(true) }).await, None);
            assert!(!started.get(), "no time left: the work never starts");
            let hang = std::future::pending::<()>();
            assert_eq!(
                Deadline::after(Duration::from_millis(20)).run(hang).await,
                None
            );
        });
    }

    #[test]
    fn a_deadline_refuses_waits_that_end_after_it() {
        let deadline = Deadline::after(Duration::from_secs(10));
        assert!(deadline.allows(Duration::from_secs(1)));
        assert!(!deadline.allows(Duration::from_secs(11)));
        assert!(Deadline::none().allows(Duration::from_secs(3600)));
        assert!(deadline.allows_retry_after(Duration::from_secs(8)));
        assert!(!deadline.allows_retry_after(Duration::from_millis(9_500)));
        assert!(
            !deadline
                .less(Duration::from_secs(20))
                .allows(Duration::ZERO)
        );
    }
}
