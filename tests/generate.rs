//! `pql generate` → `pql backtest`: simulated data round-trips through the real binary.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use pql_tests::{pql, run_json};
use predicates::prelude::*;

#[test]
fn generate_then_backtest_the_example_definition() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl.gz");
    let outcomes = dir.path().join("outcomes.csv");
    let (events, outcomes) = (events.to_str().unwrap(), outcomes.to_str().unwrap());
    pql()
        .args([
            "generate",
            "--accounts",
            "200",
            "--days",
            "30",
            "--seed",
            "7",
        ])
        .args(["--events", events, "--outcomes", outcomes])
        .assert()
        .success()
        .stderr(predicate::str::contains("for 200 accounts over 30 days"));

    // Really gzip, and every line a JSON object.
    let mut text = String::new();
    MultiGzDecoder::new(std::fs::File::open(events).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let lines = text.lines().count();
    assert!(lines > 10_000, "{lines} lines");
    assert!(text
        .lines()
        .take(100)
        .all(|l| serde_json::from_str::<serde_json::Value>(l)
            .unwrap()
            .is_object()));

    let csv = std::fs::read_to_string(outcomes).unwrap();
    assert!(csv.starts_with("account_id,converted_at\n"));
    assert_eq!(csv.lines().count(), 201);
    let converted = csv.lines().skip(1).filter(|l| !l.ends_with(',')).count();
    assert!((4..=40).contains(&converted), "{converted} converted");

    let doc = run_json(&[
        "backtest",
        "--definition",
        "examples/definition.toml",
        "--events",
        events,
        "--outcomes",
        outcomes,
        "--format",
        "json",
    ]);
    let input = &doc["input"];
    assert_eq!(input["events"].as_u64().unwrap() as usize, lines);
    assert_eq!(input["bad_lines"], 0);
    assert_eq!(input["rejected"], 0);
    let accounts = doc["summary"]["accounts"].as_u64().unwrap();
    let qualified = doc["summary"]["qualified"].as_u64().unwrap();
    assert_eq!(accounts, 200);
    let share = qualified as f64 / accounts as f64;
    assert!((0.05..=0.30).contains(&share), "qualified share {share}");
    let lift = doc["accuracy"]["lift"].as_f64().unwrap();
    assert!(lift > 1.5, "lift {lift}");
}

#[test]
fn the_same_seed_writes_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        pql()
            .args([
                "generate",
                "--accounts",
                "30",
                "--days",
                "7",
                "--seed",
                seed,
            ])
            .arg("--events")
            .arg(&path)
            .assert()
            .success();
        std::fs::read(path).unwrap()
    };
    let a = run("a.jsonl", "3");
    assert!(!a.is_empty());
    assert_eq!(a, run("b.jsonl", "3"));
    assert_ne!(a, run("c.jsonl", "4"));
}

#[test]
fn bad_generate_arguments() {
    pql()
        .args(["generate", "--accounts", "0", "--events", "/dev/null"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--accounts must be at least 1"));
    pql()
        .args(["generate", "--start", "soon", "--events", "/dev/null"])
        .assert()
        .code(2);
    pql()
        .args(["generate", "--accounts", "1", "--days", "1"])
        .args(["--events", "no/such/dir/events.jsonl"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot create events file"));
}
