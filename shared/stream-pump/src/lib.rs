//! The stream pump: what the AWS Lambda event-source mapping does for DynamoDB Streams,
//! in-process, so the local stack and the end-to-end tests run the real stream handlers on
//! DynamoDB Local's streams.
//!
//! A handler receives exactly what it receives on Lambda, an
//! [`aws_lambda_events::event::dynamodb::Event`], and answers with a
//! [`DynamoDbEventResponse`] (partial batch failures by sequence number) or an error.
//!
//! # Semantics (as the Lambda documentation for DynamoDB Streams describes them)
//!
//! * **Shards.** Discovered with `DescribeStream` (paginated) at start, every
//!   [`MappingConfig::discovery_interval`] and whenever a shard ends. Shards are processed
//!   concurrently, one batch in flight per shard, records in order within a shard. A child
//!   shard starts only once its parent is fully processed (the parent's `GetRecords` returned
//!   no `NextShardIterator` and all of its records were delivered or parked); a parent that is
//!   no longer listed (trimmed) does not hold its children back.
//! * **Starting position.** `TrimHorizon` reads every shard from its oldest record. `Latest`
//!   takes `LATEST` iterators for the shards open at start (before [`start`] returns, so a write
//!   made after it is seen), skips the shards already closed then, and reads shards discovered
//!   later (children) from their start, as Lambda does.
//! * **Batches.** Up to [`MappingConfig::batch_size`] records; with a
//!   [`MappingConfig::batching_window`], the pump keeps reading until the batch is full or the
//!   window (counted from the first record of the batch) has passed; without one, a batch is
//!   what the shard has when it is read. Records that the [`RecordFilter`] rejects are
//!   dropped before batching (never delivered, never count towards a batch), like
//!   `FilterCriteria`.
//! * **Success.** The whole batch is checkpointed. Without
//!   [`MappingConfig::report_batch_item_failures`], any `Ok` response is a success (Lambda
//!   ignores the response then).
//! * **Function error** (`Err`, or a panic in the handler): the whole batch failed. With
//!   `report_batch_item_failures`, a response naming an empty, missing or unknown
//!   `itemIdentifier` is a function error too.
//! * **Partial failure** (`report_batch_item_failures`): the records before the *lowest*
//!   reported sequence number are checkpointed; the retry starts at that record (the rest of
//!   the batch).
//! * **Retries.** A failed batch (or the rest of it) is retried after
//!   [`MappingConfig::retry_delay`], up to [`MappingConfig::maximum_retry_attempts`] times
//!   (so at most `1 + maximum_retry_attempts` invocations); then its records are
//!   **parked**: sent to the `parked` channel (what Lambda sends to the on-failure
//!   destination) and checkpointed, and the shard moves on.
//! * **Bisection** ([`MappingConfig::bisect_batch_on_function_error`]): a batch of two or more
//!   records that gets a function error is split in two halves, delivered one after the other,
//!   each as its own batch. *Choice:* a split does not use up a retry attempt (each half starts
//!   with a fresh count), so a failing batch is always narrowed to single records before the
//!   retry count decides anything, and exactly the poison records are parked (a batch of `n`
//!   is split at most `n - 1` times; then each poison record fails
//!   `1 + maximum_retry_attempts` times). Lambda's documentation does not say how it counts
//!   retries across splits. A partial failure is not split further: the rest of the batch, from the failed
//!   record, is retried, as Lambda documents for bisection with partial batch responses.
//! * **Iterators.** An expired iterator is replaced by one `AFTER_SEQUENCE_NUMBER` of the last
//!   record read from the shard (records read but not yet checkpointed are held in memory, so
//!   nothing is read twice or skipped); trimmed data restarts at `TRIM_HORIZON`. Throttling and
//!   transient errors are retried after [`MappingConfig::poll_interval`] with a new iterator
//!   (same position), and logged.
//! * **Shutdown.** Cancelling the token stops every shard at its next await point, an
//!   in-flight invocation included (its records are not checkpointed: on Lambda they would be
//!   delivered again). Checkpoints are in memory: a new pump starts from its starting position.
//!
//! Not reproduced: `MaximumRecordAgeInSeconds`, `ParallelizationFactor` (always 1), tumbling
//! windows and the 6 MB payload limit. Filter patterns are the caller's predicate
//! ([`RecordFilter`]); the local stack evaluates the template's patterns with it.
//!
//! # DynamoDB Local's streams (observed with the pinned version)
//!
//! * A new stream has one shard, and no split was seen during the tests; disabling the stream
//!   closes the shard (it gets an ending sequence number and `GetRecords` returns no next
//!   iterator after its last record). Shard lineage and concurrency are tested against a fake.
//! * Sequence numbers are one counter for the whole DynamoDB Local, zero-padded to 21 digits.
//! * `ApproximateCreationDateTime` is truncated to the minute; `awsRegion` is `ddblocal`, as is
//!   the region in the stream ARN.
//! * Iterators can be used more than once; an iterator it cannot read answers
//!   `ValidationException: Invalid ShardIterator` (the pump takes a new one).
//! * DynamoDB Local keeps one database per access key and region: the streams client must use
//!   the tables' (`local` / `us-east-1` for [`local_client`] and `pql_store::local_client`),
//!   or `DescribeStream` answers that the stream does not exist.

mod convert;
mod shard;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use aws_lambda_events::event::dynamodb::{Event, EventRecord};
pub use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_dynamodbstreams::Client;
pub use convert::lambda_record;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;

/// The error type of a handler; the same as `lambda_runtime::Error`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A Lambda function fed by a DynamoDB stream.
///
/// Implemented for closures `Fn(Event) -> impl Future<Output = Result<DynamoDbEventResponse,
/// HandlerError>>`, so a function's handler, built once as in its `main`, plugs in as:
///
/// ```no_run
/// use std::sync::Arc;
/// use pql_stream_pump::{DynamoDbEventResponse, Event, HandlerError, StreamHandler};
///
/// struct Qualify; // the function's handler, with its clients and settings
/// impl Qualify {
///     async fn handle(&self, event: Event) -> Result<DynamoDbEventResponse, std::io::Error> {
///         Ok(DynamoDbEventResponse::default())
///     }
/// }
///
/// let function = Arc::new(Qualify);
/// let handler = move |event: Event| {
///     let function = function.clone();
///     async move { function.handle(event).await.map_err(HandlerError::from) }
/// };
/// fn is_a_stream_handler(_: &impl StreamHandler) {}
/// is_a_stream_handler(&handler);
/// ```
pub trait StreamHandler: Send + Sync + 'static {
    fn handle(
        &self,
        event: Event,
    ) -> impl Future<Output = Result<DynamoDbEventResponse, HandlerError>> + Send;
}

impl<F, Fut> StreamHandler for F
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<DynamoDbEventResponse, HandlerError>> + Send,
{
    fn handle(
        &self,
        event: Event,
    ) -> impl Future<Output = Result<DynamoDbEventResponse, HandlerError>> + Send {
        self(event)
    }
}

/// Where a mapping starts reading the shards that exist when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartingPosition {
    /// The oldest record of every shard.
    #[default]
    TrimHorizon,
    /// Only records written after the pump started.
    Latest,
}

/// `FilterCriteria`: which records reach the handler. Lambda evaluates the mapping's filter
/// patterns on each record; the pump calls this predicate on the record as the handler would
/// receive it. [`RecordFilter::event_names`] covers patterns on `eventName` alone; the local
/// stack builds one from the template's patterns (`pql_store::template::MappingSpec::accepts`),
/// so the pump itself knows nothing of the pattern language.
#[derive(Clone)]
pub struct RecordFilter {
    /// What it keeps, for `Debug` and logs (e.g. the patterns).
    description: String,
    accepts: Arc<dyn Fn(&EventRecord) -> bool + Send + Sync>,
}

impl RecordFilter {
    pub fn new(
        description: impl Into<String>,
        accepts: impl Fn(&EventRecord) -> bool + Send + Sync + 'static,
    ) -> RecordFilter {
        RecordFilter {
            description: description.into(),
            accepts: Arc::new(accepts),
        }
    }

    /// Records whose `eventName` (`INSERT`, `MODIFY`, `REMOVE`) is one of `names`: the
    /// template's `{"eventName": ["INSERT"]}` is `RecordFilter::event_names(["INSERT"])`.
    pub fn event_names<I, S>(names: I) -> RecordFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        RecordFilter::new(format!("eventName in {names:?}"), move |record| {
            names.contains(&record.event_name)
        })
    }

    pub fn matches(&self, record: &EventRecord) -> bool {
        (self.accepts)(record)
    }
}

impl std::fmt::Debug for RecordFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RecordFilter")
            .field(&self.description)
            .finish()
    }
}

/// The event-source mapping's settings (the names of the Lambda parameters in brackets).
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// Records per batch at most (`BatchSize`, default 100; Lambda allows 1 to 10,000).
    pub batch_size: usize,
    /// How long to gather records before invoking (`MaximumBatchingWindowInSeconds`, default 0).
    pub batching_window: Duration,
    /// Retries of a failed batch before its records are parked (`MaximumRetryAttempts`;
    /// Lambda's default is infinite, this one's is 3 so that a local stack never stalls).
    pub maximum_retry_attempts: u32,
    /// Split a batch that fails in two (`BisectBatchOnFunctionError`, default false).
    pub bisect_batch_on_function_error: bool,
    /// Honour partial batch responses (`FunctionResponseTypes: [ReportBatchItemFailures]`).
    pub report_batch_item_failures: bool,
    /// Where to start (`StartingPosition`).
    pub starting_position: StartingPosition,
    /// Pause between reads of a shard that had nothing new (default 50 ms).
    pub poll_interval: Duration,
    /// Pause before retrying a failed batch (default 50 ms).
    pub retry_delay: Duration,
    /// How often the stream is described again to find new shards (default 1 s).
    pub discovery_interval: Duration,
    /// Only records with these event names reach the handler (`FilterCriteria`).
    pub filter: Option<RecordFilter>,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            batch_size: 100,
            batching_window: Duration::ZERO,
            maximum_retry_attempts: 3,
            bisect_batch_on_function_error: false,
            report_batch_item_failures: false,
            starting_position: StartingPosition::TrimHorizon,
            poll_interval: Duration::from_millis(50),
            retry_delay: Duration::from_millis(50),
            discovery_interval: Duration::from_secs(1),
            filter: None,
        }
    }
}

/// Records given up on after the last retry: what Lambda sends to the on-failure destination
/// (there only their metadata; here the records themselves, in order).
#[derive(Debug, Clone)]
pub struct Parked {
    pub stream_arn: String,
    pub shard_id: String,
    pub records: Vec<EventRecord>,
    /// The last invocation's error (or the partial failure it reported).
    pub error: String,
    /// Failed invocations of these records as one batch: `1 + maximum_retry_attempts`
    /// (with bisection, counted since the batch was split off).
    pub attempts: u32,
}

/// What a pump has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PumpStats {
    /// Handler invocations (batches), retries included.
    pub invocations: u64,
    /// Invocations that failed, wholly or partly.
    pub failed_invocations: u64,
    /// Invocations carrying records that had been in a failed invocation before (a retried
    /// batch, the rest of a partly failed batch, a half of a bisected batch).
    pub retries: u64,
    /// Records the handler processed successfully (each counted once).
    pub records_delivered: u64,
    /// Records given up on and sent to the `parked` channel.
    pub records_parked: u64,
    /// Messages sent to the `parked` channel.
    pub batches_parked: u64,
    /// Records dropped by the filter.
    pub records_filtered: u64,
    /// Shards read to their end.
    pub shards_completed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("DynamoDB Streams {operation} on {stream_arn} failed: {message}")]
    Streams {
        operation: &'static str,
        stream_arn: String,
        message: String,
    },
    #[error("invalid mapping configuration: {0}")]
    Config(String),
    #[error("the pump's worker for shard {shard_id} panicked: {message}")]
    Panicked { shard_id: String, message: String },
}

/// Runs the mapping until `shutdown` is cancelled: [`start`], then [`Pump::run`].
pub async fn run<H: StreamHandler>(
    streams: Client,
    stream_arn: String,
    config: MappingConfig,
    handler: Arc<H>,
    parked: mpsc::Sender<Parked>,
    shutdown: CancellationToken,
) -> Result<PumpStats, PumpError> {
    start(streams, stream_arn, config, handler, parked)
        .await?
        .run(shutdown)
        .await
}

/// Describes the stream and takes the starting positions (with `Latest`, every write after
/// this returns is delivered), without reading yet.
pub async fn start<H: StreamHandler>(
    streams: Client,
    stream_arn: String,
    config: MappingConfig,
    handler: Arc<H>,
    parked: mpsc::Sender<Parked>,
) -> Result<Pump<H>, PumpError> {
    if config.batch_size == 0 {
        return Err(PumpError::Config("batch_size must be at least 1".into()));
    }
    let ctx = Arc::new(shard::Context {
        streams,
        stream_arn,
        config,
        handler,
        parked,
        stats: Arc::new(Mutex::new(PumpStats::default())),
    });
    let shards = describe(&ctx.streams, &ctx.stream_arn).await?;
    let mut pump = Pump {
        ctx,
        shards: HashMap::new(),
    };
    for info in shards {
        let state = match pump.ctx.config.starting_position {
            StartingPosition::TrimHorizon => ShardState::Waiting(None),
            StartingPosition::Latest if info.closed => ShardState::Done,
            StartingPosition::Latest => {
                let iterator = pump
                    .ctx
                    .streams
                    .get_shard_iterator()
                    .stream_arn(&pump.ctx.stream_arn)
                    .shard_id(&info.id)
                    .shard_iterator_type(ShardIteratorType::Latest)
                    .send()
                    .await
                    .map_err(|e| streams_error("GetShardIterator", &pump.ctx.stream_arn, e))?
                    .shard_iterator;
                match iterator {
                    Some(iterator) => ShardState::Waiting(Some(iterator)),
                    None => ShardState::Done,
                }
            }
        };
        pump.shards.insert(info.id.clone(), (info, state));
    }
    Ok(pump)
}

/// A started mapping (see [`start`]).
pub struct Pump<H> {
    ctx: Arc<shard::Context<H>>,
    shards: HashMap<String, (ShardInfo, ShardState)>,
}

#[derive(Debug, Clone)]
struct ShardInfo {
    id: String,
    parent: Option<String>,
    closed: bool,
}

enum ShardState {
    /// Not started; with `Latest`, the iterator taken at start.
    Waiting(Option<String>),
    Running,
    Done,
}

impl<H: StreamHandler> Pump<H> {
    /// A live view of the counters (they keep changing while the pump runs).
    pub fn stats(&self) -> Arc<Mutex<PumpStats>> {
        self.ctx.stats.clone()
    }

    /// Processes the stream until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<PumpStats, PumpError> {
        let mut workers: JoinSet<(String, bool)> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut discovery = tokio::time::interval(self.ctx.config.discovery_interval);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        discovery.reset();
        // Workers stop with the pump, also when it stops on its own (a worker panicked).
        let stop = shutdown.child_token();
        let mut result = Ok(());
        loop {
            self.spawn_ready(&mut workers, &mut running, &stop);
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(joined) = workers.join_next_with_id() => match joined {
                    Ok((id, (shard_id, completed))) => {
                        running.remove(&id);
                        if completed {
                            tracing::debug!(shard_id, "shard processed to its end");
                            if let Some((_, state)) = self.shards.get_mut(&shard_id) {
                                *state = ShardState::Done;
                            }
                            self.ctx.stats.lock().unwrap().shards_completed += 1;
                        }
                    }
                    Err(error) => {
                        let shard_id = running.remove(&error.id()).unwrap_or_default();
                        result = Err(PumpError::Panicked { shard_id, message: error.to_string() });
                        break;
                    }
                },
                _ = discovery.tick() => {}
            }
            // After a tick, or after a shard ended (its children are usually listed by then).
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = self.rediscover() => {}
            }
        }
        stop.cancel();
        while workers.join_next().await.is_some() {}
        result?;
        let stats = *self.ctx.stats.lock().unwrap();
        Ok(stats)
    }

    fn spawn_ready(
        &mut self,
        workers: &mut JoinSet<(String, bool)>,
        running: &mut HashMap<tokio::task::Id, String>,
        shutdown: &CancellationToken,
    ) {
        let ready = ready_shards(self.shards.iter().map(|(id, (info, state))| {
            (
                id.as_str(),
                info.parent.as_deref(),
                match state {
                    ShardState::Waiting(_) => Lineage::Waiting,
                    ShardState::Running => Lineage::Running,
                    ShardState::Done => Lineage::Done,
                },
            )
        }));
        for id in ready {
            let Some((_, state)) = self.shards.get_mut(&id) else {
                continue;
            };
            let ShardState::Waiting(iterator) = std::mem::replace(state, ShardState::Running)
            else {
                continue;
            };
            let worker = shard::Worker::new(self.ctx.clone(), id.clone(), iterator);
            let token = shutdown.clone();
            let key = id.clone();
            let handle = workers.spawn(async move { (id, worker.run(token).await) });
            running.insert(handle.id(), key);
        }
    }

    /// Adds shards that appeared since the last description. A failure is logged and retried
    /// at the next tick.
    async fn rediscover(&mut self) {
        match describe(&self.ctx.streams, &self.ctx.stream_arn).await {
            Ok(shards) => {
                for info in shards {
                    if !self.shards.contains_key(&info.id) {
                        tracing::debug!(shard_id = info.id, parent = ?info.parent, "new shard");
                        self.shards
                            .insert(info.id.clone(), (info, ShardState::Waiting(None)));
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "describing the stream failed; retrying later"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lineage {
    Waiting,
    Running,
    Done,
}

/// The waiting shards that may start: those whose parent is done or not listed (trimmed).
/// Sorted, so that shards start in a stable order.
fn ready_shards<'a>(
    shards: impl Iterator<Item = (&'a str, Option<&'a str>, Lineage)>,
) -> Vec<String> {
    let shards: Vec<_> = shards.collect();
    let state: HashMap<&str, Lineage> = shards.iter().map(|(id, _, s)| (*id, *s)).collect();
    let mut ready: Vec<String> = shards
        .iter()
        .filter(|(_, parent, s)| {
            *s == Lineage::Waiting
                && parent.is_none_or(|p| state.get(p).is_none_or(|s| *s == Lineage::Done))
        })
        .map(|(id, _, _)| (*id).to_owned())
        .collect();
    ready.sort();
    ready
}

/// Every shard of the stream (`DescribeStream`, all pages).
async fn describe(streams: &Client, stream_arn: &str) -> Result<Vec<ShardInfo>, PumpError> {
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = streams
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .map_err(|e| streams_error("DescribeStream", stream_arn, e))?;
        let Some(description) = out.stream_description else {
            break;
        };
        for shard in description.shards.unwrap_or_default() {
            let Some(id) = shard.shard_id else { continue };
            shards.push(ShardInfo {
                id,
                parent: shard.parent_shard_id,
                closed: shard
                    .sequence_number_range
                    .is_some_and(|range| range.ending_sequence_number.is_some()),
            });
        }
        match description.last_evaluated_shard_id {
            Some(last) => start = Some(last),
            None => break,
        }
    }
    Ok(shards)
}

/// The SDK's Display is terse ("service error"); the source chain says what happened.
pub(crate) fn error_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn streams_error(
    operation: &'static str,
    stream_arn: &str,
    error: impl std::error::Error + 'static,
) -> PumpError {
    PumpError::Streams {
        operation,
        stream_arn: stream_arn.to_owned(),
        message: error_message(&error),
    }
}

/// A DynamoDB Streams client for DynamoDB Local (or any endpoint override): fixed region and
/// dummy credentials, as `pql_store::local_client` does for tables.
pub fn local_client(endpoint: &str) -> Client {
    use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "pql-local"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_shard_waits_for_its_parent() {
        use Lineage::*;
        let shards = |parent_state| {
            ready_shards(
                [
                    ("parent", None, parent_state),
                    ("child-a", Some("parent"), Waiting),
                    ("child-b", Some("parent"), Waiting),
                    ("orphan", Some("trimmed"), Waiting),
                    ("grandchild", Some("child-a"), Waiting),
                ]
                .into_iter(),
            )
        };
        assert_eq!(shards(Waiting), ["orphan", "parent"]);
        assert_eq!(shards(Running), ["orphan"]);
        assert_eq!(shards(Done), ["child-a", "child-b", "orphan"]);
    }

    #[test]
    fn the_event_name_filter_matches_names_exactly() {
        let record = |name: &str| {
            let mut record = EventRecord::default();
            record.event_name = name.to_owned();
            record
        };
        let filter = RecordFilter::event_names(["INSERT"]);
        assert!(filter.matches(&record("INSERT")));
        assert!(!filter.matches(&record("MODIFY")));
        assert!(!filter.matches(&record("insert")));
        let filter = RecordFilter::event_names(["INSERT", "MODIFY"]);
        assert!(filter.matches(&record("MODIFY")));
        assert!(!filter.matches(&record("REMOVE")));
        assert!(format!("{filter:?}").contains("MODIFY"));
    }
}
