use std::collections::{HashMap, HashSet};

use pql_engine::backtest::{accuracy, results, summarize};
use pql_engine::event::parse_call;
use pql_engine::{Definition, Ledger, Timestamp};

use super::*;

const EXAMPLE: &str = include_str!("../../../examples/definition.toml");

fn config(accounts: usize, days: u32, seed: u64) -> SimConfig {
    SimConfig {
        accounts,
        days,
        start: Timestamp::parse("2026-01-05").unwrap(),
        seed,
    }
}

fn lines(sim: &Simulation) -> Vec<String> {
    sim.events().map(|v| v.to_string()).collect()
}

#[test]
fn same_seed_same_output() {
    let a = Simulation::new(config(60, 21, 7));
    let b = Simulation::new(config(60, 21, 7));
    assert_eq!(lines(&a), lines(&b));
    assert_eq!(a.outcomes(), b.outcomes());
    let c = Simulation::new(config(60, 21, 8));
    assert_ne!(lines(&a), lines(&c));
}

#[test]
fn accounts_do_not_depend_on_how_many_there_are() {
    // Each account has its own random streams: the first 20 accounts of a bigger simulation
    // are the same accounts.
    let small = Simulation::new(config(20, 10, 3));
    let big = Simulation::new(config(50, 10, 3));
    assert_eq!(small.outcomes()[..], big.outcomes()[..20]);
    assert_eq!(small.truth()[..], big.truth()[..20]);
}

#[test]
fn every_call_parses_and_time_never_goes_back() {
    let sim = Simulation::new(config(120, 30, 11));
    let end = sim.config().end();
    let start = sim.config().start;
    let mut last = Timestamp::MIN;
    let mut count = 0;
    let mut types: HashMap<&'static str, usize> = HashMap::new();
    let (mut anonymous_only, mut without_group, mut with_group, mut skewed) = (0, 0, 0, 0);
    for value in sim.events() {
        let raw = value.to_string();
        let event = parse_call(raw.as_bytes(), None, None).unwrap_or_else(|e| panic!("{e}: {raw}"));
        assert!(
            event.timestamp >= last,
            "{} after {}: {raw}",
            event.timestamp,
            last
        );
        assert!(event.timestamp >= start && event.timestamp < end, "{raw}");
        last = event.timestamp;
        *types.entry(event.type_name()).or_default() += 1;
        anonymous_only += usize::from(event.user_id.is_none());
        match event.context_group_id {
            Some(_) => with_group += 1,
            None => without_group += 1,
        }
        skewed += usize::from(value.get("sentAt").is_some());
        count += 1;
    }
    assert!(count > 5_000, "{count}");
    for t in ["track", "identify", "group", "page", "screen"] {
        assert!(
            types.get(t).copied().unwrap_or(0) > 0,
            "no {t} calls: {types:?}"
        );
    }
    assert!(anonymous_only > 0);
    assert!(with_group > count / 5 && without_group > count / 5);
    assert!(skewed > count / 10);
}

#[test]
fn ids_and_traits_look_real() {
    let sim = Simulation::new(config(40, 14, 5));
    let mut employees_as_text = 0;
    let mut emails = HashSet::new();
    for value in sim.events() {
        match value["type"].as_str() {
            Some("group") => {
                let id = value["groupId"].as_str().unwrap();
                assert!(id.starts_with("acct_00"), "{id}");
                if value["traits"]["employees"].is_string() {
                    employees_as_text += 1;
                }
            }
            Some("identify") => {
                assert!(value["userId"].as_str().unwrap().starts_with("user_"));
                emails.insert(value["traits"]["email"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
    assert!(emails.iter().all(|e| e.contains('@')));
    assert!(emails.len() >= 40);
    assert!(employees_as_text > 0);
}

#[test]
fn some_people_use_free_mail_and_some_are_competitors() {
    let sim = Simulation::new(config(400, 5, 9));
    let emails: Vec<String> = sim
        .events()
        .filter(|v| v["type"] == "identify")
        .map(|v| v["traits"]["email"].as_str().unwrap().to_owned())
        .collect();
    let domain = |e: &String| e.rsplit_once('@').unwrap().1.to_owned();
    let free = emails
        .iter()
        .filter(|e| names::FREE_MAIL.contains(&domain(e).as_str()))
        .count();
    let rivals = emails
        .iter()
        .filter(|e| names::COMPETITOR_DOMAINS.contains(&domain(e).as_str()))
        .count();
    assert!(
        free * 20 > emails.len() && free * 3 < emails.len(),
        "{free} of {}",
        emails.len()
    );
    assert!(rivals > 0);
    let truth = sim.truth();
    assert!(truth.iter().any(|t| t.paying) && truth.iter().any(|t| t.competitor));
    assert!(truth.iter().all(|t| (1..=12).contains(&t.users)));
}

#[test]
fn ground_truth_matches_the_events() {
    let sim = Simulation::new(config(300, 40, 21));
    let bought: HashSet<String> = sim
        .events()
        .filter(|v| v["event"] == "Subscription Started")
        .map(|v| v["context"]["groupId"].as_str().unwrap().to_owned())
        .collect();
    let converted: HashSet<String> = sim
        .outcomes()
        .into_iter()
        .filter(|(_, c)| c.is_some())
        .map(|(a, _)| a)
        .collect();
    assert_eq!(bought, converted);
    assert_eq!(sim.outcomes().len(), 300);
}

struct Backtest {
    /// (intent bucket, accounts, qualified, converted, true positives)
    buckets: [(usize, usize, usize, usize); 4],
    accounts: usize,
    events: usize,
    qualified: usize,
    converted: usize,
    precision: f64,
    recall: f64,
    lift: f64,
}

fn backtest(sim: &Simulation) -> Backtest {
    let definition = Definition::from_toml("examples/definition.toml", EXAMPLE).unwrap();
    let mut ledger = Ledger::new(&definition);
    let mut events = 0;
    let mut last = Timestamp::MIN;
    for value in sim.events() {
        let event = parse_call(value.to_string().as_bytes(), None, None).unwrap();
        last = last.max(event.timestamp);
        ledger.ingest(&event);
        events += 1;
    }
    let results = results(&ledger, last);
    let summary = summarize(&results);
    let conversions: HashMap<String, Timestamp> = sim
        .outcomes()
        .into_iter()
        .filter_map(|(a, c)| c.map(|c| (a, c)))
        .collect();
    let acc = accuracy(&results, &conversions);
    let mut buckets = [(0, 0, 0, 0); 4];
    let truth: HashMap<String, Truth> = sim
        .truth()
        .into_iter()
        .map(|t| (t.account.clone(), t))
        .collect();
    for r in &results {
        let t = &truth[&r.account];
        let b = &mut buckets[((t.intent * 4.0) as usize).min(3)];
        b.0 += 1;
        b.1 += usize::from(r.qualified);
        b.2 += usize::from(t.converted_at.is_some());
        b.3 +=
            usize::from(matches!((r.qualified_at, t.converted_at), (Some(q), Some(c)) if q <= c));
    }
    Backtest {
        buckets,
        accounts: summary.accounts,
        events,
        qualified: summary.qualified,
        converted: acc.converted,
        precision: acc.precision.unwrap_or(0.0),
        recall: acc.recall.unwrap_or(0.0),
        lift: acc.lift.unwrap_or(0.0),
    }
}

#[test]
fn a_plausible_share_qualifies_under_the_example_definition() {
    let sim = Simulation::new(config(500, 45, 7));
    let b = backtest(&sim);
    let share = b.qualified as f64 / b.accounts as f64;
    let converted = b.converted as f64 / b.accounts as f64;
    assert_eq!(b.accounts, 500);
    assert!((0.08..=0.25).contains(&share), "qualified share {share}");
    assert!(
        (0.05..=0.20).contains(&converted),
        "converted share {converted}"
    );
    // Qualification predicts buying, but not perfectly.
    assert!(b.lift > 2.0, "lift {}", b.lift);
    assert!(b.precision < 0.95 && b.recall < 0.95);
}

/// Prints the figures used to tune the simulator: `cargo test -p pql-simulator -- --ignored --nocapture`.
#[test]
#[ignore = "tuning aid"]
fn print_calibration() {
    for (accounts, days, seed) in [(1000, 60, 7), (1000, 60, 8), (400, 30, 1)] {
        let sim = Simulation::new(config(accounts, days, seed));
        let b = backtest(&sim);
        println!(
            "{accounts} accounts x {days} days (seed {seed}): {} events ({:.0}/account), qualified {:.1}%, converted {:.1}%, precision {:.2}, recall {:.2}, lift {:.2}",
            b.events,
            b.events as f64 / accounts as f64,
            100.0 * b.qualified as f64 / accounts as f64,
            100.0 * b.converted as f64 / accounts as f64,
            b.precision,
            b.recall,
            b.lift
        );
        for (i, (n, q, c, tp)) in b.buckets.iter().enumerate() {
            println!("  intent {:.2}-{:.2}: {n} accounts, {q} qualified, {c} converted, {tp} qualified before converting", i as f64 / 4.0, (i + 1) as f64 / 4.0);
        }
    }
}

#[test]
#[ignore = "tuning aid"]
fn print_sample() {
    let sim = Simulation::new(config(3, 3, 7));
    for v in sim.events().take(40) {
        println!("{v}");
    }
}
