//! The lexer: `$filter` text to tokens.
//!
//! The literal forms of the `OData` grammar (strings with doubled quotes, unquoted GUIDs, dates and
//! date-times, numbers with type suffixes) are told apart by their characters alone, so they are
//! settled here, once, and the parser only has to think about precedence and types. Every token
//! keeps its position because the service's error messages quote positions, and a client's tests
//! may compare those messages; the errors this stage raises itself (an unterminated string, a
//! character nothing starts with) are worded as the service words them for the same reason.

use uuid::Uuid;

use super::Work;
use crate::clock;
use crate::reply::Fail;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Ident(String),
    Str(String),
    Int(i64),
    Num(f64),
    Guid(Uuid),
    DateTime(i64),
    Date(String),
    Open,
    Close,
    Comma,
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) pos: usize,
}

pub(super) fn lex(text: &str, work: &Work) -> Result<Vec<Token>, Fail> {
    let chars: Vec<char> = text.chars().collect();
    work.add(chars.len());
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        work.add(1);
        let c = chars[i];
        let start = i;
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => {
                i += 1;
                Kind::Open
            }
            ')' => {
                i += 1;
                Kind::Close
            }
            ',' => {
                i += 1;
                Kind::Comma
            }
            '\'' => {
                let mut value = String::new();
                i += 1;
                loop {
                    work.add(1);
                    match chars.get(i) {
                        None => {
                            work.add(text.len());
                            return Err(Fail::bad_query(format!(
                                "There is an unterminated literal at position {} in '{text}'.",
                                chars.len()
                            )));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            value.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            value.push(other);
                            i += 1;
                        }
                    }
                }
                Kind::Str(value)
            }
            _ => {
                if let Some((guid, len)) = guid_at(&chars[i..], work) {
                    i += len;
                    Kind::Guid(guid)
                } else if c.is_ascii_digit()
                    || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
                {
                    let (kind, len) = number_or_date(&chars[i..], work)
                        .ok_or_else(|| syntax(text, start, work))?;
                    i += len;
                    kind
                } else if c.is_alphabetic() || c == '_' || c == '@' || c == '$' {
                    let len = chars[i..]
                        .iter()
                        .take_while(|c| {
                            work.add(1);
                            c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '@' | '$')
                        })
                        .count();
                    i += len;
                    work.add(len);
                    Kind::Ident(chars[start..i].iter().collect())
                } else {
                    return Err(syntax(text, start, work));
                }
            }
        };
        tokens.push(Token { kind, pos: start });
    }
    tokens.push(Token {
        kind: Kind::End,
        pos: chars.len(),
    });
    Ok(tokens)
}

pub(super) fn syntax(text: &str, pos: usize, work: &Work) -> Fail {
    work.add(text.len());
    Fail::bad_query(format!("Syntax error at position {pos} in '{text}'."))
}

fn is_word_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// An unquoted GUID literal: 8-4-4-4-12 hex digits not followed by more word characters.
fn guid_at(chars: &[char], work: &Work) -> Option<(Uuid, usize)> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut at = 0;
    for (n, len) in GROUPS.iter().enumerate() {
        if n > 0 {
            work.add(1);
            if chars.get(at) != Some(&'-') {
                return None;
            }
            at += 1;
        }
        for _ in 0..*len {
            work.add(1);
            if !chars.get(at)?.is_ascii_hexdigit() {
                return None;
            }
            at += 1;
        }
    }
    if is_word_char(chars.get(at)) || chars.get(at) == Some(&'-') {
        return None;
    }
    work.add(2 * at);
    let text: String = chars[..at].iter().collect();
    Uuid::parse_str(&text).ok().map(|g| (g, at))
}

fn number_or_date(chars: &[char], work: &Work) -> Option<(Kind, usize)> {
    // Date or date-time: YYYY-MM-DD[THH:MM[:SS[.fff]](Z|+HH:MM|-HH:MM)]
    work.add(10);
    let is_date = chars.len() >= 10
        && chars[..4].iter().all(char::is_ascii_digit)
        && chars[4] == '-'
        && chars[5..7].iter().all(char::is_ascii_digit)
        && chars[7] == '-'
        && chars[8..10].iter().all(char::is_ascii_digit);
    if is_date {
        let len = chars
            .iter()
            .take_while(|c| {
                work.add(1);
                c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+')
            })
            .count();
        // A copy, then up to three parse attempts.
        work.add(4 * len);
        let text: String = chars[..len].iter().collect();
        if len == 10 {
            let date = clock::parse_date(&text)?;
            return Some((Kind::Date(clock::format_date(date)), len));
        }
        return clock::parse_datetime(&text).map(|t| (Kind::DateTime(t), len));
    }
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| {
                work.add(1);
                c.is_ascii_digit()
            })
            .count()
    };
    let mut len = usize::from(chars[0] == '-');
    len += digits(len);
    let mut decimal = false;
    if chars.get(len) == Some(&'.') && chars.get(len + 1).is_some_and(char::is_ascii_digit) {
        decimal = true;
        len += 1;
        len += digits(len);
    }
    if matches!(chars.get(len), Some('e' | 'E')) {
        let mut exp = len + 1;
        if matches!(chars.get(exp), Some('+' | '-')) {
            exp += 1;
        }
        let exponent = digits(exp);
        if exponent > 0 {
            decimal = true;
            len = exp + exponent;
        }
    }
    // A copy, then one parse.
    work.add(2 * len);
    let text: String = chars[..len].iter().collect();
    // Type suffixes: 5L (Int64), 5.0M (Decimal), 5.0D / 5.0F (Double/Single).
    let suffix = chars
        .get(len)
        .filter(|c| matches!(c, 'L' | 'l' | 'M' | 'm' | 'D' | 'd' | 'F' | 'f'));
    let total = len + usize::from(suffix.is_some());
    if is_word_char(chars.get(total)) {
        return None;
    }
    if decimal || matches!(suffix, Some('M' | 'm' | 'D' | 'd' | 'F' | 'f')) {
        text.parse::<f64>().ok().map(|n| (Kind::Num(n), total))
    } else {
        text.parse::<i64>().ok().map(|n| (Kind::Int(n), total))
    }
}
