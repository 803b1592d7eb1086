//! The harness the ingest tests share: DynamoDB Local with fresh tables, an in-memory sink
//! that can be told to fail, and helpers to build requests and read responses.
#![allow(dead_code)]

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use lambda_http::{Body, Request};
use pql_dynamodb_local::{repo_root_from, DynamoDbLocal};
use pql_engine::{Definition, Event, Timestamp};
use pql_ingest::{App, Config, EventSink};
use pql_store::events::{decode_event, PutOutcome};
use pql_store::tenants::TenantId;
use pql_store::{local_client, template, Store, StoreError, Tables};
use serde_json::{json, Value};

pub const WRITE_KEY: &str = "wk_acme_0123456789";
/// The server time the tests' clock always reads.
pub const RECEIVED_AT: &str = "2026-11-23T08:00:00.000Z";

pub fn received_at() -> Timestamp {
    Timestamp::parse(RECEIVED_AT).unwrap()
}

pub fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

pub fn root() -> PathBuf {
    repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("repository root")
}

// ---------------------------------------------------------------------------------------------
// DynamoDB Local
// ---------------------------------------------------------------------------------------------

/// One DynamoDB Local for the whole test binary (a JVM per test would dominate the run), or
/// the one `PQL_DYNAMODB_ENDPOINT` names. It is stopped when the process exits.
static LOCAL: Mutex<Option<DynamoDbLocal>> = Mutex::new(None);
static ENDPOINT: OnceLock<String> = OnceLock::new();

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn stop_dynamodb_local() {
    if let Ok(mut local) = LOCAL.lock() {
        drop(local.take());
    }
}

pub fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| {
            if let Ok(endpoint) = std::env::var("PQL_DYNAMODB_ENDPOINT") {
                return endpoint;
            }
            let db = DynamoDbLocal::start(&root()).unwrap_or_else(|e| panic!("{e}"));
            let endpoint = db.endpoint();
            *LOCAL.lock().unwrap() = Some(db);
            // SAFETY: registers a plain `extern "C" fn` with the C library; it only locks a
            // mutex and kills the child process.
            unsafe {
                atexit(stop_dynamodb_local);
            }
            endpoint
        })
        .clone()
}

/// A store on fresh tables (a unique prefix) created from the SAM template.
pub async fn fresh_store() -> Store {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    let client = local_client(&endpoint());
    let prefix = format!(
        "i{}-{}-",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let source = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    template::create_tables(&client, &source, &prefix)
        .await
        .unwrap();
    Store::new(client, Tables::with_prefix(&prefix))
}

pub fn definition() -> Definition {
    let source = std::fs::read_to_string(root().join("examples/definition.toml")).unwrap();
    Definition::from_toml("examples/definition.toml", &source).unwrap()
}

/// The function on fresh tables, with tenant `acme` and its key [`WRITE_KEY`], and a fixed
/// clock.
pub struct Stack {
    pub app: Arc<App<Store>>,
    pub store: Store,
}

pub async fn stack() -> Stack {
    let store = fresh_store().await;
    store
        .put_tenant(&acme(), WRITE_KEY, &definition())
        .await
        .unwrap();
    let app = App::new(store.clone(), Config::default()).with_clock(received_at);
    Stack {
        app: Arc::new(app),
        store,
    }
}

impl Stack {
    pub async fn send(&self, request: Request) -> Reply {
        send(&self.app, request).await
    }

    /// Every event stored for `tenant`, by messageId (a scan of the events table).
    pub async fn stored(&self, tenant: &TenantId) -> BTreeMap<String, Event> {
        stored(&self.store, tenant).await
    }
}

pub async fn stored(store: &Store, tenant: &TenantId) -> BTreeMap<String, Event> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut events = BTreeMap::new();
    let mut start = None;
    loop {
        let out = store
            .client()
            .scan()
            .table_name(&store.tables().events)
            .filter_expression("tenant = :t")
            .expression_attribute_values(":t", AttributeValue::S(tenant.to_string()))
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        for item in out.items() {
            let body = item["event"].as_s().unwrap();
            let event = decode_event(body).unwrap();
            let previous = events.insert(event.message_id.to_string(), event);
            assert!(previous.is_none(), "an event is stored twice");
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            return events;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// An in-memory sink (no DynamoDB): dedupes like the store, counts look-ups, fails on demand.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub struct MemorySink {
    pub keys: HashMap<String, TenantId>,
    pub events: Mutex<BTreeMap<(TenantId, String), Event>>,
    pub lookups: AtomicUsize,
    /// This many of the next key look-ups fail.
    pub failing_lookups: AtomicUsize,
    /// This many of the next `put_events` calls fail (after storing the first event).
    pub failing_puts: AtomicUsize,
}

impl MemorySink {
    pub fn with_acme() -> MemorySink {
        MemorySink {
            keys: HashMap::from([(WRITE_KEY.to_owned(), acme())]),
            ..MemorySink::default()
        }
    }

    pub fn stored(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

fn injected() -> StoreError {
    StoreError::Dynamo {
        operation: "PutItem",
        table: "EventsTable".into(),
        message: "injected failure: ProvisionedThroughputExceededException".into(),
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl EventSink for MemorySink {
    async fn tenant_for_write_key(&self, raw_key: &str) -> Result<Option<TenantId>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if take_one(&self.failing_lookups) {
            return Err(injected());
        }
        Ok(self.keys.get(raw_key).cloned())
    }

    async fn put_events(
        &self,
        tenant: &TenantId,
        events: &[Event],
        _retention_days: u32,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let fail = take_one(&self.failing_puts);
        let mut stored = self.events.lock().unwrap();
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let key = (tenant.clone(), event.message_id.to_string());
            match stored.entry(key) {
                Entry::Occupied(_) => outcomes.push(PutOutcome::Duplicate),
                Entry::Vacant(slot) => {
                    slot.insert(event.clone());
                    outcomes.push(PutOutcome::Stored);
                }
            }
            if fail {
                // Part of the request was written before the store failed.
                return Err(injected());
            }
        }
        Ok(outcomes)
    }
}

pub fn memory_app(sink: MemorySink) -> App<MemorySink> {
    App::new(sink, Config::default()).with_clock(received_at)
}

// ---------------------------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------------------------

/// `Authorization: Basic base64(KEY:)`, as Segment's libraries send it.
pub fn basic(key: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{key}:")))
}

/// A POST with the test tenant's key in an `Authorization` header.
pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Request {
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", basic(WRITE_KEY))
        .body(Body::Binary(body.into()))
        .unwrap()
}

/// A request without credentials.
pub fn anonymous(method: &str, path: &str, body: impl Into<Vec<u8>>) -> Request {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::Binary(body.into()))
        .unwrap()
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn assert_error(&self, status: StatusCode, code: &str) -> &str {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        assert_eq!(self.body.as_object().unwrap().len(), 2, "{}", self.body);
        assert_eq!(self.headers["content-type"], "application/json");
        let message = self.body["message"].as_str().unwrap();
        assert!(!message.is_empty());
        message
    }

    pub fn assert_success(&self) {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        assert_eq!(self.body, json!({"success": true}));
    }
}

pub async fn send<S: EventSink>(app: &App<S>, request: Request) -> Reply {
    let response = app.handle(request).await;
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(body.as_ref()).expect("a JSON body"),
    }
}

/// A track call with a messageId.
pub fn track(message_id: &str) -> Value {
    json!({
        "type": "track",
        "event": "Report Exported",
        "userId": "user-1",
        "messageId": message_id,
        "timestamp": "2026-11-23T07:40:03.123Z",
        "properties": {"format": "pdf"},
        "context": {"groupId": "account-1"},
    })
}

pub fn batch(calls: impl IntoIterator<Item = Value>) -> Vec<u8> {
    json!({"batch": calls.into_iter().collect::<Vec<_>>()})
        .to_string()
        .into_bytes()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}
