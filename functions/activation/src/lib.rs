//! The activation function: raw events from the events table's stream into per-user and
//! per-account state in the state table.
//!
//! Each stream record is one stored event (the conditional put of ingest already deduplicated
//! it). The record is attributed with [`pql_engine::attribution::attribute`] and the plan is
//! carried out on versioned records, exactly as [`pql_engine::Ledger::ingest`] carries it out
//! in memory, so the live pipeline and `pql backtest` agree:
//!
//! 1. **join** (`alias`, `identify` with both ids): each identity is added to the other's
//!    aliases (two conditional writes), then the states of every identity joined to them
//!    (read *after* those writes) are merged into every account of those identities;
//! 2. **link** (`group`): the account is added to the user's record and to the record of every
//!    identity joined to it (one conditional write each); the state each record holds in the
//!    version that lists the account is merged into the account;
//! 3. **target**: an event that names its account is applied to that account only; one that
//!    names none is applied to the user's record first (conditional write), then to every
//!    account of the user and of its joined identities, as listed by the user record version
//!    that holds the event and the alias records read after it.
//!
//! The user record is the serialisation point between "an unattributed event of U" and "U
//! joins A": whichever of the two writes U's record last sees the other (the event's write
//! sees A in U's accounts, or the link's write sees the event in U's state). Every step is
//! idempotent (engine `apply` and `merge` are), so a crash between steps is repaired when the
//! stream redelivers the record; steps are never skipped because an earlier one changed
//! nothing. A record is written only when its state changed; a conflict (someone wrote the
//! record since it was read) re-reads and re-applies, with jittered backoff, a bounded number
//! of times, after which the stream record fails and is retried by the event-source mapping.
//!
//! **Definition versions.** A record's state follows one definition version. When a new
//! version is activated, stored states follow the previous one until the re-evaluation job
//! ([`pql_store::reevaluation`]) reaches them. An event for such a record does not reset it:
//!
//! * if the version it follows is stored (every version is; they are cached per instance,
//!   being immutable) and its states hold what the active version needs
//!   ([`pql_engine::StateMap::between`]), the state is mapped to the active version on the
//!   spot, as the job would, and the event applied under the active version;
//! * otherwise the state stays under its own version and the event is applied under that
//!   version's definition (each batch entry carries the definition its state follows). The
//!   job rebuilds the state from the raw events, which hold this event; the qualify function
//!   does not judge a state of another version than the active one meanwhile. A state whose
//!   version is not stored at all is left as it is (an account is queued for a rebuild).
//!
//! **Merging across versions.** A user state is merged into an account state only on the
//! account state's version: as it is when it follows that version, else mapped to it when the
//! user state's version is stored and maps. The account state is never moved to another
//! version for a merge (it follows the active version, or waits for the job). A user state
//! that cannot be put on the account's version is not merged, since hit sets of different
//! versions do not line up: the account is queued for a rebuild from raw events
//! ([`pql_store::Store::queue_rebuilds`], after the batch's writes), run by the sweep under the
//! active version; the rebuild replays the link or join, so the user's activity counts there.

mod apply;

mod handler;

pub use handler::{Activation, BatchReport, RetryPolicy, SaveHook, Usage};
pub use pql_store::definitions::DefinitionCache;

use pql_store::{RecordKind, StoreError};

/// Why one stream record could not be applied (it is then reported as the batch item failure).
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("stream record cannot be decoded: {0}")]
    Decode(String),
    #[error("tenant {0} has no definition")]
    UnknownTenant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{kind} record {id} kept changing under us: gave up after {attempts} attempts")]
    Contention {
        kind: &'static str,
        id: String,
        attempts: u32,
    },
}

impl ActivationError {
    pub(crate) fn contention(kind: RecordKind, id: &str, attempts: u32) -> Self {
        ActivationError::Contention {
            kind: kind.as_str(),
            id: id.to_owned(),
            attempts,
        }
    }
}
