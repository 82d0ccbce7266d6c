//! A small, strict XML reader for the `FetchXML` subset: elements, attributes with single- or
//! double-quoted values, the five named entities and numeric character references, self-closing
//! tags, comments and an XML declaration. No crate in the lock file reads XML into a tree, and the
//! subset is small enough that a reader of our own is easier to keep strict than a general one.
//! CDATA sections, DOCTYPEs and processing instructions are refused as not implemented, so a query
//! that the real service would read is never silently misread here.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Element {
    pub(super) name: String,
    pub(super) attrs: Vec<(String, String)>,
    pub(super) children: Vec<Element>,
    /// The element's own text, entities resolved (only `<value>` elements have any that matters).
    pub(super) text: String,
}

impl Element {
    pub(super) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub(super) enum XmlError {
    /// Not well-formed: the service answers "Invalid XML." for these.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed XML outside the subset this reader handles.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Elements nest at most this deep; `FetchXML` needs far fewer, and the bound keeps recursion safe.
const MAX_DEPTH: usize = 64;

pub(super) fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = Reader {
        s: input.as_bytes(),
        text: input,
        i: 0,
    };
    reader.misc()?;
    if reader.s.get(reader.i) != Some(&b'<') {
        return Err(reader.malformed("the document has no root element"));
    }
    let root = reader.element(0)?;
    reader.misc()?;
    if reader.i != reader.s.len() {
        return Err(reader.malformed("there is content after the root element"));
    }
    Ok(root)
}

struct Reader<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':') || b >= 0x80
}

impl Reader<'_> {
    fn malformed(&self, what: &str) -> XmlError {
        XmlError::Malformed(format!("{what} (at offset {}).", self.i))
    }

    fn starts(&self, prefix: &str) -> bool {
        self.s[self.i..].starts_with(prefix.as_bytes())
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    /// Whitespace, comments and (before the root) an XML declaration.
    fn misc(&mut self) -> Result<(), XmlError> {
        loop {
            self.skip_ws();
            if self.starts("<!--") {
                self.comment()?;
            } else if self.starts("<?xml ")
                && self.i == self.text.len() - self.text.trim_start().len()
            {
                let end = self.text[self.i..]
                    .find("?>")
                    .ok_or_else(|| self.malformed("an unterminated XML declaration"))?;
                self.i += end + 2;
            } else if self.starts("<?") {
                return Err(XmlError::Unsupported(
                    "XML processing instructions in FetchXML",
                ));
            } else if self.starts("<!") {
                return Err(XmlError::Unsupported("DOCTYPE declarations in FetchXML"));
            } else {
                return Ok(());
            }
        }
    }

    fn comment(&mut self) -> Result<(), XmlError> {
        let end = self.text[self.i + 4..]
            .find("-->")
            .ok_or_else(|| self.malformed("an unterminated comment"))?;
        self.i += 4 + end + 3;
        Ok(())
    }

    fn name(&mut self) -> Result<String, XmlError> {
        let start = self.i;
        while self.s.get(self.i).copied().is_some_and(is_name_byte) {
            self.i += 1;
        }
        if start == self.i || self.s[start].is_ascii_digit() || self.s[start] == b'-' {
            return Err(self.malformed("a name was expected"));
        }
        Ok(self.text[start..self.i].to_owned())
    }

    /// Text up to `stop` (`<` for content, the quote for an attribute), entities resolved.
    fn chars(&mut self, stop: u8) -> Result<String, XmlError> {
        let mut out = String::new();
        loop {
            let start = self.i;
            while self
                .s
                .get(self.i)
                .is_some_and(|&b| b != stop && b != b'&' && b != b'<')
            {
                self.i += 1;
            }
            out.push_str(&self.text[start..self.i]);
            match self.s.get(self.i) {
                Some(b'&') => out.push(self.entity()?),
                Some(&b) if b == stop => return Ok(out),
                Some(b'<') => {
                    return Err(self.malformed("'<' is not allowed in an attribute value"));
                }
                _ => return Err(self.malformed("unexpected end of the document")),
            }
        }
    }

    fn entity(&mut self) -> Result<char, XmlError> {
        let end = self.text[self.i..]
            .find(';')
            .filter(|&n| n <= 12)
            .ok_or_else(|| self.malformed("an unterminated entity reference"))?;
        let name = &self.text[self.i + 1..self.i + end];
        let c = match name {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
            }
        };
        let c =
            c.ok_or_else(|| self.malformed(&format!("the entity '&{name};' is not defined")))?;
        self.i += end + 1;
        Ok(c)
    }

    fn element(&mut self, depth: usize) -> Result<Element, XmlError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed("elements nest too deeply"));
        }
        // At '<'.
        self.i += 1;
        let name = self.name()?;
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let before = self.i;
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b'/') => {
                    if self.s.get(self.i + 1) != Some(&b'>') {
                        return Err(self.malformed("'>' was expected after '/'"));
                    }
                    self.i += 2;
                    return Ok(Element {
                        name,
                        attrs,
                        children: Vec::new(),
                        text: String::new(),
                    });
                }
                Some(b'>') => {
                    self.i += 1;
                    break;
                }
                Some(_) if before == self.i => {
                    return Err(self.malformed("whitespace was expected between attributes"));
                }
                Some(_) => {
                    let attr = self.name()?;
                    self.skip_ws();
                    if self.s.get(self.i) != Some(&b'=') {
                        return Err(self.malformed("'=' was expected after an attribute name"));
                    }
                    self.i += 1;
                    self.skip_ws();
                    let Some(&quote @ (b'"' | b'\'')) = self.s.get(self.i) else {
                        return Err(self.malformed("an attribute value must be quoted"));
                    };
                    self.i += 1;
                    let value = self.chars(quote)?;
                    self.i += 1;
                    if attrs.iter().any(|(n, _)| *n == attr) {
                        return Err(self.malformed(&format!("the attribute '{attr}' is repeated")));
                    }
                    attrs.push((attr, value));
                }
                None => return Err(self.malformed("unexpected end of the document")),
            }
        }
        let mut children = Vec::new();
        let mut text = String::new();
        loop {
            text.push_str(&self.chars(b'<')?);
            if self.starts("</") {
                self.i += 2;
                let close = self.name()?;
                self.skip_ws();
                if close != name || self.s.get(self.i) != Some(&b'>') {
                    return Err(self.malformed(&format!(
                        "the start tag '{name}' does not match the end tag '{close}'"
                    )));
                }
                self.i += 1;
                return Ok(Element {
                    name,
                    attrs,
                    children,
                    text,
                });
            } else if self.starts("<!--") {
                self.comment()?;
            } else if self.starts("<![CDATA[") {
                return Err(XmlError::Unsupported("CDATA sections in FetchXML"));
            } else if self.starts("<?") || self.starts("<!") {
                return Err(XmlError::Unsupported(
                    "XML processing instructions in FetchXML",
                ));
            } else {
                children.push(self.element(depth + 1)?);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elements_attributes_entities_and_text() {
        let e = parse(
            "<?xml version=\"1.0\"?><!-- c --><a x='1 &amp; &lt;2&gt;' y=\"&quot;&apos;&#65;&#x42;\"><b/><v>t&amp;</v></a> ",
        )
        .unwrap();
        assert_eq!(e.name, "a");
        assert_eq!(e.attr("x"), Some("1 & <2>"));
        assert_eq!(e.attr("y"), Some("\"'AB"));
        assert_eq!(e.children.len(), 2);
        assert_eq!(e.children[1].text, "t&");
    }

    #[test]
    fn refuses_malformed_documents() {
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a x=1/>",
            "<a x='1'y='2'/>",
            "<a x='<'/>",
            "<a>&nbsp;</a>",
            "<a/><b/>",
            "<a x='1' x='2'/>",
        ] {
            assert!(matches!(parse(bad), Err(XmlError::Malformed(_))), "{bad}");
        }
        assert!(matches!(
            parse("<a><![CDATA[x]]></a>"),
            Err(XmlError::Unsupported(_))
        ));
    }
}
