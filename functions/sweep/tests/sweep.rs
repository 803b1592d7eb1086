//! The sweep against DynamoDB Local: account items written with the due-index attributes as
//! the activation function writes them, found through the `due` index, observed at wall-clock
//! time through the same lifecycle and outbox code as the qualify function.

#[path = "../../qualify/tests/common/mod.rs"]
mod common;

use common::*;
use pql_engine::{Definition, Stage, Timestamp};
use pql_qualify::{Qualifier, RecordOutcome, Skip};
use pql_store::alerts::Trigger;
use pql_store::sweep::{next_due, sweep_shard};
use pql_store::Store;
use pql_sweep::{SweepReport, Sweeper};

/// Saves the account and sets its due-index attributes, as the activation function does.
async fn save_with_due(
    store: &Store,
    definition: &Definition,
    account: &mut Account,
) -> Option<Timestamp> {
    account.save(store).await;
    let due = next_due(definition, &account.record.state, account.record.clock);
    store
        .set_due(&tenant(), &account.id, account.version, due)
        .await
        .unwrap()
        .unwrap();
    due
}

async fn indexed(store: &Store, account: &str) -> bool {
    store
        .due_accounts(&sweep_shard(&tenant(), account), Timestamp::MAX, 100)
        .await
        .unwrap()
        .iter()
        .any(|d| d.account == account)
}

#[tokio::test]
async fn a_closing_window_is_seen_by_the_sweep_and_recorded_as_a_drop_out() {
    let definition = test_definition("after_cooldown");
    let (store, _db) = fresh_store().await;
    store
        .put_tenant(&tenant(), "wk", &definition)
        .await
        .unwrap();
    let qualifier = Qualifier::new(store.clone());
    let sweeper = Sweeper::new(store.clone());

    // Qualifies on day 1 (the qualify function sees the save).
    let mut a1 = Account::new(&definition, "a1");
    a1.apply(
        &definition,
        &[
            track("a1", "Project Created", day(0.1), "p1"),
            track("a1", "Project Created", day(0.2), "p2"),
            track("a1", "Dashboard Viewed", day(1.0), "d1"),
        ],
    );
    let record = a1.save(&store).await;
    qualifier.handle(batch(vec![record])).await.unwrap();
    // The habit (2 distinct days in the last 7) holds until its older day leaves the window.
    let due = next_due(&definition, &a1.record.state, a1.record.clock);
    assert_eq!(due, Some(day(0.2).plus_days(7.0)));
    store
        .set_due(&tenant(), "a1", a1.version, due)
        .await
        .unwrap()
        .unwrap();

    // Another account, due later.
    let mut b1 = Account::new(&definition, "b1");
    b1.apply(
        &definition,
        &[
            track("b1", "Dashboard Viewed", day(5.0), "b-d1"),
            track("b1", "Dashboard Viewed", day(6.0), "b-d2"),
        ],
    );
    assert_eq!(
        save_with_due(&store, &definition, &mut b1).await,
        Some(day(12.0))
    );

    // Nothing is due yet.
    let report = sweeper.sweep(day(3.0)).await.unwrap();
    assert_eq!(report.due, 0, "{report:?}");

    let report = sweeper.sweep(day(7.5)).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            now: day(7.5).to_rfc3339(),
            due: 1,
            changed: 1,
            qualified: 0,
            settled: 1,
            failed: 0,
            reevaluated: 0,
            reevaluation_qualified: 0,
        }
    );
    let lifecycle = store
        .load_lifecycle(&tenant(), "a1")
        .await
        .unwrap()
        .value
        .lifecycle;
    assert_eq!(lifecycle.stage, Stage::Pql);
    assert!(lifecycle.dropped_out, "the drop-out is recorded");
    assert_eq!(store.alerts(&tenant(), "a1").await.unwrap().len(), 1);
    // Nothing more can change with time: out of the index. The other account stays.
    assert!(!indexed(&store, "a1").await);
    assert!(indexed(&store, "b1").await);

    // A second sweep finds nothing more to do.
    let report = sweeper.sweep(day(7.5)).await.unwrap();
    assert_eq!(report.due, 0);

    // The sweep's index update reaches the qualify function as a change that kept the
    // version: not observed again.
    let current = store
        .client()
        .get_item()
        .table_name(&store.tables().state)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("acme#account#a1".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!current.contains_key("due_at"));
    let change = stream_record(a1.item.clone(), current, a1.version);
    assert_eq!(
        qualifier.process(&change).await.unwrap(),
        RecordOutcome::Skipped(Skip::VersionUnchanged)
    );
}

/// A gate on a sliding milestone ("3 support tickets in the last 3 days") holds the account
/// back; when it lifts with time alone, the sweep qualifies the account: one alert.
#[tokio::test]
async fn the_sweep_qualifies_an_account_whose_gate_expires() {
    let definition = Definition::from_toml(
        "gate.toml",
        r#"
name = "sweep gate"

[[milestone]]
name = "created_projects"
event = "Project Created"
count_at_least = 2
points = 40

[[milestone]]
name = "support_storm"
event = "Support Ticket Opened"
count_at_least = 2
in_last_days = 3

[[gate]]
name = "unhappy"
milestone = "support_storm"

[tiers]
warm = 20
hot = 40

[pql]
min_tier = "warm"
milestones = ["created_projects"]
"#,
    )
    .unwrap();
    let (store, _db) = fresh_store().await;
    store
        .put_tenant(&tenant(), "wk", &definition)
        .await
        .unwrap();
    let qualifier = Qualifier::new(store.clone());
    let sweeper = Sweeper::new(store.clone()).with_page_limit(5);

    let mut a = Account::new(&definition, "a1");
    a.apply(
        &definition,
        &[
            track("a1", "Support Ticket Opened", day(0.0), "s1"),
            track("a1", "Support Ticket Opened", day(0.5), "s2"),
            track("a1", "Project Created", day(1.0), "p1"),
            track("a1", "Project Created", day(1.5), "p2"),
        ],
    );
    let due = save_with_due(&store, &definition, &mut a).await;
    assert_eq!(due, Some(day(3.0)));
    let stream = a.item.clone().unwrap();
    qualifier
        .handle(batch(vec![stream_record(None, stream, a.version)]))
        .await
        .unwrap();
    assert_eq!(
        store
            .load_lifecycle(&tenant(), "a1")
            .await
            .unwrap()
            .value
            .lifecycle
            .stage,
        Stage::Disqualified
    );

    let report = sweeper.sweep(day(3.0)).await.unwrap();
    assert_eq!(
        (report.due, report.qualified, report.failed),
        (1, 1, 0),
        "{report:?}"
    );
    let alerts = store.alerts(&tenant(), "a1").await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].trigger, Trigger::Sweep);
    assert_eq!(alerts[0].qualified_at, day(3.0));
    assert_eq!(alerts[0].decision["gates"][0]["holds"], false);
    // Swept again (say the index update was lost): still one alert.
    store
        .set_due(&tenant(), "a1", a.version, Some(day(3.0)))
        .await
        .unwrap()
        .unwrap();
    let report = sweeper.sweep(day(3.5)).await.unwrap();
    assert_eq!((report.due, report.qualified), (1, 0));
    assert_eq!(store.alerts(&tenant(), "a1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn accounts_of_another_definition_leave_the_index() {
    let active = test_definition("after_cooldown");
    let older = test_definition("never");
    let (store, _db) = fresh_store().await;
    store.put_tenant(&tenant(), "wk", &active).await.unwrap();
    let mut a = Account::new(&older, "a1");
    a.apply(
        &older,
        &[
            track("a1", "Dashboard Viewed", day(0.0), "d1"),
            track("a1", "Dashboard Viewed", day(1.0), "d2"),
        ],
    );
    assert!(save_with_due(&store, &older, &mut a).await.is_some());
    let report = Sweeper::new(store.clone()).sweep(day(30.0)).await.unwrap();
    assert_eq!((report.due, report.settled, report.changed), (1, 1, 0));
    assert!(!indexed(&store, "a1").await);
    assert_eq!(
        store.load_lifecycle(&tenant(), "a1").await.unwrap().version,
        0
    );
}

#[test]
fn decaying_scores_are_rechecked_daily_while_warm_or_hot() {
    let definition = Definition::from_toml(
        "decay.toml",
        r#"
name = "decay"

[scoring]
half_life_days = 7

[[scoring.event]]
event = "Report Shared"
points = 30
cap = 30

[[scoring.event]]
event = "Support Ticket Opened"
points = -10
cap = -10

[tiers]
warm = 20
hot = 50

[pql]
min_tier = "warm"
"#,
    )
    .unwrap();
    let mut a = Account::new(&definition, "a1");
    a.apply(&definition, &[track("a1", "Report Shared", day(0.0), "r1")]);
    // Warm (30): re-check tomorrow.
    assert_eq!(
        next_due(&definition, &a.record.state, day(0.0)),
        Some(day(1.0))
    );
    // After 10 days it is cold (11.2): nothing more can change.
    assert_eq!(next_due(&definition, &a.record.state, day(10.0)), None);
    // Negative points that still weigh may decay into a higher tier: re-check.
    let mut b = Account::new(&definition, "b1");
    b.apply(
        &definition,
        &[track("b1", "Support Ticket Opened", day(0.0), "t1")],
    );
    assert_eq!(
        next_due(&definition, &b.record.state, day(2.0)),
        Some(day(3.0))
    );
    assert_eq!(next_due(&definition, &b.record.state, day(60.0)), None);
    // Without decay nor sliding windows, nothing is ever due.
    let plain = test_definition("never");
    let mut c = Account::new(&plain, "c1");
    c.apply(&plain, &[track("c1", "Project Created", day(0.0), "p1")]);
    assert_eq!(next_due(&plain, &c.record.state, day(0.0)), None);
}

/// Work per invocation is bounded: at most `page_limit` accounts per shard, the longest
/// overdue first; the rest are left for the next runs.
#[tokio::test]
async fn each_sweep_takes_a_bounded_page_per_shard() {
    let definition = test_definition("after_cooldown");
    let (store, _db) = fresh_store().await;
    store
        .put_tenant(&tenant(), "wk", &definition)
        .await
        .unwrap();
    // Three accounts of one shard, due at different times.
    let shard = sweep_shard(&tenant(), "x0");
    let ids: Vec<String> = (0..)
        .map(|i| format!("x{i}"))
        .filter(|id| sweep_shard(&tenant(), id) == shard)
        .take(3)
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let mut a = Account::new(&definition, id);
        a.apply(
            &definition,
            &[
                track(id, "Dashboard Viewed", day(i as f64), &format!("{id}-1")),
                track(
                    id,
                    "Dashboard Viewed",
                    day(i as f64 + 1.0),
                    &format!("{id}-2"),
                ),
            ],
        );
        assert_eq!(
            save_with_due(&store, &definition, &mut a).await,
            Some(day(i as f64 + 7.0))
        );
    }
    let sweeper = Sweeper::new(store.clone()).with_page_limit(1);
    let mut order = Vec::new();
    for _ in 0..3 {
        let before: Vec<String> = store
            .due_accounts(&shard, day(30.0), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.account)
            .collect();
        let report = sweeper.sweep(day(30.0)).await.unwrap();
        assert_eq!((report.due, report.settled), (1, 1), "{report:?}");
        let after: Vec<String> = store
            .due_accounts(&shard, day(30.0), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.account)
            .collect();
        assert_eq!(after.len() + 1, before.len());
        order.push(before[0].clone());
    }
    assert_eq!(order, ids, "the longest overdue first");
    assert_eq!(sweeper.sweep(day(30.0)).await.unwrap().due, 0);
}

#[tokio::test]
async fn the_sweep_runs_reevaluation_jobs_in_chunks_and_qualify_skips_their_writes() {
    let never = test_definition("never");
    let after = test_definition("after_cooldown");
    let (store, _db) = fresh_store().await;
    store.put_tenant(&tenant(), "wk", &never).await.unwrap();
    let qualifier = Qualifier::new(store.clone());
    let mut items = Vec::new();
    for i in 0..5 {
        let id = format!("r{i}");
        let mut account = Account::new(&never, &id);
        account.apply(
            &never,
            &[track(&id, "Dashboard Viewed", day(1.0), &format!("{id}-d"))],
        );
        account.save(&store).await;
        items.push(account);
    }
    // The new version differs in the re-entry rule only: stored state is mapped.
    store
        .push_definition(&tenant(), &after, "ana", "re-entry", day(2.0))
        .await
        .unwrap();
    let activated = store
        .activate_definition(&tenant(), &after.version, "ana", day(2.0))
        .await
        .unwrap();
    store
        .start_reevaluation(
            &tenant(),
            &activated.active,
            activated.previous.as_deref(),
            "activate",
            day(2.0),
        )
        .await
        .unwrap();
    assert_eq!(store.tenants_reevaluating().await.unwrap(), vec![tenant()]);

    // Two accounts a chunk, four chunks a run: one sweep does it all.
    let sweeper = Sweeper::new(store.clone()).with_reevaluation_chunk(2);
    let report = sweeper.sweep(day(3.0)).await.unwrap();
    assert_eq!(report.reevaluated, 5, "{report:?}");
    let job = store.reevaluation(&tenant()).await.unwrap().unwrap().value;
    assert!(job.finished(), "{job:?}");
    assert_eq!(
        (job.done, job.total, job.mapped, job.chunks),
        (5, Some(5), 5, 3)
    );
    assert!(store.tenants_reevaluating().await.unwrap().is_empty());
    // Nothing left for the next sweep.
    assert_eq!(sweeper.sweep(day(3.0)).await.unwrap().reevaluated, 0);

    // The job's write reaches the qualify function: skipped (the job observed it itself).
    let account = &mut items[0];
    let stored = store
        .client()
        .get_item()
        .table_name(&store.tables().state)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("acme#account#r0".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let version: u64 = stored["version"].as_n().unwrap().parse().unwrap();
    assert_eq!(version, account.version + 1);
    let record = stream_record(account.item.take(), stored, version);
    let outcome = qualifier.process(&record).await.unwrap();
    assert_eq!(outcome, RecordOutcome::Skipped(Skip::Reevaluated));
}
