//! An in-memory ledger of accounts and users: the whole engine driven over a stream of events,
//! as `pql backtest` and the tests use it. Pure: no I/O, no clock.
//!
//! Attribution rules:
//! * A `group` call links its user to the account. Activity the user sent before, that named no
//!   account, is merged into the account then.
//! * An event that names its account (`context.groupId`) counts for that account only.
//! * An event that names no account counts for **every** account its user is linked to, now or
//!   later (a consultant in two workspaces moves both). Name the account with `context.groupId`
//!   when that is not what you want.
//! * `alias` (previousId → userId) and `identify` carrying both ids join two identities: each
//!   side's activity counts for the other's accounts too. Joins are transitive: all identities
//!   joined directly or through others are one person.

use std::collections::HashMap;

use crate::attribution::{attribute, push_unique, Join, Link, Target};
use crate::definition::Definition;
use crate::evaluate::{evaluate, verdict, Decision, Verdict};
use crate::event::Event;
use crate::lifecycle::{Lifecycle, Qualification};
use crate::state::AccountState;
use crate::time::Timestamp;

#[derive(Debug, Clone)]
pub struct AccountEntry {
    pub state: AccountState,
    pub lifecycle: Lifecycle,
    /// Event clock of the account: decisions are made at the latest event time seen.
    pub clock: Timestamp,
}

#[derive(Debug, Clone)]
struct UserEntry {
    /// Activity that named no account.
    state: AccountState,
    accounts: Vec<Box<str>>,
    /// Other identities joined to this one by alias / identify.
    aliases: Vec<Box<str>>,
}

/// A qualification made while ingesting, with the account it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountQualification {
    pub account: String,
    pub qualification: Qualification,
}

pub struct Ledger<'d> {
    definition: &'d Definition,
    accounts: HashMap<Box<str>, AccountEntry>,
    users: HashMap<Box<str>, UserEntry>,
}

impl<'d> Ledger<'d> {
    pub fn new(definition: &'d Definition) -> Self {
        Ledger {
            definition,
            accounts: HashMap::new(),
            users: HashMap::new(),
        }
    }

    pub fn definition(&self) -> &'d Definition {
        self.definition
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&str, &AccountEntry)> {
        self.accounts.iter().map(|(k, v)| (&**k, v))
    }

    pub fn account(&self, id: &str) -> Option<&AccountEntry> {
        self.accounts.get(id)
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The full decision for an account at `now`.
    pub fn decide(&self, account: &str, now: Timestamp) -> Option<Decision> {
        self.accounts
            .get(account)
            .map(|a| evaluate(self.definition, &a.state, now))
    }

    /// Applies one event; returns the qualifications it caused (usually none). Carries out
    /// the event's [`attribute`] plan, as the activation function does on DynamoDB records.
    pub fn ingest(&mut self, event: &Event) -> Vec<AccountQualification> {
        let definition = self.definition;
        let plan = attribute(event);
        let mut touched: Vec<Box<str>> = Vec::new();

        if let Some(Join { user, other }) = plan.join {
            self.join(user, other, &mut touched);
        }
        if let Some(Link { user, account }) = plan.link {
            self.link(user, account, &mut touched);
        }
        match plan.target {
            Target::Account(account) if touched.is_empty() => {
                // The common case, an event that names its account: one entry, decided here
                // (no list of touched accounts to build and look up again).
                let entry = self.account_entry(account);
                if !entry.state.apply(definition, event) {
                    return Vec::new();
                }
                return decide(definition, entry, account, event.timestamp)
                    .into_iter()
                    .collect();
            }
            Target::Account(account) => {
                let entry = self.account_entry(account);
                if entry.state.apply(definition, event) {
                    push_unique(&mut touched, account);
                }
            }
            Target::User(user) => {
                let accounts = self.identity_accounts(user);
                self.user_entry(user).state.apply(definition, event);
                for account in accounts {
                    let entry = self.account_entry(&account);
                    if entry.state.apply(definition, event) {
                        push_unique(&mut touched, &account);
                    }
                }
            }
        }

        touched
            .iter()
            .filter_map(|account| {
                let entry = self
                    .accounts
                    .get_mut(account)
                    .expect("touched accounts exist");
                decide(definition, entry, account, event.timestamp)
            })
            .collect()
    }

    fn account_entry(&mut self, id: &str) -> &mut AccountEntry {
        if !self.accounts.contains_key(id) {
            let entry = AccountEntry {
                state: AccountState::new(self.definition),
                lifecycle: Lifecycle::default(),
                clock: Timestamp::MIN,
            };
            self.accounts.insert(id.into(), entry);
        }
        self.accounts.get_mut(id).expect("inserted above")
    }

    fn user_entry(&mut self, id: &str) -> &mut UserEntry {
        if !self.users.contains_key(id) {
            let entry = UserEntry {
                state: AccountState::new(self.definition),
                accounts: Vec::new(),
                aliases: Vec::new(),
            };
            self.users.insert(id.into(), entry);
        }
        self.users.get_mut(id).expect("inserted above")
    }

    /// The identity and every identity joined to it, directly or through others: one person.
    /// (Following only direct aliases made attribution depend on arrival order: two anonymous
    /// ids joined to the same user id would or would not share accounts depending on whether
    /// the group call came before or after the joins.)
    fn identities(&self, user: &str) -> Vec<Box<str>> {
        let mut ids: Vec<Box<str>> = vec![user.into()];
        let mut next = 0;
        while next < ids.len() {
            if let Some(u) = self.users.get(&ids[next]) {
                for alias in &u.aliases {
                    if !ids.contains(alias) {
                        ids.push(alias.clone());
                    }
                }
            }
            next += 1;
        }
        ids
    }

    fn identity_accounts(&self, user: &str) -> Vec<Box<str>> {
        let mut accounts: Vec<Box<str>> = Vec::new();
        for id in self.identities(user) {
            if let Some(u) = self.users.get(&id) {
                for a in &u.accounts {
                    push_unique(&mut accounts, a);
                }
            }
        }
        accounts
    }

    /// Links a user (and the identities joined to it) to an account, merging their
    /// unattributed activity into it.
    fn link(&mut self, user: &str, account: &str, touched: &mut Vec<Box<str>>) {
        self.user_entry(user);
        let definition = self.definition;
        for id in self.identities(user) {
            let Some(u) = self.users.get(&id) else {
                continue;
            };
            let state = u.state.clone();
            if !u.accounts.iter().any(|a| &**a == account) {
                self.users
                    .get_mut(&id)
                    .expect("exists")
                    .accounts
                    .push(account.into());
            }
            if self.account_entry(account).state.merge(definition, &state) {
                push_unique(touched, account);
            }
        }
    }

    /// Joins two identities of the same person.
    fn join(&mut self, a: &str, b: &str, touched: &mut Vec<Box<str>>) {
        if a == b {
            return;
        }
        self.user_entry(a);
        self.user_entry(b);
        for (x, y) in [(a, b), (b, a)] {
            let u = self.users.get_mut(x).expect("exists");
            if !u.aliases.iter().any(|i| &**i == y) {
                u.aliases.push(y.into());
            }
        }
        // Everyone's activity in the now joined identity counts for all of its accounts.
        let definition = self.definition;
        let accounts = self.identity_accounts(a);
        let states: Vec<AccountState> = self
            .identities(a)
            .iter()
            .filter_map(|id| self.users.get(id).map(|u| u.state.clone()))
            .collect();
        for account in accounts {
            for state in &states {
                if self.account_entry(&account).state.merge(definition, state) {
                    push_unique(touched, &account);
                }
            }
        }
    }
}

/// Moves the account's clock to `at` and feeds the verdict then to its lifecycle.
fn decide(
    definition: &Definition,
    entry: &mut AccountEntry,
    account: &str,
    at: Timestamp,
) -> Option<AccountQualification> {
    entry.clock = entry.clock.max(at);
    let v: Verdict = verdict(definition, &entry.state, entry.clock);
    entry
        .lifecycle
        .observe(definition, &v, entry.clock)
        .map(|qualification| AccountQualification {
            account: account.to_owned(),
            qualification,
        })
}
