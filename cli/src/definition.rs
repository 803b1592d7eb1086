//! `pql definition push | list | show | diff | activate | rollback`: versioned definitions
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
