//! Events that arrive after a new definition version was activated, before the re-evaluation
//! job reached their account, against DynamoDB Local: a state the new version can read is
//! mapped on the spot (nothing lost); one it cannot is kept under its own version and the
//! event applied there, then rebuilt by the job exactly as the backtest engine builds it; a
//! user state that cannot be merged into an account of another version queues the account
//! for a rebuild. No account is alerted twice.

mod common;

use common::*;
use pql_engine::{evaluate, Definition, Event, Timestamp};
use pql_store::alerts::{Observation, Observed};
use pql_store::reevaluation::RebuildCache;
use pql_store::testing::SecondMilestone::{Invited, Reported};
use pql_store::testing::TestDefinition;
use pql_store::{AccountRecord, RecordKind};

/// Creating a project (10) activates; PQL at hot needs an invitation (40) too.
fn v1() -> TestDefinition {
    TestDefinition::new("versions")
        .second(Invited)
        .activation(&["created"])
}

/// Same tracking as V1 (its states map): creating a project is enough and worth 40.
fn v2_same_tracking() -> TestDefinition {
    TestDefinition::new("versions: creators")
        .created_points(40)
        .second(Invited)
        .activation(&["created"])
        .pql("hot", &["created"])
}

/// Needs a milestone V1's states do not track.
fn v3_new_milestone() -> TestDefinition {
    TestDefinition::new("versions: reports").second(Reported)
}

fn track_in(m: &str, name: &str, account: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"track","messageId":"{m}","userId":"{account}-user","event":"{name}","timestamp":"{ts}","context":{{"groupId":"{account}"}}}}"#
    ))
}

fn track(m: &str, user: &str, name: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"track","messageId":"{m}","userId":"{user}","event":"{name}","timestamp":"{ts}"}}"#
    ))
}

fn group(m: &str, user: &str, account: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"group","messageId":"{m}","userId":"{user}","groupId":"{account}","timestamp":"{ts}","traits":{{"name":"{account} Inc"}}}}"#
    ))
}

fn v(source: &str) -> Definition {
    Definition::from_toml("definition.toml", source).unwrap()
}

/// Pushes and activates the version and starts its re-evaluation job, as the admin API does.
async fn activate(env: &Env, definition: &Definition, at: Timestamp) {
    env.store
        .push_definition(&env.tenant, definition, "ana", "test", at)
        .await
        .unwrap();
    let activated = env
        .store
        .activate_definition(&env.tenant, &definition.version, "ana", at)
        .await
        .unwrap();
    env.store
        .start_reevaluation(
            &env.tenant,
            &activated.active,
            activated.previous.as_deref(),
            "activate",
            at,
        )
        .await
        .unwrap();
}

/// What the qualify function does with the account's latest record version.
async fn observe(env: &Env, definition: &Definition, account: &str) -> Observed {
    let stored = env
        .store
        .load_record::<AccountRecord>(&env.tenant, RecordKind::Account, account)
        .await
        .unwrap()
        .unwrap();
    env.store
        .observe_account(
            definition,
            &env.tenant,
            account,
            &stored.value,
            Observation::event(stored.version, stored.value.clock),
        )
        .await
        .unwrap()
}

async fn alerts(env: &Env, account: &str) -> usize {
    env.store.alerts(&env.tenant, account).await.unwrap().len()
}

/// Runs chunks of `size` until nothing is left; returns the chunks run.
async fn run_job(env: &Env, size: i32, now: Timestamp) -> usize {
    let mut cache = RebuildCache::default();
    let mut chunks = 0;
    while let Some(report) = env
        .store
        .reevaluate_chunk(&env.tenant, size, now, &mut cache)
        .await
        .unwrap()
    {
        assert!(!report.lost_race);
        chunks += 1;
        assert!(chunks < 100, "the job does not finish");
    }
    chunks
}

#[tokio::test]
async fn an_event_after_a_mappable_activation_maps_the_state_and_keeps_its_history() {
    let v1 = v(&v1().toml());
    let v2 = v(&v2_same_tracking().toml());
    let mut env = Env::with_definition(v1.clone()).await;
    let before = vec![
        track_in("i1", "Project Created", "initech", "2026-01-05T09:00:00Z"),
        track_in("i2", "Teammate Invited", "initech", "2026-01-05T10:00:00Z"),
        track_in("g1", "Project Created", "globex", "2026-01-05T11:00:00Z"),
    ];
    // An instance that keeps V1 cached as the active version (for 30 s) after V2 is active.
    let cached_v1 = env.activation();
    process_ok(&cached_v1, env.batch(&before).await).await;
    assert!(matches!(
        observe(&env, &v1, "initech").await,
        Observed::Qualified(_)
    ));
    assert!(!matches!(
        observe(&env, &v1, "globex").await,
        Observed::Qualified(_)
    ));

    activate(&env, &v2, at("2026-01-06T00:00:00Z")).await;
    // Before the job runs, an event for globex (a fresh instance: the new active version).
    let later = track_in("g2", "Dashboard Viewed", "globex", "2026-01-06T10:00:00Z");
    process_ok(
        &env.activation(),
        env.batch(std::slice::from_ref(&later)).await,
    )
    .await;

    let mut all = before.clone();
    all.push(later);
    let ledger = ledger_of(&v2, &all);
    let now = at("2026-01-07T00:00:00Z");
    let globex = env.account("globex").await.unwrap();
    assert!(globex.state.follows(&v2), "mapped on the spot");
    assert_eq!(
        globex.state,
        ledger.account("globex").unwrap().state,
        "the project created under V1 is kept"
    );
    assert_eq!(globex.state.first_seen, Some(at("2026-01-05T11:00:00Z")));
    let decision = evaluate(&v2, &globex.state, now);
    assert_eq!(decision, ledger.decide("globex", now).unwrap());
    assert!(decision.qualifies, "{decision:?}");
    // The qualify function observes the mapped state: globex qualifies under V2, once.
    assert!(matches!(
        observe(&env, &v2, "globex").await,
        Observed::Qualified(_)
    ));

    // The job keeps the mapped state as it is, maps initech's, alerts nobody again.
    run_job(&env, 1, now).await;
    let job = env.store.reevaluation(&env.tenant).await.unwrap().unwrap();
    let job = job.value;
    assert!(job.finished(), "{job:?}");
    assert_eq!(
        (job.mapped, job.rebuilt, job.qualified, job.failed),
        (2, 0, 0, 0),
        "{job:?}"
    );
    env.definition = v2.clone();
    env.assert_matches_ledger(&ledger, now, true).await;
    assert_eq!(alerts(&env, "globex").await, 1);
    assert_eq!(alerts(&env, "initech").await, 1);

    // The instance that still has V1 cached gets an event for initech (now under V2): V2's
    // states map to V1 too, but a state is never sent back to the version it replaced.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stale = track_in("i3", "Dashboard Viewed", "initech", "2026-01-06T12:00:00Z");
    process_ok(&cached_v1, env.batch(std::slice::from_ref(&stale)).await).await;
    all.push(stale);
    let initech = env.account("initech").await.unwrap();
    assert!(
        initech.state.follows(&v2),
        "{}",
        initech.state.definition_version
    );
    env.assert_matches_ledger(&ledger_of(&v2, &all), now, true)
        .await;
}

#[tokio::test]
async fn an_event_after_an_unmappable_activation_is_kept_under_its_version_then_rebuilt() {
    let v1 = v(&v1().toml());
    let v3 = v(&v3_new_milestone().toml());
    let mut env = Env::with_definition(v1.clone()).await;
    let before = vec![
        track_in("i1", "Project Created", "initech", "2026-01-05T09:00:00Z"),
        track_in("i2", "Teammate Invited", "initech", "2026-01-05T10:00:00Z"),
        track_in("g1", "Project Created", "globex", "2026-01-05T11:00:00Z"),
        track_in("u1", "Project Created", "umbrella", "2026-01-05T12:00:00Z"),
    ];
    process_ok(&env.activation(), env.batch(&before).await).await;
    for account in ["initech", "globex", "umbrella"] {
        observe(&env, &v1, account).await;
    }
    assert_eq!(alerts(&env, "initech").await, 1);

    activate(&env, &v3, at("2026-01-06T00:00:00Z")).await;
    let activation = env.activation();
    let mut all = before.clone();
    // Globex views a report before the job runs: V1 does not track reports, so the state
    // stays under V1 (the event applied there) for the job to rebuild.
    let report = track_in("g2", "Report Viewed", "globex", "2026-01-06T10:00:00Z");
    let version = env.account_version("globex").await;
    process_ok(&activation, env.batch(std::slice::from_ref(&report)).await).await;
    all.push(report);
    let globex = env.account("globex").await.unwrap();
    assert!(globex.state.follows(&v1), "kept under its own version");
    assert_eq!(env.account_version("globex").await, version + 1);
    assert_eq!(
        globex.state,
        ledger_of(&v1, &all).account("globex").unwrap().state,
        "the event applied under V1, nothing lost"
    );

    // The job's first account: its raw events are scanned. Then an account it has not
    // reached yet gets an event (under V1) before the job reaches it: the job must not
    // replace that state with a rebuild from the earlier scan.
    let now = at("2026-01-07T00:00:00Z");
    let mut cache = RebuildCache::default();
    let mut visited = Vec::new();
    while visited.is_empty() {
        let chunk = env
            .store
            .reevaluate_chunk(&env.tenant, 1, now, &mut cache)
            .await
            .unwrap()
            .expect("the job runs");
        assert!(!chunk.finished, "three accounts to visit");
        for account in ["initech", "globex", "umbrella"] {
            if env.account(account).await.unwrap().state.follows(&v3) {
                visited.push(account);
            }
        }
    }
    let next = ["umbrella", "globex", "initech"]
        .into_iter()
        .find(|a| !visited.contains(a))
        .unwrap();
    let between = track_in("late", "Report Viewed", next, "2026-01-06T20:00:00Z");
    process_ok(&activation, env.batch(std::slice::from_ref(&between)).await).await;
    all.push(between);
    assert!(env.account(next).await.unwrap().state.follows(&v1));
    while let Some(chunk) = env
        .store
        .reevaluate_chunk(&env.tenant, 1, now, &mut cache)
        .await
        .unwrap()
    {
        assert!(!chunk.lost_race);
    }

    let job = env.store.reevaluation(&env.tenant).await.unwrap().unwrap();
    let job = job.value;
    assert!(job.finished(), "{job:?}");
    assert_eq!((job.rebuilt, job.failed), (3, 0), "{job:?}");
    // Exactly what a backtest of every event under V3 gives.
    let ledger = ledger_of(&v3, &all);
    env.definition = v3.clone();
    env.assert_matches_ledger(&ledger, now, true).await;
    // Globex (created + reported) qualifies: one alert, by the job. Initech was alerted
    // under V1: never again, whatever V3 says.
    assert_eq!(alerts(&env, "globex").await, 1);
    assert_eq!(alerts(&env, "initech").await, 1);
    assert_eq!(
        alerts(&env, "umbrella").await,
        usize::from(next == "umbrella"),
        "umbrella qualifies when the late report was its"
    );
}

#[tokio::test]
async fn a_user_state_of_an_unmappable_version_queues_its_new_account_for_a_rebuild() {
    let v1 = v(&v1().toml());
    let v3 = v(&v3_new_milestone().toml());
    let mut env = Env::with_definition(v1.clone()).await;
    // Activity before the user joins any account: kept on the user record, under V1.
    let before = vec![
        track("p1", "u1", "Project Created", "2026-01-05T09:00:00Z"),
        track("r1", "u1", "Report Viewed", "2026-01-05T10:00:00Z"),
    ];
    process_ok(&env.activation(), env.batch(&before).await).await;
    activate(&env, &v3, at("2026-01-06T00:00:00Z")).await;
    let now = at("2026-01-07T00:00:00Z");
    run_job(&env, 10, now).await; // No account yet: the job visits none.
    assert!(env.store.tenants_reevaluating().await.unwrap().is_empty());

    // The user joins a new account: its state (V1, which does not track reports) cannot be
    // merged into the account's (V3). Nothing is merged; the account is queued.
    let join = group("j1", "u1", "hooli", "2026-01-06T09:00:00Z");
    process_ok(
        &env.activation(),
        env.batch(std::slice::from_ref(&join)).await,
    )
    .await;
    let hooli = env.account("hooli").await.unwrap();
    assert!(hooli.state.follows(&v3));
    assert_eq!(hooli.state.first_seen, Some(join.timestamp), "not merged");
    assert!(env.user("u1").await.unwrap().state.follows(&v1));
    assert_eq!(
        env.store.queued_rebuilds(&env.tenant).await.unwrap(),
        ["hooli"]
    );
    assert_eq!(
        env.store.tenants_reevaluating().await.unwrap(),
        [env.tenant.clone()]
    );

    // The sweep runs the queued rebuild: the user's activity counts for the account, as
    // the backtest counts it, and the account qualifies once.
    run_job(&env, 10, now).await;
    assert!(env
        .store
        .queued_rebuilds(&env.tenant)
        .await
        .unwrap()
        .is_empty());
    assert!(env.store.tenants_reevaluating().await.unwrap().is_empty());
    let mut all = before.clone();
    all.push(join);
    env.definition = v3.clone();
    env.assert_matches_ledger(&ledger_of(&v3, &all), now, true)
        .await;
    assert_eq!(alerts(&env, "hooli").await, 1);
    // Nothing more to run; no second alert.
    assert_eq!(run_job(&env, 10, now).await, 0);
    assert_eq!(alerts(&env, "hooli").await, 1);
}
