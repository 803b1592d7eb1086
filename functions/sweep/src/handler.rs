//! One sweep: every shard of the `due` index, a bounded page each, shards in parallel.

use futures::future::join_all;
use futures::{stream, StreamExt};
use pql_engine::lifecycle::Stage;
use pql_engine::{Definition, Lifecycle, Timestamp};
use pql_qualify::DefinitionCache;
use pql_store::alerts::{Observation, ObserveError, Observed};
use pql_store::reevaluation::RebuildCache;
use pql_store::sweep::{all_shards, next_due, DueAccount};
use pql_store::{AccountRecord, RecordKind, Store, StoreError};
use serde::Serialize;

/// Accounts taken from each shard per invocation: with 16 shards, at most 400 accounts a run.
pub const DEFAULT_PAGE_LIMIT: i32 = 25;

/// Accounts visited at once.
pub const CONCURRENCY: usize = 16;

/// Account records a re-evaluation chunk reads, and chunks per tenant per sweep: at most
/// 400 accounts re-evaluated per tenant a run (rebuilds replay the tenant's raw events once
/// per run, shared by its chunks).
pub const DEFAULT_REEVALUATION_CHUNK: i32 = 100;
pub const REEVALUATION_CHUNKS_PER_RUN: usize = 4;

/// What one sweep did (also the function's response, for the logs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub now: String,
    /// Accounts the index gave.
    pub due: usize,
    /// Accounts whose lifecycle changed (drop-outs, activations, disqualifications).
    pub changed: usize,
    /// Accounts that qualified (one alert each).
    pub qualified: usize,
    /// Accounts that left the index (nothing more can change with time).
    pub settled: usize,
    /// Accounts that failed (they stay due and are retried by the next sweep).
    pub failed: usize,
    /// Accounts visited by definition re-evaluation jobs ([`pql_store::reevaluation`]).
    pub reevaluated: usize,
    /// Of those, new qualifications (one alert each).
    pub reevaluation_qualified: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
}

/// What happened to one due account.
#[derive(Debug, Clone, PartialEq)]
enum Visit {
    Observed(Observed),
    /// The record is gone, or follows another definition (it is being rebuilt).
    Skipped,
}

/// The function's state: built once per Lambda instance.
#[derive(Debug)]
pub struct Sweeper {
    store: Store,
    definitions: DefinitionCache,
    page_limit: i32,
    reevaluation_chunk: i32,
}

/// Whether time can still change anything the lifecycle records. Not for a converted
/// account, nor for one that was qualified and activated under a definition that never
/// lets it qualify again.
fn time_can_matter(definition: &Definition, lifecycle: &Lifecycle) -> bool {
    use pql_engine::definition::Reentry;
    if lifecycle.stage == Stage::Converted {
        return false;
    }
    !(lifecycle.qualifications > 0
        && lifecycle.activated_at.is_some()
        && definition.pql.reentry == Reentry::Never)
}

impl Sweeper {
    pub fn new(store: Store) -> Self {
        Sweeper {
            store,
            definitions: DefinitionCache::default(),
            page_limit: DEFAULT_PAGE_LIMIT,
            reevaluation_chunk: DEFAULT_REEVALUATION_CHUNK,
        }
    }

    /// Account records per re-evaluation chunk.
    pub fn with_reevaluation_chunk(mut self, chunk: i32) -> Self {
        self.reevaluation_chunk = chunk.max(1);
        self
    }

    /// Runs the next chunks of every unfinished re-evaluation job (bounded: see
    /// [`REEVALUATION_CHUNKS_PER_RUN`]). Failures are logged; the job's cursor stays where it
    /// was, so the next run resumes there.
    pub async fn reevaluate(&self, now: Timestamp, report: &mut SweepReport) {
        let tenants = match self.store.tenants_reevaluating().await {
            Ok(tenants) => tenants,
            Err(error) => {
                tracing::error!(%error, "cannot list re-evaluation jobs; the next sweep retries");
                return;
            }
        };
        for tenant in tenants {
            let mut cache = RebuildCache::default();
            for _ in 0..REEVALUATION_CHUNKS_PER_RUN {
                match self
                    .store
                    .reevaluate_chunk(&tenant, self.reevaluation_chunk, now, &mut cache)
                    .await
                {
                    Ok(Some(chunk)) => {
                        tracing::info!(%tenant, ?chunk, "re-evaluation chunk done");
                        report.reevaluated += chunk.accounts;
                        report.reevaluation_qualified += chunk.qualified;
                        if chunk.finished || chunk.lost_race {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!(%tenant, %error, "re-evaluation chunk failed; the next sweep resumes it");
                        break;
                    }
                }
            }
        }
    }

    /// Accounts taken from each shard per sweep.
    pub fn with_page_limit(mut self, limit: i32) -> Self {
        self.page_limit = limit.max(1);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sweeps at wall-clock `now`. Errors of single accounts are logged and counted; the
    /// account stays due and the next sweep retries it.
    pub async fn sweep(&self, now: Timestamp) -> Result<SweepReport, SweepError> {
        let shards = all_shards();
        let pages = join_all(
            (0..shards.len()).map(|i| self.store.due_accounts(&shards[i], now, self.page_limit)),
        )
        .await;
        let mut report = SweepReport {
            now: now.to_rfc3339(),
            ..SweepReport::default()
        };
        let mut due = Vec::new();
        for page in pages {
            due.extend(page?);
        }
        report.due = due.len();
        // Over indexes, not `due.iter()`: a closure over `&DueAccount` makes the future not
        // provably `Send` for every lifetime, and the local stack spawns the sweep.
        let due_ref = &due;
        let visits: Vec<_> = stream::iter(0..due.len())
            .map(|i| self.visit(&due_ref[i], now))
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (account, visit) in due.iter().zip(visits) {
            match visit {
                Ok((Visit::Observed(Observed::Qualified(alert)), settled)) => {
                    tracing::info!(
                        tenant = alert.tenant,
                        account = alert.account,
                        sequence = alert.sequence,
                        "qualified at the sweep: alert written"
                    );
                    report.qualified += 1;
                    report.settled += usize::from(settled);
                }
                Ok((Visit::Observed(Observed::Changed { stage }), settled)) => {
                    tracing::info!(
                        tenant = %account.tenant,
                        account = account.account,
                        stage = stage.as_str(),
                        "lifecycle changed at the sweep"
                    );
                    report.changed += 1;
                    report.settled += usize::from(settled);
                }
                Ok((_, settled)) => report.settled += usize::from(settled),
                Err(error) => {
                    tracing::error!(
                        tenant = %account.tenant,
                        account = account.account,
                        %error,
                        "sweep of the account failed; it stays due"
                    );
                    report.failed += 1;
                }
            }
        }
        self.reevaluate(now, &mut report).await;
        tracing::info!(?report, "sweep done");
        Ok(report)
    }

    /// Observes one due account at `now`, then moves it in the index. Returns what happened
    /// and whether the account left the index.
    async fn visit(&self, due: &DueAccount, now: Timestamp) -> Result<(Visit, bool), SweepError> {
        let DueAccount {
            tenant, account, ..
        } = due;
        let Some(record) = self
            .store
            .load_record::<AccountRecord>(tenant, RecordKind::Account, account)
            .await?
        else {
            return Ok((Visit::Skipped, false));
        };
        let definition = self.definitions.get(&self.store, tenant).await?;
        let Some(definition) = definition.filter(|d| record.value.state.follows(d)) else {
            // Unknown tenant, or a state being rebuilt for a new definition (the rebuilt
            // record sets its own due time): out of the index.
            self.store
                .set_due(tenant, account, record.version, None)
                .await?
                .ok();
            return Ok((Visit::Skipped, true));
        };
        // Decisions never go back in time: an account whose events run ahead of the
        // wall clock is judged at its own clock.
        let at = now.max(record.value.clock);
        let observed = self
            .store
            .observe_account(
                &definition,
                tenant,
                account,
                &record.value,
                Observation::sweep(at),
            )
            .await?;
        let lifecycle = self.store.load_lifecycle(tenant, account).await?.value;
        let next = if time_can_matter(&definition, &lifecycle.lifecycle) {
            next_due(&definition, &record.value.state, at)
        } else {
            None
        };
        // A conflict means the account was saved since: its writer set the index then.
        self.store
            .set_due(tenant, account, record.version, next)
            .await?
            .ok();
        Ok((Visit::Observed(observed), next.is_none()))
    }
}
