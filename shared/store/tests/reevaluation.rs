//! Re-evaluation jobs against DynamoDB Local, at the store's level: counting the accounts as
//! the job goes, and scanning a state table shared with user records and other tenants.

use pql_engine::event::parse_call;
use pql_engine::{AccountState, Definition, Event, Timestamp};
use pql_store::reevaluation::RebuildCache;
use pql_store::tenants::TenantId;
use pql_store::testing::{fresh_store, TestDefinition};
use pql_store::{AccountRecord, RecordKind, Store, UserRecord};

/// Creating a project (10) is enough for PQL at warm; no activation.
fn v1() -> TestDefinition {
    TestDefinition::new("jobs").pql("warm", &["created"])
}

/// V1 with another hot threshold: the stored state answers it (mapped, no rebuild).
fn v1_hot_at_50() -> TestDefinition {
    v1().hot(50)
}

fn t0() -> Timestamp {
    Timestamp::parse("2026-01-05T00:00:00Z").unwrap()
}

fn track(account: &str, user: &str, name: &str, at: Timestamp, id: &str) -> Event {
    let raw = serde_json::json!({
        "type": "track", "userId": user, "messageId": id, "event": name,
        "timestamp": at.to_rfc3339(), "context": {"groupId": account},
    });
    parse_call(raw.to_string().as_bytes(), None, None).unwrap()
}

async fn save_account(store: &Store, tenant: &TenantId, definition: &Definition, id: &str) {
    let mut state = AccountState::new(definition);
    let event = track(id, "u", "Dashboard Viewed", t0(), &format!("{id}-d"));
    state.apply(definition, &event);
    let record = AccountRecord {
        state,
        clock: event.timestamp,
        points: Vec::new(),
    };
    store
        .save_record(tenant, RecordKind::Account, id, &record, 0)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_job_counts_accounts_as_it_goes_through_a_table_shared_with_users_and_tenants() {
    let (store, _db) = fresh_store().await;
    let v1 = Definition::from_toml("v1.toml", &v1().toml()).unwrap();
    let v2 = Definition::from_toml("v2.toml", &v1_hot_at_50().toml()).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let other = TenantId::parse("other").unwrap();
    store.put_tenant(&tenant, "wk_a", &v1).await.unwrap();
    store.put_tenant(&other, "wk_o", &v1).await.unwrap();
    for i in 0..12 {
        save_account(&store, &tenant, &v1, &format!("a{i:02}")).await;
        save_account(&store, &other, &v1, &format!("o{i:02}")).await;
        let user = UserRecord {
            state: AccountState::new(&v1),
            ..UserRecord::default()
        };
        store
            .save_record(&tenant, RecordKind::User, &format!("u{i:02}"), &user, 0)
            .await
            .unwrap()
            .unwrap();
    }
    store
        .push_definition(&tenant, &v2, "ana", "hot at 50", t0())
        .await
        .unwrap();
    let activated = store
        .activate_definition(&tenant, &v2.version, "ana", t0())
        .await
        .unwrap();
    let job = store
        .start_reevaluation(
            &tenant,
            &activated.active,
            activated.previous.as_deref(),
            "activate",
            t0(),
        )
        .await
        .unwrap();
    assert_eq!((job.total, job.progress()), (None, None), "not counted yet");

    // Chunks of one examined item: each counts one page of 20 examined items ahead of it,
    // so the 36 items of the table are counted by the second chunk. Every cursor lands on
    // whatever item was examined last: a user record, another tenant's account.
    let mut cache = RebuildCache::default();
    let mut totals = Vec::new();
    let mut chunks = 0;
    while let Some(report) = store
        .reevaluate_chunk(&tenant, 1, t0(), &mut cache)
        .await
        .unwrap()
    {
        assert!(!report.lost_race);
        chunks += 1;
        assert!(chunks < 100, "the job does not finish");
        let job = store.reevaluation(&tenant).await.unwrap().unwrap().value;
        totals.push(job.total);
    }
    assert_eq!(&totals[..2], &[None, Some(12)], "{totals:?}");
    assert!(totals[1..].iter().all(|t| *t == Some(12)), "{totals:?}");
    let job = store.reevaluation(&tenant).await.unwrap().unwrap().value;
    assert!(job.finished(), "{job:?}");
    assert_eq!(
        (job.done, job.mapped, job.failed, job.progress()),
        (12, 12, 0, Some(1.0)),
        "{job:?}"
    );
    assert!(job.errors.is_empty(), "{:?}", job.errors);
    for i in 0..12 {
        let record = store
            .load_record::<AccountRecord>(&tenant, RecordKind::Account, &format!("a{i:02}"))
            .await
            .unwrap()
            .unwrap();
        assert!(record.value.state.follows(&v2), "a{i:02}");
        let untouched = store
            .load_record::<AccountRecord>(&other, RecordKind::Account, &format!("o{i:02}"))
            .await
            .unwrap()
            .unwrap();
        assert!(untouched.value.state.follows(&v1), "o{i:02}");
        assert_eq!(untouched.version, 1);
    }
}

#[tokio::test]
async fn unreadable_items_are_named_with_what_is_wrong() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (store, _db) = fresh_store().await;
    let tenant = TenantId::parse("acme").unwrap();
    let put = |table: String, item: Vec<(&'static str, AttributeValue)>| {
        let store = store.clone();
        async move {
            let mut request = store.client().put_item().table_name(table);
            for (name, value) in item {
                request = request.item(name, value);
            }
            request.send().await.unwrap();
        }
    };
    let state = store.tables().state.clone();
    put(
        state.clone(),
        vec![
            ("pk", AttributeValue::S("acme#account#a1".into())),
            ("version", AttributeValue::N("3".into())),
        ],
    )
    .await;
    let error = store
        .load_record::<AccountRecord>(&tenant, RecordKind::Account, "a1")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("acme#account#a1"), "{error}");
    assert!(error.ends_with("no body"), "{error}");
    put(
        state,
        vec![
            ("pk", AttributeValue::S("acme#account#a2".into())),
            ("version", AttributeValue::N("3".into())),
            ("body", AttributeValue::B(vec![1, 2, 3].into())),
        ],
    )
    .await;
    let error = store
        .load_record::<AccountRecord>(&tenant, RecordKind::Account, "a2")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("body is not deflated JSON"), "{error}");
    put(
        store.tables().tenants.clone(),
        vec![
            ("pk", AttributeValue::S("reevaluation#acme".into())),
            ("job", AttributeValue::S("{".into())),
            ("rev", AttributeValue::N("1".into())),
        ],
    )
    .await;
    let error = store.reevaluation(&tenant).await.unwrap_err().to_string();
    assert!(error.contains("reevaluation#acme"), "{error}");
    assert!(error.contains("`job`: EOF"), "{error}");
}
