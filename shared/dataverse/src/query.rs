//! OData query options, encoded the way Dataverse reads them.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Escaped in a query option's value: everything but unreserved characters and the punctuation OData
/// expressions are written with. In particular `&`, `+`, `#`, `%`, `=`, `;` and spaces are escaped, so a
/// value can never end its option early or turn into a space (Dataverse reads `+` as a space). `'` is
/// escaped too, as a URL parser escapes it in the query of an `https` URL: the text measured here is
/// then exactly the text sent.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b',')
    .remove(b'(')
    .remove(b')')
    .remove(b'/')
    .remove(b'*');

/// `$select`, `$filter`, `$orderby`, `$expand` and `$count`. Page size is not here: it travels in the
/// `Prefer` header, and `$top`/`$skip` are provided by [`Client::rows`](crate::Client::rows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub select: Option<String>,
    pub filter: Option<String>,
    pub orderby: Option<String>,
    pub expand: Option<String>,
    pub count: bool,
    /// Ask for formatted values and lookup annotations (see [`Prefer::formatted_values`]). It is
    /// not a query option: the reads that take a `Query` send it in their `Prefer` header.
    ///
    /// [`Prefer::formatted_values`]: crate::Prefer::formatted_values
    pub formatted_values: bool,
}

impl Query {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn select(mut self, columns: impl Into<String>) -> Self {
        self.select = Some(columns.into());
        self
    }

    #[must_use]
    pub fn filter(mut self, expression: impl Into<String>) -> Self {
        self.filter = Some(expression.into());
        self
    }

    #[must_use]
    pub fn orderby(mut self, order: impl Into<String>) -> Self {
        self.orderby = Some(order.into());
        self
    }

    #[must_use]
    pub fn formatted_values(mut self, on: bool) -> Self {
        self.formatted_values = on;
        self
    }

    #[must_use]
    pub fn expand(mut self, expand: impl Into<String>) -> Self {
        self.expand = Some(expand.into());
        self
    }

    /// The options that are set, by name, in the order they are sent.
    fn options(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("$select", &self.select),
            ("$filter", &self.filter),
            ("$orderby", &self.orderby),
            ("$expand", &self.expand),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            value
                .as_deref()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        })
    }

    /// The option that takes the most room in the URL once encoded, and that room: what a caller must
    /// shorten when the URL is too long.
    pub fn largest_option(&self) -> Option<(&'static str, usize)> {
        self.options()
            .map(|(name, value)| (name, encoded_len(value)))
            .max_by_key(|(_, len)| *len)
    }

    /// `$select=a,b&$filter=...`, each value encoded; empty when no option is set.
    pub fn to_query_string(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in self.options() {
            parts.push(format!("{name}={}", encode(value)));
        }
        if self.count {
            parts.push("$count=true".to_owned());
        }
        parts.join("&")
    }
}

pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE).to_string()
}

/// The length of `encode(value)`, without building it.
fn encoded_len(value: &str) -> usize {
    utf8_percent_encode(value, VALUE).map(str::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_values_so_they_cannot_break_out_of_their_option() {
        let q = Query::new()
            .select("name,revenue")
            .filter("name eq 'A&B + C#1' and contains(name,'100%')")
            .orderby("name desc");
        assert_eq!(
            q.to_query_string(),
            "$select=name,revenue&$filter=name%20eq%20%27A%26B%20%2B%20C%231%27%20and%20contains(name,%27100%25%27)&$orderby=name%20desc"
        );
    }

    #[test]
    fn names_the_option_that_takes_the_most_room_once_encoded() {
        let q = Query::new()
            .select("a".repeat(30))
            .filter("x ".repeat(10))
            .orderby("b".repeat(35));
        assert_eq!(q.largest_option(), Some(("$filter", 40)));
        assert_eq!(Query::new().largest_option(), None);
    }

    #[test]
    fn leaves_out_empty_options() {
        let q = Query {
            select: Some(String::new()),
            count: true,
            ..Query::default()
        };
        assert_eq!(q.to_query_string(), "$count=true");
        assert_eq!(Query::new().to_query_string(), "");
    }
}
