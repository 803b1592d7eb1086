//! The definition file schema, exactly as growth teams write it (TOML) or send it to the admin
//! API (JSON). Plain serde types with `deny_unknown_fields`, so a typo is an error and not a
//! silently ignored knob; `compile` turns them into the checked [`super::Definition`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub signup: SignupSpec,
    #[serde(default, rename = "milestone")]
    pub milestones: Vec<MilestoneSpec>,
    #[serde(default)]
    pub scoring: ScoringSpec,
    #[serde(default)]
    pub fit: FitSpec,
    #[serde(default, rename = "gate")]
    pub gates: Vec<GateSpec>,
    pub tiers: TiersSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<RuleSpec>,
    pub pql: PqlSpec,
}

/// When an account signed up: the account trait named here (e.g. `created_at`) when the account
/// has it, otherwise the first event seen for the account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupSpec {
    #[serde(default, rename = "trait", skip_serializing_if = "Option::is_none")]
    pub trait_name: Option<String>,
}

/// Which calls something applies to: exactly one of the four keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorSpec {
    /// A `track` event name, or `*` for any track call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A `page` call name, or `*` for any page call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// A `screen` call name, or `*` for any screen call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<String>,
    /// `true`: any track, page or screen call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestoneSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<ConditionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_at_least: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_at_least: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_users_at_least: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_days_at_least: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_days_of_signup: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_last_days: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<f64>,
}

impl MilestoneSpec {
    pub fn selector(&self) -> SelectorSpec {
        SelectorSpec {
            event: self.event.clone(),
            page: self.page.clone(),
            screen: self.screen.clone(),
            any: self.any,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSpec {
    /// Points halve every this many days; absent: no decay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life_days: Option<f64>,
    /// Hard window: activity older than this many days scores nothing, decayed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<f64>,
    #[serde(default, rename = "event", skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventPointsSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPointsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<ConditionSpec>,
    pub points: f64,
    pub cap: f64,
}

impl EventPointsSpec {
    pub fn selector(&self) -> SelectorSpec {
        SelectorSpec {
            event: self.event.clone(),
            page: self.page.clone(),
            screen: self.screen.clone(),
            any: self.any,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitSpec {
    /// Fit points needed for a good fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    #[serde(default, rename = "condition", skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<FitConditionSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitConditionSpec {
    pub name: String,
    pub points: f64,
    pub when: ConditionSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Holds while this trait condition is true...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ConditionSpec>,
    /// ...or once this milestone is met (e.g. a purchase event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestone: Option<String>,
}

/// One test on a value. Exactly one subject key and exactly one operator key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, rename = "trait", skip_serializing_if = "Option::is_none")]
    pub trait_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_trait: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_trait: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_list: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greater_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub less_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_domain_in: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_mail: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersSpec {
    /// Score at which an account turns warm.
    pub warm: f64,
    /// Score at which an account turns hot.
    pub hot: f64,
}

/// "all", "any", or a number k: at least k of the listed milestones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequireSpec {
    AtLeast(i64),
    Keyword(String),
}

impl Default for RequireSpec {
    fn default() -> Self {
        RequireSpec::Keyword("all".into())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub milestones: Vec<String>,
    #[serde(default)]
    pub require: RequireSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PqlSpec {
    /// Lowest tier that can qualify: "warm" or "hot".
    pub min_tier: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<String>,
    #[serde(default)]
    pub require: RequireSpec,
    #[serde(default)]
    pub require_fit: bool,
    /// Days after an alert during which the account is not alerted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_days: Option<f64>,
    /// What re-entry means: "never" (one qualification per account) or "after_cooldown" (an
    /// account that dropped out of the rule may qualify again once the cooldown has passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reentry: Option<String>,
}
