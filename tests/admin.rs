//! `pql definition push | list | show | diff | activate | rollback` and `pql accounts` against
//! the admin API served by the local stack, with a real account qualified by the pipeline.

use std::net::SocketAddr;

use pql_engine::Definition;
use pql_tests::stack::{
    at, group, spawn_app_with, test_definition, test_options, track, TEST_DEFINITION,
};
use pql_tests::{pql, write};
use serde_json::Value;

const ADMIN_KEY: &str = "e2e_admin_key";

/// Runs `pql ARGS --api URL` with the admin key from the environment; (exit code, stdout, stderr).
fn run(api: &str, args: &[&str]) -> (i32, String, String) {
    let output = pql()
        .args(args)
        .args(["--api", api])
        .env("PQL_ADMIN_KEY", ADMIN_KEY)
        .env("PQL_AUTHOR", "e2e")
        .output()
        .expect("pql runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn ok(api: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = run(api, args);
    assert_eq!(code, 0, "pql {args:?}: {stderr}\n{stdout}");
    stdout
}

fn json(api: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(api, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pql {args:?}: not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_definitions_and_shows_accounts_through_the_admin_api() {
    let mut options = test_options(test_definition());
    options.admin_key = Some(ADMIN_KEY.to_owned());
    options.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = spawn_app_with(options).await;
    let api = app.stack.admin_url().expect("the admin API is served");

    // An account the pipeline qualifies: 3 projects, 2 distinct users inviting.
    let batch = vec![
        group("g1", "u1", "acme", at(0)),
        group("g2", "u2", "acme", at(0)),
        track("p1", "u1", "Project Created", at(1), Some("acme")),
        track("p2", "u1", "Project Created", at(2), Some("acme")),
        track("p3", "u1", "Project Created", at(3), Some("acme")),
        track("i1", "u1", "Teammate Invited", at(4), Some("acme")),
        track("i2", "u2", "Teammate Invited", at(5), Some("acme")),
    ];
    app.send_batch(&batch).await;
    app.wait_for_alerts("acme", 1).await;

    let dir = tempfile::tempdir().unwrap();
    let api2 = api.clone();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let api = api2.as_str();
        let v1 = test_definition().version;

        let list = json(api, &["definition", "list"]);
        assert_eq!(list["active"], Value::String(v1.clone()));
        let table = ok(api, &["definition", "list"]);
        assert!(table.contains(&v1) && table.contains("active: "), "{table}");

        // A bad definition: the API's errors, printed as `pql definition validate` prints them.
        let bad = write(
            &dir_path,
            "bad.toml",
            &TEST_DEFINITION.replace("count_at_least = 3", "count_at_leest = 3"),
        );
        let (code, _, stderr) = run(
            api,
            &["definition", "push", bad.to_str().unwrap(), "-m", "typo"],
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("bad.toml:7:1: count_at_leest: unknown field `count_at_leest`"),
            "{stderr}"
        );
        assert!(stderr.contains("400 invalid_definition"), "{stderr}");

        // A change: push, diff, activate, rollback.
        let v2_text = TEST_DEFINITION.replace("hot = 60", "hot = 55");
        let v2 = Definition::from_toml("v2.toml", &v2_text).unwrap().version;
        let good = write(&dir_path, "v2.toml", &v2_text);
        let pushed = ok(
            api,
            &[
                "definition",
                "push",
                good.to_str().unwrap(),
                "-m",
                "hot at 55",
            ],
        );
        assert!(pushed.contains(&format!("pushed {v2}")), "{pushed}");
        let again = ok(
            api,
            &["definition", "push", good.to_str().unwrap(), "-m", "again"],
        );
        assert!(
            again.contains(&format!("unchanged: this content is already version {v2}")),
            "{again}"
        );
        let diff = ok(api, &["definition", "diff", &v1, &v2]);
        assert!(
            diff.contains("-    \"hot\": 60.0") && diff.contains("+    \"hot\": 55.0"),
            "{diff}"
        );
        let shown = ok(api, &["definition", "show", &v2]);
        assert!(
            shown.contains("hot at 55") && shown.contains("\"hot\": 55.0"),
            "{shown}"
        );
        let activated = ok(api, &["definition", "activate", &v2]);
        assert_eq!(activated.trim(), format!("active: {v2} (was {v1})"));
        // Diff against the active version by default: now identical.
        let same = ok(api, &["definition", "diff", &v2]);
        assert!(same.contains("identical"), "{same}");
        let rolled = ok(api, &["definition", "rollback"]);
        assert_eq!(
            rolled.trim(),
            format!("rolled back {v2}: active is {v1} again")
        );
        let (code, _, stderr) = run(api, &["definition", "rollback"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("nothing to roll back to"), "{stderr}");
        let list = json(api, &["definition", "list"]);
        let history: Vec<&str> = list["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["author"].as_str().unwrap())
            .collect();
        assert_eq!(history, ["pql", "e2e", "e2e"]);

        // Accounts.
        let accounts = json(api, &["accounts", "list", "--stage", "pql"]);
        let names: Vec<&str> = accounts["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["account"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["acme"]);
        assert_eq!(accounts["accounts"][0]["tier"], "hot");
        let table = ok(api, &["accounts", "list", "--tier", "hot"]);
        assert!(
            table.contains("acme") && table.contains("Account acme"),
            "{table}"
        );
        let none = json(api, &["accounts", "list", "--stage", "converted"]);
        assert_eq!(none["accounts"], Value::Array(vec![]));
        let shown = ok(api, &["accounts", "show", "acme"]);
        assert!(
            shown.starts_with("acme (Account acme): stage pql, tier hot"),
            "{shown}"
        );
        assert!(shown.contains("alert #1: hot"), "{shown}");
        let (code, _, stderr) = run(api, &["accounts", "show", "nobody"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("404 not_found"), "{stderr}");
        let (code, _, stderr) = run(api, &["accounts", "list", "--stage", "hot"]);
        assert_eq!(code, 1);
        assert!(
            stderr.contains("is not a stage (allowed: one of signed_up"),
            "{stderr}"
        );

        let funnel = json(api, &["accounts", "funnel", "--days", "3"]);
        assert_eq!(funnel["stages"]["pql"], 1, "{funnel}");
        let funnel = ok(api, &["accounts", "funnel"]);
        assert!(
            funnel.contains("median days from sign-up: activated"),
            "{funnel}"
        );
        let precision = json(api, &["accounts", "precision"]);
        assert_eq!(precision["versions"][0]["alerts"], 1, "{precision}");
        assert_eq!(precision["versions"][0]["precision"], Value::Null);

        // Wrong keys.
        let output = pql()
            .args([
                "definition",
                "list",
                "--api",
                api,
                "--admin-key",
                pql_tests::stack::WRITE_KEY,
            ])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&output.stderr).contains("403 write_key_not_allowed"));
        let output = pql()
            .args(["definition", "list", "--api", api])
            .env_remove("PQL_ADMIN_KEY")
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "clap: --admin-key is required"
        );
    })
    .await
    .unwrap();
    app.stop().await;
}
