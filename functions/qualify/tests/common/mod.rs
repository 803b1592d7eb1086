//! Test helpers shared by the qualify and sweep tests: fresh tables in DynamoDB Local, account
//! records built with the engine, and stream records built from stored items.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_sdk_dynamodb::types::AttributeValue;
use pql_dynamodb_local::repo_root_from;
use pql_engine::event::parse_call;
use pql_engine::time::MS_PER_DAY;
use pql_engine::{AccountState, Definition, Timestamp};
use pql_store::records::record_pk;
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, Store};

pub fn root() -> PathBuf {
    repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("repository root")
}

pub use pql_store::testing::fresh_store;

pub fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// A small definition: 2 projects (activation) and activity on 2 distinct days of the last 7
/// make a hot PQL; paying accounts are gated.
pub fn test_definition(reentry: &str) -> Definition {
    let source = format!(
        r#"
name = "qualify tests"

[[milestone]]
name = "created_projects"
event = "Project Created"
count_at_least = 2
points = 30

[[milestone]]
name = "habit"
any = true
distinct_days_at_least = 2
in_last_days = 7
points = 30

[[gate]]
name = "already_paying"
when = {{ account_trait = "plan", in = ["pro"] }}

[tiers]
warm = 25
hot = 50

[activation]
milestones = ["created_projects"]

[pql]
min_tier = "hot"
milestones = ["created_projects", "habit"]
cooldown_days = 10
reentry = "{reentry}"
"#
    );
    Definition::from_toml("test.toml", &source).unwrap_or_else(|e| panic!("{e}"))
}

pub fn example_definition() -> Definition {
    let source = std::fs::read_to_string(root().join("examples/definition.toml")).unwrap();
    Definition::from_toml("examples/definition.toml", &source).unwrap()
}

/// 2026-01-05T00:00:00Z plus `days` (fractional days allowed).
pub fn day(days: f64) -> Timestamp {
    Timestamp::parse("2026-01-05T00:00:00Z")
        .unwrap()
        .plus_days(days)
}

/// A `track` call of `user` in `account` at `at`.
pub fn track(account: &str, name: &str, at: Timestamp, message: &str) -> pql_engine::Event {
    let raw = serde_json::json!({
        "type": "track", "event": name, "userId": "u1", "messageId": message,
        "timestamp": at.to_rfc3339(), "context": {"groupId": account},
    });
    parse_call(raw.to_string().as_bytes(), None, None).unwrap()
}

/// A `group` call setting traits of `account`.
pub fn group(
    account: &str,
    traits: serde_json::Value,
    at: Timestamp,
    message: &str,
) -> pql_engine::Event {
    let raw = serde_json::json!({
        "type": "group", "groupId": account, "userId": "u1", "messageId": message,
        "timestamp": at.to_rfc3339(), "traits": traits,
    });
    parse_call(raw.to_string().as_bytes(), None, None).unwrap()
}

/// An account as the activation function keeps it: state, event clock and stored version.
pub struct Account {
    pub id: String,
    pub record: AccountRecord,
    pub version: u64,
    /// The item as last stored (the next record's old image).
    pub item: Option<HashMap<String, AttributeValue>>,
}

impl Account {
    pub fn new(definition: &Definition, id: &str) -> Self {
        Account {
            id: id.to_owned(),
            record: AccountRecord {
                state: AccountState::new(definition),
                clock: Timestamp::MIN,
                points: Vec::new(),
            },
            version: 0,
            item: None,
        }
    }

    /// Applies events as `Ledger` does (the clock moves with events that change the state).
    pub fn apply(&mut self, definition: &Definition, events: &[pql_engine::Event]) {
        for event in events {
            if self.record.state.apply(definition, event) {
                self.record.clock = self.record.clock.max(event.timestamp);
            }
        }
    }

    /// Saves the record with `Store::save_record` and returns the stream record of that write,
    /// built from the stored item.
    pub async fn save(&mut self, store: &Store) -> EventRecord {
        let (version, _) = store
            .save_record(
                &tenant(),
                RecordKind::Account,
                &self.id,
                &self.record,
                self.version,
            )
            .await
            .unwrap()
            .unwrap();
        self.version = version;
        let stored = store
            .client()
            .get_item()
            .table_name(&store.tables().state)
            .key(
                "pk",
                AttributeValue::S(record_pk(&tenant(), RecordKind::Account, &self.id)),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        let record = stream_record(self.item.take(), stored.clone(), version);
        self.item = Some(stored);
        record
    }
}

/// The item `Store::save_record` writes for an account (for streams built without a table).
pub fn account_item(
    id: &str,
    record: &AccountRecord,
    version: u64,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(record_pk(&tenant(), RecordKind::Account, id)),
        ),
        ("tenant".to_owned(), AttributeValue::S("acme".into())),
        ("kind".to_owned(), AttributeValue::S("account".into())),
        ("id".to_owned(), AttributeValue::S(id.into())),
        ("version".to_owned(), AttributeValue::N(version.to_string())),
        (
            "body".to_owned(),
            AttributeValue::B(pql_store::records::encode_body(record).into()),
        ),
    ])
}

static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A stream record (NEW_AND_OLD_IMAGES) of a write that turned `old` into `new`.
pub fn stream_record(
    old: Option<HashMap<String, AttributeValue>>,
    new: HashMap<String, AttributeValue>,
    version: u64,
) -> EventRecord {
    let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let keys = HashMap::from([("pk".to_owned(), new["pk"].clone())]);
    let json = serde_json::json!({
        "awsRegion": "us-east-1",
        "eventID": format!("e{sequence}-v{version}"),
        "eventName": if old.is_some() { "MODIFY" } else { "INSERT" },
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_767_571_200.0,
            "Keys": serde_json::to_value(serde_dynamo::Item::from(keys)).unwrap(),
            "NewImage": serde_json::to_value(serde_dynamo::Item::from(new)).unwrap(),
            "OldImage": old.map(|o| serde_json::to_value(serde_dynamo::Item::from(o)).unwrap()),
            "SequenceNumber": format!("{sequence:021}"),
            "SizeBytes": 100,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    });
    serde_json::from_value(json).unwrap()
}

pub fn batch(records: Vec<EventRecord>) -> Event {
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

pub const DAY_MS: i64 = MS_PER_DAY;
