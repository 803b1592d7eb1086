//! Qualification definitions: what "activated" and "product-qualified" mean for one tenant.
//!
//! A definition is written as TOML (or sent as JSON with the same schema), parsed into the
//! serde types of [`spec`], then compiled into [`Definition`]: names resolved to indexes,
//! windows and thresholds checked, a content-hash version id computed. Every problem found is
//! reported with the file, line, field, what is wrong and what is allowed.

pub mod condition;
mod errors;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

pub use condition::{Condition, Op, Subject};
pub use errors::{DefinitionError, DefinitionErrors, FieldPath};
use spec::{
    ConditionSpec, DefinitionSpec, EventPointsSpec, MilestoneSpec, RequireSpec, SelectorSpec,
};

use crate::event::{Event, EventKind};
use crate::hits::{Hit, HitSet, Keep, Order};
use crate::state::TraitValue;
use crate::time::{Timestamp, MS_PER_DAY};

/// The longest window a definition may use (ten years).
pub const MAX_WINDOW_DAYS: f64 = 3650.0;
/// The most events a single threshold may need (count, distinct users or days, points cap).
pub const MAX_THRESHOLD: i64 = 10_000;
/// The most milestones a definition may have (evaluation keeps "met" in a 128-bit set).
pub const MAX_MILESTONES: usize = 128;

/// A checked, compiled definition. Build one with [`Definition::from_toml`],
/// [`Definition::from_json`] or [`Definition::compile`].
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    /// Content hash of the canonical definition; stamped on every decision.
    pub version: String,
    pub spec: DefinitionSpec,
    pub signup_trait: Option<String>,
    pub milestones: Vec<Milestone>,
    pub scoring: Scoring,
    pub fit: Fit,
    pub gates: Vec<Gate>,
    pub tiers: Tiers,
    pub activation: Option<MilestoneRule>,
    pub pql: PqlRule,
    /// Account traits the definition reads; only these are kept in account state.
    pub account_traits: Vec<String>,
    /// Conditions on account traits (from fit and gates).
    pub account_conditions: Vec<AccountCondition>,
    /// Conditions on user traits (from fit and gates), tracked as "some user matched".
    pub user_conditions: Vec<Condition>,
    /// Which milestones and scoring rules each call can concern (derived from the above).
    pub dispatch: Dispatch,
}

/// The milestones and scoring rules whose selector takes a call, by call type and name,
/// worked out once per definition: `apply` looks the call up once instead of comparing its
/// name with every selector (that was a fifth of its cost).
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    /// Per call type (track, page, screen): the targets of each name some selector names,
    /// each list also holding the type's unnamed selectors.
    named: [FxHashMap<Box<str>, Targets>; 3],
    /// Per call type: the selectors that take any call of the type.
    unnamed: [Targets; 3],
}

/// Indexes into [`Definition::milestones`] and [`Scoring::events`], ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub milestones: Vec<usize>,
    pub scoring: Vec<usize>,
}

/// Nothing: identify, group and alias calls are not matched by selectors.
static NO_TARGETS: Targets = Targets {
    milestones: Vec::new(),
    scoring: Vec::new(),
};

impl Dispatch {
    fn new(milestones: &[Milestone], scoring: &[EventPoints]) -> Dispatch {
        // (type, name) of a selector; `None` type: every type (`any`).
        fn parts(selector: &Selector) -> (Option<usize>, Option<&str>) {
            match selector {
                Selector::Track(name) => (Some(0), name.as_deref()),
                Selector::Page(name) => (Some(1), name.as_deref()),
                Selector::Screen(name) => (Some(2), name.as_deref()),
                Selector::Any => (None, None),
            }
        }
        let selectors = || {
            let milestones = milestones
                .iter()
                .enumerate()
                .map(|(i, m)| (true, i, &m.selector));
            let rules = scoring
                .iter()
                .enumerate()
                .map(|(i, r)| (false, i, &r.selector));
            milestones.chain(rules)
        };
        let push = |targets: &mut Targets, milestone: bool, i: usize| {
            let list = if milestone {
                &mut targets.milestones
            } else {
                &mut targets.scoring
            };
            list.push(i);
        };
        let mut dispatch = Dispatch::default();
        for (milestone, i, selector) in selectors() {
            if let (kind, None) = parts(selector) {
                for k in kind.map_or(0..3, |k| k..k + 1) {
                    push(&mut dispatch.unnamed[k], milestone, i);
                }
            }
        }
        for (milestone, i, selector) in selectors() {
            if let (Some(k), Some(name)) = parts(selector) {
                let unnamed = &dispatch.unnamed[k];
                let targets = dispatch.named[k]
                    .entry(name.into())
                    .or_insert_with(|| unnamed.clone());
                push(targets, milestone, i);
            }
        }
        for targets in dispatch.named.iter_mut().flat_map(|m| m.values_mut()) {
            targets.milestones.sort_unstable();
            targets.scoring.sort_unstable();
        }
        dispatch
    }

    /// The milestones and scoring rules whose selector takes `event`.
    pub fn targets(&self, event: &Event) -> &Targets {
        let (k, name) = match &event.kind {
            EventKind::Track { event } => (0, Some(event.as_str())),
            EventKind::Page { name, .. } => (1, name.as_deref()),
            EventKind::Screen { name, .. } => (2, name.as_deref()),
            _ => return &NO_TARGETS,
        };
        name.and_then(|n| self.named[k].get(n))
            .unwrap_or(&self.unnamed[k])
    }
}

/// Which calls a milestone or a scoring rule looks at. `None` name: any call of that type.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Track(Option<String>),
    Page(Option<String>),
    Screen(Option<String>),
    /// Any track, page or screen call.
    Any,
}

impl Selector {
    pub fn matches(&self, event: &Event) -> bool {
        fn name_ok(want: &Option<String>, got: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| got == Some(w))
        }
        match (self, &event.kind) {
            (Selector::Track(want), EventKind::Track { event }) => name_ok(want, Some(event)),
            (Selector::Page(want), EventKind::Page { name, .. }) => name_ok(want, name.as_deref()),
            (Selector::Screen(want), EventKind::Screen { name, .. }) => {
                name_ok(want, name.as_deref())
            }
            (
                Selector::Any,
                EventKind::Track { .. } | EventKind::Page { .. } | EventKind::Screen { .. },
            ) => true,
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Selector::Track(Some(n)) => format!("`{n}` events"),
            Selector::Track(None) => "track events".into(),
            Selector::Page(Some(n)) => format!("views of the `{n}` page"),
            Selector::Page(None) => "page views".into(),
            Selector::Screen(Some(n)) => format!("views of the `{n}` screen"),
            Selector::Screen(None) => "screen views".into(),
            Selector::Any => "events".into(),
        }
    }
}

/// What a milestone needs, over the events it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Threshold {
    Count(u32),
    /// Sum of a numeric property, in millionths so that sums are exact and order-independent.
    Sum {
        property: Vec<String>,
        at_least_micros: i64,
    },
    DistinctUsers(u32),
    DistinctDays(u32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// All history.
    AllTime,
    /// Events before sign-up + D days (activity before sign-up, e.g. anonymous visits, counts).
    SinceSignup(f64),
    /// Events in the last D days before the evaluation time.
    Sliding(f64),
}

#[derive(Debug, Clone)]
pub struct Milestone {
    pub name: String,
    pub description: Option<String>,
    pub selector: Selector,
    pub filters: Vec<Condition>,
    pub threshold: Threshold,
    pub window: Window,
    pub points: f64,
    /// How its hit set is kept (order and bound), from threshold and window, worked out once.
    pub shape: (Order, Keep),
}

/// How a milestone's hit set is kept.
fn milestone_shape(threshold: &Threshold, window: Window) -> (Order, Keep) {
    let order = match window {
        Window::Sliding(_) => Order::Latest,
        Window::AllTime | Window::SinceSignup(_) => Order::Earliest,
    };
    let keep = match threshold {
        Threshold::Count(n) => Keep::Events(*n),
        Threshold::DistinctUsers(n) => Keep::Users(*n),
        Threshold::DistinctDays(n) => Keep::Days(*n),
        Threshold::Sum {
            at_least_micros, ..
        } => Keep::Sum(*at_least_micros),
    };
    (order, keep)
}

impl Milestone {
    /// The property and trait filters alone (callers that tested the selector already).
    pub fn filters_match(&self, event: &Event) -> bool {
        self.filters
            .iter()
            .all(|f| f.test_event(&event.properties, &event.traits))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Scoring {
    pub half_life_days: Option<f64>,
    pub window_days: Option<f64>,
    pub events: Vec<EventPoints>,
}

/// The reference time of decay growth factors (2020-01-01T00:00:00Z); see [`Scoring::growth`].
const DECAY_EPOCH: Timestamp = Timestamp(1_577_836_800_000);

fn growth(half_life_days: f64, at: Timestamp) -> f64 {
    ((at.0 - DECAY_EPOCH.0) as f64 / (half_life_days * MS_PER_DAY as f64)).exp2()
}

impl Scoring {
    /// `2^((at - 2020) / half-life)`: the part of a hit's decay weight that depends on the hit
    /// alone, so it is worked out once per hit (when the hit is stored) rather than at every
    /// evaluation. 1 without a half-life.
    pub fn growth(&self, at: Timestamp) -> f64 {
        self.half_life_days.map_or(1.0, |h| growth(h, at))
    }

    /// What every decay weight of an evaluation at `now` shares, worked out once.
    pub fn clock(&self, now: Timestamp) -> DecayClock {
        DecayClock {
            now,
            // `2^((2020 - now) / half-life)`: the part of each weight that depends on `now`.
            shrink: self.growth(Timestamp(2 * DECAY_EPOCH.0 - now.0)),
            window_ms: self
                .window_days
                .map_or(f64::INFINITY, |w| w * MS_PER_DAY as f64),
            half_life_days: self.half_life_days,
        }
    }
}

/// Decay weights as of one evaluation time: [`Scoring::clock`].
#[derive(Debug, Clone, Copy)]
pub struct DecayClock {
    now: Timestamp,
    shrink: f64,
    window_ms: f64,
    half_life_days: Option<f64>,
}

impl DecayClock {
    /// The summed weight of a recency-ordered set's hits (latest first), when every hit is
    /// before now and inside the hard window: `sum(growth) x shrink`, without visiting the
    /// hits when their growth sum is cached (the sum is the same whether cached or worked
    /// out here, so stored and live states agree to the bit). `None`: weigh hit by hit.
    pub fn set_weight(&self, set: &HitSet) -> Option<f64> {
        let h = self.half_life_days?;
        let (newest, oldest) = (set.hits().first()?, set.hits().last()?);
        if newest.at >= self.now || self.now.0.saturating_sub(oldest.at.0) as f64 > self.window_ms {
            return None;
        }
        let sum = set.growth_sum().unwrap_or_else(|| {
            set.hits()
                .iter()
                .map(|hit| hit.growth().unwrap_or_else(|| growth(h, hit.at)))
                .sum()
        });
        let w = sum * self.shrink;
        (w.is_normal() && sum.is_normal()).then_some(w)
    }

    /// The weight of a hit: 1 now (and for hits after now), halving every half-life, 0
    /// outside the hard window. It is `growth(hit) x shrink(now)`, one multiplication
    /// instead of an `exp2` per hit and evaluation, and a function of the two times alone
    /// (the growth factor cached in the hit or just worked out), so a stored state and a
    /// live one decide to the bit. When a factor leaves the range of `f64` (a half-life of
    /// hours over years), the weight is computed directly.
    pub fn weight(&self, hit: &Hit) -> f64 {
        if hit.at >= self.now {
            return 1.0;
        }
        let age_ms = self.now.0.saturating_sub(hit.at.0) as f64;
        if age_ms > self.window_ms {
            return 0.0;
        }
        let Some(h) = self.half_life_days else {
            return 1.0;
        };
        let growth = hit.growth().unwrap_or_else(|| growth(h, hit.at));
        let w = growth * self.shrink;
        if w.is_normal() && growth.is_normal() {
            w.min(1.0)
        } else {
            (-(age_ms / MS_PER_DAY as f64) / h).exp2()
        }
    }
}

/// Points per matching event, capped: only the most recent `cap / points` events count.
#[derive(Debug, Clone)]
pub struct EventPoints {
    pub selector: Selector,
    pub filters: Vec<Condition>,
    pub points: f64,
    pub cap: f64,
    /// How many of the most recent events can contribute before the cap is reached.
    pub keep: u32,
}

impl EventPoints {
    /// The property and trait filters alone (callers that tested the selector already).
    pub fn filters_match(&self, event: &Event) -> bool {
        self.filters
            .iter()
            .all(|f| f.test_event(&event.properties, &event.traits))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Fit {
    pub min_score: f64,
    pub conditions: Vec<FitCondition>,
}

#[derive(Debug, Clone)]
pub struct FitCondition {
    pub name: String,
    pub points: f64,
    pub test: TraitTest,
}

/// A condition on the account's traits, by index into [`Definition::account_conditions`], or
/// on "some user", by index into [`Definition::user_conditions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraitTest {
    Account(usize),
    User(usize),
}

/// A condition on one account trait (the latest value a `group` call gave).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountCondition {
    pub name: String,
    pub op: Op,
}

impl AccountCondition {
    pub fn test(&self, traits: &BTreeMap<String, TraitValue>) -> bool {
        self.op.test(traits.get(&self.name).map(|t| &t.value))
    }
}

#[derive(Debug, Clone)]
pub struct Gate {
    pub name: String,
    pub description: Option<String>,
    pub test: GateTest,
}

#[derive(Debug, Clone)]
pub enum GateTest {
    Trait(TraitTest),
    Milestone(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiers {
    pub warm: f64,
    pub hot: f64,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Cold,
    Warm,
    Hot,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Cold => "cold",
            Tier::Warm => "warm",
            Tier::Hot => "hot",
        }
    }
}

impl Tiers {
    pub fn of(&self, score: f64) -> Tier {
        if score >= self.hot {
            Tier::Hot
        } else if score >= self.warm {
            Tier::Warm
        } else {
            Tier::Cold
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    All,
    Any,
    AtLeast(usize),
}

/// "These milestones, all / any / at least k of them".
#[derive(Debug, Clone, PartialEq)]
pub struct MilestoneRule {
    pub milestones: Vec<usize>,
    pub require: Require,
}

impl MilestoneRule {
    pub fn holds(&self, met: impl Fn(usize) -> bool) -> bool {
        let count = self.milestones.iter().filter(|&&m| met(m)).count();
        match self.require {
            Require::All => count == self.milestones.len(),
            Require::Any => count > 0 || self.milestones.is_empty(),
            Require::AtLeast(k) => count >= k,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    Never,
    AfterCooldown,
}

#[derive(Debug, Clone)]
pub struct PqlRule {
    pub min_tier: Tier,
    pub milestones: MilestoneRule,
    pub require_fit: bool,
    pub cooldown_days: f64,
    pub reentry: Reentry,
}

impl Definition {
    /// Parses and compiles a TOML definition; errors carry `file` and line numbers.
    pub fn from_toml(file: &str, source: &str) -> Result<Definition, DefinitionErrors> {
        let spec: DefinitionSpec = toml::from_str(source)
            .map_err(|e| DefinitionErrors::from_toml_syntax(file, source, &e))?;
        Definition::compile(spec).map_err(|errors| DefinitionErrors::located(file, source, errors))
    }

    /// Parses and compiles a JSON definition (the admin API's format).
    pub fn from_json(file: &str, source: &str) -> Result<Definition, DefinitionErrors> {
        let spec: DefinitionSpec = serde_json::from_str(source)
            .map_err(|e| DefinitionErrors::from_json_syntax(file, &e))?;
        Definition::compile(spec).map_err(|errors| DefinitionErrors::unlocated(file, errors))
    }

    /// Picks the format from the file name: `.json` is JSON, anything else TOML.
    pub fn load(file: &str, source: &str) -> Result<Definition, DefinitionErrors> {
        if file.ends_with(".json") {
            Definition::from_json(file, source)
        } else {
            Definition::from_toml(file, source)
        }
    }

    pub fn compile(spec: DefinitionSpec) -> Result<Definition, Vec<DefinitionError>> {
        Compiler::default().compile(spec)
    }

    pub fn milestone_index(&self, name: &str) -> Option<usize> {
        self.milestones.iter().position(|m| m.name == name)
    }
}

/// The version id: a hash of the canonical JSON form, so comments and layout do not matter.
fn version_of(spec: &DefinitionSpec) -> String {
    let canonical = serde_json::to_vec(spec).expect("a definition always serialises");
    let digest = Sha256::digest(&canonical);
    format!("v{}", &hex::encode(digest)[..12])
}

#[derive(Default)]
struct Compiler {
    errors: Vec<DefinitionError>,
    account_traits: BTreeSet<String>,
    account_conditions: Vec<AccountCondition>,
    user_conditions: Vec<Condition>,
}

const SELECTOR_KEYS: &str =
    "exactly one of `event`, `page`, `screen` (a name, or \"*\" for any) or `any = true`";
const THRESHOLD_KEYS: &str = "exactly one of `count_at_least`, `sum_of` with `sum_at_least`, `distinct_users_at_least`, `distinct_days_at_least`";
const SUBJECT_KEYS_EVENT: &str = "exactly one of `property` or `trait`";
const SUBJECT_KEYS_TRAITS: &str = "exactly one of `account_trait` or `user_trait`";
const OPERATOR_KEYS: &str = "exactly one of `equals`, `not_equals`, `in`, `not_in`, `exists`, `contains`, `at_least`, `at_most`, `greater_than`, `less_than`, `email_domain_in`, `free_mail`";

impl Compiler {
    fn error(&mut self, path: FieldPath, message: impl Into<String>, allowed: impl Into<String>) {
        self.errors
            .push(DefinitionError::new(path, message, allowed));
    }

    fn compile(mut self, spec: DefinitionSpec) -> Result<Definition, Vec<DefinitionError>> {
        let root = FieldPath::root();
        if spec.name.trim().is_empty() {
            self.error(
                root.key("name"),
                "the definition name is empty",
                "a short non-empty name",
            );
        }

        let milestones: Vec<Milestone> = spec
            .milestones
            .iter()
            .enumerate()
            .filter_map(|(i, m)| self.milestone(root.key("milestone").index(i), m))
            .collect();
        if spec.milestones.len() > MAX_MILESTONES {
            self.error(
                root.key("milestone").index(MAX_MILESTONES),
                format!("the definition has {} milestones", spec.milestones.len()),
                format!("at most {MAX_MILESTONES} milestones"),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, m) in spec.milestones.iter().enumerate() {
            if let Some(first) = names.insert(&m.name, i) {
                self.error(
                    root.key("milestone").index(i).key("name"),
                    format!(
                        "milestone `{}` is defined twice (first as milestone[{first}])",
                        m.name
                    ),
                    "unique milestone names",
                );
            }
        }
        let index_of = |name: &str| spec.milestones.iter().position(|m| m.name == name);

        let scoring = self.scoring(&root.key("scoring"), &spec.scoring);

        let mut fit = Fit {
            min_score: spec.fit.min_score.unwrap_or(0.0),
            conditions: Vec::new(),
        };
        let mut fit_names = BTreeSet::new();
        for (i, c) in spec.fit.conditions.iter().enumerate() {
            let path = root.key("fit").key("condition").index(i);
            if !fit_names.insert(c.name.as_str()) {
                self.error(
                    path.key("name"),
                    format!("fit condition `{}` is defined twice", c.name),
                    "unique names",
                );
            }
            self.finite(&path.key("points"), c.points);
            if let Some(test) = self.trait_test(&path.key("when"), &c.when) {
                fit.conditions.push(FitCondition {
                    name: c.name.clone(),
                    points: c.points,
                    test,
                });
            }
        }
        if let Some(min) = spec.fit.min_score {
            self.finite(&root.key("fit").key("min_score"), min);
        }

        let mut gates = Vec::new();
        let mut gate_names = BTreeSet::new();
        for (i, g) in spec.gates.iter().enumerate() {
            let path = root.key("gate").index(i);
            if !gate_names.insert(g.name.as_str()) {
                self.error(
                    path.key("name"),
                    format!("gate `{}` is defined twice", g.name),
                    "unique names",
                );
            }
            let test = match (&g.when, &g.milestone) {
                (Some(when), None) => self
                    .trait_test(&path.key("when"), when)
                    .map(GateTest::Trait),
                (None, Some(name)) => match index_of(name) {
                    Some(m) => Some(GateTest::Milestone(m)),
                    None => {
                        self.undefined_milestone(path.key("milestone"), name, &spec.milestones);
                        None
                    }
                },
                _ => {
                    self.error(
                        path,
                        "a gate needs a condition",
                        "exactly one of `when = { ... }` or `milestone = \"name\"`",
                    );
                    None
                }
            };
            if let Some(test) = test {
                gates.push(Gate {
                    name: g.name.clone(),
                    description: g.description.clone(),
                    test,
                });
            }
        }

        let tiers = Tiers {
            warm: spec.tiers.warm,
            hot: spec.tiers.hot,
        };
        self.finite(&root.key("tiers").key("warm"), tiers.warm);
        self.finite(&root.key("tiers").key("hot"), tiers.hot);
        if tiers.warm >= tiers.hot {
            self.error(
                root.key("tiers").key("hot"),
                format!("hot ({}) must be above warm ({})", tiers.hot, tiers.warm),
                "warm < hot",
            );
        }

        let activation = spec.activation.as_ref().and_then(|rule| {
            self.rule(
                &root.key("activation"),
                &rule.milestones,
                &rule.require,
                &spec.milestones,
            )
        });

        let pql_path = root.key("pql");
        let min_tier = match spec.pql.min_tier.as_str() {
            "warm" => Tier::Warm,
            "hot" => Tier::Hot,
            other => {
                self.error(
                    pql_path.key("min_tier"),
                    format!("`{other}` is not a tier that can qualify"),
                    "\"warm\" or \"hot\"",
                );
                Tier::Hot
            }
        };
        let pql_milestones = self
            .rule(
                &pql_path,
                &spec.pql.milestones,
                &spec.pql.require,
                &spec.milestones,
            )
            .unwrap_or(MilestoneRule {
                milestones: vec![],
                require: Require::All,
            });
        if spec.pql.require_fit && spec.fit.conditions.is_empty() {
            self.error(
                pql_path.key("require_fit"),
                "require_fit is set but the definition has no fit conditions",
                "add [[fit.condition]] entries, or set require_fit = false",
            );
        }
        let cooldown_days = spec.pql.cooldown_days.unwrap_or(30.0);
        if !(0.0..=MAX_WINDOW_DAYS).contains(&cooldown_days) {
            self.error(
                pql_path.key("cooldown_days"),
                format!("{cooldown_days} is out of range"),
                format!("0 to {MAX_WINDOW_DAYS} days"),
            );
        }
        let reentry = match spec.pql.reentry.as_deref().unwrap_or("never") {
            "never" => Reentry::Never,
            "after_cooldown" => Reentry::AfterCooldown,
            other => {
                self.error(
                    pql_path.key("reentry"),
                    format!("`{other}` is not a re-entry policy"),
                    "\"never\" or \"after_cooldown\"",
                );
                Reentry::Never
            }
        };

        let signup_trait = spec.signup.trait_name.clone();
        if let Some(t) = &signup_trait {
            if t.trim().is_empty() {
                self.error(
                    root.key("signup").key("trait"),
                    "the sign-up trait name is empty",
                    "an account trait holding an ISO-8601 time, e.g. created_at",
                );
            }
            self.account_traits.insert(t.clone());
        }
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        self.account_traits.insert("name".into());
        let dispatch = Dispatch::new(&milestones, &scoring.events);
        Ok(Definition {
            name: spec.name.clone(),
            version: version_of(&spec),
            signup_trait,
            milestones,
            scoring,
            fit,
            gates,
            tiers,
            activation,
            pql: PqlRule {
                min_tier,
                milestones: pql_milestones,
                require_fit: spec.pql.require_fit,
                cooldown_days,
                reentry,
            },
            account_traits: self.account_traits.into_iter().collect(),
            account_conditions: self.account_conditions,
            user_conditions: self.user_conditions,
            dispatch,
            spec,
        })
    }

    fn finite(&mut self, path: &FieldPath, value: f64) {
        if !value.is_finite() {
            self.error(
                path.clone(),
                format!("{value} is not a finite number"),
                "a finite number",
            );
        }
    }

    fn undefined_milestone(&mut self, path: FieldPath, name: &str, milestones: &[MilestoneSpec]) {
        let known: Vec<String> = milestones.iter().map(|m| format!("`{}`", m.name)).collect();
        let allowed = if known.is_empty() {
            "no milestones are defined".to_string()
        } else {
            format!("one of {}", known.join(", "))
        };
        self.error(path, format!("milestone `{name}` is not defined"), allowed);
    }

    fn rule(
        &mut self,
        path: &FieldPath,
        names: &[String],
        require: &RequireSpec,
        all: &[MilestoneSpec],
    ) -> Option<MilestoneRule> {
        let mut indexes = Vec::new();
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            match all.iter().position(|m| &m.name == name) {
                Some(m) if indexes.contains(&m) => {
                    self.error(
                        path.key("milestones").index(i),
                        format!("milestone `{name}` is listed twice"),
                        "each milestone once",
                    );
                    ok = false;
                }
                Some(m) => indexes.push(m),
                None => {
                    self.undefined_milestone(path.key("milestones").index(i), name, all);
                    ok = false;
                }
            }
        }
        let require = match require {
            RequireSpec::Keyword(k) if k == "all" => Require::All,
            RequireSpec::Keyword(k) if k == "any" => Require::Any,
            RequireSpec::Keyword(k) => {
                self.error(
                    path.key("require"),
                    format!("`{k}` is not a requirement"),
                    "\"all\", \"any\", or a number k (at least k of the milestones)",
                );
                return None;
            }
            RequireSpec::AtLeast(k) if *k >= 1 && (*k as usize) <= names.len() => {
                Require::AtLeast(*k as usize)
            }
            RequireSpec::AtLeast(k) => {
                let message = if *k < 1 {
                    format!("`require = {k}` would hold without any milestone met")
                } else {
                    format!("at least {k} of {} milestones can never hold", names.len())
                };
                let allowed = if names.is_empty() {
                    "\"all\" or \"any\" (no milestones are listed)".to_string()
                } else {
                    format!("a number from 1 to {}", names.len())
                };
                self.error(path.key("require"), message, allowed);
                return None;
            }
        };
        ok.then_some(MilestoneRule {
            milestones: indexes,
            require,
        })
    }

    fn selector(&mut self, path: &FieldPath, s: &SelectorSpec) -> Option<Selector> {
        let name = |n: &String| (n != "*").then(|| n.clone());
        let set = [
            s.event.is_some(),
            s.page.is_some(),
            s.screen.is_some(),
            s.any.is_some(),
        ];
        if set.iter().filter(|x| **x).count() != 1 {
            self.error(
                path.clone(),
                "it must say which calls it matches",
                SELECTOR_KEYS,
            );
            return None;
        }
        for (key, value) in [
            ("event", &s.event),
            ("page", &s.page),
            ("screen", &s.screen),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                self.error(
                    path.key(key),
                    "the name is empty",
                    "a call name, or \"*\" for any",
                );
                return None;
            }
        }
        Some(
            match (s.event.as_ref(), s.page.as_ref(), s.screen.as_ref(), s.any) {
                (Some(e), _, _, _) => Selector::Track(name(e)),
                (_, Some(p), _, _) => Selector::Page(name(p)),
                (_, _, Some(n), _) => Selector::Screen(name(n)),
                (_, _, _, Some(true)) => Selector::Any,
                _ => {
                    self.error(
                        path.key("any"),
                        "`any = false` matches nothing",
                        "any = true",
                    );
                    return None;
                }
            },
        )
    }

    fn milestone(&mut self, path: FieldPath, m: &MilestoneSpec) -> Option<Milestone> {
        let before = self.errors.len();
        if m.name.trim().is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || "_-.".contains(c))
        {
            self.error(
                path.key("name"),
                format!("`{}` is not a usable milestone name", m.name),
                "letters, digits, `_`, `-` and `.`, not empty",
            );
        }
        let selector = self.selector(&path, &m.selector());
        let filters = self.filters(&path.key("where"), &m.filters);

        let count = |v: i64, key: &'static str, this: &mut Self| -> Option<u32> {
            if (1..=MAX_THRESHOLD).contains(&v) {
                Some(v as u32)
            } else {
                this.error(
                    path.key(key),
                    format!("{v} is out of range"),
                    format!("a whole number from 1 to {MAX_THRESHOLD}"),
                );
                None
            }
        };
        let thresholds = [
            m.count_at_least.is_some(),
            m.sum_of.is_some() || m.sum_at_least.is_some(),
            m.distinct_users_at_least.is_some(),
            m.distinct_days_at_least.is_some(),
        ];
        let threshold = if thresholds.iter().filter(|x| **x).count() != 1 {
            self.error(
                path.clone(),
                "a milestone needs one threshold",
                THRESHOLD_KEYS,
            );
            None
        } else if let Some(n) = m.count_at_least {
            count(n, "count_at_least", self).map(Threshold::Count)
        } else if let Some(n) = m.distinct_users_at_least {
            count(n, "distinct_users_at_least", self).map(Threshold::DistinctUsers)
        } else if let Some(n) = m.distinct_days_at_least {
            count(n, "distinct_days_at_least", self).map(Threshold::DistinctDays)
        } else {
            match (&m.sum_of, m.sum_at_least) {
                (Some(p), Some(x)) if x.is_finite() && x > 0.0 && !p.trim().is_empty() => {
                    Some(Threshold::Sum {
                        property: split_path(p),
                        at_least_micros: (x * 1e6).round() as i64,
                    })
                }
                (Some(_), Some(x)) => {
                    self.error(
                        path.key("sum_at_least"),
                        format!("{x} is not a usable sum threshold"),
                        "a positive number, and a non-empty `sum_of` property",
                    );
                    None
                }
                (None, _) => {
                    self.error(
                        path.key("sum_at_least"),
                        "`sum_at_least` without `sum_of`",
                        "`sum_of = \"property\"` together with `sum_at_least = X`",
                    );
                    None
                }
                (_, None) => {
                    self.error(
                        path.key("sum_of"),
                        "`sum_of` without `sum_at_least`",
                        "`sum_of = \"property\"` together with `sum_at_least = X`",
                    );
                    None
                }
            }
        };

        let window = match (m.within_days_of_signup, m.in_last_days) {
            (Some(_), Some(_)) => {
                self.error(
                    path.key("in_last_days"),
                    "a milestone has one window",
                    "either `within_days_of_signup` or `in_last_days`, not both",
                );
                None
            }
            (Some(d), None) => self
                .window_days(&path.key("within_days_of_signup"), d)
                .map(Window::SinceSignup),
            (None, Some(d)) => self
                .window_days(&path.key("in_last_days"), d)
                .map(Window::Sliding),
            (None, None) => Some(Window::AllTime),
        };
        if let (
            Some(Threshold::DistinctDays(days)),
            Some(Window::SinceSignup(w) | Window::Sliding(w)),
        ) = (&threshold, window)
        {
            // A window of w days touches at most ceil(w) + 1 calendar days.
            if f64::from(*days) > w.ceil() + 1.0 {
                self.error(
                    path.key("distinct_days_at_least"),
                    format!("{days} distinct days can never fit in a {w}-day window"),
                    format!("at most {} days, or a longer window", w.ceil() + 1.0),
                );
            }
        }
        let points = m.points.unwrap_or(0.0);
        self.finite(&path.key("points"), points);
        if self.errors.len() > before {
            return None;
        }
        let (threshold, window) = (threshold?, window?);
        Some(Milestone {
            name: m.name.clone(),
            description: m.description.clone(),
            selector: selector?,
            filters: filters?,
            shape: milestone_shape(&threshold, window),
            threshold,
            window,
            points,
        })
    }

    fn window_days(&mut self, path: &FieldPath, days: f64) -> Option<f64> {
        if days.is_finite() && days > 0.0 && days <= MAX_WINDOW_DAYS {
            Some(days)
        } else {
            self.error(
                path.clone(),
                format!("a window of {days} days is impossible"),
                format!("more than 0 and at most {MAX_WINDOW_DAYS} days"),
            );
            None
        }
    }

    fn scoring(&mut self, path: &FieldPath, s: &spec::ScoringSpec) -> Scoring {
        if let Some(h) = s.half_life_days {
            self.window_days(&path.key("half_life_days"), h);
        }
        if let Some(w) = s.window_days {
            self.window_days(&path.key("window_days"), w);
        }
        let events = s
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| self.event_points(&path.key("event").index(i), e))
            .collect();
        Scoring {
            half_life_days: s.half_life_days,
            window_days: s.window_days,
            events,
        }
    }

    fn event_points(&mut self, path: &FieldPath, e: &EventPointsSpec) -> Option<EventPoints> {
        let selector = self.selector(path, &e.selector());
        let filters = self.filters(&path.key("where"), &e.filters);
        let valid = e.points.is_finite()
            && e.cap.is_finite()
            && e.points != 0.0
            && e.cap.signum() == e.points.signum()
            && e.cap.abs() >= e.points.abs();
        if !valid {
            self.error(
                path.key("cap"),
                format!("points = {} with cap = {} cannot work", e.points, e.cap),
                "non-zero points, and a cap of the same sign at least as large as the points",
            );
            return None;
        }
        let keep = (e.cap / e.points).ceil();
        if keep > MAX_THRESHOLD as f64 {
            self.error(
                path.key("cap"),
                format!("the cap allows {keep} events to count"),
                format!("a cap of at most {MAX_THRESHOLD} times the points"),
            );
            return None;
        }
        Some(EventPoints {
            selector: selector?,
            filters: filters?,
            points: e.points,
            cap: e.cap,
            keep: keep as u32,
        })
    }

    fn filters(&mut self, path: &FieldPath, filters: &[ConditionSpec]) -> Option<Vec<Condition>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, f) in filters.iter().enumerate() {
            let path = path.index(i);
            let subject = match (&f.property, &f.trait_name, &f.account_trait, &f.user_trait) {
                (Some(p), None, None, None) => Some(Subject::Property(split_path(p))),
                (None, Some(t), None, None) => Some(Subject::Trait(split_path(t))),
                _ => {
                    self.error(
                        path.clone(),
                        "an event filter reads an event property or trait",
                        SUBJECT_KEYS_EVENT,
                    );
                    None
                }
            };
            match (subject, self.operator(&path, f)) {
                (Some(subject), Some(op)) => out.push(Condition { subject, op }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn trait_test(&mut self, path: &FieldPath, c: &ConditionSpec) -> Option<TraitTest> {
        let op = self.operator(path, c);
        match (&c.property, &c.trait_name, &c.account_trait, &c.user_trait) {
            (None, None, Some(name), None) => {
                self.account_traits.insert(name.clone());
                let condition = AccountCondition {
                    name: name.clone(),
                    op: op?,
                };
                let index = match self.account_conditions.iter().position(|c| *c == condition) {
                    Some(i) => i,
                    None => {
                        self.account_conditions.push(condition);
                        self.account_conditions.len() - 1
                    }
                };
                Some(TraitTest::Account(index))
            }
            (None, None, None, Some(name)) => {
                let condition = Condition {
                    subject: Subject::UserTrait(split_path(name)),
                    op: op?,
                };
                let index = match self.user_conditions.iter().position(|c| *c == condition) {
                    Some(i) => i,
                    None => {
                        self.user_conditions.push(condition);
                        self.user_conditions.len() - 1
                    }
                };
                Some(TraitTest::User(index))
            }
            _ => {
                self.error(
                    path.clone(),
                    "fit conditions and gates read account or user traits",
                    SUBJECT_KEYS_TRAITS,
                );
                None
            }
        }
    }

    fn operator(&mut self, path: &FieldPath, c: &ConditionSpec) -> Option<Op> {
        let mut ops = Vec::new();
        if let Some(v) = &c.equals {
            ops.push(Op::Equals(v.clone()))
        }
        if let Some(v) = &c.not_equals {
            ops.push(Op::NotEquals(v.clone()))
        }
        if let Some(v) = &c.in_list {
            ops.push(Op::In(v.clone()))
        }
        if let Some(v) = &c.not_in {
            ops.push(Op::NotIn(v.clone()))
        }
        if let Some(v) = c.exists {
            ops.push(Op::Exists(v))
        }
        if let Some(v) = &c.contains {
            ops.push(Op::Contains(v.clone()))
        }
        if let Some(v) = c.at_least {
            ops.push(Op::AtLeast(v))
        }
        if let Some(v) = c.at_most {
            ops.push(Op::AtMost(v))
        }
        if let Some(v) = c.greater_than {
            ops.push(Op::GreaterThan(v))
        }
        if let Some(v) = c.less_than {
            ops.push(Op::LessThan(v))
        }
        if let Some(v) = &c.email_domain_in {
            ops.push(Op::EmailDomainIn(
                v.iter()
                    .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                    .collect(),
            ))
        }
        if let Some(v) = c.free_mail {
            ops.push(Op::FreeMail(v))
        }
        if ops.len() != 1 {
            let message = if ops.is_empty() {
                "the condition has no operator".to_string()
            } else {
                format!("the condition has {} operators", ops.len())
            };
            self.error(path.clone(), message, OPERATOR_KEYS);
            return None;
        }
        let op = ops.pop()?;
        let bad = match &op {
            Op::AtLeast(n) | Op::AtMost(n) | Op::GreaterThan(n) | Op::LessThan(n) => !n.is_finite(),
            Op::In(list) | Op::NotIn(list) => list.is_empty(),
            Op::EmailDomainIn(list) => list.is_empty() || list.iter().any(|d| d.is_empty()),
            _ => false,
        };
        if bad {
            self.error(path.clone(), "the operator's value is empty or not a finite number", "a finite number for comparisons, a non-empty list for `in` / `not_in` / `email_domain_in`");
            return None;
        }
        Some(op)
    }
}

fn split_path(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}
