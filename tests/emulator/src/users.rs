//! The organisation's users: one application user per app registration (client id) that calls the
//! Web API, and one interactive user who stands for "somebody else" making changes.
//!
//! Dataverse binds each app registration to an application user (a `systemuser` row); every write
//! through the Web API is stamped with the caller's user in `createdby`, `modifiedby` and, on create,
//! `ownerid`, and `WhoAmI` answers it. Here an application user's id is derived from its client id
//! alone, so it is the same in every run and across `POST /_emulator/reset`. Writes made through the
//! control API (the seed, late commits, `/_emulator/interactive/...`) are the interactive user's,
//! which is the organisation's well-known user (`Org::user`).
//!
//! Privileges: an application user is given the System Administrator role by default, so it holds
//! `prvBypassCustomPlugins` and `prvBypassCustomBusinessLogic` ("Bypass custom Dataverse logic":
//! by default only that role has them). `POST /_emulator/users/privileges` takes one away from (or
//! gives it back to) a client id, for tests of the refusal.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::Emulator;
use crate::reply::Reply;

/// The privileges the bypass request headers need (Learn, "Bypass custom Dataverse logic", Adding
/// the required privileges to another role). Their ids are the same in every environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Privilege {
    /// `MSCRM.BypassCustomPluginExecution`.
    #[serde(rename = "prvBypassCustomPlugins")]
    BypassCustomPlugins,
    /// `MSCRM.BypassBusinessLogicExecution` and `MSCRM.BypassBusinessLogicExecutionStepIds`.
    #[serde(rename = "prvBypassCustomBusinessLogic")]
    BypassCustomBusinessLogic,
}

impl Privilege {
    pub const ALL: [Privilege; 2] = [
        Privilege::BypassCustomPlugins,
        Privilege::BypassCustomBusinessLogic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Privilege::BypassCustomPlugins => "prvBypassCustomPlugins",
            Privilege::BypassCustomBusinessLogic => "prvBypassCustomBusinessLogic",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Privilege::BypassCustomPlugins => "148a9eaf-d0c4-4196-9852-c3a38e35f6a1",
            Privilege::BypassCustomBusinessLogic => "0ea552b0-a491-4470-9a1b-82068deccf66",
        }
    }
}

/// The name the interactive user has (its `fullname`).
pub const INTERACTIVE_NAME: &str = "Interactive User";

/// Who the request being handled acts as, and what it asked to bypass.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The `systemuser` id written to `createdby`/`modifiedby`/`ownerid` and answered by `WhoAmI`.
    pub user: Uuid,
    /// The app registration the bearer token was issued to; `None` for the interactive user.
    pub client_id: Option<String>,
    /// The bypass headers of the request (or `$batch` part) being handled.
    pub bypass: crate::bypass::Bypass,
    /// Every bypass that applied to some part of the request, for the request log.
    pub applied: BTreeSet<&'static str>,
    /// Row operations beyond the first that the request carried out (the targets of a bulk message
    /// after its first), each held for the simulated execution time as a request of its own.
    pub extra_operations: u64,
}

/// The users the organisation knows, and which privileges each application user lacks.
#[derive(Debug, Clone)]
pub struct Users {
    /// The interactive user's id, also `Org::user`.
    pub interactive: Uuid,
    /// Every user's name (`fullname`) by id: the interactive user and each application user that
    /// has called the Web API or been named through the control API. It is what a lookup to
    /// `systemuser` (`_createdby_value`, `_modifiedby_value`, `_ownerid_value`) is named by, for
    /// the `OData.Community.Display.V1.FormattedValue` annotation.
    pub names: BTreeMap<Uuid, String>,
    /// Application users by client id.
    pub applications: BTreeMap<String, Uuid>,
    /// The privileges taken away from a client id; every other one is held.
    revoked: BTreeMap<String, BTreeSet<Privilege>>,
}

impl Users {
    pub fn new(interactive: Uuid) -> Self {
        Self {
            interactive,
            names: BTreeMap::from([(interactive, INTERACTIVE_NAME.to_owned())]),
            applications: BTreeMap::new(),
            revoked: BTreeMap::new(),
        }
    }

    /// The application user of `client_id`, known from now on.
    pub fn application(&mut self, client_id: &str) -> Uuid {
        let id = application_user_id(client_id);
        self.applications.insert(client_id.to_owned(), id);
        self.names.insert(id, client_id.to_owned());
        id
    }

    /// The name of user `id`, if the organisation knows it.
    pub fn name(&self, id: &Uuid) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    pub fn holds(&self, client_id: &str, privilege: Privilege) -> bool {
        !self
            .revoked
            .get(client_id)
            .is_some_and(|revoked| revoked.contains(&privilege))
    }

    pub fn set(&mut self, client_id: &str, privilege: Privilege, granted: bool) {
        let revoked = self.revoked.entry(client_id.to_owned()).or_default();
        if granted {
            revoked.remove(&privilege);
        } else {
            revoked.insert(privilege);
        }
    }
}

/// The `systemuser` id of the application user bound to `client_id`: the same for a client id in
/// every run, and distinct between client ids.
pub fn application_user_id(client_id: &str) -> Uuid {
    crate::schema::stable_id(&format!("systemuser/application/{client_id}"))
}

/// `POST /_emulator/users/privileges`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivilegeChange {
    pub client_id: String,
    pub privilege: Privilege,
    pub granted: bool,
}

/// `GET /_emulator/users`: the interactive user, and each application user known (the configured
/// client id always among them) with the bypass privileges it holds.
pub fn list(em: &mut Emulator) -> Reply {
    let configured = em.auth.client_id.clone();
    em.store.users.application(&configured);
    let users = &em.store.users;
    let applications: Vec<_> = users
        .applications
        .iter()
        .map(|(client_id, id)| {
            let privileges: BTreeMap<&str, bool> = Privilege::ALL
                .iter()
                .map(|p| (p.name(), users.holds(client_id, *p)))
                .collect();
            json!({
                "client_id": client_id,
                "id": id,
                "name": users.name(id),
                "privileges": privileges,
            })
        })
        .collect();
    Reply::json(
        200,
        &json!({
            "interactive": {"id": users.interactive, "name": INTERACTIVE_NAME},
            "applications": applications,
        }),
    )
}

/// `POST /_emulator/users/privileges` `{"client_id", "privilege", "granted"}`: takes a bypass
/// privilege away from an application user, or gives it back; answers as `GET /_emulator/users`.
pub fn set_privilege(em: &mut Emulator, change: &PrivilegeChange) -> Reply {
    if change.client_id.is_empty() {
        return Reply::json(400, &json!({"error": "client_id must not be empty"}));
    }
    em.store.users.application(&change.client_id);
    em.store
        .users
        .set(&change.client_id, change.privilege, change.granted);
    list(em)
}

#[cfg(test)]
mod tests {
    use super::{Privilege, Users, application_user_id};
    use uuid::Uuid;

    #[test]
    fn application_users_are_stable_and_distinct() {
        assert_eq!(application_user_id("a"), application_user_id("a"));
        assert_ne!(application_user_id("a"), application_user_id("b"));
    }

    #[test]
    fn privileges_are_held_until_revoked() {
        let mut users = Users::new(Uuid::nil());
        assert!(users.holds("a", Privilege::BypassCustomPlugins));
        users.set("a", Privilege::BypassCustomPlugins, false);
        assert!(!users.holds("a", Privilege::BypassCustomPlugins));
        assert!(users.holds("a", Privilege::BypassCustomBusinessLogic));
        assert!(users.holds("b", Privilege::BypassCustomPlugins));
        users.set("a", Privilege::BypassCustomPlugins, true);
        assert!(users.holds("a", Privilege::BypassCustomPlugins));
    }
}
