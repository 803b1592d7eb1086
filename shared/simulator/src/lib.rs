//! Realistic trial telemetry for a B2B analytics product, deterministic by seed.
//!
//! A [`Simulation`] invents accounts that sign up for a trial over a span of days, each with a
//! hidden *intent* that drives what its people do: keen accounts create projects, invite
//! teammates, connect data sources, look at pricing and call the API; most accounts try a few
//! things and trickle off; some buy. [`Simulation::events`] yields the Segment calls
//! (`identify`, `group`, `track`, `page`, `screen`) day by day in time order, and
//! [`Simulation::outcomes`] tells which accounts bought and when: the ground truth a backtest
//! measures a definition against.
//!
//! The data exercises what real Segment data does to a qualifier: anonymous visits joined to
//! a user later by an `identify` with both ids, events sent before the user's `group` call,
//! events with and without `context.groupId`, browser calls with skewed device clocks
//! (`originalTimestamp` / `sentAt` / `receivedAt`), retried duplicates, numbers sent as
//! strings, free-mail and competitor addresses, accounts that already pay.
//!
//! Pure: no I/O. Each account's plan and each (account, day) pair has its own random stream,
//! so the output depends only on the configuration, and a day is generated on its own.

mod day;
mod names;
mod plan;
mod random;

use pql_engine::Timestamp;
use serde_json::Value;

pub use plan::{DAY, HOUR, MIN, SEC};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of accounts (trials) that sign up.
    pub accounts: usize,
    /// Days of history, starting at `start`. Sign-ups fall in the first 80% of them.
    pub days: u32,
    /// Start of the first day (use a UTC midnight).
    pub start: Timestamp,
    pub seed: u64,
}

impl SimConfig {
    /// The end of the simulated history (exclusive).
    pub fn end(&self) -> Timestamp {
        Timestamp(self.start.millis() + i64::from(self.days) * DAY)
    }
}

/// What the simulation knows about an account that the events only hint at.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub account: String,
    pub name: String,
    /// 0 (just looking) .. 1 (ready to buy).
    pub intent: f64,
    pub signed_up_at: Timestamp,
    pub converted_at: Option<Timestamp>,
    /// Already a paying customer.
    pub paying: bool,
    /// Signed up from a competitor.
    pub competitor: bool,
    pub users: usize,
}

pub struct Simulation {
    config: SimConfig,
    accounts: Vec<plan::Account>,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Self {
        let accounts = (0..config.accounts)
            .map(|i| plan::Planner::new(&config, i).account(i))
            .collect();
        Simulation { config, accounts }
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Segment calls in nondecreasing time order (the time the engine reads from each call,
    /// after clock-skew correction), generated one day at a time.
    pub fn events(&self) -> impl Iterator<Item = serde_json::Value> + '_ {
        (0..self.config.days).flat_map(move |d| self.day(d))
    }

    /// The calls of one day (0-based), in time order.
    pub fn day(&self, day: u32) -> Vec<Value> {
        if day >= self.config.days {
            return Vec::new();
        }
        day::calls(self, day)
    }

    /// Ground truth for backtests: every account with its conversion time, `None` for the
    /// accounts that did not buy within the simulated days. In account order.
    pub fn outcomes(&self) -> Vec<(String, Option<Timestamp>)> {
        self.accounts
            .iter()
            .map(|a| (a.id.clone(), a.converted_at.map(Timestamp)))
            .collect()
    }

    /// The hidden facts about every account, in account order.
    pub fn truth(&self) -> Vec<Truth> {
        self.accounts
            .iter()
            .map(|a| Truth {
                account: a.id.clone(),
                name: a.name.clone(),
                intent: a.intent,
                signed_up_at: Timestamp(a.signup),
                converted_at: a.converted_at.map(Timestamp),
                paying: a.kind == plan::Kind::Paying,
                competitor: a.kind == plan::Kind::Competitor,
                users: a.users.len(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
