//! The `LIKE` matcher behind `contains`, `startswith` and `endswith`.
//!
//! Dataverse runs those functions as SQL `LIKE`, so wildcards in the client's value are live there:
//! a client that forgets to escape them gets surprising rows in production, and should get the same
//! rows here. The matcher stands apart because it is the one part whose cost grows with the row as
//! well as the filter. A pattern is split into pieces once, when the filter is parsed, and matching
//! backtracks only to the last `%`, so however a pattern is built, a row's cost grows no faster
//! than its length times the pattern's.

use super::{StrFn, Work};

/// `contains`/`startswith`/`endswith` become a SQL `LIKE` on the server, so `%`, `_`, `[abc]` and
/// `[^abc]` inside the value are wildcards there, and here. Case-insensitive, as the collation is.
#[derive(Debug, Clone)]
pub struct Pattern {
    pieces: Vec<Piece>,
    /// The pattern lowercased, with the `%` the function adds around it; classes refer into it.
    chars: Vec<char>,
}

impl Pattern {
    pub(super) fn new(value: &str, func: StrFn, work: &Work) -> Self {
        let mut chars: Vec<char> = Vec::with_capacity(value.len() + 2);
        if func != StrFn::StartsWith {
            chars.push('%');
        }
        chars.extend(value.chars().flat_map(char::to_lowercase));
        if func != StrFn::EndsWith {
            chars.push('%');
        }
        work.add(chars.len());
        let pieces = pieces(&chars, work);
        Pattern { pieces, chars }
    }

    /// A pattern used as written, with no `%` added: `FetchXML`'s `like` operator.
    pub(super) fn whole(value: &str, work: &Work) -> Self {
        let chars: Vec<char> = value.chars().flat_map(char::to_lowercase).collect();
        work.add(chars.len());
        let pieces = pieces(&chars, work);
        Pattern { pieces, chars }
    }

    /// Whether `subject` matches. The subject is lowercased as it is read, without a copy: this
    /// runs once per row.
    pub(super) fn matches(&self, subject: &str, work: &Work) -> bool {
        like_match(
            subject.chars().flat_map(char::to_lowercase),
            &self.pieces,
            &self.chars,
            work,
        )
    }
}

/// One element of a `LIKE` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// `%`
    Any,
    /// `_`
    One,
    Char(char),
    /// `[...]` or `[^...]`: the class's characters are `pattern[from..to]`.
    Class {
        negated: bool,
        from: usize,
        to: usize,
    },
}

/// Splits a pattern into pieces in one pass. Matching used to look for a class's closing `]` each
/// time it met a `[`, which made a pattern of many `[` cost the square of its length per character
/// of the subject.
fn pieces(p: &[char], work: &Work) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(p.len());
    // Once a search for `]` has failed, none follows, and every later `[` is a plain character: so
    // the searches together look at each character at most once.
    let mut may_close = true;
    let mut i = 0;
    while i < p.len() {
        work.add(1);
        let piece = match p[i] {
            '%' => Piece::Any,
            '_' => Piece::One,
            '[' if may_close => {
                let close = p[i + 1..].iter().position(|&c| {
                    work.add(1);
                    c == ']'
                });
                if let Some(offset) = close {
                    let end = i + 1 + offset;
                    let negated = offset > 0 && p[i + 1] == '^';
                    pieces.push(Piece::Class {
                        negated,
                        from: i + 1 + usize::from(negated),
                        to: end,
                    });
                    i = end + 1;
                    continue;
                }
                may_close = false;
                Piece::Char('[')
            }
            c => Piece::Char(c),
        };
        pieces.push(piece);
        i += 1;
    }
    pieces
}

/// Matches a (lowercased) subject against pieces. The subject is an iterator so it can be lowercased
/// lazily; it is cloned to remember a position, which costs a few words, not an allocation.
fn like_match(
    subject: impl Iterator<Item = char> + Clone,
    pieces: &[Piece],
    chars: &[char],
    work: &Work,
) -> bool {
    // Backtracking to the last '%' only: at most one pass over the pattern for each starting point
    // in the subject.
    let mut rest = subject;
    let mut pi = 0;
    // The last `%` seen, and the subject after what it has swallowed so far.
    let mut star = None;
    loop {
        work.add(1);
        let mut after = rest.clone();
        let Some(c) = after.next() else {
            break;
        };
        if let Some(&piece) = pieces.get(pi) {
            let matched = match piece {
                Piece::Any => {
                    star = Some((pi, rest.clone()));
                    pi += 1;
                    continue;
                }
                Piece::One => true,
                Piece::Char(p) => p == c,
                Piece::Class { negated, from, to } => {
                    work.add(to - from);
                    in_class(&chars[from..to], c) != negated
                }
            };
            if matched {
                rest = after;
                pi += 1;
                continue;
            }
        }
        match &mut star {
            Some((sp, swallowed)) => {
                // Let the `%` swallow one more character, and try the rest of the pattern there.
                swallowed.next();
                rest = swallowed.clone();
                pi = *sp + 1;
            }
            None => return false,
        }
    }
    let left = pieces.get(pi..).unwrap_or_default();
    work.add(left.len());
    left.iter().all(|&piece| piece == Piece::Any)
}

/// Whether `c` is in a class's characters (`a-z` ranges included).
fn in_class(class: &[char], c: char) -> bool {
    let mut hit = false;
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == '-' {
            hit |= class[i] <= c && c <= class[i + 2];
            i += 3;
        } else {
            hit |= class[i] == c;
            i += 1;
        }
    }
    hit
}
