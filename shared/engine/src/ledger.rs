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
//!   side's activity counts for the other's accounts too.

use std::collections::HashMap;

use crate::definition::Definition;
use crate::evaluate::{evaluate, verdict, Decision, Verdict};
use crate::event::{Event, EventKind};
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

    /// Applies one event; returns the qualifications it caused (usually none).
    pub fn ingest(&mut self, event: &Event) -> Vec<AccountQualification> {
        let definition = self.definition;
        let user_key = event.user_key();
        let mut touched: Vec<Box<str>> = Vec::new();

        if let (Some(user), Some(anon)) = (&event.user_id, &event.anonymous_id) {
            if matches!(event.kind, EventKind::Identify) {
                self.join(user, anon, &mut touched);
            }
        }
        if let EventKind::Alias { previous_id } = &event.kind {
            if let Some(user) = &event.user_id {
                self.join(user, previous_id, &mut touched);
            }
        }

        match (&event.kind, event.account_id()) {
            (EventKind::Group { group_id }, _) => {
                self.link(user_key, group_id, &mut touched);
                let entry = self.account_entry(group_id);
                if entry.state.apply(definition, event) {
                    push_unique(&mut touched, group_id);
                }
            }
            (_, Some(account)) => {
                let entry = self.account_entry(account);
                if entry.state.apply(definition, event) {
                    push_unique(&mut touched, account);
                }
            }
            (_, None) => {
                let accounts = self.identity_accounts(user_key);
                let user = self.user_entry(user_key);
                user.state.apply(definition, event);
                for account in accounts {
                    let entry = self.account_entry(&account);
                    if entry.state.apply(definition, event) {
                        push_unique(&mut touched, &account);
                    }
                }
            }
        }

        let mut out = Vec::new();
        for account in touched {
            let entry = self
                .accounts
                .get_mut(&account)
                .expect("touched accounts exist");
            entry.clock = entry.clock.max(event.timestamp);
            let v: Verdict = verdict(definition, &entry.state, entry.clock);
            if let Some(q) = entry.lifecycle.observe(definition, &v, entry.clock) {
                out.push(AccountQualification {
                    account: account.to_string(),
                    qualification: q,
                });
            }
        }
        out
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

    /// The identity and every identity joined to it (one hop: alias chains are short).
    fn identities(&self, user: &str) -> Vec<Box<str>> {
        let mut ids: Vec<Box<str>> = vec![user.into()];
        if let Some(u) = self.users.get(user) {
            ids.extend(u.aliases.iter().cloned());
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
        // Each side's activity now counts for the other side's accounts.
        let definition = self.definition;
        let accounts = [
            self.users[a].accounts.clone(),
            self.users[b].accounts.clone(),
        ]
        .concat();
        let states = [self.users[a].state.clone(), self.users[b].state.clone()];
        for account in accounts {
            for state in &states {
                if self.account_entry(&account).state.merge(definition, state) {
                    push_unique(touched, &account);
                }
            }
        }
    }
}

fn push_unique(list: &mut Vec<Box<str>>, item: &str) {
    if !list.iter().any(|x| &**x == item) {
        list.push(item.into());
    }
}
