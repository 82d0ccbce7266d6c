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
//! - Lexing and parsing: at most [`PARSE_WORK_PER_BYTE`] × (bytes + 1). Per byte: a scan looks at
//!   it once, the lexer copies it once and parses it at most 4 times (a date: a copy and up to three
//!   formats), the parser clones it once and looks it up once, and one error message may quote the
//!   whole text: at most 7 units. Per token (at most one per byte, plus the end): dispatching it (1),
//!   the character that ends its scan (1), the GUID look-ahead (at most 36), the date check (10),
//!   descending from `or` to a primary expression (5), taking it (1) and the nodes it builds (at most
//!   2: a leaf and the operator joining it): at most 56 units. 7 + 56 = 63, rounded up to 64.
//! - Walking the tree for one row: every node is entered once and every inner node combined once,
//!   and every node needs a token of its own (a name, a literal, an operator, a function), so at most
//!   [`EVAL_WORK_PER_BYTE`] = 2 units per byte, plus 2.
//! - `LIKE`: at most [`LIKE_WORK`] × (subject + 1) × (pattern + 3), the subject and pattern in bytes
//!   (lowercasing never gives more characters than bytes). Matching backtracks only to the last `%`,
//!   so each of at most subject + 1 starting points walks the pattern once (2 units a piece at most,
//!   plus a class's characters), after one pass to split the pattern and one to lowercase both.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

use super::{Edm, Fail, Properties, StrFn, Work, key_bound, like, parse_counting, truth_counting};

const PARSE_WORK_PER_BYTE: u64 = 64;
const EVAL_WORK_PER_BYTE: u64 = 2;
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

struct Cols;

impl Properties for Cols {
    fn property(&self, name: &str) -> Result<(usize, Edm), Fail> {
        match name {
            "name" => Ok((0, Edm::String)),
            "employees" => Ok((1, Edm::Int32)),
            "id" => Ok((2, Edm::Guid)),
            "on" => Ok((3, Edm::DateTimeOffset)),
            // A complex value's leaf, which may contain a slash.
            "hold" | "Flag/Value" => Ok((4, Edm::Boolean)),
            "other" => Ok((5, Edm::String)),
            "revenue" => Ok((6, Edm::Decimal)),
            "day" => Ok((7, Edm::Date)),
            _ => Err(Fail::no_such_property(name, "Microsoft.Dynamics.CRM.test")),
        }
    }

    fn type_name(&self) -> String {
        "Microsoft.Dynamics.CRM.test".into()
    }
}

/// Rows of every shape a column can hold, including wildcard characters and non-ASCII text.
fn rows() -> [Vec<Value>; 3] {
    [
        vec![
            json!("O'Bryan Ltd"),
            json!(250),
            json!("70bf4d48-34cb-ed11-b596-0022481d68cd"),
            json!("2021-06-01T10:00:00Z"),
            json!(false),
            Value::Null,
            json!(1.5),
            json!("2021-06-01"),
        ],
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

/// Long chains of valid comparisons, so trees get deep without parentheses.
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
    (atom.clone(), prop::collection::vec((op, atom), 0..1200)).prop_map(|(first, rest)| {
        rest.into_iter()
            .fold(first.to_owned(), |text, (op, atom)| text + op + atom)
    })
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

/// Parses `text`, and evaluates it against every row: the work of each, and whether it parsed.
fn run(text: &str) -> (u64, Vec<u64>, bool) {
    let work = Work::default();
    let parsed = parse_counting(text, &Cols, &work);
    let mut walks = Vec::new();
    if let Ok(expr) = &parsed {
        for row in rows() {
            let walk = Work::default();
            truth_counting(expr, &row, &walk);
            walks.push(walk.steps());
        }
        key_bound(expr, &[(3, Edm::DateTimeOffset), (2, Edm::Guid)]);
    }
    (work.steps(), walks, parsed.is_ok())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_filter_text_panics_the_lexer_parser_or_evaluator(text in any_filter()) {
        run(&text);
    }

    #[test]
    fn lexing_and_parsing_do_work_linear_in_the_length(text in any_filter()) {
        let (steps, _, _) = run(&text);
        let budget = PARSE_WORK_PER_BYTE * bytes_plus_one(&text);
        prop_assert!(steps <= budget, "{steps} > {budget} for {} bytes", text.len());
    }

    #[test]
    fn evaluating_a_parsed_filter_takes_at_most_two_steps_a_node(text in any_filter()) {
        let (_, walks, _) = run(&text);
        let budget = EVAL_WORK_PER_BYTE * bytes_plus_one(&text);
        for steps in walks {
            prop_assert!(steps <= budget, "{steps} > {budget} for {} bytes", text.len());
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
        subject in "[a-c\\[\\]^-]{0,12}",
        pattern in "[a-c\\[\\]%_^-]{0,12}",
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
    // The longest chain a 32,768-character URL can carry: the tree is as deep as the chain is long.
    let text = vec!["hold"; 6_000].join(" or ");
    let (_, walks, parsed) = run(&text);
    assert!(parsed);
    assert_eq!(walks.len(), 3);
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
