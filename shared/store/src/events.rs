//! Raw events. One item per (tenant, messageId), written with a conditional put: the write
//! that stores an event is also the one that deduplicates it, for as long as the event is kept
//! (its TTL, 90 days by default), which is far longer than any client retries.
//!
//! A copy of a stored event wins only when its (clock-skew corrected) time is earlier: a retry
//! whose device clock changed between sends. The engine keeps the earliest copy of a
//! messageId, so the pipeline must see that copy too; it replaces the item, and the stream's
//! `MODIFY` takes it to the activation function.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};
use futures::stream::{FuturesUnordered, StreamExt};
use pql_engine::time::MS_PER_SECOND;
use pql_engine::{Event, Timestamp};

use crate::tenants::TenantId;
use crate::{Store, StoreError};

/// How many puts of one request are in flight at once.
const PUT_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// An event with this messageId was already stored for the tenant: nothing was written.
    Duplicate,
    /// A copy with this messageId was stored with a later time: this earlier one replaced it.
    Corrected,
}

/// The stored form of one event: the engine's parsed event, as JSON.
pub fn event_pk(tenant: &TenantId, message_id: &str) -> String {
    format!("{tenant}#{message_id}")
}

impl Store {
    /// Stores one event unless the tenant already has its messageId. Returns the outcome and
    /// the write units consumed.
    pub async fn put_event(
        &self,
        tenant: &TenantId,
        event: &Event,
        retention_days: u32,
    ) -> Result<(PutOutcome, f64), StoreError> {
        let table = &self.tables.events;
        let body = serde_json::to_string(event).expect("events always serialise");
        // Retention counts from when the event reached us, not from its event time: a replay of
        // old history must not be stored already expired (and so not deduplicated).
        let received = event.received_at.unwrap_or_else(Timestamp::now);
        let expires_at = received.millis() / MS_PER_SECOND + i64::from(retention_days) * 86_400;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .item(
                "pk",
                AttributeValue::S(event_pk(tenant, event.message_id.as_str())),
            )
            .item("tenant", AttributeValue::S(tenant.to_string()))
            .item("event", AttributeValue::S(body))
            .item("expires_at", AttributeValue::N(expires_at.to_string()))
            .item(
                "at",
                AttributeValue::N(event.timestamp.millis().to_string()),
            )
            // Items written before `at` existed compare false: their copies stay duplicates.
            .condition_expression("attribute_not_exists(pk) OR #at > :at")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(
                ":at",
                AttributeValue::N(event.timestamp.millis().to_string()),
            )
            // The old item comes back only when one was replaced (no extra write units).
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                let outcome = if out.attributes().is_some_and(|old| !old.is_empty()) {
                    PutOutcome::Corrected
                } else {
                    PutOutcome::Stored
                };
                let units = out
                    .consumed_capacity()
                    .and_then(|c| c.capacity_units())
                    .unwrap_or(0.0);
                Ok((outcome, units))
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok((PutOutcome::Duplicate, 0.0))
            }
            Err(e) => Err(StoreError::dynamo("PutItem", table, e)),
        }
    }

    /// Stores events, at most 16 puts in flight; outcomes (and write units) come back in
    /// input order. The first error is returned once every put has finished, so the caller
    /// knows nothing is still in flight. (Driven with `FuturesUnordered` over indexes: a
    /// `buffer_unordered` over a closure borrowing the events is a future the compiler cannot
    /// prove `Send`, rust-lang/rust#102211, and the Lambda runtime needs `Send`.)
    pub async fn put_events(
        &self,
        tenant: &TenantId,
        events: &[Event],
        retention_days: u32,
    ) -> Result<Vec<(PutOutcome, f64)>, StoreError> {
        let mut outcomes = vec![(PutOutcome::Stored, 0.0); events.len()];
        let mut first_error = None;
        let mut pending = events.iter().enumerate();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < PUT_CONCURRENCY {
                let Some((index, event)) = pending.next() else {
                    break;
                };
                in_flight.push(async move {
                    (index, self.put_event(tenant, event, retention_days).await)
                });
            }
            match in_flight.next().await {
                None => break,
                Some((index, Ok(outcome))) => outcomes[index] = outcome,
                Some((_, Err(error))) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(outcomes),
        }
    }
}

/// Reads an event back from its stored JSON (stream records and rebuilds).
pub fn decode_event(body: &str) -> Result<Event, String> {
    serde_json::from_str(body).map_err(|e| e.to_string())
}
