//! A pool of execution environments of one function, fed from one queue of invocations: how a Step
//! Functions Map state or a burst of asynchronous invokes meets Lambda. Each environment is one
//! process ([`Function`]) handling one invocation at a time, as Lambda runs them; an invocation
//! that fails with an error named in `retry_on` is invoked again, as a `Retry` would, and counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::runtime::{Failure, Function};

/// The environments, started and waiting for invocations.
#[derive(Debug)]
pub struct Pool {
    functions: Vec<Function>,
}

/// What a [`Pool::run`] did.
#[derive(Debug)]
pub struct PoolRun {
    /// The last outcome of each payload, in the payloads' order.
    pub outcomes: Vec<Result<Value, Failure>>,
    /// Invocations in all, re-invocations included.
    pub invocations: usize,
    /// Re-invocations after an error named in `retry_on`.
    pub reinvoked: usize,
}

impl Pool {
    /// Starts `size` processes of `name`, each with `env` (see [`Function::start`]).
    pub async fn start(name: &str, env: &[(String, String)], size: usize) -> std::io::Result<Self> {
        let mut functions = Vec::with_capacity(size);
        for _ in 0..size {
            functions.push(Function::start(name, env).await?);
        }
        Ok(Self { functions })
    }

    pub fn len(&self) -> usize {
        self.functions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Invokes the function once for each payload, each environment taking the next payload as
    /// soon as it has answered the last, every invocation with `timeout` as its deadline. A payload
    /// whose invocation fails with an `errorType` in `retry_on` is invoked again at once by the
    /// same environment, until it answers otherwise or `max_attempts` invocations are spent.
    pub async fn run(
        &mut self,
        payloads: Vec<Value>,
        timeout: Duration,
        retry_on: &[&str],
        max_attempts: usize,
    ) -> PoolRun {
        let count = payloads.len();
        let queue = Arc::new(Mutex::new(
            payloads.into_iter().enumerate().collect::<VecDeque<_>>(),
        ));
        let retry_on: Arc<Vec<String>> =
            Arc::new(retry_on.iter().map(|s| (*s).to_owned()).collect());
        let mut tasks = tokio::task::JoinSet::new();
        for mut function in self.functions.drain(..) {
            let queue = Arc::clone(&queue);
            let retry_on = Arc::clone(&retry_on);
            tasks.spawn(async move {
                let mut done = Vec::new();
                let (mut invocations, mut reinvoked) = (0, 0);
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some((index, payload)) = next else {
                        break;
                    };
                    let mut attempt = 1;
                    let outcome = loop {
                        invocations += 1;
                        let outcome = function.invoke_within(&payload, timeout).await;
                        let again = matches!(&outcome, Err(f) if retry_on.iter().any(|r| r == f.error_type()));
                        if !again || attempt >= max_attempts {
                            break outcome;
                        }
                        attempt += 1;
                        reinvoked += 1;
                    };
                    done.push((index, outcome));
                }
                (function, done, invocations, reinvoked)
            });
        }
        let mut outcomes: Vec<Option<Result<Value, Failure>>> = (0..count).map(|_| None).collect();
        let (mut invocations, mut reinvoked) = (0, 0);
        while let Some(joined) = tasks.join_next().await {
            let Ok((function, done, n, again)) = joined else {
                continue;
            };
            self.functions.push(function);
            invocations += n;
            reinvoked += again;
            for (index, outcome) in done {
                if let Some(slot) = outcomes.get_mut(index) {
                    *slot = Some(outcome);
                }
            }
        }
        PoolRun {
            // A payload without an outcome was held by an environment whose task died: as good as
            // a process that exited.
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or(Err(Failure::Exited)))
                .collect(),
            invocations,
            reinvoked,
        }
    }
}
