//! The client: table resolution, paging and CRUD. Every request goes through the send loop in
//! [`send`].

mod bulk;
mod changeset;
mod describe;
mod fetch;
mod identity;
mod operation;
mod options;
mod pager;
mod relate;
mod send;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

pub use self::bulk::{BulkMessage, BulkWritten, key_reference};
pub use self::changeset::{MAX_CHANGESET, Write, WriteKind, WriteTarget, Written};
pub use self::describe::{Choice, ColumnDescription, KeyDescription, TableDescription};
pub use self::fetch::FetchXmlError;
pub use self::operation::{Operation, OperationKind, OperationNameError};
pub use self::options::{
    BYPASS_LOGIC_HEADER, BYPASS_LOGIC_VALUE, SUPPRESS_FLOWS_HEADER, WriteOptions,
};
pub use self::pager::Pager;
pub use self::relate::Navigation;
use self::send::{Answer, Call, Gate};
pub use self::send::{Counters, Usage};
use crate::auth::{Credentials, TokenSource, secure_url};
use crate::key::RowRef;
use crate::name::{MAX_TABLE_NAME, TableName};
use crate::query::{Query, encode};
use crate::retry::{Deadline, Repeat, RetryPolicy};
use crate::{Error, transport};

/// The most rows Dataverse returns in one page, and the default.
pub const MAX_PAGE_SIZE: usize = 5000;

/// The longest URL Dataverse accepts, in characters ("Compose HTTP requests and handle errors",
/// Maximum URL length). A longer one is refused before it reaches the Web API, so it is refused here
/// before it is sent: no retry can make it shorter.
pub const MAX_URL_LENGTH: usize = 32_768;

/// Table definitions by every name they were asked for. Shared by the clients built for one
/// environment, so that re-reading rotated credentials does not also re-read the metadata.
type TableCache = Arc<Mutex<HashMap<String, Arc<Table>>>>;

/// What `EntityDefinitions` says about a table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Table {
    pub logical_name: String,
    pub entity_set_name: String,
    pub primary_id_attribute: String,
    #[serde(default)]
    pub primary_name_attribute: Option<String>,
    #[serde(default)]
    pub change_tracking_enabled: bool,
}

/// One page of a collection or a delta. Rows stay raw JSON: they are passed on, not inspected, and a
/// raw row costs a fraction of a parsed one.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// When Dataverse answered, by its own clock (the `Date` header), to the second. Row timestamps
    /// come from that clock too, so this is "now" for anything compared with them; `None` if the
    /// answer had no valid `Date`.
    #[serde(skip)]
    pub date: Option<SystemTime>,
    #[serde(rename = "value")]
    pub rows: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    pub delta_link: Option<String>,
    #[serde(rename = "@odata.count", default)]
    pub count: Option<u64>,
}

#[derive(Deserialize)]
struct Definitions {
    value: Vec<Table>,
}

/// The `Prefer` preferences of a read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefer {
    /// `odata.maxpagesize`; Dataverse's default (5000) when `None`.
    pub max_page_size: Option<usize>,
    /// `odata.track-changes`: end the result with a delta link.
    pub track_changes: bool,
    /// `odata.include-annotations` for [`FORMATTED_VALUE_ANNOTATIONS`]: each choice, yes/no, number,
    /// money and date column gains its display text, and each lookup the name and table of the row
    /// it points to.
    pub formatted_values: bool,
}

/// The annotations `formatted_values` asks for: the display text of a value, and for a lookup the
/// logical name of the table it points to and the navigation property that reaches it (which a
/// polymorphic lookup needs to be written back). Named one by one rather than `*`, so that no
/// annotation Dataverse adds later grows every row unasked.
pub const FORMATTED_VALUE_ANNOTATIONS: &str = "OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname,Microsoft.Dynamics.CRM.associatednavigationproperty";

impl Prefer {
    fn header(self) -> Option<String> {
        let mut parts = Vec::new();
        if self.track_changes {
            parts.push("odata.track-changes".to_owned());
        }
        if let Some(n) = self.max_page_size {
            parts.push(format!("odata.maxpagesize={}", n.clamp(1, MAX_PAGE_SIZE)));
        }
        if self.formatted_values {
            parts.push(format!(
                "odata.include-annotations=\"{FORMATTED_VALUE_ANNOTATIONS}\""
            ));
        }
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

#[derive(Debug)]
pub struct ClientBuilder {
    credentials: Credentials,
    policy: RetryPolicy,
    tables: Option<TableCache>,
}

impl ClientBuilder {
    /// Shares `other`'s table definitions: for a client that replaces `other` with new credentials
    /// for the same environment.
    #[must_use]
    pub fn tables_of(mut self, other: &Client) -> Self {
        self.tables = Some(other.inner.tables.clone());
        self
    }

    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let url = secure_url("url", &self.credentials.url)?;
        let api = Url::parse(&format!(
            "{}/api/data/v9.2/",
            url.as_str().trim_end_matches('/')
        ))
        .map_err(|e| Error::Config(format!("cannot build the Web API URL: {e}")))?;
        let tokens = TokenSource::new(&self.credentials, &url)?;
        // The process's shared TLS set-up: the roots are read on the first HTTPS handshake, once.
        let http = crate::auth::http_client_builder()?;
        // The first request follows at once: read the trust roots meanwhile, if it will need them.
        if url.scheme() == "https" || tokens.uses_https() {
            crate::auth::prefetch_roots();
        }
        let http = http
            // A redirect could carry the bearer token somewhere else; Dataverse does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .user_agent(concat!("dynamics-crm-lambda/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let origin = api.origin();
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                api,
                origin,
                tokens,
                policy: self.policy,
                tables: self.tables.unwrap_or_default(),
                navigations: Mutex::default(),
                counters: Arc::default(),
                gate: Gate::default(),
            }),
            options: WriteOptions::default(),
        })
    }
}

/// A Dataverse Web API client for one environment. Cheap to clone; clones share the connection pool,
/// the token and the table cache.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Sent with every write of this clone ([`Client::with_options`]).
    options: WriteOptions,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// `{url}/api/data/v9.2/`.
    api: Url,
    /// Links from Dataverse must stay on the API's origin.
    origin: url::Origin,
    tokens: TokenSource,
    policy: RetryPolicy,
    tables: TableCache,
    /// Each table's navigation properties, by logical name, as its relationship definitions say.
    navigations: Mutex<HashMap<String, Arc<Vec<Navigation>>>>,
    counters: Arc<Counters>,
    /// Closed by a 429's `Retry-After`, for every request of this client (see [`send`]).
    gate: Gate,
}

impl Client {
    pub fn builder(credentials: Credentials) -> ClientBuilder {
        ClientBuilder {
            credentials,
            policy: RetryPolicy::default(),
            tables: None,
        }
    }

    /// A clone whose writes carry `options` (its reads are unchanged). As cheap as any clone: the
    /// connection pool, the token and the table cache are shared.
    #[must_use]
    pub fn with_options(&self, options: WriteOptions) -> Client {
        Client {
            inner: self.inner.clone(),
            options,
        }
    }

    /// The options this client's writes carry.
    pub fn options(&self) -> WriteOptions {
        self.options
    }

    /// What this client (and its clones) has sent so far.
    pub fn usage(&self) -> Usage {
        self.inner.counters.usage()
    }

    /// This client's counters, to read after the client itself is gone (replaced by one with
    /// rotated credentials, say).
    pub fn counters(&self) -> Arc<Counters> {
        self.inner.counters.clone()
    }

    /// Refuses, before anything is sent (the table lookup included), a query whose URL would be too
    /// long for Dataverse whichever table it is for: the longest table name and a row key are
    /// allowed for, and `extra` characters the caller will add to it.
    pub fn fits(&self, query: &Query, extra: usize) -> Result<(), Error> {
        // `{api}{entity set}({guid})?{options}`.
        let worst = self.inner.api.as_str().len()
            + MAX_TABLE_NAME
            + "(00000000-0000-0000-0000-000000000000)?".len()
            + query.to_query_string().len()
            + extra;
        check_length(worst, Some(query))
    }

    /// Resolves a logical name (`account`) or an entity set name (`accounts`) through
    /// `EntityDefinitions`, once per name for the life of the client.
    pub async fn table(&self, name: &TableName, deadline: Deadline) -> Result<Arc<Table>, Error> {
        let name = name.as_str();
        if let Some(table) = self.cached_table(name) {
            return Ok(table);
        }
        let url = self.url(&format!(
            "EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,ChangeTrackingEnabled&$filter={}",
            encode(&format!(
                "LogicalName eq '{name}' or EntitySetName eq '{name}'"
            ))
        ))?;
        let answer = self.get_json(&url, None, deadline).await?;
        let found: Definitions = transport::decode("EntityDefinitions", &answer.body)?;
        let table = found
            .value
            .into_iter()
            .min_by_key(|t| t.logical_name != name)
            .ok_or_else(|| Error::UnknownTable {
                name: name.to_owned(),
            })?;
        let table = Arc::new(table);
        let mut cache = self
            .inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.insert(name.to_owned(), table.clone());
        cache.insert(table.logical_name.clone(), table.clone());
        cache.insert(table.entity_set_name.clone(), table.clone());
        Ok(table)
    }

    fn cached_table(&self, name: &str) -> Option<Arc<Table>> {
        self.inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// `{api}{relative}`: every name and option in `relative` was checked or encoded already.
    fn url(&self, relative: &str) -> Result<Url, Error> {
        self.inner
            .api
            .join(relative)
            .map_err(|e| Error::Config(format!("cannot build a request URL: {e}")))
    }

    /// `{api}{entity set}?{query}`; [`Error::UrlTooLong`] naming the longest option when Dataverse
    /// would refuse it.
    pub fn collection_url(&self, table: &Table, query: &Query) -> Result<Url, Error> {
        self.resource_url(&table.entity_set_name, query)
    }

    fn row_url(&self, table: &Table, row: &RowRef, query: &Query) -> Result<Url, Error> {
        let key = match row {
            RowRef::Id(id) => id.to_string(),
            RowRef::Key(key) => key.url_segment(),
        };
        self.resource_url(&format!("{}({key})", table.entity_set_name), query)
    }

    /// How `row` can be addressed: as it is, or, for a key whose text Dataverse refuses in a URL
    /// path, by the id a `$filter` on the key's values finds. `None` when that finds no row.
    ///
    /// The lookup cannot check that the columns are one of the table's alternate keys (the URL form
    /// would): it insists on exactly one matching row instead.
    async fn locate(
        &self,
        table: &Table,
        row: RowRef,
        deadline: Deadline,
    ) -> Result<Option<RowRef>, Error> {
        let key = match row {
            RowRef::Key(key) if !key.addressable() => key,
            addressable => return Ok(Some(addressable)),
        };
        let query = Query::new()
            .select(table.primary_id_attribute.clone())
            .filter(key.filter());
        let url = self.collection_url(table, &query)?;
        let prefer = Prefer {
            max_page_size: Some(2),
            track_changes: false,
            formatted_values: false,
        };
        let page = self.page(&url, prefer, deadline).await?;
        let found: Vec<Uuid> = page
            .rows
            .iter()
            .filter_map(|raw| {
                let row: Map<String, Value> = serde_json::from_str(raw.get()).ok()?;
                row.get(&table.primary_id_attribute)?
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
            })
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [id] => Ok(Some(RowRef::Id(*id))),
            _ => Err(Error::AmbiguousKey {
                table: table.logical_name.clone(),
                key: RowRef::Key(key).to_string(),
            }),
        }
    }

    fn resource_url(&self, resource: &str, query: &Query) -> Result<Url, Error> {
        let options = query.to_query_string();
        let separator = if options.is_empty() { "" } else { "?" };
        let url = self.url(&format!("{resource}{separator}{options}"))?;
        check_length(url.as_str().len(), Some(query))?;
        Ok(url)
    }

    /// A link Dataverse returned (`@odata.nextLink`, `@odata.deltaLink`), or one saved from an
    /// earlier answer, checked to point at this environment, so that a forged link cannot collect
    /// the bearer token.
    pub fn link(&self, text: &str) -> Result<Url, Error> {
        let foreign = || Error::ForeignLink {
            link: crate::excerpt(text),
            origin: self.inner.origin.ascii_serialization(),
        };
        let url = Url::parse(text).map_err(|_| foreign())?;
        if url.origin() != self.inner.origin {
            return Err(foreign());
        }
        Ok(url)
    }

    /// Fetches one page of a collection URL or of a link from [`Client::link`].
    pub async fn page(&self, url: &Url, prefer: Prefer, deadline: Deadline) -> Result<Page, Error> {
        let answer = self.get_json(url, prefer.header(), deadline).await?;
        let mut page: Page = transport::decode(url.path(), &answer.body)?;
        page.date = answer
            .headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        tracing::debug!(
            rows = page.rows.len(),
            next = page.next_link.is_some(),
            "page"
        );
        Ok(page)
    }

    /// Pages from `first_url` on, following each `@odata.nextLink` verbatim with the same preferences
    /// (Dataverse asks for both). The stream ends after the page without a next link.
    pub fn pages(
        &self,
        first_url: Url,
        prefer: Prefer,
        deadline: Deadline,
    ) -> impl Stream<Item = Result<Page, Error>> + '_ {
        stream::try_unfold(Some(first_url), move |url| async move {
            let Some(url) = url else { return Ok(None) };
            let page = self.page(&url, prefer, deadline).await?;
            let next = page
                .next_link
                .as_deref()
                .map(|l| self.link(l))
                .transpose()?;
            Ok(Some((page, next)))
        })
    }

    /// Pages from `first_url` on, like [`Client::pages`], that the caller can ask to fetch one page
    /// ahead.
    pub fn pager(&self, first_url: Url, prefer: Prefer, deadline: Deadline) -> Pager {
        Pager::new(self.clone(), first_url, prefer, deadline)
    }

    /// The rows of a query, `skip` rows in and at most `top` rows long, fetched page by page.
    /// Dataverse refuses `$skip`, so skipped rows are read and dropped a page at a time; and `$top`
    /// is not sent (Dataverse ignores it beside a page size), so pages are requested until `top` rows
    /// have come, and no further.
    pub fn rows(
        &self,
        table: &Table,
        query: &Query,
        skip: usize,
        top: Option<usize>,
        deadline: Deadline,
    ) -> impl Stream<Item = Result<Box<RawValue>, Error>> + '_ {
        self.rows_in_pages_of(table, query, skip, top, MAX_PAGE_SIZE, deadline)
    }

    /// [`Client::rows`], asking for pages of at most `page_rows` (at most Dataverse's 5,000): a
    /// caller that must hold a page twice while it reads it keeps its memory down this way.
    pub fn rows_in_pages_of(
        &self,
        table: &Table,
        query: &Query,
        skip: usize,
        top: Option<usize>,
        page_rows: usize,
        deadline: Deadline,
    ) -> impl Stream<Item = Result<Box<RawValue>, Error>> + '_ {
        let wanted = top.map_or(usize::MAX, |t| skip.saturating_add(t));
        let prefer = Prefer {
            max_page_size: Some(wanted.clamp(1, page_rows.clamp(1, MAX_PAGE_SIZE))),
            track_changes: false,
            formatted_values: query.formatted_values,
        };
        // Skipped rows are dropped from the pages themselves: skipping items of the flattened stream
        // would count an error as a skipped row, and a failed page would end the list as if complete.
        let mut to_skip = skip;
        let pages = match self.collection_url(table, query) {
            Ok(url) => self.pages(url, prefer, deadline).left_stream(),
            Err(e) => stream::once(async { Err(e) }).right_stream(),
        };
        pages
            .map_ok(move |mut page| {
                let dropped = to_skip.min(page.rows.len());
                to_skip -= dropped;
                page.rows.drain(..dropped);
                stream::iter(page.rows.into_iter().map(Ok))
            })
            .try_flatten()
            .take(top.unwrap_or(usize::MAX))
    }

    /// How many rows match `filter`, as `{set}/$count` answers: at most 5,000, Dataverse's cap
    /// (Microsoft Learn, "Count rows"), so 5,000 means "5,000 or more".
    pub async fn count(
        &self,
        table: &Table,
        filter: Option<&str>,
        deadline: Deadline,
    ) -> Result<u64, Error> {
        let query = Query {
            filter: filter.map(str::to_owned),
            ..Query::default()
        };
        let url = self.resource_url(&format!("{}/$count", table.entity_set_name), &query)?;
        let answer = self.get_json(&url, None, deadline).await?;
        // A plain-text number, which Dataverse may prefix with a byte order mark.
        let text = String::from_utf8_lossy(&answer.body);
        let text = text.trim_start_matches('\u{feff}').trim();
        transport::decode(url.path(), text.as_bytes())
    }

    /// Retrieves one row, by id or alternate key, with the query's `$select` and `$expand`;
    /// `Error::Api` with status 404 when it does not exist.
    pub async fn get(
        &self,
        table: &Table,
        row: impl Into<RowRef>,
        query: &Query,
        deadline: Deadline,
    ) -> Result<Map<String, Value>, Error> {
        let row = self
            .locate(table, row.into(), deadline)
            .await?
            .ok_or_else(|| no_such_key(table))?;
        let url = self.row_url(table, &row, query)?;
        let prefer = Prefer {
            formatted_values: query.formatted_values,
            ..Prefer::default()
        };
        let answer = self.get_json(&url, prefer.header(), deadline).await?;
        row_body(&url, &answer.body)
    }

    /// Creates a row and returns it as stored (`Prefer: return=representation`).
    ///
    /// Never repeated once it may have reached the server: only a connection that was never made, a
    /// 429 or a 401 (neither processed) is retried. Otherwise a lost answer could mean two rows.
    pub async fn create(
        &self,
        table: &Table,
        item: &Map<String, Value>,
        query: &Query,
        deadline: Deadline,
    ) -> Result<Map<String, Value>, Error> {
        let url = self.collection_url(table, query)?;
        let answer = self
            .execute(
                Call {
                    method: Method::POST,
                    url: &url,
                    headers: self.write_headers(vec![
                        ("prefer", "return=representation".into()),
                        ("content-type", "application/json; charset=utf-8".into()),
                    ]),
                    body: Some(json_body(item)?),
                    repeat: Repeat::OnlyIfUnsent,
                    done_if_retried: None,
                },
                deadline,
            )
            .await?;
        if answer.status == 204 {
            // The preference was not honoured: read the row back from its address.
            let id = entity_id(&answer.headers).ok_or(Error::NoEntityId)?;
            return self
                .get(table, id, &reread(query), deadline)
                .await
                .map_err(|e| Error::CreatedUnread {
                    id,
                    source: Box::new(e),
                });
        }
        row_body(&url, &answer.body)
    }

    /// An update of `row` (by id or alternate key) to `item`'s values, sent by [`Update::send`]. It never creates a row:
    /// `If-Match` is the [`Update::etag`], or `*` (any version of a row that exists), so a missing
    /// row is a 404 and a stale etag a 412.
    pub fn update<'a>(
        &'a self,
        table: &'a Table,
        row: impl Into<RowRef>,
        item: &'a Map<String, Value>,
    ) -> Update<'a> {
        Update {
            client: self,
            table,
            row: row.into(),
            item,
            etag: None,
            query: Cow::Owned(Query::default()),
        }
    }

    /// An upsert of `row` (by id or alternate key) to `item`'s values, sent by [`Upsert::send`]: it
    /// updates the row if it exists and creates it if not, and says which it did.
    pub fn upsert<'a>(
        &'a self,
        table: &'a Table,
        row: impl Into<RowRef>,
        item: &'a Map<String, Value>,
    ) -> Upsert<'a> {
        Upsert {
            client: self,
            table,
            row: row.into(),
            item,
            etag: None,
            query: Cow::Owned(Query::default()),
        }
    }

    /// Deletes a row, by id or alternate key, with optimistic concurrency when `etag` is given.
    pub async fn delete(
        &self,
        table: &Table,
        row: impl Into<RowRef>,
        etag: Option<&str>,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let row = self
            .locate(table, row.into(), deadline)
            .await?
            .ok_or_else(|| no_such_key(table))?;
        let url = self.row_url(table, &row, &Query::default())?;
        let mut headers = self.write_headers(Vec::new());
        if let Some(etag) = etag {
            headers.push(("if-match", etag.to_owned()));
        }
        self.execute(
            Call {
                method: Method::DELETE,
                url: &url,
                headers,
                body: None,
                repeat: if etag.is_some() {
                    Repeat::OnlyIfUnsent
                } else {
                    Repeat::Safe
                },
                done_if_retried: Some(404),
            },
            deadline,
        )
        .await?;
        Ok(())
    }

    /// `headers`, and the headers of this client's write options.
    fn write_headers(
        &self,
        mut headers: Vec<(&'static str, String)>,
    ) -> Vec<(&'static str, String)> {
        headers.extend(self.options.headers());
        headers
    }

    async fn get_json(
        &self,
        url: &Url,
        prefer: Option<String>,
        deadline: Deadline,
    ) -> Result<Answer, Error> {
        let mut headers = Vec::new();
        if let Some(prefer) = prefer {
            headers.push(("prefer", prefer));
        }
        self.execute(
            Call {
                method: Method::GET,
                url,
                headers,
                body: None,
                repeat: Repeat::Safe,
                done_if_retried: None,
            },
            deadline,
        )
        .await
    }
}

/// An update being put together: see [`Client::update`].
#[derive(Debug)]
#[must_use = "an update does nothing until it is sent"]
pub struct Update<'a> {
    client: &'a Client,
    table: &'a Table,
    row: RowRef,
    item: &'a Map<String, Value>,
    etag: Option<&'a str>,
    query: Cow<'a, Query>,
}

impl<'a> Update<'a> {
    /// Only if the row is still at this version (`@odata.etag`); `None` for any version.
    pub fn etag(mut self, etag: Option<&'a str>) -> Self {
        self.etag = etag;
        self
    }

    /// What to return of the row: `query`'s `$select` (its other options do not apply to a write).
    pub fn query(mut self, query: &'a Query) -> Self {
        self.query = Cow::Borrowed(query);
        self
    }

    /// Sends the update and returns the row as stored.
    pub async fn send(self, deadline: Deadline) -> Result<Map<String, Value>, Error> {
        let Update {
            client,
            table,
            row,
            item,
            etag,
            query,
        } = self;
        let row = client
            .locate(table, row, deadline)
            .await?
            .ok_or_else(|| no_such_key(table))?;
        // `If-Match: *` when no etag: an update never creates.
        let (_, row) = client
            .patch(
                table,
                &row,
                item,
                Some(etag.unwrap_or("*")),
                &query,
                deadline,
            )
            .await?;
        Ok(row)
    }
}

/// An upsert being put together: see [`Client::upsert`].
#[derive(Debug)]
#[must_use = "an upsert does nothing until it is sent"]
pub struct Upsert<'a> {
    client: &'a Client,
    table: &'a Table,
    row: RowRef,
    item: &'a Map<String, Value>,
    etag: Option<&'a str>,
    query: Cow<'a, Query>,
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    /// The row as stored.
    pub row: Map<String, Value>,
    /// Whether it was created (`201`) rather than updated (`200`). `None` when Dataverse did not
    /// return the row (`204`, the preference ignored), which leaves no way to tell.
    pub created: Option<bool>,
}

impl<'a> Upsert<'a> {
    /// Makes it a guarded update: only if the row exists at this version (`@odata.etag`).
    pub fn etag(mut self, etag: Option<&'a str>) -> Self {
        self.etag = etag;
        self
    }

    /// What to return of the row: `query`'s `$select`.
    pub fn query(mut self, query: &'a Query) -> Self {
        self.query = Cow::Borrowed(query);
        self
    }

    /// Sends the upsert: a `PATCH` without `If-Match`, which Dataverse applies as an update when the
    /// row exists and a create when it does not.
    pub async fn send(self, deadline: Deadline) -> Result<Upserted, Error> {
        let Upsert {
            client,
            table,
            row,
            item,
            etag,
            query,
        } = self;
        let Some(row) = client.locate(table, row.clone(), deadline).await? else {
            // A key Dataverse cannot take in a URL, and no row has it: a create with the key's
            // values stands in for the upsert's create. It is not atomic as a PATCH is: a row made
            // with the same key meanwhile makes it fail on the key's uniqueness, never duplicate.
            if etag.is_some() {
                return Err(no_such_key(table));
            }
            let RowRef::Key(key) = &row else {
                return Err(no_such_key(table));
            };
            let mut values = item.clone();
            for (column, value) in key.settable() {
                values.entry(column.to_owned()).or_insert(value);
            }
            let created = client.create(table, &values, &query, deadline).await?;
            return Ok(Upserted {
                row: created,
                created: Some(true),
            });
        };
        // No `If-Match` unless an etag guards it: Dataverse then updates or creates.
        let (status, row) = client
            .patch(table, &row, item, etag, &query, deadline)
            .await?;
        Ok(Upserted {
            row,
            created: (status != 204).then_some(status == 201),
        })
    }
}

impl Client {
    /// `PATCH`es `row` with `item` and returns the status and the row as stored: the answer's, or read
    /// back when Dataverse ignored `return=representation` (status 204).
    ///
    /// Writing the same values twice is harmless, so an unguarded `PATCH` is repeated like a read;
    /// one guarded by an etag that landed and is sent again would answer 412, so that one is not
    /// repeated blindly. (An upsert sent again after a lost answer finds the row it made: no
    /// duplicate, though it then reports an update.)
    async fn patch(
        &self,
        table: &Table,
        row: &RowRef,
        item: &Map<String, Value>,
        if_match: Option<&str>,
        query: &Query,
        deadline: Deadline,
    ) -> Result<(u16, Map<String, Value>), Error> {
        let url = self.row_url(table, row, query)?;
        let mut headers = self.write_headers(vec![
            ("prefer", "return=representation".to_owned()),
            ("content-type", "application/json; charset=utf-8".to_owned()),
        ]);
        if let Some(tag) = if_match {
            headers.push(("if-match", tag.to_owned()));
        }
        let guarded = if_match.is_some_and(|tag| tag != "*");
        let answer = self
            .execute(
                Call {
                    method: Method::PATCH,
                    url: &url,
                    headers,
                    body: Some(json_body(item)?),
                    repeat: if guarded {
                        Repeat::OnlyIfUnsent
                    } else {
                        Repeat::Safe
                    },
                    done_if_retried: None,
                },
                deadline,
            )
            .await?;
        if answer.status == 204 {
            // The write is done: a failed read-back must not read as a write that changed nothing.
            let row = self
                .get(table, row.clone(), &reread(query), deadline)
                .await
                .map_err(Error::after_possible_write)?;
            return Ok((204, row));
        }
        Ok((answer.status, row_body(&url, &answer.body)?))
    }
}

/// What Dataverse answers for a key that matches no row, for the same condition found by `$filter`.
fn no_such_key(table: &Table) -> Error {
    Error::Api {
        status: 404,
        code: Some("0x80060891".into()),
        message: format!(
            "A record with the specified key values does not exist in {} entity",
            table.logical_name
        ),
        retry_after: None,
    }
}

fn json_body(item: &Map<String, Value>) -> Result<Bytes, Error> {
    serde_json::to_vec(item)
        .map(Bytes::from)
        .map_err(Error::Encode)
}

/// A single-row body, without its `@odata.context`.
fn row_body(url: &Url, body: &[u8]) -> Result<Map<String, Value>, Error> {
    let mut row: Map<String, Value> = transport::decode(url.path(), body)?;
    row.remove("@odata.context");
    Ok(row)
}

/// Refuses a URL of `length` characters when Dataverse would, naming the query's longest option.
fn check_length(length: usize, query: Option<&Query>) -> Result<(), Error> {
    if length <= MAX_URL_LENGTH {
        return Ok(());
    }
    Err(Error::UrlTooLong {
        length,
        limit: MAX_URL_LENGTH,
        option: query.and_then(Query::largest_option),
    })
}

/// What to read a written row back with, when Dataverse did not return it: the same columns.
/// `$expand` is not honoured on a write, so it is not asked for on the read either.
fn reread(query: &Query) -> Query {
    Query {
        select: query.select.clone(),
        ..Query::default()
    }
}

/// The id in `OData-EntityId: https://org/api/data/v9.2/accounts(<id>)`.
fn entity_id(headers: &HeaderMap) -> Option<Uuid> {
    entity_id_of(headers.get("odata-entityid")?.to_str().ok()?)
}

/// The id in an `OData-EntityId` value, `.../accounts(<id>)`; `None` for a key form.
fn entity_id_of(value: &str) -> Option<Uuid> {
    let start = value.rfind('(')? + 1;
    Uuid::parse_str(value.get(start..value.len().checked_sub(1)?)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_id_from_odata_entity_id() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "odata-entityid",
            "https://org.crm.dynamics.com/api/data/v9.2/accounts(7eb682f1-ca75-e511-80d4-00155d2a68d1)"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            entity_id(&headers).map(|u| u.to_string()).as_deref(),
            Some("7eb682f1-ca75-e511-80d4-00155d2a68d1")
        );
    }

    #[test]
    fn joins_preferences_into_one_header_and_caps_the_page_size() {
        let prefer = Prefer {
            max_page_size: Some(9000),
            track_changes: true,
            formatted_values: false,
        };
        assert_eq!(
            prefer.header().as_deref(),
            Some("odata.track-changes,odata.maxpagesize=5000")
        );
        assert_eq!(Prefer::default().header(), None);
    }

    #[test]
    fn asks_for_formatted_values_by_name_in_the_same_header() {
        let prefer = Prefer {
            max_page_size: Some(10),
            formatted_values: true,
            ..Prefer::default()
        };
        assert_eq!(
            prefer.header().as_deref(),
            Some(
                "odata.maxpagesize=10,odata.include-annotations=\"OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname,Microsoft.Dynamics.CRM.associatednavigationproperty\""
            )
        );
    }
}
