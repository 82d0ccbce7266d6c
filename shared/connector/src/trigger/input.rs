//! The triggers' payload, and the name of the cursor it selects.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::CrmError;
use crate::input::{self, Dataset, TableName};

/// The original connector's default "Maximum Get Count".
/// The most changes one poll may fire.
const MAX_TOP: usize = 10_000;

/// Which changes a trigger fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Created,
    Updated,
    Deleted,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Created => "when-record-created",
            Kind::Updated => "when-record-updated",
            Kind::Deleted => "when-record-deleted",
        }
    }

    pub(crate) fn detail_type(self) -> &'static str {
        match self {
            Kind::Created => "Record Created",
            Kind::Updated => "Record Updated",
            Kind::Deleted => "Record Deleted",
        }
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Updated => "updated",
            Kind::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    dataset: Dataset,
    table: TableName,
    #[serde(rename = "$filter", default, deserialize_with = "input::expression")]
    filter: Option<String>,
    #[serde(rename = "$orderby", default, deserialize_with = "input::expression")]
    orderby: Option<String>,
    #[serde(rename = "$top", default, deserialize_with = "input::positive")]
    top: Option<usize>,
    #[serde(rename = "$skip", default)]
    skip: usize,
    #[serde(rename = "$select", default, deserialize_with = "input::expression")]
    select: Option<String>,
    #[serde(default)]
    columns: Option<Columns>,
    #[serde(default)]
    trigger: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    ignore_own_changes: bool,
    #[serde(default)]
    remember_ids: bool,
    #[serde(default)]
    formatted_values: bool,
}

/// `columns` as a list or a comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Columns {
    List(Vec<String>),
    Text(String),
}

/// A validated trigger payload.
#[derive(Debug, Clone)]
pub struct TriggerInput {
    pub dataset: Dataset,
    pub table: TableName,
    pub filter: Option<String>,
    /// Sorts what one poll returns.
    pub orderby: Option<super::order::OrderBy>,
    /// `$orderby` as given, for checking that its columns exist.
    pub orderby_text: Option<String>,
    pub top: usize,
    pub select: Option<String>,
    /// `when-record-updated` only: fire only when one of these columns changed.
    pub columns: Vec<String>,
    /// The cursor's name, if the caller chose one.
    pub trigger: Option<String>,
    /// Where a new cursor starts (Unix seconds); now when absent.
    pub since: Option<i64>,
    /// Created and updated only: pass over changes the connector's own user made.
    pub ignore_own_changes: bool,
    /// Deleted only: keep the ids of the rows known, to report the deletions an expired delta token
    /// hid.
    pub remember_ids: bool,
    /// Created and updated only: ask for formatted values and lookup annotations.
    pub formatted_values: bool,
}

impl TriggerInput {
    pub fn parse(kind: Kind, event: Value) -> Result<Self, CrmError> {
        let p: Payload = input::parse(event)?;
        if p.skip != 0 {
            return Err(CrmError::invalid(
                "$skip",
                "a trigger cannot skip changes (they would be lost); remove it or set it to 0",
            ));
        }
        let top = p.top.unwrap_or(input::DEFAULT_TOP);
        if top > MAX_TOP {
            return Err(CrmError::invalid(
                "$top",
                format!("must be at most {MAX_TOP} for a trigger"),
            ));
        }
        if kind == Kind::Deleted {
            let refused = [
                (
                    "$orderby",
                    p.orderby.is_some(),
                    "deletions are delivered in the order Dataverse reports them",
                ),
                (
                    "$select",
                    p.select.is_some(),
                    "a deletion carries only the row's id",
                ),
                (
                    "since",
                    p.since.is_some(),
                    "change tracking cannot go back in time; the first poll starts from now",
                ),
                (
                    "ignore_own_changes",
                    p.ignore_own_changes,
                    "a deletion reported by change tracking carries only the row's id, not who deleted it (the webhook receiver can tell, from the context's InitiatingUserId)",
                ),
                (
                    "formatted_values",
                    p.formatted_values,
                    "a deletion carries only the row's id, which has no formatted value",
                ),
            ];
            if let Some((field, _, why)) = refused.iter().find(|(_, present, _)| *present) {
                return Err(CrmError::invalid(
                    *field,
                    format!("is not supported by when-record-deleted: {why}"),
                ));
            }
        }
        if let Some(filter) = &p.filter
            && !balanced(filter)
        {
            return Err(CrmError::invalid(
                "$filter",
                "has unbalanced parentheses or quotes; a trigger joins it to its cursor's own filter, which it must not be able to escape",
            ));
        }
        let orderby = p.orderby.as_deref().map(super::order::parse).transpose()?;
        let columns = match p.columns {
            None => Vec::new(),
            Some(Columns::List(list)) => list,
            Some(Columns::Text(text)) => text.split(',').map(|c| c.trim().to_owned()).collect(),
        };
        if p.remember_ids && kind != Kind::Deleted {
            return Err(CrmError::invalid(
                "remember_ids",
                "only when-record-deleted remembers ids: the other triggers lose nothing when a delta token expires",
            ));
        }
        if !columns.is_empty() && kind != Kind::Updated {
            return Err(CrmError::invalid(
                "columns",
                "only when-record-updated watches columns",
            ));
        }
        if let Some(bad) = columns.iter().find(|c| !dataverse::is_schema_name(c)) {
            return Err(CrmError::invalid(
                "columns",
                format!("'{}' is not a column name", crate::excerpt(bad)),
            ));
        }
        if let Some(name) = &p.trigger
            && !input::is_plain_name(name, 100)
        {
            return Err(CrmError::invalid(
                "trigger",
                "names the cursor: 1 to 100 letters, digits, '.', '_' or '-'",
            ));
        }
        let since = p
            .since
            .map(|text| {
                OffsetDateTime::parse(&text, &Rfc3339)
                    .map(OffsetDateTime::unix_timestamp)
                    .ok()
                    .filter(|t| *t >= 0)
                    .ok_or_else(|| {
                        CrmError::invalid(
                            "since",
                            format!(
                                "'{}' is not an RFC 3339 time from 1970 on, such as 2026-01-31T08:00:00Z",
                                crate::excerpt(&text)
                            ),
                        )
                    })
            })
            .transpose()?;
        Ok(Self {
            dataset: p.dataset,
            table: p.table,
            filter: p.filter,
            orderby,
            orderby_text: p.orderby,
            top,
            select: p.select,
            columns,
            trigger: p.trigger,
            since,
            ignore_own_changes: p.ignore_own_changes,
            remember_ids: p.remember_ids,
            formatted_values: p.formatted_values,
        })
    }

    /// The cursor's key: `<kind>/<dataset>/<table>/<trigger>` when named, else derived from what
    /// decides which changes fire (the filter and the watched columns), so two schedules with
    /// different filters keep separate cursors. The table is always part of it: one table's position
    /// means nothing in another.
    pub(crate) fn cursor_key(&self, kind: Kind, logical_name: &str) -> String {
        if let Some(name) = &self.trigger {
            return format!("{}/{}/{logical_name}/{name}", kind.short(), self.dataset);
        }
        let mut hash = Sha256::new();
        hash.update(self.filter.as_deref().unwrap_or_default());
        hash.update([0]);
        hash.update(self.columns.join(","));
        let short = super::hex(&hash.finalize()[..6]);
        format!("{}/{}/{logical_name}/{short}", kind.short(), self.dataset)
    }
}

/// Whether parentheses balance outside string literals (`'...'`, with `''` escapes), and every literal
/// is closed: then `(<cursor filter>) and (<this>)` keeps the cursor's filter intact.
fn balanced(filter: &str) -> bool {
    let mut depth: i64 = 0;
    let mut quoted = false;
    for c in filter.chars() {
        match (c, quoted) {
            // A doubled quote inside a literal toggles twice, leaving it open: the escape works out.
            ('\'', _) => quoted = !quoted,
            ('(', false) => depth += 1,
            (')', false) => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && !quoted
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(result: Result<TriggerInput, CrmError>) -> String {
        match result {
            Err(CrmError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_options_that_would_lose_changes_or_cannot_apply() {
        let base = || json!({"dataset": "contoso", "table": "accounts"});
        let with = |k: &str, v: Value| {
            let mut p = base();
            p[k] = v;
            p
        };
        assert_eq!(
            field(TriggerInput::parse(Kind::Created, with("$skip", json!(5)))),
            "$skip"
        );
        // A deletion's filter is decided from the membership set (see `members.rs`).
        assert!(
            TriggerInput::parse(Kind::Deleted, with("$filter", json!("statecode eq 0"))).is_ok()
        );
        assert_eq!(
            field(TriggerInput::parse(
                Kind::Deleted,
                with("since", json!("2026-01-01T00:00:00Z"))
            )),
            "since"
        );
        assert_eq!(
            field(TriggerInput::parse(
                Kind::Created,
                with("columns", json!(["name"]))
            )),
            "columns"
        );
        assert_eq!(
            field(TriggerInput::parse(
                Kind::Updated,
                with("since", json!("yesterday"))
            )),
            "since"
        );
        assert_eq!(
            field(TriggerInput::parse(
                Kind::Updated,
                with("trigger", json!("a/b"))
            )),
            "trigger"
        );
        assert_eq!(
            field(TriggerInput::parse(
                Kind::Updated,
                with("$top", json!(100_000))
            )),
            "$top"
        );
        let ok =
            TriggerInput::parse(Kind::Updated, with("columns", json!("name, telephone1"))).unwrap();
        assert_eq!(ok.columns, ["name", "telephone1"]);
        assert_eq!(ok.top, 256);
    }

    #[test]
    fn derives_distinct_cursors_for_distinct_filters() {
        let parse = |filter: &str| {
            TriggerInput::parse(
                Kind::Created,
                json!({"dataset": "contoso", "table": "accounts", "$filter": filter}),
            )
            .unwrap()
        };
        let a = parse("statecode eq 0").cursor_key(Kind::Created, "account");
        let b = parse("statecode eq 1").cursor_key(Kind::Created, "account");
        assert_ne!(a, b);
        assert!(a.starts_with("created/contoso/account/"));
        let named = TriggerInput::parse(
            Kind::Deleted,
            json!({"dataset": "contoso", "table": "accounts", "trigger": "crm-sync"}),
        )
        .unwrap();
        assert_eq!(
            named.cursor_key(Kind::Deleted, "account"),
            "deleted/contoso/account/crm-sync"
        );
    }

    #[test]
    fn refuses_a_filter_that_could_escape_its_parentheses() {
        let parse = |filter: &str| {
            TriggerInput::parse(
                Kind::Created,
                json!({"dataset": "contoso", "table": "accounts", "$filter": filter}),
            )
        };
        for bad in [
            "x eq 1) or (true",
            "(x eq 1",
            "name eq 'open",
            "x eq 1)) or ((true",
        ] {
            assert_eq!(field(parse(bad)), "$filter", "{bad}");
        }
        for good in [
            "name eq 'a (b'",
            "(a eq 1) and (b eq 2)",
            "name eq 'O''Brien)'",
            "contains(name,'x')",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            field(TriggerInput::parse(
                Kind::Created,
                json!({"dataset": "contoso", "table": "accounts", "$orderby": "name descending"})
            )),
            "$orderby"
        );
    }
}
