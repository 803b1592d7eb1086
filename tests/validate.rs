//! `pql definition validate`: valid definitions are summarised; invalid ones are reported
//! with file, line, column, field, what is wrong and what is allowed.

use std::path::Path;

use pql_tests::{example_definition, pql, write};
use predicates::prelude::*;

/// A valid definition; tests break it in one place.
const VALID: &str = r#"name = "Test PQL"

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

/// Runs validate on `text` and returns (file path, stderr), expecting exit code 1.
fn invalid(dir: &Path, text: &str) -> (String, String) {
    let path = write(dir, "definition.toml", text);
    let out = pql()
        .args(["definition", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    (
        path.display().to_string(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_example_definition_is_valid() {
    pql()
        .args(["definition", "validate", "examples/definition.toml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("examples/definition.toml: valid"))
        .stdout(predicate::str::contains("Trial PQL: team analytics"))
        .stdout(predicate::str::is_match(r"version:\s+v[0-9a-f]{12}").unwrap())
        .stdout(predicate::str::is_match(r"milestones:\s+7\n").unwrap())
        .stdout(predicate::str::is_match(r"scoring rules:\s+4\n").unwrap())
        .stdout(predicate::str::is_match(r"fit conditions:\s+4\n").unwrap())
        .stdout(predicate::str::is_match(r"gates:\s+4\n").unwrap());
    assert!(example_definition().exists());
}

#[test]
fn a_small_valid_definition() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ok.toml", VALID);
    pql()
        .args(["definition", "validate"])
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"milestones:\s+2\n").unwrap())
        .stdout(predicate::str::is_match(r"gates:\s+0\n").unwrap());
}

#[test]
fn unknown_field_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace("points = 50\n", "points = 50\ncolour = \"red\"\n");
    let (file, err) = invalid(dir.path(), &text);
    // Line 8: the line after `points = 50` of the first milestone.
    assert!(
        err.contains(&format!("{file}:8:1: colour: unknown field `colour`")),
        "{err}"
    );
    assert!(err.contains("(allowed: one of `name`"), "{err}");
    assert!(
        err.contains("is not a valid definition (1 problem)"),
        "{err}"
    );
}

#[test]
fn duplicate_milestone_name_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace("name = \"invites\"", "name = \"projects\"");
    let (file, err) = invalid(dir.path(), &text);
    assert!(
        err.contains(&format!(
            "{file}:10:1: milestone[1].name: milestone `projects` is defined twice"
        )),
        "{err}"
    );
    assert!(err.contains("(allowed: unique milestone names)"), "{err}");
}

#[test]
fn reference_to_an_undefined_milestone_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace(
        "milestones = [\"projects\", \"invites\"]",
        "milestones = [\"projects\", \"invitations\"]",
    );
    let (file, err) = invalid(dir.path(), &text);
    assert!(
        err.contains(&format!(
            "{file}:22:27: pql.milestones[1]: milestone `invitations` is not defined"
        )),
        "{err}"
    );
    assert!(
        err.contains("`projects`") && err.contains("`invites`"),
        "{err}"
    );
}

#[test]
fn impossible_window_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID.replace("within_days_of_signup = 14", "within_days_of_signup = -3");
    let (file, err) = invalid(dir.path(), &text);
    assert!(
        err.contains(&format!(
            "{file}:13:1: milestone[1].within_days_of_signup: a window of -3 days is impossible"
        )),
        "{err}"
    );
    assert!(err.contains("(allowed: more than 0"), "{err}");
}

#[test]
fn several_problems_are_reported_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID
        .replace("within_days_of_signup = 14", "within_days_of_signup = 0")
        .replace("name = \"invites\"", "name = \"projects\"");
    let (file, err) = invalid(dir.path(), &text);
    let located = err
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")))
        .count();
    assert!(located >= 2, "{err}");
    assert!(err.contains("problems)"), "{err}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    pql()
        .args(["definition", "validate", "no/such/definition.toml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: cannot read definition file no/such/definition.toml",
        ));
}

#[test]
fn usage_errors_exit_with_2() {
    pql()
        .args(["definition", "validate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("FILE"));
    pql().args(["frobnicate"]).assert().code(2);
}
