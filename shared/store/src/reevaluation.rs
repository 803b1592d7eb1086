//! Re-evaluating existing accounts when a definition version is activated (or rolled back).
//!
//! Layout (tenants table, hash key `pk` only, so no change to the template):
//!
//! * `pk = "reevaluation#<tenant>"`: the tenant's latest job, `job` (JSON:
//!   [`ReevaluationJob`]: target version, cursor, progress, started / updated / finished) and
//!   `rev` for optimistic concurrency. A new activation replaces it (the older job's target
//!   is no longer active; the new job visits every account again).
//! * `pk = "reevaluations"`: `tenants`, a string set of the tenants with an unfinished job, so
//!   the sweep finds work with one `GetItem` (no scan). Added to and removed from atomically.
//!
//! * `pk = "rebuilds#<tenant>"`: `accounts`, a string set of accounts queued for a rebuild
//!   from raw events by the activation function ([`Store::queue_rebuilds`]; see below). A
//!   tenant with queued accounts is in the registry too, until the queue is empty.
//!
//! The sweep runs jobs in bounded chunks ([`Store::reevaluate_chunk`]): queued rebuilds
//! first, then one page of the tenant's account records (the bounded admin scan of
//! [`Store::scan_account_records`]), each account updated, then the cursor and counters
//! saved conditionally on `rev`. Each chunk also counts one bounded page of the tenant's
//! account records (a `Select::Count` scan) until the total is known: nothing is counted in
//! the request that starts the job, and `total` is `None` until then. A crash between the
//! updates and the cursor re-runs the chunk, which is safe because each account update is
//! idempotent and conditional on the record's version:
//!
//! * a state that tracks what the new version needs is mapped ([`pql_engine::StateMap`]);
//!   a state that already follows the new version while the previous version's states map
//!   to it was mapped by the activation function (or started under the new version): kept;
//! * any other state is rebuilt from the tenant's stored raw events through the engine's
//!   [`Ledger`] (the same `apply` as the pipeline). A state that follows the new version
//!   (one started afresh after the activation) is merged into the rebuild: hit sets are
//!   idempotent sets, so merging what is already there changes nothing. A state of another
//!   version is *replaced* by the rebuild, so the rebuild must hold every event applied to
//!   it: the runner reads the version of every account record of the tenant *before* it
//!   scans the raw events ([`RebuildCache`]), and replaces a state only if the record is
//!   still at that version; an event the activation function applied in between (under the
//!   old version, see below) makes the runner scan again and retry the account;
//! * the record is written with the item attributes `reevaluation` (the job id) and
//!   `reevaluated_version` (the version written): the qualify function skips exactly that
//!   version on the stream, so the job alone decides what the change means;
//! * an account that was ever alerted (`qualifications > 0`) or is past the pre-sales stages
//!   is never observed by the job, so it is never alerted again; any other account is
//!   observed like the sweep does ([`Store::observe_account`]): a qualification writes its
//!   lifecycle and its one alert in one transaction.
//!
//! Until the job reaches an account, the activation function (`pql-activation`) maps its
//! state to the active version when it can (the same [`pql_engine::StateMap`]), else keeps
//! it under the version it follows and applies events under that version's definition:
//! nothing is reset, and the event is in the events table for the rebuild. The qualify
//! function skips states that do not follow the active version. A user state that cannot be
//! put on an account's version is not merged into it: the account is queued (`rebuilds#`)
//! and rebuilt under the active version by the next chunk (a rebuild replays the link).
//!
//! Raw events are kept for `EVENT_RETENTION_DAYS`: a rebuild sees only what is still stored.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use pql_engine::{AccountState, Definition, Ledger, StateMap, Timestamp};
use serde::{Deserialize, Serialize};

use crate::alerts::{Observation, Observed};
use crate::definitions::VersionCache;
use crate::events::decode_event;
use crate::records::RecordKind;
use crate::sweep::{due_attributes, next_due};
use crate::tenants::TenantId;
use crate::{AccountRecord, Store, StoreError, Versioned};

/// The most raw events one rebuild reads for a tenant (they are replayed in memory).
pub const MAX_REBUILD_EVENTS: usize = 500_000;
/// How often an account whose record keeps changing under the job is retried in one chunk.
const ACCOUNT_ATTEMPTS: u32 = 4;

/// Items a counting page examines, per account record a chunk examines: counting (cheap, a
/// `Select::Count` scan) runs ahead of the chunks, so the total is known early.
const COUNT_PAGES_PER_CHUNK: i32 = 20;

const REGISTRY_PK: &str = "reevaluations";

fn job_pk(tenant: &TenantId) -> String {
    format!("reevaluation#{tenant}")
}

fn rebuilds_pk(tenant: &TenantId) -> String {
    format!("rebuilds#{tenant}")
}

/// A re-evaluation job and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReevaluationJob {
    /// `<version>@<started, ms>`: also stamped on every record the job writes.
    pub id: String,
    pub version: String,
    /// The version active before (`None`: none).
    pub previous: Option<String>,
    /// `activate` or `rollback`.
    pub action: String,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Where the next chunk starts (`None` with `finished_at`: done).
    pub cursor: Option<String>,
    /// The tenant's account records, once counted (`None`: still counting). The job counts
    /// them in bounded pages, one per chunk, alongside its work (never in the request that
    /// started it); accounts created since are visited too, so `done` may pass it.
    #[serde(default)]
    pub total: Option<u64>,
    /// Account records counted so far, and where counting resumes (`None` with `total`
    /// unknown: not started).
    #[serde(default)]
    pub counted: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_cursor: Option<String>,
    /// Accounts visited so far.
    pub done: u64,
    /// Of those: state mapped from the stored state, rebuilt from raw events.
    pub mapped: u64,
    pub rebuilt: u64,
    /// Already done by this job (a chunk run again).
    pub already_done: u64,
    /// New qualifications (one alert each).
    pub qualified: u64,
    /// Accounts alerted before (or past the pre-sales stages): never observed, never alerted.
    pub not_alerted_again: u64,
    /// Accounts that could not be updated (the next chunks go on; see `errors`).
    pub failed: u64,
    /// The latest errors (at most 20).
    pub errors: Vec<String>,
    pub chunks: u64,
}

impl ReevaluationJob {
    pub fn finished(&self) -> bool {
        self.finished_at.is_some()
    }

    fn error(&mut self, message: String) {
        self.failed += 1;
        self.note(message);
    }

    /// An error that is not an account's failure.
    fn note(&mut self, message: String) {
        if self.errors.len() >= 20 {
            self.errors.remove(0);
        }
        self.errors.push(message);
    }

    /// Done ÷ total, between 0 and 1 (`None` while the total is unknown; 1 once finished).
    pub fn progress(&self) -> Option<f64> {
        if self.finished() {
            return Some(1.0);
        }
        match self.total? {
            0 => Some(0.0),
            total => Some((self.done as f64 / total as f64).min(1.0)),
        }
    }
}

/// How one account is re-evaluated.
#[derive(Debug, Clone, Copy)]
struct How {
    /// Rebuilt from raw events whatever its state (a queued rebuild).
    force_rebuild: bool,
    /// A state that already follows the target is kept as it is (the previous version's
    /// states map to the target, so the activation function mapped it, or it started under
    /// the target).
    identity: bool,
}

/// What happened to one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOutcome {
    AlreadyDone,
    Mapped { qualified: bool, observed: bool },
    Rebuilt { qualified: bool, observed: bool },
}

/// What one chunk did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChunkReport {
    pub accounts: usize,
    pub qualified: usize,
    pub finished: bool,
    /// Another runner saved the job first: this chunk's cursor was not saved (its account
    /// updates were idempotent, so nothing is lost).
    pub lost_race: bool,
}

/// Account states rebuilt from the tenant's raw events, for one target version; built at
/// most once per runner and reused by its chunks, unless an account to rebuild changed since
/// (see [`RebuildCache::versions`]).
#[derive(Debug, Default)]
pub struct RebuildCache {
    key: Option<(String, String)>,
    states: HashMap<String, (AccountState, Timestamp)>,
    /// The version of every account record of the tenant, read *before* the raw events were
    /// scanned. A rebuild replaces a record only if it is still at that version: an event
    /// the activation function applied to it since may be missing from the scan.
    versions: HashMap<String, u64>,
    /// The stored versions states are mapped from, and their maps to the target, for every
    /// chunk this runner takes.
    definitions: VersionCache,
}

/// Replays events through the engine's ledger: each account's state and event clock.
pub fn rebuild_states(
    definition: &Definition,
    events: &mut [pql_engine::Event],
) -> HashMap<String, (AccountState, Timestamp)> {
    // Order does not change the state; event time order keeps the ledger's clocks simple.
    events.sort_by(|a, b| {
        (a.timestamp, a.message_id.as_str()).cmp(&(b.timestamp, b.message_id.as_str()))
    });
    let mut ledger = Ledger::new(definition);
    for event in events.iter() {
        ledger.ingest(event);
    }
    ledger
        .accounts()
        .map(|(id, entry)| (id.to_owned(), (entry.state.clone(), entry.clock)))
        .collect()
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

impl Store {
    /// Starts re-evaluating the tenant's accounts under `version` (replacing any earlier job).
    pub async fn start_reevaluation(
        &self,
        tenant: &TenantId,
        version: &str,
        previous: Option<&str>,
        action: &str,
        now: Timestamp,
    ) -> Result<ReevaluationJob, StoreError> {
        let job = ReevaluationJob {
            id: format!("{version}@{}", now.millis()),
            version: version.to_owned(),
            previous: previous.map(str::to_owned),
            action: action.to_owned(),
            started_at: now,
            updated_at: now,
            finished_at: None,
            cursor: None,
            total: None,
            counted: 0,
            count_cursor: None,
            done: 0,
            mapped: 0,
            rebuilt: 0,
            already_done: 0,
            qualified: 0,
            not_alerted_again: 0,
            failed: 0,
            errors: Vec::new(),
            chunks: 0,
        };
        let table = &self.tables.tenants;
        // Unconditional: the newest activation wins; its `rev` restarts, and a runner of
        // the replaced job fails its conditional save (its target is no longer active).
        self.client
            .put_item()
            .table_name(table)
            .item("pk", s(job_pk(tenant)))
            .item("tenant_id", s(tenant.as_str()))
            .item(
                "job",
                s(serde_json::to_string(&job).expect("a job serialises")),
            )
            .item("job_id", s(&job.id))
            .item("rev", AttributeValue::N("1".into()))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", table, e))?;
        self.client
            .update_item()
            .table_name(table)
            .key("pk", s(REGISTRY_PK))
            .update_expression("ADD tenants :t")
            .expression_attribute_values(":t", AttributeValue::Ss(vec![tenant.to_string()]))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", table, e))?;
        Ok(job)
    }

    /// The tenant's latest job and its `rev` (`None`: none ever started).
    pub async fn reevaluation(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Versioned<ReevaluationJob>>, StoreError> {
        let Some(fetched) = self
            .get_consistent(&self.tables.tenants, &job_pk(tenant))
            .await?
        else {
            return Ok(None);
        };
        let value = fetched.json("job")?;
        let version = fetched.number("rev", "no `rev`")?;
        Ok(Some(Versioned { value, version }))
    }

    /// Tenants with an unfinished job.
    pub async fn tenants_reevaluating(&self) -> Result<Vec<TenantId>, StoreError> {
        let registry = self
            .get_consistent(&self.tables.tenants, REGISTRY_PK)
            .await?;
        let mut tenants: Vec<TenantId> = registry
            .as_ref()
            .and_then(|r| r.item.get("tenants"))
            .and_then(|v| v.as_ss().ok())
            .into_iter()
            .flatten()
            .filter_map(|t| TenantId::parse(t).ok())
            .collect();
        tenants.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(tenants)
    }

    /// Saves the job if it is still at `rev` and still the tenant's job. `false`: someone
    /// else saved it (or a newer job replaced it).
    async fn save_reevaluation(
        &self,
        tenant: &TenantId,
        job: &ReevaluationJob,
        rev: u64,
    ) -> Result<bool, StoreError> {
        let table = &self.tables.tenants;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .item("pk", s(job_pk(tenant)))
            .item("tenant_id", s(tenant.as_str()))
            .item(
                "job",
                s(serde_json::to_string(job).expect("a job serialises")),
            )
            .item("job_id", s(&job.id))
            .item("rev", AttributeValue::N((rev + 1).to_string()))
            .condition_expression("rev = :rev AND job_id = :id")
            .expression_attribute_values(":rev", AttributeValue::N(rev.to_string()))
            .expression_attribute_values(":id", s(&job.id))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                return Ok(false)
            }
            Err(e) => return Err(StoreError::dynamo("PutItem", table, e)),
        }
        if job.finished() {
            self.retire(tenant).await?;
        }
        Ok(true)
    }

    /// Adds or removes the tenant from the registry of tenants with work for the sweep.
    async fn register(&self, tenant: &TenantId, add: bool) -> Result<(), StoreError> {
        let (op, tenants) = (if add { "ADD" } else { "DELETE" }, [tenant.to_string()]);
        self.edit_set(REGISTRY_PK, &format!("{op} tenants :m"), &tenants, None)
            .await
    }

    /// Adds members to or deletes them from a string set of a tenants-table item, atomically:
    /// `update` names the set `:m` (`ADD set :m`, `DELETE set :m`); with `owner`, the item
    /// also gets the `tenant_id` every tenant's item carries (`SET tenant_id = :t` in
    /// `update`).
    async fn edit_set(
        &self,
        pk: &str,
        update: &str,
        members: &[String],
        owner: Option<&TenantId>,
    ) -> Result<(), StoreError> {
        let table = &self.tables.tenants;
        let mut request = self
            .client
            .update_item()
            .table_name(table)
            .key("pk", s(pk))
            .update_expression(update)
            .expression_attribute_values(":m", AttributeValue::Ss(members.to_vec()));
        if let Some(tenant) = owner {
            request = request.expression_attribute_values(":t", s(tenant.as_str()));
        }
        request
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", table, e))?;
        Ok(())
    }

    /// Takes the tenant off the registry once its job is finished, unless rebuilds are
    /// queued. Queuing adds to the queue, then to the registry; this removes from the
    /// registry, then looks at the queue: a rebuild queued meanwhile is seen one way or the
    /// other, so the tenant never drops off with work left.
    async fn retire(&self, tenant: &TenantId) -> Result<(), StoreError> {
        self.register(tenant, false).await?;
        if !self.queued_rebuilds(tenant).await?.is_empty() {
            self.register(tenant, true).await?;
        }
        Ok(())
    }

    /// Queues accounts for a rebuild from raw events under the active version (the
    /// activation function, when it could not merge a user state of another definition
    /// version into them, or could not read the version their state follows). The sweep
    /// runs them with the re-evaluation jobs ([`Store::reevaluate_chunk`]).
    pub async fn queue_rebuilds(
        &self,
        tenant: &TenantId,
        accounts: &[String],
    ) -> Result<(), StoreError> {
        if accounts.is_empty() {
            return Ok(());
        }
        let update = "ADD accounts :m SET tenant_id = :t";
        self.edit_set(&rebuilds_pk(tenant), update, accounts, Some(tenant))
            .await?;
        self.register(tenant, true).await
    }

    /// The accounts queued for a rebuild, sorted.
    pub async fn queued_rebuilds(&self, tenant: &TenantId) -> Result<Vec<String>, StoreError> {
        let queue = self
            .get_consistent(&self.tables.tenants, &rebuilds_pk(tenant))
            .await?;
        let mut accounts: Vec<String> = queue
            .as_ref()
            .and_then(|q| q.item.get("accounts"))
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        accounts.sort();
        Ok(accounts)
    }

    async fn unqueue_rebuilds(
        &self,
        tenant: &TenantId,
        accounts: &[String],
    ) -> Result<(), StoreError> {
        if accounts.is_empty() {
            return Ok(());
        }
        self.edit_set(&rebuilds_pk(tenant), "DELETE accounts :m", accounts, None)
            .await
    }

    /// Rebuilds up to `chunk` queued accounts under the tenant's active definition; each is
    /// taken off the queue once done (or failed: the failure is logged, and a rebuild that
    /// failed once would fail the same way next time).
    async fn run_queued_rebuilds(
        &self,
        tenant: &TenantId,
        queued: &[String],
        now: Timestamp,
        cache: &mut RebuildCache,
        report: &mut ChunkReport,
    ) -> Result<(), StoreError> {
        if queued.is_empty() {
            return Ok(());
        }
        let Some(target) = self.tenant_definition(tenant).await? else {
            return Ok(());
        };
        let id = format!("rebuild@{}", now.millis());
        for account in queued {
            let how = How {
                force_rebuild: true,
                identity: false,
            };
            match self
                .reevaluate_account(tenant, &id, &target, account, now, cache, how)
                .await
            {
                Ok(AccountOutcome::Rebuilt { qualified, .. }) => {
                    report.qualified += usize::from(qualified);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%tenant, account, %error, "queued rebuild failed");
                }
            }
            report.accounts += 1;
        }
        self.unqueue_rebuilds(tenant, queued).await
    }

    /// Counts the tenant's account records in one bounded page of the state table (at most
    /// `max_scanned` items examined) from `cursor`: the count and where to go on (`None`:
    /// the end of the table).
    async fn count_account_records_page(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        max_scanned: i32,
    ) -> Result<Result<(u64, Option<String>), String>, StoreError> {
        let table = &self.tables.state;
        let mut start = match cursor.map(crate::accounts::decode_scan_cursor).transpose() {
            Ok(start) => start.map(|pk| HashMap::from([("pk".to_owned(), pk)])),
            Err(e) => return Ok(Err(e)),
        };
        let mut count = 0u64;
        let mut scanned = 0i32;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .select(Select::Count)
                .filter_expression("tenant = :t AND kind = :k")
                .expression_attribute_values(":t", s(tenant.as_str()))
                .expression_attribute_values(":k", s("account"))
                .limit((max_scanned - scanned).max(1))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Scan", table, e))?;
            count += out.count() as u64;
            scanned += out.scanned_count();
            start = out.last_evaluated_key;
            if start.is_none() || scanned >= max_scanned {
                return Ok(Ok((
                    count,
                    start.as_ref().and_then(crate::accounts::encode_scan_cursor),
                )));
            }
        }
    }

    /// While the total is unknown: one more page of counting (see [`ReevaluationJob::total`]).
    async fn count_some(
        &self,
        tenant: &TenantId,
        job: &mut ReevaluationJob,
        chunk: i32,
    ) -> Result<(), StoreError> {
        if job.total.is_some() {
            return Ok(());
        }
        let page = chunk.saturating_mul(COUNT_PAGES_PER_CHUNK);
        match self
            .count_account_records_page(tenant, job.count_cursor.as_deref(), page)
            .await?
        {
            Ok((count, next)) => {
                job.counted += count;
                job.count_cursor = next;
                if job.count_cursor.is_none() {
                    job.total = Some(job.counted);
                }
            }
            Err(bad) => {
                job.note(format!("stored count cursor: {bad}; counting restarts"));
                job.counted = 0;
                job.count_cursor = None;
            }
        }
        Ok(())
    }

    /// The tenant's raw events still stored (bounded by [`MAX_REBUILD_EVENTS`]).
    pub async fn tenant_events(
        &self,
        tenant: &TenantId,
    ) -> Result<Result<Vec<pql_engine::Event>, String>, StoreError> {
        let table = &self.tables.events;
        let mut start = None;
        let mut events = Vec::new();
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .filter_expression("tenant = :t")
                .expression_attribute_values(":t", s(tenant.as_str()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Scan", table, e))?;
            for item in out.items() {
                let pk = item.get("pk").and_then(|v| v.as_s().ok()).cloned();
                let body = item
                    .get("event")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        table: table.clone(),
                        key: pk.clone().unwrap_or_default(),
                        reason: "no `event`".into(),
                    })?;
                events.push(decode_event(body).map_err(|reason| StoreError::Corrupt {
                    table: table.clone(),
                    key: pk.unwrap_or_default(),
                    reason,
                })?);
            }
            if events.len() > MAX_REBUILD_EVENTS {
                return Ok(Err(format!(
                    "the tenant has more than {MAX_REBUILD_EVENTS} stored raw events: too many to rebuild state in one run"
                )));
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(Ok(events));
            }
        }
    }

    /// Runs the next chunk of the tenant's job: at most `chunk` account records. Returns
    /// `None` when there is no unfinished job.
    pub async fn reevaluate_chunk(
        &self,
        tenant: &TenantId,
        chunk: i32,
        now: Timestamp,
        cache: &mut RebuildCache,
    ) -> Result<Option<ChunkReport>, StoreError> {
        let mut report = ChunkReport::default();
        let queued = self.queued_rebuilds(tenant).await?;
        let some = &queued[..queued.len().min(chunk.max(1) as usize)];
        self.run_queued_rebuilds(tenant, some, now, cache, &mut report)
            .await?;
        let job = self
            .reevaluation(tenant)
            .await?
            .filter(|job| !job.value.finished());
        let Some(Versioned {
            value: mut job,
            version: rev,
        }) = job
        else {
            if queued.is_empty() {
                self.retire(tenant).await?;
                return Ok(None);
            }
            report.finished = some.len() == queued.len();
            if report.finished {
                self.retire(tenant).await?;
            }
            return Ok(Some(report));
        };
        self.count_some(tenant, &mut job, chunk).await?;
        let target = match self.definition_version(tenant, &job.version).await? {
            Some(stored) => stored.definition,
            None => {
                job.error(format!(
                    "version `{}` is not stored: the job stops",
                    job.version
                ));
                job.finished_at = Some(now);
                job.updated_at = now;
                report.finished = true;
                report.lost_race = !self.save_reevaluation(tenant, &job, rev).await?;
                return Ok(Some(report));
            }
        };
        let page = match self
            .scan_account_records(tenant, job.cursor.as_deref(), chunk)
            .await?
        {
            Ok(page) => page,
            Err(bad) => {
                job.error(format!(
                    "stored cursor: {bad}; the job restarts from the beginning"
                ));
                job.cursor = None;
                job.updated_at = now;
                report.lost_race = !self.save_reevaluation(tenant, &job, rev).await?;
                return Ok(Some(report));
            }
        };
        // When the previous version's states map to the target, a state that already follows
        // the target was mapped (or started) by the activation function: nothing to rebuild.
        let identity = match job.previous.as_deref() {
            Some(previous) => self
                .state_map(tenant, previous, &target, &cache.definitions)
                .await
                .unwrap_or(None)
                .is_some(),
            None => false,
        };
        for item in &page.items {
            let how = How {
                force_rebuild: false,
                identity,
            };
            let outcome = self
                .reevaluate_account(tenant, &job.id, &target, &item.account, now, cache, how)
                .await;
            report.accounts += 1;
            job.done += 1;
            match outcome {
                Ok(AccountOutcome::AlreadyDone) => job.already_done += 1,
                Ok(AccountOutcome::Mapped {
                    qualified,
                    observed,
                })
                | Ok(AccountOutcome::Rebuilt {
                    qualified,
                    observed,
                }) => {
                    if matches!(outcome, Ok(AccountOutcome::Mapped { .. })) {
                        job.mapped += 1;
                    } else {
                        job.rebuilt += 1;
                    }
                    if qualified {
                        job.qualified += 1;
                        report.qualified += 1;
                    }
                    if !observed {
                        job.not_alerted_again += 1;
                    }
                }
                Err(e) => job.error(format!("account `{}`: {e}", item.account)),
            }
        }
        job.cursor = page.next;
        job.chunks += 1;
        job.updated_at = now;
        if job.cursor.is_none() {
            job.finished_at = Some(now);
            report.finished = true;
            // Visited them all before counting them all (a chunk larger than a count page).
            if job.total.is_none() {
                job.total = Some(job.done);
                job.count_cursor = None;
            }
        }
        report.lost_race = !self.save_reevaluation(tenant, &job, rev).await?;
        Ok(Some(report))
    }

    /// How `from` states read as `target` states (`None`: they do not, or `from` is not
    /// stored), read and worked out once per runner.
    async fn state_map(
        &self,
        tenant: &TenantId,
        from: &str,
        target: &Definition,
        definitions: &VersionCache,
    ) -> Result<Option<Arc<StateMap>>, String> {
        let from = definitions
            .get(self, tenant, from)
            .await
            .map_err(|e| e.to_string())?;
        Ok(from.and_then(|from| definitions.map(&from, target)))
    }

    /// Re-evaluates one account under `target` for job `job_id` (idempotent).
    ///
    /// The write is conditional on the record version read; a rebuild that *replaces* the
    /// stored state (one of another version) also requires that version to be the one read
    /// before the raw events were scanned, else the events are scanned again: an event the
    /// activation function applied in between would otherwise be lost.
    #[allow(clippy::too_many_arguments)]
    async fn reevaluate_account(
        &self,
        tenant: &TenantId,
        job_id: &str,
        target: &Definition,
        account: &str,
        now: Timestamp,
        cache: &mut RebuildCache,
        how: How,
    ) -> Result<AccountOutcome, String> {
        for _ in 0..ACCOUNT_ATTEMPTS {
            let (record, version, done_by) = self
                .load_account_for_job(tenant, account)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the record was deleted")?;
            if !how.force_rebuild && done_by.as_deref() == Some(job_id) {
                return Ok(AccountOutcome::AlreadyDone);
            }
            let follows = record.state.follows(target);
            let mapped = if how.force_rebuild {
                None
            } else if follows {
                how.identity.then(|| record.state.clone())
            } else {
                let from = record.state.definition_version.clone();
                self.state_map(tenant, &from, target, &cache.definitions)
                    .await?
                    .and_then(|m| m.map(target, &record.state))
            };
            let (state, clock, rebuilt) = match mapped {
                Some(state) => (state, record.clock, false),
                None => {
                    self.ensure_rebuild(tenant, target, cache).await?;
                    if !follows && cache.versions.get(account) != Some(&version) {
                        // Changed since the events were scanned: scan again, read again.
                        cache.key = None;
                        continue;
                    }
                    let (mut rebuilt, mut clock) = cache
                        .states
                        .get(account)
                        .cloned()
                        .unwrap_or_else(|| (AccountState::new(target), Timestamp::MIN));
                    if follows {
                        // Events applied under the target since it became active: already
                        // in the rebuild if still stored; merged in case they are not.
                        rebuilt.merge(target, &record.state);
                        clock = clock.max(record.clock);
                    }
                    (rebuilt, clock, true)
                }
            };
            let new = AccountRecord {
                state,
                clock,
                points: Vec::new(),
            };
            let at = now.max(clock);
            let mut extra = due_attributes(tenant, account, next_due(target, &new.state, at));
            extra.push(("reevaluation".into(), s(job_id)));
            extra.push((
                "reevaluated_version".into(),
                AttributeValue::N((version + 1).to_string()),
            ));
            let saved = self
                .save_record_with(tenant, RecordKind::Account, account, &new, version, extra)
                .await
                .map_err(|e| e.to_string())?;
            if saved.is_err() {
                continue; // The record changed since it was read: again, from the new one.
            }
            let lifecycle = self
                .load_lifecycle(tenant, account)
                .await
                .map_err(|e| e.to_string())?;
            let life = &lifecycle.value.lifecycle;
            // Never a second alert: an account alerted before, or already with sales, is
            // left to the pipeline's own rules.
            let observed = life.qualifications == 0 && life.stage.is_pre_sales();
            let mut qualified = false;
            if observed {
                let outcome = self
                    .observe_account(target, tenant, account, &new, Observation::sweep(at))
                    .await
                    .map_err(|e| e.to_string())?;
                qualified = matches!(outcome, Observed::Qualified(_));
            }
            return Ok(if rebuilt {
                AccountOutcome::Rebuilt {
                    qualified,
                    observed,
                }
            } else {
                AccountOutcome::Mapped {
                    qualified,
                    observed,
                }
            });
        }
        Err(format!(
            "the record kept changing: gave up after {ACCOUNT_ATTEMPTS} attempts (the next job run retries it)"
        ))
    }

    /// Builds the cache for `target` unless it is built: first the version of every
    /// account record of the tenant, then the states the raw events give.
    async fn ensure_rebuild(
        &self,
        tenant: &TenantId,
        target: &Definition,
        cache: &mut RebuildCache,
    ) -> Result<(), String> {
        let key = (tenant.to_string(), target.version.clone());
        if cache.key.as_ref() == Some(&key) {
            return Ok(());
        }
        cache.versions = self
            .account_record_versions(tenant)
            .await
            .map_err(|e| e.to_string())?;
        let mut events = self
            .tenant_events(tenant)
            .await
            .map_err(|e| e.to_string())??;
        cache.states = rebuild_states(target, &mut events);
        cache.key = Some(key);
        Ok(())
    }

    /// The version of each of the tenant's account records (a scan of the state table that
    /// reads keys and versions only).
    async fn account_record_versions(
        &self,
        tenant: &TenantId,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let table = &self.tables.state;
        let mut start = None;
        let mut versions = HashMap::new();
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .filter_expression("tenant = :t AND kind = :k")
                .projection_expression("id, version")
                .expression_attribute_values(":t", s(tenant.as_str()))
                .expression_attribute_values(":k", s("account"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Scan", table, e))?;
            for item in out.items() {
                let id = item.get("id").and_then(|v| v.as_s().ok());
                let version = item
                    .get("version")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok());
                if let (Some(id), Some(version)) = (id, version) {
                    versions.insert(id.clone(), version);
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(versions);
            }
        }
    }

    /// The account record, its version and the job that last re-evaluated it (the item's
    /// `reevaluation` attribute; gone once another writer puts the item).
    async fn load_account_for_job(
        &self,
        tenant: &TenantId,
        account: &str,
    ) -> Result<Option<(AccountRecord, u64, Option<String>)>, StoreError> {
        let pk = crate::records::record_pk(tenant, RecordKind::Account, account);
        let Some(fetched) = self.get_consistent(&self.tables.state, &pk).await? else {
            return Ok(None);
        };
        let Versioned {
            value: record,
            version,
        } = fetched.versioned_body()?;
        let job = fetched
            .item
            .get("reevaluation")
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok(Some((record, version, job)))
    }
}
