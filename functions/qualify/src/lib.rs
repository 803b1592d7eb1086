//! The qualify function: the state table's stream (account items, new and old images) in,
//! lifecycle changes and PQL alerts out.
//!
//! For each new version of an account record it does what `pql_engine::Ledger::ingest` does
//! after each event: `verdict(definition, state, clock)` then `Lifecycle::observe` at the
//! record's event clock, so replaying history gives the same qualifications at the same times
//! as `pql backtest`. The outcome is written by [`pql_store::Store::observe_account`]: the
//! lifecycle and, when the account qualifies, its alert in one transaction, exactly once under
//! retries and concurrency. The sweep (`pql-sweep`) shares that code and the definition cache.
//!
//! * [`handler`]: the stream batch, record by record, with batch item failures.
//! * [`definitions`]: each tenant's active definition, cached for a short while.

pub mod handler;

pub use handler::{Qualifier, RecordOutcome, Skip};
pub use pql_store::definitions::DefinitionCache;
