//! `pql alerts`: delivery states (`list`, `list --failed`), `replay` of a parked delivery,
//! sales `feedback` on an alert, and a tenant's notification `settings`.
//!
//! These talk to DynamoDB directly: the tables of the environment (`TENANTS_TABLE`,
//! `ALERTS_TABLE`, `STATE_TABLE`, `EVENTS_TABLE`, AWS credentials as usual), or those of a
//! local stack with `--dynamodb-endpoint URL --table-prefix PREFIX` (`pql local` prints both).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use pql_notify::channels::{DirectoryMailer, Mailer, SesMailer};
use pql_notify::{AlertOutcome, Notifier, Outcome, Settings};
use pql_store::deliveries::{DeliveryKey, DeliveryState, Feedback};
use pql_store::tenants::TenantId;
use pql_store::{Store, Tables};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AlertsCommand,
    /// DynamoDB endpoint (a local stack's); default: AWS, from the environment.
    #[arg(long, global = true)]
    pub dynamodb_endpoint: Option<String>,
    /// The local stack's table prefix; default: the table names from the environment.
    #[arg(long, global = true)]
    pub table_prefix: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Every delivery (alert x destination) and its state; `--failed`: parked ones only.
    List {
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        tenant: Option<String>,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Send a parked delivery again (ID as `pql alerts list` shows it:
    /// TENANT/ACCOUNT/SEQUENCE/DESTINATION).
    Replay {
        id: String,
        /// Write e-mails to this directory instead of sending them through SES.
        #[arg(long)]
        email_dir: Option<PathBuf>,
    },
    /// Record what sales made of an alert (ID: TENANT/ACCOUNT/SEQUENCE).
    Feedback {
        id: String,
        /// accepted, rejected (with --reason), converted or lost.
        #[arg(long)]
        outcome: String,
        #[arg(long)]
        reason: Option<String>,
        /// Who says so (e.g. the salesperson's e-mail).
        #[arg(long)]
        by: Option<String>,
    },
    /// Sales outcomes as the CSV `pql backtest --outcomes` reads (`account_id,converted_at`):
    /// accounts sales marked converted, with when; accounts marked lost or rejected, with an
    /// empty `converted_at`; accounts only accepted so far are still open and left out.
    Outcomes {
        /// Where to write the CSV.
        #[arg(long)]
        output: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
        /// Only feedback on alerts decided by this definition version.
        #[arg(long)]
        version: Option<String>,
    },
    /// Check a notification settings file (TOML, or JSON by extension) and store it for the
    /// tenant (`--check`: only check).
    Settings {
        file: PathBuf,
        #[arg(long, default_value = "local")]
        tenant: String,
        #[arg(long)]
        check: bool,
    },
}

/// The outcomes sales can record.
pub const OUTCOMES: [&str; 4] = pql_store::deliveries::FEEDBACK_OUTCOMES;

async fn store(args: &Args) -> anyhow::Result<Store> {
    let tables = match &args.table_prefix {
        Some(prefix) => Tables::with_prefix(prefix),
        None => Tables::from_env()
            .context("no --table-prefix, and the environment does not name the tables")?,
    };
    Ok(match &args.dynamodb_endpoint {
        Some(endpoint) => Store::new(pql_store::local_client(endpoint), tables),
        None => {
            let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            Store::new(aws_sdk_dynamodb::Client::new(&config), tables)
        }
    })
}

/// `TENANT/ACCOUNT/SEQUENCE` (an alert).
fn parse_alert_id(id: &str) -> anyhow::Result<(TenantId, String, u32)> {
    let bad =
        |why: &str| anyhow!("`{id}` is not an alert id: {why} (expected TENANT/ACCOUNT/SEQUENCE)");
    let (tenant, rest) = id.split_once('/').ok_or_else(|| bad("no `/`"))?;
    let (account, sequence) = rest.rsplit_once('/').ok_or_else(|| bad("too few parts"))?;
    let tenant = TenantId::parse(tenant).map_err(|e| bad(&e))?;
    let sequence = sequence
        .parse::<u32>()
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| bad("the sequence is not a number >= 1"))?;
    if account.is_empty() {
        return Err(bad("empty account"));
    }
    Ok((tenant, account.to_owned(), sequence))
}

/// Checks a feedback outcome and its reason (the store's rules, worded for the flags).
pub fn check_feedback(outcome: &str, reason: Option<&str>, by: Option<&str>) -> anyhow::Result<()> {
    use pql_store::deliveries::FeedbackError;
    match pql_store::deliveries::check_feedback(outcome, reason, by) {
        Ok(()) => Ok(()),
        Err(FeedbackError::UnknownOutcome(o)) => bail!(
            "--outcome `{o}` is not an outcome (allowed: {})",
            OUTCOMES.join(", ")
        ),
        Err(FeedbackError::ReasonRequired) => bail!("--outcome rejected needs a --reason (why sales rejected it feeds the definition's review)"),
        Err(FeedbackError::TooLong(field)) => bail!("--{field} is too long (allowed: at most 1,000 characters)"),
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered { attempts } => format!("delivered ({attempts} attempt(s))"),
        Outcome::Parked { attempts, error } => {
            format!("parked again after {attempts} attempt(s): {error}")
        }
        Outcome::Suppressed(reason) => reason.clone(),
        Outcome::AlreadyDone(state) => format!("already {}", state.as_str()),
        Outcome::InFlight => "being sent by another consumer".into(),
        Outcome::LeaseLost => "sent, but its claim expired first".into(),
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match &args.command {
            AlertsCommand::Settings { file, tenant, check } => {
                let tenant = TenantId::parse(tenant).map_err(|e| anyhow!("--tenant: {e}"))?;
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let settings = Settings::parse_file(&file.display().to_string(), &text)?;
                println!(
                    "{}: {} destination(s), {} route(s) and the default, {} suppression rule(s), cooldown {} days",
                    file.display(),
                    settings.destinations.len(),
                    settings.routes.len() - 1,
                    settings.suppress_when.len(),
                    settings.cooldown_days
                );
                if !check {
                    store(args).await?.put_notify_settings(&tenant, &settings.to_json()).await?;
                    println!("stored for tenant {tenant}");
                }
                Ok(())
            }
            AlertsCommand::Outcomes { output, tenant, version } => {
                let tenant = tenant
                    .as_deref()
                    .map(TenantId::parse)
                    .transpose()
                    .map_err(|e| anyhow!("--tenant: {e}"))?;
                let (_, feedback) = store(args).await?.all_deliveries(tenant.as_ref()).await?;
                let outcomes = outcomes_from_feedback(&feedback, version.as_deref())?;
                crate::outcomes::write(output, &outcomes)?;
                let converted = outcomes.iter().filter(|(_, at)| at.is_some()).count();
                println!(
                    "{}: {} accounts ({converted} converted, {} not)",
                    output.display(),
                    outcomes.len(),
                    outcomes.len() - converted
                );
                Ok(())
            }
            AlertsCommand::List { failed, tenant, format } => {
                let tenant = tenant
                    .as_deref()
                    .map(TenantId::parse)
                    .transpose()
                    .map_err(|e| anyhow!("--tenant: {e}"))?;
                let (deliveries, feedback) = store(args).await?.all_deliveries(tenant.as_ref()).await?;
                let shown: Vec<_> = deliveries
                    .iter()
                    .filter(|d| !failed || d.state == DeliveryState::Parked)
                    .collect();
                match format.as_str() {
                    "json" => {
                        let rows: Vec<_> = shown
                            .iter()
                            .map(|d| {
                                serde_json::json!({
                                    "id": d.key.id(),
                                    "state": d.state.as_str(),
                                    "tier": d.tier,
                                    "attempts": d.attempts,
                                    "last_error": d.last_error,
                                    "reason": d.reason,
                                    "updated_at": d.updated_at,
                                    "delivered_at": d.delivered_at,
                                })
                            })
                            .collect();
                        let fb: Vec<_> = feedback
                            .iter()
                            .map(|f| {
                                serde_json::json!({
                                    "alert": format!("{}/{}/{}", f.tenant, f.account, f.sequence),
                                    "outcome": f.outcome, "reason": f.reason, "by": f.by,
                                    "at": f.at, "definition_version": f.definition_version,
                                })
                            })
                            .collect();
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&serde_json::json!({"deliveries": rows, "feedback": fb}))?
                        );
                    }
                    "table" => {
                        if shown.is_empty() {
                            println!("{}", if *failed { "no failed deliveries" } else { "no deliveries" });
                        }
                        for d in &shown {
                            let detail = d
                                .last_error
                                .as_deref()
                                .or(d.reason.as_deref())
                                .unwrap_or("");
                            println!(
                                "{:<48} {:<10} {:<5} attempts {:<3} {} {}",
                                d.key.id(),
                                d.state.as_str(),
                                d.tier.as_deref().unwrap_or("-"),
                                d.attempts,
                                d.updated_at.as_deref().unwrap_or("-"),
                                detail
                            );
                        }
                        if !failed && !feedback.is_empty() {
                            println!("\nfeedback:");
                            for f in &feedback {
                                println!(
                                    "{}/{}/{} {} {} (definition {}, {}{})",
                                    f.tenant,
                                    f.account,
                                    f.sequence,
                                    f.outcome,
                                    f.reason.as_deref().unwrap_or(""),
                                    f.definition_version,
                                    f.at,
                                    f.by.as_deref().map(|b| format!(", by {b}")).unwrap_or_default()
                                );
                            }
                        }
                    }
                    other => bail!("--format `{other}` (allowed: table, json)"),
                }
                Ok(())
            }
            AlertsCommand::Replay { id, email_dir } => {
                let key = DeliveryKey::parse(id).map_err(|e| anyhow!(e))?;
                let store = store(args).await?;
                let mailer: Arc<dyn Mailer> = match email_dir {
                    Some(dir) => Arc::new(DirectoryMailer { dir: dir.clone() }),
                    None => Arc::new(SesMailer::from_env(None).await),
                };
                let notifier = Notifier::new(store, mailer);
                match notifier.replay(&key).await? {
                    AlertOutcome::NoSettings => bail!("tenant {} has no notification settings", key.tenant),
                    AlertOutcome::Routed { destinations, .. } => {
                        let outcome = destinations
                            .iter()
                            .find(|(d, _)| *d == key.destination)
                            .map(|(_, o)| describe(o))
                            .unwrap_or_else(|| "no longer routed to this destination: not sent".into());
                        println!("{}: {outcome}", key.id());
                        Ok(())
                    }
                }
            }
            AlertsCommand::Feedback { id, outcome, reason, by } => {
                check_feedback(outcome, reason.as_deref(), by.as_deref())?;
                let (tenant, account, sequence) = parse_alert_id(id)?;
                let store = store(args).await?;
                let alert = store
                    .alert(&tenant, &account, sequence)
                    .await?
                    .ok_or_else(|| anyhow!("no alert {id}"))?;
                store
                    .put_feedback(&Feedback {
                        tenant,
                        account,
                        sequence,
                        outcome: outcome.clone(),
                        reason: reason.clone(),
                        by: by.clone(),
                        at: pql_engine::Timestamp::now().to_rfc3339(),
                        definition_version: alert.definition_version.clone(),
                    })
                    .await?;
                println!("{id}: {outcome} (definition {})", alert.definition_version);
                Ok(())
            }
        }
    })
}

/// Per account: converted (at the earliest `converted` feedback) if sales ever said so, else
/// not converted if it said lost or rejected; accounts with only `accepted` are left out (still
/// open). Sorted by account.
fn outcomes_from_feedback(
    feedback: &[Feedback],
    version: Option<&str>,
) -> anyhow::Result<Vec<(String, Option<pql_engine::Timestamp>)>> {
    use std::collections::BTreeMap;
    let mut by_account: BTreeMap<String, Option<pql_engine::Timestamp>> = BTreeMap::new();
    for f in feedback {
        if version.is_some_and(|v| v != f.definition_version) {
            continue;
        }
        match f.outcome.as_str() {
            "converted" => {
                let at = pql_engine::Timestamp::parse(&f.at).map_err(|e| {
                    anyhow!(
                        "feedback on {}/{}: time {:?}: {e}",
                        f.account,
                        f.sequence,
                        f.at
                    )
                })?;
                let entry = by_account.entry(f.account.clone()).or_insert(Some(at));
                *entry = Some(entry.map_or(at, |t| t.min(at)));
            }
            "lost" | "rejected" => {
                by_account.entry(f.account.clone()).or_insert(None);
            }
            _ => {}
        }
    }
    Ok(by_account.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_conversions_and_closed_accounts_only() {
        let fb = |account: &str, sequence: u32, outcome: &str, at: &str, version: &str| Feedback {
            tenant: TenantId::parse("acme").unwrap(),
            account: account.into(),
            sequence,
            outcome: outcome.into(),
            reason: None,
            by: None,
            at: at.into(),
            definition_version: version.into(),
        };
        let feedback = [
            fb("b", 1, "lost", "2026-03-01T00:00:00Z", "v1"),
            fb("a", 2, "converted", "2026-03-05T00:00:00Z", "v2"),
            fb("a", 1, "converted", "2026-03-02T00:00:00Z", "v1"),
            fb("c", 1, "accepted", "2026-03-01T00:00:00Z", "v1"),
            fb("d", 1, "rejected", "2026-03-01T00:00:00Z", "v2"),
            fb("d", 2, "converted", "2026-03-09T00:00:00Z", "v2"),
        ];
        let at = |t: &str| Some(pql_engine::Timestamp::parse(t).unwrap());
        assert_eq!(
            outcomes_from_feedback(&feedback, None).unwrap(),
            vec![
                ("a".to_owned(), at("2026-03-02T00:00:00Z")),
                ("b".to_owned(), None),
                ("d".to_owned(), at("2026-03-09T00:00:00Z")),
            ]
        );
        assert_eq!(
            outcomes_from_feedback(&feedback, Some("v2")).unwrap(),
            vec![
                ("a".to_owned(), at("2026-03-05T00:00:00Z")),
                ("d".to_owned(), at("2026-03-09T00:00:00Z")),
            ]
        );
        let mut bad = feedback[1].clone();
        bad.at = "yesterday".into();
        let e = outcomes_from_feedback(&[bad], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/2") && e.contains("yesterday"), "{e}");
    }

    #[test]
    fn feedback_and_ids_are_checked() {
        assert!(check_feedback("accepted", None, None).is_ok());
        let e = check_feedback("won", None, None).unwrap_err().to_string();
        assert!(
            e.contains("allowed: accepted, rejected, converted, lost"),
            "{e}"
        );
        let e = check_feedback("rejected", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a --reason"), "{e}");
        assert!(check_feedback("rejected", Some("student project"), None).is_ok());
        let e = check_feedback("lost", None, Some(&"x".repeat(1001)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--by is too long"), "{e}");
        assert_eq!(
            parse_alert_id("acme/org/1/2").unwrap(),
            (TenantId::parse("acme").unwrap(), "org/1".to_owned(), 2)
        );
        assert!(parse_alert_id("acme/x/0")
            .unwrap_err()
            .to_string()
            .contains(">= 1"));
    }
}
