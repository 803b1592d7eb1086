//! `pql definition push | list | show | diff | activate | rollback | preview`: versioned definitions
//! through the admin API.

use std::path::PathBuf;

use anyhow::Context;
use comfy_table::{presets, Table};
use serde_json::{json, Value};

use crate::admin_client::{encode, AdminClient, ApiArgs};

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The definition file (TOML, or JSON by extension); validated by the API as by
    /// `pql definition validate`.
    pub file: PathBuf,
    /// Why this change (recorded with the version).
    #[arg(long, short)]
    pub message: String,
    /// Who makes the change (default: $PQL_AUTHOR, else $USER).
    #[arg(long)]
    pub author: Option<String>,
    /// Activate the new version at once.
    #[arg(long)]
    pub activate: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The version id (as `pql definition list` shows it).
    pub version: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The older version.
    pub from: String,
    /// The newer version (default: the active one).
    pub to: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ActivateArgs {
    /// The version to make active.
    pub version: String,
    /// Who activates it (default: $PQL_AUTHOR, else $USER).
    #[arg(long)]
    pub author: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Who rolls back (default: $PQL_AUTHOR, else $USER).
    #[arg(long)]
    pub author: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn author(given: Option<&str>) -> anyhow::Result<String> {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var("PQL_AUTHOR").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|a| !a.trim().is_empty())
        .context("who makes the change? pass --author (or set PQL_AUTHOR)")
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON prints")
    );
}

pub fn push(args: &PushArgs) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the definition {}", args.file.display()))?;
    let file = args.file.display().to_string();
    let format = if file.ends_with(".json") {
        "json"
    } else {
        "toml"
    };
    let client = AdminClient::new(&args.api)?;
    let answer = client.post(
        "/v1/definitions",
        &json!({
            "source": source,
            "format": format,
            "file": file,
            "author": author(args.author.as_deref())?,
            "message": args.message,
            "activate": args.activate,
        }),
    )?;
    if args.api.json {
        print_json(&answer);
        return Ok(());
    }
    let version = answer["version"].as_str().unwrap_or("?");
    if answer["created"] == json!(true) {
        println!(
            "pushed {version} ({})",
            answer["name"].as_str().unwrap_or("")
        );
    } else {
        println!(
            "unchanged: this content is already version {version} (pushed by {} at {})",
            answer["author"].as_str().unwrap_or("?"),
            answer["created_at"].as_str().unwrap_or("?")
        );
    }
    if let Some(active) = answer["active"].as_str() {
        println!("active: {active}");
    }
    Ok(())
}

pub fn list(args: &ListArgs) -> anyhow::Result<()> {
    let answer = AdminClient::new(&args.api)?.get("/v1/definitions")?;
    if args.api.json {
        print_json(&answer);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header(["", "version", "name", "author", "created", "message"]);
    for v in answer["versions"].as_array().into_iter().flatten() {
        let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        table.add_row([
            if v["active"] == json!(true) { "*" } else { "" }.to_owned(),
            text("version"),
            text("name"),
            text("author"),
            text("created_at"),
            text("message"),
        ]);
    }
    println!("{table}");
    println!("active: {}", answer["active"].as_str().unwrap_or("(none)"));
    Ok(())
}

pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let answer =
        AdminClient::new(&args.api)?.get(&format!("/v1/definitions/{}", encode(&args.version)))?;
    if args.api.json {
        print_json(&answer);
        return Ok(());
    }
    println!(
        "{} {}{}\nauthor: {}  created: {}\nmessage: {}\n",
        answer["version"].as_str().unwrap_or("?"),
        answer["name"].as_str().unwrap_or(""),
        if answer["active"] == json!(true) {
            " (active)"
        } else {
            ""
        },
        answer["author"].as_str().unwrap_or(""),
        answer["created_at"].as_str().unwrap_or(""),
        answer["message"].as_str().unwrap_or(""),
    );
    print!("{}", answer["canonical"].as_str().unwrap_or(""));
    Ok(())
}

pub fn diff(args: &DiffArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.api)?;
    let to = match &args.to {
        Some(to) => to.clone(),
        None => client.get("/v1/definitions")?["active"]
            .as_str()
            .context("the tenant has no active version to compare with: name both versions")?
            .to_owned(),
    };
    let answer = client.get(&format!(
        "/v1/definitions/{}/diff/{}",
        encode(&args.from),
        encode(&to)
    ))?;
    if args.api.json {
        print_json(&answer);
    } else if answer["added_lines"] == json!(0) && answer["removed_lines"] == json!(0) {
        println!("{} and {to} are identical", args.from);
    } else {
        print!("{}", answer["diff"].as_str().unwrap_or(""));
    }
    Ok(())
}

pub fn activate(args: &ActivateArgs) -> anyhow::Result<()> {
    let answer = AdminClient::new(&args.api)?.post(
        &format!("/v1/definitions/{}/activate", encode(&args.version)),
        &json!({ "author": author(args.author.as_deref())? }),
    )?;
    if args.api.json {
        print_json(&answer);
        return Ok(());
    }
    println!(
        "active: {} (was {})",
        answer["active"].as_str().unwrap_or("?"),
        answer["previous"].as_str().unwrap_or("none")
    );
    Ok(())
}

pub fn rollback(args: &RollbackArgs) -> anyhow::Result<()> {
    let answer = AdminClient::new(&args.api)?.post(
        "/v1/definitions/rollback",
        &json!({ "author": author(args.author.as_deref())? }),
    )?;
    if args.api.json {
        print_json(&answer);
        return Ok(());
    }
    println!(
        "rolled back {}: active is {} again",
        answer["rolled_back"].as_str().unwrap_or("?"),
        answer["active"].as_str().unwrap_or("?")
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    /// A definition file (TOML, or JSON by extension) or a pushed version id.
    pub draft: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The request body for a draft: a pushed version when `draft` is a version id and no such
/// file exists, else the file's source.
fn draft_body(draft: &str) -> anyhow::Result<Value> {
    let path = std::path::Path::new(draft);
    if !path.exists() && pql_store::definition_versions::is_version_id(draft) {
        return Ok(json!({ "version": draft }));
    }
    let source = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the definition {draft} (give a file, or a version id as `pql definition list` shows it)")
    })?;
    let format = if draft.ends_with(".json") {
        "json"
    } else {
        "toml"
    };
    Ok(json!({ "source": source, "format": format, "file": draft }))
}

pub fn preview(args: &PreviewArgs) -> anyhow::Result<()> {
    let answer =
        AdminClient::new(&args.api)?.post("/v1/definitions/preview", &draft_body(&args.draft)?)?;
    if args.api.json {
        print_json(&answer);
        return Ok(());
    }
    print!("{}", preview_text(&answer));
    Ok(())
}

/// The preview as people read it: moves per stage and tier, the accounts that change, and
/// what stored state cannot answer.
pub fn preview_text(answer: &Value) -> String {
    use std::fmt::Write;
    let c = &answer["comparison"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "draft {} against active {}, as of {}: {} accounts read{}",
        answer["draft_version"].as_str().unwrap_or("?"),
        answer["active_version"].as_str().unwrap_or("?"),
        answer["evaluated_at"].as_str().unwrap_or("?"),
        n(&answer["accounts_read"]),
        if answer["truncated"] == json!(true) {
            format!(
                " (TRUNCATED: only the first {}; the counts cover those)",
                n(&answer["max_accounts"])
            )
        } else {
            String::new()
        }
    );
    out.push_str(&comparison_text(c));
    out
}

/// Moves per stage and tier, the accounts that change, and what stored state cannot answer.
fn comparison_text(c: &Value) -> String {
    use std::fmt::Write;
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} compared, {} keep their stage and tier, {} change",
        n(&c["compared"]),
        n(&c["unchanged"]),
        n(&c["compared"]) - n(&c["unchanged"])
    );
    for kind in ["stages", "tiers"] {
        let mut table = Table::new();
        table.load_preset(presets::UTF8_FULL_CONDENSED);
        table.set_header([
            &kind[..kind.len() - 1],
            "before",
            "after",
            "entering",
            "leaving",
        ]);
        for (name, m) in c[kind].as_object().into_iter().flatten() {
            table.add_row([
                name.clone(),
                n(&m["before"]).to_string(),
                n(&m["after"]).to_string(),
                format!("+{}", n(&m["entering"])),
                format!("-{}", n(&m["leaving"])),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    let changes = c["changes"].as_array().cloned().unwrap_or_default();
    if !changes.is_empty() {
        let mut table = Table::new();
        table.load_preset(presets::UTF8_FULL_CONDENSED);
        table.set_header(["account", "stage", "tier", "score"]);
        for ch in &changes {
            let s = |k: &str| ch[k].as_str().unwrap_or("?").to_owned();
            table.add_row([
                s("account"),
                format!("{} → {}", s("from_stage"), s("to_stage")),
                format!("{} → {}", s("from_tier"), s("to_tier")),
                format!("{} → {}", ch["from_score"], ch["to_score"]),
            ]);
        }
        let _ = writeln!(out, "{table}");
        if c["changes_truncated"] == json!(true) {
            let _ = writeln!(out, "(more accounts change than are listed)");
        }
    }
    for (key, count, what) in [
        ("untracked", "untracked_accounts", "the draft cannot judge from stored state (activating it rebuilds their state from raw events)"),
        ("active_untracked", "active_untracked_accounts", "the active version cannot judge yet (state being rebuilt)"),
    ] {
        if n(&c[count]) > 0 {
            let _ = writeln!(out, "{} accounts {what}:", n(&c[count]));
            for (reason, k) in c[key].as_object().into_iter().flatten() {
                let _ = writeln!(out, "  {} accounts: {reason}", n(k));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_is_a_version_only_when_no_such_file_exists() {
        assert_eq!(
            draft_body("v0123456789ab").unwrap(),
            json!({"version": "v0123456789ab"})
        );
        let error = draft_body("no/such/file.toml").unwrap_err().to_string();
        assert!(error.contains("no/such/file.toml"), "{error}");
        let file = std::env::temp_dir().join(format!("pql-preview-{}.json", std::process::id()));
        std::fs::write(&file, "{}").unwrap();
        let body = draft_body(file.to_str().unwrap()).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(body["format"], "json");
        assert_eq!(body["source"], "{}");
    }

    #[test]
    fn shadow_report_text_shows_state_and_differences() {
        let answer = json!({
            "shadow_version": "vaaaaaaaaaaaa", "shadowing": false, "accounts": 2,
            "truncated": false, "earliest_decision": "2026-11-20T00:00:00Z",
            "comparison": {
                "compared": 2, "unchanged": 1,
                "stages": {"pql": {"before": 1, "after": 0, "entering": 0, "leaving": 1}},
                "tiers": {}, "changes": [{"account": "initech", "from_stage": "pql", "to_stage": "activated",
                    "from_tier": "hot", "to_tier": "warm", "from_score": 50.0, "to_score": 30.0}],
                "untracked_accounts": 0, "active_untracked_accounts": 0,
            }
        });
        let text = shadow_report_text(&answer);
        assert!(
            text.starts_with(
                "shadow vaaaaaaaaaaaa (stopped): latest decisions of 2 accounts since 2026-11-20"
            ),
            "{text}"
        );
        assert!(text.contains("pql → activated"), "{text}");
        assert!(text.contains("-1"), "{text}");
    }

    #[test]
    fn status_text_shows_progress_counters_and_errors() {
        let job = json!({
            "version": "vaaaaaaaaaaaa", "action": "activate", "previous": "vbbbbbbbbbbbb",
            "state": "running", "done": 150, "total": 400, "progress": 0.375,
            "started_at": "2026-11-23T16:00:00Z", "updated_at": "2026-11-23T16:05:00Z",
            "finished_at": null, "mapped": 100, "rebuilt": 50, "qualified": 3,
            "not_alerted_again": 7, "failed": 1, "errors": ["account `x`: the record was deleted"],
        });
        let text = status_text(&job);
        assert!(
            text.contains("running — 150/400 accounts (37.5%)"),
            "{text}"
        );
        assert!(text.contains("finished -"), "{text}");
        assert!(text.contains("rebuilt from raw events 50, new qualifications 3, alerted before (not again) 7, failed 1"), "{text}");
        assert!(text.contains("error: account `x`"), "{text}");
    }

    #[test]
    fn status_text_says_when_the_total_is_not_counted_yet() {
        let job = json!({
            "version": "vaaaaaaaaaaaa", "action": "activate", "previous": null,
            "state": "running", "done": 100, "total": null, "progress": null,
            "started_at": "2026-11-23T16:00:00Z", "updated_at": "2026-11-23T16:05:00Z",
            "finished_at": null, "mapped": 100, "rebuilt": 0, "qualified": 0,
            "not_alerted_again": 0, "failed": 0, "errors": [],
        });
        let text = status_text(&job);
        assert!(
            text.contains("running — 100/? accounts (still counting them)"),
            "{text}"
        );
        assert!(!text.contains('%'), "{text}");
    }

    #[test]
    fn preview_text_shows_moves_changes_and_gaps() {
        let answer = json!({
            "draft_version": "vaaaaaaaaaaaa", "active_version": "vbbbbbbbbbbbb",
            "evaluated_at": "2026-11-23T16:00:00Z", "accounts_read": 3, "max_accounts": 5000,
            "truncated": true,
            "comparison": {
                "compared": 2, "unchanged": 1,
                "stages": {"pql": {"before": 0, "after": 1, "entering": 1, "leaving": 0}},
                "tiers": {"hot": {"before": 0, "after": 1, "entering": 1, "leaving": 0}},
                "changes": [{"account": "globex", "from_stage": "activated", "to_stage": "pql",
                             "from_tier": "warm", "to_tier": "hot", "from_score": 10.0, "to_score": 40.0}],
                "changes_truncated": false,
                "untracked": {"milestone `reported`: not tracked": 1}, "untracked_accounts": 1,
                "active_untracked": {}, "active_untracked_accounts": 0,
            }
        });
        let text = preview_text(&answer);
        assert!(text.contains("TRUNCATED"), "{text}");
        assert!(
            text.contains("2 compared, 1 keep their stage and tier, 1 change"),
            "{text}"
        );
        assert!(text.contains("activated → pql"), "{text}");
        assert!(text.contains("+1"), "{text}");
        assert!(text.contains("1 accounts: milestone `reported`"), "{text}");
        assert!(!text.contains("active version cannot judge"), "{text}");
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `pql definition status`: the active version and the progress of the re-evaluation of
/// existing accounts that its activation started.
pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.api)?;
    let listed = client.get("/v1/definitions")?;
    let job = match client.get("/v1/definitions/reevaluation") {
        Ok(job) => Some(job),
        Err(e)
            if e.downcast_ref::<crate::admin_client::ApiError>()
                .is_some_and(|e| e.status == 404) =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    if args.api.json {
        print_json(&json!({ "active": listed["active"], "reevaluation": job }));
        return Ok(());
    }
    println!("active: {}", listed["active"].as_str().unwrap_or("(none)"));
    match job {
        None => println!("re-evaluation: none has run"),
        Some(job) => print!("{}", status_text(&job)),
    }
    Ok(())
}

pub fn status_text(job: &Value) -> String {
    let n = |k: &str| job[k].as_u64().unwrap_or(0);
    let t = |k: &str| job[k].as_str().unwrap_or("-").to_owned();
    let share = match (job["total"].as_u64(), job["progress"].as_f64()) {
        (Some(total), Some(progress)) => format!("{total} accounts ({:.1}%)", progress * 100.0),
        _ => "? accounts (still counting them)".to_owned(),
    };
    let mut out = format!(
        "re-evaluation under {} ({} of {}): {} — {}/{}\n  started {}, updated {}, finished {}\n  mapped {}, rebuilt from raw events {}, new qualifications {}, alerted before (not again) {}, failed {}\n",
        t("version"),
        t("action"),
        job["previous"].as_str().unwrap_or("none"),
        t("state"),
        n("done"),
        share,
        t("started_at"),
        t("updated_at"),
        t("finished_at"),
        n("mapped"),
        n("rebuilt"),
        n("qualified"),
        n("not_alerted_again"),
        n("failed"),
    );
    for e in job["errors"].as_array().into_iter().flatten() {
        out.push_str(&format!("  error: {}\n", e.as_str().unwrap_or("?")));
    }
    out
}

#[derive(Debug, clap::Args)]
pub struct ShadowArgs {
    /// The version to judge beside the active one (as `pql definition list` shows it).
    pub version: String,
    /// Show the report (shadow vs active decisions so far) instead of starting.
    #[arg(long, conflicts_with = "stop")]
    pub report: bool,
    /// Stop shadowing this version.
    #[arg(long)]
    pub stop: bool,
    /// Who starts it (default: $PQL_AUTHOR, else $USER).
    #[arg(long)]
    pub author: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `pql definition shadow VERSION [--report | --stop]`.
pub fn shadow(args: &ShadowArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.api)?;
    let path = format!("/v1/definitions/{}/shadow", encode(&args.version));
    let answer = if args.report {
        client.get(&format!("{path}/report"))?
    } else if args.stop {
        client.delete(&path)?
    } else {
        client.post(&path, &json!({ "author": author(args.author.as_deref())? }))?
    };
    if args.api.json {
        print_json(&answer);
    } else if args.report {
        print!("{}", shadow_report_text(&answer));
    } else if args.stop {
        println!("stopped shadowing {}", args.version);
    } else {
        println!(
            "shadowing {} beside the active {}: decisions are recorded on every account change, never alerting (`pql definition shadow {} --report`)",
            args.version,
            answer["active"].as_str().unwrap_or("(none)"),
            args.version
        );
    }
    Ok(())
}

pub fn shadow_report_text(answer: &Value) -> String {
    let mut out = format!(
        "shadow {} ({}): latest decisions of {} accounts since {}{}\n",
        answer["shadow_version"].as_str().unwrap_or("?"),
        if answer["shadowing"] == json!(true) {
            "running"
        } else {
            "stopped"
        },
        answer["accounts"].as_u64().unwrap_or(0),
        answer["earliest_decision"].as_str().unwrap_or("-"),
        if answer["truncated"] == json!(true) {
            " (TRUNCATED: more decisions than read)"
        } else {
            ""
        },
    );
    out.push_str(&comparison_text(&answer["comparison"]));
    out
}
