//! Web API functions and actions, as Microsoft Learn's "Use Web API functions" and "Use Web API
//! actions" describe them:
//!
//! - a **function** is a `GET`: `WhoAmI()`, `RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account"]`.
//!   Its parameters go through parameter aliases, so each value is one encoded query parameter and
//!   never part of the path;
//! - an **action** is a `POST` with its parameters as a JSON body;
//! - either may be **bound** to a row: `leads(<id>)/Microsoft.Dynamics.CRM.QualifyLead`. Bound names
//!   carry the namespace; unbound ones are addressed without it.

use std::fmt::Write as _;

use reqwest::Method;
use serde_json::{Map, Value};

use super::send::Call;
use super::{Client, Table, check_length};
use crate::Error;
use crate::key::RowRef;
use crate::query::encode;
use crate::retry::{Deadline, Repeat};

/// The namespace bound operations are qualified with (custom ones too).
const NAMESPACE: &str = "Microsoft.Dynamics.CRM.";

/// A function (read-only, `GET`) or an action (may change data, `POST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Function,
    Action,
}

/// An operation to perform: see [`Client::perform`].
#[derive(Debug, Clone)]
pub struct Operation<'a> {
    pub kind: OperationKind,
    /// `WhoAmI`, `QualifyLead`, `new_MyAction`; `Microsoft.Dynamics.CRM.` in front is accepted.
    pub name: &'a str,
    /// The row it is bound to, if any.
    pub bound: Option<(&'a Table, RowRef)>,
    pub parameters: &'a Map<String, Value>,
}

/// A name that cannot be an operation's or a parameter's: refused before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{name}' is not {}: letters, digits and underscores, not starting with a digit", if *.parameter { "a parameter's name" } else { "an operation's name" })]
pub struct OperationNameError {
    pub name: String,
    /// A parameter's name, rather than the operation's.
    pub parameter: bool,
}

fn plain(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

impl Operation<'_> {
    /// Checks the names, so a caller can refuse them as its own input before anything is sent.
    pub fn check(&self) -> Result<(), OperationNameError> {
        let name = self.short_name()?;
        if self.kind == OperationKind::Function {
            self.function_call(name)?;
        } else if let Some(bad) = self.parameters.keys().find(|p| !plain(p)) {
            return Err(OperationNameError {
                name: crate::excerpt(bad),
                parameter: true,
            });
        }
        Ok(())
    }

    /// The operation's name without its namespace, checked.
    fn short_name(&self) -> Result<&str, OperationNameError> {
        let name = self.name.strip_prefix(NAMESPACE).unwrap_or(self.name);
        if plain(name) {
            Ok(name)
        } else {
            Err(OperationNameError {
                name: crate::excerpt(self.name),
                parameter: false,
            })
        }
    }

    /// `name(P1=@p1,P2=@p2)` and the aliases' query string, for a function.
    fn function_call(&self, name: &str) -> Result<(String, String), OperationNameError> {
        let mut call = format!("{name}(");
        let mut aliases = String::new();
        for (i, (parameter, value)) in self.parameters.iter().enumerate() {
            if !plain(parameter) {
                return Err(OperationNameError {
                    name: crate::excerpt(parameter),
                    parameter: true,
                });
            }
            if i > 0 {
                call.push(',');
                aliases.push('&');
            }
            let _ = write!(call, "{parameter}=@p{}", i + 1);
            let _ = write!(aliases, "@p{}={}", i + 1, encode(&literal(value)));
        }
        call.push(')');
        Ok((call, aliases))
    }
}

/// A JSON value as an OData literal in a parameter alias: text quoted with `''` for a quote, and
/// everything else as JSON (numbers, booleans, `null`, and collections and objects, which aliases
/// take in JSON form).
fn literal(value: &Value) -> String {
    match value {
        Value::String(text) => format!("'{}'", text.replace('\'', "''")),
        other => other.to_string(),
    }
}

impl Client {
    /// Performs `operation` and returns Dataverse's answer without its `@odata.context` (an empty
    /// object when it answers 204).
    ///
    /// A function is a read, and repeated like one. An action may change data and is sent once:
    /// only a request that provably never left is sent again, since an action that ran and lost its
    /// answer could run twice.
    pub async fn perform(
        &self,
        operation: Operation<'_>,
        deadline: Deadline,
    ) -> Result<Map<String, Value>, Error> {
        operation.check().map_err(Error::InvalidOperation)?;
        let name = operation.short_name().map_err(Error::InvalidOperation)?;
        let target = match &operation.bound {
            None => name.to_owned(),
            Some((table, row)) => {
                let row = self
                    .locate(table, row.clone(), deadline)
                    .await?
                    .ok_or_else(|| super::no_such_key(table))?;
                let row_url = self.row_url(table, &row, &crate::Query::default())?;
                let relative = row_url
                    .as_str()
                    .strip_prefix(self.inner.api.as_str())
                    .unwrap_or_default()
                    .to_owned();
                format!("{relative}/{NAMESPACE}{name}")
            }
        };
        let (method, url, body) = match operation.kind {
            OperationKind::Function => {
                let (call, aliases) = operation
                    .function_call(&target)
                    .map_err(Error::InvalidOperation)?;
                let separator = if aliases.is_empty() { "" } else { "?" };
                (
                    Method::GET,
                    self.url(&format!("{call}{separator}{aliases}"))?,
                    None,
                )
            }
            OperationKind::Action => {
                let body = serde_json::to_vec(operation.parameters).map_err(Error::Encode)?;
                (Method::POST, self.url(&target)?, Some(body.into()))
            }
        };
        check_length(url.as_str().len(), None)?;
        let mut headers = Vec::new();
        if body.is_some() {
            headers.push(("content-type", "application/json; charset=utf-8".to_owned()));
        }
        let answer = self
            .execute(
                Call {
                    method,
                    url: &url,
                    headers,
                    body,
                    repeat: match operation.kind {
                        OperationKind::Function => Repeat::Safe,
                        OperationKind::Action => Repeat::OnlyIfUnsent,
                    },
                    done_if_retried: None,
                },
                deadline,
            )
            .await?;
        if answer.status == 204 || answer.body.is_empty() {
            return Ok(Map::new());
        }
        let mut result: Map<String, Value> = crate::transport::decode(url.path(), &answer.body)?;
        result.remove("@odata.context");
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn functions_pass_every_parameter_through_an_encoded_alias() {
        // In name order, so the aliases number the same whether or not serde_json keeps insertion
        // order (a feature another crate of the workspace may turn on).
        let parameters = json!({"EntityNames": ["account", "O'Brien"], "Name": "it's", "Top": 5});
        let operation = Operation {
            kind: OperationKind::Function,
            name: "Microsoft.Dynamics.CRM.RetrieveTotalRecordCount",
            bound: None,
            parameters: parameters.as_object().unwrap(),
        };
        let name = operation.short_name().unwrap();
        assert_eq!(name, "RetrieveTotalRecordCount");
        let (call, aliases) = operation.function_call(name).unwrap();
        assert_eq!(
            call,
            "RetrieveTotalRecordCount(EntityNames=@p1,Name=@p2,Top=@p3)"
        );
        assert_eq!(literal(&json!("it's")), "'it''s'");
        assert_eq!(literal(&json!(["account"])), r#"["account"]"#);
        assert!(aliases.starts_with("@p1=%5B%22account%22"), "{aliases}");
        assert!(!aliases.contains('\''), "quotes are encoded: {aliases}");
    }

    #[test]
    fn names_that_could_reach_outside_the_path_are_refused() {
        let none = Map::new();
        for bad in [
            "WhoAmI()/../accounts",
            "a b",
            "",
            "1st",
            "x?y=1",
            "Microsoft.Dynamics.CRM.",
        ] {
            let operation = Operation {
                kind: OperationKind::Action,
                name: bad,
                bound: None,
                parameters: &none,
            };
            assert!(operation.short_name().is_err(), "{bad}");
        }
        let bad_parameter = json!({"a)/x": 1});
        let operation = Operation {
            kind: OperationKind::Function,
            name: "WhoAmI",
            bound: None,
            parameters: bad_parameter.as_object().unwrap(),
        };
        assert!(operation.function_call("WhoAmI").is_err());
    }
}
