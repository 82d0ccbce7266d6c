//! The optional request headers that bypass custom logic (Learn, "Bypass custom Dataverse logic",
//! "Bypass Power Automate flows" and "Use optional parameters"):
//!
//! | Header | Values | Bypasses | Privilege |
//! |---|---|---|---|
//! | `MSCRM.BypassCustomPluginExecution` | `true`, `false` | synchronous custom logic | `prvBypassCustomPlugins` |
//! | `MSCRM.BypassBusinessLogicExecution` | `CustomSync`, `CustomAsync`, `CustomSync,CustomAsync` | synchronous, asynchronous custom logic or both (flows excluded) | `prvBypassCustomBusinessLogic` |
//! | `MSCRM.BypassBusinessLogicExecutionStepIds` | plug-in step ids, comma-separated (at most 3 by default) | those steps only | `prvBypassCustomBusinessLogic` |
//! | `MSCRM.SuppressCallbackRegistrationExpanderJob` | `true`, `false` | Power Automate flow triggers (callback registrations) | none |
//!
//! The emulator has only asynchronous webhook steps (synchronous ones answer 501), so
//! `BypassCustomPluginExecution` and `CustomSync` skip nothing that it runs; they are still
//! validated and checked against the caller's privileges. They apply to the request that carries
//! them, and to each `$batch` part that carries them (not to a batch from its outer headers).

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::Request;
use crate::reply::Fail;
use crate::store::Store;
use crate::users::Privilege;

pub const PLUGIN_EXECUTION: &str = "mscrm.bypasscustompluginexecution";
pub const BUSINESS_LOGIC: &str = "mscrm.bypassbusinesslogicexecution";
pub const STEP_IDS: &str = "mscrm.bypassbusinesslogicexecutionstepids";
pub const SUPPRESS_FLOWS: &str = "mscrm.suppresscallbackregistrationexpanderjob";

/// How many step ids `BypassBusinessLogicExecutionStepIds` may name: the documented default of the
/// organisation setting `BypassBusinessLogicExecutionStepIdsLimit`.
pub const MAX_STEP_IDS: usize = 3;

/// A value `BypassBusinessLogicExecution` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Logic {
    /// Synchronous custom logic.
    CustomSync,
    /// Asynchronous custom logic (flows excluded).
    CustomAsync,
}

/// What a request asked to bypass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bypass {
    /// `BypassCustomPluginExecution: true`: synchronous custom logic.
    pub plugin_execution: bool,
    /// What `BypassBusinessLogicExecution` lists.
    pub logic: BTreeSet<Logic>,
    /// `BypassBusinessLogicExecutionStepIds`: these steps, whatever their mode.
    pub step_ids: Vec<Uuid>,
    /// `SuppressCallbackRegistrationExpanderJob: true`: no flow jobs.
    pub suppress_flows: bool,
}

impl Bypass {
    /// The names of what applies, for the request log.
    pub fn names(&self) -> BTreeSet<&'static str> {
        let mut names = BTreeSet::new();
        if self.plugin_execution {
            names.insert("BypassCustomPluginExecution");
        }
        for logic in &self.logic {
            names.insert(match logic {
                Logic::CustomSync => "CustomSync",
                Logic::CustomAsync => "CustomAsync",
            });
        }
        if !self.step_ids.is_empty() {
            names.insert("BypassBusinessLogicExecutionStepIds");
        }
        if self.suppress_flows {
            names.insert("SuppressCallbackRegistrationExpanderJob");
        }
        names
    }

    /// Whether a step of this mode (`asynchronous` or not) and id is skipped.
    pub fn skips_step(&self, id: Uuid, asynchronous: bool) -> bool {
        let by_mode = if asynchronous {
            self.logic.contains(&Logic::CustomAsync)
        } else {
            self.logic.contains(&Logic::CustomSync) || self.plugin_execution
        };
        by_mode || self.step_ids.contains(&id)
    }
}

/// `0x80040203` `InvalidArgument`, for a header value the service cannot read. Microsoft documents
/// the values, not the refusal; the code is the platform's for an argument it refuses.
fn invalid(header: &str, value: &str, expected: &str) -> Fail {
    Fail::new(
        400,
        "0x80040203",
        format!("Invalid value '{value}' for the request header '{header}'. Expected {expected}."),
    )
}

fn boolean(header: &str, value: &str) -> Result<bool, Fail> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(header, value, "true or false")),
    }
}

/// Reads one header, refusing it when it is sent twice (the service cannot tell which it means).
fn single<'r>(req: &'r Request, name: &str, display: &str) -> Result<Option<&'r str>, Fail> {
    let all = req.headers_all(name);
    match all.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(invalid(display, &all.join(", "), "a single value")),
    }
}

/// Reads the bypass headers of a request.
pub fn read(req: &Request) -> Result<Bypass, Fail> {
    let mut bypass = Bypass::default();
    if let Some(value) = single(req, PLUGIN_EXECUTION, "MSCRM.BypassCustomPluginExecution")? {
        bypass.plugin_execution = boolean("MSCRM.BypassCustomPluginExecution", value)?;
    }
    if let Some(value) = single(req, BUSINESS_LOGIC, "MSCRM.BypassBusinessLogicExecution")? {
        let expected = "CustomSync, CustomAsync or CustomSync,CustomAsync";
        for part in value.split(',') {
            let logic = match part.trim() {
                "CustomSync" => Logic::CustomSync,
                "CustomAsync" => Logic::CustomAsync,
                _ => {
                    return Err(invalid(
                        "MSCRM.BypassBusinessLogicExecution",
                        value,
                        expected,
                    ));
                }
            };
            bypass.logic.insert(logic);
        }
    }
    if let Some(value) = single(req, STEP_IDS, "MSCRM.BypassBusinessLogicExecutionStepIds")? {
        let header = "MSCRM.BypassBusinessLogicExecutionStepIds";
        // Learn's example quotes the whole list.
        let list = value.trim();
        let list = list
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or(list);
        for part in list.split(',') {
            let id = Uuid::parse_str(part.trim())
                .map_err(|_| invalid(header, value, "plug-in step ids separated by commas"))?;
            if !bypass.step_ids.contains(&id) {
                bypass.step_ids.push(id);
            }
        }
        if bypass.step_ids.len() > MAX_STEP_IDS {
            return Err(Fail::new(
                400,
                "0x80040203",
                format!(
                    "The request header '{header}' names {} steps; at most {MAX_STEP_IDS} may be bypassed in one request (the organisation setting BypassBusinessLogicExecutionStepIdsLimit).",
                    bypass.step_ids.len()
                ),
            ));
        }
    }
    if let Some(value) = single(
        req,
        SUPPRESS_FLOWS,
        "MSCRM.SuppressCallbackRegistrationExpanderJob",
    )? {
        bypass.suppress_flows = boolean("MSCRM.SuppressCallbackRegistrationExpanderJob", value)?;
    }
    Ok(bypass)
}

/// `0x80040220` `PrivilegeDenied`, 403, in the shape Learn quotes for it ("Troubleshoot Dataverse
/// client errors": "Principal user [...], is missing ____ privilege [...] on OTC=____ for entity
/// '____'").
fn denied(store: &Store, privilege: Privilege, table: Option<usize>) -> Fail {
    let (otc, entity) = table.map_or((0, String::new()), |t| {
        let def = &store.tables[t].def;
        (def.object_type_code, def.logical_name.clone())
    });
    Fail::new(
        403,
        "0x80040220",
        format!(
            "Principal user (Id={}, type=8, roleCount=1, privilegeCount=0, accessMode=4), is missing {} privilege (Id={}) on OTC={otc} for entity '{entity}'. context.Caller={}",
            store.caller.user,
            privilege.name(),
            privilege.id(),
            store.caller.user
        ),
    )
}

/// Reads the bypass headers of a write (anything but `GET`) and checks the caller's privileges
/// for them; the request then runs under them (`store.caller.bypass`). `table` is the table the
/// request addresses, named in a refusal.
pub fn apply(store: &mut Store, req: &Request, table: Option<usize>) -> Result<(), Fail> {
    if req.method == "GET" {
        store.caller.bypass = Bypass::default();
        return Ok(());
    }
    let bypass = read(req)?;
    if let Some(client_id) = store.caller.client_id.as_deref() {
        let needs = [
            (bypass.plugin_execution, Privilege::BypassCustomPlugins),
            (
                !bypass.logic.is_empty() || !bypass.step_ids.is_empty(),
                Privilege::BypassCustomBusinessLogic,
            ),
        ];
        for (asked, privilege) in needs {
            if asked && !store.users.holds(client_id, privilege) {
                return Err(denied(store, privilege, table));
            }
        }
    }
    store.caller.applied.extend(bypass.names());
    store.caller.bypass = bypass;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Bypass, Logic, read};
    use crate::Request;
    use hyper::HeaderMap;
    use uuid::Uuid;

    fn request(headers: &[(&'static str, &str)]) -> Request {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                hyper::header::HeaderValue::from_str(value),
            ) {
                map.append(name, value);
            }
        }
        Request {
            method: "POST".to_owned(),
            path: "/api/data/v9.2/accounts".to_owned(),
            query: String::new(),
            headers: map,
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn reads_each_documented_value() {
        let both = read(&request(&[(
            "MSCRM.BypassBusinessLogicExecution",
            "CustomSync,CustomAsync",
        )]))
        .map_err(|f| f.message);
        assert_eq!(
            both,
            Ok(Bypass {
                logic: [Logic::CustomSync, Logic::CustomAsync].into(),
                ..Bypass::default()
            })
        );
        let step = Uuid::from_u128(7);
        let quoted = format!("\"{step}, {step}\"");
        let ids = read(&request(&[(
            "MSCRM.BypassBusinessLogicExecutionStepIds",
            &quoted,
        )]))
        .map(|b| b.step_ids)
        .map_err(|f| f.message);
        assert_eq!(ids, Ok(vec![step]));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (name, value) in [
            ("MSCRM.BypassCustomPluginExecution", "yes"),
            (
                "MSCRM.BypassBusinessLogicExecution",
                "CustomSync;CustomAsync",
            ),
            ("MSCRM.BypassBusinessLogicExecution", ""),
            ("MSCRM.BypassBusinessLogicExecutionStepIds", "not-a-guid"),
            ("MSCRM.SuppressCallbackRegistrationExpanderJob", "1"),
        ] {
            let fail = read(&request(&[(name, value)])).err();
            assert_eq!(
                fail.map(|f| (f.status, f.code)),
                Some((400, "0x80040203".to_owned())),
                "{name}: {value}"
            );
        }
    }
}
