//! What the Plugin Registration Tool would otherwise be used for: a webhook service endpoint pointing at
//! `dataverse-webhook`, and the steps (with images) that send it a table's creations, updates and
//! deletions. Everything goes through the ordinary Web API, on the registration tables Dataverse keeps
//! (`serviceendpoints`, `sdkmessages`, `sdkmessagefilters`, `sdkmessageprocessingsteps`,
//! `sdkmessageprocessingstepimages`).
//!
//! Rows made here are found again by name, so registering twice changes nothing, and removing deletes
//! the images, then the steps, then the endpoint once no step uses it: nothing is left orphaned.
//!
//! The receiver's options (`ignore_own_changes`, `formatted_values`) travel as settings of the
//! `HttpQueryString` auth type, beside the key, which Dataverse adds to each delivery's query.
//! Dataverse never returns an auth value, so the endpoint's description records them too, and that
//! is what a later run compares.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use connector::webhook::{FORMATTED_VALUES, IGNORE_OWN_CHANGES, KEY_HEADER, KEY_PARAMETER};
use dataverse::{Client, Deadline, Query, Table, TableName};
use futures_util::TryStreamExt as _;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;
use uuid::Uuid;

/// What every name this tool gives a row starts with, so its rows are told apart from others'.
pub const NAME_PREFIX: &str = "aws-crm";

/// `serviceendpoint.contract`: Webhook.
const CONTRACT_WEBHOOK: i64 = 8;
/// `serviceendpoint.messageformat`: JSON.
const FORMAT_JSON: i64 = 2;
/// `sdkmessageprocessingstep.stage`: after the main operation, outside its transaction.
const STAGE_POST_OPERATION: i64 = 40;
/// `sdkmessageprocessingstep.mode`: asynchronous, so a slow or failing receiver never slows or fails
/// the user's write.
const MODE_ASYNCHRONOUS: i64 = 1;
/// `sdkmessageprocessingstepimage.imagetype`.
const IMAGE_PRE: i64 = 0;
const IMAGE_POST: i64 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    #[error(transparent)]
    Dataverse(#[from] dataverse::Error),

    /// Dataverse has no message or filter this registration needs.
    #[error("Dataverse has no {0}")]
    Missing(String),

    /// An answer lacked a column this tool reads.
    #[error("a {table} row has no usable '{column}'")]
    Unreadable {
        table: &'static str,
        column: &'static str,
    },
}

/// A message a step can be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Message {
    Create,
    Update,
    Delete,
}

impl Message {
    pub const ALL: [Message; 3] = [Message::Create, Message::Update, Message::Delete];

    /// The `sdkmessage` name.
    pub fn name(self) -> &'static str {
        match self {
            Message::Create => "Create",
            Message::Update => "Update",
            Message::Delete => "Delete",
        }
    }

    /// The images the receiver needs from this message's step: the row after a creation or update,
    /// the row before a deletion (which has no after, and whose `$filter` needs the row as it was),
    /// and with `plan.previous` the row before an update too, to say which columns it changed.
    fn images(self, plan: &Plan) -> Vec<Image> {
        // The message property an image is taken from: `Id` (the created row's id) for Create and
        // `Target` otherwise, as Microsoft's table of entity-image message properties lists them.
        match self {
            Message::Create => vec![Image::post("Id", String::new())],
            Message::Update => {
                let mut images = vec![Image::post("Target", String::new())];
                if plan.previous {
                    // The watched columns are the ones whose earlier values the receiver reports;
                    // without any, every column.
                    images.push(Image::pre(plan.columns.join(",")));
                }
                images
            }
            Message::Delete => vec![Image::pre(plan.delete_image_columns.join(","))],
        }
    }
}

/// An image a step should have: its type, its name and alias, the message property it is taken
/// from, and its attributes (empty for every column).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Image {
    kind: i64,
    alias: &'static str,
    property: &'static str,
    attributes: String,
}

impl Image {
    fn pre(attributes: String) -> Self {
        Self {
            kind: IMAGE_PRE,
            alias: "PreImage",
            property: "Target",
            attributes,
        }
    }

    fn post(property: &'static str, attributes: String) -> Self {
        Self {
            kind: IMAGE_POST,
            alias: "PostImage",
            property,
            attributes,
        }
    }
}

/// A name on the command line that is none of the ones a choice takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not {what}: use {choices}")]
pub struct UnknownName {
    pub given: String,
    what: &'static str,
    choices: &'static str,
}

impl TryFrom<&str> for Message {
    type Error = UnknownName;

    fn try_from(text: &str) -> Result<Self, UnknownName> {
        match text.to_ascii_lowercase().as_str() {
            "create" => Ok(Message::Create),
            "update" => Ok(Message::Update),
            "delete" => Ok(Message::Delete),
            _ => Err(UnknownName {
                given: text.to_owned(),
                what: "a message",
                choices: "create, update or delete",
            }),
        }
    }
}

/// How the endpoint presents the key (`serviceendpoint.authtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// 4: `?code=<key>`.
    WebhookKey,
    /// 5: the `x-crm-webhook-key` header.
    HttpHeader,
    /// 6: `?code=<key>`, as a query-string setting.
    HttpQueryString,
}

impl Auth {
    fn code(self) -> i64 {
        match self {
            Auth::WebhookKey => 4,
            Auth::HttpHeader => 5,
            Auth::HttpQueryString => 6,
        }
    }

    /// `authvalue`: the key itself, or a list of settings naming where it goes. The query string's
    /// list also carries the receiver's options that are on; the other types cannot carry them
    /// (the command line refuses options with those).
    fn value(self, key: &SecretString, options: ReceiverOptions) -> SecretString {
        let setting = |name: &str, value: &str| {
            format!(
                "<setting name=\"{name}\" value=\"{}\" />",
                xml_escape(value)
            )
        };
        SecretString::from(match self {
            Auth::WebhookKey => key.expose_secret().to_owned(),
            Auth::HttpHeader => format!(
                "<settings>{}</settings>",
                setting(KEY_HEADER, key.expose_secret())
            ),
            Auth::HttpQueryString => {
                let mut settings = setting(KEY_PARAMETER, key.expose_secret());
                for name in options.names() {
                    settings.push_str(&setting(name, "true"));
                }
                format!("<settings>{settings}</settings>")
            }
        })
    }
}

/// The options `dataverse-webhook` reads from a delivery's query; each is off unless registered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverOptions {
    pub ignore_own_changes: bool,
    pub formatted_values: bool,
}

impl ReceiverOptions {
    /// The query parameters of the options that are on.
    fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (IGNORE_OWN_CHANGES, self.ignore_own_changes),
            (FORMATTED_VALUES, self.formatted_values),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
    }

    pub fn any(self) -> bool {
        self.names().next().is_some()
    }
}

/// What an endpoint made here says it is for.
const DESCRIPTION: &str = "Sends this org's changes to dataverse-webhook on AWS Lambda.";

/// The endpoint's description: what it is for, and the options its auth value carries, which
/// Dataverse does not return. Without options it is the description earlier runs wrote, so their
/// endpoints are not rewritten.
fn description(options: ReceiverOptions) -> String {
    let on: Vec<String> = options.names().map(|n| format!("{n}=true")).collect();
    if on.is_empty() {
        DESCRIPTION.to_owned()
    } else {
        format!("{DESCRIPTION} Options: {}.", on.join(", "))
    }
}

impl TryFrom<&str> for Auth {
    type Error = UnknownName;

    fn try_from(text: &str) -> Result<Self, UnknownName> {
        match text {
            "webhook-key" => Ok(Auth::WebhookKey),
            "http-header" => Ok(Auth::HttpHeader),
            "http-query-string" => Ok(Auth::HttpQueryString),
            _ => Err(UnknownName {
                given: text.to_owned(),
                what: "an auth type",
                choices: "webhook-key, http-header or http-query-string",
            }),
        }
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An OData string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What to register: a table's messages, sent to `dataverse-webhook`'s address for one dataset.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The dataset's own address at the receiver: `<Function URL>/<dataset>`.
    pub endpoint_url: Url,
    pub table: TableName,
    pub messages: BTreeSet<Message>,
    /// Update only: the columns whose presence in a request sends the update (`filteringattributes`).
    pub columns: Vec<String>,
    pub auth: Auth,
    /// Write the key to an endpoint that already exists (after a rotation); otherwise an existing
    /// endpoint is left as it is.
    pub update_key: bool,
    /// With a `$filter`: the columns the Delete step's pre-image must hold for the receiver to judge
    /// a deletion by it (their attribute names). Empty for an image of every column.
    pub delete_image_columns: Vec<String>,
    /// Give the Update step a pre-image (of `columns`, else every column), so that its events say
    /// which columns changed and what they held.
    pub previous: bool,
    /// The receiver's options, which need the `HttpQueryString` auth type.
    pub options: ReceiverOptions,
}

impl Plan {
    fn endpoint_name(&self) -> String {
        endpoint_name(&self.endpoint_url)
    }
}

fn endpoint_name(url: &Url) -> String {
    fit_name(format!("{NAME_PREFIX}: {url}"))
}

/// The longest address Dataverse keeps for an endpoint (`serviceendpoint.url`).
pub const MAX_URL_CHARS: usize = 2000;
/// The longest name Dataverse keeps for an endpoint, a step or an image.
const MAX_NAME_CHARS: usize = 256;

/// `name`, or when it is too long for Dataverse (a long filter in the URL), its start and a digest of
/// the whole: still one name per endpoint and step, found again on the next run.
fn fit_name(name: String) -> String {
    if name.chars().count() <= MAX_NAME_CHARS {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    let tag = format!("{:016x}", u64::from_be_bytes(first));
    let kept: String = name.chars().take(MAX_NAME_CHARS - tag.len() - 3).collect();
    format!("{kept}… #{tag}")
}

/// The receiver's address for `dataset`: the Function URL with the dataset, and the filter when
/// there is one, as its path. Each distinct filter is an endpoint of its own.
pub fn endpoint_url(receiver: &Url, dataset: &str, filter: Option<&str>) -> Url {
    let mut url = receiver.clone();
    url.set_query(None);
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!(
        "{base}/{}",
        connector::webhook::endpoint_path(dataset, filter)
    ));
    url
}

/// The image attributes a filter reads: a lookup filtered as `_x_value` is the attribute `x`.
pub fn image_columns(filter: &dataverse::filter::Filter) -> Vec<String> {
    let mut columns: Vec<String> = filter
        .columns()
        .into_iter()
        .map(|c| {
            c.strip_prefix('_')
                .and_then(|c| c.strip_suffix("_value"))
                .unwrap_or(c)
                .to_owned()
        })
        .collect();
    columns.dedup();
    columns
}

/// What a call did: the rows it made, changed and removed, by table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub created: Vec<(&'static str, Uuid)>,
    pub updated: Vec<(&'static str, Uuid)>,
    pub deleted: Vec<(&'static str, Uuid)>,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        let list = |rows: &[(&'static str, Uuid)]| {
            rows.iter()
                .map(|(table, id)| json!({"table": table, "id": id}))
                .collect::<Vec<_>>()
        };
        json!({
            "created": list(&self.created),
            "updated": list(&self.updated),
            "deleted": list(&self.deleted),
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} deleted",
            self.created.len(),
            self.updated.len(),
            self.deleted.len()
        )
    }
}

/// The registration tables, resolved once.
struct Tables {
    endpoints: Arc<Table>,
    messages: Arc<Table>,
    filters: Arc<Table>,
    steps: Arc<Table>,
    images: Arc<Table>,
}

impl Tables {
    async fn resolve(client: &Client, deadline: Deadline) -> Result<Self, RegistrationError> {
        let table =
            async |name: &'static str| client.table(&TableName::try_from(name)?, deadline).await;
        Ok(Self {
            endpoints: table("serviceendpoints").await?,
            messages: table("sdkmessages").await?,
            filters: table("sdkmessagefilters").await?,
            steps: table("sdkmessageprocessingsteps").await?,
            images: table("sdkmessageprocessingstepimages").await?,
        })
    }
}

/// The rows of `table` matching `query`, all of them.
async fn rows(
    client: &Client,
    table: &Table,
    query: &Query,
    deadline: Deadline,
) -> Result<Vec<Map<String, Value>>, RegistrationError> {
    let mut found = Vec::new();
    let mut pages = std::pin::pin!(client.rows(table, query, 0, None, deadline));
    while let Some(raw) = pages.try_next().await? {
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Object(row)) => found.push(row),
            _ => {
                return Err(RegistrationError::Unreadable {
                    table: "registration",
                    column: "row",
                });
            }
        }
    }
    Ok(found)
}

fn id_of(
    row: &Map<String, Value>,
    table: &'static str,
    column: &'static str,
) -> Result<Uuid, RegistrationError> {
    row.get(column)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(RegistrationError::Unreadable { table, column })
}

fn text<'a>(row: &'a Map<String, Value>, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or("")
}

/// Registers `plan` for `key`. Idempotent: what already exists as planned is left alone.
pub async fn register(
    client: &Client,
    key: &SecretString,
    plan: &Plan,
    deadline: Deadline,
) -> Result<Outcome, RegistrationError> {
    let tables = Tables::resolve(client, deadline).await?;
    let table = client.table(&plan.table, deadline).await?;
    let mut outcome = Outcome::default();
    let endpoint = ensure_endpoint(client, &tables, key, plan, &mut outcome, deadline).await?;
    for &message in &plan.messages {
        let message_id = message_id(client, &tables, message, deadline).await?;
        let filter = filter_id(
            client,
            &tables,
            message_id,
            message,
            &table.logical_name,
            deadline,
        )
        .await?;
        let step_name = step_name(message, &table.logical_name, &plan.endpoint_url);
        let columns = if message == Message::Update {
            plan.columns.join(",")
        } else {
            String::new()
        };
        let step = ensure_step(
            client,
            &tables,
            &step_name,
            [message_id, filter, endpoint],
            &columns,
            &mut outcome,
            deadline,
        )
        .await?;
        ensure_images(
            client,
            &tables,
            step,
            &message.images(plan),
            &mut outcome,
            deadline,
        )
        .await?;
    }
    Ok(outcome)
}

fn step_name(message: Message, logical_name: &str, endpoint_url: &Url) -> String {
    fit_name(format!(
        "{NAME_PREFIX}: {} of {logical_name} to {endpoint_url}",
        message.name()
    ))
}

async fn ensure_endpoint(
    client: &Client,
    tables: &Tables,
    key: &SecretString,
    plan: &Plan,
    outcome: &mut Outcome,
    deadline: Deadline,
) -> Result<Uuid, RegistrationError> {
    let name = plan.endpoint_name();
    let query = Query::new()
        .select("serviceendpointid,url,authtype,description")
        .filter(format!("name eq {}", literal(&name)));
    let existing = rows(client, &tables.endpoints, &query, deadline).await?;
    let description = description(plan.options);
    let mut fields = Map::new();
    fields.insert("url".into(), json!(plan.endpoint_url.as_str()));
    fields.insert("authtype".into(), json!(plan.auth.code()));
    fields.insert("description".into(), json!(description));
    if let Some(row) = existing.first() {
        let id = id_of(row, "serviceendpoint", "serviceendpointid")?;
        // The endpoint is found by its address; its options and key are in the auth value, which
        // Dataverse never returns, so the description stands for the options. A difference in any
        // of them rewrites the whole auth value, key included, which this run has.
        let same = text(row, "url") == plan.endpoint_url.as_str()
            && row.get("authtype").and_then(Value::as_i64) == Some(plan.auth.code())
            && text(row, "description") == description;
        if !same || plan.update_key {
            fields.insert(
                "authvalue".into(),
                json!(plan.auth.value(key, plan.options).expose_secret()),
            );
            client
                .update(&tables.endpoints, id, &fields)
                .send(deadline)
                .await?;
            outcome.updated.push(("serviceendpoint", id));
        }
        return Ok(id);
    }
    fields.insert("name".into(), json!(name));
    fields.insert("contract".into(), json!(CONTRACT_WEBHOOK));
    fields.insert("messageformat".into(), json!(FORMAT_JSON));
    fields.insert(
        "authvalue".into(),
        json!(plan.auth.value(key, plan.options).expose_secret()),
    );
    let created = client
        .create(
            &tables.endpoints,
            &fields,
            &Query::new().select("serviceendpointid"),
            deadline,
        )
        .await?;
    let id = id_of(&created, "serviceendpoint", "serviceendpointid")?;
    outcome.created.push(("serviceendpoint", id));
    Ok(id)
}

async fn message_id(
    client: &Client,
    tables: &Tables,
    message: Message,
    deadline: Deadline,
) -> Result<Uuid, RegistrationError> {
    let query = Query::new()
        .select("sdkmessageid")
        .filter(format!("name eq {}", literal(message.name())));
    let found = rows(client, &tables.messages, &query, deadline).await?;
    let row = found
        .first()
        .ok_or_else(|| RegistrationError::Missing(format!("'{}' message", message.name())))?;
    id_of(row, "sdkmessage", "sdkmessageid")
}

async fn filter_id(
    client: &Client,
    tables: &Tables,
    message_id: Uuid,
    message: Message,
    logical_name: &str,
    deadline: Deadline,
) -> Result<Uuid, RegistrationError> {
    let query = Query::new().select("sdkmessagefilterid").filter(format!(
        "_sdkmessageid_value eq {message_id} and primaryobjecttypecode eq {}",
        literal(logical_name)
    ));
    let found = rows(client, &tables.filters, &query, deadline).await?;
    let row = found.first().ok_or_else(|| {
        RegistrationError::Missing(format!(
            "'{}' message filter for the table '{logical_name}' (it cannot have this step)",
            message.name()
        ))
    })?;
    id_of(row, "sdkmessagefilter", "sdkmessagefilterid")
}

async fn ensure_step(
    client: &Client,
    tables: &Tables,
    name: &str,
    [message, filter, endpoint]: [Uuid; 3],
    columns: &str,
    outcome: &mut Outcome,
    deadline: Deadline,
) -> Result<Uuid, RegistrationError> {
    let query = Query::new()
        .select("sdkmessageprocessingstepid,filteringattributes")
        .filter(format!(
            "name eq {} and _eventhandler_value eq {endpoint}",
            literal(name)
        ));
    let existing = rows(client, &tables.steps, &query, deadline).await?;
    if let Some(row) = existing.first() {
        let id = id_of(
            row,
            "sdkmessageprocessingstep",
            "sdkmessageprocessingstepid",
        )?;
        if text(row, "filteringattributes") != columns {
            let mut fields = Map::new();
            fields.insert(
                "filteringattributes".into(),
                if columns.is_empty() {
                    Value::Null
                } else {
                    json!(columns)
                },
            );
            client
                .update(&tables.steps, id, &fields)
                .send(deadline)
                .await?;
            outcome.updated.push(("sdkmessageprocessingstep", id));
        }
        return Ok(id);
    }
    let mut fields = Map::new();
    fields.insert("name".into(), json!(name));
    fields.insert("stage".into(), json!(STAGE_POST_OPERATION));
    fields.insert("mode".into(), json!(MODE_ASYNCHRONOUS));
    fields.insert("rank".into(), json!(1));
    fields.insert("supporteddeployment".into(), json!(0));
    // Finished deliveries' system jobs are deleted rather than kept, as Microsoft recommends for
    // asynchronous steps; failed ones are kept for the operator.
    fields.insert("asyncautodelete".into(), json!(true));
    if !columns.is_empty() {
        fields.insert("filteringattributes".into(), json!(columns));
    }
    fields.insert(
        "sdkmessageid@odata.bind".into(),
        json!(format!("/sdkmessages({message})")),
    );
    fields.insert(
        "sdkmessagefilterid@odata.bind".into(),
        json!(format!("/sdkmessagefilters({filter})")),
    );
    fields.insert(
        "eventhandler_serviceendpoint@odata.bind".into(),
        json!(format!("/serviceendpoints({endpoint})")),
    );
    let created = client
        .create(
            &tables.steps,
            &fields,
            &Query::new().select("sdkmessageprocessingstepid"),
            deadline,
        )
        .await?;
    let id = id_of(
        &created,
        "sdkmessageprocessingstep",
        "sdkmessageprocessingstepid",
    )?;
    outcome.created.push(("sdkmessageprocessingstep", id));
    Ok(id)
}

/// Gives the step exactly the images `wanted`: one of each type, made when missing, its attributes
/// updated when they differ (the Update step's pre-image follows `--columns`), and an image of a
/// type not wanted deleted (the Update step's pre-image once `--previous` is dropped).
async fn ensure_images(
    client: &Client,
    tables: &Tables,
    step: Uuid,
    wanted: &[Image],
    outcome: &mut Outcome,
    deadline: Deadline,
) -> Result<(), RegistrationError> {
    const TABLE: &str = "sdkmessageprocessingstepimage";
    let query = Query::new()
        .select("sdkmessageprocessingstepimageid,imagetype,attributes")
        .filter(format!("_sdkmessageprocessingstepid_value eq {step}"));
    let existing = rows(client, &tables.images, &query, deadline).await?;
    for row in &existing {
        let kind = row.get("imagetype").and_then(Value::as_i64);
        if !wanted.iter().any(|image| Some(image.kind) == kind) {
            let id = id_of(row, TABLE, "sdkmessageprocessingstepimageid")?;
            client.delete(&tables.images, id, None, deadline).await?;
            outcome.deleted.push((TABLE, id));
        }
    }
    for image in wanted {
        let found = existing
            .iter()
            .find(|row| row.get("imagetype").and_then(Value::as_i64) == Some(image.kind));
        if let Some(row) = found {
            if text(row, "attributes") != image.attributes {
                let id = id_of(row, TABLE, "sdkmessageprocessingstepimageid")?;
                let mut fields = Map::new();
                fields.insert(
                    "attributes".into(),
                    if image.attributes.is_empty() {
                        Value::Null
                    } else {
                        json!(image.attributes)
                    },
                );
                client
                    .update(&tables.images, id, &fields)
                    .send(deadline)
                    .await?;
                outcome.updated.push((TABLE, id));
            }
            continue;
        }
        let mut fields = Map::new();
        fields.insert("name".into(), json!(image.alias));
        fields.insert("entityalias".into(), json!(image.alias));
        fields.insert("imagetype".into(), json!(image.kind));
        fields.insert("messagepropertyname".into(), json!(image.property));
        if !image.attributes.is_empty() {
            fields.insert("attributes".into(), json!(image.attributes));
        }
        fields.insert(
            "sdkmessageprocessingstepid@odata.bind".into(),
            json!(format!("/sdkmessageprocessingsteps({step})")),
        );
        let created = client
            .create(
                &tables.images,
                &fields,
                &Query::new().select("sdkmessageprocessingstepimageid"),
                deadline,
            )
            .await?;
        let id = id_of(&created, TABLE, "sdkmessageprocessingstepimageid")?;
        outcome.created.push((TABLE, id));
    }
    Ok(())
}

/// One registered step, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: Uuid,
    pub name: String,
    pub filtering_attributes: Option<String>,
    pub enabled: bool,
}

/// Every endpoint this tool registered, with its steps.
pub async fn list(client: &Client, deadline: Deadline) -> Result<Value, RegistrationError> {
    let tables = Tables::resolve(client, deadline).await?;
    let query = Query::new()
        .select("serviceendpointid,name,url,authtype,description")
        .filter(format!("startswith(name,{})", literal(NAME_PREFIX)));
    let mut endpoints = Vec::new();
    for endpoint in rows(client, &tables.endpoints, &query, deadline).await? {
        let id = id_of(&endpoint, "serviceendpoint", "serviceendpointid")?;
        let steps = steps_of(client, &tables, id, deadline).await?;
        endpoints.push(json!({
            "id": id,
            "name": text(&endpoint, "name"),
            "url": text(&endpoint, "url"),
            "authtype": endpoint.get("authtype"),
            // The options registered with it: the auth value that carries them is never returned.
            "description": text(&endpoint, "description"),
            "steps": steps.iter().map(|s| json!({
                "id": s.id,
                "name": s.name,
                "filteringattributes": s.filtering_attributes,
                "enabled": s.enabled,
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({"endpoints": endpoints}))
}

async fn steps_of(
    client: &Client,
    tables: &Tables,
    endpoint: Uuid,
    deadline: Deadline,
) -> Result<Vec<Step>, RegistrationError> {
    let query = Query::new()
        .select("sdkmessageprocessingstepid,name,filteringattributes,statecode")
        .filter(format!("_eventhandler_value eq {endpoint}"));
    rows(client, &tables.steps, &query, deadline)
        .await?
        .iter()
        .map(|row| {
            Ok(Step {
                id: id_of(
                    row,
                    "sdkmessageprocessingstep",
                    "sdkmessageprocessingstepid",
                )?,
                name: text(row, "name").to_owned(),
                filtering_attributes: row
                    .get("filteringattributes")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                enabled: row.get("statecode").and_then(Value::as_i64).unwrap_or(0) == 0,
            })
        })
        .collect()
}

/// Removes the steps sending to `endpoint_url` (only `table`'s, when given) with their images, and
/// then the endpoint itself once no step of any table uses it.
pub async fn remove(
    client: &Client,
    endpoint_url: &Url,
    table: Option<&TableName>,
    deadline: Deadline,
) -> Result<Outcome, RegistrationError> {
    let tables = Tables::resolve(client, deadline).await?;
    let mut outcome = Outcome::default();
    let query = Query::new()
        .select("serviceendpointid")
        .filter(format!("name eq {}", literal(&endpoint_name(endpoint_url))));
    let Some(endpoint) = rows(client, &tables.endpoints, &query, deadline)
        .await?
        .first()
        .map(|row| id_of(row, "serviceendpoint", "serviceendpointid"))
        .transpose()?
    else {
        return Ok(outcome);
    };
    let only = match table {
        Some(name) => Some(client.table(name, deadline).await?.logical_name.clone()),
        None => None,
    };
    let mut remaining = 0;
    for step in steps_of(client, &tables, endpoint, deadline).await? {
        let of_table = only.as_ref().is_none_or(|logical| {
            Message::ALL
                .iter()
                .any(|m| step.name == step_name(*m, logical, endpoint_url))
        });
        if !of_table {
            remaining += 1;
            continue;
        }
        let images = Query::new()
            .select("sdkmessageprocessingstepimageid")
            .filter(format!("_sdkmessageprocessingstepid_value eq {}", step.id));
        for image in rows(client, &tables.images, &images, deadline).await? {
            let id = id_of(
                &image,
                "sdkmessageprocessingstepimage",
                "sdkmessageprocessingstepimageid",
            )?;
            client.delete(&tables.images, id, None, deadline).await?;
            outcome.deleted.push(("sdkmessageprocessingstepimage", id));
        }
        client
            .delete(&tables.steps, step.id, None, deadline)
            .await?;
        outcome.deleted.push(("sdkmessageprocessingstep", step.id));
    }
    if remaining == 0 {
        client
            .delete(&tables.endpoints, endpoint, None, deadline)
            .await?;
        outcome.deleted.push(("serviceendpoint", endpoint));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_receiver_with_the_dataset_as_path() {
        let receiver = Url::parse("https://abc.lambda-url.eu-west-1.on.aws/").unwrap();
        assert_eq!(
            endpoint_url(&receiver, "contoso", None).as_str(),
            "https://abc.lambda-url.eu-west-1.on.aws/contoso"
        );
        let with_path =
            Url::parse("http://127.0.0.1:9000/lambda-url/dataverse-webhook?x=1").unwrap();
        assert_eq!(
            endpoint_url(&with_path, "contoso", None).as_str(),
            "http://127.0.0.1:9000/lambda-url/dataverse-webhook/contoso"
        );
    }

    #[test]
    fn a_filter_travels_in_the_path_and_long_names_stay_within_dataverse_limits() {
        let receiver = Url::parse("https://abc.lambda-url.eu-west-1.on.aws/").unwrap();
        let url = endpoint_url(&receiver, "contoso", Some("statecode eq 0"));
        assert_eq!(
            url.as_str(),
            "https://abc.lambda-url.eu-west-1.on.aws/contoso/where/c3RhdGVjb2RlIGVxIDA"
        );
        let long = format!("name eq '{}'", "x".repeat(400));
        let long_url = endpoint_url(&receiver, "contoso", Some(&long));
        let name = endpoint_name(&long_url);
        assert_eq!(name.chars().count(), MAX_NAME_CHARS);
        assert_eq!(name, endpoint_name(&long_url), "found again by name");
        let other = endpoint_url(&receiver, "contoso", Some(&format!("{long} ")));
        assert_ne!(
            name,
            endpoint_name(&other),
            "a different filter, a different name"
        );
        assert_eq!(endpoint_name(&url), format!("aws-crm: {url}"));
    }

    fn plan(previous: bool, columns: &[&str]) -> Plan {
        Plan {
            endpoint_url: Url::parse("https://x/contoso").unwrap(),
            table: TableName::try_from("account").unwrap(),
            messages: Message::ALL.into_iter().collect(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            auth: Auth::WebhookKey,
            update_key: false,
            delete_image_columns: vec!["statecode".into()],
            previous,
            options: ReceiverOptions::default(),
        }
    }

    #[test]
    fn an_update_step_gets_a_pre_image_of_its_watched_columns_only_when_asked() {
        let kinds = |images: Vec<Image>| {
            images
                .into_iter()
                .map(|i| (i.kind, i.property, i.attributes))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(Message::Update.images(&plan(false, &["name"]))),
            [(IMAGE_POST, "Target", String::new())]
        );
        assert_eq!(
            kinds(Message::Update.images(&plan(true, &["name", "telephone1"]))),
            [
                (IMAGE_POST, "Target", String::new()),
                (IMAGE_PRE, "Target", "name,telephone1".to_owned())
            ]
        );
        assert_eq!(
            kinds(Message::Update.images(&plan(true, &[])))[1],
            (IMAGE_PRE, "Target", String::new()),
            "every column without --columns"
        );
        assert_eq!(
            kinds(Message::Delete.images(&plan(true, &["name"]))),
            [(IMAGE_PRE, "Target", "statecode".to_owned())]
        );
        assert_eq!(
            kinds(Message::Create.images(&plan(true, &[]))),
            [(IMAGE_POST, "Id", String::new())]
        );
    }

    #[test]
    fn the_description_records_the_options_and_is_unchanged_without_them() {
        assert_eq!(
            description(ReceiverOptions::default()),
            "Sends this org's changes to dataverse-webhook on AWS Lambda."
        );
        assert_eq!(
            description(ReceiverOptions {
                ignore_own_changes: false,
                formatted_values: true
            }),
            "Sends this org's changes to dataverse-webhook on AWS Lambda. Options: formatted_values=true."
        );
    }

    #[test]
    fn auth_values_carry_the_key_where_the_receiver_reads_it() {
        let key = SecretString::from("a\"b<c>&d".to_owned());
        let none = ReceiverOptions::default();
        assert_eq!(
            Auth::WebhookKey.value(&key, none).expose_secret(),
            "a\"b<c>&d"
        );
        assert_eq!(
            Auth::HttpHeader.value(&key, none).expose_secret(),
            "<settings><setting name=\"x-crm-webhook-key\" value=\"a&quot;b&lt;c&gt;&amp;d\" /></settings>"
        );
        assert_eq!(
            Auth::HttpQueryString.value(&key, none).expose_secret(),
            "<settings><setting name=\"code\" value=\"a&quot;b&lt;c&gt;&amp;d\" /></settings>"
        );
        // The options beside the key, named as the receiver reads them.
        let both = ReceiverOptions {
            ignore_own_changes: true,
            formatted_values: true,
        };
        assert_eq!(
            Auth::HttpQueryString.value(&key, both).expose_secret(),
            "<settings><setting name=\"code\" value=\"a&quot;b&lt;c&gt;&amp;d\" /><setting name=\"ignore_own_changes\" value=\"true\" /><setting name=\"formatted_values\" value=\"true\" /></settings>"
        );
        assert_eq!(literal("O'Brien"), "'O''Brien'");
    }
}
