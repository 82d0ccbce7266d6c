//! `$skiptoken` paging cookies.
//!
//! The real service's skiptoken is a URL-encoded paging-cookie XML,
//! `<cookie pagenumber="2" pagingcookie="%3ccookie page%3d%221%22%3e%3caccountid last%3d%22{GUID}%22 .../%3e%3c%2fcookie%3e" istracking="False" />`,
//! holding the last row's key values. This one has the same shape and the same meaning (keyset paging,
//! so rows changing between pages are neither skipped nor repeated because of an offset), and clients
//! must treat it as opaque, as they must with the real one.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;

use crate::reply::Fail;

/// Characters escaped inside a cookie attribute.
const ATTR: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// Ordinary (and initial change-tracking) paging: the sort key of the last row sent, primary key
    /// last. `tracking` carries the version the initial change-tracking sync started at, which its
    /// final deltaLink must use.
    Keyset {
        page: u32,
        last: Vec<(String, Value)>,
        tracking: Option<u64>,
    },
    /// Paging through a delta: the token's version, the version the pass is bounded by, the section
    /// (0 = changed rows, 1 = deletions) and the version of the last entry sent.
    Delta {
        page: u32,
        token_version: u64,
        pass_version: u64,
        section: u8,
        last_version: u64,
    },
}

impl Cursor {
    pub fn encode(&self) -> String {
        match self {
            Cursor::Keyset {
                page,
                last,
                tracking,
            } => {
                let mut inner = format!("<cookie page=\"{page}\">");
                for (name, value) in last {
                    let v = utf8_percent_encode(&value.to_string(), ATTR).to_string();
                    let _ = write!(inner, "<{name} last=\"{v}\" first=\"{v}\" />");
                }
                inner.push_str("</cookie>");
                let tracking_attr =
                    tracking.map_or_else(String::new, |v| format!(" deltaversion=\"{v}\""));
                format!(
                    "<cookie pagenumber=\"{}\" pagingcookie=\"{}\" istracking=\"{}\"{tracking_attr} />",
                    page.saturating_add(1),
                    utf8_percent_encode(&inner, ATTR),
                    if tracking.is_some() { "True" } else { "False" },
                )
            }
            Cursor::Delta {
                page,
                token_version,
                pass_version,
                section,
                last_version,
            } => format!(
                "<cookie pagenumber=\"{}\" tokenversion=\"{token_version}\" passversion=\"{pass_version}\" section=\"{section}\" lastversion=\"{last_version}\" istracking=\"True\" />",
                page.saturating_add(1)
            ),
        }
    }

    pub fn decode(token: &str) -> Result<Self, Fail> {
        let invalid = || Fail::bad_query("The $skiptoken value is not a valid paging cookie.");
        let attr = |text: &str, name: &str| -> Option<String> {
            let start = text.find(&format!(" {name}=\""))? + name.len() + 3;
            let len = text[start..].find('"')?;
            Some(text[start..start + len].to_owned())
        };
        let number = |name: &str| -> Result<u64, Fail> {
            attr(token, name)
                .and_then(|v| v.parse().ok())
                .ok_or_else(invalid)
        };
        if !token.starts_with("<cookie ") || !token.ends_with("/>") {
            return Err(invalid());
        }
        let page = u32::try_from(number("pagenumber")?.saturating_sub(1)).map_err(|_| invalid())?;
        if attr(token, "tokenversion").is_some() {
            return Ok(Cursor::Delta {
                page,
                token_version: number("tokenversion")?,
                pass_version: number("passversion")?,
                section: u8::try_from(number("section")?).map_err(|_| invalid())?,
                last_version: number("lastversion")?,
            });
        }
        let inner = attr(token, "pagingcookie").ok_or_else(invalid)?;
        let inner = percent_decode_str(&inner)
            .decode_utf8()
            .map_err(|_| invalid())?
            .into_owned();
        let mut last = Vec::new();
        let mut rest = inner.strip_prefix("<cookie page=\"").ok_or_else(invalid)?;
        rest = &rest[rest.find('>').ok_or_else(invalid)? + 1..];
        while let Some(element) = rest.strip_prefix('<') {
            if element.starts_with("/cookie>") {
                break;
            }
            let end = element.find("/>").ok_or_else(invalid)?;
            let body = &element[..end];
            let name = body
                .split_whitespace()
                .next()
                .ok_or_else(invalid)?
                .to_owned();
            let raw = attr(body, "last").ok_or_else(invalid)?;
            let json = percent_decode_str(&raw)
                .decode_utf8()
                .map_err(|_| invalid())?;
            let value: Value = serde_json::from_str(&json).map_err(|_| invalid())?;
            last.push((name, value));
            rest = &element[end + 2..];
        }
        let tracking = match attr(token, "deltaversion") {
            Some(v) => Some(v.parse().map_err(|_| invalid())?),
            None => None,
        };
        if last.is_empty() {
            return Err(invalid());
        }
        Ok(Cursor::Keyset {
            page,
            last,
            tracking,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_keyset_and_delta_cursors() {
        let keyset = Cursor::Keyset {
            page: 1,
            last: vec![
                ("name".into(), json!("A \"quoted\" <name> & co")),
                (
                    "accountid".into(),
                    json!("4b757ff7-9c85-ee11-8179-000d3a9933c9"),
                ),
            ],
            tracking: Some(42),
        };
        assert_eq!(Cursor::decode(&keyset.encode()).unwrap(), keyset);
        let delta = Cursor::Delta {
            page: 3,
            token_version: 10,
            pass_version: 20,
            section: 1,
            last_version: 15,
        };
        assert_eq!(Cursor::decode(&delta.encode()).unwrap(), delta);
    }

    #[test]
    fn rejects_tampered_cookies() {
        assert!(Cursor::decode("page=2").is_err());
        assert!(Cursor::decode("<cookie pagenumber=\"2\" />").is_err());
    }
}
