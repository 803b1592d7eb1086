//! What activating a definition would change: each stored account judged by the active
//! version and by a draft, at the same time, and the differences counted. Pure (the admin
//! function reads the records and the definitions, then calls this).
//!
//! A state is built for one definition version ([`pql_engine::AccountState::follows`]). It
//! can answer another version's questions when that version tracks nothing new
//! ([`StateMap`]); otherwise the account is counted as *untracked*, with the reasons, and
//! not guessed at: activating such a draft rebuilds state from the raw events.

use std::collections::{BTreeMap, HashMap};

use pql_engine::{verdict, AccountState, Definition, StateMap, Timestamp, Verdict};
use serde::Serialize;

/// The most changed accounts a report lists (the counts cover every account).
pub const MAX_LISTED_CHANGES: usize = 1000;

/// States of several versions judged by several definitions, with each (from, to) mapping
/// worked out once.
#[derive(Debug, Default)]
pub struct Judge {
    definitions: HashMap<String, Definition>,
    maps: HashMap<(String, String), Result<StateMap, Vec<String>>>,
}

impl Judge {
    /// Makes `definition` known (the draft, the active version and every version a stored
    /// state follows).
    pub fn add(&mut self, definition: Definition) {
        self.definitions
            .entry(definition.version.clone())
            .or_insert(definition);
    }

    pub fn knows(&self, version: &str) -> bool {
        self.definitions.contains_key(version)
    }

    /// `state` as a state of `to`: itself when it follows `to`, mapped when its own version
    /// tracks what `to` needs; else why not (one sentence per missing piece).
    pub fn state_for(
        &mut self,
        state: &AccountState,
        to: &str,
    ) -> Result<AccountState, Vec<String>> {
        let target = self
            .definitions
            .get(to)
            .unwrap_or_else(|| panic!("definition {to} was not added to the judge"));
        if state.follows(target) {
            return Ok(state.clone());
        }
        let from_version = state.definition_version.clone();
        let Some(from) = self.definitions.get(&from_version) else {
            return Err(vec![format!(
                "the stored state follows version `{from_version}`, which is not a stored version of this tenant"
            )]);
        };
        let map = self
            .maps
            .entry((from_version, to.to_owned()))
            .or_insert_with(|| StateMap::between(from, target));
        match map {
            Ok(map) => Ok(map
                .map(target, state)
                .expect("the map is for this state's version")),
            Err(gaps) => Err(gaps.clone()),
        }
    }

    /// The verdict of version `to` on `state` at `at`.
    pub fn verdict(
        &mut self,
        state: &AccountState,
        to: &str,
        at: Timestamp,
    ) -> Result<Verdict, Vec<String>> {
        let state = self.state_for(state, to)?;
        Ok(verdict(&self.definitions[to], &state, at))
    }
}

/// Accounts in a stage (or tier) under each version, and how many move in and out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Movement {
    pub before: usize,
    pub after: usize,
    /// Not in it under the active version, in it under the draft.
    pub entering: usize,
    /// In it under the active version, not under the draft.
    pub leaving: usize,
}

/// One account whose stage, tier or score changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub account: String,
    pub from_stage: &'static str,
    pub to_stage: &'static str,
    pub from_tier: &'static str,
    pub to_tier: &'static str,
    pub from_score: f64,
    pub to_score: f64,
}

/// The comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Accounts judged by both versions.
    pub compared: usize,
    /// Of those, accounts whose stage and tier stay (the score may move).
    pub unchanged: usize,
    pub stages: BTreeMap<&'static str, Movement>,
    pub tiers: BTreeMap<&'static str, Movement>,
    /// Accounts whose stage or tier changes, by account id (at most [`MAX_LISTED_CHANGES`]).
    pub changes: Vec<Change>,
    /// More accounts changed than are listed.
    pub changes_truncated: bool,
    /// Accounts the draft cannot judge from stored state, by reason.
    pub untracked: BTreeMap<String, usize>,
    pub untracked_accounts: usize,
    /// Accounts the active version cannot judge from stored state (being rebuilt), by reason.
    pub active_untracked: BTreeMap<String, usize>,
    pub active_untracked_accounts: usize,
}

fn moved(map: &mut BTreeMap<&'static str, Movement>, before: &'static str, after: &'static str) {
    map.entry(before).or_default().before += 1;
    map.entry(after).or_default().after += 1;
    if before != after {
        map.entry(before).or_default().leaving += 1;
        map.entry(after).or_default().entering += 1;
    }
}

impl Comparison {
    /// Adds one account: its verdict under the active version (`before`) and the draft
    /// (`after`), or why one of them cannot be made.
    pub fn add(
        &mut self,
        account: &str,
        before: Result<Verdict, Vec<String>>,
        after: Result<Verdict, Vec<String>>,
    ) {
        let (before, after) = match (before, after) {
            (Ok(b), Ok(a)) => (b, a),
            (b, a) => {
                if let Err(reasons) = a {
                    self.untracked_accounts += 1;
                    for r in reasons {
                        *self.untracked.entry(r).or_default() += 1;
                    }
                }
                if let Err(reasons) = b {
                    self.active_untracked_accounts += 1;
                    for r in reasons {
                        *self.active_untracked.entry(r).or_default() += 1;
                    }
                }
                return;
            }
        };
        self.compared += 1;
        let (bs, as_) = (before.stage().as_str(), after.stage().as_str());
        let (bt, at) = (before.tier.as_str(), after.tier.as_str());
        moved(&mut self.stages, bs, as_);
        moved(&mut self.tiers, bt, at);
        if bs == as_ && bt == at {
            self.unchanged += 1;
            return;
        }
        if self.changes.len() >= MAX_LISTED_CHANGES {
            self.changes_truncated = true;
            return;
        }
        let round = |x: f64| (x * 100.0).round() / 100.0;
        self.changes.push(Change {
            account: account.to_owned(),
            from_stage: bs,
            to_stage: as_,
            from_tier: bt,
            to_tier: at,
            from_score: round(before.score),
            to_score: round(after.score),
        });
    }

    /// Sorts the listed changes by account id (reads are in key-hash order).
    pub fn finish(&mut self) {
        self.changes.sort_by(|a, b| a.account.cmp(&b.account));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pql_engine::definition::Tier;

    fn v(score: f64, tier: Tier, qualifies: bool) -> Verdict {
        Verdict {
            score,
            tier,
            activated: true,
            fit_good: true,
            disqualified: false,
            qualifies,
        }
    }

    #[test]
    fn counts_moves_both_ways_and_lists_changes() {
        let mut c = Comparison::default();
        c.add(
            "b",
            Ok(v(70.0, Tier::Hot, true)),
            Ok(v(70.0, Tier::Warm, false)),
        );
        c.add(
            "a",
            Ok(v(40.0, Tier::Warm, false)),
            Ok(v(61.234, Tier::Hot, true)),
        );
        c.add(
            "c",
            Ok(v(10.0, Tier::Cold, false)),
            Ok(v(12.0, Tier::Cold, false)),
        );
        c.add(
            "d",
            Ok(v(10.0, Tier::Cold, false)),
            Err(vec!["milestone `x`".into()]),
        );
        c.finish();
        assert_eq!(c.compared, 3);
        assert_eq!(c.unchanged, 1);
        assert_eq!(
            c.stages["pql"],
            Movement {
                before: 1,
                after: 1,
                entering: 1,
                leaving: 1
            }
        );
        assert_eq!(
            c.stages["activated"],
            Movement {
                before: 2,
                after: 2,
                entering: 1,
                leaving: 1
            }
        );
        assert_eq!(
            c.tiers["hot"],
            Movement {
                before: 1,
                after: 1,
                entering: 1,
                leaving: 1
            }
        );
        assert_eq!(
            c.tiers["cold"],
            Movement {
                before: 1,
                after: 1,
                entering: 0,
                leaving: 0
            }
        );
        let ids: Vec<&str> = c.changes.iter().map(|c| c.account.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(c.changes[0].to_score, 61.23);
        assert_eq!(
            (c.changes[0].from_stage, c.changes[0].to_stage),
            ("activated", "pql")
        );
        assert_eq!(c.untracked_accounts, 1);
        assert_eq!(c.untracked["milestone `x`"], 1);
        assert_eq!(c.active_untracked_accounts, 0);
    }

    #[test]
    fn lists_at_most_the_bound_but_counts_everything() {
        let mut c = Comparison::default();
        for i in 0..MAX_LISTED_CHANGES + 5 {
            c.add(
                &format!("a{i}"),
                Ok(v(10.0, Tier::Cold, false)),
                Ok(v(40.0, Tier::Warm, false)),
            );
        }
        assert_eq!(c.changes.len(), MAX_LISTED_CHANGES);
        assert!(c.changes_truncated);
        assert_eq!(c.tiers["warm"].entering, MAX_LISTED_CHANGES + 5);
    }
}
