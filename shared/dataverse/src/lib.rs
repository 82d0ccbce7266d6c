//! A client for the Microsoft Dataverse (Dynamics 365) Web API.
//!
//! It knows nothing of Lambda or AWS. What it does know is where Dataverse differs from a generic OData
//! service (`docs/dataverse.md` at the repository's root, with the sources):
//!
//! - client-credentials tokens, cached until shortly before they expire and refreshed once on a 401;
//! - tables named by logical name or entity set name, resolved through `EntityDefinitions`, because
//!   entity set names are not "logical name + s";
//! - paging by `Prefer: odata.maxpagesize` and verbatim `@odata.nextLink`s, with `$skip` and `$top`
//!   provided here because Dataverse refuses the one and ignores the other beside a page size;
//! - rows by id or by alternate key, with a key Dataverse cannot take in a URL found by `$filter`;
//! - updates that never create (`If-Match`), upserts that say whether they created, and a create that
//!   is never repeated blindly;
//! - `Retry-After` on 429, honoured by every later request of the same client too, backoff on gateway
//!   errors, and nothing past the caller's deadline;
//! - counters of what went on the wire ([`Usage`]), for whoever reports on it.
//!
//! ```no_run
//! # async fn demo(credentials: dataverse::Credentials) -> Result<(), dataverse::Error> {
//! use dataverse::{Client, Deadline, Query};
//! use futures_util::TryStreamExt;
//!
//! let client = Client::builder(credentials).build()?;
//! let deadline = Deadline::after(std::time::Duration::from_secs(30));
//! let accounts = client.table(&"account".try_into()?, deadline).await?;
//! let query = Query::new().select("name").filter("statecode eq 0");
//! let rows: Vec<_> = client.rows(&accounts, &query, 0, Some(10), deadline).try_collect().await?;
//! # Ok(()) }
//! ```

mod auth;
mod change;
mod client;
mod error;
pub mod filter;
mod key;
mod multipart;
mod name;
mod query;
mod retry;
mod transport;

pub use auth::{Credentials, http_client_builder};
pub use change::{Change, classify};
pub use client::{
    BYPASS_LOGIC_HEADER, BYPASS_LOGIC_VALUE, BulkMessage, BulkWritten, SUPPRESS_FLOWS_HEADER,
    WriteOptions, key_reference,
};
pub use client::{
    Choice, Client, ClientBuilder, ColumnDescription, Counters, FORMATTED_VALUE_ANNOTATIONS,
    FetchXmlError, KeyDescription, MAX_CHANGESET, MAX_PAGE_SIZE, MAX_URL_LENGTH, Navigation,
    Operation, OperationKind, OperationNameError, Page, Pager, Prefer, Table, TableDescription,
    Update, Upsert, Upserted, Usage, Write, WriteKind, WriteTarget, Written,
};
pub use error::{EXCERPT_CHARS, Error, excerpt};
pub use key::{AlternateKey, KeyError, KeyValue, RowRef, UNADDRESSABLE};
pub use name::{TableName, is_schema_name};
pub use query::Query;
pub use retry::{Deadline, MAX_RETRY_AFTER, MIN_ATTEMPT, Repeat, RetryPolicy, parse_retry_after};
