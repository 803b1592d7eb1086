//! The adapter against DynamoDB Local: tables from the SAM template, keys, dedup, concurrency.

use std::path::Path;

use pql_dynamodb_local::repo_root_from;
use pql_engine::event::parse_call;
use pql_engine::{AccountState, Definition};
use pql_store::events::PutOutcome;
use pql_store::template::tables_in;
use pql_store::tenants::TenantId;
use pql_store::{Conflict, RecordKind};

fn root() -> std::path::PathBuf {
    repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("repository root")
}

fn definition() -> Definition {
    let source = std::fs::read_to_string(root().join("examples/definition.toml")).unwrap();
    Definition::from_toml("examples/definition.toml", &source).unwrap()
}

use pql_store::testing::fresh_store;

#[tokio::test]
async fn tables_match_the_template() {
    let (store, _db) = fresh_store().await;
    let source = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    let specs = tables_in(&source).unwrap();
    assert_eq!(specs.len(), 4);
    for spec in specs {
        let name = match spec.logical_id.as_str() {
            "TenantsTable" => &store.tables().tenants,
            "EventsTable" => &store.tables().events,
            "StateTable" => &store.tables().state,
            "AlertsTable" => &store.tables().alerts,
            other => panic!("unexpected table {other}"),
        };
        let table = store
            .client()
            .describe_table()
            .table_name(name)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        let key: Vec<(String, String)> = table
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(key, spec.key, "{name}");
        let mut attributes: Vec<(String, String)> = table
            .attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name().to_owned(),
                    a.attribute_type().as_str().to_owned(),
                )
            })
            .collect();
        attributes.sort();
        let mut expected = spec.attributes.clone();
        expected.sort();
        assert_eq!(attributes, expected, "{name}");
        let view = table
            .stream_specification()
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str().to_owned());
        assert_eq!(view, spec.stream_view, "{name}");
        let indexes: Vec<String> = table
            .global_secondary_indexes()
            .iter()
            .filter_map(|i| i.index_name().map(str::to_owned))
            .collect();
        assert_eq!(
            indexes,
            spec.indexes
                .iter()
                .map(|i| i.name.clone())
                .collect::<Vec<_>>(),
            "{name}"
        );
        if let Some(ttl) = &spec.ttl_attribute {
            let out = store
                .client()
                .describe_time_to_live()
                .table_name(name)
                .send()
                .await
                .unwrap();
            assert_eq!(
                out.time_to_live_description()
                    .and_then(|d| d.attribute_name()),
                Some(ttl.as_str()),
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn write_keys_are_stored_hashed_and_resolve_to_their_tenant() {
    let (store, _db) = fresh_store().await;
    let tenant = TenantId::parse("acme").unwrap();
    store
        .put_tenant(&tenant, "wk_secret_123", &definition())
        .await
        .unwrap();
    assert_eq!(
        store.tenant_for_write_key("wk_secret_123").await.unwrap(),
        Some(tenant.clone())
    );
    assert_eq!(store.tenant_for_write_key("wk_other").await.unwrap(), None);
    assert_eq!(
        store
            .tenant_definition(&tenant)
            .await
            .unwrap()
            .unwrap()
            .version,
        definition().version
    );
    // The raw key appears nowhere in the table.
    let scan = store
        .client()
        .scan()
        .table_name(&store.tables().tenants)
        .send()
        .await
        .unwrap();
    assert!(!format!("{:?}", scan.items()).contains("wk_secret_123"));
    // A key cannot be taken over by another tenant.
    let other = TenantId::parse("globex").unwrap();
    assert!(store
        .put_tenant(&other, "wk_secret_123", &definition())
        .await
        .is_err());
    assert_eq!(
        store.tenant_for_write_key("wk_secret_123").await.unwrap(),
        Some(tenant)
    );
}

#[tokio::test]
async fn an_event_is_stored_once_per_tenant_and_message_id() {
    let (store, _db) = fresh_store().await;
    let acme = TenantId::parse("acme").unwrap();
    let globex = TenantId::parse("globex").unwrap();
    let raw = br#"{"type":"track","event":"Project Created","userId":"u1","messageId":"m-1","timestamp":"2026-01-05T10:00:00Z"}"#;
    let event = parse_call(raw, None, None).unwrap();
    let (first, units) = store.put_event(&acme, &event, 90).await.unwrap();
    assert_eq!(first, PutOutcome::Stored);
    assert!(
        units > 0.0 && units <= 1.0,
        "an event costs one write unit, got {units}"
    );
    assert_eq!(
        store.put_event(&acme, &event, 90).await.unwrap(),
        (PutOutcome::Duplicate, 0.0)
    );
    assert_eq!(
        store.put_event(&globex, &event, 90).await.unwrap().0,
        PutOutcome::Stored
    );
    let outcomes = store
        .put_events(&acme, &[event.clone(), event], 90)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|(o, _)| *o == PutOutcome::Duplicate));

    // A retry whose corrected time is later stays a duplicate; an earlier one replaces the
    // stored copy (the engine keeps the earliest copy of a messageId), once.
    let at = |time: &str| {
        let raw = format!(
            r#"{{"type":"track","event":"Project Created","userId":"u1","messageId":"m-1","timestamp":"{time}"}}"#
        );
        parse_call(raw.as_bytes(), None, None).unwrap()
    };
    let later = at("2026-01-05T10:30:00Z");
    let earlier = at("2026-01-05T09:59:00Z");
    assert_eq!(
        store.put_event(&acme, &later, 90).await.unwrap().0,
        PutOutcome::Duplicate
    );
    assert_eq!(
        store.put_event(&acme, &earlier, 90).await.unwrap().0,
        PutOutcome::Corrected
    );
    assert_eq!(
        store.put_event(&acme, &earlier, 90).await.unwrap().0,
        PutOutcome::Duplicate
    );
}

#[tokio::test]
async fn records_use_optimistic_concurrency() {
    let (store, _db) = fresh_store().await;
    let tenant = TenantId::parse("acme").unwrap();
    let definition = definition();
    let state = AccountState::new(&definition);
    assert!(store
        .load_record::<AccountState>(&tenant, RecordKind::Account, "a1")
        .await
        .unwrap()
        .is_none());
    let (v1, _) = store
        .save_record(&tenant, RecordKind::Account, "a1", &state, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1, 1);
    // A second creator loses; a writer holding version 1 wins once, then loses.
    assert_eq!(
        store
            .save_record(&tenant, RecordKind::Account, "a1", &state, 0)
            .await
            .unwrap(),
        Err(Conflict)
    );
    assert!(store
        .save_record(&tenant, RecordKind::Account, "a1", &state, 1)
        .await
        .unwrap()
        .is_ok());
    assert_eq!(
        store
            .save_record(&tenant, RecordKind::Account, "a1", &state, 1)
            .await
            .unwrap(),
        Err(Conflict)
    );
    let read = store
        .load_record::<AccountState>(&tenant, RecordKind::Account, "a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.version, 2);
    assert_eq!(read.value, state);
}
