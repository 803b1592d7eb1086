//! For tests (feature `testing`): a store on fresh tables in DynamoDB Local.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pql_dynamodb_local::{repo_root_from, DynamoDbLocal};

use crate::{local_client, template, Store, Tables};

/// A store on fresh tables (a unique prefix, created from the SAM template) in DynamoDB Local:
/// the one `scripts/test.sh` started (`PQL_DYNAMODB_ENDPOINT`), else a new one that lives as
/// long as the returned guard.
pub async fn fresh_store() -> (Store, Option<DynamoDbLocal>) {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    let (endpoint, db) = match std::env::var("PQL_DYNAMODB_ENDPOINT") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let root =
                repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("repository root");
            let db = DynamoDbLocal::start(&root).unwrap_or_else(|e| panic!("{e}"));
            (db.endpoint(), Some(db))
        }
    };
    let client = local_client(&endpoint);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("t{nanos}-{}-", SEQUENCE.fetch_add(1, Ordering::Relaxed));
    template::create_tables(&client, template::SAM_TEMPLATE, &prefix)
        .await
        .expect("tables from the template");
    (Store::new(client, Tables::with_prefix(&prefix)), db)
}

/// The second milestone of a [`TestDefinition`], worth 40 points when reached once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondMilestone {
    /// `invited`: "Teammate Invited".
    Invited,
    /// `reported`: "Report Viewed".
    Reported,
}

/// The small definition the store, activation and admin tests share, as TOML: milestone
/// `created` ("Project Created" once), optionally a second milestone, tiers warm/hot, optional
/// `[activation]` milestones, `[pql]` (min tier and milestones) and optionally one gate.
///
/// [`TestDefinition::new`] starts from `created` worth 10, warm 10, hot 40, no activation and
/// PQL at hot needing every milestone; the methods change one part each.
/// [`TestDefinition::toml`] lays it out as the tests' literals were (a leading blank line,
/// then one key a line).
#[derive(Clone, Debug)]
pub struct TestDefinition {
    name: String,
    created_points: u32,
    second: Option<SecondMilestone>,
    warm: u32,
    hot: u32,
    gate: Option<(String, String)>,
    activation: Vec<String>,
    pql_tier: String,
    /// `None`: every milestone.
    pql: Option<Vec<String>>,
}

impl TestDefinition {
    /// `created` worth 10, tiers warm 10 / hot 40, no activation, PQL at hot needing every
    /// milestone.
    pub fn new(name: &str) -> TestDefinition {
        TestDefinition {
            name: name.to_owned(),
            created_points: 10,
            second: None,
            warm: 10,
            hot: 40,
            gate: None,
            activation: Vec::new(),
            pql_tier: "hot".to_owned(),
            pql: None,
        }
    }

    /// What reaching `created` is worth.
    pub fn created_points(mut self, points: u32) -> TestDefinition {
        self.created_points = points;
        self
    }

    /// Adds the second milestone (after `created`).
    pub fn second(mut self, milestone: SecondMilestone) -> TestDefinition {
        self.second = Some(milestone);
        self
    }

    /// The hot threshold.
    pub fn hot(mut self, points: u32) -> TestDefinition {
        self.hot = points;
        self
    }

    /// A `[[gate]]` named `name` on `milestone`.
    pub fn gate(mut self, name: &str, milestone: &str) -> TestDefinition {
        self.gate = Some((name.to_owned(), milestone.to_owned()));
        self
    }

    /// The `[activation]` milestones (none: no `[activation]` table).
    pub fn activation(mut self, milestones: &[&str]) -> TestDefinition {
        self.activation = milestones.iter().map(|&m| m.to_owned()).collect();
        self
    }

    /// `[pql]`: the minimum tier and the milestones it needs.
    pub fn pql(mut self, min_tier: &str, milestones: &[&str]) -> TestDefinition {
        self.pql_tier = min_tier.to_owned();
        self.pql = Some(milestones.iter().map(|&m| m.to_owned()).collect());
        self
    }

    /// The definition's TOML source.
    pub fn toml(&self) -> String {
        let list = |names: &[String]| {
            let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let milestone = |name: &str, event: &str, points: u32| {
            format!(
                "[[milestone]]\nname = {name:?}\nevent = {event:?}\ncount_at_least = 1\npoints = {points}\n"
            )
        };
        let second = self.second.map(|second| match second {
            SecondMilestone::Invited => ("invited", "Teammate Invited"),
            SecondMilestone::Reported => ("reported", "Report Viewed"),
        });
        let mut toml = format!("\nname = {:?}\n", self.name);
        toml += &milestone("created", "Project Created", self.created_points);
        if let Some((name, event)) = second {
            toml += &milestone(name, event, 40);
        }
        if let Some((name, milestone)) = &self.gate {
            toml += &format!("[[gate]]\nname = {name:?}\nmilestone = {milestone:?}\n");
        }
        toml += &format!("[tiers]\nwarm = {}\nhot = {}\n", self.warm, self.hot);
        if !self.activation.is_empty() {
            toml += &format!("[activation]\nmilestones = {}\n", list(&self.activation));
        }
        let pql = match &self.pql {
            Some(pql) => pql.clone(),
            None => ["created"]
                .into_iter()
                .chain(second.map(|(name, _)| name))
                .map(str::to_owned)
                .collect(),
        };
        toml += &format!(
            "[pql]\nmin_tier = {:?}\nmilestones = {}\n",
            self.pql_tier,
            list(&pql)
        );
        toml
    }
}
