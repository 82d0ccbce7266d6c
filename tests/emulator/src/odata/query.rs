//! Query options and `Prefer` preferences, read as the service reads them: option names are
//! case-sensitive, `+` in a query string is a space, each option may appear once, and `$skip`,
//! `$search` and `$format` are refused.

use percent_encoding::percent_decode_str;

use crate::reply::Fail;

/// One `name=value` pair of the query string, decoded, with its raw form kept so a nextLink can repeat
/// the client's options byte for byte.
#[derive(Debug, Clone)]
pub struct Pair {
    pub name: String,
    pub value: String,
    pub raw: String,
}

#[derive(Debug, Default, Clone)]
pub struct Options {
    pub pairs: Vec<Pair>,
    pub select: Option<String>,
    pub filter: Option<String>,
    pub orderby: Option<String>,
    pub top: Option<String>,
    pub count: Option<String>,
    pub expand: Option<String>,
    pub skiptoken: Option<String>,
    pub deltatoken: Option<String>,
    pub apply: Option<String>,
    /// `$id`: the row a `DELETE .../{collection}/$ref` removes; refused everywhere else.
    pub id: Option<String>,
}

fn decode(s: &str) -> Result<String, Fail> {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| Fail::bad_query("The query string is not valid UTF-8 after percent-decoding."))
}

pub fn parse_options(query: &str) -> Result<Options, Fail> {
    let mut options = Options::default();
    for raw in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = raw.split_once('=').unwrap_or((raw, ""));
        let name = decode(name)?;
        let value = decode(value)?;
        let slot = match name.as_str() {
            "$select" => &mut options.select,
            "$filter" => &mut options.filter,
            "$orderby" => &mut options.orderby,
            "$top" => &mut options.top,
            "$count" => &mut options.count,
            "$expand" => &mut options.expand,
            "$skiptoken" => &mut options.skiptoken,
            "$deltatoken" => &mut options.deltatoken,
            "$apply" => &mut options.apply,
            "$id" => &mut options.id,
            n if n.starts_with('$') => return Err(Fail::unsupported_option(n)),
            // Custom query options and parameter aliases are ignored unless used.
            _ => {
                options.pairs.push(Pair {
                    name,
                    value,
                    raw: raw.to_owned(),
                });
                continue;
            }
        };
        if slot.is_some() {
            return Err(Fail::bad_query(format!(
                "Query option '{name}' was specified more than once, but it must be specified at most once."
            )));
        }
        *slot = Some(value.clone());
        options.pairs.push(Pair {
            name,
            value,
            raw: raw.to_owned(),
        });
    }
    Ok(options)
}

impl Options {
    /// The raw query string without the paging and delta options, for building nextLinks and deltaLinks.
    pub fn carried(&self, keep: impl Fn(&str) -> bool) -> String {
        self.pairs
            .iter()
            .filter(|p| p.name != "$skiptoken" && p.name != "$deltatoken" && keep(&p.name))
            .map(|p| p.raw.as_str())
            .collect::<Vec<_>>()
            .join("&")
    }

    pub fn top(&self) -> Result<Option<usize>, Fail> {
        match &self.top {
            None => Ok(None),
            Some(t) => t.trim().parse::<usize>().map(Some).map_err(|_| {
                Fail::bad_query(format!(
                    "Invalid value '{t}' for $top query option found. The $top query option requires a non-negative integer value."
                ))
            }),
        }
    }

    pub fn count(&self) -> Result<bool, Fail> {
        match self.count.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(Fail::bad_query(format!(
                "'{other}' is not a valid count option."
            ))),
        }
    }
}

/// Splits a comma-separated list, ignoring commas inside parentheses (for `$expand=a($select=x,y),b`).
pub fn split_top_level(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(list[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The `Prefer` header, which may hold several comma-joined preferences.
#[derive(Debug, Default, Clone)]
pub struct Prefer {
    pub max_page_size: Option<usize>,
    pub track_changes: bool,
    pub return_representation: bool,
    pub annotations: Option<String>,
    /// `odata.continue-on-error` on a `$batch`: every part runs, whatever the ones before it did.
    pub continue_on_error: bool,
}

impl Prefer {
    pub fn parse(headers: &[&str]) -> Result<Self, Fail> {
        let mut prefer = Prefer::default();
        for header in headers {
            for item in split_preferences(header) {
                let item = item.trim();
                let (key, value) = item.split_once('=').unwrap_or((item, ""));
                match key.trim() {
                    "odata.maxpagesize" => {
                        let size = value.trim().trim_matches('"').parse::<usize>().map_err(|_| {
                            Fail::bad_query(format!(
                                "The value '{value}' of the odata.maxpagesize preference is not a positive integer."
                            ))
                        })?;
                        if size == 0 {
                            return Err(Fail::bad_query(
                                "The odata.maxpagesize preference must be greater than zero.",
                            ));
                        }
                        prefer.max_page_size = Some(size);
                    }
                    "odata.track-changes" => prefer.track_changes = true,
                    // OData 4.01 drops the prefix and allows an explicit value.
                    "odata.continue-on-error" | "continue-on-error" => {
                        prefer.continue_on_error = !value.trim().eq_ignore_ascii_case("false");
                    }
                    "return" => prefer.return_representation = value.trim() == "representation",
                    "odata.include-annotations" => {
                        prefer.annotations = Some(value.trim().trim_matches('"').to_owned());
                    }
                    // Unknown preferences are ignored, as RFC 7240 asks.
                    _ => {}
                }
            }
        }
        Ok(prefer)
    }

    pub fn wants_annotation(&self, name: &str) -> bool {
        self.annotations.as_deref().is_some_and(|list| {
            list.split(',').map(str::trim).any(|a| {
                a == "*" || a == name || a.strip_suffix('*').is_some_and(|p| name.starts_with(p))
            })
        })
    }
}

/// Splits on commas outside double quotes (`odata.include-annotations="a,b"` is one preference).
fn split_preferences(header: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in header.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&header[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_as_space_and_keeps_raw_pairs() {
        let o = parse_options("$filter=name%20eq+'a%2Bb'&$top=3&custom=1").unwrap();
        assert_eq!(o.filter.as_deref(), Some("name eq 'a+b'"));
        assert_eq!(o.top().unwrap(), Some(3));
        assert_eq!(
            o.carried(|n| n != "$top"),
            "$filter=name%20eq+'a%2Bb'&custom=1"
        );
    }

    #[test]
    fn refuses_unsupported_repeated_and_miscased_options() {
        assert_eq!(
            parse_options("$skip=2").unwrap_err().message,
            "The query parameter $skip is not supported"
        );
        assert!(parse_options("$search=x").is_err());
        assert!(parse_options("$format=json").is_err());
        assert!(parse_options("$Filter=x").is_err());
        assert!(
            parse_options("$top=1&$top=2")
                .unwrap_err()
                .message
                .contains("more than once")
        );
    }

    #[test]
    fn reads_several_preferences_from_one_header() {
        let p = Prefer::parse(&[
            "odata.track-changes, odata.maxpagesize=10,odata.include-annotations=\"A.B,C.*\"",
        ])
        .unwrap();
        assert!(p.track_changes);
        assert_eq!(p.max_page_size, Some(10));
        assert!(p.wants_annotation("C.D"));
        assert!(!p.wants_annotation("E"));
    }

    #[test]
    fn splits_expand_lists_at_the_top_level_only() {
        assert_eq!(
            split_top_level("a($select=x,y), b"),
            vec!["a($select=x,y)", "b"]
        );
    }
}
