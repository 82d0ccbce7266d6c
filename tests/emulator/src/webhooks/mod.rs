//! Webhooks: Dataverse posting the execution context of each change to a registered endpoint.
//!
//! A registration is rows in the plug-in tables ([`registration`]): a service endpoint (contract 8,
//! Webhook), and a step that ties a message (`Create`, `Update`, `Delete`) on a table to it, with
//! optional entity images. After every Web API write to a business table the handler records a
//! [`Change`]; once the request is answered, [`plan`] matches it against the enabled asynchronous
//! post-operation steps, builds each step's `RemoteExecutionContext` ([`context`]) from the rows as
//! they were at that moment, logs a pending delivery, and hands back [`Job`]s that the server runs on
//! tasks of their own ([`delivery`]). The Web API answer never waits for a delivery, as Dataverse's
//! asynchronous service does not, and deliveries are not ordered: two changes, or two steps of one
//! change, may arrive in either order.
//!
//! Rows written through the control API (late commits, generated rows) fire nothing: they stand for
//! data that is already there, not for operations. Requests sent to `/_emulator/interactive/...`
//! are operations (the interactive user's) and fire steps like any Web API write.
//!
//! Each change carries the user who made it (the context's `UserId`) and the bypass headers of its
//! request: `CustomAsync` and `BypassBusinessLogicExecutionStepIds` skip steps here, since every step
//! the emulator runs is asynchronous (`crate::bypass`). [`plan`] also counts the flow jobs each
//! change starts (`crate::flows`).

pub mod context;
pub mod delivery;
pub mod registration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use delivery::{Attempt, Auth, AuthType, Delivery, DeliveryLog, DeliveryState, Job, Webhooks};

use crate::schema::TableKind;
use crate::store::Store;
use crate::{Emulator, clock};

/// The name Dataverse gives this organisation in contexts (`OrganizationName`).
pub const ORGANIZATION_NAME: &str = "emulator";

/// The messages a webhook step can be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Create,
    Update,
    Delete,
}

impl Message {
    pub const ALL: [Message; 3] = [Message::Create, Message::Update, Message::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Message::Create => "Create",
            Message::Update => "Update",
            Message::Delete => "Delete",
        }
    }
}

/// One committed Web API write to a business table, with the rows around it.
#[derive(Debug)]
pub struct Change {
    pub message: Message,
    pub table: usize,
    pub id: Uuid,
    /// The columns the request set, in its order: what `Target` carries, and what
    /// `filteringattributes` is matched against (a column counts even when its value did not change).
    pub set: Vec<(usize, Value)>,
    /// The row before the operation (Update, Delete).
    pub before: Option<Vec<Value>>,
    /// The row after it (Create, Update).
    pub after: Option<Vec<Value>>,
    /// When the operation ran, by the emulator's clock.
    pub at: i64,
    /// The user who made it: the context's `UserId` and `InitiatingUserId`.
    pub user: Uuid,
    /// The custom logic its request asked to bypass (`crate::bypass`).
    pub bypass: crate::bypass::Bypass,
    /// Its request carried `MSCRM.SuppressCallbackRegistrationExpanderJob: true`: no flow jobs.
    pub suppress_flows: bool,
}

/// Whether writes to table `t` need recording: a business table, while any step or flow trigger
/// is registered. Checked before a write, so an organisation without either copies no rows.
pub fn watching(store: &Store, t: usize) -> bool {
    store.tables[t].def.kind == TableKind::Ordinary
        && (!store.flows.is_empty()
            || store
                .by_logical(registration::STEP)
                .is_some_and(|s| !store.tables[s].rows.is_empty()))
}

/// Records a committed write for [`plan`]. `before` is the row as it was; the row after is read
/// here, under the same lock as the write.
pub fn record(
    store: &mut Store,
    message: Message,
    t: usize,
    id: Uuid,
    set: Vec<(usize, Value)>,
    before: Option<Vec<Value>>,
) {
    let after = match message {
        Message::Delete => None,
        Message::Create | Message::Update => store.tables[t].rows.get(&id).map(|r| r.cells.clone()),
    };
    // The time the write stamped on the row, so `OperationCreatedOn` agrees with `modifiedon`.
    let modified = store.tables[t].def.idx.modified;
    let at = after
        .as_ref()
        .and_then(|cells| cells[modified].as_str())
        .and_then(clock::parse_datetime)
        .unwrap_or_else(|| store.clock.now());
    store.committed.push(Change {
        message,
        table: t,
        id,
        set,
        before,
        after,
        at,
        user: store.caller.user,
        bypass: store.caller.bypass.clone(),
        suppress_flows: store.caller.bypass.suppress_flows,
    });
}

/// Turns the writes recorded since the last call into deliveries: each is logged as pending and
/// returned as a job to run. `host` is the host the request reached, the organisation's name on
/// the network (`x-ms-dynamics-organization`).
pub fn plan(em: &mut Emulator, host: &str) -> Vec<Job> {
    if em.store.committed.is_empty() {
        return Vec::new();
    }
    let changes = std::mem::take(&mut em.store.committed);
    let organization = host_name(host);
    let mut jobs = Vec::new();
    for change in &changes {
        let table = em.store.tables[change.table].def.logical_name.clone();
        em.store.flows.count(&table, change);
        // Every step the emulator runs is asynchronous; `CustomAsync` and the step ids skip them.
        let mut steps = delivery::matching_steps(&em.store, change);
        steps.retain(|step| !change.bypass.skips_step(step.id, true));
        if steps.is_empty() {
            continue;
        }
        // One operation, one correlation id, whichever steps it reaches.
        let correlation = Uuid::new_v4();
        for step in &steps {
            let built = context::build(&em.store, change, step, correlation);
            jobs.push(
                em.webhooks
                    .queue(&em.store, change, step, built, correlation, organization),
            );
        }
    }
    jobs
}

/// `127.0.0.1` of `127.0.0.1:8181`, `[::1]` of `[::1]:8181`.
fn host_name(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    host.split(':').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn the_organisation_host_drops_the_port() {
        assert_eq!(host_name("127.0.0.1:8181"), "127.0.0.1");
        assert_eq!(
            host_name("contoso.crm.dynamics.com"),
            "contoso.crm.dynamics.com"
        );
        assert_eq!(host_name("[::1]:80"), "[::1]");
    }
}
