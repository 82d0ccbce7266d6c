//! The send loop every request goes through, in two halves kept apart: [`Client::attempt`] sends once
//! and reports what happened, and [`Attempts::after`] decides, from that alone, what to do next. The
//! decision is pure, so the rules (one token refresh, retries only where repeating is safe, nothing
//! past the deadline) are tested without a network.
//!
//! Two things outlive a single request, shared by a client and its clones:
//!
//! - [`Counters`]: what went on the wire, for whoever reports on it (a snapshot is three atomic loads);
//! - the throttle gate: after a 429 with `Retry-After`, no request from this client is sent before
//!   the time the server named. Lambda keeps a warm process for the next invocation, and Dataverse
//!   counts every request it refuses against the same limits, so a second invocation should not knock
//!   before it was told it may. A request whose deadline cannot wait that long fails at once with the
//!   429, as the loop does when a `Retry-After` does not fit ([`admit`] decides, purely).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};

use super::Client;
use crate::retry::{Deadline, MAX_RETRY_AFTER, Repeat, RetryPolicy};
use crate::{Error, transport};

/// One request as the send loop sees it.
pub(super) struct Call<'a> {
    pub(super) method: Method,
    pub(super) url: &'a Url,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Option<Bytes>,
    pub(super) repeat: Repeat,
    /// A status that means success if an earlier attempt may have reached the server (a DELETE
    /// retried after its answer was lost finds the row already gone).
    pub(super) done_if_retried: Option<u16>,
}

/// A response to a successful request.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Requests a client has made, counted as they go; shared by the client's clones.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    throttles: AtomicU64,
    retries: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Attempts that went on the wire: every retry counts, a connection never made does not.
    pub requests: u64,
    /// Answers with status 429.
    pub throttles: u64,
    /// Attempts after a request's first that went on the wire (a retry after a 429, a gateway error
    /// or a lost answer, or the resend after a token refresh).
    pub retries: u64,
}

impl Counters {
    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            throttles: self.throttles.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    fn sent(&self, retry: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if retry {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Usage {
    /// What was counted after `earlier` was taken (from the same counters).
    #[must_use]
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            requests: self.requests.saturating_sub(earlier.requests),
            throttles: self.throttles.saturating_sub(earlier.throttles),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            requests: self.requests.saturating_add(other.requests),
            throttles: self.throttles.saturating_add(other.throttles),
            retries: self.retries.saturating_add(other.retries),
        }
    }
}

/// The throttle gate: when the last `Retry-After` ends, and the answer that set it, which is what a
/// request that cannot wait fails with.
#[derive(Debug, Default)]
pub(super) struct Gate(Mutex<Option<Throttle>>);

#[derive(Debug, Clone)]
struct Throttle {
    until: Instant,
    code: Option<String>,
    message: String,
}

impl Gate {
    /// Keeps the later of the current end and `now + wait`. `wait` is capped where it is read
    /// ([`MAX_RETRY_AFTER`]), and again here, so that no wait can carry the end past what the clock
    /// holds (a panic).
    fn close(&self, wait: Duration, code: Option<&str>, message: &str) {
        let Some(until) = Instant::now().checked_add(wait.min(MAX_RETRY_AFTER)) else {
            return;
        };
        let mut gate = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if gate.as_ref().is_none_or(|t| t.until < until) {
            *gate = Some(Throttle {
                until,
                code: code.map(str::to_owned),
                message: message.to_owned(),
            });
        }
    }

    /// How long is left to wait, and the 429 to fail with if the caller cannot; `None` once open.
    fn pending(&self) -> Option<(Duration, Error)> {
        let gate = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let throttle = gate.as_ref()?;
        let left = throttle.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| {
            (
                left,
                Error::Api {
                    status: 429,
                    code: throttle.code.clone(),
                    message: throttle.message.clone(),
                    retry_after: Some(left),
                },
            )
        })
    }
}

/// What a request does about a throttle announced earlier, `left` still to run.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Go,
    Wait(Duration),
    /// The deadline does not leave an attempt after the wait: fail with the 429.
    Refuse,
}

/// The gate's rule, the same as the loop's for its own 429s: wait only if an attempt still fits
/// after the wait.
fn admit(left: Option<Duration>, deadline: Deadline) -> Admit {
    match left {
        None => Admit::Go,
        Some(wait) if wait.is_zero() => Admit::Go,
        Some(wait) if deadline.allows_retry_after(wait) => Admit::Wait(wait),
        Some(_) => Admit::Refuse,
    }
}

/// What the loop does after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Fetch a new token and send again at once.
    Refresh,
    /// Wait, then send again.
    Wait(Duration),
    /// The earlier attempt that may have been lost had in fact done the work.
    AlreadyDone,
    /// Give up with the error.
    Fail,
}

/// What the loop remembers between attempts.
#[derive(Debug, Default)]
struct Attempts {
    made: u32,
    refreshed: bool,
    /// An earlier attempt may have reached the server even though no answer came back.
    maybe_delivered: bool,
}

impl Attempts {
    /// The error the request fails with, once the loop gives up with `error`. After an attempt
    /// that may have been carried out unanswered, the last error alone (a 429 whose wait does not
    /// fit, the throttle gate's refusal, a 500, a refused token) would say that nothing changed:
    /// it is marked [`Error::MayHaveApplied`], unless the request is a read, which changes
    /// nothing.
    fn conclude(&self, error: Error, method: &Method) -> Error {
        if self.maybe_delivered && *method != Method::GET {
            error.after_possible_write()
        } else {
            error
        }
    }

    /// The decision after attempt number `self.made` failed with `error`. `issued_now` says whether
    /// the refused token was fetched for this very request; `jitter` is in `[0, 1)`.
    fn after(
        &mut self,
        error: &Error,
        call: &Call<'_>,
        issued_now: bool,
        policy: &RetryPolicy,
        deadline: Deadline,
        jitter: f64,
    ) -> Next {
        if self.maybe_delivered
            && call.done_if_retried.is_some()
            && error.status() == call.done_if_retried
        {
            return Next::AlreadyDone;
        }
        // A gateway error or a lost answer may hide a request the server carried out.
        if matches!(
            error,
            Error::Transport { unsent: false, .. }
                | Error::Deadline { .. }
                | Error::Api {
                    status: 502..=504,
                    ..
                }
        ) {
            self.maybe_delivered = true;
        }
        // A cached token can be revoked or expire early: fetch a fresh one, once. A token issued for
        // this very request that is refused says the credentials are the problem, and a second one
        // from the same credentials would only be refused again.
        if error.status() == Some(401) && !self.refreshed && !issued_now {
            self.refreshed = true;
            return Next::Refresh;
        }
        match policy.delay(self.made, error, call.repeat, jitter) {
            Some(wait) if deadline.allows_retry_after(wait) => Next::Wait(wait),
            Some(wait) => {
                tracing::warn!(
                    attempt = self.made,
                    method = call.method.as_str(),
                    status = error.status(),
                    delay_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "request failed; no time is left for another attempt"
                );
                Next::Fail
            }
            None => Next::Fail,
        }
    }
}

impl Client {
    /// Sends `call` until it succeeds, or until [`Attempts::after`] gives up.
    pub(super) async fn execute(
        &self,
        call: Call<'_>,
        deadline: Deadline,
    ) -> Result<Answer, Error> {
        // Links from Dataverse are followed as they come, so they are measured here too.
        super::check_length(call.url.as_str().len(), None)?;
        let mut attempts = Attempts::default();
        let result = self.retrying(&call, deadline, &mut attempts).await;
        result.map_err(|error| attempts.conclude(error, &call.method))
    }

    /// The loop of [`Client::execute`]: every way out of it, the throttle gate's refusal and a
    /// failed token request included, goes through [`Attempts::conclude`].
    async fn retrying(
        &self,
        call: &Call<'_>,
        deadline: Deadline,
        attempts: &mut Attempts,
    ) -> Result<Answer, Error> {
        let inner = &self.inner;
        loop {
            attempts.made += 1;
            self.wait_for_gate(call, deadline).await?;
            let (token, issued_now) = inner
                .tokens
                .token(&inner.http, &inner.policy, deadline)
                .await?;
            let error = match self
                .attempt(call, &token, deadline, attempts.made > 1)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if let Error::Api {
                status: 429,
                retry_after: Some(wait),
                code,
                message,
            } = &error
            {
                inner.gate.close(*wait, code.as_deref(), message);
            }
            let method = call.method.as_str();
            match attempts.after(
                &error,
                call,
                issued_now,
                &inner.policy,
                deadline,
                fastrand::f64(),
            ) {
                Next::Refresh => {
                    tracing::info!(method, "Dataverse refused the token; fetching a new one");
                    inner.tokens.invalidate(&token).await;
                }
                Next::Wait(wait) => {
                    tracing::warn!(
                        attempt = attempts.made,
                        method,
                        status = error.status(),
                        delay_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Next::AlreadyDone => {
                    tracing::info!(
                        status = error.status(),
                        method,
                        "an earlier attempt had already succeeded"
                    );
                    return Ok(Answer {
                        status: 204,
                        headers: HeaderMap::new(),
                        body: Bytes::new(),
                    });
                }
                Next::Fail => return Err(error),
            }
        }
    }

    /// Waits until the throttle gate opens, or fails with the 429 that closed it when `deadline`
    /// does not allow the wait. Checked again after each wait: another request may have been told
    /// to wait longer meanwhile.
    async fn wait_for_gate(&self, call: &Call<'_>, deadline: Deadline) -> Result<(), Error> {
        loop {
            let pending = self.inner.gate.pending();
            let left = pending.as_ref().map(|(left, _)| *left);
            match (admit(left, deadline), pending) {
                (Admit::Wait(wait), _) => {
                    tracing::info!(
                        method = call.method.as_str(),
                        delay_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "Dataverse asked this client to wait (Retry-After); waiting before sending"
                    );
                    tokio::time::sleep(wait).await;
                }
                (Admit::Refuse, Some((wait, throttled))) => {
                    tracing::warn!(
                        method = call.method.as_str(),
                        delay_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "Dataverse asked this client to wait (Retry-After) longer than the deadline allows; not sent"
                    );
                    return Err(throttled);
                }
                _ => return Ok(()),
            }
        }
    }

    /// One attempt: a 2xx answer, or the error it amounts to. `retry` says whether it is not the
    /// request's first, for the counters.
    async fn attempt(
        &self,
        call: &Call<'_>,
        token: &SecretString,
        deadline: Deadline,
        retry: bool,
    ) -> Result<Answer, Error> {
        let inner = &self.inner;
        let method = call.method.as_str();
        let path = call.url.path();
        let Some(timeout) = transport::attempt_timeout(&inner.policy, deadline) else {
            return Err(Error::Deadline {
                method: method.into(),
                path: path.into(),
            });
        };
        let mut request = inner
            .http
            .request(call.method.clone(), call.url.clone())
            .timeout(timeout)
            .bearer_auth(token.expose_secret())
            .header("accept", "application/json")
            .header("odata-maxversion", "4.0")
            .header("odata-version", "4.0");
        if call.method == Method::GET {
            // Defeats caching of expanded collections, as Dataverse recommends.
            request = request.header("if-none-match", "null");
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        let sent = request.send().await;
        // A connection that was never made put nothing on the wire; anything else did, even if
        // no answer came back.
        if !sent.as_ref().is_err_and(reqwest::Error::is_connect) {
            inner.counters.sent(retry);
        }
        let response = match sent {
            Ok(response) => response,
            // A timeout that the deadline imposed is the deadline's doing, not the network's. A
            // connect timeout is not: nothing was sent, and that is worth knowing.
            Err(e)
                if e.is_timeout() && !e.is_connect() && timeout < inner.policy.request_timeout =>
            {
                return Err(Error::Deadline {
                    method: method.into(),
                    path: path.into(),
                });
            }
            Err(e) => return Err(transport::error(method, path, e)),
        };
        let status = response.status().as_u16();
        if status == 429 {
            inner.counters.throttles.fetch_add(1, Ordering::Relaxed);
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport::error(method, path, e))?;
        if (200..300).contains(&status) {
            Ok(Answer {
                status,
                headers,
                body,
            })
        } else {
            Err(transport::api_error(status, &headers, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> Error {
        Error::Api {
            status,
            code: None,
            message: String::new(),
            retry_after: None,
        }
    }

    fn call(url: &Url, repeat: Repeat, done_if_retried: Option<u16>) -> Call<'_> {
        Call {
            method: Method::DELETE,
            url,
            headers: Vec::new(),
            body: None,
            repeat,
            done_if_retried,
        }
    }

    fn url() -> Url {
        Url::parse("https://org.example/api/data/v9.2/accounts").unwrap()
    }

    #[test]
    fn refreshes_a_cached_token_once_and_never_one_issued_for_this_request() {
        let url = url();
        let call = call(&url, Repeat::Safe, None);
        let policy = RetryPolicy::default();
        let mut attempts = Attempts {
            made: 1,
            ..Attempts::default()
        };
        let next = |a: &mut Attempts, issued_now| {
            a.after(&api(401), &call, issued_now, &policy, Deadline::none(), 0.5)
        };
        assert_eq!(next(&mut Attempts::default(), true), Next::Fail);
        assert_eq!(next(&mut attempts, false), Next::Refresh);
        assert_eq!(next(&mut attempts, false), Next::Fail);
    }

    #[test]
    fn a_lost_delete_answer_followed_by_404_is_success_but_a_first_404_is_not() {
        let url = url();
        let call = call(&url, Repeat::Safe, Some(404));
        let policy = RetryPolicy::default();
        let mut fresh = Attempts::default();
        assert_eq!(
            fresh.after(&api(404), &call, false, &policy, Deadline::none(), 0.5),
            Next::Fail
        );
        let mut retried = Attempts::default();
        assert!(matches!(
            retried.after(&api(504), &call, false, &policy, Deadline::none(), 0.5),
            Next::Wait(_)
        ));
        assert_eq!(
            retried.after(&api(404), &call, false, &policy, Deadline::none(), 0.5),
            Next::AlreadyDone
        );
    }

    #[test]
    fn the_gate_waits_only_when_an_attempt_fits_after_the_wait() {
        let soon = Deadline::after(Duration::from_secs(10));
        assert_eq!(admit(None, soon), Admit::Go);
        assert_eq!(admit(Some(Duration::ZERO), soon), Admit::Go);
        assert_eq!(
            admit(Some(Duration::from_secs(5)), soon),
            Admit::Wait(Duration::from_secs(5))
        );
        assert_eq!(admit(Some(Duration::from_secs(300)), soon), Admit::Refuse);
        // Waiting to the last moment would leave no time for the request itself.
        assert_eq!(
            admit(Some(Duration::from_millis(9_500)), soon),
            Admit::Refuse
        );
        assert_eq!(
            admit(Some(Duration::from_secs(300)), Deadline::none()),
            Admit::Wait(Duration::from_secs(300))
        );
    }

    #[test]
    fn the_gate_keeps_the_latest_end_and_the_answer_that_set_it() {
        let gate = Gate::default();
        assert!(gate.pending().is_none());
        gate.close(Duration::from_secs(60), Some("0x80072322"), "too many");
        gate.close(Duration::from_secs(5), Some("0x80072321"), "too long");
        let (left, error) = gate.pending().unwrap();
        assert!(
            left > Duration::from_secs(50),
            "a shorter wait does not shorten it: {left:?}"
        );
        assert_eq!(error.status(), Some(429));
        assert_eq!(error.code(), Some("0x80072322"));
        assert!(matches!(error, Error::Api { retry_after: Some(after), .. } if after == left));
        let open = Gate::default();
        open.close(Duration::ZERO, None, "");
        assert!(
            open.pending().is_none(),
            "a wait that is over leaves the gate open"
        );
    }

    #[test]
    fn a_retry_after_too_long_for_the_clock_closes_the_gate_for_the_cap_without_panicking() {
        for header in ["99999999999999999999", "18446744073709551615"] {
            let mut headers = HeaderMap::new();
            headers.insert(
                reqwest::header::RETRY_AFTER,
                reqwest::header::HeaderValue::from_static(header),
            );
            let error = crate::transport::api_error(429, &headers, b"");
            let Error::Api {
                retry_after: Some(wait),
                ..
            } = error
            else {
                panic!("{header}: {error:?}");
            };
            assert_eq!(wait, MAX_RETRY_AFTER, "{header}");
            let gate = Gate::default();
            gate.close(wait, None, "");
            let (left, _) = gate.pending().unwrap();
            assert!(left + Duration::from_secs(60) > MAX_RETRY_AFTER, "{left:?}");
        }
        // A wait that reached the gate uncapped is taken as the cap, not added to the clock.
        for wait in [Duration::MAX, Duration::from_secs(u64::MAX)] {
            let gate = Gate::default();
            gate.close(wait, None, "");
            let (left, _) = gate.pending().unwrap();
            assert!(left <= MAX_RETRY_AFTER, "{left:?}");
        }
    }

    #[test]
    fn a_refusal_after_an_unanswered_attempt_says_the_write_may_have_applied() {
        let url = url();
        let call = call(&url, Repeat::Safe, Some(404));
        let policy = RetryPolicy::default();
        let throttled = Error::Api {
            status: 429,
            code: None,
            message: "wait".into(),
            retry_after: Some(Duration::from_secs(300)),
        };
        let soon = Deadline::after(Duration::from_secs(10));
        // Nothing unanswered: each refusal stands as it is.
        for refusal in [api(500), api(401), throttled] {
            let fresh = Attempts::default();
            let error = fresh.conclude(refusal, &Method::DELETE);
            assert!(!error.may_have_applied(), "{error:?}");
        }
        let mut retried = Attempts {
            made: 1,
            ..Attempts::default()
        };
        assert!(matches!(
            retried.after(&api(504), &call, false, &policy, soon, 0.5),
            Next::Wait(_)
        ));
        retried.made = 2;
        for (refusal, status) in [(api(500), 500), (api(403), 403), (api(429), 429)] {
            let message = refusal.to_string();
            let error = retried.conclude(refusal, &Method::DELETE);
            assert!(error.may_have_applied(), "{error:?}");
            assert!(matches!(error, Error::MayHaveApplied(_)), "{error:?}");
            // Read as the error inside: the same status and message for whoever maps it.
            assert_eq!(error.status(), Some(status));
            assert_eq!(error.to_string(), message);
            assert!(matches!(error.reported(), Error::Api { .. }));
        }
        let unauthorized = retried.conclude(api(401), &Method::PATCH);
        assert!(unauthorized.is_unauthorized() && unauthorized.may_have_applied());
        // A lost answer already says so, and keeps its shape for callers matching on it.
        let lost = retried.conclude(
            Error::Deadline {
                method: "DELETE".into(),
                path: "/x".into(),
            },
            &Method::DELETE,
        );
        assert!(matches!(lost, Error::Deadline { .. }), "{lost:?}");
        // A read changes nothing, whatever went unanswered before.
        assert!(!retried.conclude(api(500), &Method::GET).may_have_applied());
    }

    #[test]
    fn usage_is_counted_per_attempt_and_read_as_differences() {
        let counters = Counters::default();
        let before = counters.usage();
        counters.sent(false);
        counters.sent(true);
        counters.throttles.fetch_add(1, Ordering::Relaxed);
        let delta = counters.usage().since(before);
        assert_eq!(
            delta,
            Usage {
                requests: 2,
                throttles: 1,
                retries: 1
            }
        );
        assert_eq!((delta + delta).requests, 4);
        assert_eq!(before.since(delta), Usage::default(), "never below zero");
    }

    #[test]
    fn does_not_wait_when_the_deadline_leaves_no_attempt_after_the_wait() {
        let url = url();
        let call = call(&url, Repeat::Safe, None);
        let policy = RetryPolicy::default();
        let throttled = Error::Api {
            status: 429,
            code: None,
            message: String::new(),
            retry_after: Some(Duration::from_secs(300)),
        };
        let mut attempts = Attempts {
            made: 1,
            ..Attempts::default()
        };
        let soon = Deadline::after(Duration::from_secs(10));
        assert_eq!(
            attempts.after(&throttled, &call, false, &policy, soon, 0.5),
            Next::Fail
        );
        assert_eq!(
            attempts.after(&throttled, &call, false, &policy, Deadline::none(), 0.0),
            Next::Wait(Duration::from_secs(300))
        );
    }
}
