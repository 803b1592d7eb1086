//! The qualify function against DynamoDB Local: stream records built from stored account
//! items, handed to the handler as Lambda would.

mod common;

use std::collections::BTreeSet;

use common::*;
use pql_engine::definition::Tier;
use pql_engine::event::parse_call;
use pql_engine::{Ledger, Stage, Timestamp};
use pql_qualify::{Qualifier, RecordOutcome, Skip};
use pql_simulator::{SimConfig, Simulation};
use pql_store::alerts::{Observed, Trigger};
use pql_store::AccountRecord;

async fn qualifier_with(
    definition: &pql_engine::Definition,
) -> (Qualifier, Option<pql_dynamodb_local::DynamoDbLocal>) {
    let (store, db) = fresh_store().await;
    store
        .put_tenant(&tenant(), "wk_test", definition)
        .await
        .unwrap();
    (Qualifier::new(store), db)
}

async fn observe(
    q: &Qualifier,
    record: &aws_lambda_events::event::dynamodb::EventRecord,
) -> RecordOutcome {
    q.process(record).await.unwrap()
}

#[tokio::test]
async fn an_account_crossing_the_threshold_gets_exactly_one_alert() {
    let definition = test_definition("after_cooldown");
    let (q, _db) = qualifier_with(&definition).await;
    let store = q.store();
    let mut account = Account::new(&definition, "a1");

    account.apply(
        &definition,
        &[
            group("a1", serde_json::json!({"name": "Initech"}), day(0.0), "g1"),
            track("a1", "Project Created", day(0.1), "p1"),
            track("a1", "Project Created", day(0.2), "p2"),
        ],
    );
    let first = account.save(store).await;
    assert_eq!(
        observe(&q, &first).await,
        RecordOutcome::Observed(Observed::Changed {
            stage: Stage::Activated
        })
    );
    assert!(store.alerts(&tenant(), "a1").await.unwrap().is_empty());

    // Activity on a second day: hot, both PQL milestones met.
    account.apply(
        &definition,
        &[track("a1", "Dashboard Viewed", day(1.5), "d1")],
    );
    let crossing = account.save(store).await;
    let response = q.handle(batch(vec![crossing.clone()])).await.unwrap();
    assert!(response.batch_item_failures.is_empty());

    let alerts = store.alerts(&tenant(), "a1").await.unwrap();
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert.sequence, 1);
    assert_eq!(alert.account, "a1");
    assert_eq!(alert.tenant, "acme");
    assert_eq!(alert.account_name.as_deref(), Some("Initech"));
    assert_eq!(alert.qualified_at, day(1.5));
    assert_eq!(alert.tier, Tier::Hot);
    assert_eq!(alert.score, 60.0);
    assert_eq!(alert.trigger, Trigger::Event);
    assert_eq!(alert.definition_version, definition.version);
    let decision = &alert.decision;
    assert_eq!(decision["qualifies"], true);
    assert_eq!(decision["stage"], "pql");
    assert_eq!(decision["milestones"][0]["name"], "created_projects");
    assert_eq!(decision["milestones"][0]["met"], true);
    assert_eq!(decision["milestones"][0]["by_user"], "u1");
    assert_eq!(decision["milestones"][1]["met"], true);
    let reasons: Vec<&str> = decision["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("qualifies as a PQL")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("habit: met")),
        "{reasons:?}"
    );

    let lifecycle = store.load_lifecycle(&tenant(), "a1").await.unwrap();
    assert_eq!(lifecycle.value.lifecycle.stage, Stage::Pql);
    assert_eq!(lifecycle.value.lifecycle.qualifications, 1);
    assert_eq!(lifecycle.value.lifecycle.activated_at, Some(day(0.2)));

    // Redelivered, alone and with the whole batch: nothing new.
    assert_eq!(
        observe(&q, &crossing).await,
        RecordOutcome::Observed(Observed::Stale)
    );
    let response = q
        .handle(batch(vec![first.clone(), crossing.clone()]))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(store.alerts(&tenant(), "a1").await.unwrap().len(), 1);
    assert_eq!(
        store.load_lifecycle(&tenant(), "a1").await.unwrap().version,
        lifecycle.version
    );

    // More activity while qualified: still one alert.
    account.apply(
        &definition,
        &[track("a1", "Project Created", day(2.0), "p3")],
    );
    let more = account.save(store).await;
    assert_eq!(
        observe(&q, &more).await,
        RecordOutcome::Observed(Observed::Unchanged { stage: Stage::Pql })
    );
    assert_eq!(store.alerts(&tenant(), "a1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn racing_handlers_write_one_alert() {
    let definition = test_definition("after_cooldown");
    let (q, _db) = qualifier_with(&definition).await;
    let other = Qualifier::new(q.store().clone());
    let mut account = Account::new(&definition, "a1");
    account.apply(
        &definition,
        &[
            track("a1", "Project Created", day(0.1), "p1"),
            track("a1", "Project Created", day(0.2), "p2"),
            track("a1", "Dashboard Viewed", day(1.5), "d1"),
        ],
    );
    let record = account.save(q.store()).await;
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            q.handle(batch(vec![record.clone()])),
            other.handle(batch(vec![record.clone()]))
        );
        assert!(a.unwrap().batch_item_failures.is_empty());
        assert!(b.unwrap().batch_item_failures.is_empty());
    }
    let alerts = q.store().alerts(&tenant(), "a1").await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let lifecycle = q
        .store()
        .load_lifecycle(&tenant(), "a1")
        .await
        .unwrap()
        .value;
    assert_eq!(lifecycle.lifecycle.qualifications, 1);
    assert_eq!(lifecycle.observed_version, 1);
}

#[tokio::test]
async fn lifecycle_reaches_activated_pql_and_disqualified() {
    let definition = test_definition("after_cooldown");
    let (q, _db) = qualifier_with(&definition).await;
    let store = q.store();

    let mut trial = Account::new(&definition, "trial");
    trial.apply(
        &definition,
        &[track("trial", "Dashboard Viewed", day(0.0), "t0")],
    );
    let r = trial.save(store).await;
    assert_eq!(
        observe(&q, &r).await,
        RecordOutcome::Observed(Observed::Unchanged {
            stage: Stage::SignedUp
        })
    );
    trial.apply(
        &definition,
        &[
            track("trial", "Project Created", day(0.1), "t1"),
            track("trial", "Project Created", day(0.2), "t2"),
        ],
    );
    let r = trial.save(store).await;
    assert_eq!(
        observe(&q, &r).await,
        RecordOutcome::Observed(Observed::Changed {
            stage: Stage::Activated
        })
    );
    trial.apply(
        &definition,
        &[track("trial", "Dashboard Viewed", day(1.0), "t3")],
    );
    let r = trial.save(store).await;
    assert!(matches!(
        observe(&q, &r).await,
        RecordOutcome::Observed(Observed::Qualified(_))
    ));
    assert_eq!(
        store
            .load_lifecycle(&tenant(), "trial")
            .await
            .unwrap()
            .value
            .lifecycle
            .stage,
        Stage::Pql
    );

    // A paying account does the same: disqualified, no alert.
    let mut paying = Account::new(&definition, "paying");
    paying.apply(
        &definition,
        &[
            group("paying", serde_json::json!({"plan": "pro"}), day(0.0), "g"),
            track("paying", "Project Created", day(0.1), "q1"),
            track("paying", "Project Created", day(0.2), "q2"),
            track("paying", "Dashboard Viewed", day(1.0), "q3"),
        ],
    );
    let r = paying.save(store).await;
    assert_eq!(
        observe(&q, &r).await,
        RecordOutcome::Observed(Observed::Changed {
            stage: Stage::Disqualified
        })
    );
    assert!(store.alerts(&tenant(), "paying").await.unwrap().is_empty());
    // The gate lifted (a downgrade): it qualifies.
    paying.apply(
        &definition,
        &[group(
            "paying",
            serde_json::json!({"plan": "free"}),
            day(2.0),
            "g2",
        )],
    );
    let r = paying.save(store).await;
    assert!(matches!(
        observe(&q, &r).await,
        RecordOutcome::Observed(Observed::Qualified(_))
    ));
    assert_eq!(store.alerts(&tenant(), "paying").await.unwrap().len(), 1);
}

/// Qualifies on days 0-1, drops out on day 20 (the habit window has closed), meets the rule
/// again on day 21 (after the 10-day cooldown).
async fn reentry(reentry: &str) -> Vec<pql_store::alerts::Alert> {
    let definition = test_definition(reentry);
    let (q, _db) = qualifier_with(&definition).await;
    let store = q.store();
    let mut account = Account::new(&definition, "a1");
    let steps: [(&[pql_engine::Event], Stage); 3] = [
        (
            &[
                track("a1", "Project Created", day(0.1), "p1"),
                track("a1", "Project Created", day(0.2), "p2"),
                track("a1", "Dashboard Viewed", day(1.0), "d1"),
            ],
            Stage::Pql,
        ),
        (
            &[track("a1", "Dashboard Viewed", day(20.0), "d2")],
            Stage::Pql,
        ),
        (
            &[track("a1", "Dashboard Viewed", day(21.0), "d3")],
            Stage::Pql,
        ),
    ];
    for (i, (events, stage)) in steps.iter().enumerate() {
        account.apply(&definition, events);
        let r = account.save(store).await;
        q.handle(batch(vec![r.clone()])).await.unwrap();
        // Each redelivered: nothing more.
        q.handle(batch(vec![r])).await.unwrap();
        let lifecycle = store
            .load_lifecycle(&tenant(), "a1")
            .await
            .unwrap()
            .value
            .lifecycle;
        assert_eq!(lifecycle.stage, *stage, "step {i}");
        if i == 1 {
            assert!(lifecycle.dropped_out, "the drop-out is recorded");
        }
    }
    store.alerts(&tenant(), "a1").await.unwrap()
}

#[tokio::test]
async fn reentry_after_cooldown_creates_a_second_alert() {
    let alerts = reentry("after_cooldown").await;
    let seen: Vec<(u32, Timestamp)> = alerts
        .iter()
        .map(|a| (a.sequence, a.qualified_at))
        .collect();
    assert_eq!(seen, [(1, day(1.0)), (2, day(21.0))]);
}

#[tokio::test]
async fn reentry_never_does_not() {
    let alerts = reentry("never").await;
    let seen: Vec<(u32, Timestamp)> = alerts
        .iter()
        .map(|a| (a.sequence, a.qualified_at))
        .collect();
    assert_eq!(seen, [(1, day(1.0))]);
}

#[tokio::test]
async fn records_of_another_definition_version_or_kind_are_skipped() {
    let active = test_definition("after_cooldown");
    let older = test_definition("never");
    assert_ne!(active.version, older.version);
    let (q, _db) = qualifier_with(&active).await;
    let store = q.store();
    let mut account = Account::new(&older, "a1");
    account.apply(
        &older,
        &[
            track("a1", "Project Created", day(0.1), "p1"),
            track("a1", "Project Created", day(0.2), "p2"),
            track("a1", "Dashboard Viewed", day(1.0), "d1"),
        ],
    );
    let r = account.save(store).await;
    assert_eq!(
        observe(&q, &r).await,
        RecordOutcome::Skipped(Skip::OtherDefinition {
            state: older.version.clone(),
            active: active.version.clone(),
        })
    );
    assert!(store.alerts(&tenant(), "a1").await.unwrap().is_empty());
    assert_eq!(
        store.load_lifecycle(&tenant(), "a1").await.unwrap().version,
        0
    );

    // The state's version becomes the active one while the qualifier still has the other
    // cached (30 s): the state is judged under the version it follows, not skipped.
    let (other, _db2) = qualifier_with(&older).await;
    other
        .store()
        .put_tenant(&tenant(), "wk_test", &active)
        .await
        .unwrap();
    let mut fresh = Account::new(&older, "a2");
    fresh.apply(&older, &[track("a2", "Dashboard Viewed", day(1.0), "d2")]);
    let r2 = fresh.save(other.store()).await;
    assert!(matches!(
        observe(&other, &r2).await,
        RecordOutcome::Skipped(Skip::OtherDefinition { .. })
    ));
    other
        .store()
        .put_tenant(&tenant(), "wk_test", &older)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(
        matches!(observe(&other, &r2).await, RecordOutcome::Observed(_)),
        "judged under the version activated since the cache read the tenant"
    );

    // A user item, a removal and an index-only change are not observed either.
    let mut user = account_item("u1", &account.record, 1);
    user.insert(
        "kind".into(),
        aws_sdk_dynamodb::types::AttributeValue::S("user".into()),
    );
    assert_eq!(
        observe(&q, &stream_record(None, user, 1)).await,
        RecordOutcome::Skipped(Skip::NotAnAccount)
    );
    let mut removal = stream_record(None, account_item("a1", &account.record, 1), 1);
    removal.event_name = "REMOVE".into();
    assert_eq!(
        observe(&q, &removal).await,
        RecordOutcome::Skipped(Skip::Removed)
    );
    let item = account_item("a1", &account.record, 3);
    let mut moved = item.clone();
    moved.insert(
        "due_at".into(),
        aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
    );
    assert_eq!(
        observe(&q, &stream_record(Some(item), moved, 3)).await,
        RecordOutcome::Skipped(Skip::VersionUnchanged)
    );
    // An unreadable body is skipped (logged), not retried forever.
    let mut broken = account_item("a9", &account.record, 1);
    broken.insert(
        "body".into(),
        aws_sdk_dynamodb::types::AttributeValue::B(b"not deflate".to_vec().into()),
    );
    assert!(matches!(
        observe(&q, &stream_record(None, broken, 1)).await,
        RecordOutcome::Skipped(Skip::Malformed(_))
    ));
}

#[tokio::test]
async fn a_store_failure_reports_the_first_failed_record() {
    let definition = test_definition("after_cooldown");
    let (q, _db) = qualifier_with(&definition).await;
    let mut account = Account::new(&definition, "a1");
    account.apply(
        &definition,
        &[track("a1", "Project Created", day(0.1), "p1")],
    );
    let ok = account.save(q.store()).await;
    // A handler whose alerts table does not exist fails on every account record.
    let mut tables = q.store().tables().clone();
    tables.alerts = "no-such-table".into();
    let broken = Qualifier::new(pql_store::Store::new(q.store().client().clone(), tables));
    let second = stream_record(None, account_item("a2", &account.record, 1), 1);
    let response = broken
        .handle(batch(vec![ok.clone(), second]))
        .await
        .unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0], ok.change.sequence_number);
}

/// The pipeline and the backtest agree: per-event account states of a simulated history,
/// streamed in order through the handler, give exactly the Ledger's qualifications.
#[tokio::test]
async fn qualifications_match_the_ledger_on_a_simulated_history() {
    // The example definition, loosened so that a small history has PQLs and re-entries.
    let source = std::fs::read_to_string(root().join("examples/definition.toml"))
        .unwrap()
        .replace("hot = 60", "hot = 30")
        .replace("warm = 35", "warm = 20")
        .replace("require_fit = true", "require_fit = false")
        .replace("min_tier = \"hot\"", "min_tier = \"warm\"")
        .replace("cooldown_days = 30", "cooldown_days = 2");
    let definition = pql_engine::Definition::from_toml("loose.toml", &source).unwrap();
    let (q, _db) = qualifier_with(&definition).await;
    let sim = Simulation::new(SimConfig {
        accounts: 20,
        days: 10,
        start: Timestamp::parse("2026-01-05T00:00:00Z").unwrap(),
        seed: 7,
    });
    let mut ledger = Ledger::new(&definition);
    let mut expected = BTreeSet::new();
    let mut last: std::collections::HashMap<String, (AccountRecord, u64)> = Default::default();
    let mut records = Vec::new();
    for call in sim.events() {
        let Ok(event) = parse_call(call.to_string().as_bytes(), None, None) else {
            continue;
        };
        for qualification in ledger.ingest(&event) {
            expected.insert((
                qualification.account,
                qualification.qualification.at,
                qualification.qualification.sequence,
            ));
        }
        // Snapshot every account the event changed, as the activation function saves it.
        for (id, entry) in ledger.accounts() {
            let changed = last
                .get(id)
                .is_none_or(|(r, _)| r.clock != entry.clock || r.state != entry.state);
            if !changed {
                continue;
            }
            let record = AccountRecord {
                state: entry.state.clone(),
                clock: entry.clock,
                points: Vec::new(),
            };
            let version = last.get(id).map_or(1, |(_, v)| v + 1);
            let old = last.get(id).map(|(r, v)| account_item(id, r, *v));
            records.push(stream_record(
                old,
                account_item(id, &record, version),
                version,
            ));
            last.insert(id.to_owned(), (record, version));
        }
    }
    assert!(!expected.is_empty(), "the simulation should produce PQLs");
    for chunk in records.chunks(100) {
        let response = q.handle(batch(chunk.to_vec())).await.unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let mut actual = BTreeSet::new();
    for id in last.keys() {
        for alert in q.store().alerts(&tenant(), id).await.unwrap() {
            actual.insert((alert.account, alert.qualified_at, alert.sequence));
        }
        // And every lifecycle ends where the Ledger's does.
        let stored = q.store().load_lifecycle(&tenant(), id).await.unwrap();
        assert_eq!(
            stored.value.lifecycle,
            ledger.account(id).unwrap().lifecycle,
            "{id}"
        );
    }
    assert_eq!(actual, expected);
}
