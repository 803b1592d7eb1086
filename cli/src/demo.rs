//! `pql demo`: the local stack, a generator of realistic trial telemetry sent through the
//! Segment-compatible ingest endpoint, and a live view of the qualifications as the pipeline
//! makes them. At the end the same events go through `pql backtest`'s engine, and the two are
//! compared: the live pipeline must qualify the same accounts at the same (event) times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use pql_engine::event::parse_call;
use pql_engine::time::MS_PER_DAY;
use pql_engine::{Ledger, Timestamp};
use pql_local_stack::LocalStack;
use pql_simulator::{SimConfig, Simulation};
use pql_stream_pump::{DynamoDbEventResponse, MappingConfig, Parked, RecordFilter};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::local;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub stack: local::StackArgs,
    /// Simulated trial accounts.
    #[arg(long, default_value_t = 80)]
    pub accounts: usize,
    /// Days of simulated history, ending today.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Events sent per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
}

/// One qualification seen on the alert outbox's stream.
#[derive(Debug, Clone)]
struct Seen {
    account: String,
    name: String,
    tier: String,
    score: f64,
    qualified_at: Timestamp,
    milestones: Vec<String>,
    arrived: Instant,
}

fn seen_from(image: &serde_dynamo::Item) -> Option<Seen> {
    let item: Value = serde_dynamo::from_item(image.clone()).ok()?;
    if item.get("sk")?.as_u64()? == 0 {
        return None; // the lifecycle item, not an alert
    }
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let decision: Value = serde_json::from_str(&text("decision")).unwrap_or(Value::Null);
    let milestones = decision["milestones"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["met"] == true)
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some(Seen {
        account: text("account"),
        name: text("account_name"),
        tier: text("tier"),
        score: item.get("score").and_then(Value::as_f64).unwrap_or(0.0),
        qualified_at: Timestamp::parse(&text("qualified_at")).ok()?,
        milestones,
        arrived: Instant::now(),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let options = local::options(&args.stack)?;
    let definition = options.definition.clone();
    let write_key = args.stack.write_key.clone();

    // History that ends now: replayed through the live API as a client backfilling would send
    // it (explicit timestamps, no sentAt, so no clock-skew correction against today).
    let now = Timestamp::now();
    let start = Timestamp((now.millis() / MS_PER_DAY - i64::from(args.days)) * MS_PER_DAY);
    let simulation = Simulation::new(SimConfig {
        accounts: args.accounts,
        days: args.days,
        start,
        seed: args.seed,
    });
    let calls: Vec<Value> = simulation
        .events()
        .filter(|c| {
            c["timestamp"]
                .as_str()
                .and_then(|t| Timestamp::parse(t).ok())
                .is_some_and(|t| t <= now)
        })
        .map(|mut c| {
            if let Some(o) = c.as_object_mut() {
                o.remove("sentAt");
                o.remove("receivedAt");
                o.remove("originalTimestamp");
            }
            c
        })
        .collect();

    // What `pql backtest` decides on the same calls.
    let parsed: Vec<_> = calls
        .iter()
        .filter_map(|c| parse_call(&serde_json::to_vec(c).ok()?, None, None).ok())
        .collect();
    let mut ledger = Ledger::new(&definition);
    let mut expected: HashMap<String, Timestamp> = HashMap::new();
    for event in &parsed {
        for q in ledger.ingest(event) {
            expected.entry(q.account).or_insert(q.qualification.at);
        }
    }

    eprintln!(
        "pql demo: {} accounts, {} days of trial telemetry, {} calls at {} calls/s",
        args.accounts,
        args.days,
        calls.len(),
        args.rate
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let stack = LocalStack::start(options).await.context("starting the local stack")?;
        let url = format!("{}/v1/batch", stack.ingest_url());
        eprintln!("local stack up: ingest at {url}, DynamoDB at {}", stack.endpoint);

        // The live view reads the alert outbox's stream, as the notify function does.
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
        let arn = stack
            .store
            .client()
            .describe_table()
            .table_name(&stack.store.tables().alerts)
            .send()
            .await?
            .table
            .and_then(|t| t.latest_stream_arn)
            .context("the alerts table has no stream")?;
        let (parked_tx, _parked_rx) = mpsc::channel::<Parked>(8);
        let mapping = MappingConfig { filter: Some(RecordFilter::event_names(["INSERT"])), poll_interval: Duration::from_millis(10), ..MappingConfig::default() };
        let watcher = pql_stream_pump::start(
            pql_stream_pump::local_client(&stack.endpoint),
            arn,
            mapping,
            Arc::new(move |event: pql_stream_pump::Event| {
                let seen_tx = seen_tx.clone();
                async move {
                    for record in &event.records {
                        if let Some(seen) = seen_from(&record.change.new_image) {
                            let _ = seen_tx.send(seen);
                        }
                    }
                    Ok(DynamoDbEventResponse::default())
                }
            }),
            parked_tx,
        )
        .await?;
        let stop_watcher = pql_stream_pump::CancellationToken::new();
        let watcher = tokio::spawn(watcher.run(stop_watcher.clone()));

        // Send the calls in batches at the requested rate; remember when each event time left.
        let sent_at: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
        let sender = {
            let sent_at = Arc::clone(&sent_at);
            let client = reqwest::Client::new();
            let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:")));
            let rate = f64::from(args.rate.max(1));
            async move {
                let began = Instant::now();
                let mut done = 0usize;
                for batch in calls.chunks(50) {
                    let due = began + Duration::from_secs_f64(done as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let body = serde_json::to_vec(&serde_json::json!({ "batch": batch }))?;
                    let response = client.post(&url).header("authorization", &auth).header("content-type", "application/json").body(body).send().await?;
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    anyhow::ensure!(status.is_success(), "ingest answered {status}: {text}");
                    let now = Instant::now();
                    let mut sent = sent_at.lock().expect("not poisoned");
                    for call in batch {
                        if let Some(t) = call["timestamp"].as_str().and_then(|t| Timestamp::parse(t).ok()) {
                            sent.entry(t.millis()).or_insert(now);
                        }
                    }
                    done += batch.len();
                }
                anyhow::Ok(done)
            }
        };
        let mut sending = tokio::spawn(sender);

        println!("{:<10} {:<24} {:<5} {:>6}  {:<20}  {:>8}  milestones met", "account", "name", "tier", "score", "qualified (event time)", "latency");
        let mut live: HashMap<String, Seen> = HashMap::new();
        let mut latencies = Vec::new();
        let mut sent_all = None;
        let mut quiet_since = Instant::now();
        loop {
            if sent_all.is_none() && sending.is_finished() {
                sent_all = Some((&mut sending).await.context("the sender panicked")??);
                quiet_since = Instant::now();
                eprintln!("all {} calls sent; waiting for the pipeline to finish", sent_all.unwrap_or(0));
            }
            let done_waiting = sent_all.is_some() && (live.len() >= expected.len() && quiet_since.elapsed() > Duration::from_secs(2) || quiet_since.elapsed() > Duration::from_secs(60));
            if done_waiting {
                break;
            }
            let Ok(Some(seen)) = tokio::time::timeout(Duration::from_millis(200), seen_rx.recv()).await else { continue };
            quiet_since = Instant::now();
            let latency = sent_at.lock().expect("not poisoned").get(&seen.qualified_at.millis()).map(|s| seen.arrived.duration_since(*s).as_secs_f64() * 1000.0);
            latencies.extend(latency);
            println!(
                "{:<10} {:<24} {:<5} {:>6.1}  {:<20}  {:>8}  {}",
                seen.account,
                seen.name.chars().take(24).collect::<String>(),
                seen.tier,
                seen.score,
                &seen.qualified_at.to_rfc3339()[..16],
                latency.map_or("-".into(), |l| format!("{l:.0} ms")),
                seen.milestones.join(", ")
            );
            live.entry(seen.account.clone()).or_insert(seen);
        }
        stop_watcher.cancel();
        let _ = watcher.await;
        let parked = stack.parked().len();
        stack.stop().await?;

        latencies.sort_by(f64::total_cmp);
        let matching = expected.iter().filter(|(a, t)| live.get(*a).is_some_and(|s| s.qualified_at == **t)).count();
        println!();
        println!("calls sent: {}   accounts qualified live: {}   by the backtest engine: {}   same account and time: {matching}", sent_all.unwrap_or(0), live.len(), expected.len());
        println!("event -> qualification latency: p50 {:.0} ms, p99 {:.0} ms ({} qualifications)", percentile(&latencies, 50.0), percentile(&latencies, 99.0), latencies.len());
        if parked > 0 {
            println!("parked stream batches: {parked} (see the log)");
        }
        let same_accounts = live.len() == expected.len() && expected.keys().all(|a| live.contains_key(a));
        anyhow::ensure!(same_accounts, "the live pipeline and the backtest qualified different accounts");
        if matching < expected.len() {
            // Decisions are made in event time, in the order the pipeline sees the events; the
            // ingest stores a batch's calls concurrently, so that order can differ slightly from
            // the file's, and a qualification can be dated at a later event of the same burst.
            println!("note: {} qualification(s) dated at a later event than the backtest's (events reordered in flight)", expected.len() - matching);
        }
        Ok(())
    })
}
