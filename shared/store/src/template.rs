//! Creates the DynamoDB tables declared in `infra/template.yaml`, so the local stack and the
//! tests run against exactly the layout that is deployed: keys, indexes, streams and TTL.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use serde::Deserialize;
use serde_norway::Value;

use crate::StoreError;

/// One `AWS::DynamoDB::Table` of the template, reduced to what DynamoDB needs to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    pub attributes: Vec<(String, String)>,
    pub key: Vec<(String, String)>,
    pub indexes: Vec<IndexSpec>,
    pub stream_view: Option<String>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: String,
    pub key: Vec<(String, String)>,
    pub projection: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Template {
    resources: std::collections::BTreeMap<String, Resource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Resource {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    properties: Value,
}

fn text(value: &Value, path: &str) -> Result<String, StoreError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Template(format!("{path} must be a plain string")))
}

fn pairs(
    value: &Value,
    path: &str,
    name: &str,
    kind: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let Some(list) = value.as_sequence() else {
        return Err(StoreError::Template(format!("{path} must be a list")));
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            Ok((
                text(&item[name], &format!("{path}[{i}].{name}"))?,
                text(&item[kind], &format!("{path}[{i}].{kind}"))?,
            ))
        })
        .collect()
}

/// The tables declared in a SAM / CloudFormation template, in logical-id order.
pub fn tables_in(template: &str) -> Result<Vec<TableSpec>, StoreError> {
    let template: Template =
        serde_norway::from_str(template).map_err(|e| StoreError::Template(e.to_string()))?;
    let mut out = Vec::new();
    for (id, resource) in template.resources {
        if resource.kind != "AWS::DynamoDB::Table" {
            continue;
        }
        let p = &resource.properties;
        let path = format!("Resources.{id}.Properties");
        let mut indexes = Vec::new();
        if let Some(list) = p["GlobalSecondaryIndexes"].as_sequence() {
            for (i, gsi) in list.iter().enumerate() {
                let ipath = format!("{path}.GlobalSecondaryIndexes[{i}]");
                indexes.push(IndexSpec {
                    name: text(&gsi["IndexName"], &format!("{ipath}.IndexName"))?,
                    key: pairs(
                        &gsi["KeySchema"],
                        &format!("{ipath}.KeySchema"),
                        "AttributeName",
                        "KeyType",
                    )?,
                    projection: text(
                        &gsi["Projection"]["ProjectionType"],
                        &format!("{ipath}.Projection.ProjectionType"),
                    )?,
                });
            }
        }
        let ttl = &p["TimeToLiveSpecification"];
        out.push(TableSpec {
            attributes: pairs(
                &p["AttributeDefinitions"],
                &format!("{path}.AttributeDefinitions"),
                "AttributeName",
                "AttributeType",
            )?,
            key: pairs(
                &p["KeySchema"],
                &format!("{path}.KeySchema"),
                "AttributeName",
                "KeyType",
            )?,
            indexes,
            stream_view: p["StreamSpecification"]["StreamViewType"]
                .as_str()
                .map(str::to_owned),
            ttl_attribute: (ttl["Enabled"].as_bool() == Some(true))
                .then(|| ttl["AttributeName"].as_str().map(str::to_owned))
                .flatten(),
            logical_id: id,
        });
    }
    Ok(out)
}

fn key_schema(key: &[(String, String)]) -> Result<Vec<KeySchemaElement>, StoreError> {
    key.iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()
                .map_err(|e| StoreError::Template(e.to_string()))
        })
        .collect()
}

/// Creates every table of the template as `<prefix><LogicalId>` (skipping tables that exist)
/// and enables their TTL. Returns the specs it created them from.
pub async fn create_tables(
    client: &Client,
    template: &str,
    prefix: &str,
) -> Result<Vec<TableSpec>, StoreError> {
    let specs = tables_in(template)?;
    let existing = client
        .list_tables()
        .send()
        .await
        .map_err(|e| StoreError::dynamo("ListTables", "*", e))?;
    let existing = existing.table_names();
    for spec in &specs {
        let name = format!("{prefix}{}", spec.logical_id);
        if existing.contains(&name) {
            continue;
        }
        let mut request = client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for (attribute, kind) in &spec.attributes {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::from(kind.as_str()))
                    .build()
                    .map_err(|e| StoreError::Template(e.to_string()))?,
            );
        }
        request = request.set_key_schema(Some(key_schema(&spec.key)?));
        for index in &spec.indexes {
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(&index.name)
                    .set_key_schema(Some(key_schema(&index.key)?))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(index.projection.as_str()))
                            .build(),
                    )
                    .build()
                    .map_err(|e| StoreError::Template(e.to_string()))?,
            );
        }
        if let Some(view) = &spec.stream_view {
            request = request.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .map_err(|e| StoreError::Template(e.to_string()))?,
            );
        }
        request
            .send()
            .await
            .map_err(|e| StoreError::dynamo("CreateTable", &name, e))?;
        if let Some(attribute) = &spec.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()
                        .map_err(|e| StoreError::Template(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| StoreError::dynamo("UpdateTimeToLive", &name, e))?;
        }
    }
    Ok(specs)
}

/// One `AWS::Lambda::EventSourceMapping` of the template that reads a table's stream: the
/// settings a local stream pump needs to behave as Lambda's mapping does, with Lambda's
/// defaults filled in where the template leaves a property out.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingSpec {
    pub logical_id: String,
    /// Logical id of the function it invokes (`FunctionName: !Ref X`).
    pub function: String,
    /// Logical id of the table whose stream it reads (`EventSourceArn: !GetAtt T.StreamArn`).
    pub table: String,
    /// `BatchSize` (Lambda's default for streams: 100).
    pub batch_size: u32,
    /// `MaximumBatchingWindowInSeconds` (default 0).
    pub batching_window: std::time::Duration,
    /// `MaximumRetryAttempts`; `None`: retried until the record expires (Lambda's -1, the default).
    pub maximum_retry_attempts: Option<u32>,
    /// `BisectBatchOnFunctionError` (default false).
    pub bisect_batch_on_function_error: bool,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `StartingPosition` (`TRIM_HORIZON` or `LATEST`).
    pub starting_position: String,
    /// `FilterCriteria.Filters[].Pattern`, parsed; a record goes to the function when it matches
    /// any of them (none: every record does). See [`MappingSpec::accepts`].
    pub filters: Vec<serde_json::Value>,
    /// `DestinationConfig.OnFailure.Destination` is set: records are parked after the last retry.
    pub on_failure_destination: bool,
}

impl MappingSpec {
    /// Whether Lambda would hand this stream record to the function: `record` is the record as
    /// the function receives it (`{"eventName": "INSERT", "dynamodb": {"Keys": ..., "NewImage":
    /// ...}}`, DynamoDB JSON, as `aws_lambda_events`' `EventRecord` serialises).
    pub fn accepts(&self, record: &serde_json::Value) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| pattern_matches(f, record))
    }
}

/// Lambda's event filtering, the part the template uses and a little more: a pattern is an
/// object whose leaves are lists of matchers; a record matches when every key of the pattern
/// matches. A matcher is a literal (equal; DynamoDB numbers, which are strings, also compare as
/// numbers), or one of `{"numeric": [op, n, (op, n)]}`, `{"exists": bool}`, `{"prefix": s}`,
/// `{"suffix": s}`, `{"anything-but": value or list}`, `{"equals-ignore-case": s}`.
pub fn pattern_matches(pattern: &serde_json::Value, record: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    let J::Object(fields) = pattern else {
        return false;
    };
    fields.iter().all(|(key, sub)| {
        let value = record.get(key);
        match sub {
            J::Object(_) => value.is_some_and(|v| pattern_matches(sub, v)),
            J::Array(matchers) => matchers.iter().any(|m| matcher_matches(m, value)),
            _ => false,
        }
    })
}

fn number_of(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn matcher_matches(matcher: &serde_json::Value, value: Option<&serde_json::Value>) -> bool {
    use serde_json::Value as J;
    let literal = |m: &J, v: &J| {
        m == v
            || matches!((number_of(m), number_of(v)), (Some(a), Some(b)) if a == b)
                && (m.is_number() || v.is_number())
    };
    let J::Object(op) = matcher else {
        // A literal matches the value, or any element of a list value.
        return match value {
            Some(J::Array(items)) => items.iter().any(|v| literal(matcher, v)),
            Some(v) => literal(matcher, v),
            None => false,
        };
    };
    let Some((name, arg)) = op.iter().next() else {
        return false;
    };
    match (name.as_str(), value) {
        ("exists", v) => arg.as_bool() == Some(v.is_some()),
        (_, None) => false,
        ("numeric", Some(v)) => {
            let (Some(x), Some(terms)) = (number_of(v), arg.as_array()) else {
                return false;
            };
            terms.chunks(2).all(|pair| {
                let (Some(op), Some(n)) = (pair[0].as_str(), pair.get(1).and_then(number_of))
                else {
                    return false;
                };
                match op {
                    "=" => x == n,
                    ">" => x > n,
                    ">=" => x >= n,
                    "<" => x < n,
                    "<=" => x <= n,
                    _ => false,
                }
            })
        }
        ("prefix", Some(J::String(s))) => arg.as_str().is_some_and(|p| s.starts_with(p)),
        ("suffix", Some(J::String(s))) => arg.as_str().is_some_and(|p| s.ends_with(p)),
        ("equals-ignore-case", Some(J::String(s))) => {
            arg.as_str().is_some_and(|p| s.eq_ignore_ascii_case(p))
        }
        ("anything-but", Some(v)) => match arg {
            J::Array(list) => !list.iter().any(|m| literal(m, v)),
            other => !literal(other, v),
        },
        _ => false,
    }
}

/// The logical id a `!Ref X` / `{"Ref": X}` or `!GetAtt X.Attr` / `{"Fn::GetAtt": [X, Attr]}`
/// points at, with the attribute for `GetAtt`.
fn reference(value: &Value) -> Option<(String, Option<String>)> {
    let get_att = |v: &Value| match v {
        Value::String(s) => {
            let (id, attr) = s.split_once('.')?;
            Some((id.to_owned(), Some(attr.to_owned())))
        }
        Value::Sequence(parts) => Some((
            parts.first()?.as_str()?.to_owned(),
            parts.get(1).and_then(Value::as_str).map(str::to_owned),
        )),
        _ => None,
    };
    match value {
        Value::Tagged(t) if t.tag == "Ref" => Some((t.value.as_str()?.to_owned(), None)),
        Value::Tagged(t) if t.tag == "GetAtt" => get_att(&t.value),
        Value::Mapping(m) => {
            if let Some(v) = m.get("Ref") {
                Some((v.as_str()?.to_owned(), None))
            } else {
                get_att(m.get("Fn::GetAtt")?)
            }
        }
        _ => None,
    }
}

fn number(value: &Value, path: &str, default: i64) -> Result<i64, StoreError> {
    match value {
        Value::Null => Ok(default),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| StoreError::Template(format!("{path} must be an integer"))),
        _ => Err(StoreError::Template(format!(
            "{path} must be a plain integer (the local stack reads it)"
        ))),
    }
}

/// The stream event-source mappings declared in a template, in logical-id order. Mappings of
/// other sources (queues, Kinesis) are left out.
pub fn mappings_in(template: &str) -> Result<Vec<MappingSpec>, StoreError> {
    let template: Template =
        serde_norway::from_str(template).map_err(|e| StoreError::Template(e.to_string()))?;
    let mut out = Vec::new();
    for (id, resource) in &template.resources {
        if resource.kind != "AWS::Lambda::EventSourceMapping" {
            continue;
        }
        let p = &resource.properties;
        let path = format!("Resources.{id}.Properties");
        let Some((table, Some(attribute))) = reference(&p["EventSourceArn"]) else {
            continue;
        };
        if attribute != "StreamArn" {
            continue;
        }
        let (function, _) = reference(&p["FunctionName"]).ok_or_else(|| {
            StoreError::Template(format!("{path}.FunctionName must be a !Ref to a function"))
        })?;
        let batch_size = number(&p["BatchSize"], &format!("{path}.BatchSize"), 100)?;
        let window = number(
            &p["MaximumBatchingWindowInSeconds"],
            &format!("{path}.MaximumBatchingWindowInSeconds"),
            0,
        )?;
        let retries = number(
            &p["MaximumRetryAttempts"],
            &format!("{path}.MaximumRetryAttempts"),
            -1,
        )?;
        let flag = |name: &str| -> Result<bool, StoreError> {
            match &p[name] {
                Value::Null => Ok(false),
                Value::Bool(b) => Ok(*b),
                _ => Err(StoreError::Template(format!(
                    "{path}.{name} must be true or false"
                ))),
            }
        };
        let mut filters = Vec::new();
        if let Some(list) = p["FilterCriteria"]["Filters"].as_sequence() {
            for (i, filter) in list.iter().enumerate() {
                let fpath = format!("{path}.FilterCriteria.Filters[{i}].Pattern");
                let pattern = text(&filter["Pattern"], &fpath)?;
                let pattern: serde_json::Value = serde_json::from_str(&pattern)
                    .map_err(|e| StoreError::Template(format!("{fpath}: not JSON: {e}")))?;
                if !pattern.is_object() {
                    return Err(StoreError::Template(format!(
                        "{fpath} must be a JSON object"
                    )));
                }
                filters.push(pattern);
            }
        }
        out.push(MappingSpec {
            logical_id: id.clone(),
            function,
            table,
            batch_size: u32::try_from(batch_size)
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    StoreError::Template(format!("{path}.BatchSize must be 1 to 10000"))
                })?,
            batching_window: std::time::Duration::from_secs(
                u64::try_from(window)
                    .ok()
                    .filter(|n| *n <= 300)
                    .ok_or_else(|| {
                        StoreError::Template(format!(
                            "{path}.MaximumBatchingWindowInSeconds must be 0 to 300"
                        ))
                    })?,
            ),
            maximum_retry_attempts: match retries {
                -1 => None,
                n => Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .ok_or_else(|| {
                            StoreError::Template(format!(
                                "{path}.MaximumRetryAttempts must be -1 to 10000"
                            ))
                        })?,
                ),
            },
            bisect_batch_on_function_error: flag("BisectBatchOnFunctionError")?,
            report_batch_item_failures: p["FunctionResponseTypes"].as_sequence().is_some_and(|l| {
                l.iter()
                    .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
            }),
            starting_position: p["StartingPosition"]
                .as_str()
                .unwrap_or("TRIM_HORIZON")
                .to_owned(),
            filters,
            on_failure_destination: !p["DestinationConfig"]["OnFailure"]["Destination"].is_null(),
        });
    }
    Ok(out)
}

/// The mapping that feeds `function` (a logical id such as `ActivationFunction`), if any.
pub fn mapping_for(template: &str, function: &str) -> Result<Option<MappingSpec>, StoreError> {
    Ok(mappings_in(template)?
        .into_iter()
        .find(|m| m.function == function))
}

/// The one description of the tables, compiled in: `infra/template.yaml`.
pub const SAM_TEMPLATE: &str = include_str!("../../../infra/template.yaml");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(function: &str) -> MappingSpec {
        mapping_for(SAM_TEMPLATE, function)
            .unwrap()
            .unwrap_or_else(|| panic!("no mapping for {function}"))
    }

    #[test]
    fn the_template_declares_four_tables() {
        let ids: Vec<String> = tables_in(SAM_TEMPLATE)
            .unwrap()
            .into_iter()
            .map(|t| t.logical_id)
            .collect();
        assert_eq!(
            ids,
            ["AlertsTable", "EventsTable", "StateTable", "TenantsTable"]
        );
    }

    #[test]
    fn every_stream_consumer_is_bounded_and_reports_item_failures() {
        let mappings = mappings_in(SAM_TEMPLATE).unwrap();
        let fed: Vec<(&str, &str)> = mappings
            .iter()
            .map(|m| (m.function.as_str(), m.table.as_str()))
            .collect();
        assert_eq!(
            fed,
            [
                ("ActivationFunction", "EventsTable"),
                ("NotifyFunction", "AlertsTable"),
                ("QualifyFunction", "StateTable"),
            ]
        );
        for m in &mappings {
            assert!(m.maximum_retry_attempts.is_some(), "{}", m.logical_id);
            assert!(m.bisect_batch_on_function_error, "{}", m.logical_id);
            assert!(m.report_batch_item_failures, "{}", m.logical_id);
            assert!(m.on_failure_destination, "{}", m.logical_id);
            assert_eq!(m.starting_position, "TRIM_HORIZON");
        }
        let activation = mapping("ActivationFunction");
        assert_eq!(activation.batch_size, 100);
        assert_eq!(activation.batching_window, std::time::Duration::ZERO);
        assert_eq!(activation.maximum_retry_attempts, Some(5));
    }

    fn record(event: &str, keys: serde_json::Value, image: serde_json::Value) -> serde_json::Value {
        json!({"eventName": event, "dynamodb": {"Keys": keys, "NewImage": image}})
    }

    #[test]
    fn activation_gets_new_and_corrected_events_not_expiries() {
        let m = mapping("ActivationFunction");
        let keys = json!({"pk": {"S": "t#m1"}});
        assert!(m.accepts(&record("INSERT", keys.clone(), json!({}))));
        assert!(m.accepts(&record("MODIFY", keys.clone(), json!({}))));
        assert!(!m.accepts(&record("REMOVE", keys, json!(null))));
    }

    #[test]
    fn qualify_gets_account_records_only() {
        let m = mapping("QualifyFunction");
        let keys = json!({"pk": {"S": "t#account#a"}});
        let account = json!({"kind": {"S": "account"}, "version": {"N": "3"}});
        let user = json!({"kind": {"S": "user"}, "version": {"N": "3"}});
        assert!(m.accepts(&record("INSERT", keys.clone(), account.clone())));
        assert!(m.accepts(&record("MODIFY", keys.clone(), account)));
        assert!(!m.accepts(&record("MODIFY", keys.clone(), user)));
        assert!(!m.accepts(&json!({"eventName": "REMOVE", "dynamodb": {"Keys": keys}})));
    }

    #[test]
    fn notify_gets_new_alerts_only() {
        let m = mapping("NotifyFunction");
        let key = |sk: &str| json!({"pk": {"S": "t#a"}, "sk": {"N": sk}});
        assert!(m.accepts(&record("INSERT", key("1"), json!({}))));
        assert!(m.accepts(&record("INSERT", key("12"), json!({}))));
        assert!(
            !m.accepts(&record("INSERT", key("0"), json!({}))),
            "lifecycle"
        );
        assert!(
            !m.accepts(&record("INSERT", key("-1"), json!({}))),
            "deliveries"
        );
        assert!(!m.accepts(&record("MODIFY", key("1"), json!({}))));
    }

    #[test]
    fn matchers() {
        let r = json!({"a": "Hello", "n": {"N": "7"}, "l": ["x", "y"]});
        let yes = |p: serde_json::Value| assert!(pattern_matches(&p, &r), "{p}");
        let no = |p: serde_json::Value| assert!(!pattern_matches(&p, &r), "{p}");
        yes(json!({"a": ["Hello", "Bye"]}));
        no(json!({"a": ["hello"]}));
        yes(json!({"a": [{"equals-ignore-case": "hello"}]}));
        yes(json!({"a": [{"prefix": "He"}]}));
        yes(json!({"a": [{"suffix": "lo"}]}));
        yes(json!({"a": [{"anything-but": ["Bye"]}]}));
        no(json!({"a": [{"anything-but": "Hello"}]}));
        yes(json!({"n": {"N": [{"numeric": [">", 5, "<=", 7]}]}}));
        no(json!({"n": {"N": [{"numeric": [">", 7]}]}}));
        yes(json!({"n": {"N": [7]}}));
        yes(json!({"b": [{"exists": false}]}));
        no(json!({"a": [{"exists": false}]}));
        yes(json!({"l": ["y"]}));
        no(json!({"missing": {"x": ["y"]}}));
    }
}
