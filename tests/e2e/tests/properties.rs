//! Properties of the actions and triggers under generated payloads, run as the binaries they ship as,
//! through the Runtime API, against one emulator:
//!
//! - no payload crashes or hangs a function: each invocation answers, and the process lives on;
//! - a failure is always a `Crm.*` error type with a message under 1 KB;
//! - every request that reaches the emulator is a token request, a table lookup, or a request for
//!   `/api/data/v9.2/<entity set>[(<guid> or <key>)]` whose key values and query options are encoded,
//!   whatever the payload held.
//!
//! The number of cases is `PROPTEST_CASES` (`make test` runs a few hundred; `make fuzz` runs many
//! more and prints the count). `hostile_payloads_that_once_broke_something_stay_fixed` replays the
//! checked-in corpus in `tests/e2e/corpus/`, which holds raw bytes, JSON or not.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use e2e_tests::{Emulator, Failure, Function, LocalFiles};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

const FUNCTIONS: [&str; 15] = [
    "list-records",
    "get-record",
    "create-record",
    "update-record",
    "upsert-record",
    "delete-record",
    "relate-records",
    "unrelate-records",
    "describe-table",
    "perform-action",
    "execute-changeset",
    "write-records",
    "when-record-created",
    "when-record-updated",
    "when-record-deleted",
];

const ENTITY_SETS: [&str; 4] = ["accounts", "contacts", "leads", "opportunities"];

/// Strings chosen to break out of a URL segment, an OData literal, a header or a log line.
const NASTY: &[&str] = &[
    "accounts/x",
    "accounts?$top=1",
    "accounts(00000000-0000-0000-0000-000000000000)",
    "../../_emulator/reset",
    "%2F..%2F",
    "accounts#x",
    "name eq 'x') or (1 eq 1",
    "name eq 'x'&$top=1",
    "name eq 'a''b'",
    "'",
    "''",
    "(",
    ")",
    "\r\nX-Injected: 1",
    "\u{0}",
    "\u{202e}",
    "ｎａｍｅ",
    "名前 eq '値'",
    "$select=name",
    "name,revenue desc",
    "contains(name,'%')",
    "createdon gt 2020-01-01T00:00:00Z",
    "primarycontactid($select=fullname)",
    "W/\"1\"",
    "*",
    "+",
    " ",
    "",
];

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        3 => "[a-z_][a-z0-9_]{0,20}",
        3 => prop::sample::select(NASTY).prop_map(str::to_owned),
        2 => (prop::sample::select(NASTY), prop::sample::select(NASTY)).prop_map(|(a, b)| format!("{a}{b}")),
        1 => (1usize..2000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        1 => (30_000usize..40_000).prop_map(|n| "n".repeat(n)),
    ]
    .boxed()
}

fn guid() -> BoxedStrategy<String> {
    prop_oneof![
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        Just("dd80f824-ab1a-4647-a924-c7dc65094c4d".to_owned()),
        text(),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Column names the demo tables have, and some they do not.
const COLUMNS: &[&str] = &[
    "name",
    "revenue",
    "telephone1",
    "createdon",
    "modifiedon",
    "statecode",
    "accountnumber",
    "fullname",
    "firstname",
    "lastname",
    "emailaddress1",
    "_parentcustomerid_value",
    "nosuchcolumn",
];

/// Every input name any function takes: a stray one is often a typo of a real one.
const KEYS: [&str; 14] = [
    "dataset", "table", "id", "item", "$filter", "$select", "$orderby", "$expand", "$top", "$skip",
    "etag", "columns", "trigger", "since",
];

fn column() -> BoxedStrategy<String> {
    prop::sample::select(COLUMNS)
        .prop_map(str::to_owned)
        .boxed()
}

fn quoted(text: &str) -> String {
    text.replace('\'', "''")
}

fn filter() -> BoxedStrategy<String> {
    prop_oneof![
        (column(), text()).prop_map(|(c, t)| format!("{c} eq '{}'", quoted(&t))),
        (column(), text()).prop_map(|(c, t)| format!("contains({c},'{}')", quoted(&t))),
        (column(), any::<i64>()).prop_map(|(c, n)| format!("{c} gt {n}")),
        (column(), column())
            .prop_map(|(a, b)| format!("{a} ne null and ({b} eq null or {a} le {b})")),
        text(),
    ]
    .boxed()
}

/// A value for one input: usually of the right kind, often hostile, sometimes anything at all.
fn input_value(key: &'static str) -> BoxedStrategy<Value> {
    let plausible: BoxedStrategy<Value> = match key {
        "dataset" => {
            prop_oneof![6 => Just(json!("contoso")), 1 => text().prop_map(Value::from)].boxed()
        }
        "table" => prop_oneof![
            5 => prop::sample::select(
                &["account", "accounts", "contact", "contacts", "lead", "opportunities"][..]
            )
            .prop_map(Value::from),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "id" => guid().prop_map(Value::from).boxed(),
        // An alternate key: column names and values, hostile ones included.
        "key" => prop::collection::vec(
            (
                prop_oneof![4 => column(), 1 => text()],
                prop_oneof![3 => text().prop_map(Value::from), 1 => any_json()],
            ),
            0..3,
        )
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
        .boxed(),
        "item" => prop::collection::vec(
            (
                prop_oneof![4 => column(), 1 => text()],
                prop_oneof![3 => text().prop_map(Value::from), 1 => any_json()],
            ),
            0..4,
        )
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
        .boxed(),
        // Rows for `write-records`: objects of columns (an id among them now and then), or not.
        "rows" | "Items" => prop::collection::vec(
            prop_oneof![
                4 => (prop::option::of(guid()), prop::option::of(text())).prop_map(|(id, name)| {
                    let mut row = json!({});
                    if let Some(id) = id {
                        row["accountid"] = json!(id);
                    }
                    if let Some(name) = name {
                        row["name"] = json!(name);
                    }
                    row
                }),
                1 => any_json()
            ],
            0..4,
        )
        .prop_map(Value::from)
        .boxed(),
        "mode" => prop_oneof![
            4 => prop::sample::select(&["create", "update", "upsert"][..]).prop_map(Value::from),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "batch_size" => prop_oneof![
            4 => (0u64..1_100).prop_map(Value::from),
            1 => any_json()
        ]
        .boxed(),
        "bypass_plugins" | "suppress_flows" => {
            prop_oneof![4 => any::<bool>().prop_map(Value::from), 1 => any_json()].boxed()
        }
        "operations" => prop::collection::vec(
            (
                prop::sample::select(&["create", "update", "upsert", "delete", "merge"][..]),
                prop::sample::select(&["accounts", "contacts", "nosuch"][..]),
                prop::option::of(guid()),
                prop::option::of(text()),
            )
                .prop_map(|(op, table, id, name)| {
                    let mut operation = json!({"op": op, "table": table});
                    if let Some(id) = id {
                        operation["id"] = json!(id);
                    }
                    if let Some(name) = name {
                        operation["item"] = json!({"name": name});
                    }
                    operation
                }),
            0..4,
        )
        .prop_map(Value::from)
        .boxed(),
        "function" => prop_oneof![
            3 => prop::sample::select(&["WhoAmI", "RetrieveTotalRecordCount", "Microsoft.Dynamics.CRM.WhoAmI"][..])
                .prop_map(Value::from),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "parameters" => prop::collection::vec(
            (
                prop_oneof![3 => Just("EntityNames".to_owned()), 1 => text()],
                prop_oneof![
                    2 => prop::collection::vec(text().prop_map(Value::from), 0..3).prop_map(Value::from),
                    1 => any_json()
                ],
            ),
            0..3,
        )
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
        .boxed(),
        "relationship" => prop_oneof![
            3 => prop::sample::select(
                &["contact_customer_accounts", "parentcustomerid_account", "account_primary_contact"][..]
            )
            .prop_map(Value::from),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "related" => prop_oneof![
            guid().prop_map(|id| json!({"id": id})),
            prop::collection::vec(guid().prop_map(|id| json!({"id": id})), 0..3).prop_map(Value::from),
            text().prop_map(|t| json!({"key": {"accountnumber": t}})),
        ]
        .boxed(),
        "$filter" => filter().prop_map(Value::from).boxed(),
        "$select" | "columns" => {
            prop::collection::vec(prop_oneof![4 => column(), 1 => text()], 1..4)
                .prop_map(|c| Value::from(c.join(",")))
                .boxed()
        }
        "$orderby" => (
            column(),
            prop::sample::select(&["", " asc", " desc", " sideways"][..]),
        )
            .prop_map(|(c, d)| Value::from(format!("{c}{d}")))
            .boxed(),
        "$expand" => prop::sample::select(
            &[
                "primarycontactid($select=fullname)",
                "parentcustomerid_account",
                "primarycontactid",
            ][..],
        )
        .prop_map(Value::from)
        .boxed(),
        "fetchXml" => prop_oneof![
            2 => text().prop_map(|name| Value::from(format!(
                "<fetch><entity name=\"account\"><attribute name=\"{name}\"/></entity></fetch>"
            ))),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "$count" => prop_oneof![4 => any::<bool>().prop_map(Value::from), 1 => any_json()].boxed(),
        "$top" | "$skip" => prop_oneof![
            4 => (0u64..600).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "etag" => prop_oneof![
            (0u64..2_000_000).prop_map(|v| Value::from(format!("W/\"{v}\""))),
            text().prop_map(Value::from)
        ]
        .boxed(),
        // A few plausible keys, so that repeats (same payload or not) happen.
        "idempotency_key" => prop_oneof![
            4 => "k-[0-9]".prop_map(Value::from),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "idempotency_column" => prop_oneof![
            3 => Just(json!("description")),
            1 => column().prop_map(Value::from),
            1 => text().prop_map(Value::from)
        ]
        .boxed(),
        "since" => prop_oneof![
            Just(json!("2020-01-01T00:00:00Z")),
            text().prop_map(Value::from)
        ]
        .boxed(),
        _ => text().prop_map(Value::from).boxed(),
    };
    prop_oneof![12 => plausible, 1 => any_json()].boxed()
}

/// The inputs each function takes: the required ones, then the optional ones.
fn inputs(function: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match function {
        "list-records" => (
            &["dataset", "table"],
            &[
                "$filter", "$orderby", "$top", "$skip", "$select", "$expand", "$count", "fetchXml",
            ],
        ),
        "get-record" => (&["dataset", "table", "id"], &["key", "$select", "$expand"]),
        "create-record" => (
            &["dataset", "table", "item"],
            &[
                "$select",
                "idempotency_key",
                "idempotency_column",
                "bypass_plugins",
                "suppress_flows",
            ],
        ),
        "update-record" | "upsert-record" => (
            &["dataset", "table", "id", "item"],
            &[
                "key",
                "etag",
                "$select",
                "idempotency_key",
                "bypass_plugins",
                "suppress_flows",
            ],
        ),
        "delete-record" => (
            &["dataset", "table", "id"],
            &[
                "key",
                "etag",
                "idempotency_key",
                "bypass_plugins",
                "suppress_flows",
            ],
        ),
        "relate-records" => (
            &["dataset", "table", "id", "relationship", "related"],
            &["key"],
        ),
        "unrelate-records" => (
            &["dataset", "table", "id", "relationship"],
            &["key", "related"],
        ),
        "describe-table" => (&["dataset", "table"], &[]),
        "perform-action" => (&["dataset", "function"], &["parameters", "table", "id"]),
        "execute-changeset" => (
            &["dataset", "operations"],
            &["idempotency_key", "bypass_plugins", "suppress_flows"],
        ),
        // Not `input`: an S3 object needs S3 (moto), which this suite does not start, as it
        // leaves out `list-records`'s `output`.
        "write-records" => (
            &["dataset", "table", "mode", "rows"],
            &[
                "Items",
                "key",
                "batch_size",
                "bypass_plugins",
                "suppress_flows",
            ],
        ),
        "when-record-deleted" => (&["dataset", "table"], &["$top", "trigger"]),
        "when-record-updated" => (
            &["dataset", "table"],
            &[
                "$filter", "$orderby", "$top", "$select", "trigger", "since", "columns",
            ],
        ),
        _ => (
            &["dataset", "table"],
            &["$filter", "$orderby", "$top", "$select", "trigger", "since"],
        ),
    }
}

/// A payload for `function`: mostly an object of its inputs (the required ones nearly always
/// there), sometimes with a stray key, sometimes wrapped as an EventBridge event, sometimes not an
/// object at all.
fn payload(function: &'static str) -> BoxedStrategy<Value> {
    let (required, optional) = inputs(function);
    let fields = required
        .iter()
        .map(|key| (*key, 0.95))
        .chain(optional.iter().map(|key| (*key, 0.4)))
        .map(|(key, odds)| {
            prop::option::weighted(odds, input_value(key))
                .prop_map(move |v| v.map(|v| (key.to_owned(), v)))
                .boxed()
        })
        .collect::<Vec<_>>();
    let stray = prop_oneof![
        prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
        text(),
    ];
    let object =
        (fields, prop::option::weighted(0.05, (stray, any_json()))).prop_map(|(fields, stray)| {
            let mut map: Map<String, Value> = fields.into_iter().flatten().collect();
            if let Some((key, value)) = stray {
                map.insert(key, value);
            }
            Value::Object(map)
        });
    prop_oneof![
        16 => object.clone().boxed(),
        2 => object
            .prop_map(|detail| json!({
                "version": "0", "source": "aws.scheduler", "detail-type": "Scheduled Event",
                "detail": detail
            }))
            .boxed(),
        1 => any_json(),
    ]
    .boxed()
}

/// Why a request in the emulator's log could not have come from a well-behaved client, if it could
/// not.
fn malformed(method: &str, path: &str) -> Option<String> {
    if path.ends_with("/oauth2/v2.0/token") && method == "POST" {
        return None;
    }
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let Some(resource) = path_only.strip_prefix("/api/data/v9.2/") else {
        return Some("not under /api/data/v9.2/".into());
    };
    // A count of a collection: `{set}/$count`.
    let resource = resource.strip_suffix("/$count").unwrap_or(resource);
    let set = resource.split('(').next().unwrap_or_default();
    // A row's navigation property, for relating rows: `{set}({key})/{property}/$ref`, the property
    // taken from the table's own definitions (so a plain name).
    let (resource, reference) = match resource.strip_suffix("/$ref") {
        Some(row) => match row.rsplit_once('/') {
            Some((row, property))
                if !property.is_empty()
                    && property
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                (row, true)
            }
            _ => return Some(format!("'{resource}' is not a navigation property's $ref")),
        },
        None => (resource, false),
    };
    if resource == "$batch" {
        if method != "POST" {
            return Some("a batch is POSTed".into());
        }
    } else if operation_path(resource) {
        if method != "GET" && method != "POST" {
            return Some(format!("{method} is not how an operation is performed"));
        }
    } else if set == "EntityDefinitions" {
        if method != "GET" {
            return Some("metadata is only read".into());
        }
        if !metadata_path(resource) {
            return Some(format!("'{resource}' is not a table definition path"));
        }
    } else if !ENTITY_SETS.contains(&set) {
        return Some(format!("'{set}' is not an entity set"));
    } else if reference && !resource.ends_with(')') {
        return Some(format!("'{resource}' relates no row"));
    } else if let Some(key) = resource.strip_prefix(set) {
        let valid_key = key.is_empty()
            || key
                .strip_prefix('(')
                .and_then(|k| k.strip_suffix(')'))
                .is_some_and(|k| {
                    (uuid::Uuid::try_parse(k).is_ok() && k.len() == 36) || alternate_key(k)
                });
        if !valid_key {
            return Some(format!("'{key}' is not a row key"));
        }
    }
    for option in query.split('&').filter(|o| !o.is_empty()) {
        let Some((name, value)) = option.split_once('=') else {
            return Some(format!("option '{option}' has no value"));
        };
        match name {
            // `$id`: the related row's address, for a `$ref`.
            "$select" | "$filter" | "$orderby" | "$expand" | "fetchXml" | "$id" => {
                let encoded = value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~,()'/*%".contains(c));
                if !encoded {
                    return Some(format!("{name} is not encoded: {value:.80}"));
                }
            }
            "$count" | "$skiptoken" | "$deltatoken" => {}
            // A function's parameter alias: an OData literal, encoded whole, as the options above
            // are (what stays unencoded cannot leave the query).
            alias if alias.starts_with("@p") && alias[2..].bytes().all(|b| b.is_ascii_digit()) => {
                let encoded = value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~,()'/*%".contains(c));
                if !encoded {
                    return Some(format!("{alias} is not encoded: {value:.80}"));
                }
            }
            other => return Some(format!("unexpected option {other:.40}")),
        }
    }
    None
}

/// An unbound function or action (`WhoAmI()`, `Name(P=@p1,...)`, `Name`), or one bound to a row
/// (`{set}({key})/Microsoft.Dynamics.CRM.Name`): names plain, parameters only through aliases.
fn operation_path(resource: &str) -> bool {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !s.as_bytes()[0].is_ascii_digit()
    };
    let call = |s: &str| match s.split_once('(') {
        None => plain(s),
        Some((name, args)) => {
            plain(name)
                && args.strip_suffix(')').is_some_and(|args| {
                    args.is_empty()
                        || args.split(',').all(|a| {
                            a.split_once("=@p").is_some_and(|(p, n)| {
                                plain(p) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                            })
                        })
                })
        }
    };
    if let Some((row, operation)) = resource.split_once("/Microsoft.Dynamics.CRM.") {
        let set = row.split('(').next().unwrap_or_default();
        // Bound to a row, or (the bulk messages) to the table's collection.
        let bulk = ["CreateMultiple", "UpdateMultiple", "UpsertMultiple"].contains(&operation);
        ENTITY_SETS.contains(&set)
            && (row.ends_with(')') || (row == set && bulk))
            && call(operation)
    } else {
        let name = resource.split('(').next().unwrap_or_default();
        !ENTITY_SETS.contains(&name) && name != "EntityDefinitions" && call(resource)
    }
}

/// `EntityDefinitions`, one table's (`(LogicalName='name')`), or its attributes cast to a derived
/// type (`/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata`).
fn metadata_path(resource: &str) -> bool {
    let Some(rest) = resource.strip_prefix("EntityDefinitions") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix("(LogicalName='") else {
        return false;
    };
    let Some((name, tail)) = rest.split_once("')") else {
        return false;
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let cast = tail
        .strip_prefix("/Attributes/Microsoft.Dynamics.CRM.")
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphabetic()));
    plain(name) && (tail.is_empty() || cast)
}

/// `column='text',other=42`: names plain, text quoted and fully percent-encoded (no raw quote,
/// parenthesis or separator inside), numbers and GUIDs bare.
fn alternate_key(key: &str) -> bool {
    key.split(',').all(|part| {
        let Some((name, value)) = part.split_once('=') else {
            return false;
        };
        let plain_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let value_ok = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(text) => text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~%".contains(c)),
            None => {
                !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.+".contains(c))
            }
        };
        plain_name && value_ok
    })
}

struct Fleet {
    emulator: Emulator,
    _files: LocalFiles,
    functions: HashMap<&'static str, Function>,
    cases: AtomicU64,
    /// How many answers of each kind (`ok` or the error type), and requests that reached Dataverse:
    /// a run where every payload failed validation would prove little.
    outcomes: HashMap<String, u64>,
}

impl Fleet {
    async fn start() -> Self {
        let emulator = Emulator::start(&["--seed", "demo"]).await.unwrap();
        let files = LocalFiles::new("properties", &emulator).unwrap();
        // The writers keep their idempotency records beside the cursors, in the same temporary
        // directory.
        let mut environment = files.env();
        let state = environment
            .iter()
            .find(|(k, _)| k == "CRM_STATE")
            .map(|(_, v)| v.clone())
            .unwrap();
        environment.push(("CRM_IDEMPOTENCY".into(), format!("{state}/idempotency")));
        let mut functions = HashMap::new();
        for name in FUNCTIONS {
            functions.insert(name, Function::start(name, &environment).await.unwrap());
        }
        Self {
            emulator,
            _files: files,
            functions,
            cases: AtomicU64::new(0),
            outcomes: HashMap::new(),
        }
    }

    /// One invocation, and the properties every answer must have.
    async fn check(&mut self, name: &'static str, body: Bytes) -> Result<(), TestCaseError> {
        self.cases.fetch_add(1, Ordering::Relaxed);
        let function = self.functions.get_mut(name).unwrap();
        match function.invoke_bytes(body, Duration::from_secs(20)).await {
            Ok(_) => *self.outcomes.entry("ok".into()).or_default() += 1,
            Err(Failure::Error {
                error_type,
                message,
            }) => {
                *self.outcomes.entry(error_type.clone()).or_default() += 1;
                prop_assert!(
                    error_type.starts_with("Crm."),
                    "{name}: error type {error_type}: {message:.300}"
                );
                prop_assert!(
                    message.len() < 1024,
                    "{name}: a message of {} bytes: {message:.300}",
                    message.len()
                );
            }
            Err(other) => {
                let logs = function.logs();
                let tail = &logs[logs.len().saturating_sub(2000)..];
                return Err(TestCaseError::fail(format!(
                    "{name}: {other}; logs: {tail}"
                )));
            }
        }
        let log = self.emulator.requests().await.unwrap();
        self.emulator.clear_requests().await.unwrap();
        *self.outcomes.entry("requests".into()).or_default() += log.len() as u64;
        for entry in &log {
            let method = entry["method"].as_str().unwrap_or_default();
            let path = entry["path"].as_str().unwrap_or_default();
            if let Some(why) = malformed(method, path) {
                return Err(TestCaseError::fail(format!(
                    "{name} sent {method} {path:.200}: {why}"
                )));
            }
        }
        Ok(())
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|n| n.parse().ok())
}

/// The seed the brief run in `make test` uses, so that CI sees the same cases every time; `make
/// fuzz` sets `PROPTEST_RNG_SEED` per shard to explore.
const DEFAULT_SEED: u64 = 0x00C0_FFEE;

#[test]
fn no_payload_crashes_a_function_or_escapes_its_url() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fleet = std::cell::RefCell::new(runtime.block_on(Fleet::start()));
    let seed = env_number("PROPTEST_RNG_SEED").unwrap_or(DEFAULT_SEED);
    let mut runner = TestRunner::new(Config {
        cases: env_number("PROPTEST_CASES").unwrap_or(256),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    let strategy =
        prop::sample::select(&FUNCTIONS[..]).prop_flat_map(|name| (Just(name), payload(name)));
    let result = runner.run(&strategy, |(name, payload)| {
        let body = Bytes::from(serde_json::to_vec(&payload).unwrap());
        let outcome = runtime.block_on(fleet.borrow_mut().check(name, body));
        let ran = fleet.borrow().cases.load(Ordering::Relaxed);
        if ran.is_multiple_of(10_000) {
            // A long `make fuzz` shows how far it got, clean, even if it is stopped.
            eprintln!("property cases clean so far: {ran}");
        }
        outcome
    });
    let fleet = fleet.into_inner();
    let ran = fleet.cases.load(Ordering::Relaxed);
    let mut outcomes: Vec<_> = fleet.outcomes.into_iter().collect();
    outcomes.sort();
    // `make fuzz` reads this line for its report.
    eprintln!("property cases run: {ran} (seed {seed}; {outcomes:?})");
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn hostile_payloads_that_once_broke_something_stay_fixed() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is in {}", corpus.display());
    let mut fleet = Fleet::start().await;
    for file in &files {
        let body = Bytes::from(std::fs::read(file).unwrap());
        for name in FUNCTIONS {
            if let Err(e) = fleet.check(name, body.clone()).await {
                panic!("{}: {e}", file.display());
            }
        }
    }
}
