//! Versioned records in the state table: account state and user state.
//!
//! A record is serialised to JSON and deflated into one binary attribute (`body`), which keeps
//! a typical account under 1 KB, that is one write unit per update. Every write is conditional
//! on the `version` read before (optimistic concurrency): two writers that race cannot lose
//! each other's update; the loser re-reads and re-applies, which the engine makes safe because
//! applying an event twice changes nothing.

use std::io::{Read, Write};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::tenants::TenantId;
use crate::{Store, StoreError};

/// A value with the version it was read at (0: not stored yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// Someone else wrote the record since it was read: read it again and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the record changed since it was read")]
pub struct Conflict;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Account,
    User,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Account => "account",
            RecordKind::User => "user",
        }
    }
}

/// What the state table holds for an account: its activity state and its event clock (the
/// latest event time that changed it), at which decisions are made, as `Ledger` does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccountRecord {
    pub state: pql_engine::AccountState,
    pub clock: pql_engine::Timestamp,
}

/// What the state table holds for a user: activity that named no account, the accounts the
/// user belongs to and the identities joined to it (alias / identify).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    pub state: pql_engine::AccountState,
    pub accounts: Vec<String>,
    pub aliases: Vec<String>,
}

pub fn record_pk(tenant: &TenantId, kind: RecordKind, id: &str) -> String {
    format!("{tenant}#{}#{id}", kind.as_str())
}

pub fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("records always serialise");
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(json.len() / 3), Compression::fast());
    encoder
        .write_all(&json)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut json = Vec::new();
    DeflateDecoder::new(body)
        .read_to_end(&mut json)
        .map_err(|e| format!("body is not deflated JSON: {e}"))?;
    serde_json::from_slice(&json)
        .map_err(|e| format!("body does not hold the expected record: {e}"))
}

impl Store {
    /// Reads a record (strongly consistent).
    pub async fn load_record<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let table = &self.tables.state;
        let pk = record_pk(tenant, kind, id);
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(pk.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", table, e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            table: table.clone(),
            key: pk.clone(),
            reason,
        };
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| corrupt("no version".into()))?;
        let body = item
            .get("body")
            .and_then(|v| v.as_b().ok())
            .ok_or_else(|| corrupt("no body".into()))?;
        let value = decode_body(body.as_ref()).map_err(corrupt)?;
        Ok(Some(Versioned { value, version }))
    }

    /// Writes a record if it is still at `read_version` (0: if it does not exist yet).
    /// Returns the new version and the write units consumed, or [`Conflict`].
    pub async fn save_record<T: Serialize>(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
        value: &T,
        read_version: u64,
    ) -> Result<Result<(u64, f64), Conflict>, StoreError> {
        self.save_record_with(tenant, kind, id, value, read_version, Vec::new())
            .await
    }

    /// [`Store::save_record`] with more attributes on the item (e.g. the sweep index's
    /// `sweep_shard` / `due_at`: a put replaces the whole item, so they go in every write).
    pub async fn save_record_with<T: Serialize>(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
        value: &T,
        read_version: u64,
        extra: Vec<(String, AttributeValue)>,
    ) -> Result<Result<(u64, f64), Conflict>, StoreError> {
        let table = &self.tables.state;
        let version = read_version + 1;
        let mut request = self
            .client
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S(record_pk(tenant, kind, id)))
            .item("tenant", AttributeValue::S(tenant.to_string()))
            .item("kind", AttributeValue::S(kind.as_str().into()))
            .item("id", AttributeValue::S(id.to_owned()))
            .item("version", AttributeValue::N(version.to_string()))
            .item("body", AttributeValue::B(Blob::new(encode_body(value))))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        for (name, value) in extra {
            request = request.item(name, value);
        }
        request = if read_version == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("version = :read")
                .expression_attribute_values(":read", AttributeValue::N(read_version.to_string()))
        };
        match request.send().await {
            Ok(out) => Ok(Ok((
                version,
                out.consumed_capacity()
                    .and_then(|c| c.capacity_units())
                    .unwrap_or(0.0),
            ))),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(Err(Conflict))
            }
            Err(e) => Err(StoreError::dynamo("PutItem", table, e)),
        }
    }
}
