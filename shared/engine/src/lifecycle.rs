//! The account lifecycle: signed up → activated → PQL → accepted / rejected by sales →
//! converted (or lost), with a side exit to disqualified while a gate holds.
//!
//! Usage moves an account forward through [`Lifecycle::observe`]; sales moves it through
//! [`Lifecycle::record_outcome`]. `observe` returns a [`Qualification`] exactly when the account
//! becomes a PQL, which is when an alert is due: once per account, or again after the cooldown
//! when the definition allows re-entry and the account had dropped out of the rule.

use serde::{Deserialize, Serialize};

use crate::definition::{Definition, Reentry, Tier};
use crate::evaluate::Verdict;
use crate::time::Timestamp;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    SignedUp,
    Activated,
    Pql,
    Accepted,
    Rejected,
    Converted,
    Lost,
    Disqualified,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::SignedUp,
        Stage::Activated,
        Stage::Pql,
        Stage::Accepted,
        Stage::Rejected,
        Stage::Converted,
        Stage::Lost,
        Stage::Disqualified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::SignedUp => "signed_up",
            Stage::Activated => "activated",
            Stage::Pql => "pql",
            Stage::Accepted => "accepted",
            Stage::Rejected => "rejected",
            Stage::Converted => "converted",
            Stage::Lost => "lost",
            Stage::Disqualified => "disqualified",
        }
    }

    /// Stages where usage alone still decides (sales has not been involved).
    pub fn is_pre_sales(self) -> bool {
        matches!(
            self,
            Stage::SignedUp | Stage::Activated | Stage::Disqualified
        )
    }
}

/// What sales recorded about an alerted account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SalesOutcome {
    Accepted,
    Rejected,
    Converted,
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an account in stage `{}` cannot be marked `{outcome:?}` (allowed from: {allowed})", from.as_str())]
pub struct TransitionError {
    pub from: Stage,
    pub outcome: SalesOutcome,
    pub allowed: &'static str,
}

/// A qualifying transition: the moment an alert is due.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Qualification {
    pub at: Timestamp,
    pub tier: Tier,
    pub score: f64,
    /// 1 for the first qualification, 2+ for re-entries.
    pub sequence: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub stage: Stage,
    pub activated_at: Option<Timestamp>,
    pub first_qualified_at: Option<Timestamp>,
    pub last_qualified_at: Option<Timestamp>,
    pub qualifications: u32,
    /// The account stopped meeting the rule after its last qualification (re-entry needs it).
    pub dropped_out: bool,
}

impl Lifecycle {
    /// Feeds a usage verdict made at `at` (event time). Returns the qualification when this
    /// verdict makes the account a PQL.
    pub fn observe(
        &mut self,
        definition: &Definition,
        verdict: &Verdict,
        at: Timestamp,
    ) -> Option<Qualification> {
        if self.stage == Stage::Converted {
            return None;
        }
        if verdict.activated && self.activated_at.is_none() {
            self.activated_at = Some(at);
        }
        if self.stage.is_pre_sales() {
            if verdict.disqualified {
                self.stage = Stage::Disqualified;
                return None;
            }
            self.stage = if self.activated_at.is_some() {
                Stage::Activated
            } else {
                Stage::SignedUp
            };
        }
        if !verdict.qualifies {
            if self.qualifications > 0 {
                self.dropped_out = true;
            }
            return None;
        }
        let may_qualify = if self.qualifications == 0 {
            true
        } else {
            let cooled = self
                .last_qualified_at
                .is_none_or(|last| at >= last.plus_days(definition.pql.cooldown_days));
            definition.pql.reentry == Reentry::AfterCooldown
                && self.dropped_out
                && cooled
                && matches!(
                    self.stage,
                    Stage::Pql | Stage::Rejected | Stage::Lost | Stage::Activated | Stage::SignedUp
                )
        };
        if !may_qualify {
            return None;
        }
        self.stage = Stage::Pql;
        self.qualifications += 1;
        self.first_qualified_at.get_or_insert(at);
        self.last_qualified_at = Some(at);
        self.dropped_out = false;
        Some(Qualification {
            at,
            tier: verdict.tier,
            score: verdict.score,
            sequence: self.qualifications,
        })
    }

    /// Records what sales did. Converting is allowed from any stage (self-serve purchases).
    pub fn record_outcome(&mut self, outcome: SalesOutcome) -> Result<Stage, TransitionError> {
        let next = match (self.stage, outcome) {
            // Feedback is delivered at least once: recording the same outcome again is a no-op.
            (Stage::Accepted, SalesOutcome::Accepted) => Stage::Accepted,
            (Stage::Rejected, SalesOutcome::Rejected) => Stage::Rejected,
            (Stage::Lost, SalesOutcome::Lost) => Stage::Lost,
            (Stage::Pql, SalesOutcome::Accepted) => Stage::Accepted,
            (Stage::Pql | Stage::Accepted, SalesOutcome::Rejected) => Stage::Rejected,
            (Stage::Accepted | Stage::Pql, SalesOutcome::Lost) => Stage::Lost,
            (_, SalesOutcome::Converted) => Stage::Converted,
            (from, outcome) => {
                let allowed = match outcome {
                    SalesOutcome::Accepted => "pql",
                    SalesOutcome::Rejected => "pql, accepted",
                    SalesOutcome::Lost => "pql, accepted",
                    SalesOutcome::Converted => "any stage",
                };
                return Err(TransitionError {
                    from,
                    outcome,
                    allowed,
                });
            }
        };
        self.stage = next;
        Ok(next)
    }
}
