//! Reads the CloudWatch Embedded Metric Format lines a function wrote, and checks each against the
//! specification ("Specification: Embedded metric format", CloudWatch User Guide) as far as a document
//! can be checked on its own:
//!
//! - the line is one JSON object and nothing else (not even spaces), starting with the `_aws` member,
//!   and no larger than a CloudWatch Logs event (the older 256 KB limit, the stricter of the two the
//!   guide has stated);
//! - `_aws` holds exactly `Timestamp` (whole milliseconds since the epoch) and `CloudWatchMetrics`, an
//!   array of directives, each with exactly `Namespace`, `Dimensions` and `Metrics`;
//! - a namespace is 1 to 255 printable ASCII characters, not all spaces, outside `AWS/`;
//! - `Dimensions` has at least one dimension set; a set has at most 30 keys (it may be empty), each
//!   1 to 250 characters, none twice, not starting with a colon; each key is a root member holding a
//!   string of 1 to 1,024 printable ASCII characters, not all spaces;
//! - `Metrics` has 1 to 100 definitions, each with a non-empty `Name` and optionally a `Unit` from
//!   CloudWatch's list and a `StorageResolution` of 1 or 60, and nothing else; a name appears once in
//!   a document and is a root member holding a number, or an array of at most 100 numbers;
//! - a member is not both a dimension and a metric.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// The units `MetricDatum` accepts, as the specification's schema lists them.
pub const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// The most a log event may hold.
pub const MAX_LINE_BYTES: usize = 256 * 1024;
const MAX_DIMENSIONS: usize = 30;
const MAX_METRICS: usize = 100;
const MAX_VALUES: usize = 100;

/// How an EMF line begins: the metadata member first, so that a reader finds it at a glance.
pub const PREFIX: &str = "{\"_aws\":";

/// One checked EMF document.
#[derive(Debug, Clone)]
pub struct Emf {
    pub root: Map<String, Value>,
}

/// One directive, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub namespace: String,
    pub dimensions: Vec<Vec<String>>,
    /// `(name, unit)` in order.
    pub metrics: Vec<(String, Option<String>)>,
}

impl Emf {
    /// A metric's value (a single number; `None` if absent or an array).
    pub fn value(&self, name: &str) -> Option<f64> {
        self.root.get(name).and_then(Value::as_f64)
    }

    /// A root member as text (a dimension's value).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.root.get(name).and_then(Value::as_str)
    }

    pub fn timestamp(&self) -> u64 {
        self.root["_aws"]["Timestamp"].as_u64().unwrap_or_default()
    }

    pub fn directives(&self) -> Vec<Directive> {
        let list = self.root["_aws"]["CloudWatchMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|d| Directive {
                namespace: d["Namespace"].as_str().unwrap_or_default().to_owned(),
                dimensions: d["Dimensions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|set| {
                        set.as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .collect(),
                metrics: d["Metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        (
                            m["Name"].as_str().unwrap_or_default().to_owned(),
                            m["Unit"].as_str().map(str::to_owned),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    /// The directive that declares `metric`.
    pub fn directive_of(&self, metric: &str) -> Option<Directive> {
        self.directives()
            .into_iter()
            .find(|d| d.metrics.iter().any(|(name, _)| name == metric))
    }

    /// The unit declared for `metric`.
    pub fn unit(&self, metric: &str) -> Option<String> {
        self.directive_of(metric)?
            .metrics
            .into_iter()
            .find(|(name, _)| name == metric)?
            .1
    }

    /// Every metric name declared, in order.
    pub fn metric_names(&self) -> Vec<String> {
        self.directives()
            .into_iter()
            .flat_map(|d| d.metrics.into_iter().map(|(name, _)| name))
            .collect()
    }
}

/// The lines of `logs` that are EMF documents (they start with [`PREFIX`]), each checked; and a
/// problem for any other line that mentions `_aws`, which would be a document CloudWatch cannot
/// read (wrapped in a log record, say).
pub fn documents(logs: &str) -> Result<Vec<Emf>, Vec<String>> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in logs.lines().enumerate() {
        if line.starts_with(PREFIX) {
            match check(line) {
                Ok(emf) => found.push(emf),
                Err(errors) => problems.extend(
                    errors
                        .into_iter()
                        .map(|e| format!("line {}: {e}: {line}", n + 1)),
                ),
            }
        } else if line.contains("\"_aws\"") {
            problems.push(format!(
                "line {}: mentions _aws but does not start with {PREFIX}: {line}",
                n + 1
            ));
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

fn printable(text: &str) -> bool {
    text.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// Checks one line against the specification; every problem found, or the document.
pub fn check(line: &str) -> Result<Emf, Vec<String>> {
    let mut problems = Vec::new();
    if line.len() > MAX_LINE_BYTES {
        problems.push(format!(
            "{} bytes, more than a log event holds ({MAX_LINE_BYTES})",
            line.len()
        ));
    }
    if !line.starts_with(PREFIX) {
        problems.push(format!("does not start with {PREFIX}"));
    }
    if line.contains(['\n', '\r']) {
        problems.push("is not a single line".into());
    }
    if !line.ends_with('}') {
        problems.push("has something after the object".into());
    }
    // `from_str` refuses anything after the value, so the object is the whole line.
    let root = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(root)) => root,
        Ok(other) => {
            problems.push(format!("the root is not an object but {other}"));
            return Err(problems);
        }
        Err(e) => {
            problems.push(format!("not one JSON value: {e}"));
            return Err(problems);
        }
    };
    let Some(Value::Object(aws)) = root.get("_aws") else {
        problems.push("no _aws object".into());
        return Err(problems);
    };
    for key in aws.keys() {
        if key != "Timestamp" && key != "CloudWatchMetrics" {
            problems.push(format!(
                "_aws has a member the specification does not define: {key}"
            ));
        }
    }
    match aws.get("Timestamp") {
        Some(Value::Number(n)) if n.is_u64() => {}
        other => problems.push(format!(
            "_aws.Timestamp must be whole milliseconds since the epoch, is {other:?}"
        )),
    }
    let directives = match aws.get("CloudWatchMetrics") {
        Some(Value::Array(list)) if !list.is_empty() => list.clone(),
        other => {
            problems.push(format!(
                "_aws.CloudWatchMetrics must be a non-empty array, is {other:?}"
            ));
            Vec::new()
        }
    };
    let mut dimension_keys = HashSet::new();
    let mut metric_names = HashSet::new();
    for (i, directive) in directives.iter().enumerate() {
        let at = format!("CloudWatchMetrics[{i}]");
        let Value::Object(directive) = directive else {
            problems.push(format!("{at} is not an object"));
            continue;
        };
        for key in directive.keys() {
            if !["Namespace", "Dimensions", "Metrics"].contains(&key.as_str()) {
                problems.push(format!(
                    "{at} has a member the specification does not define: {key}"
                ));
            }
        }
        match directive.get("Namespace").and_then(Value::as_str) {
            Some(ns)
                if !ns.trim().is_empty()
                    && ns.len() <= 255
                    && printable(ns)
                    && !ns.starts_with("AWS/")
                    && !ns.starts_with(':') => {}
            other => problems.push(format!(
                "{at}.Namespace is not a usable namespace: {other:?}"
            )),
        }
        match directive.get("Dimensions") {
            Some(Value::Array(sets)) if !sets.is_empty() => {
                for (j, set) in sets.iter().enumerate() {
                    let Value::Array(keys) = set else {
                        problems.push(format!("{at}.Dimensions[{j}] is not an array"));
                        continue;
                    };
                    if keys.len() > MAX_DIMENSIONS {
                        problems.push(format!(
                            "{at}.Dimensions[{j}] has {} keys, more than {MAX_DIMENSIONS}",
                            keys.len()
                        ));
                    }
                    let mut in_set = HashSet::new();
                    for key in keys {
                        let Some(key) = key.as_str() else {
                            problems.push(format!("{at}.Dimensions[{j}] holds a non-string {key}"));
                            continue;
                        };
                        if key.is_empty() || key.len() > 250 || key.starts_with(':') {
                            problems.push(format!(
                                "{at}.Dimensions[{j}]: '{key}' is not a usable dimension name"
                            ));
                        }
                        if !in_set.insert(key) {
                            problems.push(format!("{at}.Dimensions[{j}] names '{key}' twice"));
                        }
                        dimension_keys.insert(key.to_owned());
                        match root.get(key) {
                            Some(Value::String(value))
                                if !value.trim().is_empty()
                                    && value.len() <= 1024
                                    && printable(value) => {}
                            other => problems.push(format!(
                                "dimension '{key}' must be a root member holding 1 to 1,024 printable ASCII characters, is {other:?}"
                            )),
                        }
                    }
                }
            }
            other => problems.push(format!(
                "{at}.Dimensions must be an array of at least one dimension set, is {other:?}"
            )),
        }
        let definitions = match directive.get("Metrics") {
            Some(Value::Array(list)) => list.clone(),
            other => {
                problems.push(format!("{at}.Metrics must be an array, is {other:?}"));
                Vec::new()
            }
        };
        if definitions.is_empty() || definitions.len() > MAX_METRICS {
            problems.push(format!(
                "{at}.Metrics has {} definitions: 1 to {MAX_METRICS} expected",
                definitions.len()
            ));
        }
        for (k, definition) in definitions.iter().enumerate() {
            let at = format!("{at}.Metrics[{k}]");
            let Value::Object(definition) = definition else {
                problems.push(format!("{at} is not an object"));
                continue;
            };
            for key in definition.keys() {
                if !["Name", "Unit", "StorageResolution"].contains(&key.as_str()) {
                    problems.push(format!(
                        "{at} has a member the specification does not define: {key}"
                    ));
                }
            }
            match definition.get("Unit") {
                None => {}
                Some(Value::String(unit)) if UNITS.contains(&unit.as_str()) => {}
                Some(other) => {
                    problems.push(format!("{at}.Unit is not a CloudWatch unit: {other}"));
                }
            }
            match definition.get("StorageResolution") {
                None => {}
                Some(Value::Number(n)) if n.as_u64() == Some(1) || n.as_u64() == Some(60) => {}
                Some(other) => problems.push(format!(
                    "{at}.StorageResolution must be 1 or 60, is {other}"
                )),
            }
            let Some(name) = definition.get("Name").and_then(Value::as_str) else {
                problems.push(format!("{at}.Name is not a string"));
                continue;
            };
            if name.is_empty() || name.len() > 1024 {
                problems.push(format!("{at}.Name '{name}' is not 1 to 1,024 characters"));
            }
            if !metric_names.insert(name.to_owned()) {
                problems.push(format!("metric '{name}' is declared twice"));
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values))
                    if values.len() <= MAX_VALUES && values.iter().all(Value::is_number) => {}
                other => problems.push(format!(
                    "metric '{name}' must be a root member holding a number or up to {MAX_VALUES} numbers, is {other:?}"
                )),
            }
        }
    }
    for both in dimension_keys.intersection(&metric_names) {
        problems.push(format!("'{both}' is both a dimension and a metric"));
    }
    if problems.is_empty() {
        Ok(Emf { root })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"_aws":{"Timestamp":1700000000000,"CloudWatchMetrics":[{"Namespace":"DynamicsCrm","Dimensions":[["FunctionName"],[]],"Metrics":[{"Name":"Throttles","Unit":"Count"}]}]},"FunctionName":"get-record","Throttles":0}"#;

    fn fails(line: &str, part: &str) {
        match check(line) {
            Ok(_) => panic!("accepted: {line}"),
            Err(problems) => assert!(
                problems.iter().any(|p| p.contains(part)),
                "{part:?} not in {problems:?}"
            ),
        }
    }

    #[test]
    fn accepts_a_valid_document_and_refuses_each_broken_rule() {
        let emf = check(GOOD).unwrap();
        assert_eq!(emf.value("Throttles"), Some(0.0));
        assert_eq!(emf.unit("Throttles").as_deref(), Some("Count"));
        let broken = [
            (GOOD.replace("1700000000000", "1.7e12"), "Timestamp"),
            (
                GOOD.replace(r#""Timestamp":1700000000000,"#, ""),
                "Timestamp",
            ),
            (
                GOOD.replace("\"Count\"", "\"Counts\""),
                "not a CloudWatch unit",
            ),
            (
                GOOD.replace("[[\"FunctionName\"],[]]", "[]"),
                "at least one dimension set",
            ),
            (
                GOOD.replace(",\"FunctionName\":\"get-record\"", ""),
                "dimension 'FunctionName'",
            ),
            (
                GOOD.replace("\"get-record\"", "7"),
                "dimension 'FunctionName'",
            ),
            (
                GOOD.replace("\"Throttles\":0", "\"Throttles\":\"0\""),
                "metric 'Throttles'",
            ),
            (
                GOOD.replace("\"DynamicsCrm\"", "\"AWS/Lambda\""),
                "Namespace",
            ),
            (
                GOOD.replace("\"Name\":\"Throttles\"", "\"Name\":\"\""),
                "Name",
            ),
            (
                GOOD.replace("\"Unit\":\"Count\"", "\"Unit\":\"Count\",\"Extra\":1"),
                "does not define",
            ),
            (format!("{GOOD} "), "something after the object"),
            (format!("{GOOD} x"), "not one JSON value"),
            (
                GOOD.replacen("{\"_aws\"", "{\"a\":1,\"_aws\"", 1),
                "does not start with",
            ),
            (
                GOOD.replace(
                    "[[\"FunctionName\"],[]]",
                    &format!(
                        "[[{}]]",
                        (0..31)
                            .map(|i| format!("\"d{i}\""))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ),
                "more than 30",
            ),
            (
                GOOD.replace(
                    r#"[{"Name":"Throttles","Unit":"Count"}]"#,
                    &format!("[{}]", vec![r#"{"Name":"Throttles"}"#; 101].join(",")),
                ),
                "1 to 100",
            ),
        ];
        for (line, part) in broken {
            fails(&line, part);
        }
    }
}
