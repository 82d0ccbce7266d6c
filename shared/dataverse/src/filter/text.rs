//! Text comparison as the database compares it, or a refusal to guess.
//!
//! Dataverse compares text in SQL Server under the organisation's collation: case-insensitive
//! ("String filters are case-insensitive", Microsoft Learn, "Filter rows using OData") and, for the
//! usual `Latin1_General_CI_AI`, accent-insensitive too, with Windows "word sort" rules for
//! punctuation. Those tables are out of reach here, so this module answers only where such
//! collations agree with ASCII case folding, and otherwise says why it will not answer:
//!
//! - two texts equal letter for letter, case aside, are equal;
//! - SQL Server pads the shorter text with spaces before `=` and `<` (ANSI SQL-92 comparison
//!   semantics), so trailing spaces never count;
//! - the first position where two texts differ decides their order, and that they are unequal,
//!   when both characters there are ASCII letters, digits or spaces: those carry primary weights in
//!   every Latin collation, in the order space < digits < letters;
//! - two texts of printable ASCII (plus tab, CR and LF, assumed not ignorable) that differ anywhere
//!   are unequal: accents and width cannot make them equal.

use std::cmp::Ordering;

/// Why a text comparison is left undecided.
pub(super) const ACCENTS: &str = "the texts differ first at a character outside printable ASCII, \
     which an accent-insensitive collation may equate with another, reorder or ignore";
pub(super) const PUNCTUATION: &str =
    "the texts differ first at punctuation, which the collation orders by word-sort rules";

/// Whether `a` and `b` are equal under the collation.
pub(super) fn equal(a: &str, b: &str) -> Result<bool, &'static str> {
    let (a, b) = (a.trim_end_matches(' '), b.trim_end_matches(' '));
    if a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
    {
        return Ok(true);
    }
    if is_plain(a) && is_plain(b) {
        return Ok(false);
    }
    order(a, b).map(|o| o == Ordering::Equal)
}

/// The order of `a` and `b` under the collation.
pub(super) fn order(a: &str, b: &str) -> Result<Ordering, &'static str> {
    let (a, b) = (a.trim_end_matches(' '), b.trim_end_matches(' '));
    let mut left = a.chars();
    let mut right = b.chars();
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ok(Ordering::Equal),
            // A proper prefix sorts first if what follows it carries weight of its own.
            (None, Some(c)) => return weighty(c).map(|()| Ordering::Less),
            (Some(c), None) => return weighty(c).map(|()| Ordering::Greater),
            (Some(x), Some(y)) => {
                if x == y || x.to_lowercase().eq(y.to_lowercase()) {
                    continue;
                }
                return match (rank(x), rank(y)) {
                    (Some(x), Some(y)) => Ok(x.cmp(&y)),
                    _ if is_printable(x) && is_printable(y) => Err(PUNCTUATION),
                    _ => Err(ACCENTS),
                };
            }
        }
    }
}

/// Characters with the same meaning in every case-insensitive collation: ASCII printables, and the
/// whitespace multi-line text columns hold.
pub(super) fn is_plain(text: &str) -> bool {
    text.chars().all(is_plain_char)
}

pub(super) fn is_plain_char(c: char) -> bool {
    matches!(c, ' '..='~' | '\t' | '\n' | '\r')
}

/// A sort key for the characters whose relative order every Latin collation shares: space, then
/// digits, then letters, case aside (also ASCII's order once folded).
fn rank(c: char) -> Option<u8> {
    let c = c.to_ascii_lowercase();
    matches!(c, ' ' | '0'..='9' | 'a'..='z').then_some(c as u8)
}

fn is_printable(c: char) -> bool {
    matches!(c, ' '..='~')
}

fn weighty(c: char) -> Result<(), &'static str> {
    match rank(c) {
        Some(_) => Ok(()),
        None if is_printable(c) => Err(PUNCTUATION),
        None => Err(ACCENTS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_folds_case_and_ignores_trailing_spaces() {
        assert_eq!(equal("Contoso Ltd", "CONTOSO LTD"), Ok(true));
        assert_eq!(equal("abc", "abc  "), Ok(true));
        assert_eq!(equal("Müller", "mÜller"), Ok(true));
        assert_eq!(equal("abc", " abc"), Ok(false));
        assert_eq!(equal("co-op", "coop"), Ok(false));
        assert_eq!(equal("a\tb", "a b"), Ok(false));
        // Decided before the accent: c against f.
        assert_eq!(equal("Café", "Fabrikam"), Ok(false));
        // Accent-insensitive collations call these equal; accent-sensitive ones do not.
        assert_eq!(equal("Cafe", "Café"), Err(ACCENTS));
        assert_eq!(equal("a\u{0}", "a"), Err(ACCENTS));
    }

    #[test]
    fn ordering_is_decided_by_letters_digits_and_spaces_only() {
        assert_eq!(order("apple", "Banana"), Ok(Ordering::Less));
        assert_eq!(order("a b", "ab"), Ok(Ordering::Less));
        assert_eq!(order("9", "10"), Ok(Ordering::Greater));
        assert_eq!(order("Z1", "za"), Ok(Ordering::Less));
        assert_eq!(order("ab", "ab c"), Ok(Ordering::Less));
        assert_eq!(order("ab ", "AB"), Ok(Ordering::Equal));
        assert_eq!(order("O'Brien", "Oberon"), Err(PUNCTUATION));
        assert_eq!(order("O'Brien", "P"), Ok(Ordering::Less));
        assert_eq!(order("ab", "ab-"), Err(PUNCTUATION));
        assert_eq!(order("Émile", "Zoe"), Err(ACCENTS));
        assert_eq!(order("Zoë", "Zoe"), Err(ACCENTS));
    }
}
