//! Pages fetched one ahead, on request, so the next page is on its way while this one is worked on.
//!
//! Dataverse builds a page while the caller waits, and a caller then works through it while Dataverse
//! waits: done in turn, a poll costs the sum of the two. Asking for the next page as soon as this
//! one has arrived costs the larger of the two instead. The caller decides when: a request made for
//! a page nobody reads still counts against the org's service-protection limits, so a page is only
//! fetched ahead when the caller knows it will want it.

use reqwest::Url;
use tokio::task::JoinHandle;

use super::{Client, Page, Prefer};
use crate::Error;
use crate::retry::Deadline;

/// The pages of a collection, from a first URL through each `@odata.nextLink`.
#[derive(Debug)]
pub struct Pager {
    client: Client,
    prefer: Prefer,
    deadline: Deadline,
    next: Next,
}

#[derive(Debug)]
enum Next {
    /// The next page, not asked for yet.
    Url(Url),
    /// The next page, asked for by [`Pager::fetch_ahead`].
    Fetching(Url, Ahead),
    /// The last page has been returned.
    Done,
}

/// A page fetched in its own task, stopped if it is dropped unread: the caller stopped early, and
/// nobody will read it.
#[derive(Debug)]
struct Ahead(JoinHandle<Result<Page, Error>>);

impl Drop for Ahead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Pager {
    pub(super) fn new(client: Client, first: Url, prefer: Prefer, deadline: Deadline) -> Self {
        Self {
            client,
            prefer,
            deadline,
            next: Next::Url(first),
        }
    }

    /// The next page, or `None` after the last one. After an error the same page is asked for again
    /// by the next call, so a failure never reads as the end of the pages.
    pub async fn next(&mut self) -> Result<Option<Page>, Error> {
        let url = match std::mem::replace(&mut self.next, Next::Done) {
            Next::Done => return Ok(None),
            Next::Url(url) => url,
            Next::Fetching(url, mut ahead) => match (&mut ahead.0).await {
                Ok(Ok(page)) => return self.returned(page).map(Some),
                Ok(Err(e)) => {
                    self.next = Next::Url(url);
                    return Err(e);
                }
                // The task only ends without a page if it panicked (it is aborted only on drop): the
                // page is fetched again, here, where a panic is the caller's to see.
                Err(_) => {
                    tracing::warn!("a page fetched ahead was lost; fetching it again");
                    url
                }
            },
        };
        match self.client.page(&url, self.prefer, self.deadline).await {
            Ok(page) => self.returned(page).map(Some),
            Err(e) => {
                self.next = Next::Url(url);
                Err(e)
            }
        }
    }

    /// Notes where `page` leads before handing it over.
    fn returned(&mut self, page: Page) -> Result<Page, Error> {
        if let Some(link) = page.next_link.as_deref() {
            self.next = Next::Url(self.client.link(link)?);
        }
        Ok(page)
    }

    /// Starts fetching the page after the last one returned, if there is one and it is not already
    /// on its way. The request is sent before this returns, so it is under way while the caller
    /// works through the current page, even on a single-threaded runtime.
    pub async fn fetch_ahead(&mut self) {
        let Next::Url(url) = &self.next else {
            return;
        };
        let url = url.clone();
        let (client, prefer, deadline) = (self.client.clone(), self.prefer, self.deadline);
        let target = url.clone();
        let task = tokio::spawn(async move { client.page(&target, prefer, deadline).await });
        self.next = Next::Fetching(url, Ahead(task));
        // Give the new task, and the connection task it hands the request to, their first turn:
        // both run before this task is polled again, and the request is on the wire by then.
        tokio::task::yield_now().await;
    }
}
