//! The pump against DynamoDB Local's streams: delivery, batching, retries, partial failures,
//! bisection and parking, filters, starting positions and shutdown.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use pql_dynamodb_local::{repo_root_from, DynamoDbLocal};
use pql_stream_pump::{
    start, CancellationToken, DynamoDbBatchItemFailure, DynamoDbEventResponse, Event, EventRecord,
    HandlerError, MappingConfig, Parked, PumpStats, RecordFilter, StartingPosition, StreamHandler,
};
use tokio::sync::mpsc;

/// Whatever happens, a test ends within this.
const PATIENCE: Duration = Duration::from_secs(30);

struct Local {
    dynamo: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
    stream_arn: String,
    _lease: Option<Lease>,
}

/// The tests of this file that run at the same time share one DynamoDB Local (each on its own
/// table): the last one to finish stops it, so nothing outlives the test process.
static SHARED: Mutex<Option<(DynamoDbLocal, usize)>> = Mutex::new(None);

struct Lease;

impl Lease {
    fn take() -> (Lease, String) {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        let (db, users) = shared.get_or_insert_with(|| {
            let root = repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
            (
                DynamoDbLocal::start(&root).unwrap_or_else(|e| panic!("{e}")),
                0,
            )
        });
        *users += 1;
        (Lease, db.endpoint())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, users)) = shared.as_mut() {
            *users -= 1;
            if *users == 0 {
                *shared = None;
            }
        }
    }
}

/// A fresh table with a stream (NEW_AND_OLD_IMAGES) in DynamoDB Local: the one
/// `scripts/test.sh` started (`PQL_DYNAMODB_ENDPOINT`), else the one this file's tests share.
async fn local() -> Local {
    let (endpoint, lease) = match std::env::var("PQL_DYNAMODB_ENDPOINT") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let (lease, endpoint) = Lease::take();
            (endpoint, Some(lease))
        }
    };
    // DynamoDB Local keeps one database per access key and region: the tables' client and
    // the streams' client must agree (both use `local` / `us-east-1`).
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "pql-local"))
        .endpoint_url(&endpoint)
        .build();
    let dynamo = aws_sdk_dynamodb::Client::from_conf(config);
    let table = format!(
        "pump{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let created = dynamo
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let stream_arn = created
        .table_description
        .and_then(|t| t.latest_stream_arn)
        .expect("the table has a stream");
    Local {
        dynamo,
        streams: pql_stream_pump::local_client(&endpoint),
        table,
        stream_arn,
        _lease: lease,
    }
}

impl Local {
    async fn put(&self, i: u32, n: u32) {
        self.dynamo
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(key(i)))
            .item("n", AttributeValue::N(n.to_string()))
            .send()
            .await
            .unwrap();
    }

    async fn put_all(&self, range: std::ops::Range<u32>) {
        for i in range {
            self.put(i, i).await;
        }
    }

    async fn delete(&self, i: u32) {
        self.dynamo
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key(i)))
            .send()
            .await
            .unwrap();
    }

    /// Starts a pump with `config` and `handler`; stop it with [`Running::stop`].
    async fn pump<H: StreamHandler>(&self, config: MappingConfig, handler: H) -> Running {
        let (parked_tx, parked) = mpsc::channel(64);
        let pump = start(
            self.streams.clone(),
            self.stream_arn.clone(),
            config,
            Arc::new(handler),
            parked_tx,
        )
        .await
        .unwrap();
        let stats = pump.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pump.run(shutdown.clone()));
        Running {
            shutdown,
            task,
            stats,
            parked,
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<PumpStats, pql_stream_pump::PumpError>>,
    stats: Arc<Mutex<PumpStats>>,
    parked: mpsc::Receiver<Parked>,
}

impl Running {
    fn stats(&self) -> PumpStats {
        *self.stats.lock().unwrap()
    }

    /// Waits until `done` holds for the live stats.
    async fn wait_for(&self, what: &str, done: impl Fn(&PumpStats) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(&self.stats()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancels and waits (briefly) for the pump to return its stats.
    async fn stop(self) -> (PumpStats, Vec<Parked>) {
        self.shutdown.cancel();
        let stats = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the pump stops promptly")
            .unwrap()
            .unwrap();
        let mut parked = self.parked;
        let mut all = Vec::new();
        while let Ok(p) = parked.try_recv() {
            all.push(p);
        }
        (stats, all)
    }
}

fn key(i: u32) -> String {
    format!("k{i:04}")
}

fn fast() -> MappingConfig {
    MappingConfig {
        poll_interval: Duration::from_millis(10),
        retry_delay: Duration::from_millis(5),
        discovery_interval: Duration::from_millis(200),
        ..MappingConfig::default()
    }
}

fn string(item: &serde_dynamo::Item, name: &str) -> Option<String> {
    match item.get(name)? {
        serde_dynamo::AttributeValue::S(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(item: &serde_dynamo::Item, name: &str) -> Option<u32> {
    match item.get(name)? {
        serde_dynamo::AttributeValue::N(n) => n.parse().ok(),
        _ => None,
    }
}

fn pk(record: &EventRecord) -> String {
    string(&record.change.keys, "pk").expect("a pk key")
}

fn sequence(record: &EventRecord) -> String {
    record
        .change
        .sequence_number
        .clone()
        .expect("a sequence number")
}

/// Every invocation's records, and what the handler answered.
#[derive(Default)]
struct Log {
    invocations: Mutex<Vec<(Vec<EventRecord>, bool)>>,
}

impl Log {
    fn record(&self, event: &Event, ok: bool) {
        self.invocations
            .lock()
            .unwrap()
            .push((event.records.clone(), ok));
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.invocations
            .lock()
            .unwrap()
            .iter()
            .map(|(records, _)| records.iter().map(pk).collect())
            .collect()
    }

    /// The records of the successful invocations, in order.
    fn succeeded(&self) -> Vec<String> {
        self.invocations
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, ok)| *ok)
            .flat_map(|(records, _)| records.iter().map(pk))
            .collect()
    }
}

fn ok() -> Result<DynamoDbEventResponse, HandlerError> {
    Ok(DynamoDbEventResponse::default())
}

fn failures(sequence_numbers: &[Option<String>]) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = sequence_numbers
        .iter()
        .map(|s| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = s.clone();
            failure
        })
        .collect();
    response
}

fn keys(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(key).collect()
}

#[tokio::test]
async fn every_write_is_delivered_once_in_order_with_its_images() {
    let local = local().await;
    let log = Arc::new(Log::default());
    let handler = {
        let log = log.clone();
        move |event: Event| {
            log.record(&event, true);
            async { ok() }
        }
    };
    let running = local.pump(fast(), handler).await;
    local.put_all(0..30).await;
    local.put(3, 333).await; // MODIFY
    local.delete(4).await; // REMOVE
    running
        .wait_for("32 records", |s| s.records_delivered >= 32)
        .await;
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (stats, parked) = running.stop().await;
    assert!(parked.is_empty());
    assert_eq!(stats.records_delivered, 32, "{stats:?}");
    assert_eq!(stats.retries, 0);
    assert_eq!(stats.failed_invocations, 0);

    let records: Vec<EventRecord> = log
        .invocations
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(records, _)| records.clone())
        .collect();
    assert_eq!(records.len(), 32);
    let mut expected_keys = keys(0..30);
    expected_keys.extend([key(3), key(4)]);
    assert_eq!(records.iter().map(pk).collect::<Vec<_>>(), expected_keys);
    // Sequence numbers only grow (DynamoDB Local's are zero-padded counters).
    let numbers: Vec<String> = records.iter().map(sequence).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    for record in &records {
        assert_eq!(record.event_source.as_deref(), Some("aws:dynamodb"));
        assert_eq!(
            record.event_source_arn.as_deref(),
            Some(local.stream_arn.as_str())
        );
        assert!(!record.event_id.is_empty());
        assert!(record.change.size_bytes > 0);
        assert!(
            record.change.approximate_creation_date_time.timestamp() > 1_700_000_000,
            "{:?}",
            record.change.approximate_creation_date_time
        );
        assert_eq!(
            record.change.stream_view_type,
            Some(aws_lambda_events::event::dynamodb::StreamViewType::NewAndOldImages)
        );
    }
    for (i, record) in records[..30].iter().enumerate() {
        assert_eq!(record.event_name, "INSERT");
        assert_eq!(number(&record.change.new_image, "n"), Some(i as u32));
        assert_eq!(string(&record.change.new_image, "pk"), Some(key(i as u32)));
        assert!(record.change.old_image.is_empty());
    }
    let modify = &records[30];
    assert_eq!(modify.event_name, "MODIFY");
    assert_eq!(number(&modify.change.old_image, "n"), Some(3));
    assert_eq!(number(&modify.change.new_image, "n"), Some(333));
    let remove = &records[31];
    assert_eq!(remove.event_name, "REMOVE");
    assert_eq!(number(&remove.change.old_image, "n"), Some(4));
    assert!(remove.change.new_image.is_empty());
}

#[tokio::test]
async fn batches_hold_at_most_batch_size_records() {
    let local = local().await;
    local.put_all(0..25).await;
    let log = Arc::new(Log::default());
    let handler = {
        let log = log.clone();
        move |event: Event| {
            log.record(&event, true);
            async { ok() }
        }
    };
    let config = MappingConfig {
        batch_size: 7,
        ..fast()
    };
    let running = local.pump(config, handler).await;
    running
        .wait_for("25 records", |s| s.records_delivered >= 25)
        .await;
    let (stats, _) = running.stop().await;
    let sizes: Vec<usize> = log.batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, [7, 7, 7, 4]);
    assert_eq!(stats.invocations, 4);
    assert_eq!(log.succeeded(), keys(0..25));
}

#[tokio::test]
async fn a_batching_window_waits_for_a_full_batch() {
    let local = local().await;
    let log = Arc::new(Log::default());
    let handler = {
        let log = log.clone();
        move |event: Event| {
            log.record(&event, true);
            async { ok() }
        }
    };
    let config = MappingConfig {
        batch_size: 5,
        batching_window: Duration::from_secs(3),
        ..fast()
    };
    let running = local.pump(config, handler).await;
    // Written one by one, read as they come: without the window, batches would be smaller.
    for i in 0..12 {
        local.put(i, i).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    running
        .wait_for("12 records", |s| s.records_delivered >= 12)
        .await;
    running.stop().await;
    let sizes: Vec<usize> = log.batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, [5, 5, 2]);
    assert_eq!(log.succeeded(), keys(0..12));
}

#[tokio::test]
async fn a_failed_batch_is_delivered_again_and_nothing_is_lost() {
    let local = local().await;
    local.put_all(0..10).await;
    let log = Arc::new(Log::default());
    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let (log, calls) = (log.clone(), calls.clone());
        move |event: Event| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            log.record(&event, call >= 2);
            async move {
                match call {
                    0 => Err::<DynamoDbEventResponse, HandlerError>("DynamoDB is down".into()),
                    1 => panic!("a bug in the handler"),
                    _ => ok(),
                }
            }
        }
    };
    let running = local.pump(fast(), handler).await;
    running
        .wait_for("10 records", |s| s.records_delivered >= 10)
        .await;
    let (stats, parked) = running.stop().await;
    assert!(parked.is_empty());
    // An error and a panic are both function errors: the whole batch comes again.
    assert_eq!(log.batches(), vec![keys(0..10); 3]);
    assert_eq!(log.succeeded(), keys(0..10));
    assert_eq!(stats.failed_invocations, 2);
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.records_delivered, 10);
}

#[tokio::test]
async fn a_partial_failure_redelivers_from_the_lowest_failed_record() {
    let local = local().await;
    local.put_all(0..10).await;
    let log = Arc::new(Log::default());
    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let (log, calls) = (log.clone(), calls.clone());
        move |event: Event| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            let response = if call == 0 {
                // Records 7 and 4 failed: the retry starts at 4, the lowest.
                let failed = [
                    Some(sequence(&event.records[7])),
                    Some(sequence(&event.records[4])),
                ];
                log.record(&event, false);
                failures(&failed)
            } else {
                log.record(&event, true);
                DynamoDbEventResponse::default()
            };
            async move { Ok::<_, HandlerError>(response) }
        }
    };
    let config = MappingConfig {
        report_batch_item_failures: true,
        ..fast()
    };
    let running = local.pump(config, handler).await;
    running
        .wait_for("10 records", |s| s.records_delivered >= 10)
        .await;
    let (stats, parked) = running.stop().await;
    assert!(parked.is_empty());
    assert_eq!(log.batches(), [keys(0..10), keys(4..10)]);
    assert_eq!(stats.records_delivered, 10);
    assert_eq!(stats.retries, 1);
}

#[tokio::test]
async fn an_empty_or_unknown_item_identifier_fails_the_whole_batch() {
    let local = local().await;
    local.put_all(0..5).await;
    let log = Arc::new(Log::default());
    let calls = Arc::new(AtomicU32::new(0));
    let handler = {
        let (log, calls) = (log.clone(), calls.clone());
        move |event: Event| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            log.record(&event, call >= 3);
            let response = match call {
                0 => failures(&[Some(String::new())]),
                1 => failures(&[None]),
                2 => failures(&[Some("not-a-sequence-number".into())]),
                _ => DynamoDbEventResponse::default(),
            };
            async move { Ok::<_, HandlerError>(response) }
        }
    };
    let config = MappingConfig {
        report_batch_item_failures: true,
        ..fast()
    };
    let running = local.pump(config, handler).await;
    running
        .wait_for("5 records", |s| s.records_delivered >= 5)
        .await;
    let (stats, _) = running.stop().await;
    assert_eq!(log.batches(), vec![keys(0..5); 4]);
    assert_eq!(stats.failed_invocations, 3);
}

#[tokio::test]
async fn without_report_batch_item_failures_a_partial_response_is_a_success() {
    let local = local().await;
    local.put_all(0..5).await;
    let log = Arc::new(Log::default());
    let handler = {
        let log = log.clone();
        move |event: Event| {
            log.record(&event, true);
            let response = failures(&[Some(sequence(&event.records[2]))]);
            async move { Ok::<_, HandlerError>(response) }
        }
    };
    let running = local.pump(fast(), handler).await;
    running
        .wait_for("5 records", |s| s.records_delivered >= 5)
        .await;
    let (stats, _) = running.stop().await;
    assert_eq!(log.batches(), [keys(0..5)]);
    assert_eq!(stats.failed_invocations, 0);
}

/// A handler that fails every batch holding the poison record.
fn poisoned(log: Arc<Log>, poison: String) -> impl StreamHandler {
    move |event: Event| {
        let bad = event.records.iter().any(|r| pk(r) == poison);
        log.record(&event, !bad);
        async move {
            if bad {
                Err::<DynamoDbEventResponse, HandlerError>("cannot process this record".into())
            } else {
                ok()
            }
        }
    }
}

#[tokio::test]
async fn with_bisection_exactly_the_poison_record_is_parked() {
    let local = local().await;
    local.put_all(0..16).await;
    let log = Arc::new(Log::default());
    let config = MappingConfig {
        batch_size: 16,
        maximum_retry_attempts: 2,
        bisect_batch_on_function_error: true,
        ..fast()
    };
    let running = local.pump(config, poisoned(log.clone(), key(5))).await;
    running
        .wait_for("15 records", |s| s.records_delivered >= 15)
        .await;
    // The shard is not blocked: a later write gets through.
    local.put(100, 100).await;
    running
        .wait_for("16 records", |s| s.records_delivered >= 16)
        .await;
    let (stats, parked) = running.stop().await;

    let mut expected = keys(0..16);
    expected.retain(|k| *k != key(5));
    expected.push(key(100));
    assert_eq!(
        log.succeeded(),
        expected,
        "each good record succeeds once, in order"
    );
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].records.iter().map(pk).collect::<Vec<_>>(),
        [key(5)]
    );
    assert_eq!(parked[0].attempts, 3, "the first try and 2 retries");
    assert!(
        parked[0].error.contains("cannot process"),
        "{}",
        parked[0].error
    );
    assert_eq!(parked[0].stream_arn, local.stream_arn);
    assert_eq!(stats.records_parked, 1);
    assert_eq!(stats.batches_parked, 1);
    // 16 -> 8 -> 4 -> 2 -> 1: four splits, each failing once, then 3 tries of the record.
    assert_eq!(
        stats.failed_invocations,
        4 + 3,
        "{stats:?}\n{:?}",
        log.batches()
    );
}

#[tokio::test]
async fn without_bisection_the_failing_batch_is_parked_and_the_shard_moves_on() {
    let local = local().await;
    local.put_all(0..8).await;
    let log = Arc::new(Log::default());
    let config = MappingConfig {
        batch_size: 4,
        maximum_retry_attempts: 1,
        ..fast()
    };
    let running = local.pump(config, poisoned(log.clone(), key(5))).await;
    running
        .wait_for("4 parked", |s| s.records_parked >= 4)
        .await;
    local.put(100, 100).await;
    running
        .wait_for("5 records", |s| s.records_delivered >= 5)
        .await;
    let (stats, parked) = running.stop().await;
    assert_eq!(
        log.batches(),
        [keys(0..4), keys(4..8), keys(4..8), vec![key(100)]]
    );
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].records.iter().map(pk).collect::<Vec<_>>(),
        keys(4..8)
    );
    assert_eq!(parked[0].attempts, 2);
    assert_eq!(stats.records_delivered, 5);
}

#[tokio::test]
async fn the_filter_drops_other_event_names() {
    let local = local().await;
    let log = Arc::new(Log::default());
    let handler = {
        let log = log.clone();
        move |event: Event| {
            log.record(&event, true);
            async { ok() }
        }
    };
    let config = MappingConfig {
        filter: Some(RecordFilter::event_names(["INSERT"])),
        ..fast()
    };
    local.put_all(0..3).await;
    local.put(1, 11).await;
    local.delete(2).await;
    local.put(3, 3).await;
    let running = local.pump(config, handler).await;
    running
        .wait_for("4 inserts, 2 filtered", |s| {
            s.records_delivered >= 4 && s.records_filtered >= 2
        })
        .await;
    let (stats, _) = running.stop().await;
    assert_eq!(log.succeeded(), keys(0..4));
    assert_eq!(stats.records_filtered, 2);
}

#[tokio::test]
async fn latest_delivers_only_later_writes() {
    let local = local().await;
    local.put_all(0..3).await;
    let log = Arc::new(Log::default());
    let handler = {
        let log = log.clone();
        move |event: Event| {
            log.record(&event, true);
            async { ok() }
        }
    };
    let config = MappingConfig {
        starting_position: StartingPosition::Latest,
        ..fast()
    };
    // `start` has taken the LATEST positions when it returns.
    let running = local.pump(config, handler).await;
    local.put_all(3..5).await;
    running
        .wait_for("2 records", |s| s.records_delivered >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (stats, _) = running.stop().await;
    assert_eq!(log.succeeded(), keys(3..5));
    assert_eq!(stats.records_delivered, 2);
}

#[tokio::test]
async fn shutdown_stops_the_pump_even_during_an_invocation() {
    let local = local().await;
    let started = Arc::new(AtomicU32::new(0));
    let handler = {
        let started = started.clone();
        move |_event: Event| {
            started.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                ok()
            }
        }
    };
    // Idle: nothing to read.
    let running = local.pump(fast(), handler).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (stats, _) = running.stop().await;
    assert_eq!(stats.invocations, 0);

    // Busy: the handler never returns.
    local.put(0, 0).await;
    let running = local
        .pump(fast(), {
            let started = started.clone();
            move |_event: Event| {
                started.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    ok()
                }
            }
        })
        .await;
    running
        .wait_for("an invocation", |s| s.invocations >= 1)
        .await;
    let before = std::time::Instant::now();
    let (stats, _) = running.stop().await;
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "{:?}",
        before.elapsed()
    );
    assert_eq!(stats.records_delivered, 0);
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_closed_shard_is_read_to_its_end_and_completed() {
    let local = local().await;
    local.put_all(0..3).await;
    let log = Arc::new(Log::default());
    let handler = {
        let log = log.clone();
        move |event: Event| {
            log.record(&event, true);
            async { ok() }
        }
    };
    let running = local.pump(fast(), handler).await;
    local.put_all(3..5).await;
    // Disabling the stream closes its shard (DynamoDB Local sets its ending sequence number
    // and GetRecords returns no next iterator after its last record).
    local
        .dynamo
        .update_table()
        .table_name(&local.table)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(false)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    running
        .wait_for("the shard to complete", |s| s.shards_completed >= 1)
        .await;
    let (stats, _) = running.stop().await;
    assert_eq!(log.succeeded(), keys(0..5));
    assert_eq!(stats.shards_completed, 1);
}
