//! Shadow mode in the qualify function, against DynamoDB Local: a shadowed version is judged
//! beside the active one on each account change and stored, never alerting.

mod common;

use common::*;
use pql_engine::{Definition, Stage, Timestamp};
use pql_qualify::Qualifier;
use pql_store::shadow::{shadow_report, ShadowSetting};

/// The test definition with a lower bar: one project and any activity make a hot PQL.
fn lenient() -> Definition {
    let source = r#"
name = "qualify tests, lenient"

[[milestone]]
name = "created_projects"
event = "Project Created"
count_at_least = 2
points = 50

[[milestone]]
name = "habit"
any = true
distinct_days_at_least = 2
in_last_days = 7
points = 30

[[gate]]
name = "already_paying"
when = { account_trait = "plan", in = ["pro"] }

[tiers]
warm = 25
hot = 50

[activation]
milestones = ["created_projects"]

[pql]
min_tier = "hot"
milestones = ["created_projects"]
cooldown_days = 10
reentry = "never"
"#;
    Definition::from_toml("lenient.toml", source).unwrap()
}

#[tokio::test]
async fn a_shadowed_version_is_recorded_beside_the_active_one_and_never_alerts() {
    let active = test_definition("never");
    let shadow = lenient();
    let (store, _db) = fresh_store().await;
    store.put_tenant(&tenant(), "wk", &active).await.unwrap();
    store
        .push_definition(&tenant(), &shadow, "ana", "lenient", day(0.0))
        .await
        .unwrap();
    let qualifier = Qualifier::new(store.clone());

    // Before shadowing: nothing recorded.
    let mut a = Account::new(&active, "a1");
    a.apply(&active, &[track("a1", "Project Created", day(0.1), "p1")]);
    let record = a.save(&store).await;
    qualifier.handle(batch(vec![record])).await.unwrap();
    let (page, _) = store
        .shadow_decisions(&tenant(), &shadow.version, None, 100)
        .await
        .unwrap();
    assert!(page.items.is_empty());

    store
        .set_shadow(
            &tenant(),
            &ShadowSetting {
                version: shadow.version.clone(),
                author: "ana".into(),
                started_at: Timestamp::now(),
            },
        )
        .await
        .unwrap();
    // A fresh instance (the shadow setting is cached 30 s per instance).
    let qualifier = Qualifier::new(store.clone());
    // Two projects: activated under the active version (no habit yet), a hot PQL under the
    // shadow (two projects are enough there).
    a.apply(&active, &[track("a1", "Project Created", day(0.2), "p2")]);
    let record = a.save(&store).await;
    qualifier.handle(batch(vec![record])).await.unwrap();
    let mut b = Account::new(&active, "b1");
    b.apply(
        &active,
        &[track("b1", "Dashboard Viewed", day(0.3), "b-d1")],
    );
    let record = b.save(&store).await;
    qualifier.handle(batch(vec![record])).await.unwrap();

    let (page, _) = store
        .shadow_decisions(&tenant(), &shadow.version, None, 100)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let a1 = page.items.iter().find(|d| d.account == "a1").unwrap();
    assert_eq!(a1.record_version, a.version);
    assert_eq!(a1.at, day(0.2));
    assert_eq!(a1.active.stage(), Stage::Activated);
    assert_eq!(a1.shadow.as_ref().unwrap().stage(), Stage::Pql);
    // The shadow never alerts: the lifecycle follows the active version only.
    assert!(store.alerts(&tenant(), "a1").await.unwrap().is_empty());
    let lifecycle = store.load_lifecycle(&tenant(), "a1").await.unwrap().value;
    assert_eq!(lifecycle.lifecycle.stage, Stage::Activated);

    let report = shadow_report(&shadow.version, &page.items);
    assert_eq!(report.compared, 2);
    assert_eq!(report.unchanged, 1, "b1 is signed up under both");
    assert_eq!(report.changes.len(), 1);
    assert_eq!(report.changes[0].account, "a1");
    assert_eq!(report.stages["pql"].entering, 1);

    // A redelivered older record does not overwrite a newer decision.
    let mut stale = a1.clone();
    stale.record_version -= 1;
    assert!(!store.put_shadow_decision(&tenant(), &stale).await.unwrap());
}
