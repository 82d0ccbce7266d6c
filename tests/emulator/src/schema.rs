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

/// One navigation property of a lookup: the name used in `@odata.bind` and `$expand`, the table it
/// points at, and the 1:N relationship it is the many side of.
#[derive(Debug, Clone)]
pub struct Nav {
    pub name: String,
    pub target: String,
    /// The relationship's `SchemaName`, which is also the name of the collection-valued navigation
    /// property on `target` that lists the rows pointing at a row (`contact_customer_accounts`).
    /// Empty until [`TableDef::new`] derives one (see [`relationship_name`]).
    pub relationship: String,
}

/// One value of a choice column, with the label Dataverse shows for it (in 1033, the only language
/// here).
#[derive(Debug, Clone)]
pub struct ChoiceOption {
    pub value: i64,
    pub label: String,
    /// For a status reason (`statuscode`), the `statecode` value it belongs to.
    pub state: Option<i64>,
}

/// `AttributeMetadata.RequiredLevel`: what the form designer demands. The emulator enforces none of
/// it (neither does the Web API, beyond `SystemRequired`); it is reported for clients that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredLevel {
    None,
    SystemRequired,
    ApplicationRequired,
    Recommended,
}

impl RequiredLevel {
    pub fn name(self) -> &'static str {
        match self {
            RequiredLevel::None => "None",
            RequiredLevel::SystemRequired => "SystemRequired",
            RequiredLevel::ApplicationRequired => "ApplicationRequired",
            RequiredLevel::Recommended => "Recommended",
        }
    }
}

#[derive(Debug, Clone)]
pub enum ColumnType {
    /// The primary key.
    Id,
    /// A single line of text, or with `memo` a multiple lines of text column (`MemoAttributeMetadata`).
    Text {
        max_len: usize,
        memo: bool,
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
    /// A date and time column read and written as `Edm.DateTimeOffset`: user local (stored as UTC)
    /// or time-zone independent (stored as the wall-clock time it was given), shown with or without
    /// its time (`format`).
    DateTime {
        behavior: DateBehavior,
        format: DateFormat,
    },
    /// A column with the `DateOnly` behaviour: `Edm.Date`, a day without a time or a time zone.
    DateOnly,
    /// A choice; with no options (a custom column declared without them), any `Edm.Int32` is taken.
    Choice {
        options: Vec<ChoiceOption>,
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

/// `DateTimeBehavior` of a column that has a time part (the third, `DateOnly`, is
/// [`ColumnType::DateOnly`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateBehavior {
    /// Stored as UTC; a value sent with an offset is converted, one without is taken as UTC.
    UserLocal,
    /// Stored as the wall-clock time it was written with, returned with a `Z` all the same.
    TimeZoneIndependent,
}

impl DateBehavior {
    pub fn name(self) -> &'static str {
        match self {
            DateBehavior::UserLocal => "UserLocal",
            DateBehavior::TimeZoneIndependent => "TimeZoneIndependent",
        }
    }
}

/// `DateTimeAttributeMetadata.Format`: how a value is shown, not how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    DateAndTime,
    DateOnly,
}

impl DateFormat {
    pub fn name(self) -> &'static str {
        match self {
            DateFormat::DateAndTime => "DateAndTime",
            DateFormat::DateOnly => "DateOnly",
        }
    }
}

/// The user-local date and time column most tables have (`createdon`'s kind).
pub const USER_LOCAL: ColumnType = ColumnType::DateTime {
    behavior: DateBehavior::UserLocal,
    format: DateFormat::DateAndTime,
};

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
    /// The attribute's `SchemaName`, where Dataverse's is known; otherwise derived from the logical
    /// name (see [`Column::schema_name`]).
    pub schema_name: Option<String>,
    /// The attribute's display name (in 1033), where Dataverse's is known; otherwise the schema name.
    pub display_name: Option<String>,
    pub required: RequiredLevel,
    /// A yes/no column's labels for false and true, where they are not "No" and "Yes".
    pub bool_labels: Option<(&'static str, &'static str)>,
    /// A column a customizer added to a built-in table (`IsCustomAttribute`).
    pub custom: bool,
}

impl Column {
    pub(crate) fn new(name: &str, ty: ColumnType) -> Self {
        Self {
            name: name.to_owned(),
            ty,
            schema_name: None,
            display_name: None,
            required: RequiredLevel::None,
            bool_labels: None,
            custom: false,
        }
    }

    /// A yes/no column's labels, false then true.
    pub(crate) fn labels(mut self, no: &'static str, yes: &'static str) -> Self {
        self.bool_labels = Some((no, yes));
        self
    }

    /// A column a customizer added to a built-in table.
    pub(crate) fn custom(mut self) -> Self {
        self.custom = true;
        self
    }

    /// The label of a yes/no value.
    pub fn bool_label(&self, value: bool) -> &'static str {
        let (no, yes) = self.bool_labels.unwrap_or(("No", "Yes"));
        if value { yes } else { no }
    }

    /// The real table's `SchemaName` and display name for this column.
    pub(crate) fn named(mut self, schema_name: &str, display_name: &str) -> Self {
        self.schema_name = Some(schema_name.to_owned());
        self.display_name = Some(display_name.to_owned());
        self
    }

    pub(crate) fn required(mut self, level: RequiredLevel) -> Self {
        self.required = level;
        self
    }

    /// `SchemaName`: the real one where known, else the logical name with each `_`-separated part
    /// capitalised (`new_budget` is `New_Budget`), as [`TableDef::new`] derives a table's.
    pub fn schema_name(&self) -> String {
        self.schema_name
            .clone()
            .unwrap_or_else(|| capitalised(self.attribute()))
    }

    pub fn display_name(&self) -> String {
        self.display_name
            .clone()
            .unwrap_or_else(|| self.schema_name())
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
            ColumnType::DateTime { .. }
            | ColumnType::System(System::CreatedOn | System::ModifiedOn) => Edm::DateTimeOffset,
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
        let schema_name = capitalised(logical_name);
        let mut columns = vec![
            Column::new(primary_id, ColumnType::Id)
                .named(&format!("{schema_name}Id"), &schema_name)
                .required(RequiredLevel::SystemRequired),
        ];
        columns.extend(own);
        for column in [
            labeled("statecode", &[(0, "Active"), (1, "Inactive")]).named("StateCode", "Status"),
            status("statuscode", &[(1, "Active", 0), (2, "Inactive", 1)])
                .named("StatusCode", "Status Reason"),
            Column::new("createdon", ColumnType::System(System::CreatedOn))
                .named("CreatedOn", "Created On"),
            Column::new("modifiedon", ColumnType::System(System::ModifiedOn))
                .named("ModifiedOn", "Modified On"),
            Column::new("versionnumber", ColumnType::System(System::VersionNumber))
                .named("VersionNumber", "Version Number"),
            Column::new("_ownerid_value", ColumnType::System(System::Reference))
                .named("OwnerId", "Owner")
                .required(RequiredLevel::SystemRequired),
            Column::new("_createdby_value", ColumnType::System(System::Reference))
                .named("CreatedBy", "Created By"),
            Column::new("_modifiedby_value", ColumnType::System(System::Reference))
                .named("ModifiedBy", "Modified By"),
            Column::new(
                "_owningbusinessunit_value",
                ColumnType::System(System::Reference),
            )
            .named("OwningBusinessUnit", "Owning Business Unit"),
        ] {
            if !columns.iter().any(|c| c.name == column.name) {
                columns.push(column);
            }
        }
        for column in &mut columns {
            // The primary name is what a form cannot be saved without, unless the platform computes
            // it (`fullname`), which Dataverse leaves at None.
            if column.name == primary_name
                && column.required == RequiredLevel::None
                && !matches!(column.ty, ColumnType::System(System::FullName))
            {
                column.required = RequiredLevel::ApplicationRequired;
            }
            let attribute = column.attribute().to_owned();
            if let ColumnType::Lookup { navs } = &mut column.ty {
                for nav in navs.iter_mut().filter(|n| n.relationship.is_empty()) {
                    nav.relationship = relationship_name(&nav.target, logical_name, &attribute);
                }
            }
        }
        let idx = index(&columns);
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
        self.columns.push(
            Column::new(
                "_organizationid_value",
                ColumnType::System(System::Reference),
            )
            .named("OrganizationId", "Organization"),
        );
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

/// `new_thing` as `New_Thing`: each `_`-separated part capitalised, how the emulator derives a schema
/// name it does not know.
fn capitalised(logical_name: &str) -> String {
    let mut out = String::with_capacity(logical_name.len());
    for (i, part) in logical_name.split('_').enumerate() {
        if i > 0 {
            out.push('_');
        }
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The relationship `SchemaName` for a lookup the emulator has no real name for (every custom
/// table's): `<referenced>_<referencing>_<lookup>`, the shape of the names the classic solution
/// designer gives (`new_account_new_project_new_accountid`). Including the lookup keeps two lookups
/// from one table to another apart.
pub fn relationship_name(referenced: &str, referencing: &str, attribute: &str) -> String {
    format!("{referenced}_{referencing}_{attribute}")
}

pub(crate) fn text(name: &str, max_len: usize) -> Column {
    Column::new(
        name,
        ColumnType::Text {
            max_len,
            memo: false,
        },
    )
}

/// A multiple lines of text column.
pub(crate) fn memo(name: &str, max_len: usize) -> Column {
    Column::new(
        name,
        ColumnType::Text {
            max_len,
            memo: true,
        },
    )
}

/// A choice whose labels are its values, for the columns whose real labels the emulator does not
/// carry.
pub(crate) fn choice(name: &str, options: impl IntoIterator<Item = i64>) -> Column {
    Column::new(
        name,
        ColumnType::Choice {
            options: options
                .into_iter()
                .map(|value| ChoiceOption {
                    value,
                    label: value.to_string(),
                    state: None,
                })
                .collect(),
        },
    )
}

/// A choice with Dataverse's labels.
pub(crate) fn labeled(name: &str, options: &[(i64, &str)]) -> Column {
    Column::new(
        name,
        ColumnType::Choice {
            options: options
                .iter()
                .map(|(value, label)| ChoiceOption {
                    value: *value,
                    label: (*label).to_owned(),
                    state: None,
                })
                .collect(),
        },
    )
}

/// A status reason column: each value's label and the `statecode` it belongs to.
pub(crate) fn status(name: &str, options: &[(i64, &str, i64)]) -> Column {
    Column::new(
        name,
        ColumnType::Choice {
            options: options
                .iter()
                .map(|(value, label, state)| ChoiceOption {
                    value: *value,
                    label: (*label).to_owned(),
                    state: Some(*state),
                })
                .collect(),
        },
    )
}

/// A lookup and its navigation properties: `(navigation property, target table, relationship)`.
pub(crate) fn lookup(attribute: &str, navs: &[(&str, &str, &str)]) -> Column {
    Column::new(
        &format!("_{attribute}_value"),
        ColumnType::Lookup {
            navs: navs
                .iter()
                .map(|(name, target, relationship)| Nav {
                    name: (*name).to_owned(),
                    target: (*target).to_owned(),
                    relationship: (*relationship).to_owned(),
                })
                .collect(),
        },
    )
}

pub(crate) fn col(name: &str, ty: ColumnType) -> Column {
    Column::new(name, ty)
}

/// `account.industrycode`'s options, as Dataverse ships them.
const INDUSTRIES: [&str; 33] = [
    "Accounting",
    "Agriculture and Non-petrol Natural Resource Extraction",
    "Broadcasting Printing and Publishing",
    "Brokers",
    "Building Supply Retail",
    "Business Services",
    "Consulting",
    "Consumer Services",
    "Design, Direction and Creative Management",
    "Distributors, Dispatchers and Processors",
    "Doctor's Offices and Clinics",
    "Durable Manufacturing",
    "Eating and Drinking Places",
    "Entertainment Retail",
    "Equipment Rental and Leasing",
    "Financial",
    "Food and Tobacco Processing",
    "Inbound Capital Intensive Processing",
    "Inbound Repair and Services",
    "Insurance",
    "Legal Services",
    "Non-Durable Merchandise Retail",
    "Outbound Consumer Service",
    "Petrochemical Extraction and Distribution",
    "Service Retail",
    "SIG Affiliations",
    "Social Services",
    "Special Outbound Trade Contractors",
    "Specialty Realty",
    "Transportation",
    "Utility Creation and Distribution",
    "Vehicle Retail",
    "Wholesale",
];

/// The tables every organisation starts with, with the columns the demo data fills. Schema names,
/// display names, required levels, choice labels and relationship names are the real tables'.
pub fn builtin_tables() -> Vec<TableDef> {
    use RequiredLevel::{ApplicationRequired, Recommended};
    let currency = || {
        col(
            "_transactioncurrencyid_value",
            ColumnType::System(System::Reference),
        )
        .named("TransactionCurrencyId", "Currency")
    };
    let hot_warm_cold = [(1, "Hot"), (2, "Warm"), (3, "Cold")];
    let industries: Vec<(i64, &str)> = (1..).zip(INDUSTRIES).collect();
    let mut account = TableDef::new(
        "account",
        "accounts",
        "accountid",
        "name",
        true,
        vec![
            text("name", 160).named("Name", "Account Name"),
            text("accountnumber", 20).named("AccountNumber", "Account Number"),
            text("telephone1", 50).named("Telephone1", "Main Phone"),
            text("emailaddress1", 100).named("EMailAddress1", "Email"),
            text("websiteurl", 200).named("WebSiteURL", "Website"),
            text("address1_line1", 250).named("Address1_Line1", "Address 1: Street 1"),
            text("address1_city", 80).named("Address1_City", "Address 1: City"),
            text("address1_postalcode", 20)
                .named("Address1_PostalCode", "Address 1: ZIP/Postal Code"),
            text("address1_country", 80).named("Address1_Country", "Address 1: Country/Region"),
            memo("description", 2000).named("Description", "Description"),
            col("revenue", ColumnType::Money).named("Revenue", "Annual Revenue"),
            col(
                "numberofemployees",
                ColumnType::Whole {
                    min: 0,
                    max: 1_000_000_000,
                },
            )
            .named("NumberOfEmployees", "Number of Employees"),
            labeled("industrycode", &industries).named("IndustryCode", "Industry"),
            labeled(
                "accountcategorycode",
                &[(1, "Preferred Customer"), (2, "Standard")],
            )
            .named("AccountCategoryCode", "Category"),
            col("creditonhold", ColumnType::YesNo).named("CreditOnHold", "Credit Hold"),
            // Two columns a customizer added, so the demo organisation has each date and time
            // behaviour (`birthdate` is the built-in date-only one): a date shown without its time
            // but stored as a user-local instant, and a time-zone independent date and time.
            col(
                "new_renewaldate",
                ColumnType::DateTime {
                    behavior: DateBehavior::UserLocal,
                    format: DateFormat::DateOnly,
                },
            )
            .named("new_RenewalDate", "Renewal Date")
            .custom(),
            col(
                "new_checkintime",
                ColumnType::DateTime {
                    behavior: DateBehavior::TimeZoneIndependent,
                    format: DateFormat::DateAndTime,
                },
            )
            .named("new_CheckInTime", "Check-in Time")
            .custom(),
            lookup(
                "primarycontactid",
                &[("primarycontactid", "contact", "account_primary_contact")],
            )
            .named("PrimaryContactId", "Primary Contact"),
            lookup(
                "parentaccountid",
                &[("parentaccountid", "account", "account_parent_account")],
            )
            .named("ParentAccountId", "Parent Account"),
            // Set by `QualifyLead` on the account it makes (`crate::api::operations`).
            lookup(
                "originatingleadid",
                &[("originatingleadid", "lead", "account_originating_lead")],
            )
            .named("OriginatingLeadId", "Originating Lead"),
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
            col("fullname", ColumnType::System(System::FullName)).named("FullName", "Full Name"),
            text("firstname", 50)
                .named("FirstName", "First Name")
                .required(Recommended),
            text("lastname", 50)
                .named("LastName", "Last Name")
                .required(ApplicationRequired),
            text("jobtitle", 100).named("JobTitle", "Job Title"),
            text("emailaddress1", 100).named("EMailAddress1", "Email"),
            text("telephone1", 50).named("Telephone1", "Business Phone"),
            text("mobilephone", 50).named("MobilePhone", "Mobile Phone"),
            col("birthdate", ColumnType::DateOnly).named("BirthDate", "Birthday"),
            labeled("gendercode", &[(1, "Male"), (2, "Female")]).named("GenderCode", "Gender"),
            text("address1_city", 80).named("Address1_City", "Address 1: City"),
            text("address1_country", 80).named("Address1_Country", "Address 1: Country/Region"),
            memo("description", 2000).named("Description", "Description"),
            col("donotemail", ColumnType::YesNo)
                .named("DoNotEMail", "Do not allow Emails")
                .labels("Allow", "Do Not Allow"),
            lookup(
                "parentcustomerid",
                &[
                    (
                        "parentcustomerid_account",
                        "account",
                        "contact_customer_accounts",
                    ),
                    (
                        "parentcustomerid_contact",
                        "contact",
                        "contact_customer_contacts",
                    ),
                ],
            )
            .named("ParentCustomerId", "Company Name"),
            lookup(
                "originatingleadid",
                &[("originatingleadid", "lead", "contact_originating_lead")],
            )
            .named("OriginatingLeadId", "Originating Lead"),
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
            col("fullname", ColumnType::System(System::FullName)).named("FullName", "Name"),
            text("subject", 300)
                .named("Subject", "Topic")
                .required(ApplicationRequired),
            text("firstname", 50)
                .named("FirstName", "First Name")
                .required(Recommended),
            text("lastname", 50)
                .named("LastName", "Last Name")
                .required(ApplicationRequired),
            text("companyname", 100).named("CompanyName", "Company Name"),
            text("emailaddress1", 100).named("EMailAddress1", "Email"),
            text("telephone1", 50).named("Telephone1", "Business Phone"),
            labeled(
                "leadsourcecode",
                &[
                    (1, "Advertisement"),
                    (2, "Employee Referral"),
                    (3, "External Referral"),
                    (4, "Partner"),
                    (5, "Public Relations"),
                    (6, "Seminar"),
                    (7, "Trade Show"),
                    (8, "Web"),
                    (9, "Word of Mouth"),
                    (10, "Other"),
                ],
            )
            .named("LeadSourceCode", "Lead Source"),
            labeled("leadqualitycode", &hot_warm_cold).named("LeadQualityCode", "Rating"),
            col("estimatedvalue", ColumnType::Money).named("EstimatedValue", "Est. Value"),
            col("estimatedclosedate", ColumnType::DateOnly)
                .named("EstimatedCloseDate", "Est. Close Date"),
            memo("description", 2000).named("Description", "Description"),
            lookup(
                "parentaccountid",
                &[("parentaccountid", "account", "lead_parent_account")],
            )
            .named("ParentAccountId", "Parent Account for lead"),
            lookup(
                "parentcontactid",
                &[("parentcontactid", "contact", "lead_parent_contact")],
            )
            .named("ParentContactId", "Parent Contact for lead"),
            // The opportunity `QualifyLead` made from the lead.
            lookup(
                "qualifyingopportunityid",
                &[(
                    "qualifyingopportunityid",
                    "opportunity",
                    "lead_qualifying_opportunity",
                )],
            )
            .named("QualifyingOpportunityId", "Qualifying Opportunity"),
            labeled(
                "statecode",
                &[(0, "Open"), (1, "Qualified"), (2, "Disqualified")],
            )
            .named("StateCode", "Status"),
            status(
                "statuscode",
                &[
                    (1, "New", 0),
                    (2, "Contacted", 0),
                    (3, "Qualified", 1),
                    (4, "Lost", 2),
                    (5, "Cannot Contact", 2),
                    (6, "No Longer Interested", 2),
                    (7, "Canceled", 2),
                ],
            )
            .named("StatusCode", "Status Reason"),
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
            text("name", 300).named("Name", "Topic"),
            col("estimatedvalue", ColumnType::Money).named("EstimatedValue", "Est. Revenue"),
            col("actualvalue", ColumnType::Money).named("ActualValue", "Actual Revenue"),
            col("estimatedclosedate", ColumnType::DateOnly)
                .named("EstimatedCloseDate", "Est. Close Date"),
            col("closeprobability", ColumnType::Whole { min: 0, max: 100 })
                .named("CloseProbability", "Probability"),
            labeled("opportunityratingcode", &hot_warm_cold)
                .named("OpportunityRatingCode", "Rating"),
            text("stepname", 200).named("StepName", "Pipeline Phase"),
            memo("description", 2000).named("Description", "Description"),
            lookup(
                "customerid",
                &[
                    (
                        "customerid_account",
                        "account",
                        "opportunity_customer_accounts",
                    ),
                    (
                        "customerid_contact",
                        "contact",
                        "opportunity_customer_contacts",
                    ),
                ],
            )
            .named("CustomerId", "Potential Customer"),
            lookup(
                "parentaccountid",
                &[("parentaccountid", "account", "opportunity_parent_account")],
            )
            .named("ParentAccountId", "Account"),
            lookup(
                "parentcontactid",
                &[("parentcontactid", "contact", "opportunity_parent_contact")],
            )
            .named("ParentContactId", "Contact"),
            lookup(
                "originatingleadid",
                &[("originatingleadid", "lead", "opportunity_originating_lead")],
            )
            .named("OriginatingLeadId", "Originating Lead"),
            labeled("statecode", &[(0, "Open"), (1, "Won"), (2, "Lost")])
                .named("StateCode", "Status"),
            status(
                "statuscode",
                &[
                    (1, "In Progress", 0),
                    (2, "On Hold", 0),
                    (3, "Won", 1),
                    (4, "Canceled", 2),
                    (5, "Out-Sold", 2),
                ],
            )
            .named("StatusCode", "Status Reason"),
            currency(),
        ],
    );
    opportunity.object_type_code = 3;

    vec![account, contact, lead, opportunity]
}

/// Parses a column type as the control API spells it (`"string"`, `"money"`, `"lookup:account"`,
/// `"choice:1=Red,2=Blue"`, ...).
pub fn parse_column_type(spec: &str, column: &str) -> Result<ColumnType, String> {
    if let Some(list) = spec.strip_prefix("choice:") {
        return parse_choices(list, column).map(|options| ColumnType::Choice { options });
    }
    let ty = match spec {
        "string" | "text" => ColumnType::Text {
            max_len: 4000,
            memo: false,
        },
        "memo" => ColumnType::Text {
            max_len: 1_048_576,
            memo: true,
        },
        "integer" | "int" => ColumnType::Whole {
            min: i64::from(i32::MIN),
            max: i64::from(i32::MAX),
        },
        "bigint" => ColumnType::BigInt,
        "money" => ColumnType::Money,
        "decimal" => ColumnType::Decimal,
        "double" | "float" => ColumnType::Float,
        "boolean" | "bool" => ColumnType::YesNo,
        "datetime" => USER_LOCAL,
        "datetime:dateonly" => ColumnType::DateTime {
            behavior: DateBehavior::UserLocal,
            format: DateFormat::DateOnly,
        },
        "datetime:independent" => ColumnType::DateTime {
            behavior: DateBehavior::TimeZoneIndependent,
            format: DateFormat::DateAndTime,
        },
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
                // The relationship is named once the table's name is known (`TableDef::new`).
                return Ok(ColumnType::Lookup {
                    navs: vec![Nav {
                        name: attribute.to_owned(),
                        target: target.to_owned(),
                        relationship: String::new(),
                    }],
                });
            }
            _ => {
                return Err(format!(
                    "unknown column type '{spec}' for '{column}' (expected string, memo, integer, bigint, money, decimal, double, boolean, datetime, datetime:dateonly, datetime:independent, date, choice, choice:<value>=<label>,... or lookup:<table>)"
                ));
            }
        },
    };
    Ok(ty)
}

/// `1=Red,2=Blue` (or `1,2,3`, each labelled with its number): a choice column's options.
fn parse_choices(list: &str, column: &str) -> Result<Vec<ChoiceOption>, String> {
    let mut options: Vec<ChoiceOption> = Vec::new();
    for item in list.split(',') {
        let (value, label) = match item.split_once('=') {
            Some((value, label)) => (value.trim(), label.trim()),
            None => (item.trim(), item.trim()),
        };
        let value = value
            .parse::<i32>()
            .map_err(|_| format!("choice column '{column}': '{value}' is not a whole number"))?;
        if label.is_empty() {
            return Err(format!(
                "choice column '{column}': the option {value} has no label"
            ));
        }
        if options.iter().any(|o| o.value == i64::from(value)) {
            return Err(format!(
                "choice column '{column}': the option {value} is listed twice"
            ));
        }
        options.push(ChoiceOption {
            value: i64::from(value),
            label: label.to_owned(),
            state: None,
        });
    }
    Ok(options)
}

/// Lookup columns are named `_x_value`; a custom column given as `x` with a lookup type is renamed.
pub fn lookup_column_name(column: &str) -> String {
    if column.starts_with('_') && column.ends_with("_value") {
        column.to_owned()
    } else {
        format!("_{column}_value")
    }
}
