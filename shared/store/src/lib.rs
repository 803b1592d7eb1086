//! The DynamoDB adapter. Everything the functions and the local stack store goes through here;
//! the table layout is described in `infra/template.yaml` and the README.
//!
//! * [`tenants`]: tenants and their keys (stored as SHA-256 hashes only), active definitions.
//! * [`events`]: raw events, one conditional put per (tenant, messageId): storage and
//!   deduplication in one write unit.
//! * [`records`]: account and user state with optimistic concurrency (a `version` attribute).
//! * [`alerts`]: account lifecycles and the alert outbox, written together (exactly one alert
//!   per qualification).
//! * [`sweep`]: when a decision can next change with time alone, and the `due` index.
//! * [`template`]: creates the tables exactly as the SAM template declares them.

pub mod accounts;
pub mod alerts;
pub mod definition_versions;
pub mod definitions;
pub mod deliveries;
pub mod events;
pub mod preview;
pub mod records;
pub mod reevaluation;
pub mod shadow;
pub mod sweep;
pub mod template;
pub mod tenants;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

pub use records::{AccountRecord, Conflict, DecisionPoint, RecordKind, UserRecord, Versioned};

/// Table names, from the environment in Lambda (set by the template) or from the local stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub tenants: String,
    pub events: String,
    pub state: String,
    pub alerts: String,
}

impl Tables {
    /// `TENANTS_TABLE`, `EVENTS_TABLE`, `STATE_TABLE`, `ALERTS_TABLE`.
    pub fn from_env() -> Result<Tables, StoreError> {
        let var = |name: &'static str| {
            std::env::var(name).map_err(|_| {
                StoreError::Config(format!(
                    "environment variable {name} is not set (the table's name)"
                ))
            })
        };
        Ok(Tables {
            tenants: var("TENANTS_TABLE")?,
            events: var("EVENTS_TABLE")?,
            state: var("STATE_TABLE")?,
            alerts: var("ALERTS_TABLE")?,
        })
    }

    /// The names the local stack gives the template's tables: `<prefix><LogicalId>`.
    pub fn with_prefix(prefix: &str) -> Tables {
        Tables {
            tenants: format!("{prefix}TenantsTable"),
            events: format!("{prefix}EventsTable"),
            state: format!("{prefix}StateTable"),
            alerts: format!("{prefix}AlertsTable"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} on {table} failed: {message}")]
    Dynamo {
        operation: &'static str,
        table: String,
        message: String,
    },
    #[error("stored item {key} in {table} is unreadable: {reason}")]
    Corrupt {
        table: String,
        key: String,
        reason: String,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("the SAM template cannot be used: {0}")]
    Template(String),
}

impl StoreError {
    pub(crate) fn dynamo(
        operation: &'static str,
        table: &str,
        error: impl std::error::Error,
    ) -> Self {
        // The SDK's Display is terse ("service error"); the source chain says what happened.
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        StoreError::Dynamo {
            operation,
            table: table.to_owned(),
            message,
        }
    }
}

/// The adapter: a DynamoDB client (built once, at init) and the table names.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    tables: Tables,
}

impl Store {
    pub fn new(client: Client, tables: Tables) -> Self {
        Store { client, tables }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }
}

/// An item read by its key, with the table and key to name when it is unreadable.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub table: String,
    pub key: String,
    pub item: HashMap<String, AttributeValue>,
}

impl Fetched {
    /// The item is unreadable: why.
    pub fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            table: self.table.clone(),
            key: self.key.clone(),
            reason: reason.into(),
        }
    }

    /// A number attribute (`missing`: the reason when it is absent or not a number).
    pub fn number(&self, name: &str, missing: &str) -> Result<u64, StoreError> {
        self.item
            .get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| self.corrupt(missing))
    }

    /// A string attribute (`missing`: the reason when it is absent or not a string).
    pub fn string(&self, name: &str, missing: &str) -> Result<&str, StoreError> {
        self.item
            .get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            .ok_or_else(|| self.corrupt(missing))
    }

    /// A string attribute holding JSON, decoded.
    pub fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StoreError> {
        let text = self.string(name, &format!("no `{name}`"))?;
        serde_json::from_str(text).map_err(|e| self.corrupt(format!("`{name}`: {e}")))
    }

    /// A versioned record: its `version` and its `body` (deflated JSON, see [`records`]).
    pub fn versioned_body<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Versioned<T>, StoreError> {
        let version = self.number("version", "no version")?;
        let body = self
            .item
            .get("body")
            .and_then(|v| v.as_b().ok())
            .ok_or_else(|| self.corrupt("no body"))?;
        let value = records::decode_body(body.as_ref()).map_err(|e| self.corrupt(e))?;
        Ok(Versioned { value, version })
    }
}

impl Store {
    /// The item of `table` with hash key `pk`, read strongly consistently (`None`: none).
    pub(crate) async fn get_consistent(
        &self,
        table: &str,
        pk: &str,
    ) -> Result<Option<Fetched>, StoreError> {
        let key = HashMap::from([("pk".to_owned(), AttributeValue::S(pk.to_owned()))]);
        self.get_consistent_item(table, key, pk.to_owned()).await
    }

    /// The item of `table` with `key` (hash, or hash and sort), read strongly consistently;
    /// `key_text` is the key a Corrupt error names.
    pub(crate) async fn get_consistent_item(
        &self,
        table: &str,
        key: HashMap<String, AttributeValue>,
        key_text: String,
    ) -> Result<Option<Fetched>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", table, e))?;
        Ok(out.item.map(|item| Fetched {
            table: table.to_owned(),
            key: key_text,
            item,
        }))
    }

    /// Every item of partition `pk` whose sort key meets `sk_condition` (on `:sk`), strongly
    /// consistent, page by page; `each` reads one item (`Err`: why it is unreadable).
    pub(crate) async fn query_partition(
        &self,
        table: &str,
        pk: &str,
        sk_condition: &str,
        sk: AttributeValue,
        mut each: impl FnMut(&HashMap<String, AttributeValue>) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression(format!("pk = :pk AND {sk_condition}"))
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .expression_attribute_values(":sk", sk.clone())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query", table, e))?;
            for item in out.items() {
                each(item).map_err(|reason| StoreError::Corrupt {
                    table: table.to_owned(),
                    key: pk.to_owned(),
                    reason,
                })?;
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(()),
            }
        }
    }
}

/// A client for DynamoDB Local (or any endpoint override): fixed region and dummy credentials,
/// which DynamoDB Local accepts and which never reach AWS.
pub fn local_client(endpoint: &str) -> Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "pql-local"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}
