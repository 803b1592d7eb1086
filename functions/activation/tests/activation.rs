//! The activation handler against DynamoDB Local: stream batches built by hand from events
//! stored as ingest stores them, checked against the in-memory `Ledger`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use pql_activation::{RetryPolicy, SaveHook};
use pql_engine::Event;
use pql_store::{AccountRecord, RecordKind};

fn group(m: &str, user: &str, account: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"group","messageId":"{m}","userId":"{user}","groupId":"{account}","timestamp":"{ts}","traits":{{"name":"{account} Inc","employees":50,"created_at":"2026-01-05T00:00:00Z"}}}}"#
    ))
}

fn track(m: &str, user: &str, name: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"track","messageId":"{m}","userId":"{user}","event":"{name}","timestamp":"{ts}"}}"#
    ))
}

fn track_in(m: &str, user: &str, name: &str, account: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"track","messageId":"{m}","userId":"{user}","event":"{name}","timestamp":"{ts}","context":{{"groupId":"{account}"}}}}"#
    ))
}

fn anonymous_page(m: &str, anonymous: &str, path: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"page","messageId":"{m}","anonymousId":"{anonymous}","name":"Pricing","timestamp":"{ts}","properties":{{"path":"{path}"}}}}"#
    ))
}

fn identify(m: &str, user: &str, anonymous: &str, ts: &str) -> Event {
    call(&format!(
        r#"{{"type":"identify","messageId":"{m}","userId":"{user}","anonymousId":"{anonymous}","timestamp":"{ts}","traits":{{"email":"{user}@example.org"}}}}"#
    ))
}

const PROJECTS: &str = "created_projects";

#[tokio::test]
async fn the_same_event_twice_and_a_redelivered_batch_count_once() {
    let mut env = Env::new().await;
    let activation = env.activation();
    let now = at("2026-01-10T00:00:00Z");
    let events = vec![
        group("g1", "u1", "acc-1", "2026-01-05T09:00:00Z"),
        track("p1", "u1", "Project Created", "2026-01-05T10:00:00Z"),
        track("p2", "u1", "Project Created", "2026-01-05T11:00:00Z"),
    ];
    // p2 delivered twice in the batch.
    let mut with_duplicate = events.clone();
    with_duplicate.push(events[2].clone());
    let batch = env.batch(&with_duplicate).await;
    let report = process_ok(&activation, batch.clone()).await;
    assert_eq!(report.total().events, 4);
    assert_eq!(env.progress("acc-1", PROJECTS, now).await, 2.0);
    let version = env.account_version("acc-1").await;

    // The whole batch again (the mapping retried it): nothing changes, nothing is written.
    let report = process_ok(&activation, batch).await;
    assert_eq!(report.total().account_writes, 0, "{report:?}");
    assert_eq!(report.total().user_writes, 0, "{report:?}");
    assert_eq!(report.total().write_units, 0.0);
    assert_eq!(env.account_version("acc-1").await, version);
    assert_eq!(env.progress("acc-1", PROJECTS, now).await, 2.0);

    // A third project completes the milestone, once.
    let third = track("p3", "u1", "Project Created", "2026-01-06T10:00:00Z");
    let batch = env.batch(&[third.clone(), third.clone()]).await;
    process_ok(&activation, batch).await;
    assert_eq!(env.progress("acc-1", PROJECTS, now).await, 3.0);
    let record = env.account("acc-1").await.unwrap();
    assert_eq!(record.clock, at("2026-01-06T10:00:00Z"));

    let mut all = events;
    all.push(third);
    env.assert_matches_ledger(&ledger_of(&env.definition, &all), now, true)
        .await;
}

#[tokio::test]
async fn activity_before_the_link_counts_once_the_link_arrives() {
    let mut env = Env::new().await;
    let activation = env.activation();
    let now = at("2026-01-10T00:00:00Z");
    let before = vec![
        anonymous_page("v1", "anon-7", "/pricing", "2026-01-05T08:00:00Z"),
        anonymous_page("v2", "anon-7", "/pricing/teams", "2026-01-05T08:05:00Z"),
        identify("i1", "u2", "anon-7", "2026-01-05T08:10:00Z"),
        track("p1", "u2", "Project Created", "2026-01-05T09:00:00Z"),
        track("p2", "u2", "Project Created", "2026-01-05T09:30:00Z"),
        anonymous_page("v3", "anon-7", "/pricing", "2026-01-05T09:40:00Z"),
    ];
    process_ok(&activation, env.batch(&before).await).await;
    assert!(
        env.account_ids().await.is_empty(),
        "no account before the link"
    );
    let user = env.user("u2").await.unwrap();
    assert_eq!(user.aliases, ["anon-7"]);
    assert!(user.accounts.is_empty());

    let link = vec![
        group("g2", "u2", "acc-2", "2026-01-05T10:00:00Z"),
        track("p3", "u2", "Project Created", "2026-01-05T11:00:00Z"),
    ];
    process_ok(&activation, env.batch(&link).await).await;
    assert_eq!(env.progress("acc-2", PROJECTS, now).await, 3.0);
    assert_eq!(env.progress("acc-2", "pricing_interest", now).await, 3.0);
    // Both identities list the account.
    assert_eq!(env.user("u2").await.unwrap().accounts, ["acc-2"]);
    assert_eq!(env.user("anon-7").await.unwrap().accounts, ["acc-2"]);

    let all: Vec<Event> = before.into_iter().chain(link).collect();
    env.assert_matches_ledger(&ledger_of(&env.definition, &all), now, true)
        .await;
}

#[tokio::test]
async fn a_join_after_the_link_brings_the_other_identitys_activity() {
    let mut env = Env::new().await;
    let activation = env.activation();
    let now = at("2026-01-10T00:00:00Z");
    let events = vec![
        group("g1", "u5", "acc-5", "2026-01-05T07:00:00Z"),
        anonymous_page("v1", "anon-5", "/pricing", "2026-01-05T08:00:00Z"),
        anonymous_page("v2", "anon-5", "/pricing", "2026-01-05T08:01:00Z"),
        call(
            r#"{"type":"alias","messageId":"al1","userId":"u5","previousId":"anon-5","timestamp":"2026-01-05T09:00:00Z"}"#,
        ),
        anonymous_page("v3", "anon-5", "/pricing", "2026-01-05T09:10:00Z"),
    ];
    process_ok(&activation, env.batch(&events).await).await;
    assert_eq!(env.progress("acc-5", "pricing_interest", now).await, 3.0);
    env.assert_matches_ledger(&ledger_of(&env.definition, &events), now, true)
        .await;
}

#[tokio::test]
async fn an_event_naming_its_account_counts_only_there() {
    let mut env = Env::new().await;
    let activation = env.activation();
    let now = at("2026-01-10T00:00:00Z");
    let events = vec![
        group("g1", "u3", "acc-a", "2026-01-05T08:00:00Z"),
        group("g2", "u3", "acc-b", "2026-01-05T08:01:00Z"),
        // Names acc-b: acc-b only, and not the user's own activity.
        track_in(
            "p1",
            "u3",
            "Project Created",
            "acc-b",
            "2026-01-05T09:00:00Z",
        ),
        // Names no account: both accounts of the user (a consultant in two workspaces).
        track("p2", "u3", "Project Created", "2026-01-05T09:10:00Z"),
    ];
    process_ok(&activation, env.batch(&events).await).await;
    assert_eq!(env.progress("acc-a", PROJECTS, now).await, 1.0);
    assert_eq!(env.progress("acc-b", PROJECTS, now).await, 2.0);
    // A later account of the user gets the unattributed project only.
    let later = group("g3", "u3", "acc-c", "2026-01-05T10:00:00Z");
    process_ok(&activation, env.batch(std::slice::from_ref(&later)).await).await;
    assert_eq!(env.progress("acc-c", PROJECTS, now).await, 1.0);

    let mut all = events;
    all.push(later);
    env.assert_matches_ledger(&ledger_of(&env.definition, &all), now, true)
        .await;
}

/// Many users of two accounts, joins, links and activity, in an order where links come after
/// activity; shuffled deterministically.
fn busy_history() -> Vec<Event> {
    let mut events = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        (
            format!("m{n}"),
            format!("2026-01-05T{:02}:{:02}:00Z", 8 + n / 60, n % 60),
        )
    };
    for u in 0..6 {
        let user = format!("u{u}");
        let anon = format!("anon-{u}");
        let account = if u % 3 == 0 { "acc-y" } else { "acc-x" };
        let (m, ts) = next();
        events.push(anonymous_page(&m, &anon, "/pricing", &ts));
        for name in ["Project Created", "Teammate Invited", "Dashboard Viewed"] {
            let (m, ts) = next();
            events.push(track(&m, &user, name, &ts));
        }
        let (m, ts) = next();
        events.push(identify(&m, &user, &anon, &ts));
        let (m, ts) = next();
        events.push(group(&m, &user, account, &ts));
        let (m, ts) = next();
        events.push(track_in(&m, &user, "Report Shared", "acc-x", &ts));
        let (m, ts) = next();
        events.push(anonymous_page(&m, &anon, "/pricing/enterprise", &ts));
    }
    // A user in both accounts.
    let (m, ts) = next();
    events.push(group(&m, "u1", "acc-y", &ts));
    let (m, ts) = next();
    events.push(track(&m, "u1", "Integration Connected", &ts));
    // Deterministic shuffle.
    let len = events.len();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..len).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        events.swap(i, (state % (i as u64 + 1)) as usize);
    }
    events
}

#[tokio::test]
async fn concurrent_handlers_give_the_state_of_a_sequential_run() {
    let mut env = Env::new().await;
    let now = at("2026-01-12T00:00:00Z");
    let events = busy_history();
    let third = events.len() / 3;
    // Two Lambda instances on overlapping batches (the middle third is in both).
    let first = env.batch(&events[..2 * third]).await;
    let mut second_events = events[third..].to_vec();
    second_events.reverse();
    let second = env.batch(&second_events).await;
    let (a, b) = (
        env.activation().with_retry(RetryPolicy {
            max_attempts: 200,
            ..RetryPolicy::default()
        }),
        env.activation().with_retry(RetryPolicy {
            max_attempts: 200,
            ..RetryPolicy::default()
        }),
    );
    let (ra, rb) = tokio::join!(process_ok(&a, first), process_ok(&b, second));
    eprintln!(
        "concurrent run: {} + {} conflicts retried",
        ra.total().conflicts,
        rb.total().conflicts
    );
    // The state does not depend on the order; the clocks (the latest event time that changed
    // the account) may, so only states and decisions are compared.
    env.assert_matches_ledger(&ledger_of(&env.definition, &events), now, false)
        .await;
    // And in time order, the clocks too: a sequential run of the same events equals the ledger.
    let mut sorted = events.clone();
    sorted.sort_by_key(|e| e.timestamp);
    let mut fresh = Env::new().await;
    let batch = fresh.batch(&sorted).await;
    process_ok(&fresh.activation(), batch).await;
    fresh
        .assert_matches_ledger(&ledger_of(&fresh.definition, &sorted), now, true)
        .await;
}

#[tokio::test]
async fn every_event_in_its_own_concurrent_invocation_gives_the_sequential_state() {
    // Events are separate items of the events table, so they sit in different stream shards
    // and are processed in parallel, in any order: the worst case for attribution races.
    let mut env = Env::new().await;
    let now = at("2026-01-12T00:00:00Z");
    let events = busy_history();
    let mut batches = Vec::new();
    for event in &events {
        batches.push(env.batch(std::slice::from_ref(event)).await);
    }
    let activation = Arc::new(env.activation().with_retry(RetryPolicy {
        max_attempts: 500,
        ..RetryPolicy::default()
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for batch in batches {
        let activation = activation.clone();
        tasks.spawn(async move { process_ok(&activation, batch).await.total() });
    }
    let mut conflicts = 0;
    while let Some(usage) = tasks.join_next().await {
        conflicts += usage.unwrap().conflicts;
    }
    eprintln!(
        "{} concurrent invocations: {conflicts} conflicts retried",
        events.len()
    );
    env.assert_matches_ledger(&ledger_of(&env.definition, &events), now, false)
        .await;
}

#[tokio::test]
async fn a_record_that_cannot_be_decoded_fails_there_and_earlier_records_stay_applied() {
    let mut env = Env::new().await;
    let activation = env.activation();
    let now = at("2026-01-10T00:00:00Z");
    let good = [
        group("g1", "u1", "acc-1", "2026-01-05T09:00:00Z"),
        track("p1", "u1", "Project Created", "2026-01-05T10:00:00Z"),
    ];
    let mut records = Vec::new();
    for e in &good {
        records.push(env.record(e).await);
    }
    // A TTL deletion is not an event: ignored.
    let mut removal = records[1].clone();
    removal.event_name = "REMOVE".into();
    records.push(removal);
    let mut bad_item = std::collections::HashMap::new();
    bad_item.insert("pk".to_owned(), AttributeValue::S("acme#bad".into()));
    bad_item.insert("tenant".to_owned(), AttributeValue::S("acme".into()));
    bad_item.insert("event".to_owned(), AttributeValue::S("{not json".into()));
    let bad = env.record_from_item(bad_item);
    let bad_sequence = bad.change.sequence_number.clone().unwrap();
    records.push(bad);
    let after = track("p2", "u1", "Project Created", "2026-01-05T11:00:00Z");
    records.push(env.record(&after).await);

    let report = activation.process(stream(records)).await;
    let failures: Vec<Option<String>> = report
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failures, [Some(bad_sequence)]);
    assert_eq!(report.ignored, 1);
    assert_eq!(report.total().events, 2);
    assert_eq!(
        env.progress("acc-1", PROJECTS, now).await,
        1.0,
        "the record after the failure is left for the redelivery"
    );

    // A tenant without a definition fails its record too.
    let mut orphan = std::collections::HashMap::new();
    orphan.insert("pk".to_owned(), AttributeValue::S("nobody#x".into()));
    orphan.insert("tenant".to_owned(), AttributeValue::S("nobody".into()));
    orphan.insert(
        "event".to_owned(),
        AttributeValue::S(serde_json::to_string(&after).unwrap()),
    );
    let orphan = env.record_from_item(orphan);
    let report = activation.process(stream(vec![orphan])).await;
    assert_eq!(report.response.batch_item_failures.len(), 1);
}

/// A hook that writes the account record (same content, next version) before the handler's
/// own write, `times` times: the handler's conditional write loses each time.
fn interfere(env: &Env, account: &'static str, times: u32, count: Arc<AtomicU32>) -> SaveHook {
    let store = env.store.clone();
    let tenant = env.tenant.clone();
    Arc::new(move |kind, id| {
        let store = store.clone();
        let tenant = tenant.clone();
        let count = count.clone();
        Box::pin(async move {
            if kind != RecordKind::Account || id != account {
                return;
            }
            if count.fetch_add(1, Ordering::SeqCst) >= times {
                return;
            }
            let current = store
                .load_record::<AccountRecord>(&tenant, RecordKind::Account, &id)
                .await
                .unwrap();
            if let Some(current) = current {
                store
                    .save_record(
                        &tenant,
                        RecordKind::Account,
                        &id,
                        &current.value,
                        current.version,
                    )
                    .await
                    .unwrap()
                    .unwrap();
            }
        })
    })
}

#[tokio::test]
async fn conflicts_are_retried_and_give_up_after_the_bound() {
    let mut env = Env::new().await;
    let now = at("2026-01-10T00:00:00Z");
    let first = [group("g1", "u1", "acc-1", "2026-01-05T09:00:00Z")];
    process_ok(&env.activation(), env.batch(&first).await).await;

    // Two lost races, then the write goes through.
    let count = Arc::new(AtomicU32::new(0));
    let activation = env
        .activation()
        .with_save_hook(interfere(&env, "acc-1", 2, count.clone()));
    let project = track("p1", "u1", "Project Created", "2026-01-05T10:00:00Z");
    let report = process_ok(&activation, env.batch(&[project]).await).await;
    assert_eq!(report.total().conflicts, 2);
    assert_eq!(report.total().account_writes, 1);
    assert_eq!(env.progress("acc-1", PROJECTS, now).await, 1.0);

    // Always losing: the record fails after the bound.
    let count = Arc::new(AtomicU32::new(0));
    let activation = env
        .activation()
        .with_retry(RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
        .with_save_hook(interfere(&env, "acc-1", u32::MAX, count.clone()));
    let project = track("p2", "u1", "Project Created", "2026-01-05T11:00:00Z");
    let batch = env.batch(&[project]).await;
    let sequence = batch.records[0].change.sequence_number.clone();
    let report = activation.process(batch).await;
    assert_eq!(report.failed, sequence);
    assert_eq!(report.total().conflicts, 4);
    assert_eq!(count.load(Ordering::SeqCst), 4);
    assert_eq!(env.progress("acc-1", PROJECTS, now).await, 1.0);
}

#[test]
fn backoff_grows_with_jitter_and_is_capped() {
    let policy = RetryPolicy::default();
    for attempt in 1..40 {
        let d = policy.backoff(attempt);
        let full = policy
            .base_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(policy.max_delay);
        assert!(d >= full / 2 && d <= full, "{attempt}: {d:?} of {full:?}");
    }
}
