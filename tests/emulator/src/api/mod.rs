//! The Web API under `/api/data/v9.x/`: routing to the service document, `WhoAmI`,
//! `EntityDefinitions`, and entity sets.

pub mod delta;
pub mod metadata;
pub mod render;
pub mod rows;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use crate::Request;
use crate::odata::query::{Options, Prefer, parse_options};
use crate::reply::{Fail, Reply};
use crate::store::Store;

/// Characters escaped in a query value of a link the emulator writes (everything but unreserved).
pub const URL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What every handler needs to know about the request.
#[derive(Debug)]
pub struct Ctx {
    /// `http://host/api/data/v9.2/`, the prefix of every context URL and link.
    pub base: String,
    pub options: Options,
    pub prefer: Prefer,
}

/// Splits `name(key)` into its name and key.
fn segment(s: &str) -> Result<(&str, Option<&str>), Fail> {
    match s.find('(') {
        None => Ok((s, None)),
        Some(open) => {
            let key = s[open + 1..].strip_suffix(')').ok_or_else(|| {
                Fail::bad_query(format!("Bad Request - Error in query syntax: '{s}'."))
            })?;
            Ok((&s[..open], Some(key)))
        }
    }
}

pub fn handle(store: &mut Store, req: &Request, version: &str, rest: &str) -> Result<Reply, Fail> {
    let ctx = Ctx {
        base: format!("http://{}/api/data/{version}/", req.host()),
        options: parse_options(&req.query)?,
        prefer: Prefer::parse(&req.headers_all("prefer"))?,
    };
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let (name, key) = segment(first)?;
    let method = req.method.as_str();
    match (name, key) {
        ("", None) if method == "GET" => Ok(metadata::service_document(store, &ctx)),
        ("$metadata", _) => Err(Fail::not_implemented("the CSDL $metadata document")),
        ("$batch", _) => Err(Fail::not_implemented("$batch")),
        ("WhoAmI", None | Some("")) => {
            if method == "GET" {
                Ok(metadata::who_am_i(store, &ctx))
            } else {
                Err(Fail::new(
                    404,
                    "",
                    format!(
                        "No HTTP resource was found that matches the request URI '{}WhoAmI'.",
                        ctx.base
                    ),
                ))
            }
        }
        ("EntityDefinitions", key) => {
            if method != "GET" {
                return Err(Fail::not_implemented("changing metadata"));
            }
            metadata::entity_definitions(store, &ctx, key, tail)
        }
        (set, key) => {
            let Some(t) = store.by_set(set) else {
                return Err(Fail::segment_not_found(if set.is_empty() {
                    first
                } else {
                    set
                }));
            };
            match (key, tail, method) {
                (None, "", "GET") => rows::list(store, &ctx, t),
                (None, "", "POST") => rows::create(store, req, &ctx, t),
                (None, "$count", "GET") => rows::count(store, &ctx, t),
                (None, "", m) => Err(Fail::method_not_allowed(m)),
                (Some(key), "", m) => {
                    let id = rows::parse_key(store, t, key)?;
                    match m {
                        "GET" => rows::retrieve(store, req, &ctx, t, id),
                        "PATCH" => rows::patch(store, req, &ctx, t, id),
                        "DELETE" => rows::delete(store, req, t, id),
                        other => Err(Fail::method_not_allowed(other)),
                    }
                }
                (Some(_), _, _) => Err(Fail::not_implemented(
                    "single-property, navigation and $ref requests on a row",
                )),
                (None, other, _) => Err(Fail::segment_not_found(other)),
            }
        }
    }
}
