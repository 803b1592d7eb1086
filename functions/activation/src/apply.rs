//! One event's attribution plan carried out on versioned records (see the crate docs).

use std::collections::VecDeque;

use aws_sdk_dynamodb::types::AttributeValue;
use pql_engine::attribution::{attribute, push_unique, Target};
use pql_engine::{AccountState, Definition, Event, Timestamp};
use pql_store::sweep::{due_attributes, next_due};
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, UserRecord};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::handler::Usage;
use crate::{Activation, ActivationError};

/// What one event is applied with.
pub(crate) struct Cx<'a> {
    pub tenant: &'a TenantId,
    pub definition: &'a Definition,
    pub event: &'a Event,
    pub usage: &'a mut Usage,
}

/// A record of the state table that holds an activity state.
trait Record: Serialize + DeserializeOwned + Send + Sync {
    const KIND: RecordKind;
    fn fresh(definition: &Definition) -> Self;
    fn state_mut(&mut self) -> &mut AccountState;
    /// Called once the record changed, before it is written.
    fn touched(&mut self, _at: Timestamp) {}
    /// More attributes for the item's put (the account's place in the sweep index).
    fn index_attributes(
        &self,
        _tenant: &TenantId,
        _id: &str,
        _definition: &Definition,
    ) -> Vec<(String, AttributeValue)> {
        Vec::new()
    }
}

impl Record for AccountRecord {
    const KIND: RecordKind = RecordKind::Account;

    fn fresh(definition: &Definition) -> Self {
        AccountRecord {
            state: AccountState::new(definition),
            clock: Timestamp::MIN,
        }
    }

    fn state_mut(&mut self) -> &mut AccountState {
        &mut self.state
    }

    /// Decisions are made at the latest event time that changed the account (as `Ledger`).
    fn index_attributes(
        &self,
        tenant: &TenantId,
        id: &str,
        definition: &Definition,
    ) -> Vec<(String, AttributeValue)> {
        due_attributes(tenant, id, next_due(definition, &self.state, self.clock))
    }

    fn touched(&mut self, at: Timestamp) {
        self.clock = self.clock.max(at);
    }
}

impl Record for UserRecord {
    const KIND: RecordKind = RecordKind::User;

    fn fresh(definition: &Definition) -> Self {
        UserRecord {
            state: AccountState::new(definition),
            ..UserRecord::default()
        }
    }

    fn state_mut(&mut self) -> &mut AccountState {
        &mut self.state
    }
}

impl Activation {
    /// Carries out the event's attribution plan: join, link, then the target.
    pub(crate) async fn apply_event(&self, cx: &mut Cx<'_>) -> Result<(), ActivationError> {
        let event = cx.event;
        let plan = attribute(event);
        if let Some(join) = plan.join {
            self.join(cx, join.user, join.other).await?;
        }
        let mut linked: Option<(&str, Vec<AccountState>)> = None;
        if let Some(link) = plan.link {
            let states = self.link(cx, link.user, link.account).await?;
            linked = Some((link.account, states));
        }
        match plan.target {
            Target::Account(account) => {
                // A group call: the linked users' states and the call itself, in one write.
                let states = match linked.take() {
                    Some((a, states)) if a == account => states,
                    _ => Vec::new(),
                };
                self.update::<AccountRecord>(cx, account, |r, d| {
                    let mut changed = false;
                    for s in &states {
                        changed |= r.state.merge(d, s);
                    }
                    changed | r.state.apply(d, event)
                })
                .await?;
            }
            Target::User(user) => {
                let record = self
                    .update::<UserRecord>(cx, user, |r, d| r.state.apply(d, event))
                    .await?;
                let (_, _, accounts) = self.identities(cx, user, Some(record)).await?;
                for account in accounts {
                    self.update::<AccountRecord>(cx, &account, |r, d| r.state.apply(d, event))
                        .await?;
                }
            }
        }
        // A link whose account is not the target (cannot happen with the Segment spec's
        // calls, where a group call targets its own account): merge on its own.
        if let Some((account, states)) = linked {
            self.merge_into(cx, account, &states).await?;
        }
        Ok(())
    }

    /// Joins two identities: each becomes an alias of the other; then the activity of every
    /// identity now joined counts for every account of any of them.
    async fn join(&self, cx: &mut Cx<'_>, a: &str, b: &str) -> Result<(), ActivationError> {
        self.update::<UserRecord>(cx, a, |r, _| push_unique(&mut r.aliases, b))
            .await?;
        self.update::<UserRecord>(cx, b, |r, _| push_unique(&mut r.aliases, a))
            .await?;
        // Read after both writes: an event or link that raced with them is either in these
        // states / accounts, or saw the aliases and applied itself.
        let (_, states, accounts) = self.identities(cx, a, None).await?;
        for account in accounts {
            self.merge_into(cx, &account, &states).await?;
        }
        Ok(())
    }

    /// Links a user and every identity joined to it to an account. Returns the states to merge
    /// into the account: each identity's, as of the version that lists the account.
    async fn link(
        &self,
        cx: &mut Cx<'_>,
        user: &str,
        account: &str,
    ) -> Result<Vec<AccountState>, ActivationError> {
        let mut seen: Vec<String> = Vec::new();
        let mut queue: VecDeque<String> = VecDeque::from([user.to_owned()]);
        let mut states = Vec::new();
        while let Some(id) = queue.pop_front() {
            if !push_unique(&mut seen, &id) {
                continue;
            }
            let record = self
                .update::<UserRecord>(cx, &id, |r, _| push_unique(&mut r.accounts, account))
                .await?;
            queue.extend(record.aliases);
            states.push(record.state);
        }
        Ok(states)
    }

    /// The identity and every identity joined to it (transitively), their states and the
    /// accounts of any of them. `first` is the identity's own record when just written.
    async fn identities(
        &self,
        cx: &mut Cx<'_>,
        user: &str,
        first: Option<UserRecord>,
    ) -> Result<(Vec<String>, Vec<AccountState>, Vec<String>), ActivationError> {
        let mut ids: Vec<String> = vec![user.to_owned()];
        let mut states = Vec::new();
        let mut accounts: Vec<String> = Vec::new();
        let mut first = first;
        let mut next = 0;
        while next < ids.len() {
            let record = match first.take() {
                Some(record) => Some(record),
                None => self
                    .store
                    .load_record::<UserRecord>(cx.tenant, RecordKind::User, &ids[next])
                    .await?
                    .map(|v| v.value),
            };
            next += 1;
            let Some(record) = record else {
                continue;
            };
            for alias in &record.aliases {
                push_unique(&mut ids, alias);
            }
            for account in &record.accounts {
                push_unique(&mut accounts, account);
            }
            if record.state.follows(cx.definition) {
                states.push(record.state);
            }
        }
        Ok((ids, states, accounts))
    }

    async fn merge_into(
        &self,
        cx: &mut Cx<'_>,
        account: &str,
        states: &[AccountState],
    ) -> Result<(), ActivationError> {
        self.update::<AccountRecord>(cx, account, |r, d| {
            let mut changed = false;
            for s in states {
                changed |= r.state.merge(d, s);
            }
            changed
        })
        .await?;
        Ok(())
    }

    /// Read, modify, write if changed, conditional on the version read; on a conflict read
    /// again and re-apply (bounded, with jittered backoff). Returns the record as stored (or as
    /// read, when nothing changed).
    async fn update<R: Record>(
        &self,
        cx: &mut Cx<'_>,
        id: &str,
        mut modify: impl FnMut(&mut R, &Definition) -> bool + Send,
    ) -> Result<R, ActivationError> {
        let definition = cx.definition;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut record, version) =
                match self.store.load_record::<R>(cx.tenant, R::KIND, id).await? {
                    Some(v) => (v.value, v.version),
                    None => (R::fresh(definition), 0),
                };
            let mut changed = false;
            if !record.state_mut().follows(definition) {
                // Rebuilding from raw events after a definition change is the Growth-teams
                // issue; until then the state restarts under the active definition.
                tracing::warn!(
                    tenant = %cx.tenant,
                    kind = R::KIND.as_str(),
                    id,
                    stored = %record.state_mut().definition_version,
                    active = %definition.version,
                    "state follows another definition: starting it afresh"
                );
                *record.state_mut() = AccountState::new(definition);
                changed = true;
            }
            changed |= modify(&mut record, definition);
            if !changed {
                return Ok(record);
            }
            record.touched(cx.event.timestamp);
            if let Some(hook) = &self.save_hook {
                hook(R::KIND, id.to_owned()).await;
            }
            match self
                .store
                .save_record_with(
                    cx.tenant,
                    R::KIND,
                    id,
                    &record,
                    version,
                    record.index_attributes(cx.tenant, id, definition),
                )
                .await?
            {
                Ok((_, units)) => {
                    match R::KIND {
                        RecordKind::Account => cx.usage.account_writes += 1,
                        RecordKind::User => cx.usage.user_writes += 1,
                    }
                    cx.usage.write_units += units;
                    return Ok(record);
                }
                Err(pql_store::Conflict) => {
                    cx.usage.conflicts += 1;
                    if attempt >= self.retry.max_attempts {
                        return Err(ActivationError::contention(R::KIND, id, attempt));
                    }
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                }
            }
        }
    }
}
