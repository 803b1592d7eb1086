//! Pure evaluation: `(definition, state, now) -> decision`.
//!
//! [`verdict`] is the allocation-free answer the hot paths need (score, tier, qualifies);
//! [`evaluate`] adds everything a person needs to trust it: each milestone with when and by
//! whom it was met, fit facts, gates and human-readable reasons. Both read the same helpers, so
//! they cannot disagree.

use serde::{Deserialize, Serialize};

use crate::definition::{
    DecayClock, Definition, GateTest, Milestone, Threshold, Tier, TraitTest, Window,
};
use crate::hits::{Hit, HitSet};
use crate::lifecycle::Stage;
use crate::state::AccountState;
use crate::time::Timestamp;

/// The essentials of a decision, computed without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub score: f64,
    pub tier: Tier,
    pub activated: bool,
    pub fit_good: bool,
    pub disqualified: bool,
    /// The PQL rule holds now (tier, milestones, fit, no gate).
    pub qualifies: bool,
}

impl Verdict {
    /// The stage usage alone points to (the lifecycle adds what sales did).
    pub fn stage(&self) -> Stage {
        if self.disqualified {
            Stage::Disqualified
        } else if self.qualifies {
            Stage::Pql
        } else if self.activated {
            Stage::Activated
        } else {
            Stage::SignedUp
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub definition_version: String,
    pub evaluated_at: Timestamp,
    pub stage: Stage,
    pub tier: Tier,
    pub score: f64,
    pub qualifies: bool,
    pub activated: bool,
    pub signed_up_at: Option<Timestamp>,
    pub milestones: Vec<MilestoneStatus>,
    pub fit: FitResult,
    pub gates: Vec<GateStatus>,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MilestoneStatus {
    pub name: String,
    pub met: bool,
    pub met_at: Option<Timestamp>,
    pub by_user: Option<String>,
    pub by_message: Option<String>,
    /// How far along: matching events (or sum, users, days) in the window, and the target.
    pub progress: f64,
    pub target: f64,
    /// Points this milestone adds to the score now (after decay).
    pub points: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitResult {
    pub score: f64,
    pub good: bool,
    pub facts: Vec<FitFact>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitFact {
    pub name: String,
    pub matched: bool,
    pub points: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateStatus {
    pub name: String,
    pub holds: bool,
}

/// The hit that makes milestone `m` met at `now`, if it is. For windows anchored at sign-up
/// (or all time) that is the hit that completed the threshold; for a sliding window it is
/// the latest hit, with the threshold's oldest hit still inside the window.
///
/// Decisions are made *as of* `now`: hits after `now` (events applied out of order, later in
/// event time than the decision) do not count, so a late event cannot make an account
/// qualify before the events that completed it.
#[inline]
pub fn milestone_met<'s>(
    m: &Milestone,
    set: &'s HitSet,
    signed_up_at: Option<Timestamp>,
    now: Timestamp,
) -> Option<&'s Hit> {
    let (order, keep) = m.shape;
    let completing = set.completion_as_of(order, keep, now)?;
    match m.window {
        Window::AllTime => Some(completing),
        Window::SinceSignup(days) => {
            let end = signed_up_at?.plus_days(days);
            (completing.at < end).then_some(completing)
        }
        Window::Sliding(days) => {
            let start = now.minus_days(days);
            // The latest hit as of now is the first one not after it.
            (completing.at > start)
                .then(|| set.hits().iter().find(|h| h.at <= now))
                .flatten()
        }
    }
}

/// Matching activity inside the milestone's window (as of `now`), in the threshold's unit.
fn progress(m: &Milestone, set: &HitSet, signed_up_at: Option<Timestamp>, now: Timestamp) -> f64 {
    let in_window = |h: &&Hit| {
        h.at <= now
            && match m.window {
                Window::AllTime => true,
                Window::SinceSignup(days) => signed_up_at.is_some_and(|s| h.at < s.plus_days(days)),
                Window::Sliding(days) => h.at > now.minus_days(days),
            }
    };
    let hits = set.hits().iter().filter(in_window);
    match m.threshold {
        // Summed exactly, in millionths. (A float `sum()` of nothing is -0.0, which printed
        // as "-0/10" in reasons.)
        Threshold::Sum { .. } => {
            hits.fold(0i64, |total, h| total.saturating_add(h.value)) as f64 / 1e6
        }
        _ => hits.count() as f64,
    }
}

fn target(m: &Milestone) -> f64 {
    match &m.threshold {
        Threshold::Count(n) | Threshold::DistinctUsers(n) | Threshold::DistinctDays(n) => {
            f64::from(*n)
        }
        Threshold::Sum {
            at_least_micros, ..
        } => *at_least_micros as f64 / 1e6,
    }
}

/// What one evaluation reads from a state besides its hit sets, worked out once and shared
/// by [`verdict`] and [`evaluate`].
struct Context<'a> {
    definition: &'a Definition,
    state: &'a AccountState,
    now: Timestamp,
    signed_up_at: Option<Timestamp>,
    clock: DecayClock,
    /// The account conditions that hold, as bits, when the state worked them out for this
    /// definition.
    account_bits: Option<u64>,
}

impl<'a> Context<'a> {
    fn new(definition: &'a Definition, state: &'a AccountState, now: Timestamp) -> Self {
        // Looked up once: checking that the facts are this definition's compares version ids.
        let trait_facts = state.trait_facts(definition);
        Context {
            definition,
            state,
            now,
            signed_up_at: state.signed_up_at_with(definition, trait_facts),
            clock: definition.scoring.clock(now),
            account_bits: trait_facts.and_then(|f| f.account_conditions),
        }
    }

    /// Whether a fit or gate condition on traits holds.
    fn test(&self, test: &TraitTest) -> bool {
        match *test {
            TraitTest::Account(i) => match self.account_bits {
                Some(bits) => bits & (1 << i) != 0,
                None => self
                    .definition
                    .account_conditions
                    .get(i)
                    .is_some_and(|c| c.test(self.state.traits())),
            },
            TraitTest::User(i) => {
                self.state
                    .user_facts
                    .get(i)
                    .and_then(|s| s.hits().first())
                    .is_some_and(|h| h.at <= self.now)
                    && i < self.definition.user_conditions.len()
            }
        }
    }
}

fn event_points(
    definition: &Definition,
    state: &AccountState,
    now: Timestamp,
    clock: &DecayClock,
) -> f64 {
    let scoring = &definition.scoring;
    let mut total = 0.0;
    for (rule, set) in scoring.events.iter().zip(&state.scoring) {
        // Every hit counts, decayed (the usual case): one multiplication. Capped below as
        // hit by hit: the running sum only moves towards the cap, so it ends at the cap
        // exactly when the whole sum passes it.
        if let Some(weight) = clock.set_weight(set) {
            let raw = rule.points * weight;
            total += if rule.cap >= 0.0 {
                raw.min(rule.cap)
            } else {
                raw.max(rule.cap)
            };
            continue;
        }
        // Hits are latest first, so weights only fall: stop at the first that is worth nothing
        // (outside the hard window) or once the cap is reached (the rest cannot undo it).
        let mut raw = 0.0;
        // Hits after `now` do not count as of now (see `milestone_met`).
        for h in set.hits().iter().skip_while(|h| h.at > now) {
            let weight = clock.weight(h);
            if weight == 0.0 {
                break;
            }
            raw += rule.points * weight;
            if (rule.cap >= 0.0 && raw >= rule.cap) || (rule.cap < 0.0 && raw <= rule.cap) {
                break;
            }
        }
        total += if rule.cap >= 0.0 {
            raw.min(rule.cap)
        } else {
            raw.max(rule.cap)
        };
    }
    total
}

/// Everything the rule needs, computed once; `met(i)` reads from a fixed-size bitmap.
struct Facts {
    met: u128,
    score: f64,
    fit_score: f64,
    disqualified: bool,
}

fn facts(cx: &Context<'_>) -> Facts {
    let (definition, state, now, clock) = (cx.definition, cx.state, cx.now, cx.clock);
    let mut met = 0u128;
    let mut score = event_points(definition, state, now, &clock);
    for (i, (m, set)) in definition
        .milestones
        .iter()
        .zip(&state.milestones)
        .enumerate()
    {
        if let Some(hit) = milestone_met(m, set, cx.signed_up_at, now) {
            if i < 128 {
                met |= 1 << i;
            }
            if m.points != 0.0 {
                score += m.points * clock.weight(hit);
            }
        }
    }
    let is_met = |i: usize| i < 128 && met & (1 << i) != 0;
    let fit_score = definition
        .fit
        .conditions
        .iter()
        .filter(|c| cx.test(&c.test))
        // Not `sum()`: an empty float sum is -0.0, shown as "fit poor: -0".
        .fold(0.0, |total, c| total + c.points);
    let disqualified = definition.gates.iter().any(|g| match &g.test {
        GateTest::Trait(t) => cx.test(t),
        GateTest::Milestone(i) => is_met(*i),
    });
    Facts {
        met,
        score,
        fit_score,
        disqualified,
    }
}

impl Facts {
    fn met(&self, i: usize) -> bool {
        i < 128 && self.met & (1 << i) != 0
    }

    fn verdict(&self, definition: &Definition) -> Verdict {
        let tier = definition.tiers.of(self.score);
        let fit_good =
            definition.fit.conditions.is_empty() || self.fit_score >= definition.fit.min_score;
        let activated = match &definition.activation {
            Some(rule) => rule.holds(|i| self.met(i)),
            None if !definition.pql.milestones.milestones.is_empty() => {
                definition.pql.milestones.holds(|i| self.met(i))
            }
            None => self.met != 0,
        };
        let pql = &definition.pql;
        let qualifies = !self.disqualified
            && tier >= pql.min_tier
            && pql.milestones.holds(|i| self.met(i))
            && (!pql.require_fit || fit_good);
        Verdict {
            score: self.score,
            tier,
            activated,
            fit_good,
            disqualified: self.disqualified,
            qualifies,
        }
    }
}

/// The allocation-free decision. ("Met" is a 128-bit set: definitions are compiled with at
/// most [`crate::definition::MAX_MILESTONES`] milestones.)
pub fn verdict(definition: &Definition, state: &AccountState, now: Timestamp) -> Verdict {
    facts(&Context::new(definition, state, now)).verdict(definition)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The full decision with reasons.
pub fn evaluate(definition: &Definition, state: &AccountState, now: Timestamp) -> Decision {
    let cx = Context::new(definition, state, now);
    let facts = facts(&cx);
    let verdict = facts.verdict(definition);
    let mut reasons = Vec::new();
    reasons.push(format!(
        "score {:.1}: {} (warm at {}, hot at {})",
        verdict.score,
        verdict.tier.as_str(),
        definition.tiers.warm,
        definition.tiers.hot
    ));

    let milestones: Vec<MilestoneStatus> = definition
        .milestones
        .iter()
        .zip(&state.milestones)
        .map(|(m, set)| {
            let hit = milestone_met(m, set, cx.signed_up_at, now);
            let points = hit.map_or(0.0, |h| m.points * cx.clock.weight(h));
            let status = MilestoneStatus {
                name: m.name.clone(),
                met: hit.is_some(),
                met_at: hit.map(|h| h.at),
                by_user: hit.map(|h| h.user.to_string()),
                by_message: hit.map(|h| h.message.to_string()),
                progress: round2(progress(m, set, cx.signed_up_at, now)),
                target: target(m),
                points: round2(points),
            };
            reasons.push(describe_milestone(m, &status));
            status
        })
        .collect();

    let fit_facts: Vec<FitFact> = definition
        .fit
        .conditions
        .iter()
        .map(|c| FitFact {
            name: c.name.clone(),
            matched: cx.test(&c.test),
            points: c.points,
        })
        .collect();
    if !fit_facts.is_empty() {
        let matched: Vec<String> = fit_facts
            .iter()
            .filter(|f| f.matched)
            .map(|f| format!("{} ({:+})", f.name, f.points))
            .collect();
        reasons.push(format!(
            "fit {}: {} (needs {}){}",
            if verdict.fit_good { "good" } else { "poor" },
            facts.fit_score,
            definition.fit.min_score,
            if matched.is_empty() {
                String::new()
            } else {
                format!(", from {}", matched.join(", "))
            }
        ));
    }

    let gates: Vec<GateStatus> = definition
        .gates
        .iter()
        .map(|g| GateStatus {
            name: g.name.clone(),
            holds: match &g.test {
                GateTest::Trait(t) => cx.test(t),
                GateTest::Milestone(i) => facts.met(*i),
            },
        })
        .collect();
    for g in gates.iter().filter(|g| g.holds) {
        reasons.push(format!("disqualified by gate `{}`", g.name));
    }
    if verdict.qualifies {
        reasons.push(format!(
            "qualifies as a PQL (needs {} or hotter)",
            definition.pql.min_tier.as_str()
        ));
    }

    Decision {
        definition_version: definition.version.clone(),
        evaluated_at: now,
        stage: verdict.stage(),
        tier: verdict.tier,
        score: round2(verdict.score),
        qualifies: verdict.qualifies,
        activated: verdict.activated,
        signed_up_at: cx.signed_up_at,
        milestones,
        fit: FitResult {
            score: facts.fit_score,
            good: verdict.fit_good,
            facts: fit_facts,
        },
        gates,
        reasons,
    }
}

fn describe_milestone(m: &Milestone, s: &MilestoneStatus) -> String {
    let what = match &m.threshold {
        Threshold::Count(n) => format!("{n} × {}", m.selector.describe()),
        Threshold::Sum { property, .. } => format!(
            "sum of `{}` ≥ {} over {}",
            property.join("."),
            s.target,
            m.selector.describe()
        ),
        Threshold::DistinctUsers(n) => format!("{n} distinct users with {}", m.selector.describe()),
        Threshold::DistinctDays(n) => format!("{n} distinct days with {}", m.selector.describe()),
    };
    let window = match m.window {
        Window::AllTime => String::new(),
        Window::SinceSignup(d) => format!(" within {d} days of sign-up"),
        Window::Sliding(d) => format!(" in the last {d} days"),
    };
    match (&s.met_at, &s.by_user) {
        (Some(at), Some(user)) => format!("{}: met ({what}{window}) at {at} by {user}", m.name),
        _ => format!(
            "{}: not met ({what}{window}): {}/{}",
            m.name, s.progress, s.target
        ),
    }
}
