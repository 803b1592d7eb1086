//! Warm alerts on a `warm = "digest"` route: queued per destination, sent once a day as one
//! message (exactly once under concurrent and repeated runs), an account that turns hot gets
//! its hot alert at once and leaves the digest; against DynamoDB Local and wiremock receivers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pql_engine::definition::Tier;
use pql_engine::Timestamp;
use pql_notify::channels::NoMailer;
use pql_notify::retry::RetryPolicy;
use pql_notify::{AlertOutcome, Notifier, Outcome, Settings};
use pql_store::alerts::{Alert, LifecycleRecord, Trigger};
use pql_store::deliveries::{DeliveryKey, DeliveryState};
use pql_store::tenants::TenantId;
use pql_store::Store;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_digest_0123456789";

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
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
        decision: json!({
            "definition_version": "v1abc", "evaluated_at": "2026-03-01T10:00:00Z",
            "stage": "pql", "tier": tier.as_str(), "score": score, "qualifies": true,
            "activated": true, "signed_up_at": "2026-02-20T09:00:00Z", "milestones": [],
            "fit": {"score": 0.0, "good": true, "facts": []}, "gates": [], "reasons": []
        }),
        trigger: Trigger::Event,
        created_at: Timestamp::parse("2026-03-01T10:00:01Z").unwrap(),
    }
}

async fn put_alert(store: &Store, alert: &Alert) {
    let current = store
        .load_lifecycle(&tenant(), &alert.account)
        .await
        .unwrap();
    store
        .save_lifecycle(
            &tenant(),
            &alert.account,
            &LifecycleRecord::default(),
            current.version,
            std::slice::from_ref(alert),
        )
        .await
        .unwrap()
        .unwrap();
}

async fn ok_server(route: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

fn notifier(store: &Store) -> Arc<Notifier> {
    Arc::new(
        Notifier::new(store.clone(), Arc::new(NoMailer))
            .with_policy(RetryPolicy {
                max_attempts: 3,
                max_rate_limited: 3,
                base: Duration::from_millis(10),
                cap: Duration::from_millis(50),
                max_retry_after: Duration::from_secs(1),
                timeout: Duration::from_secs(5),
            })
            .with_settings_ttl(Duration::ZERO),
    )
}

fn outcomes(outcome: AlertOutcome) -> HashMap<String, Outcome> {
    match outcome {
        AlertOutcome::Routed { destinations, .. } => destinations.into_iter().collect(),
        AlertOutcome::NoSettings => panic!("no settings"),
    }
}

async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

fn day(d: chrono::NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

#[tokio::test]
async fn warm_alerts_go_out_once_a_day_in_one_message_and_hot_ones_at_once() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = ok_server("/slack").await;
    let hook = ok_server("/hook").await;
    let settings = Settings::parse_toml(
        "t.toml",
        &format!(
            r#"
[[destination]]
id = "team"
kind = "slack"
url = "{}/slack"
min_interval_ms = 0

[[destination]]
id = "crm"
kind = "webhook"
url = "{}/hook"
secret = "{SECRET}"

[default]
destinations = ["team", "crm"]
warm = "digest"
"#,
            slack.uri(),
            hook.uri()
        ),
    )
    .unwrap();
    store
        .put_notify_settings(&tenant(), &settings.to_json())
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let n = notifier(&store);

    // Three warm alerts: queued, nothing sent.
    for account in ["alpha", "beta", "gamma"] {
        let a = alert(account, 1, Tier::Warm, 30.0);
        put_alert(&store, &a).await;
        let out = outcomes(n.deliver(&a).await.unwrap());
        let queued = format!("queued for the warm digest of {}", day(today));
        assert_eq!(out["team"], Outcome::Suppressed(queued.clone()));
        assert_eq!(out["crm"], Outcome::Suppressed(queued));
    }
    // A redelivered warm alert is not queued twice.
    let again = outcomes(
        n.deliver(&alert("alpha", 1, Tier::Warm, 30.0))
            .await
            .unwrap(),
    );
    assert_eq!(
        again["team"],
        Outcome::AlreadyDone(DeliveryState::Suppressed)
    );
    // gamma turns hot before the digest: its hot alert goes at once.
    let hot = alert("gamma", 2, Tier::Hot, 60.0);
    put_alert(&store, &hot).await;
    let out = outcomes(n.deliver(&hot).await.unwrap());
    assert_eq!(out["team"], Outcome::Delivered { attempts: 1 });
    assert_eq!(out["crm"], Outcome::Delivered { attempts: 1 });
    assert_eq!(bodies(&slack).await.len(), 1);
    assert_eq!(bodies(&hook).await.len(), 1);

    // Digest items live outside every account partition: the operators' delivery scan reads
    // only real deliveries (and does not fail on them).
    let (all, _) = store.all_deliveries(None).await.unwrap();
    assert!(
        all.iter()
            .all(|d| ["alpha", "beta", "gamma"].contains(&d.key.account.as_str())),
        "{all:?}"
    );
    assert_eq!(all.len(), 8, "3 warm + 1 hot alerts x 2 destinations");

    // Not before the day is over.
    assert!(n.send_digests(today).await.unwrap().is_empty());

    // The daily run, four at once (retried schedules, overlapping instances), then again.
    let tomorrow = today.succ_opt().unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let n = notifier(&store);
            tokio::spawn(async move { n.send_digests(tomorrow).await.unwrap() })
        })
        .collect();
    let mut delivered = 0;
    for run in runs {
        for (_, outcome) in run.await.unwrap() {
            if matches!(outcome, Outcome::Delivered { .. }) {
                delivered += 1;
            }
        }
    }
    assert_eq!(delivered, 2, "one digest per destination");
    let rerun = n.send_digests(tomorrow).await.unwrap();
    assert_eq!(rerun.len(), 2);
    assert!(rerun
        .iter()
        .all(|(_, o)| *o == Outcome::AlreadyDone(DeliveryState::Delivered)));

    // Slack: the hot alert, then one digest listing alpha and beta (gamma turned hot).
    let slack_bodies = bodies(&slack).await;
    assert_eq!(slack_bodies.len(), 2);
    let digest = slack_bodies[1].to_string();
    assert!(digest.contains("2 warm account(s)"), "{digest}");
    assert!(
        digest.contains("alpha Inc") && digest.contains("beta Inc"),
        "{digest}"
    );
    assert!(!digest.contains("gamma"), "{digest}");
    // The webhook: a signed `pql.warm_digest` with the two accounts.
    let requests = hook.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let payload: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(payload["type"], "pql.warm_digest");
    assert_eq!(payload["day"], day(today));
    let accounts: Vec<&str> = payload["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(accounts, ["alpha", "beta"]);
    let header = requests[1].headers["pql-signature"].to_str().unwrap();
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pql_notify::signing::verify(SECRET.as_bytes(), header, &requests[1].body, t, 300).is_ok()
    );
    let stored = store
        .digest(&tenant(), &day(today), "crm")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.state.as_str(), stored.listed),
        ("delivered", Some(2))
    );

    // A warm alert arriving after today's digest went out joins the next day's.
    let late = alert("delta", 1, Tier::Warm, 31.0);
    put_alert(&store, &late).await;
    let out = outcomes(n.deliver(&late).await.unwrap());
    assert_eq!(
        out["team"],
        Outcome::Suppressed(format!("queued for the warm digest of {}", day(tomorrow)))
    );
    let sent = n.send_digests(tomorrow.succ_opt().unwrap()).await.unwrap();
    let fresh: Vec<_> = sent
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Delivered { .. }))
        .collect();
    assert_eq!(fresh.len(), 2, "{sent:?}");
    let last = bodies(&slack).await.pop().unwrap().to_string();
    assert!(
        last.contains("1 warm account(s)") && last.contains("delta Inc"),
        "{last}"
    );
    // The alert-level record says where it went.
    let d = store
        .delivery(&DeliveryKey {
            tenant: tenant(),
            account: "delta".into(),
            sequence: 1,
            destination: "team".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.state, DeliveryState::Suppressed);
}

#[tokio::test]
async fn the_function_tells_the_schedule_from_the_stream_and_refuses_anything_else() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let handler = pql_notify_fn::NotifyHandler::new(notifier(&store));
    let answer = handler.invoke(json!({"pql": "warm-digest"})).await.unwrap();
    assert_eq!(answer, json!({"digests": []}));
    let answer = handler.invoke(json!({"Records": []})).await.unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]));
    let e = handler
        .invoke(json!({"detail-type": "Scheduled Event"}))
        .await
        .unwrap_err();
    assert!(
        e.contains("unknown invocation (expected a DynamoDB stream batch with `Records`, or {\"pql\": \"warm-digest\"})"),
        "{e}"
    );
}

#[tokio::test]
async fn a_digest_whose_accounts_all_turned_hot_sends_nothing() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = ok_server("/slack").await;
    let settings = Settings::parse_toml(
        "t.toml",
        &format!(
            "[[destination]]\nid = \"team\"\nkind = \"slack\"\nurl = \"{}/slack\"\nmin_interval_ms = 0\n\n[default]\ndestinations = [\"team\"]\nwarm = \"digest\"\n",
            slack.uri()
        ),
    )
    .unwrap();
    store
        .put_notify_settings(&tenant(), &settings.to_json())
        .await
        .unwrap();
    let n = notifier(&store);
    let warm = alert("alpha", 1, Tier::Warm, 30.0);
    put_alert(&store, &warm).await;
    n.deliver(&warm).await.unwrap();
    let hot = alert("alpha", 2, Tier::Hot, 60.0);
    put_alert(&store, &hot).await;
    n.deliver(&hot).await.unwrap();
    let tomorrow = chrono::Utc::now().date_naive().succ_opt().unwrap();
    let sent = n.send_digests(tomorrow).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1,
        Outcome::Suppressed("every queued account turned hot: no digest sent".into())
    );
    // Only the hot alert reached Slack; the run is done for good.
    assert_eq!(bodies(&slack).await.len(), 1);
    let again = n.send_digests(tomorrow).await.unwrap();
    assert_eq!(again[0].1, Outcome::AlreadyDone(DeliveryState::Delivered));
}
