//! Properties of the `$filter` lexer, parser and evaluator, over arbitrary text and over token soup
//! built from the grammar.
//!
//! The number of cases per property comes from `PROPTEST_CASES` (proptest reads it itself); without
//! it, [`config`] runs a brief default fit for every test run. A long run:
//!
//! ```sh
//! PROPTEST_CASES=200000 CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
//!     cargo test --release -p dataverse-emulator --lib odata::filter::props
//! ```
//!
//! (The release profile without its fat LTO builds in about a minute and runs some 6,000 cases a
//! second on one core, ten times the debug build.)
//!
//! The seed is fixed, so an ordinary run always tries the same cases and a red CI run reproduces;
//! `PROPTEST_RNG_SEED=<n>` explores others. A failure proptest finds is shrunk and saved under
//! `tests/emulator/proptest-regressions/`, which is checked in and replayed first on every run.
//!
//! Cost is measured in [`Work`] units, not time, so the bounds hold on any machine. The bounds:
//!
//! - Lexing and parsing: at most [`PARSE_WORK_PER_BYTE`] × (bytes + 1). Per byte, at most 8 units:
//!   the lexer collects it (1) and scans it (1); a date's byte is copied and parsed in up to three
//!   formats (4), or a `LIKE` pattern's byte is lowercased, split into pieces and looked at by the
//!   search for a `]` (3); the parser clones it (1) and one error message may quote the whole text
//!   (1). Per token (at most one per byte, plus the end), at most 56 units: dispatching it (1), the
//!   character that ends its scan (1), the GUID look-ahead (at most 36), the date check (10),
//!   descending from `or` to a primary expression (5), taking it (1) and the nodes it builds (at most
//!   2: a leaf and the operator joining it); a function's token instead pays for the two `%` its
//!   pattern gets (6), which is less. 8 + 56 = 64.
//! - The tree: at most one node per byte ([`NODES_PER_BYTE`]), as every node has a token of its
//!   own (a name, a literal, an operator, a function), so evaluating a row, which visits each node
//!   once, is linear in the filter's length. Its depth is at most 4 × ([`MAX_DEPTH`] + 1): an `or`,
//!   an `and`, a comparison and a leaf, and at most 4 more levels for each level of nesting the
//!   parser allows (the most being a function's node over its argument's `or`, `and` and
//!   comparison), so evaluating and dropping it may recurse.
//! - `LIKE`: at most [`LIKE_WORK`] × (subject + 1) × (pattern + 3), the subject and pattern in bytes
//!   (lowercasing never gives more characters than bytes). Matching backtracks only to the last `%`,
//!   so each of at most subject + 1 starting points walks the pattern once (2 units a piece at most,
//!   plus a class's characters), after one pass to lowercase the pattern and two to split it.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

use super::eval::truth;
use super::parser::{MAX_DEPTH, parse_counting};
use super::tests::{Cols, row};
use super::{Edm, Expr, Pattern, StrFn, Work, key_bound};

const PARSE_WORK_PER_BYTE: u64 = 64;
const NODES_PER_BYTE: u64 = 1;
const LIKE_WORK: u64 = 4;

/// Brief by default, so `make test` stays quick; `PROPTEST_CASES` overrides `cases`, and
/// `PROPTEST_RNG_SEED` the seed.
fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x0DA7_A5E7),
        // Long inputs make shrinking slow; a minute of it is plenty to read a failure.
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// Rows of every shape a column can hold, including wildcard characters and non-ASCII text.
fn rows() -> [Vec<Value>; 3] {
    [
        row(),
        vec![Value::Null; 8],
        vec![
            json!("[%_]^-İstanbul ǅ ß"),
            json!(i64::MAX),
            json!("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            json!("9999-12-31T23:59:59Z"),
            json!(true),
            json!(""),
            json!(-1e300),
            json!("0001-01-01"),
        ],
    ]
}

/// Work units for a string's length in bytes, plus one.
fn bytes_plus_one(text: &str) -> u64 {
    u64::try_from(text.len()).unwrap_or(u64::MAX) + 1
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("name"),
        Just("employees"),
        Just("id"),
        Just("on"),
        Just("hold"),
        Just("other"),
        Just("revenue"),
        Just("day"),
        Just("Flag/Value"),
        Just("primarycontactid/fullname"),
        Just("nme"),
        Just("@p1"),
        Just("$it"),
        Just("Microsoft.Dynamics.CRM.Today"),
        Just("eq"),
        Just("ne"),
        Just("gt"),
        Just("ge"),
        Just("lt"),
        Just("le"),
        Just("and"),
        Just("or"),
        Just("not"),
        Just("has"),
        Just("in"),
        Just("add"),
        Just("AND"),
        Just("contains"),
        Just("startswith"),
        Just("endswith"),
        Just("tolower"),
        Just("any"),
        Just("null"),
        Just("true"),
        Just("false"),
        Just("("),
        Just(")"),
        Just(","),
        Just("'"),
        Just("''"),
        Just("-"),
        Just("."),
    ]
    .prop_map(str::to_owned)
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        // Strings, with doubled quotes and LIKE wildcards inside.
        "'([^']|''|%|_|\\[|\\]|\\^){0,12}'",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        "-?[0-9]{1,30}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,4})?[LlMmDdFf]?",
        // Huge literals.
        (1usize..400).prop_map(|n| "9".repeat(n)),
        (1usize..400).prop_map(|n| format!("0.{}1e-{n}", "0".repeat(n))),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        any::<u128>()
            .prop_map(|n| format!("'{}'", uuid::Uuid::from_u128(n).hyphenated()).to_uppercase()),
        // Almost GUIDs: a group too short or too long, a stray character.
        "[0-9a-fA-F]{7,9}-[0-9a-fA-F]{3,5}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{11,13}[g_]?",
        // Dates and date-times, valid and not.
        "[0-9]{4}-[0-1][0-9]-[0-3][0-9](T[0-2][0-9]:[0-5][0-9](:[0-6][0-9](\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
        "-?[0-9]{4,6}-[0-9]{2}-[0-9]{2}T[0-9:.+-]{0,20}",
    ]
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => word(),
        3 => literal(),
        1 => (1usize..160).prop_map(|n| "(".repeat(n)),
        1 => (1usize..160).prop_map(|n| ")".repeat(n)),
        1 => (1usize..160).prop_map(|n| "not ".repeat(n)),
        1 => "[\\PC]{1,3}",
    ]
}

/// Tokens of the grammar in any order, joined by nothing, spaces or other white space.
fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            token(),
            prop_oneof![Just(""), Just(" "), Just("  "), Just("\t")],
        ),
        0..80,
    )
    .prop_map(|parts| parts.into_iter().map(|(t, sep)| t + sep).collect())
}

/// A literal of one type, or now and then `null` or any literal at all (which may not type-check).
fn typed(of: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![
        16 => of,
        1 => Just("null".to_owned()),
        1 => literal(),
    ]
    .boxed()
}

fn text_literal() -> BoxedStrategy<String> {
    typed("'([^']|''|%|_|\\[|\\]|\\^){0,12}'".boxed())
}

fn number_literal() -> BoxedStrategy<String> {
    typed(
        prop_oneof![
            any::<i32>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            "-?[0-9]{1,6}\\.[0-9]{1,4}[mMdD]?",
        ]
        .boxed(),
    )
}

fn guid_literal() -> BoxedStrategy<String> {
    typed(
        any::<(u128, bool)>()
            .prop_map(|(n, quoted)| {
                let guid = uuid::Uuid::from_u128(n);
                if quoted {
                    format!("'{guid}'")
                } else {
                    guid.to_string()
                }
            })
            .boxed(),
    )
}

fn date_literal() -> BoxedStrategy<String> {
    typed("(19|20|99)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])".boxed())
}

fn date_time_literal() -> BoxedStrategy<String> {
    typed(
        prop_oneof![
            date_literal(),
            "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T[01][0-9]:[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,7})?)?(Z|[+-]0[0-9]:[03]0)",
        ]
        .boxed(),
    )
}

/// A condition that type-checks, or nearly (now and then a literal of the wrong type).
fn condition() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just("eq"),
        Just("ne"),
        Just("gt"),
        Just("ge"),
        Just("lt"),
        Just("le")
    ];
    let function = prop_oneof![Just("contains"), Just("startswith"), Just("endswith")];
    prop_oneof![
        (op.clone(), text_literal()).prop_map(|(op, lit)| format!("name {op} {lit}")),
        (op.clone(), number_literal()).prop_map(|(op, lit)| format!("employees {op} {lit}")),
        (op.clone(), number_literal()).prop_map(|(op, lit)| format!("revenue {op} {lit}")),
        (op.clone(), guid_literal()).prop_map(|(op, lit)| format!("{lit} {op} id")),
        (op.clone(), date_time_literal()).prop_map(|(op, lit)| format!("on {op} {lit}")),
        (op.clone(), date_literal()).prop_map(|(op, lit)| format!("day {op} {lit}")),
        (function.clone(), text_literal()).prop_map(|(f, lit)| format!("{f}(name,{lit})")),
        (function, text_literal(), text_literal())
            .prop_map(|(f, subject, pattern)| format!("{f}({subject}, {pattern})")),
        op.clone().prop_map(|op| format!("name {op} other")),
        op.prop_map(|op| format!("other {op} null")),
        Just("hold".to_owned()),
        Just("hold eq true".to_owned()),
        Just("Flag/Value".to_owned()),
    ]
}

/// Well-formed filters: conditions combined with `and`, `or`, `not`, parentheses, and booleans
/// compared with each other.
fn expression() -> impl Strategy<Value = String> {
    condition().prop_recursive(10, 200, 4, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop_oneof![Just("and"), Just("or")],
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) ne ({b})")),
        ]
    })
}

/// A well-formed filter with one mistake: a token put in, a cut, or a character taken out.
fn nearly_well_formed() -> impl Strategy<Value = String> {
    (expression(), token(), any::<prop::sample::Index>(), 0..3u8).prop_map(
        |(text, token, at, how)| {
            let boundaries: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let at = boundaries[at.index(boundaries.len())];
            match how {
                0 => format!("{} {token} {}", &text[..at], &text[at..]),
                1 => text[..at].to_owned(),
                _ => {
                    let mut text = text;
                    if at < text.len() {
                        text.remove(at);
                    }
                    text
                }
            }
        },
    )
}

/// Long chains of valid conditions joined by `and` and `or`, which would make a deep tree if chains
/// nested, and long chains of comparisons (`hold eq true ne hold ...`), which do nest.
fn chain() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("hold"),
        Just("name eq 'x'"),
        Just("employees gt 5"),
        Just("contains(name,'b%[r]')"),
        Just("not hold"),
        Just("(on ge 2021-01-01)"),
    ];
    let op = prop_oneof![Just(" and "), Just(" or ")];
    let link = prop_oneof![Just(" eq true"), Just(" ne hold"), Just(" eq not hold")];
    prop_oneof![
        (atom.clone(), prop::collection::vec((op, atom), 0..1200)).prop_map(|(first, rest)| {
            rest.into_iter()
                .fold(first.to_owned(), |text, (op, atom)| text + op + atom)
        }),
        prop::collection::vec(link, 0..1200).prop_map(|links| format!("hold{}", links.concat())),
    ]
}

fn any_filter() -> impl Strategy<Value = String> {
    prop_oneof![
        // Arbitrary Unicode, short and long.
        1 => any::<String>(),
        1 => prop::collection::vec(any::<char>(), 0..2000).prop_map(String::from_iter),
        3 => soup(),
        3 => expression(),
        3 => nearly_well_formed(),
        1 => chain(),
    ]
}

/// Text for `LIKE`: wildcard and bracket soup, or runs of one character (`[[[[[a`), which is what
/// makes a backtracking matcher work hardest.
fn like_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "([a-c\\[\\]%_^-]|\\PC){0,60}",
        prop::collection::vec(
            (
                prop_oneof![2 => Just("[".to_owned()), 1 => "[a-c\\]%_^-]"],
                1usize..150
            ),
            0..4
        )
        .prop_map(|runs| runs.into_iter().map(|(c, n)| c.repeat(n)).collect()),
    ]
}

/// The number of nodes in a tree, and its depth.
fn shape(expr: &Expr) -> (u64, u64) {
    let (nodes, depth) = match expr {
        Expr::Prop(..) | Expr::Lit(_) => (0, 0),
        Expr::Cmp(_, a, b) | Expr::Str(_, a, b) => {
            let ((x, p), (y, q)) = (shape(a), shape(b));
            (x + y, p.max(q))
        }
        Expr::Not(a) | Expr::Like(a, _) => shape(a),
        Expr::And(terms) | Expr::Or(terms) => terms
            .iter()
            .map(shape)
            .fold((0, 0), |(n, d), (x, p)| (n + x, d.max(p))),
    };
    (nodes + 1, depth + 1)
}

/// Parses `text` and, if it parsed, evaluates it against every row and derives its key bound: the
/// lexer's and parser's work, and the tree's shape.
fn run(text: &str) -> (u64, Option<(u64, u64)>) {
    let work = Work::default();
    let parsed = parse_counting(text, &Cols, &work);
    let shape = parsed.ok().map(|expr| {
        for row in rows() {
            truth(&expr, &row);
        }
        key_bound(&expr, &[(3, Edm::DateTimeOffset), (2, Edm::Guid)]);
        shape(&expr)
    });
    (work.steps(), shape)
}

/// `contains`/`startswith`/`endswith` of `pattern` on `subject`, as evaluation does it, adding the
/// work of both compiling the pattern and matching.
fn like(subject: &str, pattern: &str, func: StrFn, work: &Work) -> bool {
    Pattern::new(pattern, func, work).matches(subject, work)
}

proptest! {
    #![proptest_config(config())]

    /// One property for three claims, so each generated text is parsed and evaluated once: no text
    /// panics the lexer, parser or evaluator (any panic fails the case), parsing does work linear in
    /// the length, and the tree is linear in the length and no deeper than the nesting limit allows.
    #[test]
    fn any_text_parses_in_linear_work_into_a_tree_of_linear_size_and_bounded_depth(
        text in any_filter(),
    ) {
        let (steps, shape) = run(&text);
        let budget = PARSE_WORK_PER_BYTE * bytes_plus_one(&text);
        prop_assert!(steps <= budget, "{steps} > {budget} units for {} bytes", text.len());
        if let Some((nodes, depth)) = shape {
            let budget = NODES_PER_BYTE * bytes_plus_one(&text);
            prop_assert!(nodes <= budget, "{nodes} > {budget} nodes for {} bytes", text.len());
            let deepest = 4 * (u64::from(MAX_DEPTH) + 1);
            prop_assert!(depth <= deepest, "{depth} > {deepest} levels");
        }
    }

    #[test]
    fn like_costs_at_most_subject_times_pattern(subject in like_text(), pattern in like_text()) {
        let budget = LIKE_WORK * bytes_plus_one(&subject) * (bytes_plus_one(&pattern) + 2);
        for func in [StrFn::Contains, StrFn::StartsWith, StrFn::EndsWith] {
            let work = Work::default();
            like(&subject, &pattern, func, &work);
            prop_assert!(work.steps() <= budget, "{} > {budget}", work.steps());
        }
    }

    #[test]
    fn like_matches_exactly_as_the_reference_matcher(
        // Upper case, and `İ`, which lowercases to two characters, try the lazy lowercasing.
        subject in "[a-cA-Cİ\\[\\]^-]{0,12}",
        pattern in "[a-cA-Cİ\\[\\]%_^-]{0,12}",
    ) {
        let lower = |s: &str| -> Vec<char> { s.chars().flat_map(char::to_lowercase).collect() };
        for func in [StrFn::Contains, StrFn::StartsWith, StrFn::EndsWith] {
            let mut wrapped = Vec::new();
            if func != StrFn::StartsWith {
                wrapped.push('%');
            }
            wrapped.extend(lower(&pattern));
            if func != StrFn::EndsWith {
                wrapped.push('%');
            }
            prop_assert_eq!(
                like(&subject, &pattern, func, &Work::default()),
                reference::like_match(&lower(&subject), &wrapped),
                "{:?}", func
            );
        }
    }
}

#[test]
fn a_pattern_of_many_open_brackets_costs_linear_work_per_subject_character() {
    // Each `[` used to send the matcher looking for a `]` to the end of the pattern.
    let pattern = "[".repeat(2_000);
    let subject = "[".repeat(50);
    let work = Work::default();
    like(&subject, &pattern, StrFn::Contains, &work);
    assert!(work.steps() < 1_000_000, "{}", work.steps());
}

#[test]
fn a_long_chain_of_conditions_evaluates_and_drops_without_exhausting_the_stack() {
    // The longest chain a URL can carry: 32,768 characters, and `+` decodes to a space, so with a
    // one-letter column each term (`x+or+`) takes 5 characters, about 6,550 terms. `hold` stands in
    // for the column: the tree is the same. On a thread with a small stack, so a tree as deep as the
    // chain is long (which evaluating and dropping walk recursively) overflows it, and the test
    // process dies, rather than passing on a larger default stack.
    let text = vec!["hold"; 6_550].join(" or ");
    let checked = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let (_, shape) = run(&text);
            shape
        })
        .unwrap()
        .join()
        .unwrap();
    let (nodes, depth) = checked.unwrap();
    assert_eq!((nodes, depth), (6_551, 2));
}

/// The matcher as it was before patterns were split into pieces: slow on many `[`, but the
/// definition of what matches.
mod reference {
    pub(super) fn like_match(s: &[char], p: &[char]) -> bool {
        let (mut si, mut pi) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() {
                match p[pi] {
                    '%' => {
                        star = Some((pi, si));
                        pi += 1;
                        continue;
                    }
                    '_' => {
                        si += 1;
                        pi += 1;
                        continue;
                    }
                    '[' => {
                        if let Some((matched, len)) = bracket(&p[pi..], s[si]) {
                            if matched {
                                si += 1;
                                pi += len;
                                continue;
                            }
                        } else if s[si] == '[' {
                            si += 1;
                            pi += 1;
                            continue;
                        }
                    }
                    c if c == s[si] => {
                        si += 1;
                        pi += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|&c| c == '%')
    }

    fn bracket(p: &[char], c: char) -> Option<(bool, usize)> {
        let end = p.iter().position(|&x| x == ']')?;
        let class = &p[1..end];
        let (negated, class) = match class.first() {
            Some('^') => (true, &class[1..]),
            _ => (false, class),
        };
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
        Some((hit != negated, end + 1))
    }
}
