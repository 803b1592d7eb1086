//! One event's attribution plan carried out on the batch's records (see the crate docs).
//!
//! Records are read once per batch into a [`Cache`] and modified there; [`Activation::flush`]
//! then writes each changed record once, conditional on the version read. A batch of a
//! hundred events of one account costs one account write instead of a hundred.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::stream::{FuturesUnordered, StreamExt};
use pql_engine::attribution::{attribute, push_unique, Target};
use pql_engine::{AccountState, Definition, Event, Timestamp};
use pql_store::sweep::{due_attributes, next_due};
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, UserRecord};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::handler::Usage;
use crate::{Activation, ActivationError};

/// A record as the batch sees it.
pub(crate) struct Entry<R> {
    record: R,
    /// The version read (0: not stored yet); the flush writes conditionally on it.
    version: u64,
    /// Changed by the batch: written by the flush.
    dirty: bool,
    /// Read to find joined identities or accounts but not changed: the flush checks that it
    /// is still at `version` after the writes (see [`Activation::flush`]).
    validate: bool,
    /// The definition the record follows (for the sweep index of an account).
    definition: Arc<Definition>,
}

type Key = (TenantId, String);

/// The records one batch read and changed.
#[derive(Default)]
pub(crate) struct Cache {
    accounts: HashMap<Key, Entry<AccountRecord>>,
    users: HashMap<Key, Entry<UserRecord>>,
}

/// Why a flush did not write everything.
pub(crate) enum FlushError {
    /// A record changed since the batch read it: run the batch again on fresh reads.
    Conflict {
        kind: RecordKind,
        id: String,
    },
    Store(ActivationError),
}

/// What one event is applied with.
pub(crate) struct Cx<'a> {
    pub tenant: &'a TenantId,
    pub definition: &'a Arc<Definition>,
    pub event: &'a Event,
    pub cache: &'a mut Cache,
}

/// A record of the state table that holds an activity state.
pub(crate) trait Record:
    Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    const KIND: RecordKind;
    fn fresh(definition: &Definition) -> Self;
    fn state_mut(&mut self) -> &mut AccountState;
    fn entries(cache: &mut Cache) -> &mut HashMap<Key, Entry<Self>>;
    /// Called once per batch, as the record is read.
    fn loaded(&mut self) {}
    /// Called after an event at `at` changed the record.
    fn touched(&mut self, _definition: &Definition, _at: Timestamp) {}
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
            points: Vec::new(),
        }
    }

    fn state_mut(&mut self) -> &mut AccountState {
        &mut self.state
    }

    fn entries(cache: &mut Cache) -> &mut HashMap<Key, Entry<Self>> {
        &mut cache.accounts
    }

    /// The points stored with the previous write were observed from that write.
    fn loaded(&mut self) {
        self.points.clear();
    }

    /// Decisions are made at the time of each event that changed the account (as `Ledger`).
    fn touched(&mut self, definition: &Definition, at: Timestamp) {
        AccountRecord::touched(self, definition, at);
    }

    fn index_attributes(
        &self,
        tenant: &TenantId,
        id: &str,
        definition: &Definition,
    ) -> Vec<(String, AttributeValue)> {
        due_attributes(tenant, id, next_due(definition, &self.state, self.clock))
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

    fn entries(cache: &mut Cache) -> &mut HashMap<Key, Entry<Self>> {
        &mut cache.users
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
                None => self.read::<UserRecord>(cx, &ids[next]).await?,
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

    /// The record as the batch sees it, read from the store the first time.
    async fn entry<'c, R: Record>(
        &self,
        cx: &'c mut Cx<'_>,
        id: &str,
    ) -> Result<&'c mut Entry<R>, ActivationError> {
        let key = (cx.tenant.clone(), id.to_owned());
        if !R::entries(cx.cache).contains_key(&key) {
            let definition = cx.definition;
            let (mut record, version) =
                match self.store.load_record::<R>(cx.tenant, R::KIND, id).await? {
                    Some(v) => (v.value, v.version),
                    None => (R::fresh(definition), 0),
                };
            record.loaded();
            let mut dirty = false;
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
                dirty = true;
            }
            R::entries(cx.cache).insert(
                key.clone(),
                Entry {
                    record,
                    version,
                    dirty,
                    validate: false,
                    definition: definition.clone(),
                },
            );
        }
        Ok(R::entries(cx.cache).get_mut(&key).expect("inserted above"))
    }

    /// Reads a record to follow its links (not to change it): the flush validates it.
    async fn read<R: Record>(
        &self,
        cx: &mut Cx<'_>,
        id: &str,
    ) -> Result<Option<R>, ActivationError> {
        let entry = self.entry::<R>(cx, id).await?;
        entry.validate = true;
        // Not stored and not created by this batch: nothing to follow. (A record created
        // concurrently is caught by validation: it must still not exist.)
        let absent = entry.version == 0 && !entry.dirty;
        Ok((!absent).then(|| entry.record.clone()))
    }

    /// Modifies the batch's copy of a record; the flush writes it if anything changed.
    /// Returns the record as modified.
    async fn update<R: Record>(
        &self,
        cx: &mut Cx<'_>,
        id: &str,
        modify: impl FnOnce(&mut R, &Definition) -> bool + Send,
    ) -> Result<R, ActivationError> {
        let at = cx.event.timestamp;
        let definition = cx.definition.clone();
        let entry = self.entry::<R>(cx, id).await?;
        if modify(&mut entry.record, &definition) {
            entry.record.touched(&definition, at);
            entry.dirty = true;
        }
        Ok(entry.record.clone())
    }

    /// Writes every changed record of the batch (concurrently), each conditional on the
    /// version the batch read, then checks that the records only read are unchanged.
    ///
    /// That order keeps the serialisation argument of the crate docs: a concurrent writer
    /// either wrote before our reads (we saw it), or wrote after one of our writes (its
    /// conditional write fails and it re-reads ours), or wrote a record we only read after we
    /// read it (the validation fails). On a conflict the caller runs the batch again on
    /// fresh reads; what was written already is harmless, as applying events is idempotent.
    pub(crate) async fn flush(
        &self,
        cache: &mut Cache,
        usage: &mut HashMap<TenantId, Usage>,
    ) -> Result<(), FlushError> {
        for entry in cache.accounts.values_mut().filter(|e| e.dirty) {
            entry.record.close_points(&entry.definition);
        }
        let cache = &*cache;
        let mut conflict = None;
        let writes = FuturesUnordered::new();
        for ((tenant, id), entry) in cache.users.iter().filter(|(_, e)| e.dirty) {
            writes.push(self.write(tenant, id, entry));
        }
        let account_writes = FuturesUnordered::new();
        for ((tenant, id), entry) in cache.accounts.iter().filter(|(_, e)| e.dirty) {
            account_writes.push(self.write(tenant, id, entry));
        }
        for outcome in [
            writes.collect::<Vec<_>>().await,
            account_writes.collect::<Vec<_>>().await,
        ]
        .into_iter()
        .flatten()
        {
            let (tenant, kind, id, result) = outcome;
            let usage = usage.entry(tenant.clone()).or_default();
            match result {
                Ok(Ok((_, units))) => {
                    match kind {
                        RecordKind::Account => usage.account_writes += 1,
                        RecordKind::User => usage.user_writes += 1,
                    }
                    usage.write_units += units;
                }
                Ok(Err(pql_store::Conflict)) => {
                    usage.conflicts += 1;
                    conflict.get_or_insert((kind, id.clone()));
                }
                Err(e) => return Err(FlushError::Store(e.into())),
            }
        }
        if let Some((kind, id)) = conflict {
            return Err(FlushError::Conflict { kind, id });
        }
        // The records only read, re-read together (their versions only).
        let checks: Vec<_> = cache
            .users
            .iter()
            .filter(|(_, e)| e.validate && !e.dirty)
            .map(|((tenant, id), entry)| async move {
                let now = self
                    .store
                    .record_version(tenant, RecordKind::User, id)
                    .await;
                (tenant, id, entry.version, now)
            })
            .collect::<FuturesUnordered<_>>()
            .collect()
            .await;
        for (tenant, id, read, now) in checks {
            if now.map_err(|e| FlushError::Store(e.into()))? != read {
                usage.entry(tenant.clone()).or_default().conflicts += 1;
                return Err(FlushError::Conflict {
                    kind: RecordKind::User,
                    id: id.clone(),
                });
            }
        }
        Ok(())
    }

    async fn write<'e, R: Record>(
        &self,
        tenant: &'e TenantId,
        id: &'e String,
        entry: &'e Entry<R>,
    ) -> (
        &'e TenantId,
        RecordKind,
        &'e String,
        Result<Result<(u64, f64), pql_store::Conflict>, pql_store::StoreError>,
    ) {
        if let Some(hook) = &self.save_hook {
            hook(R::KIND, id.clone()).await;
        }
        let extra = entry.record.index_attributes(tenant, id, &entry.definition);
        let result = self
            .store
            .save_record_with(tenant, R::KIND, id, &entry.record, entry.version, extra)
            .await;
        (tenant, R::KIND, id, result)
    }
}
