//! The sweep function: a scheduled re-evaluation of the accounts whose decision can change
//! with time alone (decay, sliding windows closing), at wall-clock time.
//!
//! It finds them through the state table's sparse index `due` (one query per shard, bounded
//! by a page limit: no scans), judges each at `now` and feeds the verdict to the account's
//! lifecycle through the same code as the qualify function
//! ([`pql_store::Store::observe_account`]): a drop-out is recorded, and a qualification gets
//! its alert exactly once. Then it moves the account in the index to its next due time
//! ([`pql_store::sweep::next_due`]), or takes it out.
//!
//! * [`handler`]: one sweep.

pub mod handler;

pub use handler::{SweepReport, Sweeper};
