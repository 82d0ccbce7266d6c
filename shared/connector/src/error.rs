//! The one error type every function returns, and the `Crm.*` error types it maps to.
//!
//! Step Functions workflows match on those names (`Retry` on `Crm.Throttled`, `Catch` on
//! `Crm.NotFound`), so [`CrmError::error_type`] is a public API: change it only with a major version.

use lambda_runtime::Diagnostic;

/// Configuration that cannot work: environment variables, or the credentials for a dataset.
///
/// `Clone`, because a function that starts with a bad configuration reports it on every invocation
/// (as `Crm.Configuration`, which callers can catch) rather than crashing at start-up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// Environment variables that are missing or malformed, all of them at once.
    #[error("invalid environment: {}", .0.join("; "))]
    Environment(Vec<String>),

    /// No credentials exist for the dataset.
    #[error("no credentials for dataset '{dataset}': {reason}")]
    NoCredentials { dataset: String, reason: String },

    /// A table cannot serve this function as it is set up in Dataverse.
    #[error("table '{table}': {problem}")]
    Table { table: String, problem: String },

    /// Credentials exist but cannot be used. `problem` never quotes the secret.
    #[error("the credentials for dataset '{dataset}' in {location} are not usable: {problem}")]
    BadCredentials {
        dataset: String,
        location: String,
        problem: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrmError {
    /// The payload is wrong. `field` names the input (`id`, `$top`, `item`).
    #[error("{field}: {problem}")]
    InvalidInput { field: String, problem: String },

    #[error(transparent)]
    Configuration(#[from] ConfigError),

    /// Reading credentials failed for a reason that may pass (network, throttling).
    #[error("could not read the credentials for dataset '{dataset}': {detail}")]
    SecretsUnavailable { dataset: String, detail: String },

    #[error(transparent)]
    Dataverse(#[from] dataverse::Error),

    #[cfg(feature = "triggers")]
    #[error(transparent)]
    Cursor(#[from] crate::cursor::CursorError),

    #[cfg(feature = "triggers")]
    #[error(transparent)]
    Events(#[from] crate::events::EventError),
}

impl CrmError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The `errorType` of the failed invocation.
    pub fn error_type(&self) -> &'static str {
        match self {
            CrmError::InvalidInput { .. } => "Crm.InvalidInput",
            CrmError::Configuration(_) => "Crm.Configuration",
            CrmError::SecretsUnavailable { .. } => "Crm.ServerError",
            CrmError::Dataverse(e) => dataverse_error_type(e),
            #[cfg(feature = "triggers")]
            CrmError::Cursor(e) => e.error_type(),
            #[cfg(feature = "triggers")]
            CrmError::Events(e) => e.error_type(),
        }
    }
}

/// Maps a client error by HTTP status first: Dataverse's codes are too unreliable to branch on.
fn dataverse_error_type(error: &dataverse::Error) -> &'static str {
    use dataverse::Error;
    match error {
        Error::Invalid { what: "table", .. } => "Crm.InvalidInput",
        Error::Config(_) => "Crm.Configuration",
        Error::UnknownTable { .. } => "Crm.NotFound",
        e if e.is_unauthorized() => "Crm.Unauthorized",
        // The token endpoint refusing a well-formed request (an unknown tenant, a wrong scope) means
        // the dataset's URL or tenant is wrong.
        Error::Token { status, .. } if *status < 500 && *status != 429 => "Crm.Configuration",
        e => match e.status() {
            Some(403) => "Crm.Forbidden",
            Some(404) => "Crm.NotFound",
            Some(412) => "Crm.PreconditionFailed",
            Some(429) => "Crm.Throttled",
            Some(400..=499) => "Crm.BadRequest",
            // 5xx after retries, no answer at all, or an answer we could not read.
            _ => "Crm.ServerError",
        },
    }
}

impl From<CrmError> for Diagnostic {
    fn from(error: CrmError) -> Self {
        Diagnostic {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> CrmError {
        CrmError::Dataverse(dataverse::Error::Api {
            status,
            code: Some("0x0".into()),
            message: "m".into(),
            retry_after: None,
        })
    }

    #[test]
    fn maps_dataverse_statuses_to_the_public_error_types() {
        let expected = [
            (400, "Crm.BadRequest"),
            (401, "Crm.Unauthorized"),
            (403, "Crm.Forbidden"),
            (404, "Crm.NotFound"),
            (405, "Crm.BadRequest"),
            (412, "Crm.PreconditionFailed"),
            (429, "Crm.Throttled"),
            (500, "Crm.ServerError"),
            (503, "Crm.ServerError"),
        ];
        for (status, error_type) in expected {
            assert_eq!(api(status).error_type(), error_type, "{status}");
        }
    }

    #[test]
    fn maps_token_and_client_failures() {
        let token = |status: u16, error: &str| {
            CrmError::Dataverse(dataverse::Error::Token {
                status,
                error: error.into(),
                description: String::new(),
            })
            .error_type()
        };
        assert_eq!(token(401, "invalid_client"), "Crm.Unauthorized");
        assert_eq!(token(400, "unauthorized_client"), "Crm.Unauthorized");
        assert_eq!(token(400, "invalid_resource"), "Crm.Configuration");
        assert_eq!(token(503, "temporarily_unavailable"), "Crm.ServerError");
        assert_eq!(token(429, "throttled"), "Crm.Throttled");
        let unknown = CrmError::Dataverse(dataverse::Error::UnknownTable { name: "x".into() });
        assert_eq!(unknown.error_type(), "Crm.NotFound");
        let config = CrmError::from(ConfigError::Environment(vec![
            "CRM_STATE is not set".into(),
        ]));
        let diagnostic = Diagnostic::from(config);
        assert_eq!(diagnostic.error_type, "Crm.Configuration");
        assert_eq!(
            diagnostic.error_message,
            "invalid environment: CRM_STATE is not set"
        );
    }
}
