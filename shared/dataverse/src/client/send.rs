//! The send loop every request goes through, in two halves kept apart: [`Client::attempt`] sends once
//! and reports what happened, and [`Attempts::after`] decides, from that alone, what to do next. The
//! decision is pure, so the rules (one token refresh, retries only where repeating is safe, nothing
//! past the deadline) are tested without a network.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};

use super::Client;
use crate::retry::{Deadline, Repeat, RetryPolicy};
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
        let inner = &self.inner;
        // Links from Dataverse are followed as they come, so they are measured here too.
        super::check_length(call.url.as_str().len(), None)?;
        let mut attempts = Attempts::default();
        loop {
            attempts.made += 1;
            let (token, issued_now) = inner
                .tokens
                .token(&inner.http, &inner.policy, deadline)
                .await?;
            let error = match self.attempt(&call, &token, deadline).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let method = call.method.as_str();
            match attempts.after(
                &error,
                &call,
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

    /// One attempt: a 2xx answer, or the error it amounts to.
    async fn attempt(
        &self,
        call: &Call<'_>,
        token: &SecretString,
        deadline: Deadline,
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
        let response = match request.send().await {
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
            attempts.after(&throttled, &call, false, &policy, Deadline::none(), 0.5),
            Next::Wait(Duration::from_secs(300))
        );
    }
}
