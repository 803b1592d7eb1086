//! `pql backtest` on small handcrafted event files.

use std::path::{Path, PathBuf};

use pql_tests::{pql, run_json, write, write_gzip};
use predicates::prelude::*;
use serde_json::Value;

const DEFINITION: &str = r#"name = "Test PQL"

[signup]
trait = "created_at"

[[milestone]]
name = "projects"
event = "Project Created"
count_at_least = 2
points = 50

[[milestone]]
name = "invites"
event = "Teammate Invited"
count_at_least = 1
within_days_of_signup = 14
points = 30

[tiers]
warm = 30
hot = 60

[pql]
min_tier = "hot"
milestones = ["projects", "invites"]
require = "all"
"#;

/// The line of the duplicated call (line 5 repeats line 4 exactly).
const DUPLICATE: &str = r#"{"type":"track","event":"Project Created","userId":"ua","timestamp":"2026-02-02T11:00:00Z","messageId":"a-p2"}"#;

/// acct_a qualifies when its invite (line 8) completes the rule; acct_b never does; acct_c
/// qualifies inside a batch (line 11); acct_d and acct_e only sign up.
fn events(with_duplicate: bool) -> String {
    let mut lines = vec![
        r#"{"type":"group","userId":"ua","groupId":"acct_a","timestamp":"2026-02-02T09:00:00Z","messageId":"a-group","traits":{"name":"Acme","created_at":"2026-02-02T09:00:00Z"}}"#,
        r#"{"type":"track","event":"Project Created","userId":"ua","context":{"groupId":"acct_a"},"timestamp":"2026-02-02T10:00:00Z","messageId":"a-p1"}"#,
        r#"{"type":"group","userId":"ub","groupId":"acct_b","timestamp":"2026-02-02T10:30:00Z","messageId":"b-group","traits":{"name":"Bolt"}}"#,
        DUPLICATE,
        DUPLICATE,
        r#"{not json"#,
        r#"{"type":"track","event":"Project Created","timestamp":"2026-02-02T11:10:00Z"}"#,
        r#"{"type":"track","event":"Teammate Invited","userId":"ua","context":{"groupId":"acct_a"},"timestamp":"2026-02-02T12:00:00.250Z","messageId":"a-inv"}"#,
        r#"{"type":"track","event":"Project Created","userId":"ub","context":{"groupId":"acct_b"},"timestamp":"2026-02-02T13:00:00Z","messageId":"b-p1"}"#,
        "",
        r#"{"batch":[{"type":"track","event":"Project Created","userId":"uc","context":{"groupId":"acct_c"},"timestamp":"2026-02-02T14:00:00Z","messageId":"c-p1"},{"type":"track","userId":"uc","timestamp":"2026-02-02T14:00:01Z"},{"type":"track","event":"Project Created","userId":"uc","timestamp":"2026-02-02T14:05:00Z","messageId":"c-p2"},{"type":"track","event":"Teammate Invited","userId":"uc","timestamp":"2026-02-02T14:10:00Z","messageId":"c-inv"}],"context":{"groupId":"acct_c"}}"#,
        r#"{"type":"identify","userId":"ud","traits":{"email":"dee@example.com"},"timestamp":"2026-02-02T15:00:00Z","messageId":"d-id"}"#,
        r#"{"type":"group","userId":"ud","groupId":"acct_d","timestamp":"2026-02-02T15:01:00Z","messageId":"d-group","traits":{"name":"Dune"}}"#,
        r#"{"type":"group","userId":"ue","groupId":"acct_e","timestamp":"2026-02-02T16:00:00Z","messageId":"e-group"}"#,
    ];
    if !with_duplicate {
        lines.remove(4);
    }
    lines.join("\n") + "\n"
}

const OUTCOMES: &str = "account_id,converted_at
acct_a,2026-02-05T00:00:00Z
acct_b,2026-02-03
acct_c,
acct_d,
acct_e,
";

struct Files {
    _dir: tempfile::TempDir,
    definition: PathBuf,
    events: PathBuf,
    outcomes: PathBuf,
    dir: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    Files {
        definition: write(&path, "definition.toml", DEFINITION),
        events: write(&path, "events.jsonl", &events(true)),
        outcomes: write(&path, "outcomes.csv", OUTCOMES),
        dir: path,
        _dir: dir,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn account<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == id)
        .unwrap_or_else(|| panic!("no {id} in {doc}"))
}

#[test]
fn qualification_time_is_the_completing_event() {
    let f = files();
    let doc = run_json(&[
        "backtest",
        "--definition",
        s(&f.definition),
        "--events",
        s(&f.events),
        "--format",
        "json",
    ]);
    assert_eq!(doc["definition"]["name"], "Test PQL");
    assert!(doc["definition"]["version"]
        .as_str()
        .unwrap()
        .starts_with('v'));
    let a = account(&doc, "acct_a");
    assert_eq!(a["qualified"], true);
    assert_eq!(a["qualified_at"], "2026-02-02T12:00:00.250Z");
    assert_eq!(a["stage"], "pql");
    assert_eq!(a["name"], "Acme");
    assert_eq!(a["signed_up_at"], "2026-02-02T09:00:00.000Z");
    assert!(a["decision"]["reasons"].as_array().unwrap().len() > 1);

    let b = account(&doc, "acct_b");
    assert_eq!(b["qualified"], false);
    assert_eq!(b["qualified_at"], Value::Null);

    // Qualified from inside a batch, with the batch's context.groupId.
    assert_eq!(
        account(&doc, "acct_c")["qualified_at"],
        "2026-02-02T14:10:00.000Z"
    );

    assert_eq!(doc["summary"]["accounts"], 5);
    assert_eq!(doc["summary"]["qualified"], 2);
    // Default as-of: the latest event.
    assert_eq!(doc["as_of"], "2026-02-02T16:00:00.000Z");
    let input = &doc["input"];
    assert_eq!(input["lines"], 14);
    assert_eq!(input["blank_lines"], 1);
    assert_eq!(input["events"], 13);
    assert_eq!(input["bad_lines"], 1);
    assert_eq!(input["rejected"], 2);
    assert_eq!(input["after_as_of"], 0);
    assert!(doc.get("accuracy").is_none());
}

#[test]
fn a_duplicate_line_changes_nothing() {
    let f = files();
    let once = write(&f.dir, "once.jsonl", &events(false));
    let run = |events: &Path| {
        run_json(&[
            "backtest",
            "--definition",
            s(&f.definition),
            "--events",
            s(events),
            "--format",
            "json",
        ])
    };
    let (twice, once) = (run(&f.events), run(&once));
    assert_eq!(twice["accounts"], once["accounts"]);
    assert_eq!(twice["summary"], once["summary"]);
    assert_eq!(twice["input"]["events"], 13);
    assert_eq!(once["input"]["events"], 12);
}

#[test]
fn bad_lines_and_rejected_calls_are_reported_with_their_line() {
    let f = files();
    let file = s(&f.events);
    pql()
        .args([
            "backtest",
            "--definition",
            s(&f.definition),
            "--events",
            file,
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "{file}:6: bad line (invalid_json)"
        )))
        .stderr(predicate::str::contains(format!(
            "{file}:7: rejected call (missing_identity)"
        )))
        .stderr(predicate::str::contains(format!(
            "{file}:11: batch item 2: rejected call (track_without_event)"
        )))
        .stderr(predicate::str::contains(
            "read 14 lines: 13 events, 1 bad line (invalid_json: 1), \
             2 rejected calls (missing_identity: 1, track_without_event: 1)",
        ))
        .stderr(predicate::str::is_match(r"backtest: 13 events in [0-9.]+ s").unwrap());
}

#[test]
fn problems_beyond_the_first_twenty_are_counted_not_printed() {
    let f = files();
    let mut text = events(true);
    for _ in 0..30 {
        text.push_str("[1, 2]\n");
    }
    let path = write(&f.dir, "noisy.jsonl", &text);
    let out = pql()
        .args([
            "backtest",
            "--definition",
            s(&f.definition),
            "--events",
            s(&path),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.matches(": bad line (").count() + err.matches(": rejected call (").count(),
        20,
        "{err}"
    );
    assert!(err.contains("... and 13 more problems not shown"), "{err}");
    assert!(
        err.contains("31 bad lines (invalid_json: 1, not_an_object: 30)"),
        "{err}"
    );
}

#[test]
fn gzip_input_gives_identical_output() {
    let f = files();
    // The name does not say gzip: the magic bytes do.
    let gz = write_gzip(&f.dir, "events-copy.data", &events(true));
    let run = |events: &Path| {
        pql()
            .args([
                "backtest",
                "--definition",
                s(&f.definition),
                "--events",
                s(events),
            ])
            .args(["--outcomes", s(&f.outcomes), "--format", "json"])
            .output()
            .unwrap()
    };
    let (plain, compressed) = (run(&f.events), run(&gz));
    assert!(plain.status.success() && compressed.status.success());
    assert!(!plain.stdout.is_empty());
    assert_eq!(plain.stdout, compressed.stdout);
}

#[test]
fn outcomes_give_precision_and_recall() {
    let f = files();
    let doc = run_json(&[
        "backtest",
        "--definition",
        s(&f.definition),
        "--events",
        s(&f.events),
        "--outcomes",
        s(&f.outcomes),
        "--format",
        "json",
    ]);
    let a = &doc["accuracy"];
    // acct_a qualified then converted (TP); acct_c qualified, never converted (FP);
    // acct_b converted without qualifying (FN).
    assert_eq!(a["accounts"], 5);
    assert_eq!(a["converted"], 2);
    assert_eq!(a["qualified"], 2);
    assert_eq!(a["true_positives"], 1);
    assert_eq!(a["false_positives"], 1);
    assert_eq!(a["false_negatives"], 1);
    assert_eq!(a["late"], 0);
    assert_eq!(a["precision"], 0.5);
    assert_eq!(a["recall"], 0.5);
    assert_eq!(a["base_rate"], 0.4);
    assert_eq!(a["lift"], 1.25);

    // The same figures in the table.
    pql()
        .args([
            "backtest",
            "--definition",
            s(&f.definition),
            "--events",
            s(&f.events),
        ])
        .args(["--outcomes", s(&f.outcomes)])
        .assert()
        .success()
        .stdout(predicate::str::contains("acct_a"))
        .stdout(predicate::str::contains("2026-02-02T12:00:00.250Z"))
        .stdout(predicate::str::contains(
            "accounts: 5   qualified: 2 (40.0%)",
        ))
        .stdout(predicate::str::contains("precision    50.0%"))
        .stdout(predicate::str::contains("recall       50.0%"))
        .stdout(predicate::str::contains("lift         1.25x"))
        .stdout(predicate::str::contains(
            "true positives 1, false positives 1, late 0, false negatives 1",
        ));
}

#[test]
fn as_of_leaves_out_later_events() {
    let f = files();
    let doc = run_json(&[
        "backtest",
        "--definition",
        s(&f.definition),
        "--events",
        s(&f.events),
        "--as-of",
        "2026-02-02T11:30:00Z",
        "--format",
        "json",
    ]);
    assert_eq!(doc["as_of"], "2026-02-02T11:30:00.000Z");
    // Lines 8, 9, the three good batch items, and lines 12-14.
    assert_eq!(doc["input"]["after_as_of"], 8);
    assert_eq!(doc["input"]["events"], 13);
    assert_eq!(doc["summary"]["accounts"], 2);
    assert_eq!(doc["summary"]["qualified"], 0);
    let a = account(&doc, "acct_a");
    assert_eq!(a["qualified"], false);
    assert_eq!(a["decision"]["evaluated_at"], "2026-02-02T11:30:00.000Z");

    pql()
        .args([
            "backtest",
            "--definition",
            s(&f.definition),
            "--events",
            s(&f.events),
        ])
        .args(["--as-of", "2026-02-02T11:30:00Z"])
        .assert()
        .success()
        .stderr(predicate::str::contains("8 events after --as-of left out"));
}

#[test]
fn a_bad_as_of_is_a_usage_error() {
    let f = files();
    pql()
        .args([
            "backtest",
            "--definition",
            s(&f.definition),
            "--events",
            s(&f.events),
        ])
        .args(["--as-of", "last tuesday"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not an ISO-8601 timestamp"));
}

#[test]
fn csv_output_has_one_row_per_account() {
    let f = files();
    let out = pql()
        .args([
            "backtest",
            "--definition",
            s(&f.definition),
            "--events",
            s(&f.events),
        ])
        .args(["--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("account,name,stage,tier,score,qualified,qualified_at,signed_up_at,days_to_pql,milestones_met")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 5);
    let a = rows.iter().find(|r| r.starts_with("acct_a,")).unwrap();
    assert!(a.starts_with("acct_a,Acme,pql,hot,80,true,2026-02-02T12:00:00.250Z,2026-02-02T09:00:00.000Z,0.13,projects;invites"), "{a}");
}

#[test]
fn bad_outcomes_are_errors_with_line_numbers() {
    let f = files();
    let cases = [
        (
            "account_id,converted_at\nacct_a,2026-02-05\nacct_b,yesterday\n",
            "outcomes.csv:3: converted_at `yesterday` is not a time",
        ),
        (
            "account_id,converted_at\nacct_a\n",
            "outcomes.csv:2: the row has 1 column; expected 2",
        ),
        (
            "account,when\nacct_a,2026-02-05\n",
            "outcomes.csv:1: the header must name the columns account_id and converted_at (found: account, when)",
        ),
        (
            "account_id,converted_at\nacct_a,\nacct_a,2026-02-05\n",
            "outcomes.csv:3: account `acct_a` appears twice (first on line 2)",
        ),
    ];
    for (text, message) in cases {
        let outcomes = write(&f.dir, "outcomes.csv", text);
        pql()
            .args([
                "backtest",
                "--definition",
                s(&f.definition),
                "--events",
                s(&f.events),
            ])
            .args(["--outcomes", s(&outcomes)])
            .assert()
            .code(1)
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::contains(message));
    }
}

#[test]
fn unreadable_inputs_exit_with_1() {
    let f = files();
    pql()
        .args(["backtest", "--definition", s(&f.definition)])
        .args(["--events", "no/such/events.jsonl"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: cannot open events file no/such/events.jsonl",
        ));
    let bad = write(&f.dir, "bad.toml", "name = \"x\"\n[tiers]\nwarm = 1\n");
    pql()
        .args([
            "backtest",
            "--definition",
            s(&bad),
            "--events",
            s(&f.events),
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not a valid definition"));
}
