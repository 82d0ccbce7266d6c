//! `GET {entity set}?fetchXml=...`: `FetchXML` queries through the Web API.
//!
//! The subset: `<fetch>` with `top`, `count`, `page`, `paging-cookie`, `distinct`, `aggregate` and
//! `returntotalrecordcount`; one `<entity>` with `<attribute>`, `<all-attributes/>`, `<order>`,
//! nested `<filter>`s of `<condition>`s, and `<link-entity>` (inner or outer, two levels deep).
//! Conditions become `$filter` expressions ([`crate::odata::filter::Expr`]), so a `FetchXML` `eq` and
//! an `OData` `eq` agree on case, nulls and GUID order. Everything else `FetchXML` can say is refused
//! with 501 naming it, rather than answered differently from the real service.

mod query;
mod run;
mod xml;

use crate::reply::Fail;
use crate::store::Store;

use super::Ctx;
use crate::reply::Reply;

/// The query parameter's name, case-sensitive as the service's is.
pub const PARAM: &str = "fetchXml";

pub fn run(store: &Store, ctx: &Ctx, t: usize, text: &str) -> Result<Reply, Fail> {
    // The service runs FetchXML on its own: `OData` query options beside it are refused.
    if let Some(option) = ctx.options.pairs.iter().find(|p| p.name.starts_with('$')) {
        return Err(Fail::bad_query(format!(
            "The query parameter {} is not supported with fetchXml.",
            option.name
        )));
    }
    let root = xml::parse(text).map_err(|e| match e {
        xml::XmlError::Malformed(detail) => invalid_xml(&detail),
        xml::XmlError::Unsupported(what) => Fail::not_implemented(what),
    })?;
    let query = query::parse(store, t, &root)?;
    Ok(run::execute(store, ctx, t, &query))
}

/// `InvalidXml` (`0x80040201`, -2147220991): a document that is not well-formed.
pub fn invalid_xml(detail: &str) -> Fail {
    Fail::new(400, "0x80040201", format!("Invalid XML. {detail}"))
}
