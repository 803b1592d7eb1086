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

/// The one description of the tables, compiled in: `infra/template.yaml`.
pub const SAM_TEMPLATE: &str = include_str!("../../../infra/template.yaml");
