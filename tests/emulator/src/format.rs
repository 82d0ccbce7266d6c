//! Formatted values and lookup annotations, added to rows when `Prefer:
//! odata.include-annotations="..."` asks for them.
//!
//! Each annotation of a column comes just before the column, in the order Dataverse writes them:
//! `<col>@OData.Community.Display.V1.FormattedValue`, then for a lookup
//! `<col>@Microsoft.Dynamics.CRM.associatednavigationproperty` and
//! `<col>@Microsoft.Dynamics.CRM.lookuplogicalname`. Only the ones asked for are added (`*`, exact
//! names and `prefix*` wildcards), and a null value has none.
//!
//! Values are formatted as an en-US user sees them: choice and yes/no labels, grouped numbers
//! (`5,000`, `1,234.50`), money with the currency's symbol and two decimals (`$5,000.00`, the
//! organisation's only currency being the US dollar), and dates in the user's time zone
//! (`crate::dates`). Text, ids and big integers carry none.

use serde_json::Value;
use uuid::Uuid;

use crate::dates;
use crate::odata::query::Prefer;
use crate::schema::{ColumnType, DateBehavior, DateFormat, System, TableDef};
use crate::store::Store;

pub const FORMATTED: &str = "OData.Community.Display.V1.FormattedValue";
pub const NAVIGATION: &str = "Microsoft.Dynamics.CRM.associatednavigationproperty";
pub const LOGICAL_NAME: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";

/// The organisation's base currency: its name and symbol.
pub const CURRENCY_NAME: &str = "US Dollar";
const CURRENCY_SYMBOL: &str = "$";

/// Which of the row annotations a request asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Annotate {
    pub formatted: bool,
    pub navigation: bool,
    pub logical_name: bool,
}

impl Annotate {
    pub fn of(prefer: &Prefer) -> Self {
        Self {
            formatted: prefer.wants_annotation(FORMATTED),
            navigation: prefer.wants_annotation(NAVIGATION),
            logical_name: prefer.wants_annotation(LOGICAL_NAME),
        }
    }

    pub fn any(self) -> bool {
        self.formatted || self.navigation || self.logical_name
    }
}

/// `odata.include-annotations="..."` as `Preference-Applied` echoes it, when the request asked.
pub fn applied(prefer: &Prefer) -> Option<String> {
    prefer
        .annotations
        .as_ref()
        .map(|list| format!("odata.include-annotations=\"{list}\""))
}

/// Adds the annotations preference to a `Preference-Applied` list.
pub fn push_applied(applied_list: &mut Vec<String>, prefer: &Prefer) {
    if let Some(item) = applied(prefer) {
        applied_list.push(item);
    }
}

/// The annotations column `c` of a row of `def` carries for `value`, in the order they are written,
/// each as `(term, value)`.
pub fn annotations(
    store: &Store,
    def: &TableDef,
    c: usize,
    value: &Value,
    wanted: Annotate,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !wanted.any() || value.is_null() {
        return out;
    }
    if wanted.formatted
        && let Some(text) = formatted(store, def, c, value)
    {
        out.push((FORMATTED, text));
    }
    if (wanted.navigation || wanted.logical_name)
        && let Some(target) = reference(store, def, c, value)
    {
        if wanted.navigation {
            out.push((NAVIGATION, target.navigation));
        }
        if wanted.logical_name {
            out.push((LOGICAL_NAME, target.logical_name));
        }
    }
    out
}

/// Writes `"<key>@<term>":"<value>",` for each annotation of a value written under `key`.
pub fn write_annotations(out: &mut Vec<u8>, key: &str, annotations: &[(&'static str, String)]) {
    for (term, text) in annotations {
        crate::api::render::write_json(out, &format!("{key}@{term}"));
        out.push(b':');
        crate::api::render::write_json(out, text);
        out.push(b',');
    }
}

/// What a lookup value points at: the table's logical name and the single-valued navigation
/// property that reaches it.
#[derive(Debug)]
struct Target {
    logical_name: String,
    navigation: String,
}

fn reference(store: &Store, def: &TableDef, c: usize, value: &Value) -> Option<Target> {
    let column = &def.columns[c];
    match &column.ty {
        ColumnType::Lookup { navs } => {
            let id = value.as_str()?;
            // A polymorphic lookup names the navigation property of the table the row is in.
            let nav = store
                .lookup_target(navs, id)
                .and_then(|(t, _)| {
                    let logical = &store.tables[t].def.logical_name;
                    navs.iter().find(|n| &n.target == logical)
                })
                .or_else(|| navs.first())?;
            Some(Target {
                logical_name: nav.target.clone(),
                navigation: nav.name.clone(),
            })
        }
        ColumnType::System(System::Reference) => {
            let attribute = column.attribute();
            Some(Target {
                logical_name: platform_table(attribute).to_owned(),
                navigation: attribute.to_owned(),
            })
        }
        _ => None,
    }
}

/// The table a platform lookup points at.
pub fn platform_table(attribute: &str) -> &'static str {
    match attribute {
        "owningbusinessunit" => "businessunit",
        "transactioncurrencyid" => "transactioncurrency",
        "organizationid" => "organization",
        _ => "systemuser",
    }
}

/// A value as the user sees it, or `None` for the columns that have no formatted value.
pub fn formatted(store: &Store, def: &TableDef, c: usize, value: &Value) -> Option<String> {
    if value.is_null() {
        return None;
    }
    let column = &def.columns[c];
    let offset = store.user_offset_minutes;
    match &column.ty {
        ColumnType::Choice { options } => {
            let n = value.as_i64()?;
            Some(
                options
                    .iter()
                    .find(|o| o.value == n)
                    .map_or_else(|| n.to_string(), |o| o.label.clone()),
            )
        }
        ColumnType::YesNo | ColumnType::System(System::Flag) => {
            value.as_bool().map(|b| column.bool_label(b).to_owned())
        }
        ColumnType::Whole { .. } => value.as_i64().map(group_integer),
        ColumnType::Decimal | ColumnType::Float => value.as_f64().map(|n| decimal(n, 2)),
        ColumnType::Money => value.as_f64().map(money),
        ColumnType::DateTime { behavior, format } => dates::show_instant(
            value.as_str()?,
            offset,
            *behavior == DateBehavior::UserLocal,
            *format == DateFormat::DateOnly,
        ),
        ColumnType::System(System::CreatedOn | System::ModifiedOn) => {
            dates::show_instant(value.as_str()?, offset, true, false)
        }
        ColumnType::DateOnly => dates::show_day(value.as_str()?),
        ColumnType::Lookup { navs } => {
            let (t, id) = store.lookup_target(navs, value.as_str()?)?;
            primary_name(store, t, id)
        }
        ColumnType::System(System::Reference) => platform_name(store, column.attribute(), value),
        ColumnType::Id
        | ColumnType::Text { .. }
        | ColumnType::BigInt
        | ColumnType::System(System::VersionNumber | System::FullName) => None,
    }
}

/// The primary name of row `id` of table `t`: what a lookup to it shows.
pub fn primary_name(store: &Store, t: usize, id: Uuid) -> Option<String> {
    let def = &store.tables[t].def;
    let row = store.tables[t].rows.get(&id)?;
    def.column(&def.primary_name)
        .and_then(|c| row.cells[c].as_str())
        .map(str::to_owned)
}

/// The name of what a platform lookup points at, where the emulator knows it: a user the
/// organisation knows (owner, created by, modified by), the currency, and the organisation (whose
/// root business unit carries its name).
fn platform_name(store: &Store, attribute: &str, value: &Value) -> Option<String> {
    let id = Uuid::parse_str(value.as_str()?).ok()?;
    let org = &store.org;
    match attribute {
        _ if platform_table(attribute) == "systemuser" => store.users.name(&id).map(str::to_owned),
        "transactioncurrencyid" if id == org.currency => Some(CURRENCY_NAME.to_owned()),
        "organizationid" if id == org.organization => {
            Some(crate::webhooks::ORGANIZATION_NAME.to_owned())
        }
        "owningbusinessunit" if id == org.business_unit => {
            Some(crate::webhooks::ORGANIZATION_NAME.to_owned())
        }
        _ => None,
    }
}

/// `1234567` as `1,234,567`.
pub fn group_integer(n: i64) -> String {
    let grouped = group_digits(&n.unsigned_abs().to_string());
    if n < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// A run of ASCII digits with a comma before each group of three from the right: `1,234,567`.
/// Shared with the service protection messages and headers, which group numbers the same way.
pub fn group_digits(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `n` rounded to `places` decimals, grouped: `1,234.50`.
fn decimal(n: f64, places: usize) -> String {
    let text = format!("{:.places$}", n.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let grouped = group_digits(whole);
    let sign = if n < 0.0 && text.chars().any(|c| c != '0' && c != '.') {
        "-"
    } else {
        ""
    };
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}

/// `$5,000.00`; a negative amount is `-$5,000.00`.
fn money(n: f64) -> String {
    let text = decimal(n, 2);
    match text.strip_prefix('-') {
        Some(positive) => format!("-{CURRENCY_SYMBOL}{positive}"),
        None => format!("{CURRENCY_SYMBOL}{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_rounds_as_en_us() {
        assert_eq!(group_integer(0), "0");
        assert_eq!(group_integer(999), "999");
        assert_eq!(group_integer(5000), "5,000");
        assert_eq!(group_integer(-1_234_567), "-1,234,567");
        assert_eq!(decimal(1234.5, 2), "1,234.50");
        assert_eq!(decimal(-0.001, 2), "0.00");
        assert_eq!(money(5_000_000.0), "$5,000,000.00");
        assert_eq!(money(-12.5), "-$12.50");
    }

    #[test]
    fn reads_the_annotations_asked_for() {
        let prefer = |list: &str| {
            Prefer::parse(&[&format!("odata.include-annotations=\"{list}\"")]).unwrap()
        };
        assert_eq!(
            Annotate::of(&prefer("*")),
            Annotate {
                formatted: true,
                navigation: true,
                logical_name: true
            }
        );
        assert_eq!(
            Annotate::of(&prefer(FORMATTED)),
            Annotate {
                formatted: true,
                ..Annotate::default()
            }
        );
        assert_eq!(
            Annotate::of(&prefer("Microsoft.Dynamics.CRM.lookup*")),
            Annotate {
                logical_name: true,
                ..Annotate::default()
            }
        );
        assert!(!Annotate::of(&Prefer::default()).any());
    }
}
