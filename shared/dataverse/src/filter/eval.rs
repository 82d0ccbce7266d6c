//! Whether a row matches: Dataverse's rules, or an [`Unknowable`] saying why they cannot be applied.
//!
//! Dataverse has no `NOT` over a condition: its query model (`QueryExpression`, `FetchXML`) negates by
//! choosing the opposite operator (`ne` for `eq`, `le` for `gt`, `not-like` for `like`; the wildcard
//! page lists "not contains", "not startswith" and "not endswith" as operators of their own). So
//! negation is pushed down to the comparisons here too, by De Morgan's laws, and a comparison is
//! evaluated as the operator it becomes. After that nothing is negated, and SQL's "unknown" for a
//! null is simply "not matched".

use std::borrow::Cow;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::like::StrFn;
use super::text;
use super::value::{Decimal, Instant, guid_order, parse_date, parse_date_time};
use super::{Literal, Node, Op, Operand, Unknowable};

/// A value being compared.
enum Val<'a> {
    Null,
    Bool(bool),
    /// With whether it came from a JSON float, which keeps only 15 to 17 significant digits.
    Number(Cow<'a, Decimal>, bool),
    Text(&'a str),
    Guid(Uuid),
    DateTime(Instant),
    Date(i64),
}

impl Val<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "a boolean",
            Val::Number(..) => "a number",
            Val::Text(_) => "a string",
            Val::Guid(_) => "a GUID",
            Val::DateTime(_) => "a date-time",
            Val::Date(_) => "a date",
        }
    }
}

/// Why a comparison was not decided, before it is told which condition it was.
enum Doubt {
    Mismatch,
    Collation(&'static str),
    Inexact(&'static str),
}

const SUB_SECOND: &str = "a date-time with a fractional second lies within a second of the \
                          other, and how Dataverse rounds fractions is not documented";
const FLOAT_DIGITS: &str = "a number from a JSON float is compared at more than 15 significant \
                            digits, beyond what a float holds exactly";
const READINGS: &str = "the texts compare differently as text and as GUIDs or dates, and without \
                        a schema the column's type is not known";
const COLUMN_NULL: &str = "one of two compared columns is null, and Dataverse does not document \
                           what a column comparison does with null";
const NEGATED_NULL: &str = "the column is null, and Dataverse does not document whether its \
                            'not contains/startswith/endswith' keeps rows whose column is null";

/// Evaluates `node`, or its negation when `negated`.
pub(super) fn eval(
    node: &Node,
    row: &Map<String, Value>,
    negated: bool,
) -> Result<bool, Unknowable> {
    match node {
        Node::And(terms) if negated => any(terms, row, true),
        Node::And(terms) => all(terms, row, false),
        Node::Or(terms) if negated => all(terms, row, true),
        Node::Or(terms) => any(terms, row, false),
        Node::Not(inner) => eval(inner, row, !negated),
        Node::Compare {
            op,
            left,
            right,
            text,
        } => {
            let op = if negated { op.negate() } else { *op };
            compare(op, left, right, text, row)
        }
        Node::Like {
            func,
            column,
            pattern,
            text,
        } => match row.get(column) {
            // SQL's LIKE is never true of null; its negation is undocumented (NEGATED_NULL).
            None | Some(Value::Null) if negated => Err(Unknowable::Inexact {
                condition: text.clone(),
                reason: NEGATED_NULL,
            }),
            None | Some(Value::Null) => Ok(false),
            Some(Value::String(s)) => {
                pattern
                    .matches(s)
                    .map(|m| m != negated)
                    .map_err(|reason| Unknowable::Collation {
                        condition: text.clone(),
                        reason,
                    })
            }
            Some(other) => {
                let value = value_of(column, other, text)?;
                Err(Unknowable::Mismatch {
                    condition: text.clone(),
                    left: format!("column '{column}' holding {}", value.kind()),
                    right: text_function(*func),
                })
            }
        },
    }
}

fn text_function(func: StrFn) -> String {
    format!("the text pattern of {}()", func.name())
}

/// True unless a term is false; a term that cannot be decided only matters when none is false.
fn all(terms: &[Node], row: &Map<String, Value>, negated: bool) -> Result<bool, Unknowable> {
    let mut doubt = None;
    for term in terms {
        match eval(term, row, negated) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                doubt.get_or_insert(e);
            }
        }
    }
    doubt.map_or(Ok(true), Err)
}

/// False unless a term is true; a term that cannot be decided only matters when none is true.
fn any(terms: &[Node], row: &Map<String, Value>, negated: bool) -> Result<bool, Unknowable> {
    let mut doubt = None;
    for term in terms {
        match eval(term, row, negated) {
            Ok(false) => {}
            Ok(true) => return Ok(true),
            Err(e) => {
                doubt.get_or_insert(e);
            }
        }
    }
    doubt.map_or(Ok(false), Err)
}

fn compare(
    op: Op,
    left: &Operand,
    right: &Operand,
    text: &str,
    row: &Map<String, Value>,
) -> Result<bool, Unknowable> {
    let l = operand_value(left, row, text)?;
    let r = operand_value(right, row, text)?;
    if matches!((left, right), (Operand::Column(_), Operand::Column(_)))
        && (matches!(l, Val::Null) || matches!(r, Val::Null))
    {
        return Err(Unknowable::Inexact {
            condition: text.to_owned(),
            reason: COLUMN_NULL,
        });
    }
    holds(op, &l, &r).map_err(|doubt| match doubt {
        Doubt::Mismatch => Unknowable::Mismatch {
            condition: text.to_owned(),
            left: describe(left, &l),
            right: describe(right, &r),
        },
        Doubt::Collation(reason) => Unknowable::Collation {
            condition: text.to_owned(),
            reason,
        },
        Doubt::Inexact(reason) => Unknowable::Inexact {
            condition: text.to_owned(),
            reason,
        },
    })
}

fn describe(operand: &Operand, value: &Val<'_>) -> String {
    match operand {
        Operand::Column(name) => format!("column '{name}' holding {}", value.kind()),
        Operand::Literal(_) => format!("{} literal", value.kind()),
    }
}

fn operand_value<'a>(
    operand: &'a Operand,
    row: &'a Map<String, Value>,
    text: &str,
) -> Result<Val<'a>, Unknowable> {
    Ok(match operand {
        Operand::Column(name) => match row.get(name) {
            // Images leave null columns out, so absent is null.
            None => Val::Null,
            Some(value) => value_of(name, value, text)?,
        },
        Operand::Literal(literal) => match literal {
            Literal::Null => Val::Null,
            Literal::Bool(b) => Val::Bool(*b),
            Literal::Number(n) => Val::Number(Cow::Borrowed(n), false),
            Literal::Text(s) => Val::Text(s),
            Literal::Guid(g) => Val::Guid(*g),
            Literal::DateTime(t) => Val::DateTime(*t),
            Literal::Date(d) => Val::Date(*d),
        },
    })
}

fn value_of<'a>(column: &str, value: &'a Value, text: &str) -> Result<Val<'a>, Unknowable> {
    let not_scalar = |found| Unknowable::NotScalar {
        condition: text.to_owned(),
        column: column.to_owned(),
        found,
    };
    Ok(match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        // serde_json writes every number it holds in a form `Decimal` reads.
        Value::Number(n) => match Decimal::parse(&n.to_string()) {
            Some(d) => Val::Number(Cow::Owned(d), n.is_f64()),
            None => return Err(not_scalar("number in an unexpected form")),
        },
        Value::String(s) => Val::Text(s),
        Value::Array(_) => return Err(not_scalar("array")),
        Value::Object(_) => return Err(not_scalar("object")),
    })
}

/// Whether `a op b` holds for two scalar values.
fn holds(op: Op, a: &Val<'_>, b: &Val<'_>) -> Result<bool, Doubt> {
    let ordered =
        |o: Option<std::cmp::Ordering>| o.map(|o| op.holds(o)).ok_or(Doubt::Inexact(SUB_SECOND));
    match (a, b) {
        // Dataverse's `ne` keeps rows where the column is null ("does not equal" returns the blank
        // values too: PowerObjects, "Boolean Blitz", 2016; the emulator agrees), so null is unequal
        // to every value and equal to null. The parser refuses ordering against a null literal, so an
        // ordering meets null only from a column, where SQL's answer is unknown: not matched.
        (Val::Null, Val::Null) => Ok(op == Op::Eq),
        (Val::Null, _) | (_, Val::Null) => Ok(op == Op::Ne),
        (Val::Bool(x), Val::Bool(y)) => Ok(op.holds(x.cmp(y))),
        (Val::Number(x, x_float), Val::Number(y, y_float)) => {
            let long = x.significant_digits() > 15 || y.significant_digits() > 15;
            if (*x_float || *y_float) && long {
                return Err(Doubt::Inexact(FLOAT_DIGITS));
            }
            Ok(op.holds(x.as_ref().cmp(y.as_ref())))
        }
        (Val::Text(x), Val::Text(y)) => text_holds(op, x, y),
        // Typed literals first, so each pair below is written once.
        (Val::Text(_), _) => holds(op.flip(), b, a),
        (Val::Guid(x), Val::Guid(y)) => Ok(op.holds(guid_order(x, y))),
        (Val::Guid(x), Val::Text(y)) => match Uuid::try_parse(y) {
            Ok(y) => Ok(op.holds(guid_order(x, &y))),
            Err(_) => Err(Doubt::Mismatch),
        },
        (Val::DateTime(x), Val::DateTime(y)) => ordered(x.order(*y)),
        // The emulator reads a date against a date-time as that day's midnight, UTC.
        (Val::DateTime(x), Val::Date(y)) => ordered(x.order(Instant::midnight(*y))),
        (Val::Date(x), Val::DateTime(y)) => ordered(Instant::midnight(*x).order(*y)),
        (Val::Date(x), Val::Date(y)) => Ok(op.holds(x.cmp(y))),
        // A date-only column compared with a date-time is refused by the emulator's type check,
        // and Dataverse's conversion is not documented: only a date-time column is compared.
        (Val::DateTime(x), Val::Text(y)) => match parse_date_time(y) {
            Some(y) => ordered(x.order(y)),
            None => Err(Doubt::Mismatch),
        },
        (Val::Date(x), Val::Text(y)) => {
            if let Some(y) = parse_date(y) {
                Ok(op.holds(x.cmp(&y)))
            } else if let Some(y) = parse_date_time(y) {
                ordered(Instant::midnight(*x).order(y))
            } else {
                Err(Doubt::Mismatch)
            }
        }
        _ => Err(Doubt::Mismatch),
    }
}

/// Two texts, from columns or quoted literals.
///
/// Without a schema a string may be text, a GUID (a lookup compared with a quoted GUID, as in Microsoft
/// Learn's `_owninguser_value eq '<systemuserid value>'`) or a date. Each reading the two strings
/// allow is tried, and only an answer all of them give is given.
fn text_holds(op: Op, x: &str, y: &str) -> Result<bool, Doubt> {
    let as_text = if matches!(op, Op::Eq | Op::Ne) {
        text::equal(x, y).map(|equal| equal == (op == Op::Eq))
    } else {
        text::order(x, y).map(|o| op.holds(o))
    };
    let mut readings = Vec::new();
    if let (Ok(a), Ok(b)) = (Uuid::try_parse(x), Uuid::try_parse(y)) {
        readings.push(Ok(op.holds(guid_order(&a, &b))));
    }
    if let (Some(a), Some(b)) = (parse_date_time(x), parse_date_time(y)) {
        readings.push(
            a.order(b)
                .map(|o| op.holds(o))
                .ok_or(Doubt::Inexact(SUB_SECOND)),
        );
    }
    if let (Some(a), Some(b)) = (parse_date(x), parse_date(y)) {
        readings.push(Ok(op.holds(a.cmp(&b))));
    }
    let answer = as_text.map_err(Doubt::Collation)?;
    for reading in readings {
        if reading? != answer {
            return Err(Doubt::Inexact(READINGS));
        }
    }
    Ok(answer)
}
