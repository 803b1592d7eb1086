//! What a definition would have done on history: per-account results, a summary, and — with
//! known outcomes — precision, recall and lift. Pure: the CLI reads files and prints.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::definition::Tier;
use crate::evaluate::{evaluate, Decision};
use crate::ledger::Ledger;
use crate::lifecycle::Stage;
use crate::time::{Timestamp, MS_PER_DAY};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountResult {
    pub account: String,
    pub name: Option<String>,
    /// Lifecycle stage at the as-of time.
    pub stage: Stage,
    pub qualified: bool,
    /// When the account first became a PQL (event time).
    pub qualified_at: Option<Timestamp>,
    pub signed_up_at: Option<Timestamp>,
    pub days_to_pql: Option<f64>,
    /// The decision at the as-of time.
    pub decision: Decision,
}

impl AccountResult {
    pub fn milestones_met(&self) -> impl Iterator<Item = &str> {
        self.decision
            .milestones
            .iter()
            .filter(|m| m.met)
            .map(|m| m.name.as_str())
    }
}

/// Results for every account, sorted by account id; decisions evaluated at `as_of`.
pub fn results(ledger: &Ledger<'_>, as_of: Timestamp) -> Vec<AccountResult> {
    let definition = ledger.definition();
    let mut out: Vec<AccountResult> = ledger
        .accounts()
        .map(|(id, entry)| {
            let decision = evaluate(definition, &entry.state, as_of);
            let qualified_at = entry.lifecycle.first_qualified_at;
            let signed_up_at = decision.signed_up_at;
            let days_to_pql = match (signed_up_at, qualified_at) {
                (Some(s), Some(q)) => Some(((q.0 - s.0).max(0)) as f64 / MS_PER_DAY as f64),
                _ => None,
            };
            // The lifecycle is sticky (a PQL stays one while sales works it); a gate that
            // holds at the as-of time still shows.
            let stage =
                if decision.stage == Stage::Disqualified && entry.lifecycle.qualifications == 0 {
                    Stage::Disqualified
                } else {
                    entry.lifecycle.stage
                };
            AccountResult {
                account: id.to_owned(),
                name: entry.state.name().map(str::to_owned),
                stage,
                qualified: qualified_at.is_some(),
                qualified_at,
                signed_up_at,
                days_to_pql,
                decision,
            }
        })
        .collect();
    out.sort_by(|a, b| a.account.cmp(&b.account));
    out
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub accounts: usize,
    pub qualified: usize,
    pub by_stage: BTreeMap<Stage, usize>,
    pub by_tier: BTreeMap<Tier, usize>,
    pub median_days_to_pql: Option<f64>,
}

pub fn summarize(results: &[AccountResult]) -> Summary {
    let mut by_stage: BTreeMap<Stage, usize> = BTreeMap::new();
    let mut by_tier: BTreeMap<Tier, usize> = [Tier::Cold, Tier::Warm, Tier::Hot]
        .into_iter()
        .map(|t| (t, 0))
        .collect();
    let mut days = Vec::new();
    for r in results {
        *by_stage.entry(r.stage).or_default() += 1;
        *by_tier.entry(r.decision.tier).or_default() += 1;
        days.extend(r.days_to_pql);
    }
    Summary {
        accounts: results.len(),
        qualified: results.iter().filter(|r| r.qualified).count(),
        by_stage,
        by_tier,
        median_days_to_pql: median(&mut days),
    }
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// How the qualifications compare with what really happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    pub accounts: usize,
    pub converted: usize,
    pub qualified: usize,
    /// Qualified before (or when) they converted.
    pub true_positives: usize,
    /// Qualified, never converted.
    pub false_positives: usize,
    /// Qualified only after they had already converted: an alert too late to matter.
    pub late: usize,
    /// Converted without a timely qualification.
    pub false_negatives: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Precision over the base conversion rate: how much better than alerting on everyone.
    pub lift: Option<f64>,
    pub base_rate: Option<f64>,
}

/// `conversions` maps account id → conversion time; accounts missing from it did not convert.
/// Accounts in `conversions` that the events never mention are counted as converted accounts
/// the definition could not see (false negatives).
pub fn accuracy(results: &[AccountResult], conversions: &HashMap<String, Timestamp>) -> Accuracy {
    let mut a = Accuracy {
        accounts: results.len(),
        converted: 0,
        qualified: 0,
        true_positives: 0,
        false_positives: 0,
        late: 0,
        false_negatives: 0,
        precision: None,
        recall: None,
        lift: None,
        base_rate: None,
    };
    let mut seen = 0;
    for r in results {
        let converted_at = conversions.get(&r.account);
        seen += usize::from(converted_at.is_some());
        a.converted += usize::from(converted_at.is_some());
        a.qualified += usize::from(r.qualified);
        match (r.qualified_at, converted_at) {
            (Some(q), Some(c)) if q <= *c => a.true_positives += 1,
            (Some(_), Some(_)) => {
                a.late += 1;
                a.false_negatives += 1;
            }
            (Some(_), None) => a.false_positives += 1,
            (None, Some(_)) => a.false_negatives += 1,
            (None, None) => {}
        }
    }
    let unseen = conversions.len() - seen;
    a.converted += unseen;
    a.false_negatives += unseen;
    a.accounts += unseen;
    let ratio = |n: usize, d: usize| (d > 0).then(|| n as f64 / d as f64);
    a.precision = ratio(a.true_positives, a.qualified);
    a.recall = ratio(a.true_positives, a.converted);
    a.base_rate = ratio(a.converted, a.accounts);
    a.lift = match (a.precision, a.base_rate) {
        (Some(p), Some(b)) if b > 0.0 => Some(p / b),
        _ => None,
    };
    a
}
