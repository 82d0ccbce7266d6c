//! Writes that succeed or fail together: one `$batch` holding one changeset (Microsoft Learn, "Execute
//! batch operations using the Web API", Change sets).
//!
//! Each write is a part with `Content-ID` = its position + 1, so a later write can name a row an
//! earlier one creates as `$n`: as its target (`PATCH $1`) or in a binding
//! (`"parentcustomerid_account@odata.bind": "$1"`). Dataverse applies the parts in order and rolls all
//! of them back if one fails; the batch then answers with that part's error, which comes back as
//! [`Error::BatchPart`] naming it.

use reqwest::Method;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::send::Call;
use super::{Client, Table, entity_id_of};
use crate::Error;
use crate::key::RowRef;
use crate::multipart::{self, PartRequest};
use crate::retry::{Deadline, Repeat};

/// The most writes one changeset may hold ("up to 1,000 requests" per batch).
pub const MAX_CHANGESET: usize = 1000;

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `POST` to the table: a new row.
    Create,
    /// `PATCH` with `If-Match` (the etag, or `*`): never creates.
    Update,
    /// `PATCH` without `If-Match` (unless an etag is given): updates or creates.
    Upsert,
    /// `DELETE`, with `If-Match` when an etag is given.
    Delete,
}

/// The row a write is about.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteTarget {
    Row(RowRef),
    /// The row created by the write with this `Content-ID` (position + 1), earlier in the changeset.
    Earlier(u32),
}

/// One write of a changeset.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    pub kind: WriteKind,
    pub table: &'a Table,
    /// `None` for a create.
    pub target: Option<WriteTarget>,
    /// The columns, for a create, update or upsert.
    pub item: Option<&'a Map<String, Value>>,
    pub etag: Option<&'a str>,
}

/// What one write did.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// Its `Content-ID`: its position + 1.
    pub content_id: u32,
    pub status: u16,
    /// The row's id, when Dataverse said it (`OData-EntityId` by id).
    pub id: Option<Uuid>,
}

impl Client {
    /// Sends `writes` as one changeset and returns what each did, in order. All of them are applied,
    /// or none.
    ///
    /// Sent once: a changeset of creates that ran and lost its answer must not run twice. Only a
    /// request that provably never left is sent again.
    pub async fn changeset(
        &self,
        writes: &[Write<'_>],
        deadline: Deadline,
    ) -> Result<Vec<Written>, Error> {
        // Rows named by keys that cannot go in a URL are found first, outside the changeset.
        let mut targets = Vec::with_capacity(writes.len());
        for write in writes {
            let target = match &write.target {
                None => self
                    .collection_url(write.table, &crate::Query::default())?
                    .to_string(),
                Some(WriteTarget::Earlier(id)) => format!("${id}"),
                Some(WriteTarget::Row(row)) => {
                    let row = self
                        .locate(write.table, row.clone(), deadline)
                        .await?
                        .ok_or_else(|| super::no_such_key(write.table))?;
                    self.row_url(write.table, &row, &crate::Query::default())?
                        .to_string()
                }
            };
            targets.push(target);
        }
        let mut parts = Vec::with_capacity(writes.len());
        for (i, (write, target)) in writes.iter().zip(&targets).enumerate() {
            let (method, etag_header) = match write.kind {
                WriteKind::Create => ("POST", None),
                WriteKind::Update => ("PATCH", Some(write.etag.unwrap_or("*"))),
                WriteKind::Upsert => ("PATCH", write.etag),
                WriteKind::Delete => ("DELETE", write.etag),
            };
            // Dataverse reads the options on each request of a changeset, not on the batch around
            // them.
            let mut headers = self.options.headers();
            let body = match write.item {
                Some(item) if write.kind != WriteKind::Delete => {
                    headers.push(("Content-Type", "application/json; type=entry".to_owned()));
                    Some(serde_json::to_vec(item).map_err(Error::Encode)?)
                }
                _ => None,
            };
            if let Some(etag) = etag_header {
                headers.push(("If-Match", etag.to_owned()));
            }
            parts.push(PartRequest {
                content_id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                method,
                target,
                headers,
                body,
            });
        }
        let (content_type, body) =
            multipart::changeset(&parts, &Uuid::new_v4().simple().to_string());
        let url = self.url("$batch")?;
        let answer = self
            .execute(
                Call {
                    method: Method::POST,
                    url: &url,
                    headers: vec![("content-type", content_type)],
                    body: Some(body.into()),
                    repeat: Repeat::OnlyIfUnsent,
                    done_if_retried: None,
                },
                deadline,
            )
            .await?;
        let boundary = answer
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(multipart::boundary)
            .ok_or_else(|| Error::BatchAnswer("the answer is not multipart/mixed".into()))?;
        let responses = multipart::responses(&answer.body, boundary);
        if let Some(failed) = responses.iter().find(|r| r.status >= 400) {
            // A 2xx batch with a failed part: Dataverse rolled the changeset back all the same.
            return Err(crate::transport::part_error(failed, None));
        }
        let mut written = Vec::with_capacity(writes.len());
        for content_id in 1..=u32::try_from(writes.len()).unwrap_or(u32::MAX) {
            let response = responses
                .iter()
                .find(|r| r.content_id == Some(content_id))
                .ok_or_else(|| {
                    Error::BatchAnswer(format!("no response for operation {content_id}"))
                })?;
            written.push(Written {
                content_id,
                status: response.status,
                id: response.header("odata-entityid").and_then(entity_id_of),
            });
        }
        Ok(written)
    }
}
