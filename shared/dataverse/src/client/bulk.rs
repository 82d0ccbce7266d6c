//! The bulk messages: `CreateMultiple`, `UpdateMultiple` and `UpsertMultiple` (Microsoft Learn,
//! *Use bulk operation messages*).
//!
//! Each is an action bound to the table's entity set,
//! `POST {set}/Microsoft.Dynamics.CRM.CreateMultiple`, whose body holds the rows as `Targets`, each
//! with an `@odata.type` naming the table. A row is named for an update or upsert by its primary id
//! column, or by an alternate key in `@odata.id` (`accounts(accountnumber='A-1')`). On a standard
//! table the request is applied whole or not at all: one refused row fails the request, and
//! nothing of it is written.

use bytes::Bytes;
use reqwest::Method;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::send::Call;
use super::{Client, Table};
use crate::key::AlternateKey;
use crate::retry::{Deadline, Repeat};
use crate::{Error, Query, transport};

/// Which bulk message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkMessage {
    /// `CreateMultiple`: new rows; answers their ids, in order.
    Create,
    /// `UpdateMultiple`: existing rows, each named by its id or a key; answers nothing.
    Update,
    /// `UpsertMultiple`: updates the rows that exist and creates the others.
    Upsert,
}

impl BulkMessage {
    /// The action's name.
    pub fn action(self) -> &'static str {
        match self {
            BulkMessage::Create => "CreateMultiple",
            BulkMessage::Update => "UpdateMultiple",
            BulkMessage::Upsert => "UpsertMultiple",
        }
    }
}

/// What a bulk request answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkWritten {
    /// The rows' ids in the order of the targets, when Dataverse answered them: `CreateMultiple`
    /// answers `Ids`; `UpdateMultiple` and `UpsertMultiple` answer 204 with no body (*Use bulk
    /// operation messages*), so an upsert cannot say which rows it created.
    pub ids: Option<Vec<Uuid>>,
}

#[derive(Deserialize)]
struct Answered {
    #[serde(rename = "Ids", default)]
    ids: Option<Vec<Uuid>>,
}

/// `@odata.id` for a row named by an alternate key: `accounts(accountnumber='A-1')`.
pub fn key_reference(table: &Table, key: &AlternateKey) -> String {
    format!("{}({})", table.entity_set_name, key.url_segment())
}

/// One target: `@odata.type` first, then the row's columns (an `@odata.type` of the row's own is
/// left out: the table decides it).
struct Target<'a> {
    odata_type: &'a str,
    row: &'a Map<String, Value>,
}

impl Serialize for Target<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("@odata.type", self.odata_type)?;
        for (name, value) in self.row {
            if name != "@odata.type" {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// The request body's shape: `{"Targets": [...]}`.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "Targets")]
    targets: Vec<Target<'a>>,
}

/// The request body, written straight to bytes: up to a thousand rows are not copied into a
/// `Value` tree first.
pub(crate) fn body(table: &Table, rows: &[Map<String, Value>]) -> Result<Bytes, Error> {
    let odata_type = format!("Microsoft.Dynamics.CRM.{}", table.logical_name);
    let body = Body {
        targets: rows
            .iter()
            .map(|row| Target {
                odata_type: &odata_type,
                row,
            })
            .collect(),
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(Error::Encode)
}

impl Client {
    /// Sends `rows` of `table` as one `message`, with this client's write options. All of them are
    /// written, or (on a standard table) none.
    ///
    /// `CreateMultiple` is sent once: only a request that provably never left is sent again, since
    /// one that ran and lost its answer made its rows. An update or upsert sent twice writes the
    /// same values again, so those are repeated like a read.
    pub async fn bulk(
        &self,
        table: &Table,
        message: BulkMessage,
        rows: &[Map<String, Value>],
        deadline: Deadline,
    ) -> Result<BulkWritten, Error> {
        let url = self.resource_url(
            &format!(
                "{}/Microsoft.Dynamics.CRM.{}",
                table.entity_set_name,
                message.action()
            ),
            &Query::default(),
        )?;
        let answer = self
            .execute(
                Call {
                    method: Method::POST,
                    url: &url,
                    headers: self.write_headers(vec![(
                        "content-type",
                        "application/json; charset=utf-8".to_owned(),
                    )]),
                    body: Some(body(table, rows)?),
                    repeat: if message == BulkMessage::Create {
                        Repeat::OnlyIfUnsent
                    } else {
                        Repeat::Safe
                    },
                    done_if_retried: None,
                },
                deadline,
            )
            .await?;
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(BulkWritten { ids: None });
        }
        // The rows are written: an answer that cannot be read must not read as nothing done.
        let answered: Answered =
            transport::decode(url.path(), &answer.body).map_err(Error::after_possible_write)?;
        Ok(BulkWritten { ids: answered.ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            logical_name: "account".into(),
            entity_set_name: "accounts".into(),
            primary_id_attribute: "accountid".into(),
            primary_name_attribute: Some("name".into()),
            change_tracking_enabled: false,
        }
    }

    #[test]
    fn each_target_names_its_table_first_and_keeps_its_columns() {
        let rows: Vec<Map<String, Value>> = vec![
            serde_json::from_value(serde_json::json!({"name": "a", "@odata.type": "x"})).unwrap(),
            serde_json::from_value(serde_json::json!({"accountid": "6d81597f-0000-4000-8000-000000000001", "@odata.id": "accounts(accountnumber='A-1')"})).unwrap(),
        ];
        let body = body(&table(), &rows).unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.starts_with(
                r#"{"Targets":[{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"a"}"#
            ),
            "{text}"
        );
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value["Targets"][1]["@odata.id"],
            "accounts(accountnumber='A-1')"
        );
        assert_eq!(value["Targets"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_key_reference_is_the_row_address_without_the_service_root() {
        let key = AlternateKey::from_json(
            serde_json::json!({"accountnumber": "A 1'"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            key_reference(&table(), &key),
            "accounts(accountnumber='A%201%27%27')"
        );
        assert_eq!(BulkMessage::Upsert.action(), "UpsertMultiple");
    }
}
