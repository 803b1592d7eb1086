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

/// What the state table holds for an account: its activity state, its event clock (the
/// latest event time that changed it) and the decisions made since the previous write.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccountRecord {
    pub state: pql_engine::AccountState,
    pub clock: pql_engine::Timestamp,
    /// The verdicts of the events this write applied, in the order they were applied, each at
    /// its event's time, as `Ledger` makes them after every event; only those where the
    /// verdict's stage or tier changed, and the last. The activation function applies a whole
    /// stream batch before it writes an account once, so the qualify function replays these
    /// to decide *when* the account qualified (empty: decide at `clock`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<DecisionPoint>,
}

/// A verdict and the event time it was made at.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecisionPoint {
    pub at: pql_engine::Timestamp,
    pub verdict: pql_engine::Verdict,
}

impl AccountRecord {
    /// After an event at `at` changed the state: moves the clock and records the verdict as
    /// of `at`, unless the event is late (older than an event already applied): a late
    /// event's verdict is taken at the clock by [`AccountRecord::close_points`] instead, so
    /// it cannot move a decision back before events that were applied earlier.
    pub fn touched(&mut self, definition: &pql_engine::Definition, at: pql_engine::Timestamp) {
        let late = at < self.clock;
        self.clock = self.clock.max(at);
        if !late {
            self.record_point(definition, at);
        }
    }

    /// Before the record is written: the verdict as of the clock is the last point.
    pub fn close_points(&mut self, definition: &pql_engine::Definition) {
        if self.points.last().is_none_or(|p| p.at < self.clock) {
            self.record_point(definition, self.clock);
        }
    }

    /// Records the verdict after an event at `at` changed the state: replaces the previous
    /// point when the stage and tier are unchanged (it was not the last after all).
    pub fn record_point(&mut self, definition: &pql_engine::Definition, at: pql_engine::Timestamp) {
        let verdict = pql_engine::verdict(definition, &self.state, at);
        let same = |p: &DecisionPoint| {
            p.verdict.stage() == verdict.stage()
                && p.verdict.tier == verdict.tier
                && p.verdict.activated == verdict.activated
        };
        // The previous point stays when it opened its run (it is a change) or closes the
        // previous one; only a trailing repeat of the same stage and tier is replaced.
        let replace = self.points.len() >= 2
            && self.points.last().is_some_and(same)
            && same(&self.points[self.points.len() - 2]);
        if replace {
            self.points.pop();
        }
        self.points.push(DecisionPoint { at, verdict });
    }
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
        let pk = record_pk(tenant, kind, id);
        match self.get_consistent(&self.tables.state, &pk).await? {
            Some(fetched) => fetched.versioned_body().map(Some),
            None => Ok(None),
        }
    }

    /// The version a record is at (0: not stored), strongly consistent, reading nothing else.
    pub async fn record_version(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
    ) -> Result<u64, StoreError> {
        let table = &self.tables.state;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(record_pk(tenant, kind, id)))
            .projection_expression("version")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", table, e))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|item| item.get("version"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
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
