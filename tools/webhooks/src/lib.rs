//! `webhooks`: registers Dataverse webhooks that push a table's changes to `dataverse-webhook`, lists
//! them, and removes them, through the Web API with a dataset's credentials.
//!
//! - [`cli`]: the command line, parsed into a [`cli::Command`];
//! - [`registration`]: the rows Dataverse keeps for a webhook, made, found and removed.

pub mod cli;
pub mod registration;
