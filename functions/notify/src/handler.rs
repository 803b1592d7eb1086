//! The stream batch.
//!
//! Alerts of a batch are delivered concurrently (at most [`NotifyHandler::concurrency`] at a
//! time): a slow or failing receiver delays only its own alert's destinations, never another
//! tenant's or another destination's. Each record is judged on its own:
//!
//! * skipped: anything but an `INSERT` of an alert (`sk >= 1`; the event source filter keeps
//!   only those, this is the belt to its braces), and unreadable items (logged as errors:
//!   retrying cannot fix them, and a poison record must not hold up the shard);
//! * reported as a batch item failure: a store failure, or a destination another consumer is
//!   sending right now (its claim has not expired), so that Lambda retries the record; the
//!   retry finds the deliveries done and sends nothing twice.
//!
//! A destination that keeps failing is *not* a batch failure: it is retried within the
//! invocation by the retry policy, then parked with its last error (`pql alerts list
//! --failed`, `pql alerts replay`), so it never blocks the shard.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::StreamExt;
use pql_notify::{AlertOutcome, Notifier, NotifyError};
use pql_store::alerts::Alert;
use serde_dynamo::AttributeValue;

/// Why a record was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotAnInsert,
    /// `sk` < 1: a lifecycle or delivery-state item, not an alert.
    NotAnAlert,
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    Skipped(Skip),
    Delivered(AlertOutcome),
}

/// The function's state: built once per Lambda instance.
#[derive(Debug, Clone)]
pub struct NotifyHandler {
    notifier: Arc<Notifier>,
    /// Alerts delivered at once within a batch.
    pub concurrency: usize,
}

fn read_alert(record: &EventRecord) -> Result<Alert, Skip> {
    if record.event_name != "INSERT" {
        return Err(Skip::NotAnInsert);
    }
    let image = &record.change.new_image;
    let sk = match image.get("sk") {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    match sk {
        Some(sk) if sk >= 1 => {}
        Some(_) => return Err(Skip::NotAnAlert),
        None => return Err(Skip::Malformed("no numeric `sk`".into())),
    }
    let item: HashMap<String, aws_sdk_dynamodb::types::AttributeValue> = image
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    Alert::from_item(&item).map_err(Skip::Malformed)
}

impl NotifyHandler {
    pub fn new(notifier: Arc<Notifier>) -> Self {
        NotifyHandler {
            notifier,
            concurrency: 16,
        }
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Handles a stream batch; failed records are reported (Lambda retries from the first).
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let results: Vec<(Option<String>, Result<RecordOutcome, NotifyError>)> =
            futures::stream::iter(0..event.records.len())
                .map(|i| {
                    let record = &event.records[i];
                    async move {
                        (
                            record.change.sequence_number.clone(),
                            self.process(record).await,
                        )
                    }
                })
                .buffered(self.concurrency.max(1))
                .collect()
                .await;
        let mut response = DynamoDbEventResponse::default();
        for (record, (sequence, result)) in event.records.iter().zip(results) {
            let retry = match result {
                Ok(RecordOutcome::Delivered(outcome)) => outcome.needs_retry(),
                Ok(RecordOutcome::Skipped(Skip::Malformed(reason))) => {
                    tracing::error!(
                        event_id = record.event_id,
                        reason,
                        "unreadable alert: skipped"
                    );
                    false
                }
                Ok(RecordOutcome::Skipped(_)) => false,
                Err(error) => {
                    tracing::error!(event_id = record.event_id, %error, "alert failed; reported for retry");
                    true
                }
            };
            if retry {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = sequence;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// One invocation, whatever its source: the alerts stream's batch, or the daily
    /// schedule's `{"pql": "warm-digest"}` (EventBridge), which sends the warm digests.
    pub async fn invoke(&self, payload: serde_json::Value) -> Result<serde_json::Value, String> {
        if payload.get("pql").and_then(|v| v.as_str()) == Some("warm-digest") {
            let today = chrono::Utc::now().date_naive();
            // A store failure fails the invocation: EventBridge invokes again, and digests
            // already sent are not sent twice (claim, send, mark).
            let outcomes = self
                .notifier
                .send_digests(today)
                .await
                .map_err(|e| format!("warm digests: {e}"))?;
            let digests: Vec<serde_json::Value> = outcomes
                .iter()
                .map(|(id, outcome)| serde_json::json!({"digest": id, "outcome": format!("{outcome:?}")}))
                .collect();
            return Ok(serde_json::json!({ "digests": digests }));
        }
        if payload.get("Records").is_none() {
            return Err(format!(
                "unknown invocation (expected a DynamoDB stream batch with `Records`, or {{\"pql\": \"warm-digest\"}}): keys {:?}",
                payload.as_object().map(|o| o.keys().collect::<Vec<_>>()).unwrap_or_default()
            ));
        }
        let event: Event = serde_json::from_value(payload)
            .map_err(|e| format!("not a DynamoDB stream batch: {e}"))?;
        let response = self.handle(event).await;
        serde_json::to_value(response).map_err(|e| e.to_string())
    }

    /// Handles one stream record.
    pub async fn process(&self, record: &EventRecord) -> Result<RecordOutcome, NotifyError> {
        let alert = match read_alert(record) {
            Ok(alert) => alert,
            Err(skip) => return Ok(RecordOutcome::Skipped(skip)),
        };
        let outcome = self.notifier.deliver(&alert).await?;
        if outcome == AlertOutcome::NoSettings {
            tracing::warn!(
                tenant = alert.tenant,
                account = alert.account,
                "no notification settings for the tenant: alert not sent"
            );
        }
        Ok(RecordOutcome::Delivered(outcome))
    }
}
