//! What a write asks Dataverse to leave out: custom business logic, and the system jobs that start
//! Power Automate flows (Microsoft Learn, *Bypass custom Dataverse logic* and *Bypass Power
//! Automate flows*). Both are request headers, sent on every write of a client that carries them
//! ([`super::Client::with_options`]): `POST`, `PATCH`, `DELETE`, the bulk messages, and each request
//! inside a `$batch` changeset (not the `$batch` around them).

/// The header that bypasses custom logic. `CustomSync,CustomAsync` leaves out synchronous and
/// asynchronous plug-ins and workflows alike, webhooks registered as asynchronous steps included.
/// `MSCRM.BypassCustomPluginExecution` would leave out only the synchronous ones, so a loop
/// through an asynchronous step (the usual way a webhook or an async plug-in is registered) would
/// still go round.
pub const BYPASS_LOGIC_HEADER: &str = "MSCRM.BypassBusinessLogicExecution";

/// The value of [`BYPASS_LOGIC_HEADER`].
pub const BYPASS_LOGIC_VALUE: &str = "CustomSync,CustomAsync";

/// The header that keeps Dataverse from creating the system jobs that run flows triggered by the
/// write.
pub const SUPPRESS_FLOWS_HEADER: &str = "MSCRM.SuppressCallbackRegistrationExpanderJob";

/// Options of a write. Both off by default: the write runs every piece of logic the org has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WriteOptions {
    /// Leave out custom synchronous and asynchronous logic (plug-ins, workflows, webhook steps).
    /// Needs the `prvBypassCustomBusinessLogic` privilege; without it Dataverse refuses the write.
    pub bypass_plugins: bool,
    /// Start no Power Automate flow for this write.
    pub suppress_flows: bool,
}

impl WriteOptions {
    /// The headers these options add to a write, in the spelling Microsoft's pages use.
    pub fn headers(self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if self.bypass_plugins {
            headers.push((BYPASS_LOGIC_HEADER, BYPASS_LOGIC_VALUE.to_owned()));
        }
        if self.suppress_flows {
            headers.push((SUPPRESS_FLOWS_HEADER, "true".to_owned()));
        }
        headers
    }

    /// Whether any option is on.
    pub fn any(self) -> bool {
        self.bypass_plugins || self.suppress_flows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_option_adds_its_documented_header_and_none_adds_nothing() {
        assert!(WriteOptions::default().headers().is_empty());
        assert!(!WriteOptions::default().any());
        let both = WriteOptions {
            bypass_plugins: true,
            suppress_flows: true,
        };
        assert_eq!(
            both.headers(),
            vec![
                (
                    "MSCRM.BypassBusinessLogicExecution",
                    "CustomSync,CustomAsync".to_owned()
                ),
                (
                    "MSCRM.SuppressCallbackRegistrationExpanderJob",
                    "true".to_owned()
                ),
            ]
        );
    }
}
