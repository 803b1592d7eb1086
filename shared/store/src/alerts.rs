//! Account lifecycles and the alert outbox (the alerts table).
//!
//! Layout, per account (`pk = "<tenant>#<account>"`, `sk` a number):
//!
//! * `sk = 0`: the account's [`Lifecycle`] (`lifecycle`, JSON), its `stage`, `qualifications`,
//!   `observed_version` (the newest account-record version the qualify function observed),
//!   `updated_at`, and a `version` for optimistic concurrency.
//! * `sk = n >= 1`: the alert of the account's n-th qualification, the outbox the notify
//!   function consumes: `tenant`, `account`, `account_name`, `sequence`, `qualified_at`, `tier`,
//!   `score`, `definition_version`, `decision` (the full [`pql_engine::Decision`] as JSON:
//!   milestones met when and by whom, fit, gates, reasons), `trigger` (`event` or `sweep`) and
//!   `created_at`. Times are RFC 3339 strings.
//!
//! Exactly one alert per qualification, under retries and concurrency: a qualifying change is
//! one `TransactWriteItems` (the lifecycle put, conditional on the version read, and the alert
//! put, conditional on the alert not existing); any other lifecycle change is one conditional
//! put. A writer that loses re-reads and re-observes ([`Store::observe_account`]).
//!
//! The table's stream carries both kinds of items: consumers of alerts keep `sk >= 1` (and
//! `INSERT`s only).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use pql_engine::definition::Tier;
use pql_engine::lifecycle::Qualification;
use pql_engine::{evaluate, verdict, Definition, Lifecycle, Stage, Timestamp, Verdict};
use serde::{Deserialize, Serialize};

use crate::records::AccountRecord;
use crate::tenants::TenantId;
use crate::{Conflict, Store, StoreError, Versioned};

/// The sort key of an account's lifecycle item.
pub const LIFECYCLE_SK: u32 = 0;

/// How often [`Store::observe_account`] re-reads and retries after losing a race.
pub const MAX_ATTEMPTS: u32 = 8;

/// The partition key of an account in the alerts table.
pub fn alerts_pk(tenant: &TenantId, account: &str) -> String {
    format!("{tenant}#{account}")
}

/// What the alerts table keeps about an account's lifecycle (`sk = 0`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleRecord {
    pub lifecycle: Lifecycle,
    /// The newest account-record version the qualify function observed (0: none). Records
    /// at or below it are redeliveries and are not observed again.
    pub observed_version: u64,
}

/// What made an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A change of the account's state (the state table's stream), in event time.
    Event,
    /// The sweep, at wall-clock time: decay and sliding windows closing.
    Sweep,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Event => "event",
            Trigger::Sweep => "sweep",
        }
    }
}

/// When and why an account is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub trigger: Trigger,
    /// The account record's version (only used for [`Trigger::Event`]).
    pub record_version: u64,
    /// The decision time.
    pub at: Timestamp,
}

impl Observation {
    /// A new version of the account record, decided at its event clock.
    pub fn event(record_version: u64, clock: Timestamp) -> Self {
        Observation {
            trigger: Trigger::Event,
            record_version,
            at: clock,
        }
    }

    /// The sweep, deciding at wall-clock `now`.
    pub fn sweep(now: Timestamp) -> Self {
        Observation {
            trigger: Trigger::Sweep,
            record_version: 0,
            at: now,
        }
    }
}

/// One alert of the outbox (`sk = sequence`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub tenant: String,
    pub account: String,
    pub account_name: Option<String>,
    /// 1 for the first qualification, 2+ for re-entries; also the sort key.
    pub sequence: u32,
    pub qualified_at: Timestamp,
    pub tier: Tier,
    pub score: f64,
    pub definition_version: String,
    /// The full decision (`pql_engine::Decision`) as JSON.
    pub decision: serde_json::Value,
    pub trigger: Trigger,
    pub created_at: Timestamp,
}

/// What observing an account did.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The record version was already observed (a redelivery): nothing to do.
    Stale,
    /// The lifecycle did not change: nothing written.
    Unchanged { stage: Stage },
    /// The lifecycle changed without a qualification (activated, disqualified, dropped out).
    Changed { stage: Stage },
    /// The account qualified: the lifecycle and this alert were written together. (An
    /// observation whose points qualify more than once, a re-entry after the cooldown within
    /// one stream batch of replayed history, writes every alert; this is the last.)
    Qualified(Alert),
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the lifecycle of {tenant}/{account} kept changing: gave up after {attempts} attempts"
    )]
    Contended {
        tenant: String,
        account: String,
        attempts: u32,
    },
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn tier_from(text: &str) -> Option<Tier> {
    match text {
        "cold" => Some(Tier::Cold),
        "warm" => Some(Tier::Warm),
        "hot" => Some(Tier::Hot),
        _ => None,
    }
}

impl Alert {
    fn item(&self, pk: &str) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(pk)),
            ("sk".to_owned(), n(self.sequence)),
            ("tenant".to_owned(), s(&self.tenant)),
            ("account".to_owned(), s(&self.account)),
            ("sequence".to_owned(), n(self.sequence)),
            ("qualified_at".to_owned(), s(self.qualified_at.to_rfc3339())),
            ("tier".to_owned(), s(self.tier.as_str())),
            ("score".to_owned(), n(self.score)),
            ("definition_version".to_owned(), s(&self.definition_version)),
            ("decision".to_owned(), s(self.decision.to_string())),
            ("trigger".to_owned(), s(self.trigger.as_str())),
            ("created_at".to_owned(), s(self.created_at.to_rfc3339())),
        ]);
        if let Some(name) = &self.account_name {
            item.insert("account_name".to_owned(), s(name));
        }
        item
    }

    /// Reads an alert item (as stored, or from the table's stream).
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Alert, String> {
        let text = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| format!("no `{name}`"))
        };
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .ok_or_else(|| format!("no `{name}`"))
        };
        let time = |name: &str| {
            text(name).and_then(|t| Timestamp::parse(t).map_err(|e| format!("`{name}`: {e}")))
        };
        Ok(Alert {
            tenant: text("tenant")?.clone(),
            account: text("account")?.clone(),
            account_name: text("account_name").ok().cloned(),
            sequence: number("sequence")?
                .parse()
                .map_err(|e| format!("`sequence`: {e}"))?,
            qualified_at: time("qualified_at")?,
            tier: tier_from(text("tier")?).ok_or("`tier` is not a tier")?,
            score: number("score")?
                .parse()
                .map_err(|e| format!("`score`: {e}"))?,
            definition_version: text("definition_version")?.clone(),
            decision: serde_json::from_str(text("decision")?)
                .map_err(|e| format!("`decision`: {e}"))?,
            trigger: match text("trigger")?.as_str() {
                "sweep" => Trigger::Sweep,
                _ => Trigger::Event,
            },
            created_at: time("created_at")?,
        })
    }
}

fn is_retryable_cancellation(error: &TransactWriteItemsError) -> bool {
    match error {
        TransactWriteItemsError::TransactionCanceledException(e) => {
            e.cancellation_reasons().iter().any(|r| {
                matches!(
                    r.code(),
                    Some("ConditionalCheckFailed" | "TransactionConflict")
                )
            })
        }
        TransactWriteItemsError::TransactionInProgressException(_) => true,
        _ => false,
    }
}

impl Store {
    /// The account's lifecycle (strongly consistent); version 0 when none is stored yet.
    pub async fn load_lifecycle(
        &self,
        tenant: &TenantId,
        account: &str,
    ) -> Result<Versioned<LifecycleRecord>, StoreError> {
        let pk = alerts_pk(tenant, account);
        let key_text = format!("{pk}/{LIFECYCLE_SK}");
        let key = HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), n(LIFECYCLE_SK))]);
        let Some(fetched) = self
            .get_consistent_item(&self.tables.alerts, key, key_text)
            .await?
        else {
            return Ok(Versioned {
                value: LifecycleRecord::default(),
                version: 0,
            });
        };
        let lifecycle: Lifecycle = fetched.json("lifecycle")?;
        Ok(Versioned {
            value: LifecycleRecord {
                lifecycle,
                observed_version: fetched.number("observed_version", "no `observed_version`")?,
            },
            version: fetched.number("version", "no `version`")?,
        })
    }

    /// Writes the lifecycle if it is still at `read_version` (0: if none is stored), and with
    /// it, in the same transaction, the alert of a qualification. Returns the new version.
    pub async fn save_lifecycle(
        &self,
        tenant: &TenantId,
        account: &str,
        record: &LifecycleRecord,
        read_version: u64,
        alerts: &[Alert],
    ) -> Result<Result<u64, Conflict>, StoreError> {
        let table = &self.tables.alerts;
        let pk = alerts_pk(tenant, account);
        let version = read_version + 1;
        let lifecycle = &record.lifecycle;
        let item = HashMap::from([
            ("pk".to_owned(), s(&pk)),
            ("sk".to_owned(), n(LIFECYCLE_SK)),
            ("tenant".to_owned(), s(tenant.as_str())),
            ("account".to_owned(), s(account)),
            (
                "lifecycle".to_owned(),
                s(serde_json::to_string(lifecycle).expect("a lifecycle serialises")),
            ),
            ("stage".to_owned(), s(lifecycle.stage.as_str())),
            ("qualifications".to_owned(), n(lifecycle.qualifications)),
            ("observed_version".to_owned(), n(record.observed_version)),
            ("updated_at".to_owned(), s(Timestamp::now().to_rfc3339())),
            ("version".to_owned(), n(version)),
        ]);
        let (condition, values) = if read_version == 0 {
            ("attribute_not_exists(pk)", None)
        } else {
            (
                "version = :read",
                Some(HashMap::from([(":read".to_owned(), n(read_version))])),
            )
        };
        if alerts.is_empty() {
            return match self
                .client
                .put_item()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_values(values)
                .send()
                .await
            {
                Ok(_) => Ok(Ok(version)),
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
                {
                    Ok(Err(Conflict))
                }
                Err(e) => Err(StoreError::dynamo("PutItem", table, e)),
            };
        }
        let lifecycle_put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(lifecycle_put).build());
        for alert in alerts {
            let alert_put = Put::builder()
                .table_name(table)
                .set_item(Some(alert.item(&pk)))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| StoreError::Config(e.to_string()))?;
            transaction =
                transaction.transact_items(TransactWriteItem::builder().put(alert_put).build());
        }
        match transaction.send().await {
            Ok(_) => Ok(Ok(version)),
            Err(SdkError::ServiceError(e)) if is_retryable_cancellation(e.err()) => {
                Ok(Err(Conflict))
            }
            Err(e) => Err(StoreError::dynamo("TransactWriteItems", table, e)),
        }
    }

    /// The account's alerts, in sequence order.
    pub async fn alerts(&self, tenant: &TenantId, account: &str) -> Result<Vec<Alert>, StoreError> {
        let pk = alerts_pk(tenant, account);
        let mut alerts = Vec::new();
        self.query_partition(&self.tables.alerts, &pk, "sk >= :sk", n(1), |item| {
            alerts.push(Alert::from_item(item)?);
            Ok(())
        })
        .await?;
        Ok(alerts)
    }

    /// Feeds the account's current decision to its lifecycle and stores the outcome: the
    /// shared core of the qualify function ([`Observation::event`]) and of the sweep
    /// ([`Observation::sweep`]).
    ///
    /// Exactly what `pql_engine::Ledger::ingest` does after each event: `verdict` then
    /// `Lifecycle::observe`, so replaying history gives the same qualifications at the same
    /// times. On a lost race it re-reads the lifecycle and observes again (at most
    /// [`MAX_ATTEMPTS`] times).
    ///
    /// Idempotent: an event observation of a record version at or below the lifecycle's
    /// `observed_version` is [`Observed::Stale`]; an observation that changes nothing writes
    /// nothing (observing it again on the same lifecycle cannot change anything either), so a
    /// redelivered record never creates a second alert, whatever came after it.
    pub async fn observe_account(
        &self,
        definition: &Definition,
        tenant: &TenantId,
        account: &str,
        record: &AccountRecord,
        observation: Observation,
    ) -> Result<Observed, ObserveError> {
        let Observation {
            trigger,
            record_version,
            at,
        } = observation;
        for _ in 0..MAX_ATTEMPTS {
            let current = self.load_lifecycle(tenant, account).await?;
            if trigger == Trigger::Event && record_version <= current.value.observed_version {
                return Ok(Observed::Stale);
            }
            let mut next = current.value.clone();
            // An event observation replays the verdicts the activation function made after
            // each event it applied (the record's points); a record without any, and the
            // sweep, are judged once at `at`.
            let points: Vec<(Verdict, Timestamp)> = match trigger {
                Trigger::Event if !record.points.is_empty() => {
                    record.points.iter().map(|p| (p.verdict, p.at)).collect()
                }
                _ => vec![(verdict(definition, &record.state, at), at)],
            };
            let qualifications: Vec<Qualification> = points
                .iter()
                .filter_map(|(v, at)| next.lifecycle.observe(definition, v, *at))
                .collect();
            if qualifications.is_empty() && next.lifecycle == current.value.lifecycle {
                // Nothing to record. (Not even `observed_version`: observing this record
                // again on the same lifecycle changes nothing either.)
                return Ok(Observed::Unchanged {
                    stage: next.lifecycle.stage,
                });
            }
            if trigger == Trigger::Event {
                next.observed_version = record_version;
            }
            let mut alerts: Vec<Alert> = qualifications
                .iter()
                .map(|q| alert_for(definition, tenant, account, record, q, trigger))
                .collect();
            match self
                .save_lifecycle(tenant, account, &next, current.version, &alerts)
                .await?
            {
                Ok(_) => {
                    return Ok(match alerts.pop() {
                        Some(alert) => Observed::Qualified(alert),
                        None => Observed::Changed {
                            stage: next.lifecycle.stage,
                        },
                    })
                }
                Err(Conflict) => {
                    tracing::debug!(%tenant, account, "lifecycle changed since read; observing again");
                }
            }
        }
        Err(ObserveError::Contended {
            tenant: tenant.to_string(),
            account: account.to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }
}

fn alert_for(
    definition: &Definition,
    tenant: &TenantId,
    account: &str,
    record: &AccountRecord,
    q: &Qualification,
    trigger: Trigger,
) -> Alert {
    let decision = evaluate(definition, &record.state, q.at);
    Alert {
        tenant: tenant.to_string(),
        account: account.to_owned(),
        account_name: record.state.name().map(str::to_owned),
        sequence: q.sequence,
        qualified_at: q.at,
        tier: q.tier,
        score: decision.score,
        definition_version: definition.version.clone(),
        decision: serde_json::to_value(&decision).expect("a decision serialises"),
        trigger,
        created_at: Timestamp::now(),
    }
}
