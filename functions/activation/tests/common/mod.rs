//! Shared test helpers: fresh tables in DynamoDB Local, a tenant, and stream batches built
//! from events stored exactly as ingest stores them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aws_lambda_events::event::dynamodb::{
    Event as StreamEvent, EventRecord, StreamRecord, StreamViewType,
};
use aws_sdk_dynamodb::types::AttributeValue;
use pql_activation::{Activation, BatchReport};
use pql_dynamodb_local::{repo_root_from, DynamoDbLocal};
use pql_engine::event::parse_call;
use pql_engine::{evaluate, Decision, Definition, Event, Ledger, Timestamp};
use pql_store::events::{event_pk, PutOutcome};
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, Store, UserRecord};

pub fn root() -> PathBuf {
    repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("repository root")
}

pub fn definition() -> Definition {
    let source = std::fs::read_to_string(root().join("examples/definition.toml")).unwrap();
    Definition::from_toml("examples/definition.toml", &source).unwrap()
}

/// Fresh tables (unique prefix) in DynamoDB Local, a tenant `acme` with the example
/// definition, and the stream of its events table.
pub struct Env {
    pub store: Store,
    pub tenant: TenantId,
    pub definition: Definition,
    next_sequence: u64,
    _db: Option<DynamoDbLocal>,
}

impl Env {
    pub async fn new() -> Env {
        Env::with_definition(definition()).await
    }

    /// The same with another definition for the tenant.
    pub async fn with_definition(definition: Definition) -> Env {
        let (store, db) = pql_store::testing::fresh_store().await;
        let tenant = TenantId::parse("acme").unwrap();
        store
            .put_tenant(&tenant, "wk_test", &definition)
            .await
            .unwrap();
        Env {
            store,
            tenant,
            definition,
            next_sequence: 1,
            _db: db,
        }
    }

    pub fn activation(&self) -> Activation {
        Activation::new(self.store.clone())
    }

    /// Stores the event as ingest does (a duplicate is not stored again) and returns the put's
    /// outcome and write units.
    pub async fn put(&self, event: &Event) -> (PutOutcome, f64) {
        self.store.put_event(&self.tenant, event, 90).await.unwrap()
    }

    /// A stream record of the stored event: its item, read back from the events table, as the
    /// INSERT's new image.
    pub async fn record(&mut self, event: &Event) -> EventRecord {
        self.put(event).await;
        let pk = event_pk(&self.tenant, event.message_id.as_str());
        let item = self
            .store
            .client()
            .get_item()
            .table_name(&self.store.tables().events)
            .key("pk", AttributeValue::S(pk.clone()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .expect("the event is stored");
        self.record_from_item(item)
    }

    pub fn record_from_item(&mut self, item: HashMap<String, AttributeValue>) -> EventRecord {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let mut change = StreamRecord::default();
        change.keys = serde_dynamo::Item::from(HashMap::from([(
            "pk".to_owned(),
            item.get("pk").cloned().expect("pk"),
        )]));
        change.new_image = serde_dynamo::Item::from(item);
        change.sequence_number = Some(format!("{sequence:021}"));
        change.stream_view_type = Some(StreamViewType::NewImage);
        change.size_bytes = 100;
        let mut record = EventRecord::default();
        record.aws_region = "us-east-1".into();
        record.event_id = format!("event-{sequence}");
        record.event_name = "INSERT".into();
        record.event_source = Some("aws:dynamodb".into());
        record.event_version = Some("1.1".into());
        record.change = change;
        record
    }

    /// One batch of stream records for these events, in order.
    pub async fn batch(&mut self, events: &[Event]) -> StreamEvent {
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            records.push(self.record(event).await);
        }
        stream(records)
    }

    pub async fn account(&self, id: &str) -> Option<AccountRecord> {
        self.store
            .load_record::<AccountRecord>(&self.tenant, RecordKind::Account, id)
            .await
            .unwrap()
            .map(|v| v.value)
    }

    pub async fn account_version(&self, id: &str) -> u64 {
        self.store
            .load_record::<AccountRecord>(&self.tenant, RecordKind::Account, id)
            .await
            .unwrap()
            .map_or(0, |v| v.version)
    }

    pub async fn user(&self, id: &str) -> Option<UserRecord> {
        self.store
            .load_record::<UserRecord>(&self.tenant, RecordKind::User, id)
            .await
            .unwrap()
            .map(|v| v.value)
    }

    /// The ids of every account record in the state table.
    pub async fn account_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .store
                .client()
                .scan()
                .table_name(&self.store.tables().state)
                .filter_expression("kind = :k")
                .expression_attribute_values(":k", AttributeValue::S("account".into()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in out.items() {
                ids.push(item["id"].as_s().unwrap().clone());
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        ids.sort();
        ids
    }

    /// Milestone progress of an account at `now` (0 when it has no record).
    pub async fn progress(&self, account: &str, milestone: &str, now: Timestamp) -> f64 {
        match self.account(account).await {
            None => 0.0,
            Some(record) => {
                milestone_progress(&evaluate(&self.definition, &record.state, now), milestone)
            }
        }
    }

    /// Every account of the ledger is stored with the same state (and decision at `now`), and
    /// no other account is stored.
    pub async fn assert_matches_ledger(&self, ledger: &Ledger<'_>, now: Timestamp, clocks: bool) {
        let mut expected: Vec<String> = ledger.accounts().map(|(id, _)| id.to_owned()).collect();
        expected.sort();
        assert_eq!(self.account_ids().await, expected, "stored accounts");
        for (id, entry) in ledger.accounts() {
            let stored = self.account(id).await.expect("stored");
            assert_eq!(stored.state, entry.state, "state of account {id}");
            assert_eq!(
                evaluate(&self.definition, &stored.state, now),
                ledger.decide(id, now).unwrap(),
                "decision for account {id}"
            );
            if clocks {
                assert_eq!(stored.clock, entry.clock, "clock of account {id}");
            }
        }
    }
}

pub fn stream(records: Vec<EventRecord>) -> StreamEvent {
    let mut event = StreamEvent::default();
    event.records = records;
    event
}

pub fn milestone_progress(decision: &Decision, name: &str) -> f64 {
    decision
        .milestones
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no milestone {name}"))
        .progress
}

/// Parses one Segment call (JSON text).
pub fn call(json: &str) -> Event {
    parse_call(json.as_bytes(), None, None).unwrap_or_else(|e| panic!("{e}: {json}"))
}

pub fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

/// Processes a batch and asserts nothing failed.
pub async fn process_ok(activation: &Activation, batch: StreamEvent) -> BatchReport {
    let report = activation.process(batch).await;
    assert!(
        report.response.batch_item_failures.is_empty(),
        "failed at {:?}",
        report.failed
    );
    report
}

pub fn ledger_of<'d>(definition: &'d Definition, events: &[Event]) -> Ledger<'d> {
    let mut ledger = Ledger::new(definition);
    for event in events {
        ledger.ingest(event);
    }
    ledger
}
