//! One event's attribution plan carried out on the batch's records (see the crate docs).
//!
//! Records are read once per batch into a [`Cache`] and modified there; [`Activation::flush`]
//! then writes each changed record once, conditional on the version read. A batch of a
//! hundred events of one account costs one account write instead of a hundred.

use std::collections::{BTreeSet, HashMap, VecDeque};
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
    /// The definition the record's state follows: the active one (the state followed it,
    /// or was mapped to it), or the stored version the state follows when it cannot be
    /// mapped (events are applied under it until the re-evaluation job rebuilds it). `None`:
    /// that version is not stored; the state is left as it is.
    definition: Option<Arc<Definition>>,
}

type Key = (TenantId, String);

/// The records one batch read and changed.
#[derive(Default)]
pub(crate) struct Cache {
    accounts: HashMap<Key, Entry<AccountRecord>>,
    users: HashMap<Key, Entry<UserRecord>>,
    /// Accounts whose state could not take what the batch had for them (a user state of
    /// another definition version, or a state whose version is not stored): queued for a
    /// rebuild from raw events once the batch is written.
    rebuilds: BTreeSet<Key>,
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
        _definition: Option<&Definition>,
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
        definition: Option<&Definition>,
    ) -> Vec<(String, AttributeValue)> {
        let due = definition.and_then(|d| next_due(d, &self.state, self.clock));
        due_attributes(tenant, id, due)
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
                let states = self.on_account_version(cx, account, states).await?;
                self.update_state::<AccountRecord>(cx, account, |state, d| {
                    let mut changed = false;
                    for s in &states {
                        changed |= state.merge(d, s);
                    }
                    changed | state.apply(d, event)
                })
                .await?;
            }
            Target::User(user) => {
                let record = self
                    .update_state::<UserRecord>(cx, user, |state, d| state.apply(d, event))
                    .await?;
                let (_, _, accounts) = self.identities(cx, user, Some(record)).await?;
                for account in accounts {
                    self.update_state::<AccountRecord>(cx, &account, |state, d| {
                        state.apply(d, event)
                    })
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
        self.update_links(cx, a, |r| push_unique(&mut r.aliases, b))
            .await?;
        self.update_links(cx, b, |r| push_unique(&mut r.aliases, a))
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
                .update_links(cx, &id, |r| push_unique(&mut r.accounts, account))
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
            // Whatever version it follows: merging puts it on the account's (or does not
            // merge it, and queues the account for a rebuild).
            states.push(record.state);
        }
        Ok((ids, states, accounts))
    }

    async fn merge_into(
        &self,
        cx: &mut Cx<'_>,
        account: &str,
        states: &[AccountState],
    ) -> Result<(), ActivationError> {
        let states = self
            .on_account_version(cx, account, states.to_vec())
            .await?;
        self.update_state::<AccountRecord>(cx, account, |state, d| {
            let mut changed = false;
            for s in &states {
                changed |= state.merge(d, s);
            }
            changed
        })
        .await?;
        Ok(())
    }

    /// The states to merge into the account, each on the version the account's state
    /// follows: as they are when they follow it, else mapped to it when the version they
    /// follow is stored and its states hold what the account's version needs. A state that
    /// cannot be is not merged (hit sets of different versions do not line up): the account
    /// is queued for a rebuild from raw events, which replays the link or join.
    async fn on_account_version(
        &self,
        cx: &mut Cx<'_>,
        account: &str,
        states: Vec<AccountState>,
    ) -> Result<Vec<AccountState>, ActivationError> {
        let target = self
            .entry::<AccountRecord>(cx, account)
            .await?
            .definition
            .clone();
        let mut on_target = Vec::with_capacity(states.len());
        let mut missing = Vec::new();
        for state in states {
            let Some(target) = &target else {
                missing.push(state.definition_version);
                continue;
            };
            if state.follows(target) {
                on_target.push(state);
                continue;
            }
            let mapped = match self
                .versions
                .get(&self.store, cx.tenant, &state.definition_version)
                .await?
            {
                Some(from) => self
                    .versions
                    .map(&from, target)
                    .and_then(|map| map.map(target, &state)),
                None => None,
            };
            match mapped {
                Some(mapped) => on_target.push(mapped),
                None => missing.push(state.definition_version),
            }
        }
        if !missing.is_empty() {
            tracing::warn!(
                tenant = %cx.tenant,
                account,
                account_version = target.as_ref().map(|d| d.version.as_str()),
                other_versions = ?missing,
                "user state of another definition version cannot be merged: account queued for a rebuild from raw events"
            );
            cx.cache
                .rebuilds
                .insert((cx.tenant.clone(), account.to_owned()));
        }
        Ok(on_target)
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
            let mut follows = Some(definition.clone());
            if !record.state_mut().follows(definition) {
                // The cached active version may be stale (a version activated since): never
                // map a state back to the version it replaced.
                let active = match self.definitions.refresh(&self.store, cx.tenant).await? {
                    Some(fresh) => fresh,
                    None => definition.clone(),
                };
                let stored = record.state_mut().definition_version.clone();
                let outcome = if record.state_mut().follows(&active) {
                    follows = Some(active.clone());
                    "it follows the version activated since the definition was cached"
                } else {
                    follows = self.other_version(cx.tenant, &mut record, &active).await?;
                    dirty = follows
                        .as_ref()
                        .is_some_and(|d| d.version == active.version);
                    match &follows {
                        Some(_) if dirty => "mapped to the active version",
                        Some(_) => "kept under its version until the re-evaluation job rebuilds it",
                        None => "its version is not stored: left as it is",
                    }
                };
                tracing::info!(
                    tenant = %cx.tenant,
                    kind = R::KIND.as_str(),
                    id,
                    %stored,
                    active = %active.version,
                    outcome,
                    "state follows another definition version"
                );
            }
            R::entries(cx.cache).insert(
                key.clone(),
                Entry {
                    record,
                    version,
                    dirty,
                    validate: false,
                    definition: follows,
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

    /// A stored state that follows another version than the active one: mapped to the
    /// active version when the version it follows is stored and its states hold what the
    /// active one needs (as the re-evaluation job maps it); else kept as it is, under its own
    /// version (returned; `None` when it is not stored): the job rebuilds it from the raw
    /// events, which hold every event applied meanwhile.
    async fn other_version<R: Record>(
        &self,
        tenant: &TenantId,
        record: &mut R,
        active: &Arc<Definition>,
    ) -> Result<Option<Arc<Definition>>, ActivationError> {
        let stored = record.state_mut().definition_version.clone();
        let Some(from) = self.versions.get(&self.store, tenant, &stored).await? else {
            return Ok(None);
        };
        let mapped = self
            .versions
            .map(&from, active)
            .and_then(|map| map.map(active, record.state_mut()));
        Ok(match mapped {
            Some(state) => {
                *record.state_mut() = state;
                Some(active.clone())
            }
            None => Some(from),
        })
    }

    /// Changes the batch's copy of a record's state, under the definition the state follows;
    /// the flush writes it if anything changed. An account whose state follows a version
    /// that is not stored is left as it is and queued for a rebuild. Returns the record.
    async fn update_state<R: Record>(
        &self,
        cx: &mut Cx<'_>,
        id: &str,
        modify: impl FnOnce(&mut AccountState, &Definition) -> bool + Send,
    ) -> Result<R, ActivationError> {
        let at = cx.event.timestamp;
        let key = (cx.tenant.clone(), id.to_owned());
        let entry = self.entry::<R>(cx, id).await?;
        match entry.definition.clone() {
            Some(definition) => {
                if modify(entry.record.state_mut(), &definition) {
                    entry.record.touched(&definition, at);
                    entry.dirty = true;
                }
            }
            None => {
                let record = entry.record.clone();
                if R::KIND == RecordKind::Account {
                    cx.cache.rebuilds.insert(key);
                }
                return Ok(record);
            }
        }
        Ok(entry.record.clone())
    }

    /// Changes what a user record lists (its accounts, its aliases), whatever its state.
    async fn update_links(
        &self,
        cx: &mut Cx<'_>,
        id: &str,
        modify: impl FnOnce(&mut UserRecord) -> bool + Send,
    ) -> Result<UserRecord, ActivationError> {
        let entry = self.entry::<UserRecord>(cx, id).await?;
        if modify(&mut entry.record) {
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
            if let Some(definition) = &entry.definition {
                entry.record.close_points(definition);
            }
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
        let mut queued: HashMap<&TenantId, Vec<String>> = HashMap::new();
        for (tenant, account) in &cache.rebuilds {
            queued.entry(tenant).or_default().push(account.clone());
        }
        for (tenant, accounts) in queued {
            self.store
                .queue_rebuilds(tenant, &accounts)
                .await
                .map_err(|e| FlushError::Store(e.into()))?;
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
        let extra = entry
            .record
            .index_attributes(tenant, id, entry.definition.as_deref());
        let result = self
            .store
            .save_record_with(tenant, R::KIND, id, &entry.record, entry.version, extra)
            .await;
        (tenant, R::KIND, id, result)
    }
}
