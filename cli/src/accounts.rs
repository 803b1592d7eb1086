//! `pql accounts list | show ID`: accounts, their stage, tier, decision and reasons, through
//! the admin API.

use comfy_table::{presets, Table};
use serde_json::Value;

use crate::admin_client::{encode, AdminClient, ApiArgs};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Accounts by stage and tier.
    List(ListArgs),
    /// One account: its stage, current decision with reasons, and alerts.
    Show(ShowArgs),
    /// Accounts per stage reached on each of the last days, and the median days from sign-up
    /// to activation, each milestone and PQL.
    Funnel(FunnelArgs),
    /// Per definition version: alerts, sales outcomes and precision.
    Precision(PrecisionArgs),
}

#[derive(Debug, clap::Args)]
pub struct FunnelArgs {
    /// How many days back (1 to 365).
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct PrecisionArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only accounts in this stage (signed_up, activated, pql, accepted, rejected, converted,
    /// lost, disqualified).
    #[arg(long)]
    pub stage: Option<String>,
    /// Only accounts in this tier now (cold, warm, hot).
    #[arg(long)]
    pub tier: Option<String>,
    /// At most this many accounts (the API is paged; pages are followed until then).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The account id (Segment `groupId`).
    pub account: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub fn run(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Show(args) => show(args),
        Command::List(args) => list(args),
        Command::Funnel(args) => funnel(args),
        Command::Precision(args) => precision(args),
    }
}

fn days(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_owned(), |d| format!("{d:.1}"))
}

fn funnel(args: &FunnelArgs) -> anyhow::Result<()> {
    let answer = AdminClient::new(&args.api)?.get(&format!("/v1/funnel?days={}", args.days))?;
    if args.api.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).expect("JSON prints")
        );
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header(["day", "signed up", "activated", "PQL"]);
    for d in answer["over_time"].as_array().into_iter().flatten() {
        table.add_row([
            d["date"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(10)
                .collect::<String>(),
            d["signed_up"].to_string(),
            d["activated"].to_string(),
            d["pql"].to_string(),
        ]);
    }
    println!("{table}");
    let m = &answer["median_days_from_signup"];
    println!(
        "median days from sign-up: activated {}, PQL {}",
        days(&m["activated"]["median_days"]),
        days(&m["pql"]["median_days"])
    );
    if let Some(milestones) = m["milestones"].as_object() {
        for (name, v) in milestones {
            println!(
                "  {name}: {} ({} accounts)",
                days(&v["median_days"]),
                v["accounts"]
            );
        }
    }
    if answer["truncated"] == Value::Bool(true) {
        println!("(only the first {} accounts were read)", answer["accounts"]);
    }
    Ok(())
}

fn precision(args: &PrecisionArgs) -> anyhow::Result<()> {
    let answer = AdminClient::new(&args.api)?.get("/v1/precision")?;
    if args.api.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).expect("JSON prints")
        );
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "definition",
        "name",
        "alerts",
        "outcomes",
        "converted",
        "precision",
    ]);
    for v in answer["versions"].as_array().into_iter().flatten() {
        table.add_row([
            v["definition_version"].as_str().unwrap_or("").to_owned(),
            v["name"].as_str().unwrap_or("").to_owned(),
            v["alerts"].to_string(),
            v["with_final_outcome"].to_string(),
            v["converted"].to_string(),
            v["precision"]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |p| format!("{:.1}%", 100.0 * p)),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let api = &args.api;
    if args.limit == 0 {
        anyhow::bail!("--limit must be at least 1");
    }
    let client = AdminClient::new(api)?;
    let mut accounts: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut last = Value::Null;
    while accounts.len() < args.limit {
        let mut query = vec![format!("limit={}", (args.limit - accounts.len()).min(200))];
        if let Some(stage) = &args.stage {
            query.push(format!("stage={}", encode(stage)));
        }
        if let Some(tier) = &args.tier {
            query.push(format!("tier={}", encode(tier)));
        }
        if let Some(c) = &cursor {
            query.push(format!("cursor={}", encode(c)));
        }
        let page = client.get(&format!("/v1/accounts?{}", query.join("&")))?;
        accounts.extend(page["accounts"].as_array().cloned().unwrap_or_default());
        cursor = page["next"].as_str().map(str::to_owned);
        last = page;
        if cursor.is_none() {
            break;
        }
    }
    accounts.truncate(args.limit);
    if api.json {
        let out = serde_json::json!({
            "definition_version": last["definition_version"],
            "evaluated_at": last["evaluated_at"],
            "accounts": accounts,
            "more": cursor.is_some(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("JSON prints")
        );
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.set_header(["account", "name", "stage", "tier", "score", "PQLs"]);
    for a in &accounts {
        let text = |k: &str| a[k].as_str().unwrap_or("").to_owned();
        table.add_row([
            text("account"),
            text("name"),
            text("stage"),
            text("tier"),
            a["score"]
                .as_f64()
                .map(|s| format!("{s:.1}"))
                .unwrap_or_default(),
            a["qualifications"].to_string(),
        ]);
    }
    println!("{table}");
    println!(
        "{} account{} (definition {}){}",
        accounts.len(),
        if accounts.len() == 1 { "" } else { "s" },
        last["definition_version"].as_str().unwrap_or("?"),
        if cursor.is_some() {
            "; more: raise --limit"
        } else {
            ""
        }
    );
    Ok(())
}

fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let answer =
        AdminClient::new(&args.api)?.get(&format!("/v1/accounts/{}", encode(&args.account)))?;
    if args.api.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).expect("JSON prints")
        );
        return Ok(());
    }
    let d = &answer["decision"];
    println!(
        "{}{}: stage {}, tier {}, score {}",
        answer["account"].as_str().unwrap_or("?"),
        answer["name"]
            .as_str()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        answer["stage"].as_str().unwrap_or("?"),
        d["tier"].as_str().unwrap_or("n/a"),
        d["score"]
            .as_f64()
            .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1}")),
    );
    for reason in d["reasons"].as_array().into_iter().flatten() {
        println!("  - {}", reason.as_str().unwrap_or(""));
    }
    for alert in answer["alerts"].as_array().into_iter().flatten() {
        println!(
            "alert #{}: {} at {} (definition {})",
            alert["sequence"],
            alert["tier"].as_str().unwrap_or("?"),
            alert["qualified_at"].as_str().unwrap_or("?"),
            alert["definition_version"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
