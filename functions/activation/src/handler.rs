//! The batch handler: stream records in order, the first failure reported as the batch item
//! failure (ReportBatchItemFailures), write units counted and logged per tenant.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use pql_engine::{Definition, Event};
use pql_store::definitions::VersionCache;
use pql_store::events::decode_event;
use pql_store::tenants::TenantId;
use pql_store::{RecordKind, Store};
use serde_dynamo::AttributeValue;

use crate::apply::{Cache, Cx, FlushError};
use crate::{ActivationError, DefinitionCache};

/// How conflicting writes of one record are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Writes attempted per record and step before the stream record fails.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles per attempt up to `max_delay`, then a random
    /// 50–100% of it is slept (jitter, so that racing writers do not collide again).
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 25,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The sleep after `failed` conflicting attempts (1, 2, ...).
    pub fn backoff(&self, failed: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failed.saturating_sub(1).min(16))
            .min(self.max_delay);
        exp.mul_f64(0.5 + 0.5 * unit_random())
    }
}

/// A random number in [0, 1) for jitter, from the standard library's randomly keyed hasher.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos().into())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What a batch cost, per tenant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Events applied (stream records that succeeded).
    pub events: u64,
    pub account_writes: u64,
    pub user_writes: u64,
    /// Write capacity units consumed by those writes (as DynamoDB reports them).
    pub write_units: f64,
    /// Conditional writes that lost a race and were retried.
    pub conflicts: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.events += other.events;
        self.account_writes += other.account_writes;
        self.user_writes += other.user_writes;
        self.write_units += other.write_units;
        self.conflicts += other.conflicts;
    }
}

/// The outcome of one batch: the response for Lambda and what it cost.
#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    pub response: DynamoDbEventResponse,
    /// Per tenant id.
    pub usage: BTreeMap<String, Usage>,
    /// Records that were neither INSERTs nor MODIFYs (TTL deletions): nothing to do.
    pub ignored: u64,
    /// The sequence number of the record that failed, if one did.
    pub failed: Option<String>,
}

impl BatchReport {
    /// All tenants' usage together.
    pub fn total(&self) -> Usage {
        let mut total = Usage::default();
        for usage in self.usage.values() {
            total.add(usage);
        }
        total
    }
}

/// Called before every conditional write with the record about to be written: lets a test
/// write the record in between to force a conflict. Not used in production.
pub type SaveHook = Arc<
    dyn Fn(RecordKind, String) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> + Send + Sync,
>;

/// The function's state, built once per Lambda instance.
pub struct Activation {
    pub(crate) store: Store,
    pub(crate) definitions: DefinitionCache,
    /// Stored definition versions a state may follow (immutable: cached for good).
    pub(crate) versions: VersionCache,
    pub(crate) retry: RetryPolicy,
    pub(crate) save_hook: Option<SaveHook>,
}

impl Activation {
    pub fn new(store: Store) -> Self {
        Activation {
            store,
            definitions: DefinitionCache::default(),
            versions: VersionCache::default(),
            retry: RetryPolicy::default(),
            save_hook: None,
        }
    }

    pub fn with_definitions(mut self, definitions: DefinitionCache) -> Self {
        self.definitions = definitions;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    #[doc(hidden)]
    pub fn with_save_hook(mut self, hook: SaveHook) -> Self {
        self.save_hook = Some(hook);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The Lambda handler: processes the batch, logs what it cost, returns the failure (if any).
    pub async fn handle(&self, event: StreamEvent) -> DynamoDbEventResponse {
        let report = self.process(event).await;
        for (tenant, usage) in &report.usage {
            tracing::info!(
                tenant = %tenant,
                events = usage.events,
                account_writes = usage.account_writes,
                user_writes = usage.user_writes,
                wcu = usage.write_units,
                conflicts = usage.conflicts,
                "batch applied"
            );
        }
        if report.ignored > 0 {
            tracing::debug!(ignored = report.ignored, "REMOVE records ignored");
        }
        report.response
    }

    /// Processes the batch: every record up to the first that cannot be decoded (or whose
    /// tenant has no definition) is applied, sorted by event time, through one [`Cache`] and
    /// one [`Activation::flush`]; the record that could not be decoded is the batch item
    /// failure, so Lambda redelivers it and what follows. If applying fails, the whole batch
    /// is reported from its first record (its writes are idempotent).
    pub async fn process(&self, event: StreamEvent) -> BatchReport {
        let mut report = BatchReport::default();
        let mut batch = Vec::new();
        let mut cut = None;
        for record in &event.records {
            // MODIFY: an earlier copy of a stored event replaced it (see pql_store::events).
            if record.event_name != "INSERT" && record.event_name != "MODIFY" {
                report.ignored += 1;
                continue;
            }
            let sequence = record.change.sequence_number.clone().unwrap_or_default();
            match self.decode(record).await {
                Ok(decoded) => batch.push((sequence, decoded)),
                Err(error) => {
                    tracing::error!(
                        sequence_number = %sequence,
                        event_id = %record.event_id,
                        error = %error,
                        "stream record failed; it and the records after it will be redelivered"
                    );
                    cut = Some(sequence);
                    break;
                }
            }
        }
        let failed = match self.apply_batch(&batch, &mut report).await {
            Ok(()) => cut,
            Err(error) => {
                let first = batch.first().map(|(sequence, _)| sequence.clone());
                tracing::error!(
                    first_sequence_number = ?first,
                    records = batch.len(),
                    error = %error,
                    "batch failed; it will be redelivered from its first record"
                );
                first
            }
        };
        if let Some(sequence) = failed {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence.clone());
            report.response.batch_item_failures.push(failure);
            report.failed = Some(sequence);
        }
        report
    }

    async fn decode(&self, record: &EventRecord) -> Result<Decoded, ActivationError> {
        let (tenant, event) = decode_record(record)?;
        let definition = self
            .definitions
            .get(&self.store, &tenant)
            .await?
            .ok_or_else(|| ActivationError::UnknownTenant(tenant.to_string()))?;
        Ok(Decoded {
            tenant,
            event,
            definition,
        })
    }

    /// Applies the events in event-time order to the batch's records and writes them; runs
    /// again on fresh reads when a write loses a race (bounded, with jittered backoff).
    async fn apply_batch(
        &self,
        batch: &[(String, Decoded)],
        report: &mut BatchReport,
    ) -> Result<(), ActivationError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut order: Vec<&Decoded> = batch.iter().map(|(_, d)| d).collect();
        order.sort_by(|a, b| {
            (a.event.timestamp, &a.event.message_id).cmp(&(b.event.timestamp, &b.event.message_id))
        });
        let mut usage: HashMap<TenantId, Usage> = HashMap::new();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let mut cache = Cache::default();
            let mut applied = Ok(());
            for d in &order {
                let mut cx = Cx {
                    tenant: &d.tenant,
                    definition: &d.definition,
                    event: &d.event,
                    cache: &mut cache,
                };
                applied = self.apply_event(&mut cx).await;
                if applied.is_err() {
                    break;
                }
            }
            if let Err(error) = applied {
                break Err(error);
            }
            match self.flush(&mut cache, &mut usage).await {
                Ok(()) => break Ok(()),
                Err(FlushError::Store(error)) => break Err(error),
                Err(FlushError::Conflict { kind, id }) => {
                    if attempt >= self.retry.max_attempts {
                        break Err(ActivationError::contention(kind, &id, attempt));
                    }
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                }
            }
        };
        if result.is_ok() {
            for d in &order {
                usage.entry(d.tenant.clone()).or_default().events += 1;
            }
        }
        // Usage of a failed batch is counted too: its writes were made (and paid for).
        for (tenant, usage) in usage {
            report
                .usage
                .entry(tenant.to_string())
                .or_default()
                .add(&usage);
        }
        result
    }
}

/// A stream record, ready to apply.
struct Decoded {
    tenant: TenantId,
    event: Event,
    definition: Arc<Definition>,
}

/// The tenant and the event of a stream record, from the new image the events table stores
/// (`pk`, `tenant`, `event`: the engine's event as JSON, `expires_at`).
pub fn decode_record(record: &EventRecord) -> Result<(TenantId, Event), ActivationError> {
    let image = &record.change.new_image;
    let string = |name: &str| match image.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.as_str()),
        Some(_) => Err(ActivationError::Decode(format!(
            "attribute `{name}` is not a string"
        ))),
        None => Err(ActivationError::Decode(format!(
            "the new image has no `{name}` attribute"
        ))),
    };
    let tenant = TenantId::parse(string("tenant")?).map_err(ActivationError::Decode)?;
    let event = decode_event(string("event")?)
        .map_err(|e| ActivationError::Decode(format!("attribute `event`: {e}")))?;
    Ok((tenant, event))
}
