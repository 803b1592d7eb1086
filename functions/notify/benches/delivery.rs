//! Delivery figures (a benchmark binary, not a timed test):
//!
//! * latency from an alert's write (the qualification) to its arrival at a local receiver,
//!   through the alerts table's stream (the stream pump, as the local stack runs it) and the
//!   notify handler: p50 / p99 over `--alerts N` (default 200), sent to a webhook;
//! * `--rate-limited`: N alerts (default 1,000) through a Slack-like receiver that accepts one
//!   message per second and answers `429 Retry-After: 1` otherwise: every alert must arrive
//!   exactly once (none lost, none duplicated). About N seconds.
//!
//! ```sh
//! PQL_DYNAMODB_ENDPOINT=http://127.0.0.1:8000 cargo bench -p pql-notify-fn --bench delivery
//! PQL_DYNAMODB_ENDPOINT=... cargo bench -p pql-notify-fn --bench delivery -- --rate-limited --alerts 1000
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pql_engine::definition::Tier;
use pql_engine::Timestamp;
use pql_notify::channels::NoMailer;
use pql_notify::{Notifier, Settings};
use pql_notify_fn::NotifyHandler;
use pql_store::alerts::{Alert, LifecycleRecord, Trigger};
use pql_store::tenants::TenantId;
use pql_stream_pump::{CancellationToken, MappingConfig, RecordFilter};
use serde_json::json;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A receiver: records each message's idempotency key and arrival time; with `min_gap`, it
/// accepts at most one message per gap and answers 429 otherwise.
#[derive(Clone, Default)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    min_gap: Option<Duration>,
}

#[derive(Default)]
struct ReceiverState {
    last_accepted: Option<Instant>,
    accepted: Vec<(String, i64)>,
    rejected: usize,
}

impl Respond for Receiver {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        if let (Some(gap), Some(last)) = (self.min_gap, state.last_accepted) {
            if now.duration_since(last) < gap {
                state.rejected += 1;
                return ResponseTemplate::new(429).insert_header("retry-after", "1");
            }
        }
        state.last_accepted = Some(now);
        let key = request.headers["idempotency-key"]
            .to_str()
            .unwrap()
            .to_owned();
        state.accepted.push((key, now_ms()));
        ResponseTemplate::new(200)
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate_limited = args.iter().any(|a| a == "--rate-limited");
    let n: usize = args
        .iter()
        .position(|a| a == "--alerts")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if rate_limited { 1000 } else { 200 });
    if args.iter().any(|a| a == "--list") {
        return;
    }

    let (store, _db) = pql_store::testing::fresh_store().await;
    let tenant = TenantId::parse("bench").unwrap();
    let server = MockServer::start().await;
    let receiver = Receiver {
        min_gap: rate_limited.then_some(Duration::from_millis(1000)),
        ..Receiver::default()
    };
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(receiver.clone())
        .mount(&server)
        .await;
    let destination = if rate_limited {
        // Slack-like: the notifier spaces messages 1 s apart (its default for Slack) and
        // honours Retry-After when it is still early.
        format!(
            r#"[[destination]]
id = "slack"
kind = "slack"
url = "{}/services/x""#,
            server.uri()
        )
    } else {
        format!(
            r#"[[destination]]
id = "slack"
kind = "webhook"
url = "{}/hook"
secret = "whsec_0123456789abcdef""#,
            server.uri()
        )
    };
    let settings = Settings::parse_toml(
        "bench",
        &format!("{destination}\n[default]\ndestinations = [\"slack\"]\n"),
    )
    .unwrap();
    store
        .put_notify_settings(&tenant, &settings.to_json())
        .await
        .unwrap();

    let notifier = Arc::new(Notifier::new(store.clone(), Arc::new(NoMailer)));
    let handler = Arc::new(NotifyHandler::new(notifier));
    let endpoint = std::env::var("PQL_DYNAMODB_ENDPOINT")
        .expect("PQL_DYNAMODB_ENDPOINT (DynamoDB Local, as scripts/test.sh starts it)");
    let arn = store
        .client()
        .describe_table()
        .table_name(&store.tables().alerts)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .latest_stream_arn
        .unwrap();
    let (parked_tx, mut parked_rx) = tokio::sync::mpsc::channel(16);
    let pump = pql_stream_pump::start(
        pql_stream_pump::local_client(&endpoint),
        arn,
        MappingConfig {
            batch_size: 10,
            maximum_retry_attempts: 5,
            bisect_batch_on_function_error: true,
            report_batch_item_failures: true,
            poll_interval: Duration::from_millis(20),
            filter: Some(RecordFilter::event_names(["INSERT"])),
            ..MappingConfig::default()
        },
        Arc::new(move |event| {
            let handler = Arc::clone(&handler);
            async move { Ok(handler.handle(event).await) }
        }),
        parked_tx,
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let pump_task = tokio::spawn(pump.run(shutdown.clone()));

    // Alerts written as the qualify function writes them (lifecycle + alert, one
    // transaction), spaced a little so latency is not queueing behind our own burst.
    let started = Instant::now();
    let mut created: HashMap<String, i64> = HashMap::new();
    for i in 0..n {
        let account = format!("acct{i:05}");
        let alert = Alert {
            tenant: "bench".into(),
            account: account.clone(),
            account_name: Some(format!("Account {i}")),
            sequence: 1,
            qualified_at: Timestamp::now(),
            tier: Tier::Hot,
            score: 70.0,
            definition_version: "v1".into(),
            decision: json!({"milestones": [], "fit": {"facts": []}, "reasons": []}),
            trigger: Trigger::Event,
            created_at: Timestamp::now(),
        };
        let key = pql_store::deliveries::DeliveryKey {
            tenant: tenant.clone(),
            account: account.clone(),
            sequence: 1,
            destination: "slack".into(),
        }
        .idempotency_key();
        created.insert(key, now_ms());
        store
            .save_lifecycle(
                &tenant,
                &account,
                &LifecycleRecord::default(),
                0,
                std::slice::from_ref(&alert),
            )
            .await
            .unwrap()
            .unwrap();
        if !rate_limited {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now()
        + Duration::from_secs(if rate_limited {
            n as u64 * 3 + 120
        } else {
            120
        });
    loop {
        let accepted = receiver.state.lock().unwrap().accepted.len();
        if accepted >= n || Instant::now() > deadline {
            break;
        }
        if rate_limited && accepted % 50 == 0 {
            eprintln!("{accepted}/{n} delivered after {:?}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(if rate_limited { 1000 } else { 50 })).await;
    }
    // Anything late or duplicated would show up here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    let _ = pump_task.await;
    let mut parked = 0;
    while let Ok(p) = parked_rx.try_recv() {
        parked += p.records.len();
    }

    let (deliveries, _) = store.all_deliveries(Some(&tenant)).await.unwrap();
    let parked_deliveries = deliveries
        .iter()
        .filter(|d| d.state == pql_store::deliveries::DeliveryState::Parked)
        .count();
    let state = receiver.state.lock().unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (key, _) in &state.accepted {
        *seen.entry(key.as_str()).or_default() += 1;
    }
    let duplicated = seen.values().filter(|c| **c > 1).count();
    let lost = created
        .keys()
        .filter(|k| !seen.contains_key(k.as_str()))
        .count();
    println!(
        "{} alerts: {} received, {} distinct, {lost} lost, {duplicated} duplicated, {} answered 429, {parked_deliveries} parked deliveries, {parked} parked stream records, {:.1} s",
        n,
        state.accepted.len(),
        seen.len(),
        state.rejected,
        started.elapsed().as_secs_f64()
    );
    if !rate_limited {
        let mut latencies: Vec<i64> = state
            .accepted
            .iter()
            .filter_map(|(key, at)| created.get(key).map(|c| at - c))
            .collect();
        latencies.sort_unstable();
        println!(
            "alert written -> received (stream pump + notify + HTTP), ms: p50 {} p90 {} p99 {} max {}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            latencies.last().unwrap()
        );
    }
    assert_eq!(lost, 0, "alerts lost");
    assert_eq!(duplicated, 0, "alerts duplicated");
}
