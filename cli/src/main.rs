//! `pql`: check qualification definitions, backtest them on recorded Segment events, and
//! generate realistic test data.
//!
//! Exit codes: 0 success, 1 bad input (unreadable file, invalid definition, bad outcomes),
//! 2 usage (unknown flag, missing argument: reported by clap).

mod alerts;
mod backtest;
mod demo;
mod generate;
mod input;
mod local;
mod outcomes;
mod report;
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
}

#[derive(Debug, Subcommand)]
enum DefinitionCommand {
    /// Check a definition file (TOML, or JSON by extension) and summarise it.
    Validate(validate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Definition(DefinitionCommand::Validate(args)) => validate::run(&args),
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
