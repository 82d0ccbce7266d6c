//! Web API functions (`GET`) and actions (`POST`), as Microsoft Learn's "Use Web API functions" and
//! "Use Web API actions" describe them.
//!
//! | Request | Operation |
//! |---|---|
//! | `GET WhoAmI` or `GET WhoAmI()` | the caller's user, business unit and organisation |
//! | `GET RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account","contact"]` (or inline) | rows per table |
//! | `POST PublishAllXml` | publishes customizations: nothing to do here, where every change is live |
//! | `POST leads(<id or key>)/Microsoft.Dynamics.CRM.QualifyLead` `{"CreateAccount": .., "Status": 3, ..}` | see [`qualify_lead`] |
//! | `POST {set}/Microsoft.Dynamics.CRM.CreateMultiple`, `UpdateMultiple`, `UpsertMultiple` `{"Targets": [..]}` | see [`bulk`] |
//!
//! A request is taken apart in the order the service does it, so the first mistake is the one the
//! service would name: the `OData` library parses the path (the operation and its parameters: unknown
//! names, literals and their types), then ASP.NET routes it by method, then the library reads an
//! action's body, then Dataverse runs the message. Unbound operations are named without a namespace;
//! bound ones with `Microsoft.Dynamics.CRM.`, after the row (or collection) they are bound to. Any other
//! `Microsoft.Dynamics.CRM.` name after a row or a collection is a real operation the emulator does not
//! have: 501.

pub mod bulk;
pub mod literal;
pub mod qualify_lead;

use serde_json::{Map, Value, json};

use self::literal::Literal;
use super::rows;
use super::{Ctx, Segment, segment};
use crate::Request;
use crate::reply::{Fail, Reply};
use crate::store::Store;

/// The namespace a bound operation's name carries in a URL.
pub const NAMESPACE: &str = "Microsoft.Dynamics.CRM.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No side effects; `GET`, parameters in the URL.
    Function,
    /// `POST`, parameters in a JSON body.
    Action,
}

/// The type of a parameter, as the CSDL declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Boolean,
    Int32,
    StringCollection,
    /// A row of the named entity type; `crmbaseentity` is any table, named by `@odata.type`.
    Entity(&'static str),
    /// `Collection(crmbaseentity)`: rows of any table, each named by `@odata.type`.
    EntityCollection,
}

impl ParamType {
    fn name(self) -> String {
        match self {
            ParamType::Boolean => "Edm.Boolean".to_owned(),
            ParamType::Int32 => "Edm.Int32".to_owned(),
            ParamType::StringCollection => "Collection(Edm.String)".to_owned(),
            ParamType::Entity(entity) => format!("{NAMESPACE}{entity}"),
            ParamType::EntityCollection => format!("Collection({NAMESPACE}crmbaseentity)"),
        }
    }
}

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: ParamType,
    pub nullable: bool,
}

/// One function or action, with the parameters of its CSDL definition (the binding parameter left out).
#[derive(Debug)]
pub struct Operation {
    pub name: &'static str,
    pub kind: Kind,
    /// The table (logical name) a bound operation takes its first parameter from; `None` if unbound.
    pub bound_to: Option<&'static str>,
    pub params: &'static [Param],
}

const fn param(name: &'static str, ty: ParamType, nullable: bool) -> Param {
    Param { name, ty, nullable }
}

/// The operations the emulator runs.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "WhoAmI",
        kind: Kind::Function,
        bound_to: None,
        params: &[],
    },
    Operation {
        name: "RetrieveTotalRecordCount",
        kind: Kind::Function,
        bound_to: None,
        params: &[param("EntityNames", ParamType::StringCollection, false)],
    },
    Operation {
        name: "PublishAllXml",
        kind: Kind::Action,
        bound_to: None,
        params: &[],
    },
    Operation {
        name: "QualifyLead",
        kind: Kind::Action,
        bound_to: Some("lead"),
        params: qualify_lead::PARAMS,
    },
    Operation {
        name: "CreateMultiple",
        kind: Kind::Action,
        bound_to: Some(bulk::ANY_TABLE),
        params: bulk::PARAMS,
    },
    Operation {
        name: "UpdateMultiple",
        kind: Kind::Action,
        bound_to: Some(bulk::ANY_TABLE),
        params: bulk::PARAMS,
    },
    Operation {
        name: "UpsertMultiple",
        kind: Kind::Action,
        bound_to: Some(bulk::ANY_TABLE),
        params: bulk::PARAMS,
    },
];

fn find(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|op| op.name == name)
}

/// The unbound operation a first path segment names, if it names one.
pub fn unbound(name: &str) -> Option<&'static Operation> {
    find(name).filter(|op| op.bound_to.is_none())
}

/// The parameter values of a call, by name; a parameter given no value is absent or `null`.
#[derive(Debug, Default)]
pub struct Params(Map<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> &Value {
        self.0.get(name).unwrap_or(&Value::Null)
    }

    pub fn bool(&self, name: &str) -> bool {
        self.get(name).as_bool().unwrap_or(false)
    }
}

/// `GET|POST {name}[(params)][/tail]` for the unbound operation `name`.
pub fn call_unbound(
    store: &mut Store,
    req: &Request,
    ctx: &Ctx,
    name: &str,
    parens: Option<&str>,
    tail: &str,
) -> Result<Reply, Fail> {
    let Some(op) = unbound(name) else {
        return Err(Fail::segment_not_found(name));
    };
    let params = match op.kind {
        Kind::Function => function_parameters(ctx, op, op.name, parens)?,
        Kind::Action => {
            no_parameters_in_path(op.name, parens)?;
            Params::default()
        }
    };
    if !tail.is_empty() {
        return Err(must_be_leaf(op.name));
    }
    route(req, op)?;
    match op.kind {
        Kind::Function => {
            require(op, &params)?;
            match op.name {
                "WhoAmI" => Ok(super::metadata::who_am_i(store, ctx)),
                "RetrieveTotalRecordCount" => retrieve_total_record_count(store, ctx, &params),
                other => Err(Fail::not_implemented(format!("the function '{other}'"))),
            }
        }
        Kind::Action => {
            action_parameters(req, op)?;
            match op.name {
                // Every change the emulator takes is live at once; there is nothing to publish.
                "PublishAllXml" => Ok(Reply::empty(204)),
                other => Err(Fail::not_implemented(format!("the action '{other}'"))),
            }
        }
    }
}

/// The name of the first segment of `tail`, without its parentheses.
fn first_name(tail: &str) -> &str {
    let end = tail.find('/').unwrap_or(tail.len());
    let segment = &tail[..end];
    segment.split('(').next().unwrap_or(segment)
}

/// Whether `tail`, after `{set}` or `{set}(<row>)` of table `t`, names an operation: a
/// `Microsoft.Dynamics.CRM.` name, or, after a row, the bare name of an operation bound to the table.
pub fn names_operation(store: &Store, t: usize, after_row: bool, tail: &str) -> bool {
    let name = first_name(tail);
    name.starts_with(NAMESPACE)
        || (after_row
            && find(name)
                .is_some_and(|op| op.bound_to == Some(store.tables[t].def.logical_name.as_str())))
}

/// `{set}[(<row>)]/{operation}[(params)][/tail]` of table `t`, where [`names_operation`] holds.
pub fn call_bound(
    store: &mut Store,
    req: &Request,
    ctx: &Ctx,
    t: usize,
    row: Option<&str>,
    tail: &str,
) -> Result<Reply, Fail> {
    // The row's key is read with the path; whether the row exists is the message's concern, later.
    let target = row.map(|key| rows::parse_key(store, t, key)).transpose()?;
    let Segment {
        name,
        key: parens,
        tail: rest,
        ..
    } = segment(tail)?;
    let Some(short) = name.strip_prefix(NAMESPACE) else {
        // Learn ("Use Web API actions", Bound actions): without the namespace the service answers
        // "Status Code:400 Request message has unresolved parameters".
        return Err(unresolved());
    };
    let def = &store.tables[t].def;
    let op = match (find(short), &target) {
        (Some(op), Some(_)) if op.bound_to == Some(def.logical_name.as_str()) => op,
        // Bound to the collection of any table (`crmbaseentity collection`).
        (Some(op), None) if op.bound_to == Some(bulk::ANY_TABLE) => op,
        // Real, but not bound to this table, or bound to a row where the path names the collection
        // (or unbound): the `OData` library finds no operation of that name for this binding.
        (Some(_), _) => return Err(Fail::segment_not_found(name)),
        (None, Some(_)) => {
            return Err(Fail::not_implemented(format!(
                "'{name}' after a row of {} (a bound operation or a type cast)",
                def.entity_set_name
            )));
        }
        (None, None) => {
            return Err(Fail::not_implemented(format!(
                "'{name}' after the collection {} (a bound operation or a type cast)",
                def.entity_set_name
            )));
        }
    };
    let params = match op.kind {
        Kind::Function => function_parameters(ctx, op, name, parens)?,
        Kind::Action => {
            no_parameters_in_path(name, parens)?;
            Params::default()
        }
    };
    if !rest.is_empty() {
        return Err(must_be_leaf(name));
    }
    route(req, op)?;
    let params = match op.kind {
        Kind::Function => params,
        Kind::Action => action_parameters(req, op)?,
    };
    require(op, &params)?;
    match (op.name, target) {
        ("QualifyLead", Some(target)) => qualify_lead::run(store, ctx, t, &target, &params),
        ("CreateMultiple" | "UpdateMultiple" | "UpsertMultiple", None) => {
            bulk::run(store, ctx, t, op.name, &params)
        }
        (other, _) => Err(Fail::not_implemented(format!("the operation '{other}'"))),
    }
}

/// ASP.NET's answer when the path names an operation but the method is not the one it is called
/// with: a function is read with `GET`, an action run with `POST` (Learn, "Troubleshoot Dataverse Web
/// API client errors", No HTTP resource was found that matches the request URI).
fn route(req: &Request, op: &Operation) -> Result<(), Fail> {
    let expected = match op.kind {
        Kind::Function => "GET",
        Kind::Action => "POST",
    };
    if req.method == expected {
        return Ok(());
    }
    let query = if req.query.is_empty() {
        String::new()
    } else {
        format!("?{}", req.query)
    };
    Err(Fail::new(
        404,
        "",
        format!(
            "No HTTP resource was found that matches the request URI 'http://{}{}{query}'.",
            req.host(),
            req.path
        ),
    ))
}

/// `0x8006088a` with 400, as Dataverse answers a path the `OData` library finds malformed (as
/// opposed to naming nothing, which is 404).
fn bad_path(message: String) -> Fail {
    Fail::new(400, "0x8006088a", message)
}

/// Anything after an operation (or `$batch`): actions and non-composable functions end the path.
pub(super) fn must_be_leaf(name: &str) -> Fail {
    bad_path(format!(
        "The request URI is not valid. The segment '{name}' must be the last segment in the URI because it is one of the following: $ref, $batch, $count, $value, $metadata, a named media resource, an action, a noncomposable function, an action import, a noncomposable function import, an operation with void return type, or an operation import with void return type."
    ))
}

/// Parentheses after an operation that hold something other than named parameters (or that hold
/// parameters, after an action): the library reads them as a key, which an operation cannot have.
fn key_predicates(name: &str) -> Fail {
    bad_path(format!(
        "The request URI is not valid. The segment '{name}' cannot include key predicates, however it may end with empty parenthesis."
    ))
}

fn no_parameters_in_path(name: &str, parens: Option<&str>) -> Result<(), Fail> {
    match parens {
        Some(text) if !text.trim().is_empty() => Err(key_predicates(name)),
        _ => Ok(()),
    }
}

/// `0x80060888`: a parameter value the `OData` library cannot read or convert.
fn bad_value(message: impl Into<String>) -> Fail {
    Fail::bad_query(message)
}

/// A required parameter without a value: none given, `null`, an alias given no value in the query
/// string, or an alias whose value is a bare name. Dataverse's wording (the documented answer to an
/// unqualified bound operation, and what it answers for an alias it cannot read); the code is the
/// emulator's choice, Dataverse's other URI errors' `0x80060888`.
fn unresolved() -> Fail {
    Fail::bad_query("Request message has unresolved parameters.")
}

fn require(op: &Operation, params: &Params) -> Result<(), Fail> {
    let missing = op
        .params
        .iter()
        .any(|p| !p.nullable && params.get(p.name).is_null());
    if missing {
        return Err(unresolved());
    }
    Ok(())
}

/// Splits `a=1,b='x,y',c=[1,2]` at the commas between parameters.
fn split_parameters(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) => {
                // In a double-quoted JSON string a backslash escapes; in a single-quoted one a quote
                // written twice closes and reopens, which comes to the same for splitting.
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' | '{' | '(' => depth += 1,
                ']' | '}' | ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `Name=value`, if the part has that shape.
fn named(part: &str) -> Option<(&str, &str)> {
    let (name, value) = part.split_once('=')?;
    let name = name.trim();
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    valid.then_some((name, value.trim()))
}

/// The parameters in a function's parentheses, each a literal or a parameter alias (`@p1`) whose value
/// the query string gives.
fn function_parameters(
    ctx: &Ctx,
    op: &Operation,
    name: &str,
    parens: Option<&str>,
) -> Result<Params, Fail> {
    let text = parens.unwrap_or_default();
    if text.trim().is_empty() {
        // No parameters: the library takes the function whatever it declares, and Dataverse then finds
        // the required ones missing.
        return Ok(Params::default());
    }
    let given = split_parameters(text)
        .into_iter()
        .map(named)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| key_predicates(name))?;
    // The library picks the overload whose parameter names the URL gives: every name it gives must be
    // declared, and every declared parameter given. Otherwise there is no such function.
    let declared = |n: &str| op.params.iter().any(|p| p.name == n);
    let all_given = op
        .params
        .iter()
        .all(|p| given.iter().any(|(n, _)| *n == p.name));
    if !given.iter().all(|(n, _)| declared(n)) || !all_given {
        return Err(Fail::segment_not_found(name));
    }
    let mut values = Map::new();
    for (param_name, text) in given {
        let Some(param) = op.params.iter().find(|p| p.name == param_name) else {
            continue;
        };
        // A parameter given twice keeps its first value, as the library binds it.
        if values.contains_key(param.name) {
            continue;
        }
        let value = if text.starts_with('@') {
            alias_value(ctx, param, text)?
        } else {
            let literal = literal::parse(text).map_err(|e| bad_value(e.to_string()))?;
            if let Literal::Name(bare) = &literal {
                return Err(bad_value(format!(
                    "The parameter '{}={bare}' is not in scope.",
                    param.name
                )));
            }
            convert(param, literal)?
        };
        values.insert(param.name.to_owned(), value);
    }
    Ok(Params(values))
}

/// The value the query string gives alias `alias` (`@p1`): `null` when it gives none, as OData says.
fn alias_value(ctx: &Ctx, param: &Param, alias: &str) -> Result<Value, Fail> {
    let Some(pair) = ctx.options.pairs.iter().find(|p| p.name == alias) else {
        return Ok(Value::Null);
    };
    let literal = literal::parse(&pair.value).map_err(|e| bad_value(e.to_string()))?;
    if matches!(literal, Literal::Name(_)) {
        return Err(unresolved());
    }
    convert(param, literal)
}

fn cannot_convert_expression(literal: &Literal, param: &Param) -> Fail {
    bad_value(format!(
        "Expression of type '{}' cannot be converted to type '{}'.",
        literal.type_name(),
        param.ty.name()
    ))
}

/// A literal as the value of `param`, or the library's refusal of its type.
fn convert(param: &Param, literal: Literal) -> Result<Value, Fail> {
    if literal == Literal::Null {
        return Ok(Value::Null);
    }
    match (param.ty, literal) {
        (ParamType::StringCollection, Literal::Array(items)) => {
            if let Some(bad) = items.iter().find(|v| !v.is_string()) {
                return Err(bad_value(format!(
                    "Cannot convert the literal '{bad}' to the expected type 'Edm.String'."
                )));
            }
            Ok(Value::Array(items))
        }
        (ParamType::Int32, Literal::Integer(n)) if i32::try_from(n).is_ok() => Ok(Value::from(n)),
        (ParamType::Boolean, Literal::Boolean(b)) => Ok(Value::Bool(b)),
        (ParamType::Entity(_), Literal::Object(map)) => Ok(Value::Object(map)),
        (_, literal) => Err(cannot_convert_expression(&literal, param)),
    }
}

/// `0x80048d19`: the `OData` library refused the body. Dataverse names the entity the payload was
/// read for; for an operation's parameters there is none, so the name is empty (the emulator's
/// reading: Learn shows no example).
fn payload(inner: impl std::fmt::Display) -> Fail {
    Fail::payload("", inner)
}

/// The JSON text of a value as the library quotes it back: a string without its quotes.
fn literal_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An action's body, read as the library's parameter reader reads it: every member a declared
/// parameter of the right type, every non-nullable one present.
fn action_parameters(req: &Request, op: &Operation) -> Result<Params, Fail> {
    if let Some(content_type) = req.header("content-type")
        && !content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    {
        return Err(Fail::new(
            415,
            "0x80060888",
            format!("The content type '{content_type}' is not supported. Send application/json."),
        ));
    }
    let body = if req.body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(payload(
                    "A node of type 'StartArray' or a primitive value was read from the JSON reader when a 'StartObject' node was expected.",
                ));
            }
            Err(e) => return Err(payload(format!("Invalid JSON. {e}"))),
        }
    };
    let mut values = Map::new();
    for (key, value) in &body {
        if key.starts_with('@') {
            // Instance annotations of the payload itself (`@odata.context`) say nothing of parameters.
            continue;
        }
        if let Some((property, _)) = key.split_once('@') {
            return Err(payload(if body.contains_key(property) {
                "An OData property annotation was found for a parameter payload; however, parameter payloads do not support OData property annotations.".to_owned()
            } else {
                format!(
                    "One or more property annotations for property '{property}' were found in a parameter payload without the property to annotate. Parameter payloads must not contain property annotations for properties that are not in the payload."
                )
            }));
        }
        let Some(param) = op.params.iter().find(|p| p.name == key) else {
            return Err(payload(format!(
                "The parameter '{key}' in the request payload is not a valid parameter for the operation '{}'.",
                op.name
            )));
        };
        let type_name = param.ty.name();
        let converted = match (param.ty, value) {
            (_, Value::Null) if !param.nullable => {
                return Err(payload(format!(
                    "A null value was found with the expected type '{type_name}[Nullable=False]'. The expected type '{type_name}[Nullable=False]' does not allow null values."
                )));
            }
            (_, Value::Null) => Value::Null,
            (ParamType::Boolean, Value::Bool(_)) | (ParamType::Entity(_), Value::Object(_)) => {
                value.clone()
            }
            (ParamType::Int32, Value::Number(n))
                if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) =>
            {
                value.clone()
            }
            (ParamType::StringCollection, Value::Array(items))
                if items.iter().all(Value::is_string) =>
            {
                value.clone()
            }
            (ParamType::EntityCollection, Value::Array(items))
                if items.iter().all(Value::is_object) =>
            {
                value.clone()
            }
            _ => {
                return Err(payload(format!(
                    "Cannot convert the literal '{}' to the expected type '{type_name}'.",
                    literal_text(value)
                )));
            }
        };
        values.insert(param.name.to_owned(), converted);
    }
    let missing: Vec<&str> = op
        .params
        .iter()
        .filter(|p| !p.nullable && !values.contains_key(p.name))
        .map(|p| p.name)
        .collect();
    if !missing.is_empty() {
        return Err(payload(format!(
            "One or more parameters of the operation '{}' are missing from the request payload. The missing parameters are: {}.",
            op.name,
            missing.join(",")
        )));
    }
    Ok(Params(values))
}

/// `RetrieveTotalRecordCount`: the rows of each named table. Dataverse answers from a snapshot it takes
/// about once a day (Learn, "`RetrieveTotalRecordCount` Function"); the emulator counts the rows as they
/// are now, which a client cannot tell from a fresh snapshot.
fn retrieve_total_record_count(store: &Store, ctx: &Ctx, params: &Params) -> Result<Reply, Fail> {
    let names: Vec<&str> = params
        .get("EntityNames")
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut keys: Vec<&str> = Vec::with_capacity(names.len());
    let mut values: Vec<usize> = Vec::with_capacity(names.len());
    for name in names {
        // The response is a dictionary: a name given twice is counted once.
        if keys.contains(&name) {
            continue;
        }
        let t = store.by_logical(name).ok_or_else(|| {
            Fail::new(
                404,
                "0x80041102",
                format!(
                    "The entity with a name = '{name}' with namemapping = 'Logical' was not found in the MetadataCache."
                ),
            )
        })?;
        keys.push(name);
        values.push(store.tables[t].rows.len());
    }
    Ok(Reply::json(
        200,
        &json!({
            "@odata.context": format!(
                "{}$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse",
                ctx.base
            ),
            "EntityRecordCountCollection": {
                "Count": keys.len(),
                "IsReadOnly": false,
                "Keys": keys,
                "Values": values,
            },
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::{named, split_parameters};

    #[test]
    fn splits_parameters_outside_literals() {
        assert_eq!(
            split_parameters("A=@p1,B='x,y''z',C=[\"a,\\\"b\",'c']"),
            ["A=@p1", "B='x,y''z'", "C=[\"a,\\\"b\",'c']"]
        );
        assert_eq!(named(" A = 1 "), Some(("A", "1")));
        assert_eq!(named("'x'"), None);
        assert_eq!(named("1=2"), None);
    }
}
