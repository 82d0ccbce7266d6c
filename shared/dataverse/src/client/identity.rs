//! Who the client is: the `WhoAmI` function (Microsoft Learn, *`WhoAmI` Function*), which answers the
//! calling user's `UserId`, `BusinessUnitId` and `OrganizationId`.

use serde::Deserialize;
use uuid::Uuid;

use super::Client;
use crate::Error;
use crate::retry::Deadline;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WhoAmI {
    user_id: Uuid,
}

impl Client {
    /// The `systemuserid` of the user this client acts as (for an application registration, its
    /// application user): the value Dataverse writes into `_createdby_value` and `_modifiedby_value`
    /// of the rows this client writes. One `GET WhoAmI`; the caller keeps the answer.
    pub async fn who_am_i(&self, deadline: Deadline) -> Result<Uuid, Error> {
        let url = self.url("WhoAmI")?;
        let answer = self.get_json(&url, None, deadline).await?;
        let found: WhoAmI = crate::transport::decode("WhoAmI", &answer.body)?;
        Ok(found.user_id)
    }
}
