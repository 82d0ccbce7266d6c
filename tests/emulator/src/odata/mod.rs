//! `OData`: query options, `$filter` and paging cookies.

pub mod cookie;
pub mod filter;
pub mod query;
