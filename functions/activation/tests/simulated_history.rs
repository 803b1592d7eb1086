//! A simulated history (20 accounts × 10 days) through the handler, in order, in batches of
//! 100 as the event-source mapping delivers them: the stored account states equal the
//! `Ledger`'s, and the write units per 1,000 events are measured.

mod common;

use common::*;
use pql_engine::event::parse_payload;
use pql_engine::{Event, Timestamp};
use pql_simulator::{SimConfig, Simulation};
use pql_store::events::PutOutcome;

const BATCH: usize = 100;

#[tokio::test]
async fn a_simulated_history_gives_the_ledgers_states() {
    let mut env = Env::new().await;
    let activation = env.activation();
    let config = SimConfig {
        accounts: 20,
        days: 10,
        start: Timestamp::parse("2026-01-05T00:00:00Z").unwrap(),
        seed: 7,
    };
    let simulation = Simulation::new(config.clone());
    let events: Vec<Event> = simulation
        .events()
        .flat_map(|call| {
            parse_payload(call.to_string().as_bytes(), None)
                .expect("simulated calls parse")
                .into_iter()
                .filter_map(Result::ok)
        })
        .collect();

    // Ingest stores each event once; only stored events reach the stream.
    let mut records = Vec::new();
    let mut raw_units = 0.0;
    for event in &events {
        let (outcome, units) = env.put(event).await;
        raw_units += units;
        if outcome == PutOutcome::Stored {
            records.push(env.record(event).await);
        }
    }
    let stored = records.len();
    let mut total = pql_activation::Usage::default();
    let mut batches = 0;
    while !records.is_empty() {
        let rest = records.split_off(records.len().min(BATCH));
        let batch = std::mem::replace(&mut records, rest);
        total.add(&process_ok(&activation, stream(batch)).await.total());
        batches += 1;
    }
    assert_eq!(total.events as usize, stored);

    let ledger = ledger_of(&env.definition, &events);
    assert!(ledger.account_count() >= 15, "{}", ledger.account_count());
    env.assert_matches_ledger(&ledger, config.end(), true).await;

    let per_1000 = |units: f64| units * 1000.0 / stored as f64;
    eprintln!(
        "simulated history: {} calls, {stored} stored events, {batches} batches, {} accounts, \
         {} users; raw events {raw_units:.0} WCU; activation: {} account writes, {} user writes, \
         {:.1} WCU, {} conflicts; WCU per 1,000 events: raw {:.0} + activation {:.0} = {:.0}",
        events.len(),
        ledger.account_count(),
        ledger.user_count(),
        total.account_writes,
        total.user_writes,
        total.write_units,
        total.conflicts,
        per_1000(raw_units),
        per_1000(total.write_units),
        per_1000(raw_units + total.write_units),
    );
}
