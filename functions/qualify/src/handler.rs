//! The stream batch, record by record.
//!
//! Records of one account arrive in order. Each new version of an account item is observed
//! once: its state is judged at its event clock and fed to the account's lifecycle
//! ([`pql_store::Store::observe_account`]). What is skipped, and why:
//!
//! * removals, items that are not accounts (the event source filter keeps only accounts; this
//!   is the belt to its braces), and changes that left the record's `version` as it was (the
//!   sweep moving the account in the `due` index);
//! * items that cannot be read (logged as errors: retrying cannot fix them, and a poison
//!   record must not hold up the shard);
//! * accounts of unknown tenants, and states that follow another definition version than the
//!   tenant's active one (they are being rebuilt; the rebuilt record is observed). The active
//!   version is re-read first (at most once a second) when the state follows another than
//!   the cached one: it may be the version activated since;
//! * versions already observed (a redelivered record): nothing new is created;
//! * the version a definition re-evaluation job wrote (`reevaluated_version`): the job
//!   observes it ([`pql_store::reevaluation`]), so an account alerted before is not again.
//!
//! A failure to read or write the store stops the batch there and reports that record as the
//! first failed item, so Lambda retries from it and nothing after it is observed out of order.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use pql_store::alerts::{Observation, ObserveError, Observed};
use pql_store::records::decode_body;
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, Store, StoreError};
use serde_dynamo::AttributeValue;

use pql_store::definitions::DefinitionCache;
use pql_store::shadow::{shadow_decision, ShadowCache};

/// Why a record was not observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Removed,
    NotAnAccount,
    /// Same `version` in the old and new images: only index attributes changed.
    VersionUnchanged,
    Malformed(String),
    UnknownTenant,
    /// Written by a re-evaluation job (the item's `reevaluated_version` is this version): the
    /// job observes it itself, never alerting an account alerted before.
    Reevaluated,
    /// The state follows another definition version than the tenant's active one.
    OtherDefinition {
        state: String,
        active: String,
    },
}

/// What happened to one stream record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOutcome {
    Skipped(Skip),
    Observed(Observed),
}

#[derive(Debug, thiserror::Error)]
pub enum QualifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("a stream record without a sequence number failed: {0}")]
    NoSequenceNumber(String),
}

/// The function's state: built once per Lambda instance.
#[derive(Debug)]
pub struct Qualifier {
    store: Store,
    definitions: DefinitionCache,
    shadows: ShadowCache,
}

fn text(image: &serde_dynamo::Item, name: &str) -> Option<String> {
    match image.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

fn number(image: &serde_dynamo::Item, name: &str) -> Option<u64> {
    match image.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// The account a stream record is about, read from its new image.
struct AccountImage {
    tenant: TenantId,
    account: String,
    version: u64,
    record: AccountRecord,
}

fn read_image(image: &serde_dynamo::Item) -> Result<AccountImage, String> {
    let tenant = text(image, "tenant").ok_or("no `tenant`")?;
    let tenant = TenantId::parse(&tenant)?;
    let account = text(image, "id").ok_or("no `id`")?;
    let version = number(image, "version").ok_or("no `version`")?;
    let body = match image.get("body") {
        Some(AttributeValue::B(b)) => b,
        _ => return Err("no `body`".into()),
    };
    let record = decode_body::<AccountRecord>(body)?;
    Ok(AccountImage {
        tenant,
        account,
        version,
        record,
    })
}

impl Qualifier {
    pub fn new(store: Store) -> Self {
        Qualifier::with_cache(store, DefinitionCache::default())
    }

    pub fn with_cache(store: Store, definitions: DefinitionCache) -> Self {
        Qualifier {
            store,
            definitions,
            shadows: ShadowCache::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles a stream batch: records in order, stopping at the first failure, which is
    /// reported as the batch item failure (Lambda retries from it).
    pub async fn handle(&self, event: Event) -> Result<DynamoDbEventResponse, QualifyError> {
        let mut response = DynamoDbEventResponse::default();
        for record in &event.records {
            let sequence = record.change.sequence_number.clone();
            match self.process(record).await {
                Ok(outcome) => log_outcome(record, &outcome),
                Err(error) => {
                    tracing::error!(
                        event_id = %record.event_id,
                        sequence = ?sequence,
                        %error,
                        "record failed; the batch stops here and is retried from it"
                    );
                    let Some(sequence) = sequence else {
                        return Err(QualifyError::NoSequenceNumber(error.to_string()));
                    };
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = Some(sequence);
                    response.batch_item_failures.push(failure);
                    break;
                }
            }
        }
        Ok(response)
    }

    /// Handles one stream record.
    pub async fn process(&self, record: &EventRecord) -> Result<RecordOutcome, QualifyError> {
        let change = &record.change;
        if record.event_name == "REMOVE" || change.new_image.is_empty() {
            return Ok(RecordOutcome::Skipped(Skip::Removed));
        }
        let image = &change.new_image;
        if text(image, "kind").as_deref() != Some("account") {
            return Ok(RecordOutcome::Skipped(Skip::NotAnAccount));
        }
        let new_version = number(image, "version");
        if new_version.is_some() && number(&change.old_image, "version") == new_version {
            return Ok(RecordOutcome::Skipped(Skip::VersionUnchanged));
        }
        if new_version.is_some() && number(image, "reevaluated_version") == new_version {
            return Ok(RecordOutcome::Skipped(Skip::Reevaluated));
        }
        let AccountImage {
            tenant,
            account,
            version,
            record: account_record,
        } = match read_image(image) {
            Ok(image) => image,
            Err(reason) => return Ok(RecordOutcome::Skipped(Skip::Malformed(reason))),
        };
        let Some(mut definition) = self.definitions.get(&self.store, &tenant).await? else {
            return Ok(RecordOutcome::Skipped(Skip::UnknownTenant));
        };
        if !account_record.state.follows(&definition) {
            // The state may follow a version activated since the cache read the tenant.
            if let Some(fresh) = self.definitions.refresh(&self.store, &tenant).await? {
                definition = fresh;
            }
        }
        if !account_record.state.follows(&definition) {
            return Ok(RecordOutcome::Skipped(Skip::OtherDefinition {
                state: account_record.state.definition_version.clone(),
                active: definition.version.clone(),
            }));
        }
        let observed = self
            .store
            .observe_account(
                &definition,
                &tenant,
                &account,
                &account_record,
                Observation::event(version, account_record.clock),
            )
            .await?;
        self.shadow(&definition, &tenant, &account, &account_record, version)
            .await;
        Ok(RecordOutcome::Observed(observed))
    }

    /// Shadow mode: when the tenant shadows a version, its decision on this record is stored
    /// beside the active one, never alerting. A failure here is logged and does not hold up
    /// the stream (the live decision is made already).
    async fn shadow(
        &self,
        active: &pql_engine::Definition,
        tenant: &TenantId,
        account: &str,
        record: &AccountRecord,
        version: u64,
    ) {
        let result = async {
            let Some(shadow) = self.shadows.get(&self.store, tenant, active).await? else {
                return Ok::<_, StoreError>(());
            };
            let decision = shadow_decision(
                active,
                &shadow.definition,
                &shadow.map,
                account,
                record,
                version,
            );
            self.store.put_shadow_decision(tenant, &decision).await?;
            Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::error!(%tenant, account, %error, "shadow decision not stored");
        }
    }
}

fn log_outcome(record: &EventRecord, outcome: &RecordOutcome) {
    let event_id = &record.event_id;
    match outcome {
        RecordOutcome::Observed(Observed::Qualified(alert)) => tracing::info!(
            event_id,
            tenant = alert.tenant,
            account = alert.account,
            sequence = alert.sequence,
            tier = alert.tier.as_str(),
            score = alert.score,
            qualified_at = %alert.qualified_at,
            "qualified: alert written"
        ),
        RecordOutcome::Observed(Observed::Changed { stage }) => {
            tracing::info!(event_id, stage = stage.as_str(), "lifecycle changed")
        }
        RecordOutcome::Observed(Observed::Unchanged { .. }) => {}
        RecordOutcome::Observed(Observed::Stale) => {
            tracing::info!(event_id, "already observed (redelivery): skipped")
        }
        RecordOutcome::Skipped(Skip::Malformed(reason)) => {
            tracing::error!(event_id, reason, "unreadable account item: skipped")
        }
        RecordOutcome::Skipped(Skip::OtherDefinition { state, active }) => tracing::info!(
            event_id,
            state,
            active,
            "state follows another definition version: skipped until rebuilt"
        ),
        RecordOutcome::Skipped(Skip::UnknownTenant) => {
            tracing::warn!(event_id, "account of an unknown tenant: skipped")
        }
        RecordOutcome::Skipped(_) => {}
    }
}
