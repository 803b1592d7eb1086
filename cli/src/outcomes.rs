//! Known outcomes as CSV: `account_id,converted_at`, an empty `converted_at` meaning the
//! account did not convert.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use pql_engine::Timestamp;

const ACCOUNT: &str = "account_id";
const CONVERTED: &str = "converted_at";
/// Errors listed before the rest are only counted.
const MAX_LISTED: usize = 20;

pub struct Outcomes {
    /// Accounts that converted, with when.
    pub conversions: HashMap<String, Timestamp>,
    /// Rows read (converted or not).
    pub rows: usize,
}

pub fn read(path: &Path) -> anyhow::Result<Outcomes> {
    let name = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot open outcomes file {name}"))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{name}:1: cannot read the header"))?
        .clone();
    let column = |wanted: &str| headers.iter().position(|h| h == wanted);
    let (Some(account_col), Some(converted_col)) = (column(ACCOUNT), column(CONVERTED)) else {
        bail!(
            "{name}:1: the header must name the columns {ACCOUNT} and {CONVERTED} \
             (found: {})",
            if headers.is_empty() {
                "nothing".to_owned()
            } else {
                headers.iter().collect::<Vec<_>>().join(", ")
            }
        );
    };

    let mut conversions = HashMap::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(format!("{name}:{line}: unreadable row: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        rows += 1;
        let (Some(account), Some(converted)) = (record.get(account_col), record.get(converted_col))
        else {
            problems.push(format!(
                "{name}:{line}: the row has {} column{}; expected {} ({ACCOUNT},{CONVERTED})",
                record.len(),
                if record.len() == 1 { "" } else { "s" },
                headers.len()
            ));
            continue;
        };
        if account.is_empty() {
            problems.push(format!(
                "{name}:{line}: {ACCOUNT} is empty (allowed: the account's groupId)"
            ));
            continue;
        }
        if let Some(first) = first_line.insert(account.to_owned(), line) {
            problems.push(format!(
                "{name}:{line}: account `{account}` appears twice (first on line {first})"
            ));
            continue;
        }
        if converted.is_empty() {
            continue;
        }
        match Timestamp::parse(converted) {
            Ok(at) => {
                conversions.insert(account.to_owned(), at);
            }
            Err(_) => problems.push(format!(
                "{name}:{line}: {CONVERTED} `{converted}` is not a time (allowed: an ISO-8601 \
                 time with a zone such as 2026-02-01T12:00:00Z, a date such as 2026-02-01, or \
                 empty for an account that did not convert)"
            )),
        }
    }
    if !problems.is_empty() {
        let mut message = String::new();
        for p in problems.iter().take(MAX_LISTED) {
            let _ = writeln!(message, "{p}");
        }
        if problems.len() > MAX_LISTED {
            let _ = writeln!(message, "... and {} more", problems.len() - MAX_LISTED);
        }
        let _ = write!(
            message,
            "{name}: {} bad row{} in the outcomes",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        bail!(message);
    }
    Ok(Outcomes { conversions, rows })
}

pub fn write(path: &Path, outcomes: &[(String, Option<Timestamp>)]) -> anyhow::Result<()> {
    let name = path.display();
    let mut writer = csv::Writer::from_path(path)
        .with_context(|| format!("cannot create outcomes file {name}"))?;
    let result: csv::Result<()> = (|| {
        writer.write_record([ACCOUNT, CONVERTED])?;
        for (account, converted) in outcomes {
            let converted = converted.map(|t| t.to_rfc3339()).unwrap_or_default();
            writer.write_record([account.as_str(), converted.as_str()])?;
        }
        writer.flush()?;
        Ok(())
    })();
    result.with_context(|| format!("cannot write outcomes file {name}"))
}
