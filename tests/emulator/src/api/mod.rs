//! The Web API under `/api/data/v9.x/`: routing to the service document, functions and actions (see
//! [`operations`]), `EntityDefinitions`, entity sets, rows, and what follows a row (navigation
//! properties and `$ref`, see [`related`]). Several requests in one go are a `$batch` ([`batch`]).

pub mod batch;
pub mod delta;
pub mod fetch;
pub mod metadata;
pub mod operations;
pub mod related;
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

/// The first segment of a Web API path, `name` or `name(key)`, and the rest of the path after it.
#[derive(Debug, PartialEq, Eq)]
struct Segment<'a> {
    /// The segment as written, for error messages.
    text: &'a str,
    name: &'a str,
    key: Option<&'a str>,
    tail: &'a str,
}

/// Splits `name(key)/tail`. The path arrives percent-decoded, as the service's router sees it, so a
/// `/` that a key value held (even sent as `%2F`) splits the path inside the parentheses: the service
/// answers "Bad Request - Error in query syntax." and the row cannot be addressed by that key. A `)`
/// inside a quoted key value does not close the key.
fn segment(path: &str) -> Result<Segment<'_>, Fail> {
    let slash = path.find('/').unwrap_or(path.len());
    let Some(open) = path[..slash].find('(') else {
        return Ok(Segment {
            text: &path[..slash],
            name: &path[..slash],
            key: None,
            tail: path.get(slash + 1..).unwrap_or_default(),
        });
    };
    let mut quoted = false;
    let mut close = None;
    for (i, c) in path[open + 1..].char_indices() {
        match c {
            '/' => return Err(Fail::bad_query("Bad Request - Error in query syntax.")),
            // `''` inside a literal toggles twice, so it stays inside.
            '\'' => quoted = !quoted,
            ')' if !quoted => {
                close = Some(open + 1 + i);
                break;
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return Err(Fail::bad_query("Bad Request - Error in query syntax."));
    };
    let end = match path[close + 1..].find('/') {
        Some(i) => close + 1 + i,
        None => path.len(),
    };
    let text = &path[..end];
    if end != close + 1 {
        return Err(Fail::bad_query(format!(
            "Bad Request - Error in query syntax: '{text}'."
        )));
    }
    Ok(Segment {
        text,
        name: &path[..open],
        key: Some(&path[open + 1..close]),
        tail: path.get(end + 1..).unwrap_or_default(),
    })
}

pub fn handle(store: &mut Store, req: &Request, version: &str, rest: &str) -> Result<Reply, Fail> {
    let ctx = Ctx {
        base: format!("http://{}/api/data/{version}/", req.host()),
        options: parse_options(&req.query)?,
        prefer: Prefer::parse(&req.headers_all("prefer"))?,
    };
    let Segment {
        text: first,
        name,
        key,
        tail,
    } = segment(rest)?;
    let method = req.method.as_str();
    // The bypass headers of a write apply to it (and to it alone, in a `$batch`), within the
    // caller's privileges.
    let addressed = store.by_set(name);
    crate::bypass::apply(store, req, addressed)?;
    // `$id` names the reference a `DELETE .../{collection}/$ref` removes, and nothing else.
    if ctx.options.id.is_some() && !(method == "DELETE" && rest.ends_with("/$ref")) {
        return Err(Fail::unsupported_option("$id"));
    }
    match (name, key) {
        ("", None) if method == "GET" => Ok(metadata::service_document(store, &ctx)),
        ("$metadata", _) => Err(Fail::not_implemented("the CSDL $metadata document")),
        // `POST $batch` itself is answered before this (`batch::handle`, through `crate::server`),
        // and a batch refuses a part addressed to `$batch`; what is left has more after it.
        ("$batch", _) => Err(operations::must_be_leaf("$batch")),
        (name, key) if operations::unbound(name).is_some() => {
            operations::call_unbound(store, req, &ctx, name, key, tail)
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
                (key, tail, _) if operations::names_operation(store, t, key.is_some(), tail) => {
                    operations::call_bound(store, req, &ctx, t, key, tail)
                }
                (Some(key), "", m) => {
                    let target = rows::parse_key(store, t, key)?;
                    match m {
                        "GET" => {
                            let id = target.existing(store, t)?;
                            rows::retrieve(store, req, &ctx, t, id)
                        }
                        "PATCH" => rows::patch(store, req, &ctx, t, target),
                        "DELETE" => {
                            let id = target.existing(store, t)?;
                            rows::delete(store, req, t, id)
                        }
                        other => Err(Fail::method_not_allowed(other)),
                    }
                }
                (Some(key), tail, _) => related::handle(store, req, &ctx, t, key, tail),
                (None, other, _) => Err(Fail::segment_not_found(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Segment, segment};

    #[test]
    fn splits_the_first_segment_with_quotes_in_mind() {
        let split = |path| segment(path).map_err(|f| f.message);
        assert_eq!(
            split("accounts"),
            Ok(Segment {
                text: "accounts",
                name: "accounts",
                key: None,
                tail: ""
            })
        );
        assert_eq!(
            split("accounts/$count"),
            Ok(Segment {
                text: "accounts",
                name: "accounts",
                key: None,
                tail: "$count"
            })
        );
        assert_eq!(
            split("accounts(name='a)(''b')/name"),
            Ok(Segment {
                text: "accounts(name='a)(''b')",
                name: "accounts",
                key: Some("name='a)(''b'"),
                tail: "name"
            })
        );
        let syntax = Err("Bad Request - Error in query syntax.".to_owned());
        assert_eq!(split("accounts(name='a/b')"), syntax);
        assert_eq!(split("accounts(n=4/2)"), syntax);
        assert_eq!(split("accounts(name='open"), syntax);
        assert_eq!(
            split("accounts(x)y/z"),
            Err("Bad Request - Error in query syntax: 'accounts(x)y'.".to_owned())
        );
    }
}
