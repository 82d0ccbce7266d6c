//! The values of a function's parameters, as the URL carries them: inline
//! (`RetrieveTotalRecordCount(EntityNames=['account'])`) or as a parameter alias's value
//! (`?@p1=["account","contact"]`). These are the URL literals of the `OData` ABNF (`'text'` with `''`
//! for a quote, numbers, `true`, `false`, `null`, GUIDs), and JSON arrays and objects for collections
//! and structured values, in which the `OData` library's JSON reader takes strings in single quotes
//! as well as double.
//!
//! Errors carry the `OData` library's own words (`ExpressionLexer`), which Dataverse passes on.

use serde_json::{Map, Number, Value};
use uuid::Uuid;

/// How deep arrays and objects may nest. A URL holds up to 32,768 characters, enough brackets to
/// exhaust a thread's stack if each one recursed; the `OData` library stops well before, too.
const MAX_DEPTH: usize = 100;

/// A literal, before it meets the type of the parameter it is given to.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Boolean(bool),
    /// `Edm.Int32`, or `Edm.Int64` past its range.
    Integer(i64),
    /// `1.5`: `Edm.Decimal`, kept as written.
    Decimal(String),
    /// `1e3`, `INF`, `NaN`: `Edm.Double`.
    Double(f64),
    String(String),
    Guid(Uuid),
    Array(Vec<Value>),
    Object(Map<String, Value>),
    /// A bare name. In a URL it is a property path, which no function parameter can refer to.
    Name(String),
}

impl Literal {
    /// The type the `OData` library gives the literal, as its error messages name it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Literal::Null => "null",
            Literal::Boolean(_) => "Edm.Boolean",
            Literal::Integer(n) if i32::try_from(*n).is_ok() => "Edm.Int32",
            Literal::Integer(_) => "Edm.Int64",
            Literal::Decimal(_) => "Edm.Decimal",
            Literal::Double(_) => "Edm.Double",
            Literal::String(_) => "Edm.String",
            Literal::Guid(_) => "Edm.Guid",
            Literal::Array(_) => "Collection(Edm.Untyped)",
            Literal::Object(_) | Literal::Name(_) => "Edm.Untyped",
        }
    }
}

/// Why a literal cannot be read; positions count characters from 0, as the library's do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("Expression expected at position {at} in '{text}'.")]
    Expected { at: usize, text: String },
    #[error("There is an unterminated string literal at position {at} in '{text}'.")]
    Unterminated { at: usize, text: String },
    #[error("Syntax error: character '{found}' is not valid at position {at} in '{text}'.")]
    Character {
        found: char,
        at: usize,
        text: String,
    },
    #[error("Syntax error at position {at} in '{text}'.")]
    At { at: usize, text: String },
    #[error("Recursion depth exceeded allowed limit.")]
    TooDeep,
}

/// Reads one literal, the whole of `text` (surrounding spaces aside).
pub fn parse(text: &str) -> Result<Literal, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut reader = Reader {
        chars: &chars,
        pos: 0,
        depth: 0,
        text,
    };
    reader.skip_spaces();
    let literal = reader.literal()?;
    reader.skip_spaces();
    if reader.pos < chars.len() {
        return Err(reader.at());
    }
    Ok(literal)
}

struct Reader<'a> {
    chars: &'a [char],
    pos: usize,
    /// Arrays and objects open around the current position.
    depth: usize,
    text: &'a str,
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn at(&self) -> SyntaxError {
        SyntaxError::At {
            at: self.pos,
            text: self.text.to_owned(),
        }
    }

    fn character(&self, found: char) -> SyntaxError {
        SyntaxError::Character {
            found,
            at: self.pos,
            text: self.text.to_owned(),
        }
    }

    /// The run of characters from the current position that `keep` accepts.
    fn word(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn literal(&mut self) -> Result<Literal, SyntaxError> {
        let Some(first) = self.peek() else {
            return Err(SyntaxError::Expected {
                at: self.pos,
                text: self.text.to_owned(),
            });
        };
        match first {
            '\'' => self.url_string().map(Literal::String),
            '[' | '{' => match self.json()? {
                Value::Array(items) => Ok(Literal::Array(items)),
                Value::Object(map) => Ok(Literal::Object(map)),
                // `json` reads an array or object when it starts at a bracket or brace.
                _ => Err(self.at()),
            },
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                // A GUID can start with digits; it is the longer reading.
                if let Some(guid) = self.guid() {
                    return Ok(Literal::Guid(guid));
                }
                self.number()
            }
            c if c.is_alphabetic() || c == '_' => {
                if let Some(guid) = self.guid() {
                    return Ok(Literal::Guid(guid));
                }
                let name = self.word(|c| c.is_alphanumeric() || c == '_' || c == '.');
                Ok(match name.as_str() {
                    "null" => Literal::Null,
                    "true" => Literal::Boolean(true),
                    "false" => Literal::Boolean(false),
                    "INF" => Literal::Double(f64::INFINITY),
                    "NaN" => Literal::Double(f64::NAN),
                    _ => Literal::Name(name),
                })
            }
            other => Err(self.character(other)),
        }
    }

    /// `'...'`, a quote written twice.
    fn url_string(&mut self) -> Result<String, SyntaxError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(SyntaxError::Unterminated {
                        at: self.pos,
                        text: self.text.to_owned(),
                    });
                }
                Some('\'') if self.chars.get(self.pos + 1) == Some(&'\'') => {
                    out.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn guid(&mut self) -> Option<Uuid> {
        let end = self.pos + 36;
        let candidate: String = self.chars.get(self.pos..end)?.iter().collect();
        let shaped = candidate.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
        let followed = self
            .chars
            .get(end)
            .is_none_or(|c| !(c.is_alphanumeric() || *c == '-'));
        if !(shaped && followed) {
            return None;
        }
        let id = Uuid::parse_str(&candidate).ok()?;
        self.pos = end;
        Some(id)
    }

    fn number(&mut self) -> Result<Literal, SyntaxError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        if self.peek() == Some('I') {
            let name = self.word(char::is_alphanumeric);
            let negative = self.chars[start] == '-';
            return match name.as_str() {
                "INF" if negative => Ok(Literal::Double(f64::NEG_INFINITY)),
                "INF" => Ok(Literal::Double(f64::INFINITY)),
                _ => {
                    self.pos = start;
                    Err(self.at())
                }
            };
        }
        let digits = self.word(|c| c.is_ascii_digit());
        if digits.is_empty() {
            self.pos = start;
            return Err(self.at());
        }
        let mut fraction = false;
        let mut exponent = false;
        if self.peek() == Some('.') {
            self.pos += 1;
            if self.word(|c| c.is_ascii_digit()).is_empty() {
                return Err(self.at());
            }
            fraction = true;
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some('-' | '+')) {
                self.pos += 1;
            }
            if self.word(|c| c.is_ascii_digit()).is_empty() {
                return Err(self.at());
            }
            exponent = true;
        }
        let written: String = self.chars[start..self.pos].iter().collect();
        if exponent {
            return written
                .parse::<f64>()
                .map(Literal::Double)
                .map_err(|_| self.at());
        }
        if !fraction && let Ok(n) = written.parse::<i64>() {
            return Ok(Literal::Integer(n));
        }
        // A fraction, or a whole number past Int64, is a decimal.
        Ok(Literal::Decimal(written.trim_start_matches('+').to_owned()))
    }

    /// A JSON value, with strings in single quotes as well as double.
    fn json(&mut self) -> Result<Value, SyntaxError> {
        self.skip_spaces();
        if matches!(self.peek(), Some('[' | '{')) {
            if self.depth == MAX_DEPTH {
                return Err(SyntaxError::TooDeep);
            }
            self.depth += 1;
            let value = self.structured();
            self.depth -= 1;
            return value;
        }
        self.scalar()
    }

    /// An array or object, at `[` or `{`.
    fn structured(&mut self) -> Result<Value, SyntaxError> {
        let value = match self.peek() {
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_spaces();
                if self.peek() == Some(']') {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.json()?);
                    self.skip_spaces();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.at()),
                    }
                }
                Value::Array(items)
            }
            Some('{') => {
                self.pos += 1;
                let mut map = Map::new();
                self.skip_spaces();
                if self.peek() == Some('}') {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                loop {
                    self.skip_spaces();
                    let key = match self.peek() {
                        Some(quote @ ('"' | '\'')) => self.json_string(quote)?,
                        _ => return Err(self.at()),
                    };
                    self.skip_spaces();
                    if self.peek() != Some(':') {
                        return Err(self.at());
                    }
                    self.pos += 1;
                    let value = self.json()?;
                    map.insert(key, value);
                    self.skip_spaces();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some('}') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.at()),
                    }
                }
                Value::Object(map)
            }
            _ => return Err(self.at()),
        };
        Ok(value)
    }

    /// A JSON string, number, `true`, `false` or `null`.
    fn scalar(&mut self) -> Result<Value, SyntaxError> {
        let value = match self.peek() {
            None | Some('[' | '{') => return Err(self.at()),
            Some(quote @ ('"' | '\'')) => Value::String(self.json_string(quote)?),
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let start = self.pos;
                let written = self.word(|c| c.is_ascii_digit() || "+-.eE".contains(c));
                let number = written
                    .parse::<i64>()
                    .map(Number::from)
                    .ok()
                    .or_else(|| written.parse::<f64>().ok().and_then(Number::from_f64));
                let Some(n) = number else {
                    self.pos = start;
                    return Err(self.at());
                };
                Value::Number(n)
            }
            Some(_) => {
                let start = self.pos;
                match self.word(char::is_alphabetic).as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => {
                        self.pos = start;
                        return Err(self.at());
                    }
                }
            }
        };
        Ok(value)
    }

    /// A JSON string in `quote`s, with backslash escapes.
    fn json_string(&mut self, quote: char) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(SyntaxError::Unterminated {
                    at: start,
                    text: self.text.to_owned(),
                });
            };
            self.pos += 1;
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(self.at());
                    };
                    self.pos += 1;
                    out.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'u' => {
                            let hex = self.word(|c| c.is_ascii_hexdigit());
                            let code = (hex.len() == 4)
                                .then(|| u32::from_str_radix(&hex, 16).ok())
                                .flatten()
                                .and_then(char::from_u32);
                            match code {
                                Some(c) => c,
                                None => return Err(self.at()),
                            }
                        }
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use serde_json::json;

    use super::{Literal, SyntaxError, parse};

    /// What literals are made of, and a few characters they are not.
    const ALPHABET: &[char] = &[
        '[',
        ']',
        '{',
        '}',
        '\'',
        '"',
        '\\',
        ',',
        ':',
        '0',
        '7',
        '9',
        'a',
        'f',
        'A',
        '.',
        'e',
        'E',
        '+',
        '-',
        ' ',
        'n',
        'u',
        'l',
        'r',
        't',
        'I',
        'N',
        'F',
        'é',
        '€',
        '\u{1F600}',
    ];

    proptest! {
        #![proptest_config(Config {
            cases: 512,
            rng_seed: RngSeed::Fixed(0x11_7E8A),
            ..Config::default()
        })]

        /// No text panics the reader, and a refusal points inside the text (or just past its end).
        #[test]
        fn any_text_is_read_or_refused_within_it(
            text in prop::collection::vec(prop::sample::select(ALPHABET), 0..40)
                .prop_map(|chars| chars.into_iter().collect::<String>())
        ) {
            let length = text.chars().count();
            match parse(&text) {
                Ok(_) | Err(SyntaxError::TooDeep) => {}
                Err(
                    SyntaxError::Expected { at, .. }
                    | SyntaxError::Unterminated { at, .. }
                    | SyntaxError::Character { at, .. }
                    | SyntaxError::At { at, .. },
                ) => prop_assert!(at <= length, "{at} > {length} in {text:?}"),
            }
        }
    }

    #[test]
    fn reads_the_url_literals() {
        assert_eq!(
            parse("'O''Brien'"),
            Ok(Literal::String("O'Brien".to_owned()))
        );
        assert_eq!(parse(" 1033 "), Ok(Literal::Integer(1033)));
        assert_eq!(parse("-5"), Ok(Literal::Integer(-5)));
        assert_eq!(parse("1.50"), Ok(Literal::Decimal("1.50".to_owned())));
        assert_eq!(parse("2e3"), Ok(Literal::Double(2000.0)));
        assert_eq!(parse("-INF"), Ok(Literal::Double(f64::NEG_INFINITY)));
        assert_eq!(parse("true"), Ok(Literal::Boolean(true)));
        assert_eq!(parse("null"), Ok(Literal::Null));
        assert_eq!(
            parse("9f1c0000-0000-4000-8000-000000000003").map(|l| l.type_name()),
            Ok("Edm.Guid")
        );
        assert_eq!(parse("3000000000").map(|l| l.type_name()), Ok("Edm.Int64"));
        assert_eq!(parse("account"), Ok(Literal::Name("account".to_owned())));
    }

    #[test]
    fn reads_json_arrays_and_objects_with_either_quote() {
        assert_eq!(
            parse(r#"["account", 'contact', "a\"b"]"#),
            Ok(Literal::Array(vec![
                json!("account"),
                json!("contact"),
                json!("a\"b")
            ]))
        );
        assert_eq!(parse("[]"), Ok(Literal::Array(Vec::new())));
        assert_eq!(
            parse("{'@odata.id':'contacts(1)','n':[1,2.5,null,true]}"),
            Ok(Literal::Object(
                json!({"@odata.id": "contacts(1)", "n": [1, 2.5, null, true]})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            ))
        );
    }

    #[test]
    fn refuses_in_the_library_s_words() {
        assert_eq!(
            parse("\"2026-03-04\"").map_err(|e| e.to_string()),
            Err(
                "Syntax error: character '\"' is not valid at position 0 in '\"2026-03-04\"'."
                    .to_owned()
            )
        );
        assert_eq!(
            parse("'open"),
            Err(SyntaxError::Unterminated {
                at: 5,
                text: "'open".to_owned()
            })
        );
        assert_eq!(
            parse("").map_err(|e| e.to_string()),
            Err("Expression expected at position 0 in ''.".to_owned())
        );
        assert_eq!(
            parse("['a',]").map_err(|e| e.to_string()),
            Err("Syntax error at position 5 in '['a',]'.".to_owned())
        );
        assert_eq!(
            parse("'a' 'b'").map_err(|e| e.to_string()),
            Err("Syntax error at position 4 in ''a' 'b''.".to_owned())
        );
        assert!(parse("[\"open").is_err());
        let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse(&deep), Err(SyntaxError::TooDeep));
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&fine).is_ok());
    }
}
