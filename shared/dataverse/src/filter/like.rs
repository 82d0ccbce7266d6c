//! `contains`, `startswith` and `endswith` as the SQL `LIKE` Dataverse runs them.
//!
//! Dataverse does not escape the value: `%`, `_`, `[...]` and `[^...]` inside it are wildcards
//! (Microsoft Learn, "Use wildcard characters in conditions for string values"), so
//! `contains(name,'50%')` matches "50 and more". A client-side answer has to treat them the same
//! way, case-insensitively like the collation.

use super::text::is_plain_char;

/// Which string function a pattern came from; it decides where the implicit `%` go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StrFn {
    Contains,
    StartsWith,
    EndsWith,
}

impl StrFn {
    pub(super) fn name(self) -> &'static str {
        match self {
            StrFn::Contains => "contains",
            StrFn::StartsWith => "startswith",
            StrFn::EndsWith => "endswith",
        }
    }
}

/// A parsed `LIKE` pattern. Characters are stored lower-cased, subjects are lower-cased as read.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    pieces: Vec<Piece>,
    /// Why no subject can be matched exactly, if some part of the pattern depends on the collation.
    doubt: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// `%`: any run of characters, the empty one included.
    Any,
    /// `_`: exactly one character.
    One,
    Char(char),
    /// `[...]` (or `[^...]` when `negated`): one character from (or not from) the set.
    Set {
        negated: bool,
        items: Vec<Item>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Char(char),
    /// `a-z` or `0-9`: both ends letters or both digits, lower-cased.
    Range(char, char),
}

const OUTSIDE_ASCII: &str = "the pattern holds a character outside printable ASCII, which an accent-insensitive collation \
     may match differently";
const ODD_RANGE: &str = "the pattern holds a [x-y] range whose ends are not both letters or both \
                         digits, and the collation decides what lies between them";
const SUBJECT_OUTSIDE_ASCII: &str = "the column's text holds a character outside printable ASCII, \
                                     which an accent-insensitive collation may match differently";

impl Pattern {
    /// The pattern `func(column, value)` stands for. `Err` names what SQL Server's `LIKE` leaves
    /// undefined (an unclosed or empty `[]`), which no evaluation could settle.
    pub(super) fn new(func: StrFn, value: &str) -> Result<Pattern, &'static str> {
        let mut pieces = Vec::new();
        let mut doubt = None;
        if func != StrFn::StartsWith {
            pieces.push(Piece::Any);
        }
        let chars: Vec<char> = value.chars().collect();
        let mut at = 0;
        while let Some(&c) = chars.get(at) {
            at += 1;
            let piece = match c {
                '%' => Piece::Any,
                '_' => Piece::One,
                '[' => {
                    let Some(len) = chars[at..].iter().position(|&c| c == ']') else {
                        return Err("a '[' without a closing ']'");
                    };
                    let set = &chars[at..at + len];
                    at += len + 1;
                    let (negated, set) = match set.split_first() {
                        Some(('^', rest)) => (true, rest),
                        _ => (false, set),
                    };
                    if set.is_empty() {
                        return Err("an empty '[]' or '[^]' set");
                    }
                    Piece::Set {
                        negated,
                        items: items(set, &mut doubt),
                    }
                }
                c => {
                    if !is_plain_char(c) {
                        doubt = Some(OUTSIDE_ASCII);
                    }
                    Piece::Char(c.to_ascii_lowercase())
                }
            };
            pieces.push(piece);
        }
        if func != StrFn::EndsWith {
            pieces.push(Piece::Any);
        }
        Ok(Pattern { pieces, doubt })
    }

    /// Whether `subject` matches, or why that depends on the collation.
    ///
    /// A subject with characters outside printable ASCII is matched with those characters left to
    /// `%` alone: a match found that way is a match under any collation, since `%` takes whatever
    /// they are; no match found proves nothing, as the collation might equate them with pattern
    /// characters.
    pub(super) fn matches(&self, subject: &str) -> Result<bool, &'static str> {
        if let Some(doubt) = self.doubt {
            return Err(doubt);
        }
        let subject: Vec<char> = subject.chars().map(|c| c.to_ascii_lowercase()).collect();
        let found = self.search(&subject);
        if !found && !subject.iter().all(|&c| is_plain_char(c)) {
            return Err(SUBJECT_OUTSIDE_ASCII);
        }
        Ok(found)
    }

    fn search(&self, subject: &[char]) -> bool {
        let pieces = &self.pieces;
        // Greedy matching that, on a mismatch, lets the latest `%` swallow one more character and
        // retries from there: every other piece takes exactly one character, so an earlier `%` never
        // needs revisiting, and the work is at most subject × pattern.
        let (mut s, mut p) = (0, 0);
        let mut retry: Option<(usize, usize)> = None;
        loop {
            match pieces.get(p) {
                Some(Piece::Any) => {
                    retry = Some((p + 1, s));
                    p += 1;
                    continue;
                }
                Some(piece) => {
                    if let Some(&c) = subject.get(s)
                        && is_plain_char(c)
                        && one(piece, c)
                    {
                        s += 1;
                        p += 1;
                        continue;
                    }
                }
                None if s == subject.len() => return true,
                None => {}
            }
            match retry {
                Some((after, from)) if from < subject.len() => {
                    retry = Some((after, from + 1));
                    p = after;
                    s = from + 1;
                }
                _ => return false,
            }
        }
    }
}

/// The members of a `[...]` set.
fn items(set: &[char], doubt: &mut Option<&'static str>) -> Vec<Item> {
    let mut items = Vec::new();
    let mut at = 0;
    while let Some(&c) = set.get(at) {
        // `-` first or last is itself; between two characters it makes a range.
        if let (Some('-'), Some(&end)) = (set.get(at + 1), set.get(at + 2)) {
            let (low, high) = (c.to_ascii_lowercase(), end.to_ascii_lowercase());
            let same_kind = (low.is_ascii_lowercase() && high.is_ascii_lowercase())
                || (low.is_ascii_digit() && high.is_ascii_digit());
            if !same_kind {
                *doubt = Some(ODD_RANGE);
            }
            items.push(Item::Range(low, high));
            at += 3;
        } else {
            if !is_plain_char(c) {
                *doubt = Some(OUTSIDE_ASCII);
            }
            items.push(Item::Char(c.to_ascii_lowercase()));
            at += 1;
        }
    }
    items
}

/// Whether a single-character piece takes the (lower-cased, plain) character `c`.
fn one(piece: &Piece, c: char) -> bool {
    match piece {
        Piece::Any | Piece::One => true,
        Piece::Char(p) => *p == c,
        Piece::Set { negated, items } => {
            let mut hit = false;
            for item in items {
                hit |= match *item {
                    Item::Char(p) => p == c,
                    // Windows collations sort whitespace and punctuation before digits, and digits
                    // before letters, so a range of letters or of digits holds only its own kind
                    // (the ranges whose ends differ in kind were refused above).
                    Item::Range(low, high) => {
                        c.is_ascii_alphanumeric()
                            && low.is_ascii_digit() == c.is_ascii_digit()
                            && low <= c
                            && c <= high
                    }
                };
            }
            hit != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(func: StrFn, value: &str, subject: &str) -> Result<bool, &'static str> {
        Pattern::new(func, value).unwrap().matches(subject)
    }

    #[test]
    fn places_the_implicit_percent_signs_by_function() {
        use StrFn::{Contains, EndsWith, StartsWith};
        assert_eq!(like(Contains, "TOSO", "Contoso Ltd"), Ok(true));
        assert_eq!(like(StartsWith, "cont", "Contoso"), Ok(true));
        assert_eq!(like(StartsWith, "toso", "Contoso"), Ok(false));
        assert_eq!(like(EndsWith, "LTD", "Contoso Ltd"), Ok(true));
        assert_eq!(like(EndsWith, "Contoso", "Contoso Ltd"), Ok(false));
        assert_eq!(like(Contains, "", ""), Ok(true));
        assert_eq!(like(StartsWith, "", "x"), Ok(true));
        // nvarchar LIKE: trailing spaces in the subject count.
        assert_eq!(like(EndsWith, "ltd", "Contoso Ltd "), Ok(false));
    }

    #[test]
    fn treats_sql_wildcards_in_the_value_as_wildcards() {
        use StrFn::{Contains, EndsWith, StartsWith};
        assert_eq!(like(Contains, "50%", "50 and more"), Ok(true));
        assert_eq!(like(StartsWith, "c_n", "Contoso"), Ok(true));
        assert_eq!(like(StartsWith, "c_t", "Contoso"), Ok(false));
        assert_eq!(like(StartsWith, "[abc]o", "Contoso"), Ok(true));
        assert_eq!(like(StartsWith, "[^abc]o", "Contoso"), Ok(false));
        assert_eq!(like(StartsWith, "[a-d]o", "Contoso"), Ok(true));
        assert_eq!(like(StartsWith, "[0-9]", "Contoso"), Ok(false));
        assert_eq!(like(Contains, "[%]", "50%"), Ok(true));
        assert_eq!(like(Contains, "[%]", "50"), Ok(false));
        assert_eq!(like(Contains, "[_]", "a_b"), Ok(true));
        assert_eq!(like(Contains, "[-]", "a-b"), Ok(true));
        assert_eq!(like(Contains, "[a-]", "-"), Ok(true));
        assert_eq!(like(EndsWith, "%ltd", "Contoso Ltd"), Ok(true));
        // A trailing `%` in endswith: unsupported by Dataverse for speed, but still LIKE.
        assert_eq!(like(EndsWith, "ltd%", "Contoso Ltd."), Ok(true));
        assert_eq!(like(Contains, "a%b%c", "xaxxbxxcx"), Ok(true));
        assert_eq!(like(Contains, "a%b%c", "xaxxcxxbx"), Ok(false));
        assert_eq!(like(StartsWith, "]", "]x"), Ok(true));
    }

    #[test]
    fn refuses_what_the_collation_or_sql_server_decides() {
        assert!(Pattern::new(StrFn::Contains, "[abc").is_err());
        assert!(Pattern::new(StrFn::Contains, "[]").is_err());
        assert!(Pattern::new(StrFn::Contains, "[^]").is_err());
        assert_eq!(like(StrFn::Contains, "é", "Café"), Err(OUTSIDE_ASCII));
        assert_eq!(
            like(StrFn::Contains, "cafe", "Café"),
            Err(SUBJECT_OUTSIDE_ASCII)
        );
        assert_eq!(
            like(StrFn::Contains, "caf_", "Café"),
            Err(SUBJECT_OUTSIDE_ASCII)
        );
        // Found with the accent left to `%`: a match under any collation.
        assert_eq!(like(StrFn::Contains, "contoso", "Café Contoso"), Ok(true));
        assert_eq!(like(StrFn::EndsWith, "caf%", "Café"), Ok(true));
        assert_eq!(like(StrFn::Contains, "[!-/]", "a"), Err(ODD_RANGE));
        assert_eq!(like(StrFn::StartsWith, "[a-z]", "-x"), Ok(false));
        assert_eq!(like(StrFn::StartsWith, "[a-z]", "9x"), Ok(false));
        assert_eq!(like(StrFn::StartsWith, "[0-9]", "x"), Ok(false));
        assert_eq!(like(StrFn::StartsWith, "[^0-9]", "_"), Ok(true));
    }

    #[test]
    fn matches_long_subjects_in_bounded_time() {
        let subject = "a".repeat(5_000);
        let pattern = format!("{}b", "%a".repeat(50));
        assert_eq!(like(StrFn::Contains, &pattern, &subject), Ok(false));
    }
}
