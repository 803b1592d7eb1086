//! Per-account (and per-user) activity state, updated by the pure [`AccountState::apply`].
//!
//! The state is a handful of [`HitSet`]s sized by the definition, the first and last time the
//! account was seen, and the account traits the definition reads. Every part is a function of
//! the *set* of events applied, so duplicates and out-of-order delivery cannot change it.
//!
//! The same type holds a user's activity that names no account: when the user is linked to an
//! account (a `group` call), that state is merged into the account's with [`AccountState::merge`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::definition::{condition, Definition, Threshold};
use crate::event::{Event, EventKind};
use crate::hits::{refill, HitRef, HitSet, Keep, Order};
use crate::time::Timestamp;

/// A trait value with the event that set it; the latest write (by event time) wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    pub value: Value,
    pub at: Timestamp,
    #[serde(rename = "m")]
    pub message: Box<str>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountState {
    /// The definition version whose milestones the hit sets follow.
    pub definition_version: String,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// One per definition milestone, same order.
    pub milestones: Vec<HitSet>,
    /// One per scoring rule of the definition, same order.
    pub scoring: Vec<HitSet>,
    /// One per user condition of the definition: the first event where some user matched.
    pub user_facts: Vec<HitSet>,
    /// Account traits the definition reads, from `group` calls. Written only by `apply` and
    /// `merge`, which keep `trait_facts` in step; read with [`AccountState::traits`].
    traits: BTreeMap<String, TraitValue>,
    /// What the traits mean for the definition the state follows; derived, so not stored.
    #[serde(skip)]
    trait_facts: Option<TraitFacts>,
}

/// The part of a decision that depends on the account traits alone, worked out when the traits
/// change rather than at every evaluation (looking traits up and parsing them was a third of
/// the cost of `verdict`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TraitFacts {
    /// The sign-up time the definition's sign-up trait gives, when it is a valid time.
    pub signup: Option<Timestamp>,
    /// Bit i: the definition's i-th account condition holds (`None` with more than 64).
    pub account_conditions: Option<u64>,
}

impl TraitFacts {
    fn of(definition: &Definition, traits: &BTreeMap<String, TraitValue>) -> Self {
        let account_conditions = (definition.account_conditions.len() <= 64).then(|| {
            definition
                .account_conditions
                .iter()
                .enumerate()
                .filter(|(_, c)| c.test(traits))
                .fold(0u64, |bits, (i, _)| bits | 1 << i)
        });
        TraitFacts {
            signup: signup_trait(definition, traits),
            account_conditions,
        }
    }
}

/// Equal when the activity and traits are equal; the derived `trait_facts` do not count.
impl PartialEq for AccountState {
    fn eq(&self, other: &Self) -> bool {
        self.definition_version == other.definition_version
            && self.first_seen == other.first_seen
            && self.last_seen == other.last_seen
            && self.milestones == other.milestones
            && self.scoring == other.scoring
            && self.user_facts == other.user_facts
            && self.traits == other.traits
    }
}

/// The time the definition's sign-up trait holds, if it is one: an ISO-8601 string or a number
/// of seconds since the epoch.
fn signup_trait(
    definition: &Definition,
    traits: &BTreeMap<String, TraitValue>,
) -> Option<Timestamp> {
    definition
        .signup_trait
        .as_ref()
        .and_then(|name| traits.get(name))
        .and_then(|t| match &t.value {
            Value::String(s) => Timestamp::parse(s).ok(),
            Value::Number(n) => n.as_i64().map(|secs| Timestamp(secs.saturating_mul(1000))),
            _ => None,
        })
}

const FACT: (Order, Keep) = (Order::Earliest, Keep::Events(1));

impl AccountState {
    pub fn new(definition: &Definition) -> Self {
        let mut state = AccountState {
            definition_version: definition.version.clone(),
            milestones: vec![HitSet::default(); definition.milestones.len()],
            scoring: vec![HitSet::default(); definition.scoring.events.len()],
            user_facts: vec![HitSet::default(); definition.user_conditions.len()],
            ..AccountState::default()
        };
        state.refresh_trait_facts(definition);
        state
    }

    /// The account traits the definition reads, by name.
    pub fn traits(&self) -> &BTreeMap<String, TraitValue> {
        &self.traits
    }

    /// The trait facts, when they were worked out for `definition` (they are not after
    /// deserialising, until the next `apply` or `merge`).
    pub fn trait_facts(&self, definition: &Definition) -> Option<&TraitFacts> {
        self.trait_facts
            .as_ref()
            .filter(|_| self.follows(definition))
    }

    fn refresh_trait_facts(&mut self, definition: &Definition) {
        self.trait_facts = self
            .follows(definition)
            .then(|| TraitFacts::of(definition, &self.traits));
    }

    /// Whether this state was built for `definition` (otherwise rebuild it from raw events).
    pub fn follows(&self, definition: &Definition) -> bool {
        self.definition_version == definition.version
    }

    /// Applies one event; returns whether anything changed. Applying the same event twice, or
    /// a set of events in any order, gives the same state.
    pub fn apply(&mut self, definition: &Definition, event: &Event) -> bool {
        let mut changed = self.see(event.timestamp);
        let user = event.user_key();
        let message = event.message_id.as_str();
        // The decay growth factor, worked out on the first hit stored (one `exp2` per event).
        let growth = std::cell::Cell::new(f64::NAN);
        let hit = |value: i64| {
            if growth.get().is_nan() {
                growth.set(definition.scoring.growth(event.timestamp));
            }
            HitRef {
                at: event.timestamp,
                message,
                user,
                value,
                growth: growth.get(),
            }
        };
        match &event.kind {
            EventKind::Track { .. } | EventKind::Page { .. } | EventKind::Screen { .. } => {
                let targets = definition.dispatch.targets(event);
                for &i in &targets.milestones {
                    let (m, set) = (&definition.milestones[i], &mut self.milestones[i]);
                    // A full earliest-N set ignores everything later: test that before the
                    // filters.
                    let (order, keep) = m.shape;
                    if set.rejects(order, keep, event.timestamp, message) || !m.filters_match(event)
                    {
                        continue;
                    }
                    let value = match &m.threshold {
                        Threshold::Sum { property, .. } => {
                            match condition::lookup(&event.properties, property)
                                .and_then(condition::number)
                            {
                                // Negative values (refunds) do not count against a sum milestone.
                                Some(v) if v > 0.0 => (v * 1e6).round() as i64,
                                _ => continue,
                            }
                        }
                        _ => 0,
                    };
                    changed |= set.insert(order, keep, hit(value));
                }
                for &i in &targets.scoring {
                    let (rule, set) = (&definition.scoring.events[i], &mut self.scoring[i]);
                    if rule.filters_match(event) {
                        changed |= set.insert(Order::Latest, Keep::Events(rule.keep), hit(0));
                    }
                }
                changed |= self.user_facts_from(definition, event, hit(0));
            }
            EventKind::Identify => changed |= self.user_facts_from(definition, event, hit(0)),
            EventKind::Group { .. } => {
                let mut traits_changed = false;
                for name in &definition.account_traits {
                    if let Some(value) = event.traits.get(name) {
                        traits_changed |= self.set_trait(name, value, event.timestamp, message);
                    }
                }
                if traits_changed {
                    self.refresh_trait_facts(definition);
                }
                changed |= traits_changed;
            }
            EventKind::Alias { .. } => {}
        }
        if self.trait_facts.is_none() {
            self.refresh_derived(definition);
        }
        changed
    }

    /// Works out what is derived, not stored (trait facts, hits' decay growth factors), the
    /// first time a state read from storage (or mapped from another definition) is used.
    fn refresh_derived(&mut self, definition: &Definition) {
        self.refresh_trait_facts(definition);
        if self.follows(definition) {
            let growth = |at| definition.scoring.growth(at);
            for set in self
                .milestones
                .iter_mut()
                .chain(&mut self.scoring)
                .chain(&mut self.user_facts)
            {
                set.set_growth(growth);
            }
        }
    }

    fn see(&mut self, at: Timestamp) -> bool {
        let before = (self.first_seen, self.last_seen);
        self.first_seen = Some(self.first_seen.map_or(at, |t| t.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |t| t.max(at)));
        before != (self.first_seen, self.last_seen)
    }

    fn user_facts_from(&mut self, definition: &Definition, event: &Event, hit: HitRef<'_>) -> bool {
        let mut changed = false;
        for (c, set) in definition.user_conditions.iter().zip(&mut self.user_facts) {
            if !set.rejects(FACT.0, FACT.1, hit.at, hit.message)
                && c.test_event(&event.properties, &event.traits)
            {
                changed |= set.insert(FACT.0, FACT.1, hit);
            }
        }
        changed
    }

    fn set_trait(&mut self, name: &str, value: &Value, at: Timestamp, message: &str) -> bool {
        if let Some(current) = self.traits.get_mut(name) {
            if (current.at, &*current.message) >= (at, message) {
                return false;
            }
            // Updated in place: the name and message buffers are reused.
            if current.value != *value {
                current.value = value.clone();
            }
            current.at = at;
            refill(&mut current.message, message);
            return true;
        }
        self.traits.insert(
            name.to_owned(),
            TraitValue {
                value: value.clone(),
                at,
                message: message.into(),
            },
        );
        true
    }

    /// Folds another state of the same definition into this one (a user's activity into the
    /// account they just joined). Returns whether this state changed.
    pub fn merge(&mut self, definition: &Definition, other: &AccountState) -> bool {
        let mut changed = false;
        if let Some(t) = other.first_seen {
            changed |= self.see(t);
        }
        if let Some(t) = other.last_seen {
            changed |= self.see(t);
        }
        for ((m, set), theirs) in definition
            .milestones
            .iter()
            .zip(&mut self.milestones)
            .zip(&other.milestones)
        {
            let (order, keep) = m.shape;
            changed |= set.merge(order, keep, theirs);
        }
        for ((rule, set), theirs) in definition
            .scoring
            .events
            .iter()
            .zip(&mut self.scoring)
            .zip(&other.scoring)
        {
            changed |= set.merge(Order::Latest, Keep::Events(rule.keep), theirs);
        }
        for (set, theirs) in self.user_facts.iter_mut().zip(&other.user_facts) {
            changed |= set.merge(FACT.0, FACT.1, theirs);
        }
        let mut traits_changed = false;
        for (name, t) in &other.traits {
            traits_changed |= self.set_trait(name, &t.value, t.at, &t.message);
        }
        if self.trait_facts.is_none() {
            self.refresh_derived(definition);
        } else if traits_changed {
            self.refresh_trait_facts(definition);
        }
        changed | traits_changed
    }

    /// When the account signed up: the definition's sign-up trait if the account has a valid
    /// one, else the first event seen.
    pub fn signed_up_at(&self, definition: &Definition) -> Option<Timestamp> {
        self.signed_up_at_with(definition, self.trait_facts(definition))
    }

    /// [`AccountState::signed_up_at`], given `self.trait_facts(definition)`.
    pub(crate) fn signed_up_at_with(
        &self,
        definition: &Definition,
        facts: Option<&TraitFacts>,
    ) -> Option<Timestamp> {
        match facts {
            Some(facts) => facts.signup,
            None => signup_trait(definition, &self.traits),
        }
        .or(self.first_seen)
    }

    /// The account's name trait, when a `group` call gave one.
    pub fn name(&self) -> Option<&str> {
        self.traits.get("name").and_then(|t| t.value.as_str())
    }
}

/// Where each hit set a definition needs comes from in a state built for another definition:
/// the result of [`StateMap::between`]. A definition change that keeps what is tracked
/// (points, tiers, fit points, the PQL rule, windows of the same kind, reordered or renamed
/// milestones) maps; one that tracks something new needs a rebuild from raw events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMap {
    from_version: String,
    to_version: String,
    milestones: Vec<usize>,
    scoring: Vec<usize>,
    user_facts: Vec<usize>,
}

impl StateMap {
    /// How to read a state built for `from` as a state of `to`, or what `from`'s states do
    /// not track (each entry a sentence naming the milestone, rule, condition or trait).
    pub fn between(from: &Definition, to: &Definition) -> Result<StateMap, Vec<String>> {
        let mut gaps = Vec::new();
        // A hit set is the same set only when it picks the same calls and keeps them the
        // same way (order and bound): then its content is the same for the same events.
        let milestones: Vec<usize> = to
            .milestones
            .iter()
            .filter_map(|m| {
                let found = from.milestones.iter().position(|o| {
                    o.selector == m.selector
                        && o.filters == m.filters
                        && o.shape == m.shape
                        && sum_property(&o.threshold) == sum_property(&m.threshold)
                });
                if found.is_none() {
                    gaps.push(format!(
                        "milestone `{}`: the stored state does not track it (new selector, filter, threshold or window kind)",
                        m.name
                    ));
                }
                found
            })
            .collect();
        let scoring: Vec<usize> = to
            .scoring
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| {
                let found = from.scoring.events.iter().position(|o| {
                    o.selector == rule.selector && o.filters == rule.filters && o.keep == rule.keep
                });
                if found.is_none() {
                    gaps.push(format!(
                        "scoring.event[{i}] ({}): the stored state does not keep these events (new rule or cap / points)",
                        rule.selector.describe()
                    ));
                }
                found
            })
            .collect();
        let user_facts: Vec<usize> = to
            .user_conditions
            .iter()
            .filter_map(|c| {
                let found = from.user_conditions.iter().position(|o| o == c);
                if found.is_none() {
                    gaps.push(format!(
                        "user condition on `{}`: the stored state does not track it",
                        subject_name(&c.subject)
                    ));
                }
                found
            })
            .collect();
        for name in &to.account_traits {
            if !from.account_traits.contains(name) {
                gaps.push(format!(
                    "account trait `{name}`: the stored state does not keep it"
                ));
            }
        }
        if !gaps.is_empty() {
            return Err(gaps);
        }
        Ok(StateMap {
            from_version: from.version.clone(),
            to_version: to.version.clone(),
            milestones,
            scoring,
            user_facts,
        })
    }

    /// The state of `to` that `state` (built for `from`) stands for; `None` when `state` does
    /// not follow `from`.
    pub fn map(&self, to: &Definition, state: &AccountState) -> Option<AccountState> {
        if state.definition_version != self.from_version || to.version != self.to_version {
            return None;
        }
        let pick = |sets: &[HitSet], from: &[usize]| -> Vec<HitSet> {
            from.iter().map(|&i| sets[i].clone()).collect()
        };
        let mut mapped = AccountState {
            definition_version: to.version.clone(),
            first_seen: state.first_seen,
            last_seen: state.last_seen,
            milestones: pick(&state.milestones, &self.milestones),
            scoring: pick(&state.scoring, &self.scoring),
            user_facts: pick(&state.user_facts, &self.user_facts),
            traits: state
                .traits
                .iter()
                .filter(|(name, _)| to.account_traits.contains(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            trait_facts: None,
        };
        // The growth factors cached in the hits are those of `from`'s half-life.
        mapped.refresh_derived(to);
        Some(mapped)
    }
}

fn subject_name(subject: &crate::definition::Subject) -> String {
    use crate::definition::Subject;
    match subject {
        Subject::Property(path) | Subject::Trait(path) | Subject::UserTrait(path) => path.join("."),
        Subject::AccountTrait(name) => name.clone(),
    }
}

fn sum_property(threshold: &Threshold) -> Option<&[String]> {
    match threshold {
        Threshold::Sum { property, .. } => Some(property),
        _ => None,
    }
}
