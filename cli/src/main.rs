//! `pql`: check qualification definitions, backtest them on recorded Segment events, and
//! generate realistic test data.
//!
//! Exit codes: 0 success, 1 bad input (unreadable file, invalid definition, bad outcomes),
//! 2 usage (unknown flag, missing argument: reported by clap).

mod accounts;
mod admin_client;
mod alerts;
mod backtest;
mod definition;
mod demo;
mod generate;
mod input;
mod local;
mod outcomes;
mod report;
mod report_html;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pql_engine::definition::DefinitionErrors;

#[derive(Debug, Parser)]
#[command(
    name = "pql",
    version,
    about = "Product-qualified leads: check definitions, backtest them on history, generate test data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with qualification definitions.
    #[command(subcommand)]
    Definition(DefinitionCommand),
    /// Replay recorded Segment events through a definition: who would have qualified, when,
    /// and (with known outcomes) how well that predicts buying.
    Backtest(backtest::Args),
    /// Write realistic simulated trial events (and who bought) for demos and backtests.
    Generate(generate::Args),
    /// Run the whole pipeline locally (DynamoDB Local, ingest, stream consumers) until Ctrl-C.
    Local(local::StackArgs),
    /// The local stack fed with simulated trial telemetry, with a live view of qualifications.
    Demo(demo::Args),
    /// Sales alerts: deliveries (`list [--failed]`), `replay ID`, `feedback ID`, `settings FILE`.
    Alerts(alerts::Args),
    /// Accounts through the admin API: `list` (by stage and tier), `show ID`, `funnel`,
    /// `precision` (per definition version).
    #[command(subcommand)]
    Accounts(accounts::Command),
}

#[derive(Debug, Subcommand)]
enum DefinitionCommand {
    /// Check a definition file (TOML, or JSON by extension) and summarise it.
    Validate(validate::Args),
    /// Push a definition file to the admin API as a new version (validated there).
    Push(definition::PushArgs),
    /// The tenant's definition versions, the active one marked.
    List(definition::ListArgs),
    /// One version's canonical content.
    Show(definition::ShowArgs),
    /// A unified diff of two versions' canonical content.
    Diff(definition::DiffArgs),
    /// Make a version the active one (what the pipeline evaluates).
    Activate(definition::ActivateArgs),
    /// Activate the version that was active before the current one.
    Rollback(definition::RollbackArgs),
    /// What activating a draft (a file or a pushed version) would change: accounts moving in
    /// and out of each stage and tier, judged now against stored state.
    Preview(definition::PreviewArgs),
    /// The active version and the progress of re-evaluating existing accounts under it.
    Status(definition::StatusArgs),
    /// Judge a version beside the active one on live changes, never alerting (`--report`:
    /// how the two differ so far; `--stop`).
    Shadow(definition::ShadowArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Definition(DefinitionCommand::Validate(args)) => validate::run(&args),
        Command::Definition(DefinitionCommand::Push(args)) => definition::push(&args),
        Command::Definition(DefinitionCommand::List(args)) => definition::list(&args),
        Command::Definition(DefinitionCommand::Show(args)) => definition::show(&args),
        Command::Definition(DefinitionCommand::Diff(args)) => definition::diff(&args),
        Command::Definition(DefinitionCommand::Activate(args)) => definition::activate(&args),
        Command::Definition(DefinitionCommand::Rollback(args)) => definition::rollback(&args),
        Command::Definition(DefinitionCommand::Preview(args)) => definition::preview(&args),
        Command::Definition(DefinitionCommand::Status(args)) => definition::status(&args),
        Command::Definition(DefinitionCommand::Shadow(args)) => definition::shadow(&args),
        Command::Accounts(command) => accounts::run(&command),
        Command::Backtest(args) => backtest::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Local(args) => local::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Alerts(args) => alerts::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&error);
            ExitCode::from(1)
        }
    }
}

fn report_error(error: &anyhow::Error) {
    if let Some(errors) = error.downcast_ref::<DefinitionErrors>() {
        // One `file:line:col: field: message (allowed: ...)` per line, as editors expect.
        eprintln!("{errors}");
        let n = errors.errors.len();
        eprintln!(
            "error: {} is not a valid definition ({n} problem{})",
            errors.file,
            if n == 1 { "" } else { "s" }
        );
    } else if let Some(api) = error
        .downcast_ref::<admin_client::ApiError>()
        .filter(|e| e.code == "invalid_definition")
    {
        // The API's validation, printed as `pql definition validate` prints it.
        for e in api.body["errors"].as_array().into_iter().flatten() {
            let text = |k: &str| e[k].as_str().unwrap_or("");
            let field = match text("field") {
                "" => String::new(),
                f => format!("{f}: "),
            };
            let allowed = match text("allowed") {
                "" => String::new(),
                a => format!(" (allowed: {a})"),
            };
            eprintln!("{}: {field}{}{allowed}", text("location"), text("message"));
        }
        eprintln!(
            "error: the admin API refused the definition ({} {})",
            api.status, api.code
        );
    } else {
        eprintln!("error: {error:#}");
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
