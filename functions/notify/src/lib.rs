//! The notify function: the alert outbox's stream (alerts table, `INSERT`s of `sk >= 1`) in,
//! each alert delivered to its route's destinations exactly once per receiver.
//!
//! * [`handler`]: the stream batch, alerts delivered concurrently, partial batch failures;
//!   and the daily schedule's `{"pql": "warm-digest"}`, which sends the warm digests.
//!
//! Everything else (settings, routing, rendering, signing, retries, the delivery protocol) is
//! in `pql-notify` and `pql_store::deliveries`.

pub mod handler;

pub use handler::{NotifyHandler, RecordOutcome, Skip};
