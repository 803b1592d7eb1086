//! `pql definition validate FILE`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pql_engine::Definition;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The definition file: TOML, or JSON when the name ends in `.json`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Reads and compiles a definition. Invalid definitions come back as
/// [`pql_engine::definition::DefinitionErrors`] inside the error, for `main` to print.
pub fn load(path: &Path) -> anyhow::Result<Definition> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read definition file {}", path.display()))?;
    Ok(Definition::load(&path.display().to_string(), &source)?)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let definition = load(&args.file)?;
    println!("{}: valid", args.file.display());
    println!("name:            {}", definition.name);
    println!("version:         {}", definition.version);
    println!("milestones:      {}", definition.milestones.len());
    println!("scoring rules:   {}", definition.scoring.events.len());
    println!("fit conditions:  {}", definition.fit.conditions.len());
    println!("gates:           {}", definition.gates.len());
    Ok(())
}
