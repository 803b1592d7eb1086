//! Rendering a backtest: a table for people, JSON and CSV for tools.

use std::io::{self, Write};

use comfy_table::{presets, CellAlignment, ColumnConstraint, Table, Width};
use pql_engine::backtest::{AccountResult, Accuracy, Summary};
use pql_engine::{Definition, Timestamp};
use serde_json::json;

use crate::backtest::InputStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table of accounts and a summary, for people.
    Table,
    /// One JSON document with every account's decision and reasons.
    Json,
    /// One row per account.
    Csv,
}

/// Up to this many accounts, the table lists them all.
const LIST_ALL_UP_TO: usize = 50;

pub struct Report<'a> {
    pub definition: &'a Definition,
    pub as_of: Option<Timestamp>,
    pub input: &'a InputStats,
    pub results: &'a [AccountResult],
    pub summary: &'a Summary,
    pub accuracy: Option<&'a Accuracy>,
    pub all: bool,
}

pub fn write(out: &mut impl Write, report: &Report<'_>, format: Format) -> io::Result<()> {
    match format {
        Format::Table => table(out, report),
        Format::Json => json(out, report),
        Format::Csv => csv(out, report),
    }
}

fn milestones(r: &AccountResult, separator: &str) -> String {
    r.milestones_met().collect::<Vec<_>>().join(separator)
}

fn days(d: Option<f64>) -> String {
    d.map(|d| format!("{d:.2}")).unwrap_or_default()
}

fn time(t: Option<Timestamp>) -> String {
    t.map(Timestamp::to_rfc3339).unwrap_or_default()
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{:.1}%", 100.0 * x))
}

fn table(out: &mut impl Write, report: &Report<'_>) -> io::Result<()> {
    let d = report.definition;
    writeln!(
        out,
        "{} ({}), as of {}",
        d.name,
        d.version,
        report
            .as_of
            .map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339)
    )?;
    let list_all = report.all || report.results.len() <= LIST_ALL_UP_TO;
    let rows: Vec<&AccountResult> = report
        .results
        .iter()
        .filter(|r| list_all || r.qualified)
        .collect();
    if !rows.is_empty() {
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED);
        t.set_header([
            "account",
            "name",
            "stage",
            "tier",
            "score",
            "qualified at",
            "days to PQL",
            "milestones met",
        ]);
        for r in &rows {
            t.add_row([
                r.account.clone(),
                r.name.clone().unwrap_or_default(),
                r.stage.as_str().to_owned(),
                r.decision.tier.as_str().to_owned(),
                format!("{:.1}", r.decision.score),
                time(r.qualified_at),
                days(r.days_to_pql),
                milestones(r, ", "),
            ]);
        }
        for i in [4, 6] {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        if let Some(c) = t.column_mut(1) {
            c.set_constraint(ColumnConstraint::UpperBoundary(Width::Fixed(28)));
        }
        writeln!(out, "{t}")?;
    }
    let omitted = report.results.len() - rows.len();
    if omitted > 0 {
        writeln!(
            out,
            "{} qualified account{} listed; {omitted} other{} not shown (--all lists every account)",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            if omitted == 1 { "" } else { "s" },
        )?;
    }

    let s = report.summary;
    let share = if s.accounts > 0 {
        format!(" ({:.1}%)", 100.0 * s.qualified as f64 / s.accounts as f64)
    } else {
        String::new()
    };
    writeln!(out)?;
    writeln!(
        out,
        "accounts: {}   qualified: {}{share}   median days from sign-up to PQL: {}",
        s.accounts,
        s.qualified,
        s.median_days_to_pql
            .map_or_else(|| "n/a".to_owned(), |d| format!("{d:.1}"))
    )?;
    let stages: Vec<String> = s
        .by_stage
        .iter()
        .map(|(stage, n)| format!("{} {n}", stage.as_str()))
        .collect();
    writeln!(
        out,
        "by stage: {}",
        if stages.is_empty() {
            "none".to_owned()
        } else {
            stages.join(", ")
        }
    )?;
    let tiers: Vec<String> = s
        .by_tier
        .iter()
        .map(|(tier, n)| format!("{} {n}", tier.as_str()))
        .collect();
    writeln!(out, "by tier:  {}", tiers.join(", "))?;

    if let Some(a) = report.accuracy {
        writeln!(out)?;
        writeln!(
            out,
            "against outcomes: {} of {} accounts converted (base rate {})",
            a.converted,
            a.accounts,
            percent(a.base_rate)
        )?;
        writeln!(
            out,
            "  precision  {:>7}  qualified accounts that converted after qualifying",
            percent(a.precision)
        )?;
        writeln!(
            out,
            "  recall     {:>7}  converted accounts that had qualified in time",
            percent(a.recall)
        )?;
        writeln!(
            out,
            "  lift       {:>7}  precision over the base rate",
            a.lift
                .map_or_else(|| "n/a".to_owned(), |l| format!("{l:.2}x"))
        )?;
        writeln!(
            out,
            "  true positives {}, false positives {}, late {}, false negatives {} (late included)",
            a.true_positives, a.false_positives, a.late, a.false_negatives
        )?;
    }
    Ok(())
}

fn json(out: &mut impl Write, report: &Report<'_>) -> io::Result<()> {
    let mut doc = json!({
        "definition": {
            "name": report.definition.name,
            "version": report.definition.version,
        },
        "as_of": report.as_of,
        "input": report.input,
        "accounts": report.results,
        "summary": report.summary,
    });
    if let Some(a) = report.accuracy {
        doc["accuracy"] = json!(a);
    }
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

fn csv(out: &mut impl Write, report: &Report<'_>) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "account",
        "name",
        "stage",
        "tier",
        "score",
        "qualified",
        "qualified_at",
        "signed_up_at",
        "days_to_pql",
        "milestones_met",
    ])?;
    for r in report.results {
        w.write_record([
            r.account.as_str(),
            r.name.as_deref().unwrap_or_default(),
            r.stage.as_str(),
            r.decision.tier.as_str(),
            &r.decision.score.to_string(),
            if r.qualified { "true" } else { "false" },
            &time(r.qualified_at),
            &time(r.signed_up_at),
            &days(r.days_to_pql),
            &milestones(r, ";"),
        ])?;
    }
    w.flush()?;
    Ok(())
}
