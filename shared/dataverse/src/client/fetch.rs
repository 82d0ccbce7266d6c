//! Rows found by a `FetchXML` query (`{set}?fetchXml=...`), page by page with the paging cookie, as
//! Microsoft Learn's "Page results using `FetchXml`" describes:
//!
//! - the page size and number are attributes of the `<fetch>` element (`count`, `page`), and from the
//!   second page on, the cookie the previous page returned goes in its `paging-cookie` attribute;
//! - a page with more after it says so in `@Microsoft.Dynamics.CRM.morerecords` and carries the cookie
//!   in `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie`: a `<cookie pagenumber=".." pagingcookie=".."/>`
//!   element whose `pagingcookie` is URL-encoded twice. It is decoded here, and XML-escaped again to go
//!   back into the query.
//!
//! The caller's query is kept as written, except for the root element's paging attributes, which
//! this module owns: a query that sets `page` or `paging-cookie` itself is refused.

use std::fmt::Write as _;

use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Client, FORMATTED_VALUE_ANNOTATIONS, MAX_PAGE_SIZE, Prefer, Table};
use crate::Error;
use crate::query::encode;
use crate::retry::Deadline;

/// The annotations paging reads, asked for in `Prefer: odata.include-annotations`.
const PAGING_ANNOTATIONS: &str =
    "Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords";

/// Why a `FetchXML` query cannot be paged here: refused before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchXmlError {
    #[error("is not XML this client can read: {0}")]
    Unreadable(String),
    #[error("must start with a <fetch> element")]
    NoFetch,
    #[error(
        "sets '{0}' on <fetch>, which the function sets to page through the results: leave it out"
    )]
    Paging(String),
}

#[derive(Deserialize)]
struct FetchPage {
    #[serde(rename = "value")]
    rows: Vec<Box<RawValue>>,
    #[serde(rename = "@Microsoft.Dynamics.CRM.morerecords", default)]
    more: bool,
    #[serde(rename = "@Microsoft.Dynamics.CRM.fetchxmlpagingcookie", default)]
    cookie: Option<String>,
}

/// The `<fetch>` start tag's span in the query, and its attributes other than the paging ones.
struct Root {
    start: usize,
    end: usize,
    attributes: Vec<(String, String)>,
    /// `top`: Dataverse refuses it beside `count` and `page`, so such a query is sent once, unpaged.
    top: bool,
}

/// Reads the root element; the rest is only tokenized, so that XML that is not well formed is refused
/// here rather than by Dataverse.
fn root(fetch_xml: &str) -> Result<Root, FetchXmlError> {
    let mut start = None;
    let mut attributes = Vec::new();
    let mut top = false;
    let mut found = None;
    let mut depth = 0_usize;
    for token in xmlparser::Tokenizer::from(fetch_xml) {
        let token = token.map_err(|e| FetchXmlError::Unreadable(e.to_string()))?;
        if found.is_some() {
            match token {
                xmlparser::Token::ElementStart { .. } => depth += 1,
                xmlparser::Token::ElementEnd {
                    end: xmlparser::ElementEnd::Close(..) | xmlparser::ElementEnd::Empty,
                    ..
                } => depth = depth.saturating_sub(1),
                _ => {}
            }
            continue;
        }
        match token {
            xmlparser::Token::Declaration { .. } | xmlparser::Token::Comment { .. } => {}
            xmlparser::Token::ElementStart { local, span, .. } if start.is_none() => {
                if local.as_str() != "fetch" {
                    return Err(FetchXmlError::NoFetch);
                }
                start = Some(span.start());
            }
            xmlparser::Token::Attribute { local, value, .. } if start.is_some() => {
                let name = local.as_str();
                match name {
                    "page" | "paging-cookie" => {
                        return Err(FetchXmlError::Paging(name.to_owned()));
                    }
                    // The page size is ours to choose.
                    "count" => {}
                    _ => {
                        top |= name == "top";
                        attributes.push((name.to_owned(), value.as_str().to_owned()));
                    }
                }
            }
            xmlparser::Token::ElementEnd { span, end } => {
                let start = start.ok_or(FetchXmlError::NoFetch)?;
                // `<fetch>` opens an element still to be closed; `<fetch/>` does not.
                depth = usize::from(matches!(end, xmlparser::ElementEnd::Open));
                found = Some(Root {
                    start,
                    end: span.end(),
                    attributes: std::mem::take(&mut attributes),
                    top,
                });
            }
            xmlparser::Token::Text { text } if text.as_str().trim().is_empty() => {}
            _ if start.is_none() => return Err(FetchXmlError::NoFetch),
            _ => {}
        }
    }
    match found {
        Some(_) if depth > 0 => Err(FetchXmlError::Unreadable(
            "an element is never closed".into(),
        )),
        Some(root) => Ok(root),
        None => Err(FetchXmlError::NoFetch),
    }
}

/// Escapes text for a double-quoted XML attribute.
fn xml_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The paging cookie a page announced, decoded: the `pagingcookie` attribute of the annotation's
/// `<cookie>` element, URL-decoded twice; the annotation as it is when it is not such an element.
fn paging_cookie(annotation: &str) -> String {
    let attribute = xmlparser::Tokenizer::from(annotation)
        .filter_map(Result::ok)
        .find_map(|token| match token {
            xmlparser::Token::Attribute { local, value, .. }
                if local.as_str() == "pagingcookie" =>
            {
                Some(value.as_str().to_owned())
            }
            _ => None,
        });
    match attribute {
        Some(twice) => {
            let once = percent_encoding::percent_decode_str(&twice).decode_utf8_lossy();
            percent_encoding::percent_decode_str(&once)
                .decode_utf8_lossy()
                .into_owned()
        }
        None => annotation.to_owned(),
    }
}

impl Root {
    /// The query with this root, paged.
    fn page(&self, fetch_xml: &str, size: usize, number: u32, cookie: Option<&str>) -> String {
        let mut tag = String::from("<fetch");
        for (name, value) in &self.attributes {
            let _ = write!(tag, " {name}=\"{}\"", xml_attribute(&unescape(value)));
        }
        if !self.top {
            let _ = write!(tag, " count=\"{size}\" page=\"{number}\"");
            if let Some(cookie) = cookie {
                let _ = write!(tag, " paging-cookie=\"{}\"", xml_attribute(cookie));
            }
        }
        let closing = &fetch_xml[self.end - 2..self.end];
        tag.push_str(if closing == "/>" { "/>" } else { ">" });
        format!(
            "{}{tag}{}",
            &fetch_xml[..self.start],
            &fetch_xml[self.end..]
        )
    }
}

/// An attribute value as XML means it (the tokenizer leaves references as written).
fn unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Client {
    /// The rows `fetch_xml` finds in `table`, skipping the first `skip` and stopping after `top`,
    /// fetched a page at a time with the paging cookie. A page holds `prefer`'s page size (5,000,
    /// Dataverse's most, when it names none), sent as the `<fetch>` element's `count`, for a caller
    /// that holds a page in memory while it works on it; `prefer` also asks for formatted values.
    /// Tracking changes does not apply to `FetchXML` and is ignored.
    pub fn fetch_rows<'a>(
        &'a self,
        table: &'a Table,
        fetch_xml: &'a str,
        skip: usize,
        top: Option<usize>,
        prefer: Prefer,
        deadline: Deadline,
    ) -> impl Stream<Item = Result<Box<RawValue>, Error>> + 'a {
        let wanted = top.map_or(usize::MAX, |t| skip.saturating_add(t));
        let page_rows = prefer.max_page_size.unwrap_or(MAX_PAGE_SIZE);
        let size = wanted.clamp(1, page_rows.clamp(1, MAX_PAGE_SIZE));
        let formatted_values = prefer.formatted_values;
        let root = root(fetch_xml).map_err(Error::FetchXml);
        let mut to_skip = skip;
        // (next page number, its cookie), or None once the last page was read.
        let pages = stream::try_unfold(
            (root, Some((1_u32, None::<String>))),
            move |(root, next)| async move {
                let root = root?;
                let Some((number, cookie)) = next else {
                    return Ok::<_, Error>(None);
                };
                let query = root.page(fetch_xml, size, number, cookie.as_deref());
                let url = self.url(&format!(
                    "{}?fetchXml={}",
                    table.entity_set_name,
                    encode(&query)
                ))?;
                super::check_length(url.as_str().len(), None)?;
                // The paging annotations are asked for by name: they are annotations like any other.
                let annotations = if formatted_values {
                    format!("{PAGING_ANNOTATIONS},{FORMATTED_VALUE_ANNOTATIONS}")
                } else {
                    PAGING_ANNOTATIONS.to_owned()
                };
                let header = format!("odata.include-annotations=\"{annotations}\"");
                let answer = self.get_json(&url, Some(header), deadline).await?;
                let page: FetchPage = crate::transport::decode(url.path(), &answer.body)?;
                let next = (page.more && !root.top).then(|| {
                    (
                        number.saturating_add(1),
                        page.cookie.as_deref().map(paging_cookie),
                    )
                });
                Ok(Some((page.rows, (Ok(root), next))))
            },
        );
        pages
            .map_ok(move |mut rows| {
                let dropped = to_skip.min(rows.len());
                to_skip -= dropped;
                rows.drain(..dropped);
                stream::iter(rows.into_iter().map(Ok))
            })
            .try_flatten()
            .take(top.unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_gets_the_paging_attributes_and_keeps_the_rest() {
        let query = r#"<?xml version="1.0"?><fetch distinct="true" count="50"><entity name="account"><attribute name="name"/></entity></fetch>"#;
        let root = root(query).unwrap();
        assert_eq!(
            root.page(
                query,
                5000,
                2,
                Some(r#"<cookie page="1"><accountid last="{A}" /></cookie>"#)
            ),
            r#"<?xml version="1.0"?><fetch distinct="true" count="5000" page="2" paging-cookie="&lt;cookie page=&quot;1&quot;&gt;&lt;accountid last=&quot;{A}&quot; /&gt;&lt;/cookie&gt;"><entity name="account"><attribute name="name"/></entity></fetch>"#
        );
        let top = r#"<fetch top="3"><entity name="account"/></fetch>"#;
        let root = super::root(top).unwrap();
        assert_eq!(root.page(top, 5000, 1, None), top, "top is sent as written");
    }

    #[test]
    fn paging_is_ours_and_the_query_must_be_a_fetch() {
        assert_eq!(
            root(r#"<fetch page="2"><entity name="a"/></fetch>"#).err(),
            Some(FetchXmlError::Paging("page".into()))
        );
        assert_eq!(
            root("<entity name=\"a\"/>").err(),
            Some(FetchXmlError::NoFetch)
        );
        assert!(matches!(
            root("<fetch"),
            Err(FetchXmlError::Unreadable(_) | FetchXmlError::NoFetch)
        ));
        assert!(matches!(
            root("<fetch><entity name=\"a\">"),
            Err(FetchXmlError::Unreadable(_))
        ));
        assert!(matches!(
            root("name eq 'x'"),
            Err(FetchXmlError::Unreadable(_) | FetchXmlError::NoFetch)
        ));
    }

    #[test]
    fn the_cookie_is_decoded_from_the_annotation() {
        let annotation = r#"<cookie pagenumber="2" pagingcookie="%253ccookie%2520page%253d%25221%2522%253e%253caccountid%2520last%253d%2522%257bA%257d%2522%2520%252f%253e%253c%252fcookie%253e" istracking="False" />"#;
        assert_eq!(
            paging_cookie(annotation),
            r#"<cookie page="1"><accountid last="{A}" /></cookie>"#
        );
        assert_eq!(paging_cookie("plain"), "plain");
    }
}
