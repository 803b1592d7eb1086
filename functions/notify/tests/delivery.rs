//! The notify function against real local HTTP receivers (wiremock) and DynamoDB Local:
//! exactly once under redelivery and concurrency, 429 / 5xx / timeouts, parking and replay,
//! independent signature verification, the Slack and webhook bodies, routing, suppression,
//! re-alerting on escalation, e-mail to a directory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use pql_engine::definition::Tier;
use pql_engine::Timestamp;
use pql_notify::channels::{DirectoryMailer, Mailer, NoMailer};
use pql_notify::retry::RetryPolicy;
use pql_notify::{AlertOutcome, Notifier, Outcome, Settings};
use pql_notify_fn::NotifyHandler;
use pql_store::alerts::{Alert, LifecycleRecord, Trigger};
use pql_store::deliveries::{DeliveryKey, DeliveryState};
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SECRET: &str = "whsec_0123456789abcdef";

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        max_rate_limited: 10,
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
    }
}

fn notifier(store: &Store, mailer: Arc<dyn Mailer>) -> Arc<Notifier> {
    Arc::new(
        Notifier::new(store.clone(), mailer)
            .with_policy(fast_policy())
            .with_settings_ttl(Duration::ZERO),
    )
}

fn decision(tier: &str, score: f64) -> Value {
    json!({
        "definition_version": "v1abc",
        "evaluated_at": "2026-03-01T10:00:00Z",
        "stage": "pql",
        "tier": tier,
        "score": score,
        "qualifies": true,
        "activated": true,
        "signed_up_at": "2026-02-20T09:00:00Z",
        "milestones": [
            {"name": "created_projects", "met": true, "met_at": "2026-02-21T10:00:00Z", "by_user": "ana",
             "by_message": "m1", "progress": 3.0, "target": 3.0, "points": 20.0},
            {"name": "invited_team", "met": true, "met_at": "2026-02-22T11:30:00Z", "by_user": "bo",
             "by_message": "m2", "progress": 2.0, "target": 2.0, "points": 30.0},
            {"name": "viewed_pricing", "met": false, "met_at": null, "by_user": null,
             "by_message": null, "progress": 0.0, "target": 1.0, "points": 0.0}
        ],
        "fit": {"score": 20.0, "good": true, "facts": [
            {"name": "business_email", "matched": true, "points": 10.0},
            {"name": "company_size", "matched": false, "points": 0.0}
        ]},
        "gates": [],
        "reasons": ["created_projects met", "invited_team met"]
    })
}

fn alert(account: &str, sequence: u32, tier: Tier, score: f64) -> Alert {
    Alert {
        tenant: "acme".into(),
        account: account.into(),
        account_name: Some(format!("{account} Inc")),
        sequence,
        qualified_at: Timestamp::parse("2026-03-01T10:00:00Z").unwrap(),
        tier,
        score,
        definition_version: "v1abc".into(),
        decision: decision(tier.as_str(), score),
        trigger: Trigger::Event,
        created_at: Timestamp::parse("2026-03-01T10:00:01Z").unwrap(),
    }
}

/// Stores an account record with these traits and a few users' hits.
async fn put_account(store: &Store, account: &str, traits: Value) {
    let traits: serde_json::Map<String, Value> = traits
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!({"value": v, "at": "2026-02-20T09:00:00Z", "m": "g1"}),
            )
        })
        .collect();
    let hit = |user: &str, m: &str| json!({"at": "2026-02-21T10:00:00Z", "m": m, "u": user});
    let record: AccountRecord = serde_json::from_value(json!({
        "state": {
            "definition_version": "v1abc",
            "first_seen": "2026-02-20T09:00:00Z",
            "last_seen": "2026-02-22T11:30:00Z",
            "milestones": [[hit("ana", "m1"), hit("ana", "m3"), hit("bo", "m2")]],
            "scoring": [[hit("ana", "m4"), hit("cy", "m5")]],
            "user_facts": [],
            "traits": traits,
        },
        "clock": "2026-02-22T11:30:00Z",
    }))
    .unwrap();
    store
        .save_record(&tenant(), RecordKind::Account, account, &record, 0)
        .await
        .unwrap()
        .unwrap();
}

/// Writes the alert (with a lifecycle, as the qualify function does) and returns its stream
/// record, read back from the table as Lambda would receive it.
async fn put_alert(store: &Store, alert: &Alert) -> EventRecord {
    let t = tenant();
    let current = store.load_lifecycle(&t, &alert.account).await.unwrap();
    store
        .save_lifecycle(
            &t,
            &alert.account,
            &LifecycleRecord::default(),
            current.version,
            std::slice::from_ref(alert),
        )
        .await
        .unwrap()
        .unwrap();
    let item = store
        .client()
        .get_item()
        .table_name(&store.tables().alerts)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("acme#{}", alert.account)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::N(alert.sequence.to_string()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut record = EventRecord::default();
    record.event_name = "INSERT".into();
    record.event_id = format!("ev-{}-{}", alert.account, alert.sequence);
    record.change.sequence_number = Some(format!("{:020}", alert.sequence));
    record.change.new_image = item
        .into_iter()
        .map(|(k, v)| (k, serde_dynamo::AttributeValue::from(v)))
        .collect::<HashMap<_, _>>()
        .into();
    record
}

fn batch(records: Vec<EventRecord>) -> Event {
    let mut event = Event::default();
    event.records = records;
    event
}

async fn settings(store: &Store, toml: &str) {
    let settings = Settings::parse_toml("test.toml", toml).unwrap();
    store
        .put_notify_settings(&tenant(), &settings.to_json())
        .await
        .unwrap();
}

fn two_destinations(slack: &MockServer, hook: &MockServer) -> String {
    format!(
        r#"
link_template = "https://crm.example.com/accounts/{{account_id}}"
most_active_users = 2

[[destination]]
id = "sales-slack"
kind = "slack"
url = "{}/services/T0/B0/secret"
min_interval_ms = 0

[[destination]]
id = "crm"
kind = "webhook"
url = "{}/hooks/pql"
secret = "{SECRET}"

[default]
destinations = ["sales-slack", "crm"]
owner_trait = "owner_email"
"#,
        slack.uri(),
        hook.uri()
    )
}

async fn ok_server(route: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    server
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

fn outcomes(outcome: &AlertOutcome) -> Vec<(String, Outcome)> {
    match outcome {
        AlertOutcome::Routed { destinations, .. } => destinations.clone(),
        AlertOutcome::NoSettings => panic!("no settings"),
    }
}

/// HMAC-SHA256 written out from RFC 2104 on top of SHA-256: an implementation independent of
/// the signing code (and of the `hmac` crate it uses).
fn independent_hmac_sha256(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize(),
    )
}

/// What a receiver does: parse `t=...,v1=...`, check the window, recompute, compare.
fn receiver_verifies(header: &str, body: &[u8], now: i64) -> Result<(), String> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => return Err(format!("bad part {part}")),
        }
    }
    let t = t.ok_or("no t")?;
    if (now - t).abs() > 300 {
        return Err("outside the replay window".into());
    }
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let expected = independent_hmac_sha256(SECRET.as_bytes(), &message);
    if v1.contains(&expected) {
        Ok(())
    } else {
        Err("signature mismatch".into())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn each_receiver_gets_each_alert_exactly_once_under_redelivery_and_concurrency() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = ok_server("/services/T0/B0/secret").await;
    let hook = ok_server("/hooks/pql").await;
    settings(&store, &two_destinations(&slack, &hook)).await;
    let mut records = Vec::new();
    for i in 0..5 {
        let account = format!("acct{i}");
        put_account(&store, &account, json!({"owner_email": "ana@example.com"})).await;
        records.push(put_alert(&store, &alert(&account, 1, Tier::Hot, 80.0)).await);
    }

    // Eight consumers (separate instances, as two Lambda invocations of a redelivered batch
    // would be) on the same batch at the same time, then the batch redelivered twice more.
    let mut racing = Vec::new();
    for _ in 0..8 {
        let handler = NotifyHandler::new(notifier(&store, Arc::new(NoMailer)));
        let event = batch(records.clone());
        racing.push(tokio::spawn(async move { handler.handle(event).await }));
    }
    let mut reported = 0;
    for r in racing {
        reported += r.await.unwrap().batch_item_failures.len();
    }
    let handler = NotifyHandler::new(notifier(&store, Arc::new(NoMailer)));
    for _ in 0..2 {
        let response = handler.handle(batch(records.clone())).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
    }

    // Exactly one message per (alert, receiver).
    for server in [&slack, &hook] {
        let requests = received(server).await;
        assert_eq!(requests.len(), 5, "{} requests", requests.len());
        let mut keys: Vec<String> = requests
            .iter()
            .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 5);
    }
    // Losers of the race that found a claim in flight asked for a retry rather than dropping it.
    eprintln!("records reported for retry while another consumer sent: {reported}");
    for i in 0..5 {
        let states: Vec<DeliveryState> = store
            .alert_deliveries(&tenant(), &format!("acct{i}"), 1)
            .await
            .unwrap()
            .iter()
            .map(|d| d.state)
            .collect();
        assert_eq!(states, [DeliveryState::Delivered, DeliveryState::Delivered]);
    }
}

#[tokio::test]
async fn webhook_is_signed_verifiably_and_both_bodies_match_their_snapshots() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = ok_server("/services/T0/B0/secret").await;
    let hook = ok_server("/hooks/pql").await;
    settings(&store, &two_destinations(&slack, &hook)).await;
    put_account(
        &store,
        "globex",
        json!({"owner_email": "ana@example.com", "employees": 250}),
    )
    .await;
    let record = put_alert(&store, &alert("globex", 1, Tier::Hot, 81.234)).await;
    let handler = NotifyHandler::new(notifier(&store, Arc::new(NoMailer)));
    let response = handler.handle(batch(vec![record])).await;
    assert!(response.batch_item_failures.is_empty());

    let key = DeliveryKey {
        tenant: tenant(),
        account: "globex".into(),
        sequence: 1,
        destination: "crm".into(),
    }
    .idempotency_key();
    let hooks = received(&hook).await;
    assert_eq!(hooks.len(), 1);
    let request = &hooks[0];
    let signature = request.headers["pql-signature"].to_str().unwrap();
    receiver_verifies(signature, &request.body, unix_now()).unwrap();
    // A tampered body, or the same request an hour later, is refused.
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    assert_eq!(
        receiver_verifies(signature, &tampered, unix_now()),
        Err("signature mismatch".into())
    );
    assert_eq!(
        receiver_verifies(signature, &request.body, unix_now() + 3600),
        Err("outside the replay window".into())
    );
    assert_eq!(request.headers["idempotency-key"].to_str().unwrap(), key);
    assert_eq!(
        request.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    let payload: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        payload,
        json!({
            "version": "1",
            "type": "pql.qualified",
            "id": key,
            "tenant": "acme",
            "account": {
                "id": "globex",
                "name": "globex Inc",
                "traits": {"employees": 250, "owner_email": "ana@example.com"},
                "owner": "ana@example.com",
                "link": "https://crm.example.com/accounts/globex",
            },
            "alert": {
                "sequence": 1,
                "tier": "hot",
                "score": 81.23,
                "qualified_at": "2026-03-01T10:00:00.000Z",
                "trigger": "event",
                "definition_version": "v1abc",
            },
            "milestones": [
                {"name": "created_projects", "met_at": "2026-02-21T10:00:00Z", "by_user": "ana"},
                {"name": "invited_team", "met_at": "2026-02-22T11:30:00Z", "by_user": "bo"},
            ],
            "fit": [
                {"name": "business_email", "matched": true},
                {"name": "company_size", "matched": false},
            ],
            "most_active_users": [
                {"user_id": "ana", "events": 3},
                {"user_id": "bo", "events": 1},
            ],
            "reasons": ["created_projects met", "invited_team met"],
        })
    );

    let slacks = received(&slack).await;
    assert_eq!(slacks.len(), 1);
    let body: Value = serde_json::from_slice(&slacks[0].body).unwrap();
    assert_eq!(
        body,
        json!({
            "text": "Hot PQL: globex Inc (globex)",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "Hot PQL: globex Inc (globex)", "emoji": true}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Account*\nglobex Inc (`globex`)"},
                    {"type": "mrkdwn", "text": "*Tier*\nhot"},
                    {"type": "mrkdwn", "text": "*Score*\n81.23"},
                    {"type": "mrkdwn", "text": "*Qualified*\n2026-03-01T10:00:00.000Z"},
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Milestones met*\n• created_projects — 2026-02-21T10:00:00Z by ana\n• invited_team — 2026-02-22T11:30:00Z by bo"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Most active users*\n• ana (3 events)\n• bo (1 events)"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Fit*\n✓ business_email\n✗ company_size\nemployees: 250\nowner_email: ana@example.com"}},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": "definition `v1abc` · alert #1 · event"},
                    {"type": "mrkdwn", "text": "owner: ana@example.com"},
                ]},
                {"type": "actions", "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open account"}, "url": "https://crm.example.com/accounts/globex"}
                ]},
            ]
        })
    );
}

#[tokio::test]
async fn rate_limits_are_waited_for_as_retry_after_says() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&slack)
        .await;
    let hook = ok_server("/hooks/pql").await;
    settings(&store, &two_destinations(&slack, &hook)).await;
    let n = notifier(&store, Arc::new(NoMailer));
    let a = alert("initech", 1, Tier::Hot, 70.0);
    put_alert(&store, &a).await;
    let started = Instant::now();
    let out = outcomes(&n.deliver(&a).await.unwrap());
    let elapsed = started.elapsed();
    assert_eq!(
        out[0],
        ("sales-slack".into(), Outcome::Delivered { attempts: 2 })
    );
    assert_eq!(out[1], ("crm".into(), Outcome::Delivered { attempts: 1 }));
    assert!(
        elapsed >= Duration::from_secs(1),
        "{elapsed:?}: Retry-After not honoured"
    );
    assert_eq!(received(&slack).await.len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_parked_and_replay_brings_them_back() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = ok_server("/services/T0/B0/secret").await;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("down for maintenance"))
        .mount(&hook)
        .await;
    settings(&store, &two_destinations(&slack, &hook)).await;
    let n = notifier(&store, Arc::new(NoMailer));
    let a = alert("hooli", 1, Tier::Hot, 70.0);
    put_alert(&store, &a).await;
    let out = outcomes(&n.deliver(&a).await.unwrap());
    // The failing webhook did not stop Slack.
    assert_eq!(
        out[0],
        ("sales-slack".into(), Outcome::Delivered { attempts: 1 })
    );
    assert_eq!(
        out[1],
        (
            "crm".into(),
            Outcome::Parked {
                attempts: 3,
                error: "HTTP 503: down for maintenance".into()
            }
        )
    );
    assert_eq!(received(&hook).await.len(), 3, "max_attempts = 3");

    // `pql alerts list --failed` sees it with its last error.
    let (all, _) = store.all_deliveries(Some(&tenant())).await.unwrap();
    let failed: Vec<_> = all
        .iter()
        .filter(|d| d.state == DeliveryState::Parked)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].key.id(), "acme/hooli/1/crm");
    assert_eq!(
        failed[0].last_error.as_deref(),
        Some("HTTP 503: down for maintenance")
    );

    // A redelivered record does not resend a parked delivery (or the delivered one).
    let again = outcomes(&n.deliver(&a).await.unwrap());
    assert_eq!(again[0].1, Outcome::AlreadyDone(DeliveryState::Delivered));
    assert_eq!(again[1].1, Outcome::AlreadyDone(DeliveryState::Parked));
    assert_eq!(received(&hook).await.len(), 3);

    // The receiver recovers; replay sends it once, and only it.
    hook.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let key = DeliveryKey::parse("acme/hooli/1/crm").unwrap();
    let replayed = outcomes(&n.replay(&key).await.unwrap());
    assert_eq!(replayed[1].1, Outcome::Delivered { attempts: 1 });
    assert_eq!(
        replayed[0].1,
        Outcome::AlreadyDone(DeliveryState::Delivered)
    );
    assert_eq!(received(&hook).await.len(), 1);
    assert_eq!(received(&slack).await.len(), 1);
    let err = n.replay(&key).await.unwrap_err().to_string();
    assert!(
        err.contains("only parked deliveries can be replayed (this one is delivered)"),
        "{err}"
    );
}

#[tokio::test]
async fn timeouts_are_retried_and_client_errors_are_parked_at_once() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(404).set_body_string("no_service"))
        .mount(&slack)
        .await;
    let hook = MockServer::start().await;
    // Slower than the 300 ms timeout twice, then fast.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&hook)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&hook)
        .await;
    settings(&store, &two_destinations(&slack, &hook)).await;
    let n = Notifier::new(store.clone(), Arc::new(NoMailer)).with_policy(RetryPolicy {
        timeout: Duration::from_millis(300),
        ..fast_policy()
    });
    let a = alert("umbrella", 1, Tier::Hot, 70.0);
    put_alert(&store, &a).await;
    let out = outcomes(&n.deliver(&a).await.unwrap());
    assert_eq!(
        out[0],
        (
            "sales-slack".into(),
            Outcome::Parked {
                attempts: 1,
                error: "HTTP 404: no_service".into()
            }
        )
    );
    assert_eq!(out[1], ("crm".into(), Outcome::Delivered { attempts: 3 }));
    assert_eq!(received(&slack).await.len(), 1);
    // The receiver got all three (it answered too late twice): the at-least-once window. They
    // carry the same idempotency key, on which it drops the repeats.
    let keys: Vec<String> = received(&hook)
        .await
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}

#[tokio::test]
async fn routes_suppresses_and_re_alerts_only_on_escalation() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = ok_server("/s").await;
    let emea = ok_server("/emea").await;
    settings(
        &store,
        &format!(
            r#"
[[destination]]
id = "sales-slack"
kind = "slack"
url = "{0}/s"
min_interval_ms = 0

[[destination]]
id = "emea-slack"
kind = "slack"
url = "{1}/emea"
min_interval_ms = 0

[[route]]
name = "emea"
when = [{{ trait = "region", equals = "emea" }}]
destinations = ["emea-slack"]

[default]
destinations = ["sales-slack"]
warm = "skip"

[suppress]
when = [{{ trait = "plan", in = ["paid"] }}, {{ trait = "do_not_contact", equals = true }}]
cooldown_days = 30
"#,
            slack.uri(),
            emea.uri()
        ),
    )
    .await;
    let n = notifier(&store, Arc::new(NoMailer));
    let deliver = |account: &'static str, seq: u32, tier: Tier| {
        let n = n.clone();
        let store = store.clone();
        async move {
            let a = alert(account, seq, tier, 60.0);
            put_alert(&store, &a).await;
            outcomes(&n.deliver(&a).await.unwrap())
        }
    };

    put_account(&store, "eu1", json!({"region": "EMEA"})).await;
    assert_eq!(
        deliver("eu1", 1, Tier::Warm).await,
        [("emea-slack".into(), Outcome::Delivered { attempts: 1 })]
    );
    // A second warm alert of the same account is a repeat; a hot one is an escalation; a
    // second hot one is a repeat again.
    assert!(matches!(
        &deliver("eu1", 2, Tier::Warm).await[0].1,
        Outcome::Suppressed(r) if r.starts_with("suppressed: repeat of alert #1 (warm)")
    ));
    assert_eq!(
        deliver("eu1", 3, Tier::Hot).await[0].1,
        Outcome::Delivered { attempts: 1 }
    );
    assert!(matches!(
        &deliver("eu1", 4, Tier::Hot).await[0].1,
        Outcome::Suppressed(r) if r.starts_with("suppressed: repeat of alert #3 (hot)")
    ));
    assert_eq!(received(&emea).await.len(), 2);

    put_account(&store, "paying", json!({"plan": "paid"})).await;
    assert_eq!(
        deliver("paying", 1, Tier::Hot).await,
        [(
            "sales-slack".into(),
            Outcome::Suppressed("suppressed: plan = paid (in [paid])".into())
        )]
    );
    put_account(&store, "dnc", json!({"do_not_contact": true})).await;
    assert!(matches!(
        &deliver("dnc", 1, Tier::Hot).await[0].1,
        Outcome::Suppressed(_)
    ));
    put_account(&store, "us1", json!({"region": "us"})).await;
    assert_eq!(
        deliver("us1", 1, Tier::Warm).await[0].1,
        Outcome::Suppressed("suppressed: warm alerts are not sent on route `default`".into())
    );
    assert_eq!(
        deliver("us1", 2, Tier::Hot).await[0].1,
        Outcome::Delivered { attempts: 1 }
    );
    assert_eq!(received(&slack).await.len(), 1);
    // Suppressions are recorded, so a redelivery does not reconsider them.
    let d = store
        .alert_deliveries(&tenant(), "paying", 1)
        .await
        .unwrap();
    assert_eq!(d[0].state, DeliveryState::Suppressed);
}

#[tokio::test]
async fn e_mail_goes_to_the_directory_sink_with_text_and_html_to_the_owner() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let dir = std::env::temp_dir().join(format!("pql-mail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    settings(
        &store,
        r#"
[[destination]]
id = "owners"
kind = "email"
from = "pql@example.com"
to = ["sales@example.com"]

[default]
destinations = ["owners"]
owner_trait = "owner_email"
"#,
    )
    .await;
    put_account(&store, "wayne", json!({"owner_email": "bruce@example.com"})).await;
    let n = notifier(&store, Arc::new(DirectoryMailer { dir: dir.clone() }));
    let a = alert("wayne", 1, Tier::Hot, 90.0);
    put_alert(&store, &a).await;
    assert_eq!(
        outcomes(&n.deliver(&a).await.unwrap()),
        [("owners".into(), Outcome::Delivered { attempts: 1 })]
    );
    n.deliver(&a).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    let mail: Value =
        serde_json::from_slice(&std::fs::read(files[0].as_ref().unwrap().path()).unwrap()).unwrap();
    assert_eq!(
        mail["to"],
        json!(["sales@example.com", "bruce@example.com"])
    );
    assert_eq!(mail["subject"], "Hot PQL: wayne Inc (wayne)");
    let text = mail["text"].as_str().unwrap();
    assert!(
        text.contains("created_projects — 2026-02-21T10:00:00Z by ana"),
        "{text}"
    );
    assert!(text.contains("Owner: bruce@example.com"), "{text}");
    let html = mail["html"].as_str().unwrap();
    assert!(
        html.contains("<h2>Hot PQL: wayne Inc (wayne)</h2>"),
        "{html}"
    );
    assert!(html.contains("<li>ana (3 events)</li>"), "{html}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn records_that_are_not_new_alerts_are_skipped() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let handler = NotifyHandler::new(notifier(&store, Arc::new(NoMailer)));
    let mut lifecycle = EventRecord::default();
    lifecycle.event_name = "INSERT".into();
    lifecycle.change.new_image =
        HashMap::from([("sk".to_owned(), serde_dynamo::AttributeValue::N("0".into()))]).into();
    let mut broken = lifecycle.clone();
    broken.change.new_image =
        HashMap::from([("sk".to_owned(), serde_dynamo::AttributeValue::N("1".into()))]).into();
    let mut modify = broken.clone();
    modify.event_name = "MODIFY".into();
    use pql_notify_fn::{RecordOutcome, Skip};
    assert_eq!(
        handler.process(&lifecycle).await.unwrap(),
        RecordOutcome::Skipped(Skip::NotAnAlert)
    );
    assert_eq!(
        handler.process(&modify).await.unwrap(),
        RecordOutcome::Skipped(Skip::NotAnInsert)
    );
    assert!(matches!(
        handler.process(&broken).await.unwrap(),
        RecordOutcome::Skipped(Skip::Malformed(_))
    ));
    // An alert of a tenant without settings is not an error either.
    let record = put_alert(&store, &alert("nobody", 1, Tier::Hot, 50.0)).await;
    assert_eq!(
        handler.process(&record).await.unwrap(),
        RecordOutcome::Delivered(AlertOutcome::NoSettings)
    );
}
