//! The pure PQL qualification engine.
//!
//! No I/O, no async, no AWS types: Segment events in, per-account state and decisions out.
//! The Lambda functions, the local stack and `pql backtest` all call this crate, so they
//! cannot disagree about what an account did or whether it qualifies.
//!
//! * [`attribution`]: which identities, users and accounts an event concerns.
//! * [`event`]: the Segment Spec calls, parsed (and rejected with a reason) at the edge.
//! * [`definition`]: what a tenant means by activated and product-qualified.
//! * [`state`]: per-account activity, updated by the pure `apply`; bounded, idempotent and
//!   independent of event order (built from [`hits`]).
//! * [`evaluate`]: `(definition, state, now) -> decision`, with reasons.
//! * [`lifecycle`]: signed up → activated → PQL → accepted / rejected → converted.
//! * [`ledger`]: all of it over a stream of events, in memory (backtests, tests).
//! * [`backtest`]: summaries and precision / recall / lift against known outcomes.

pub mod attribution;
pub mod backtest;
pub mod definition;
pub mod evaluate;
pub mod event;
pub mod hits;
pub mod ledger;
pub mod lifecycle;
pub mod state;
pub mod time;

pub use definition::Definition;
pub use evaluate::{evaluate, verdict, Decision, Verdict};
pub use event::{Event, EventKind};
pub use ledger::Ledger;
pub use lifecycle::{Lifecycle, Stage};
pub use state::{AccountState, StateMap};
pub use time::Timestamp;
