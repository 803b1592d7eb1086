//! Delivery state of alerts (the notify function), tenant notification settings, and sales
//! feedback.
//!
//! Layout, in the alerts table, next to the alert it is about (same partition
//! `pk = "<tenant>#<account>"`):
//!
//! * `sk = -n` (n >= 1): the deliveries of the account's n-th alert. One top-level attribute per
//!   destination, `d:<destination id>`, a map: `state` (`claimed`, `delivered`, `parked`,
//!   `suppressed`, `replay`), `owner` (the claim's random token), `lease_until` (ms since the
//!   epoch), `attempts`, `last_error`, `updated_at`, `delivered_at`, `reason`; plus `tenant`,
//!   `account`, `sequence`, `kind = "deliveries"`, and the sales `feedback` on the alert.
//!   Negative sort keys never reach the notify function: its event source keeps `sk >= 1`.
//!
//! In the tenants table: `pk = "notify#<tenant>"` holds the tenant's notification settings
//! (routing, destinations and their secrets, suppression) as JSON, read by the notify function.
//!
//! ## Exactly once per receiver
//!
//! Delivering to one destination is *claim, send, mark*:
//!
//! 1. [`Store::claim_delivery`]: a conditional `UpdateItem` that succeeds only if the
//!    destination has no state yet, was released for a replay, or holds a claim whose lease has
//!    expired. Two consumers racing (a redelivered stream batch, two Lambda instances) cannot
//!    both win: DynamoDB serialises conditional writes on an item.
//! 2. The winner sends (with retries).
//! 3. [`Store::finish_delivery`]: marks it `delivered` (or `parked` with its last error),
//!    conditional on still owning the claim.
//!
//! The at-least-once window: if the winner crashes (or its lease expires) after the receiver
//! got the message but before step 3, a later claim sends again. Nothing on our side can close
//! that window (the receiver's acknowledgement and our write are not one transaction); the
//! window is as short as one send, and every message carries the same idempotency key for the
//! same (alert, destination) ([`DeliveryKey::idempotency_key`], the `Idempotency-Key` header of
//! webhooks), so a receiver that remembers the keys it saw drops the rest. Leases are longer
//! than the longest send with all its retries, so a live sender is never overtaken.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use crate::alerts::alerts_pk;
use crate::tenants::TenantId;
use crate::{Conflict, Fetched, Store, StoreError};

/// The sort key of the deliveries of the `sequence`-th alert.
pub fn deliveries_sk(sequence: u32) -> i64 {
    -i64::from(sequence)
}

fn destination_attribute(destination: &str) -> String {
    format!("d:{destination}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A destination id: 1 to 64 characters of `a-z`, `0-9`, `-` and `_`.
pub fn check_destination_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a destination id (allowed: 1 to 64 characters of a-z, 0-9, `-` and `_`)"
        ))
    }
}

/// One (alert, destination): what is delivered exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    pub tenant: TenantId,
    pub account: String,
    pub sequence: u32,
    pub destination: String,
}

impl DeliveryKey {
    /// `<tenant>/<account>/<sequence>/<destination>`: what `pql alerts` shows and takes.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.tenant, self.account, self.sequence, self.destination
        )
    }

    /// Parses [`DeliveryKey::id`] (account ids may contain `/`: the tenant is the first part,
    /// the sequence and destination the last two).
    pub fn parse(id: &str) -> Result<DeliveryKey, String> {
        let bad = |why: &str| {
            format!("`{id}` is not a delivery id: {why} (expected TENANT/ACCOUNT/SEQUENCE/DESTINATION, as `pql alerts list` shows)")
        };
        let (tenant, rest) = id.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let (rest, destination) = rest.rsplit_once('/').ok_or_else(|| bad("too few parts"))?;
        let (account, sequence) = rest.rsplit_once('/').ok_or_else(|| bad("too few parts"))?;
        let tenant = TenantId::parse(tenant).map_err(|e| bad(&e))?;
        if account.is_empty() {
            return Err(bad("empty account"));
        }
        let sequence: u32 = sequence
            .parse()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| bad("the sequence is not a number >= 1"))?;
        check_destination_id(destination).map_err(|e| bad(&e))?;
        Ok(DeliveryKey {
            tenant,
            account: account.to_owned(),
            sequence,
            destination: destination.to_owned(),
        })
    }

    /// The idempotency key: the same for every attempt, retry and replay of this (alert,
    /// destination), different for anything else. Receivers deduplicate on it.
    pub fn idempotency_key(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.tenant.as_str(),
            self.account.as_str(),
            &self.sequence.to_string(),
            self.destination.as_str(),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        format!("pql_{}", &hex::encode(hash.finalize())[..32])
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Being sent by the claim's owner until `lease_until`.
    Claimed,
    Delivered,
    /// Gave up after the retry policy's attempts; `pql alerts replay` releases it.
    Parked,
    /// Not sent on purpose (`reason` says why).
    Suppressed,
    /// Released by `pql alerts replay`: the next claim takes it.
    Replay,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Claimed => "claimed",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Parked => "parked",
            DeliveryState::Suppressed => "suppressed",
            DeliveryState::Replay => "replay",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryState> {
        Some(match text {
            "claimed" => DeliveryState::Claimed,
            "delivered" => DeliveryState::Delivered,
            "parked" => DeliveryState::Parked,
            "suppressed" => DeliveryState::Suppressed,
            "replay" => DeliveryState::Replay,
            _ => return None,
        })
    }
}

/// The stored state of one (alert, destination).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub key: DeliveryKey,
    pub state: DeliveryState,
    pub owner: Option<String>,
    pub lease_until_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub reason: Option<String>,
    /// The alert's tier when this was claimed (for re-alerting on escalation).
    pub tier: Option<String>,
    pub updated_at: Option<String>,
    pub delivered_at: Option<String>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller owns the delivery until the lease ends: send, then finish.
    Won,
    /// Someone else has it (delivered, being sent, parked or suppressed): do not send.
    Lost(Box<Delivery>),
}

/// How a claimed delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Delivered { attempts: u32 },
    Parked { attempts: u32, error: String },
}

/// Sales feedback on an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub tenant: TenantId,
    pub account: String,
    pub sequence: u32,
    /// `accepted`, `rejected`, `converted` or `lost`.
    pub outcome: String,
    pub reason: Option<String>,
    pub by: Option<String>,
    pub at: String,
    /// The definition version of the alert's decision: outcomes are judged per version.
    pub definition_version: String,
}

/// The outcomes sales can record on an alert.
pub const FEEDBACK_OUTCOMES: [&str; 4] = ["accepted", "rejected", "converted", "lost"];

/// Why feedback is not valid (the CLI and the admin API word the field their own way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackError {
    UnknownOutcome(String),
    /// `rejected` without a reason: why sales rejected it feeds the definition's review.
    ReasonRequired,
    /// A reason or author over 1,000 characters.
    TooLong(&'static str),
}

/// Checks an outcome, its reason and who gives it (the same rules everywhere feedback enters).
pub fn check_feedback(
    outcome: &str,
    reason: Option<&str>,
    by: Option<&str>,
) -> Result<(), FeedbackError> {
    if !FEEDBACK_OUTCOMES.contains(&outcome) {
        return Err(FeedbackError::UnknownOutcome(outcome.to_owned()));
    }
    if outcome == "rejected" && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(FeedbackError::ReasonRequired);
    }
    if reason.is_some_and(|r| r.chars().count() > 1000) {
        return Err(FeedbackError::TooLong("reason"));
    }
    if by.is_some_and(|b| b.chars().count() > 1000) {
        return Err(FeedbackError::TooLong("by"));
    }
    Ok(())
}

fn now_rfc3339() -> String {
    pql_engine::Timestamp::now().to_rfc3339()
}

fn parse_deliveries(item: &HashMap<String, AttributeValue>) -> Result<Vec<Delivery>, String> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let tenant = text("tenant").ok_or("no `tenant`")?;
    let tenant = TenantId::parse(&tenant)?;
    let account = text("account").ok_or("no `account`")?;
    let sequence: u32 = item
        .get("sequence")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no `sequence`")?;
    let mut out = Vec::new();
    for (name, value) in item {
        let Some(destination) = name.strip_prefix("d:") else {
            continue;
        };
        let map = value.as_m().map_err(|_| format!("`{name}` is not a map"))?;
        let text = |field: &str| map.get(field).and_then(|v| v.as_s().ok()).cloned();
        let number = |field: &str| {
            map.get(field)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let state = text("state")
            .as_deref()
            .and_then(DeliveryState::parse)
            .ok_or_else(|| format!("`{name}.state` is missing or unknown"))?;
        out.push(Delivery {
            key: DeliveryKey {
                tenant: tenant.clone(),
                account: account.clone(),
                sequence,
                destination: destination.to_owned(),
            },
            state,
            owner: text("owner"),
            lease_until_ms: number("lease_until").unwrap_or(0),
            attempts: number("attempts").unwrap_or(0).max(0) as u32,
            last_error: text("last_error"),
            reason: text("reason"),
            tier: text("tier"),
            updated_at: text("updated_at"),
            delivered_at: text("delivered_at"),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn parse_feedback(item: &HashMap<String, AttributeValue>) -> Option<Feedback> {
    let m = item.get("feedback")?.as_m().ok()?;
    let text = |field: &str| m.get(field).and_then(|v| v.as_s().ok()).cloned();
    let tenant = TenantId::parse(item.get("tenant")?.as_s().ok()?).ok()?;
    Some(Feedback {
        tenant,
        account: item.get("account")?.as_s().ok()?.clone(),
        sequence: item.get("sequence")?.as_n().ok()?.parse().ok()?,
        outcome: text("outcome")?,
        reason: text("reason"),
        by: text("by"),
        at: text("at")?,
        definition_version: text("definition_version")?,
    })
}

impl Store {
    fn deliveries_key(
        &self,
        key_tenant: &TenantId,
        account: &str,
        sequence: u32,
    ) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), s(alerts_pk(key_tenant, account))),
            ("sk".to_owned(), n(deliveries_sk(sequence))),
        ])
    }

    /// Claims (alert, destination) for `owner` until `now_ms + lease_ms`; see the module
    /// documentation. `tier` is the alert's tier, kept for re-alerting decisions.
    pub async fn claim_delivery(
        &self,
        key: &DeliveryKey,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        tier: &str,
    ) -> Result<Claim, StoreError> {
        let table = &self.tables.alerts;
        let claim = HashMap::from([
            ("state".to_owned(), s(DeliveryState::Claimed.as_str())),
            ("owner".to_owned(), s(owner)),
            ("lease_until".to_owned(), n(now_ms + lease_ms)),
            ("attempts".to_owned(), n(0)),
            ("tier".to_owned(), s(tier)),
            ("updated_at".to_owned(), s(now_rfc3339())),
        ]);
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(self.deliveries_key(&key.tenant, &key.account, key.sequence)))
            .update_expression("SET #d = :claim, #tenant = :tenant, #account = :account, #seq = :seq, #kind = :kind")
            .condition_expression(
                "attribute_not_exists(#d) OR #d.#state = :replay OR (#d.#state = :claimed AND #d.#lease < :now)",
            )
            .expression_attribute_names("#d", destination_attribute(&key.destination))
            .expression_attribute_names("#tenant", "tenant")
            .expression_attribute_names("#account", "account")
            .expression_attribute_names("#seq", "sequence")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":claim", AttributeValue::M(claim))
            .expression_attribute_values(":tenant", s(key.tenant.as_str()))
            .expression_attribute_values(":account", s(&key.account))
            .expression_attribute_values(":seq", n(key.sequence))
            .expression_attribute_values(":kind", s("deliveries"))
            .expression_attribute_values(":replay", s(DeliveryState::Replay.as_str()))
            .expression_attribute_values(":claimed", s(DeliveryState::Claimed.as_str()))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Won),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                let current = self
                    .delivery(key)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt {
                        table: table.clone(),
                        key: key.id(),
                        reason: "a claim was refused but no delivery state is stored".into(),
                    })?;
                Ok(Claim::Lost(Box::new(current)))
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", table, e)),
        }
    }

    /// Ends a claim: delivered, or parked with its last error. [`Conflict`] when the claim is
    /// no longer `owner`'s (its lease expired and another consumer took it).
    pub async fn finish_delivery(
        &self,
        key: &DeliveryKey,
        owner: &str,
        tier: &str,
        finish: &Finish,
    ) -> Result<Result<(), Conflict>, StoreError> {
        let table = &self.tables.alerts;
        let now = now_rfc3339();
        let mut done = HashMap::from([
            ("owner".to_owned(), s(owner)),
            ("tier".to_owned(), s(tier)),
            ("updated_at".to_owned(), s(&now)),
        ]);
        match finish {
            Finish::Delivered { attempts } => {
                done.insert("state".into(), s(DeliveryState::Delivered.as_str()));
                done.insert("attempts".into(), n(attempts));
                done.insert("delivered_at".into(), s(&now));
            }
            Finish::Parked { attempts, error } => {
                done.insert("state".into(), s(DeliveryState::Parked.as_str()));
                done.insert("attempts".into(), n(attempts));
                done.insert("last_error".into(), s(error));
            }
        }
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(self.deliveries_key(
                &key.tenant,
                &key.account,
                key.sequence,
            )))
            .update_expression("SET #d = :done")
            .condition_expression("#d.#state = :claimed AND #d.#owner = :owner")
            .expression_attribute_names("#d", destination_attribute(&key.destination))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":done", AttributeValue::M(done))
            .expression_attribute_values(":claimed", s(DeliveryState::Claimed.as_str()))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(Err(Conflict))
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", table, e)),
        }
    }

    /// Records that (alert, destination) is not sent, and why, unless it already has a state.
    /// Returns whether it was recorded.
    pub async fn suppress_delivery(
        &self,
        key: &DeliveryKey,
        tier: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let table = &self.tables.alerts;
        let value = HashMap::from([
            ("state".to_owned(), s(DeliveryState::Suppressed.as_str())),
            ("reason".to_owned(), s(reason)),
            ("tier".to_owned(), s(tier)),
            ("attempts".to_owned(), n(0)),
            ("updated_at".to_owned(), s(now_rfc3339())),
        ]);
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(self.deliveries_key(
                &key.tenant,
                &key.account,
                key.sequence,
            )))
            .update_expression(
                "SET #d = :v, #tenant = :tenant, #account = :account, #seq = :seq, #kind = :kind",
            )
            .condition_expression("attribute_not_exists(#d)")
            .expression_attribute_names("#d", destination_attribute(&key.destination))
            .expression_attribute_names("#tenant", "tenant")
            .expression_attribute_names("#account", "account")
            .expression_attribute_names("#seq", "sequence")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":v", AttributeValue::M(value))
            .expression_attribute_values(":tenant", s(key.tenant.as_str()))
            .expression_attribute_values(":account", s(&key.account))
            .expression_attribute_values(":seq", n(key.sequence))
            .expression_attribute_values(":kind", s("deliveries"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", table, e)),
        }
    }

    /// Releases a parked delivery so that the next claim sends it again (`pql alerts replay`).
    /// Returns false when it is not parked.
    pub async fn release_for_replay(&self, key: &DeliveryKey) -> Result<bool, StoreError> {
        let table = &self.tables.alerts;
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(self.deliveries_key(
                &key.tenant,
                &key.account,
                key.sequence,
            )))
            .update_expression("SET #d.#state = :replay, #d.#updated = :now")
            .condition_expression("#d.#state = :parked")
            .expression_attribute_names("#d", destination_attribute(&key.destination))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":replay", s(DeliveryState::Replay.as_str()))
            .expression_attribute_values(":parked", s(DeliveryState::Parked.as_str()))
            .expression_attribute_values(":now", s(now_rfc3339()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", table, e)),
        }
    }

    /// The state of one (alert, destination), strongly consistent.
    pub async fn delivery(&self, key: &DeliveryKey) -> Result<Option<Delivery>, StoreError> {
        Ok(self
            .alert_deliveries(&key.tenant, &key.account, key.sequence)
            .await?
            .into_iter()
            .find(|d| d.key.destination == key.destination))
    }

    /// Every destination's state for one alert, strongly consistent.
    pub async fn alert_deliveries(
        &self,
        tenant: &TenantId,
        account: &str,
        sequence: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        match self.deliveries_item(tenant, account, sequence).await? {
            None => Ok(Vec::new()),
            Some(fetched) => parse_deliveries(&fetched.item).map_err(|r| fetched.corrupt(r)),
        }
    }

    /// The deliveries item of one alert (its states and feedback), strongly consistent.
    async fn deliveries_item(
        &self,
        tenant: &TenantId,
        account: &str,
        sequence: u32,
    ) -> Result<Option<Fetched>, StoreError> {
        let key_text = format!("{}/{}", alerts_pk(tenant, account), deliveries_sk(sequence));
        self.get_consistent_item(
            &self.tables.alerts,
            self.deliveries_key(tenant, account, sequence),
            key_text,
        )
        .await
    }

    /// The deliveries of every alert of an account (one query): what was sent before, for
    /// cooldown and escalation.
    pub async fn account_deliveries(
        &self,
        tenant: &TenantId,
        account: &str,
    ) -> Result<Vec<Delivery>, StoreError> {
        let pk = alerts_pk(tenant, account);
        let mut all = Vec::new();
        self.query_partition(&self.tables.alerts, &pk, "sk < :sk", n(0), |item| {
            all.extend(parse_deliveries(item)?);
            Ok(())
        })
        .await?;
        Ok(all)
    }

    /// Every delivery state of the table (a scan: for `pql alerts list`, an operator's
    /// command, never a hot path), optionally of one tenant.
    pub async fn all_deliveries(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<(Vec<Delivery>, Vec<Feedback>), StoreError> {
        let table = &self.tables.alerts;
        let mut deliveries = Vec::new();
        let mut feedback = Vec::new();
        let mut start = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(table)
                .filter_expression(if tenant.is_some() {
                    "sk < :zero AND tenant = :tenant"
                } else {
                    "sk < :zero"
                })
                .expression_attribute_values(":zero", n(0))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            if let Some(tenant) = tenant {
                scan = scan.expression_attribute_values(":tenant", s(tenant.as_str()));
            }
            let out = scan
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Scan", table, e))?;
            for item in out.items() {
                deliveries.extend(parse_deliveries(item).map_err(|reason| {
                    StoreError::Corrupt {
                        table: table.clone(),
                        key: "(a deliveries item)".into(),
                        reason,
                    }
                })?);
                feedback.extend(parse_feedback(item));
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        deliveries.sort_by(|a, b| a.key.cmp(&b.key));
        feedback.sort_by(|a, b| {
            (&a.tenant, &a.account, a.sequence).cmp(&(&b.tenant, &b.account, b.sequence))
        });
        Ok((deliveries, feedback))
    }

    /// Stores sales feedback on an alert (the latest wins), with the alert's definition
    /// version so outcomes can be judged per version.
    pub async fn put_feedback(&self, feedback: &Feedback) -> Result<(), StoreError> {
        let table = &self.tables.alerts;
        let mut value = HashMap::from([
            ("outcome".to_owned(), s(&feedback.outcome)),
            ("at".to_owned(), s(&feedback.at)),
            (
                "definition_version".to_owned(),
                s(&feedback.definition_version),
            ),
        ]);
        if let Some(reason) = &feedback.reason {
            value.insert("reason".into(), s(reason));
        }
        if let Some(by) = &feedback.by {
            value.insert("by".into(), s(by));
        }
        self.client
            .update_item()
            .table_name(table)
            .set_key(Some(self.deliveries_key(&feedback.tenant, &feedback.account, feedback.sequence)))
            .update_expression("SET #f = :f, #tenant = :tenant, #account = :account, #seq = :seq, #kind = :kind, #dv = :dv")
            .expression_attribute_names("#f", "feedback")
            .expression_attribute_names("#tenant", "tenant")
            .expression_attribute_names("#account", "account")
            .expression_attribute_names("#seq", "sequence")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#dv", "definition_version")
            .expression_attribute_values(":f", AttributeValue::M(value))
            .expression_attribute_values(":tenant", s(feedback.tenant.as_str()))
            .expression_attribute_values(":account", s(&feedback.account))
            .expression_attribute_values(":seq", n(feedback.sequence))
            .expression_attribute_values(":kind", s("deliveries"))
            .expression_attribute_values(":dv", s(&feedback.definition_version))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", table, e))?;
        Ok(())
    }

    /// The feedback recorded on one alert (strongly consistent), if any.
    pub async fn feedback(
        &self,
        tenant: &TenantId,
        account: &str,
        sequence: u32,
    ) -> Result<Option<Feedback>, StoreError> {
        let fetched = self.deliveries_item(tenant, account, sequence).await?;
        Ok(fetched.and_then(|f| parse_feedback(&f.item)))
    }

    /// One alert (strongly consistent), if it exists.
    pub async fn alert(
        &self,
        tenant: &TenantId,
        account: &str,
        sequence: u32,
    ) -> Result<Option<crate::alerts::Alert>, StoreError> {
        let pk = alerts_pk(tenant, account);
        let key_text = format!("{pk}/{sequence}");
        let key = HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), n(sequence))]);
        let fetched = self
            .get_consistent_item(&self.tables.alerts, key, key_text)
            .await?;
        fetched
            .map(|f| crate::alerts::Alert::from_item(&f.item).map_err(|r| f.corrupt(r)))
            .transpose()
    }

    /// Stores a tenant's notification settings (JSON, validated by the notify crate).
    pub async fn put_notify_settings(
        &self,
        tenant: &TenantId,
        settings_json: &str,
    ) -> Result<(), StoreError> {
        let table = &self.tables.tenants;
        self.client
            .put_item()
            .table_name(table)
            .item("pk", s(format!("notify#{tenant}")))
            .item("tenant_id", s(tenant.as_str()))
            .item("settings", s(settings_json))
            .item("updated_at", s(now_rfc3339()))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", table, e))?;
        Ok(())
    }

    /// A tenant's notification settings (JSON), if any.
    pub async fn notify_settings(&self, tenant: &TenantId) -> Result<Option<String>, StoreError> {
        let table = &self.tables.tenants;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(format!("notify#{tenant}")))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", table, e))?;
        Ok(out
            .item
            .and_then(|item| item.get("settings").and_then(|v| v.as_s().ok()).cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ids_say_why() {
        let key = DeliveryKey {
            tenant: TenantId::parse("acme").unwrap(),
            account: "org/42".into(),
            sequence: 2,
            destination: "sales-slack".into(),
        };
        assert_eq!(key.id(), "acme/org/42/2/sales-slack");
        assert_eq!(DeliveryKey::parse(&key.id()).unwrap(), key);
        let err = DeliveryKey::parse("acme/org/0/x").unwrap_err();
        assert!(err.contains("sequence is not a number >= 1"), "{err}");
        let err = DeliveryKey::parse("acme").unwrap_err();
        assert!(
            err.contains("expected TENANT/ACCOUNT/SEQUENCE/DESTINATION"),
            "{err}"
        );
    }

    #[test]
    fn idempotency_keys_differ_per_alert_and_destination() {
        let key = |seq, dest: &str| DeliveryKey {
            tenant: TenantId::parse("acme").unwrap(),
            account: "a".into(),
            sequence: seq,
            destination: dest.into(),
        };
        assert_eq!(key(1, "x").idempotency_key(), key(1, "x").idempotency_key());
        assert_ne!(key(1, "x").idempotency_key(), key(2, "x").idempotency_key());
        assert_ne!(key(1, "x").idempotency_key(), key(1, "y").idempotency_key());
        assert_eq!(key(1, "x").idempotency_key().len(), 36);
    }
}

/// Daily digests of warm alerts, in the alerts table, outside every account partition (the
/// `!` prefix cannot start a tenant id) and at `sk = 0` without a `tenant` attribute, so no
/// stream filter, lifecycle listing or delivery scan ever sees them:
///
/// * `pk = "!digest#<tenant>#<day>#<destination>"`: one destination's digest of one UTC day:
///   `state` (`pending` while alerts are queued, then `claimed`, `delivered` or `parked`),
///   `owner`, `lease_until`, `attempts`, `last_error`, `delivered_at`, `listed`, and one
///   attribute `a:<account>` per queued account (`sequence`, `data`: the entry as JSON);
/// * `pk = "!digests#<day>"`: the day's index, a string set of `<tenant>#<destination>`.
///
/// Sending is claim, send, mark as for alerts: the claim freezes the entries (queuing into a
/// claimed day fails, and the caller queues into the next day).
#[derive(Debug, Clone, PartialEq)]
pub struct WarmDigest {
    pub tenant: TenantId,
    pub destination: String,
    pub day: String,
    /// `pending`, `claimed`, `delivered` or `parked`.
    pub state: String,
    pub lease_until_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub listed: Option<u32>,
    /// (account, alert sequence, entry JSON), by account.
    pub entries: Vec<(String, u32, String)>,
}

fn digest_key(tenant: &TenantId, day: &str, destination: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            s(format!("!digest#{tenant}#{day}#{destination}")),
        ),
        ("sk".to_owned(), n(0)),
    ])
}

fn digest_index_key(day: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(format!("!digests#{day}"))),
        ("sk".to_owned(), n(0)),
    ])
}

fn parse_digest(item: &HashMap<String, AttributeValue>) -> Result<WarmDigest, String> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let mut entries = Vec::new();
    for (name, value) in item {
        let Some(account) = name.strip_prefix("a:") else {
            continue;
        };
        let m = value.as_m().map_err(|_| format!("`{name}` is not a map"))?;
        let sequence = m
            .get("sequence")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("`{name}.sequence` is missing"))?;
        let data = m
            .get("data")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| format!("`{name}.data` is missing"))?;
        entries.push((account.to_owned(), sequence, data));
    }
    entries.sort();
    Ok(WarmDigest {
        tenant: TenantId::parse(&text("t").ok_or("no `t`")?)?,
        destination: text("destination").ok_or("no `destination`")?,
        day: text("day").ok_or("no `day`")?,
        state: text("state").ok_or("no `state`")?,
        lease_until_ms: number("lease_until").unwrap_or(0),
        attempts: number("attempts").unwrap_or(0).max(0) as u32,
        last_error: text("last_error"),
        listed: number("listed").map(|n| n.max(0) as u32),
        entries,
    })
}

impl Store {
    /// Queues a warm alert into one destination's digest of `day` (idempotent: one entry per
    /// account, the latest alert wins). `Ok(false)`: that day's digest is already being sent or
    /// sent, queue into a later day.
    #[allow(clippy::too_many_arguments)]
    pub async fn queue_for_digest(
        &self,
        tenant: &TenantId,
        day: &str,
        destination: &str,
        account: &str,
        sequence: u32,
        data: &str,
    ) -> Result<bool, StoreError> {
        let table = &self.tables.alerts;
        // The index first: an entry is never stored where the daily run cannot find it.
        self.client
            .update_item()
            .table_name(table)
            .set_key(Some(digest_index_key(day)))
            .update_expression("ADD #m :m")
            .expression_attribute_names("#m", "members")
            .expression_attribute_values(
                ":m",
                AttributeValue::Ss(vec![format!("{tenant}#{destination}")]),
            )
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", table, e))?;
        let entry = HashMap::from([
            ("sequence".to_owned(), n(sequence)),
            ("data".to_owned(), s(data)),
        ]);
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(digest_key(tenant, day, destination)))
            .update_expression(
                "SET #a = :entry, #state = if_not_exists(#state, :pending), #t = :t, #dest = :dest, #day = :day",
            )
            .condition_expression("attribute_not_exists(#state) OR #state = :pending")
            .expression_attribute_names("#a", format!("a:{account}"))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#t", "t")
            .expression_attribute_names("#dest", "destination")
            .expression_attribute_names("#day", "day")
            .expression_attribute_values(":entry", AttributeValue::M(entry))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":dest", s(destination))
            .expression_attribute_values(":day", s(day))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", table, e)),
        }
    }

    /// The (tenant, destination) pairs with a digest on `day`.
    pub async fn digest_index(&self, day: &str) -> Result<Vec<(TenantId, String)>, StoreError> {
        let fetched = self
            .get_consistent_item(
                &self.tables.alerts,
                digest_index_key(day),
                format!("!digests#{day}"),
            )
            .await?;
        let mut pairs = Vec::new();
        if let Some(members) = fetched
            .as_ref()
            .and_then(|f| f.item.get("members"))
            .and_then(|m| m.as_ss().ok())
        {
            for member in members {
                let parsed = member
                    .split_once('#')
                    .and_then(|(t, d)| Some((TenantId::parse(t).ok()?, d.to_owned())));
                match parsed {
                    Some(pair) => pairs.push(pair),
                    None => tracing::error!(day, member, "unreadable digest index member"),
                }
            }
        }
        pairs.sort();
        Ok(pairs)
    }

    /// One destination's digest of a day (strongly consistent).
    pub async fn digest(
        &self,
        tenant: &TenantId,
        day: &str,
        destination: &str,
    ) -> Result<Option<WarmDigest>, StoreError> {
        let fetched = self
            .get_consistent_item(
                &self.tables.alerts,
                digest_key(tenant, day, destination),
                format!("!digest#{tenant}#{day}#{destination}"),
            )
            .await?;
        fetched
            .map(|f| parse_digest(&f.item).map_err(|r| f.corrupt(r)))
            .transpose()
    }

    /// Claims a digest for `owner` (pending, or claimed with an expired lease): `Some` with
    /// the entries as frozen by the claim, `None` when another run has it or it is done.
    pub async fn claim_digest(
        &self,
        tenant: &TenantId,
        day: &str,
        destination: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<WarmDigest>, StoreError> {
        let table = &self.tables.alerts;
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(digest_key(tenant, day, destination)))
            .update_expression("SET #state = :claimed, #owner = :owner, #lease = :lease")
            .condition_expression("#state = :pending OR (#state = :claimed AND #lease < :now)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":lease", n(now_ms + lease_ms))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                parse_digest(&item)
                    .map(Some)
                    .map_err(|reason| StoreError::Corrupt {
                        table: table.clone(),
                        key: format!("!digest#{tenant}#{day}#{destination}"),
                        reason,
                    })
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", table, e)),
        }
    }

    /// Ends a digest's claim: delivered (with how many accounts it listed) or parked.
    pub async fn finish_digest(
        &self,
        digest: &WarmDigest,
        owner: &str,
        finish: &Finish,
        listed: u32,
    ) -> Result<Result<(), Conflict>, StoreError> {
        let table = &self.tables.alerts;
        let (state, attempts, error) = match finish {
            Finish::Delivered { attempts } => ("delivered", *attempts, None),
            Finish::Parked { attempts, error } => ("parked", *attempts, Some(error.as_str())),
        };
        let mut update =
            "SET #state = :state, #attempts = :attempts, #listed = :listed, #at = :at".to_owned();
        let mut request = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(digest_key(
                &digest.tenant,
                &digest.day,
                &digest.destination,
            )))
            .condition_expression("#state = :claimed AND #owner = :owner")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_names("#listed", "listed")
            .expression_attribute_names("#at", "delivered_at")
            .expression_attribute_values(":state", s(state))
            .expression_attribute_values(":attempts", n(attempts))
            .expression_attribute_values(":listed", n(listed))
            .expression_attribute_values(":at", s(now_rfc3339()))
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":owner", s(owner));
        if let Some(error) = error {
            update.push_str(", #err = :err");
            request = request
                .expression_attribute_names("#err", "last_error")
                .expression_attribute_values(":err", s(error));
        }
        match request.update_expression(update).send().await {
            Ok(_) => Ok(Ok(())),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(Err(Conflict))
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", table, e)),
        }
    }
}
