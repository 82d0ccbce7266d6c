//! Power Automate flow triggers, reduced to what a client can observe of them: how many flow runs
//! ("callback registration expander" system jobs) its writes would start.
//!
//! Dataverse keeps a flow's "When a row is added, modified or deleted" trigger as a
//! `callbackregistration` row, and after each matching operation an internal job (the *expander*)
//! starts the flow. A request with `MSCRM.SuppressCallbackRegistrationExpanderJob: true` creates no
//! such job (Learn, "Bypass Power Automate flows"). The emulator runs no flows: a test registers a
//! trigger with `POST /_emulator/flows` and reads with `GET /_emulator/flows` how many jobs each
//! trigger would have started, and how many writes were suppressed. Like webhook steps, triggers
//! hear of Web API writes (and `/_emulator/interactive/...` ones), one job per row written, a bulk
//! message's targets included; other control API writes start none.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::Emulator;
use crate::reply::Reply;
use crate::webhooks::{Change, Message};

/// One flow trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: Uuid,
    /// The table's logical name.
    pub table: String,
    pub message: Message,
    /// Jobs its table's writes started.
    pub jobs: u64,
    /// Writes that would have started one but asked not to.
    pub suppressed: u64,
}

/// The registered triggers, emptied by `POST /_emulator/reset`.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    pub triggers: Vec<Trigger>,
}

impl Flows {
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// Counts the job each trigger `change` reaches starts, or the one it suppressed.
    pub fn count(&mut self, table: &str, change: &Change) {
        for trigger in &mut self.triggers {
            if trigger.table == table && trigger.message == change.message {
                if change.suppress_flows {
                    trigger.suppressed += 1;
                } else {
                    trigger.jobs += 1;
                }
            }
        }
    }
}

/// `POST /_emulator/flows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTrigger {
    /// Logical name or entity set name.
    pub table: String,
    pub message: Message,
}

/// `POST /_emulator/flows` `{"table", "message"}`: registers a trigger; 201 with it.
pub fn register(em: &mut Emulator, new: &NewTrigger) -> Reply {
    let Some(t) = em.store.by_any_name(&new.table) else {
        return Reply::json(
            404,
            &json!({"error": format!("no table named '{}'", new.table)}),
        );
    };
    let trigger = Trigger {
        id: Uuid::new_v4(),
        table: em.store.tables[t].def.logical_name.clone(),
        message: new.message,
        jobs: 0,
        suppressed: 0,
    };
    em.store.flows.triggers.push(trigger.clone());
    Reply::json(201, &json!(trigger))
}

/// `GET /_emulator/flows`: `{"flows": [...]}`, each trigger with its counts.
pub fn list(em: &Emulator) -> Reply {
    Reply::json(200, &json!({"flows": em.store.flows.triggers}))
}
