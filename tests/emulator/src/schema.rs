//! Table definitions: columns, their EDM types, and the four built-in business tables. The plug-in
//! registration tables are defined in `crate::webhooks::registration`.
//!
//! Column names are the names that appear in Web API JSON, so a lookup is stored under
//! `_parentcustomerid_value` and written through its navigation properties (`parentcustomerid_account`).

use uuid::Uuid;

use crate::keys::EntityKey;

/// The `OData` primitive type of a column, as named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edm {
    String,
    Int32,
    Int64,
    Decimal,
    Double,
    Boolean,
    DateTimeOffset,
    Date,
    Guid,
}

impl Edm {
    pub fn name(self) -> &'static str {
        match self {
            Edm::String => "Edm.String",
            Edm::Int32 => "Edm.Int32",
            Edm::Int64 => "Edm.Int64",
            Edm::Decimal => "Edm.Decimal",
            Edm::Double => "Edm.Double",
            Edm::Boolean => "Edm.Boolean",
            Edm::DateTimeOffset => "Edm.DateTimeOffset",
            Edm::Date => "Edm.Date",
            Edm::Guid => "Edm.Guid",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Edm::Int32 | Edm::Int64 | Edm::Decimal | Edm::Double)
    }
}

/// One navigation property of a lookup: the name used in `@odata.bind` and `$expand`, and the table it
/// points at.
#[derive(Debug, Clone)]
pub struct Nav {
    pub name: String,
    pub target: String,
}

#[derive(Debug, Clone)]
pub enum ColumnType {
    /// The primary key.
    Id,
    Text {
        max_len: usize,
    },
    Whole {
        min: i64,
        max: i64,
    },
    BigInt,
    Money,
    Decimal,
    Float,
    YesNo,
    DateTime,
    DateOnly,
    Choice {
        options: Vec<i64>,
    },
    /// A lookup, read as `_<attribute>_value` and written as `<nav>@odata.bind`.
    Lookup {
        navs: Vec<Nav>,
    },
    /// Maintained by the platform: `createdon`, `modifiedon`, `versionnumber`, owner lookups and the
    /// computed `fullname`. Writes to them are ignored, as Dataverse ignores fields that are not valid
    /// for create or update.
    System(System),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    CreatedOn,
    ModifiedOn,
    VersionNumber,
    /// A read-only lookup such as `_ownerid_value`; it cannot be written at all.
    Reference,
    /// `fullname`, computed from `firstname` and `lastname`.
    FullName,
    /// A computed yes/no the platform keeps, such as a service endpoint's `isauthvalueset`.
    Flag,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

impl Column {
    pub(crate) fn new(name: &str, ty: ColumnType) -> Self {
        Self {
            name: name.to_owned(),
            ty,
        }
    }

    /// The attribute's logical name, as the SDK, entity images and `filteringattributes` name it: a
    /// lookup read as `_parentcustomerid_value` is the attribute `parentcustomerid`.
    pub fn attribute(&self) -> &str {
        match &self.ty {
            ColumnType::Lookup { .. } | ColumnType::System(System::Reference) => self
                .name
                .strip_prefix('_')
                .and_then(|n| n.strip_suffix("_value"))
                .unwrap_or(&self.name),
            _ => &self.name,
        }
    }

    pub fn edm(&self) -> Edm {
        match &self.ty {
            ColumnType::Id | ColumnType::Lookup { .. } | ColumnType::System(System::Reference) => {
                Edm::Guid
            }
            ColumnType::Text { .. } | ColumnType::System(System::FullName) => Edm::String,
            ColumnType::Whole { .. } | ColumnType::Choice { .. } => Edm::Int32,
            ColumnType::BigInt | ColumnType::System(System::VersionNumber) => Edm::Int64,
            ColumnType::Money | ColumnType::Decimal => Edm::Decimal,
            ColumnType::Float => Edm::Double,
            ColumnType::YesNo | ColumnType::System(System::Flag) => Edm::Boolean,
            ColumnType::DateTime | ColumnType::System(System::CreatedOn | System::ModifiedOn) => {
                Edm::DateTimeOffset
            }
            ColumnType::DateOnly => Edm::Date,
        }
    }
}

/// What a table is for, which decides whether its writes reach plug-in steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A business table (the built-in ones and every custom table): its Web API writes fire the
    /// registered steps.
    Ordinary,
    /// One of the tables plug-in and webhook registrations are written to.
    Registration(Registration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    ServiceEndpoint,
    Message,
    MessageFilter,
    Step,
    StepImage,
}

#[derive(Debug, Clone)]
pub struct TableDef {
    pub logical_name: String,
    pub entity_set_name: String,
    pub schema_name: String,
    pub primary_id: String,
    pub primary_name: String,
    pub change_tracking: bool,
    pub metadata_id: Uuid,
    pub object_type_code: i64,
    pub is_custom: bool,
    pub kind: TableKind,
    pub columns: Vec<Column>,
    /// Column positions the store needs on every write.
    pub idx: SystemIdx,
    /// Alternate keys, in the order they were defined; none on a fresh organisation. Each one's
    /// unique index is the table's (`crate::store::Table::key_index`).
    pub keys: Vec<EntityKey>,
}

#[derive(Debug, Clone, Copy)]
pub struct SystemIdx {
    pub id: usize,
    pub created: usize,
    pub modified: usize,
    pub version: usize,
}

impl TableDef {
    /// Builds a table from its own columns; the primary key and the system columns every table has are
    /// added here.
    pub fn new(
        logical_name: &str,
        entity_set_name: &str,
        primary_id: &str,
        primary_name: &str,
        change_tracking: bool,
        own: Vec<Column>,
    ) -> Self {
        let mut columns = vec![Column::new(primary_id, ColumnType::Id)];
        columns.extend(own);
        for (name, ty) in [
            (
                "statecode",
                ColumnType::Choice {
                    options: vec![0, 1],
                },
            ),
            (
                "statuscode",
                ColumnType::Choice {
                    options: vec![1, 2],
                },
            ),
            ("createdon", ColumnType::System(System::CreatedOn)),
            ("modifiedon", ColumnType::System(System::ModifiedOn)),
            ("versionnumber", ColumnType::System(System::VersionNumber)),
            ("_ownerid_value", ColumnType::System(System::Reference)),
            ("_createdby_value", ColumnType::System(System::Reference)),
            ("_modifiedby_value", ColumnType::System(System::Reference)),
            (
                "_owningbusinessunit_value",
                ColumnType::System(System::Reference),
            ),
        ] {
            if !columns.iter().any(|c| c.name == name) {
                columns.push(Column::new(name, ty));
            }
        }
        let idx = index(&columns);
        let mut schema_name = String::new();
        for (i, part) in logical_name.split('_').enumerate() {
            if i > 0 {
                schema_name.push('_');
            }
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                schema_name.extend(first.to_uppercase());
                schema_name.push_str(chars.as_str());
            }
        }
        Self {
            logical_name: logical_name.to_owned(),
            entity_set_name: entity_set_name.to_owned(),
            schema_name,
            primary_id: primary_id.to_owned(),
            primary_name: primary_name.to_owned(),
            change_tracking,
            metadata_id: stable_id(logical_name),
            object_type_code: 0,
            is_custom: false,
            kind: TableKind::Ordinary,
            columns,
            idx,
            keys: Vec::new(),
        }
    }

    /// An organization-owned table: no owner or owning business unit, but the organization it
    /// belongs to, as the plug-in registration tables have.
    pub(crate) fn organization_owned(mut self) -> Self {
        self.columns.retain(|c| {
            !matches!(
                c.name.as_str(),
                "_ownerid_value" | "_owningbusinessunit_value"
            )
        });
        self.columns.push(Column::new(
            "_organizationid_value",
            ColumnType::System(System::Reference),
        ));
        self.idx = index(&self.columns);
        self
    }

    /// A table without `statecode` and `statuscode`.
    pub(crate) fn stateless(mut self) -> Self {
        self.columns
            .retain(|c| !matches!(c.name.as_str(), "statecode" | "statuscode"));
        self.idx = index(&self.columns);
        self
    }

    /// The column of an attribute's logical name (`parentcustomerid` is `_parentcustomerid_value`).
    pub fn attribute(&self, logical_name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.attribute() == logical_name)
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The lookup column and navigation property for an `@odata.bind` or `$expand` name.
    pub fn nav(&self, nav_name: &str) -> Option<(usize, &Nav)> {
        self.columns
            .iter()
            .enumerate()
            .find_map(|(i, c)| match &c.ty {
                ColumnType::Lookup { navs } => {
                    navs.iter().find(|n| n.name == nav_name).map(|n| (i, n))
                }
                _ => None,
            })
    }

    pub fn type_name(&self) -> String {
        format!("Microsoft.Dynamics.CRM.{}", self.logical_name)
    }

    pub fn has_full_name(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c.ty, ColumnType::System(System::FullName)))
    }
}

fn index(columns: &[Column]) -> SystemIdx {
    let position = |name: &str| columns.iter().position(|c| c.name == name).unwrap_or(0);
    SystemIdx {
        id: 0,
        created: position("createdon"),
        modified: position("modifiedon"),
        version: position("versionnumber"),
    }
}

/// A GUID derived from a name (FNV-1a), so a table's `MetadataId` is the same in every run.
pub(crate) fn stable_id(name: &str) -> Uuid {
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
    };
    let bits =
        u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64 | u128::from(fnv(0x8422_2325_cbf2_9ce4));
    uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid()
}

pub(crate) fn text(name: &str, max_len: usize) -> Column {
    Column::new(name, ColumnType::Text { max_len })
}

pub(crate) fn choice(name: &str, options: impl IntoIterator<Item = i64>) -> Column {
    Column::new(
        name,
        ColumnType::Choice {
            options: options.into_iter().collect(),
        },
    )
}

pub(crate) fn lookup(attribute: &str, navs: &[(&str, &str)]) -> Column {
    Column::new(
        &format!("_{attribute}_value"),
        ColumnType::Lookup {
            navs: navs
                .iter()
                .map(|(name, target)| Nav {
                    name: (*name).to_owned(),
                    target: (*target).to_owned(),
                })
                .collect(),
        },
    )
}

pub(crate) fn col(name: &str, ty: ColumnType) -> Column {
    Column::new(name, ty)
}

/// The tables every organisation starts with, with the columns the demo data fills.
pub fn builtin_tables() -> Vec<TableDef> {
    let currency = || {
        col(
            "_transactioncurrencyid_value",
            ColumnType::System(System::Reference),
        )
    };
    let mut account = TableDef::new(
        "account",
        "accounts",
        "accountid",
        "name",
        true,
        vec![
            text("name", 160),
            text("accountnumber", 20),
            text("telephone1", 50),
            text("emailaddress1", 100),
            text("websiteurl", 200),
            text("address1_line1", 250),
            text("address1_city", 80),
            text("address1_postalcode", 20),
            text("address1_country", 80),
            text("description", 2000),
            col("revenue", ColumnType::Money),
            col(
                "numberofemployees",
                ColumnType::Whole {
                    min: 0,
                    max: 1_000_000_000,
                },
            ),
            choice("industrycode", 1..=33),
            choice("accountcategorycode", [1, 2]),
            col("creditonhold", ColumnType::YesNo),
            lookup("primarycontactid", &[("primarycontactid", "contact")]),
            lookup("parentaccountid", &[("parentaccountid", "account")]),
            currency(),
        ],
    );
    account.object_type_code = 1;

    let mut contact = TableDef::new(
        "contact",
        "contacts",
        "contactid",
        "fullname",
        true,
        vec![
            col("fullname", ColumnType::System(System::FullName)),
            text("firstname", 50),
            text("lastname", 50),
            text("jobtitle", 100),
            text("emailaddress1", 100),
            text("telephone1", 50),
            text("mobilephone", 50),
            col("birthdate", ColumnType::DateOnly),
            choice("gendercode", [1, 2]),
            text("address1_city", 80),
            text("address1_country", 80),
            text("description", 2000),
            col("donotemail", ColumnType::YesNo),
            lookup(
                "parentcustomerid",
                &[
                    ("parentcustomerid_account", "account"),
                    ("parentcustomerid_contact", "contact"),
                ],
            ),
        ],
    );
    contact.object_type_code = 2;

    let mut lead = TableDef::new(
        "lead",
        "leads",
        "leadid",
        "fullname",
        true,
        vec![
            col("fullname", ColumnType::System(System::FullName)),
            text("subject", 300),
            text("firstname", 50),
            text("lastname", 50),
            text("companyname", 100),
            text("emailaddress1", 100),
            text("telephone1", 50),
            choice("leadsourcecode", 1..=10),
            choice("leadqualitycode", 1..=3),
            col("estimatedvalue", ColumnType::Money),
            col("estimatedclosedate", ColumnType::DateOnly),
            text("description", 2000),
            lookup("parentaccountid", &[("parentaccountid", "account")]),
            lookup("parentcontactid", &[("parentcontactid", "contact")]),
            choice("statecode", 0..=2),
            choice("statuscode", 1..=7),
            currency(),
        ],
    );
    lead.object_type_code = 4;

    let mut opportunity = TableDef::new(
        "opportunity",
        "opportunities",
        "opportunityid",
        "name",
        true,
        vec![
            text("name", 300),
            col("estimatedvalue", ColumnType::Money),
            col("actualvalue", ColumnType::Money),
            col("estimatedclosedate", ColumnType::DateOnly),
            col("closeprobability", ColumnType::Whole { min: 0, max: 100 }),
            choice("opportunityratingcode", 1..=3),
            text("stepname", 200),
            text("description", 2000),
            lookup(
                "customerid",
                &[
                    ("customerid_account", "account"),
                    ("customerid_contact", "contact"),
                ],
            ),
            lookup("parentaccountid", &[("parentaccountid", "account")]),
            lookup("parentcontactid", &[("parentcontactid", "contact")]),
            choice("statecode", 0..=2),
            choice("statuscode", 1..=5),
            currency(),
        ],
    );
    opportunity.object_type_code = 3;

    vec![account, contact, lead, opportunity]
}

/// Parses a column type as the control API spells it (`"string"`, `"money"`, `"lookup:account"`, ...).
pub fn parse_column_type(spec: &str, column: &str) -> Result<ColumnType, String> {
    let ty = match spec {
        "string" | "text" => ColumnType::Text { max_len: 4000 },
        "memo" => ColumnType::Text { max_len: 1_048_576 },
        "integer" | "int" => ColumnType::Whole {
            min: i64::from(i32::MIN),
            max: i64::from(i32::MAX),
        },
        "bigint" => ColumnType::BigInt,
        "money" => ColumnType::Money,
        "decimal" => ColumnType::Decimal,
        "double" | "float" => ColumnType::Float,
        "boolean" | "bool" => ColumnType::YesNo,
        "datetime" => ColumnType::DateTime,
        "date" => ColumnType::DateOnly,
        "choice" => ColumnType::Choice {
            options: Vec::new(),
        },
        other => match other.strip_prefix("lookup:") {
            Some(target) if !target.is_empty() => {
                let attribute = column
                    .strip_prefix('_')
                    .and_then(|c| c.strip_suffix("_value"))
                    .unwrap_or(column);
                return Ok(ColumnType::Lookup {
                    navs: vec![Nav {
                        name: attribute.to_owned(),
                        target: target.to_owned(),
                    }],
                });
            }
            _ => {
                return Err(format!(
                    "unknown column type '{spec}' for '{column}' (expected string, memo, integer, bigint, money, decimal, double, boolean, datetime, date, choice or lookup:<table>)"
                ));
            }
        },
    };
    Ok(ty)
}

/// Lookup columns are named `_x_value`; a custom column given as `x` with a lookup type is renamed.
pub fn lookup_column_name(column: &str) -> String {
    if column.starts_with('_') && column.ends_with("_value") {
        column.to_owned()
    } else {
        format!("_{column}_value")
    }
}
