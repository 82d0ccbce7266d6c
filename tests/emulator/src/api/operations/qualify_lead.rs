//! `POST leads(<id or key>)/Microsoft.Dynamics.CRM.QualifyLead`: qualifies a lead and makes the
//! account, contact and opportunity it asks for, linked to the lead (Learn, "`QualifyLead` Action" and
//! `QualifyLeadRequest`).
//!
//! ```json
//! {"CreateAccount": true, "CreateContact": true, "CreateOpportunity": true, "Status": 3,
//!  "OpportunityCustomerId": {"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid": "<id>"},
//!  "OpportunityCurrencyId": {"transactioncurrencyid": "<id>"}}
//! ```
//!
//! The answer is the rows it made, `Collection(Microsoft.Dynamics.CRM.crmbaseentity)`: each with its
//! `@odata.type` and its id, account first, then contact, then opportunity.
//!
//! What the rows get, from the lead's default column mappings as far as these tables have the columns:
//!
//! | Row | Columns |
//! |---|---|
//! | account | `name` ← `companyname`, `emailaddress1`, `telephone1`; `originatingleadid` the lead; `primarycontactid` the new contact |
//! | contact | `firstname`, `lastname`, `emailaddress1`, `telephone1`; `parentcustomerid` the new account (else the lead's parent account); `originatingleadid` the lead |
//! | opportunity | `name` ← `subject`, `estimatedvalue`, `estimatedclosedate`, `description`, `opportunityratingcode` ← `leadqualitycode`; `customerid` `OpportunityCustomerId`, else the new account, the new contact, the lead's parent account or contact; `parentaccountid`/`parentcontactid` the new (else the lead's) account and contact; `originatingleadid` the lead; the currency `OpportunityCurrencyId` names |
//! | lead | `statecode` 1 (Qualified), `statuscode` `Status` (-1: the state's default, 3); `qualifyingopportunityid` the opportunity; `parentaccountid`/`parentcontactid` the new account and contact where the lead had none |
//!
//! Every write goes through the Web API's own create and update ([`rows::check_create`],
//! [`rows::apply`]), so change tracking lists them and webhook steps hear of them. All of them are
//! checked before any is applied: a refusal (an alternate key the new row would break) leaves no row
//! made and the lead open, as the service's transaction does.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{NAMESPACE, Param, ParamType, Params, param};
use crate::api::Ctx;
use crate::api::rows::{self, Checked, Target};
use crate::reply::{Fail, Reply};
use crate::schema::ColumnType;
use crate::store::{Changes, Store};

/// The action's parameters after the lead it is bound to, as its CSDL declares them.
pub const PARAMS: &[Param] = &[
    param("CreateAccount", ParamType::Boolean, false),
    param("CreateContact", ParamType::Boolean, false),
    param("CreateOpportunity", ParamType::Boolean, false),
    param(
        "OpportunityCurrencyId",
        ParamType::Entity("transactioncurrency"),
        true,
    ),
    param(
        "OpportunityCustomerId",
        ParamType::Entity("crmbaseentity"),
        true,
    ),
    param("SourceCampaignId", ParamType::Entity("campaign"), true),
    param("Status", ParamType::Int32, false),
    param(
        "ProcessInstanceId",
        ParamType::Entity("crmbaseentity"),
        true,
    ),
    // Dataverse's duplicate detection; the emulator has no duplicate detection rules, so it is moot.
    param("SuppressDuplicateDetection", ParamType::Boolean, true),
];

/// The lead's `statecode` once qualified.
const QUALIFIED: i64 = 1;

/// `0x80040203` `InvalidArgument`, the code the platform gives an argument it refuses.
fn invalid(message: impl Into<String>) -> Fail {
    Fail::new(400, "0x80040203", message)
}

/// What Learn documents for an entity parameter whose type the service cannot tell ("Use Web API
/// actions", Specify table type parameter), and what is left when the key is missing too.
fn no_key() -> Fail {
    invalid("EdmEntityObject passed should have the key property value set.")
}

/// The row an entity parameter names: `{"@odata.type": "Microsoft.Dynamics.CRM.account", "accountid":
/// "<id>"}`, where the type may be left out when the parameter's own type is a table.
fn entity_reference(
    store: &Store,
    value: &Map<String, Value>,
    declared: &str,
) -> Result<(usize, Uuid), Fail> {
    let named = value
        .get("@odata.type")
        .and_then(Value::as_str)
        .map(|t| t.trim_start_matches('#'));
    let logical = match named {
        Some(full) => full.strip_prefix(NAMESPACE).ok_or_else(|| {
            super::payload(format!(
                "A type named '{full}' could not be resolved by the model. When a model is available, each type name must resolve to a valid type."
            ))
        })?,
        None if declared == "crmbaseentity" => return Err(no_key()),
        None => declared,
    };
    let t = store.by_logical(logical).ok_or_else(|| {
        super::payload(format!(
            "A type named '{NAMESPACE}{logical}' could not be resolved by the model. When a model is available, each type name must resolve to a valid type."
        ))
    })?;
    let def = &store.tables[t].def;
    let id = value
        .get(&def.primary_id)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(no_key)?;
    if !store.tables[t].rows.contains_key(&id) {
        return Err(Fail::row_not_found(logical, &id));
    }
    Ok((t, id))
}

/// `OpportunityCurrencyId`: the organisation's one currency, the only one there is here.
fn currency(store: &Store, value: &Map<String, Value>) -> Result<Uuid, Fail> {
    if let Some(named) = value.get("@odata.type").and_then(Value::as_str)
        && named.trim_start_matches('#') != format!("{NAMESPACE}transactioncurrency")
    {
        return Err(invalid(format!(
            "OpportunityCurrencyId must be a transactioncurrency, not '{named}'."
        )));
    }
    let id = value
        .get("transactioncurrencyid")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(no_key)?;
    if id != store.org.currency {
        return Err(Fail::row_not_found("transactioncurrency", &id));
    }
    Ok(id)
}

/// A row to make or change, built by column name; names the table does not have are left out.
struct Planned {
    t: usize,
    id: Uuid,
    values: Vec<(usize, Value)>,
}

impl Planned {
    fn new(t: usize, id: Uuid) -> Self {
        Self {
            t,
            id,
            values: Vec::new(),
        }
    }

    fn set(&mut self, store: &Store, column: &str, value: Value) {
        if value.is_null() {
            return;
        }
        if let Some(c) = store.tables[self.t].def.column(column) {
            self.values.push((c, value));
        }
    }

    fn set_id(&mut self, store: &Store, column: &str, id: Option<Uuid>) {
        if let Some(id) = id {
            self.set(store, column, Value::String(id.to_string()));
        }
    }

    fn check_create(self, store: &Store) -> Result<Checked, Fail> {
        let mut changes = Changes {
            id: None,
            values: self.values,
        };
        rows::check_create(store, self.t, self.id, &mut changes)
    }
}

/// A table the action writes to, which every organisation has.
fn table(store: &Store, logical: &str) -> Result<usize, Fail> {
    store
        .by_logical(logical)
        .ok_or_else(|| Fail::not_implemented(format!("QualifyLead without the table '{logical}'")))
}

pub fn run(
    store: &mut Store,
    ctx: &Ctx,
    lead_t: usize,
    target: &Target,
    params: &Params,
) -> Result<Reply, Fail> {
    let lead_id = target.existing(store, lead_t)?;
    let lead_def = &store.tables[lead_t].def;
    let Some(lead) = store.tables[lead_t].rows.get(&lead_id) else {
        return Err(Fail::row_not_found(&lead_def.logical_name, &lead_id));
    };
    let cell = |name: &str| -> Value {
        lead_def
            .column(name)
            .map_or(Value::Null, |c| lead.cells[c].clone())
    };
    let lookup =
        |name: &str| -> Option<Uuid> { cell(name).as_str().and_then(|s| Uuid::parse_str(s).ok()) };
    // `LeadAlreadyInClosedState`, for a lead qualified or disqualified before.
    if cell("statecode").as_i64().is_some_and(|s| s != 0) {
        return Err(Fail::new(400, "0x80040519", "The lead is already closed."));
    }
    let status = status(store, lead_t, lead_id, params.get("Status").as_i64())?;
    for unsupported in ["SourceCampaignId", "ProcessInstanceId"] {
        if !params.get(unsupported).is_null() {
            return Err(Fail::not_implemented(format!(
                "QualifyLead's {unsupported} (the emulator has no campaigns or business process flows)"
            )));
        }
    }
    let currency = match params.get("OpportunityCurrencyId").as_object() {
        Some(value) => Some(currency(store, value)?),
        None => None,
    };
    let customer = match params.get("OpportunityCustomerId").as_object() {
        Some(value) => {
            let (t, id) = entity_reference(store, value, "crmbaseentity")?;
            let logical = &store.tables[t].def.logical_name;
            if !matches!(logical.as_str(), "account" | "contact") {
                // The emulator's wording: the customer of an opportunity is an account or a contact.
                return Err(invalid(format!(
                    "OpportunityCustomerId must be an account or a contact, not a {logical}."
                )));
            }
            Some(id)
        }
        None => None,
    };

    let account_t = table(store, "account")?;
    let contact_t = table(store, "contact")?;
    let opportunity_t = table(store, "opportunity")?;
    let account_id = params.bool("CreateAccount").then(Uuid::new_v4);
    let contact_id = params.bool("CreateContact").then(Uuid::new_v4);
    let opportunity_id = params.bool("CreateOpportunity").then(Uuid::new_v4);
    let parent_account = lookup("_parentaccountid_value");
    let parent_contact = lookup("_parentcontactid_value");

    let mut planned = Vec::new();
    if let Some(id) = account_id {
        let mut account = Planned::new(account_t, id);
        account.set(store, "name", cell("companyname"));
        account.set(store, "emailaddress1", cell("emailaddress1"));
        account.set(store, "telephone1", cell("telephone1"));
        account.set_id(store, "_originatingleadid_value", Some(lead_id));
        account.set_id(store, "_primarycontactid_value", contact_id);
        planned.push(account);
    }
    if let Some(id) = contact_id {
        let mut contact = Planned::new(contact_t, id);
        for column in ["firstname", "lastname", "emailaddress1", "telephone1"] {
            contact.set(store, column, cell(column));
        }
        contact.set_id(
            store,
            "_parentcustomerid_value",
            account_id.or(parent_account),
        );
        contact.set_id(store, "_originatingleadid_value", Some(lead_id));
        planned.push(contact);
    }
    if let Some(id) = opportunity_id {
        let mut opportunity = Planned::new(opportunity_t, id);
        opportunity.set(store, "name", cell("subject"));
        for column in ["estimatedvalue", "estimatedclosedate", "description"] {
            opportunity.set(store, column, cell(column));
        }
        opportunity.set(store, "opportunityratingcode", cell("leadqualitycode"));
        let customer = customer
            .or(account_id)
            .or(contact_id)
            .or(parent_account)
            .or(parent_contact);
        opportunity.set_id(store, "_customerid_value", customer);
        opportunity.set_id(
            store,
            "_parentaccountid_value",
            account_id.or(parent_account),
        );
        opportunity.set_id(
            store,
            "_parentcontactid_value",
            contact_id.or(parent_contact),
        );
        opportunity.set_id(store, "_originatingleadid_value", Some(lead_id));
        opportunity.set_id(store, "_transactioncurrencyid_value", currency);
        planned.push(opportunity);
    }
    let mut qualified = Planned::new(lead_t, lead_id);
    qualified.set(store, "statecode", json!(QUALIFIED));
    qualified.set(store, "statuscode", json!(status));
    qualified.set_id(store, "_qualifyingopportunityid_value", opportunity_id);
    if parent_account.is_none() {
        qualified.set_id(store, "_parentaccountid_value", account_id);
    }
    if parent_contact.is_none() {
        qualified.set_id(store, "_parentcontactid_value", contact_id);
    }

    // Each write is to a table of its own, so checking all of them against the rows as they are now
    // is what checking each after the one before would find: none can break a key another sets.
    let made: Vec<(usize, Uuid)> = planned.iter().map(|p| (p.t, p.id)).collect();
    let mut checked = planned
        .into_iter()
        .map(|p| p.check_create(store))
        .collect::<Result<Vec<_>, Fail>>()?;
    let mut changes = Changes {
        id: None,
        values: qualified.values,
    };
    checked.push(rows::check_update(store, lead_t, lead_id, &mut changes)?);
    for write in checked {
        rows::apply(store, write);
    }

    let value: Vec<Value> = made
        .into_iter()
        .map(|(t, id)| {
            let def = &store.tables[t].def;
            let mut row = Map::new();
            row.insert(
                "@odata.type".to_owned(),
                json!(format!("#{NAMESPACE}{}", def.logical_name)),
            );
            row.insert(def.primary_id.clone(), json!(id.to_string()));
            Value::Object(row)
        })
        .collect();
    Ok(Reply::json(
        200,
        &json!({
            "@odata.context": format!("{}$metadata#Collection({NAMESPACE}crmbaseentity)", ctx.base),
            "value": value,
        }),
    ))
}

/// The lead's new `statuscode`: `Status`, which must be a status reason of the Qualified state; -1
/// stands for the state's default, as `QualifyLeadRequest.Status` documents.
fn status(store: &Store, lead_t: usize, lead_id: Uuid, asked: Option<i64>) -> Result<i64, Fail> {
    let def = &store.tables[lead_t].def;
    let options = def
        .column("statuscode")
        .and_then(|c| match &def.columns[c].ty {
            ColumnType::Choice { options } => Some(options.as_slice()),
            _ => None,
        })
        .unwrap_or_default();
    let qualified = |value: i64| {
        options
            .iter()
            .any(|o| o.value == value && o.state == Some(QUALIFIED))
    };
    let asked = asked.unwrap_or_default();
    let status = if asked == -1 {
        options
            .iter()
            .find(|o| o.state == Some(QUALIFIED))
            .map_or(asked, |o| o.value)
    } else {
        asked
    };
    if !qualified(status) {
        // `0x80048408`, in the words Dataverse uses for a status reason of another state.
        return Err(Fail::new(
            400,
            "0x80048408",
            format!(
                "{asked} is not a valid status code for state code LeadState.Qualified on lead with Id {lead_id}."
            ),
        ));
    }
    Ok(status)
}
