//! Tokens, made on demand.
//!
//! The parser pulls one token at a time rather than lexing the whole text first, so a filter is
//! refused for the first thing wrong with it, read left to right: `a/any(x:x/b eq 1)` is refused as
//! a lambda, not for the `:` further on that this lexer has no token for.

use uuid::Uuid;

use super::FilterError;
use super::value::{Decimal, Instant, parse_date, parse_date_time};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A name, keyword, path, qualified name or alias: everything made of word characters.
    Word(String),
    Str(String),
    Number(Decimal),
    Guid(Uuid),
    DateTime(Instant),
    Date(i64),
    Open,
    Close,
    Comma,
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Where the token starts, in characters, for messages.
    pub(super) pos: usize,
    /// Where it starts and ends, in bytes, to quote the text.
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Token {
    /// The token as an error message names it.
    pub(super) fn describe(&self, text: &str) -> String {
        match &self.tok {
            Tok::End => "the end of the filter".to_owned(),
            _ => format!("'{}'", text.get(self.start..self.end).unwrap_or_default()),
        }
    }
}

#[derive(Debug)]
pub(super) struct Lexer<'a> {
    text: &'a str,
    /// Each character with its byte offset: positions in messages count characters.
    chars: Vec<(usize, char)>,
    at: usize,
}

/// What may follow a word: letters, digits, `_`, and the `.`/`/`/`@`/`$` of qualified names, paths
/// and aliases, so those reach the parser whole and can be refused by name.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '@' | '$')
}

/// Characters that may not directly follow a number, GUID or date: anything that would make the
/// literal part of a longer word.
fn glues(c: char) -> bool {
    is_word_char(c) || matches!(c, '-' | ':' | '+')
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Lexer {
            text,
            chars: text.char_indices().collect(),
            at: 0,
        }
    }

    fn char_at(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|&(_, c)| c)
    }

    fn byte_at(&self, i: usize) -> usize {
        self.chars.get(i).map_or(self.text.len(), |&(b, _)| b)
    }

    /// The text of characters `from..to`.
    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.text
            .get(self.byte_at(from)..self.byte_at(to))
            .unwrap_or_default()
    }

    /// How many characters from `from` on satisfy `pred`.
    fn run(&self, from: usize, pred: impl Fn(char) -> bool) -> usize {
        self.chars
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&(_, c)| pred(c))
            .count()
    }

    pub(super) fn next_token(&mut self) -> Result<Token, FilterError> {
        self.at += self.run(self.at, char::is_whitespace);
        let start = self.at;
        let Some(c) = self.char_at(start) else {
            return Ok(self.token(Tok::End, start));
        };
        let tok = match c {
            '(' => self.single(Tok::Open),
            ')' => self.single(Tok::Close),
            ',' => self.single(Tok::Comma),
            '\'' => self.string()?,
            _ => {
                if let Some(guid) = self.guid() {
                    guid
                } else if c.is_ascii_digit()
                    || (c == '-' && self.char_at(start + 1).is_some_and(|c| c.is_ascii_digit()))
                {
                    self.number_or_date()?
                } else if c.is_ascii_alphabetic() || matches!(c, '_' | '@' | '$') {
                    self.at += self.run(start, is_word_char);
                    Tok::Word(self.slice(start, self.at).to_owned())
                } else {
                    return Err(FilterError::Syntax {
                        position: start,
                        expected: "a value, a name, an operator or a parenthesis",
                        found: format!("'{c}'"),
                    });
                }
            }
        };
        Ok(self.token(tok, start))
    }

    fn token(&self, tok: Tok, start: usize) -> Token {
        Token {
            tok,
            pos: start,
            start: self.byte_at(start),
            end: self.byte_at(self.at),
        }
    }

    fn single(&mut self, tok: Tok) -> Tok {
        self.at += 1;
        tok
    }

    /// `'...'`, with `''` standing for one quote.
    fn string(&mut self) -> Result<Tok, FilterError> {
        let open = self.at;
        let mut value = String::new();
        let mut at = open + 1;
        loop {
            match self.char_at(at) {
                None => return Err(FilterError::UnterminatedString { position: open }),
                Some('\'') if self.char_at(at + 1) == Some('\'') => {
                    value.push('\'');
                    at += 2;
                }
                Some('\'') => break,
                Some(c) => {
                    value.push(c);
                    at += 1;
                }
            }
        }
        self.at = at + 1;
        Ok(Tok::Str(value))
    }

    /// An unquoted GUID, `8-4-4-4-12` hex digits, if one starts here.
    fn guid(&mut self) -> Option<Tok> {
        let mut at = self.at;
        for (group, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if group > 0 {
                if self.char_at(at) != Some('-') {
                    return None;
                }
                at += 1;
            }
            if self.run(at, |c| c.is_ascii_hexdigit()) < len {
                return None;
            }
            at += len;
        }
        if self.char_at(at).is_some_and(glues) {
            return None;
        }
        let guid = Uuid::try_parse(self.slice(self.at, at)).ok()?;
        self.at = at;
        Some(Tok::Guid(guid))
    }

    /// A number (`5`, `-2.5`, `1e3`, `5L`, `2.5M`) or, from `YYYY-`, a date or date-time.
    fn number_or_date(&mut self) -> Result<Tok, FilterError> {
        let start = self.at;
        let looks_like_date =
            self.run(start, |c| c.is_ascii_digit()) == 4 && self.char_at(start + 4) == Some('-');
        if looks_like_date {
            let len = self.run(start, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+')
            });
            self.at = start + len;
            let text = self.slice(start, self.at);
            if self.char_at(self.at).is_some_and(glues) {
                let glued = self.run(self.at, glues);
                return Err(invalid(start, "date", self.slice(start, self.at + glued)));
            }
            if len == 10 {
                return parse_date(text)
                    .map(Tok::Date)
                    .ok_or_else(|| invalid(start, "date", text));
            }
            if let Some(instant) = parse_date_time(text) {
                return Ok(Tok::DateTime(instant));
            }
            if parse_date_time(&format!("{text}Z")).is_some() {
                return Err(FilterError::Unsupported {
                    position: start,
                    construct: format!(
                        "the date-time '{text}' has no time-zone offset, and Dataverse's reading \
                         of it (UTC or the user's zone) is not documented; add Z or ±HH:MM"
                    ),
                });
            }
            return Err(invalid(start, "date-time", text));
        }
        // The number, then any letters glued to it, so `5L` and `5x` are judged whole.
        let mut len = usize::from(self.char_at(start) == Some('-'));
        len += self.run(start + len, |c| c.is_ascii_digit() || c == '.');
        if matches!(self.char_at(start + len), Some('e' | 'E')) {
            len += 1;
            if matches!(self.char_at(start + len), Some('+' | '-')) {
                len += 1;
            }
            len += self.run(start + len, |c| c.is_ascii_digit());
        }
        let number_len = len;
        len += self.run(start + len, |c| c.is_ascii_alphanumeric() || c == '_');
        self.at = start + len;
        if self.char_at(self.at).is_some_and(glues) {
            let glued = self.run(self.at, glues);
            return Err(invalid(start, "number", self.slice(start, self.at + glued)));
        }
        let number = self.slice(start, start + number_len);
        let whole = self.slice(start, self.at);
        let suffix = self.slice(start + number_len, self.at);
        let integral = number.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        match suffix {
            // `L` marks an Int64, `M` a Decimal and `D` a Double; the value is the same number.
            "" | "M" | "m" | "D" | "d" => {}
            "L" | "l" if integral => {}
            "F" | "f" => {
                return Err(FilterError::Unsupported {
                    position: start,
                    construct: format!(
                        "the single-precision literal '{whole}', which Dataverse rounds to 24 bits"
                    ),
                });
            }
            _ => return Err(invalid(start, "number", whole)),
        }
        Decimal::parse(number)
            .map(Tok::Number)
            .ok_or_else(|| invalid(start, "number", whole))
    }
}

fn invalid(position: usize, kind: &'static str, text: &str) -> FilterError {
    FilterError::InvalidLiteral {
        position,
        kind,
        text: text.to_owned(),
    }
}
