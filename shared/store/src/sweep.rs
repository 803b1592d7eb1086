//! What the sweep needs: when an account's decision can next change with time alone, and the
//! state table's sparse index `due` (`sweep_shard` S, `due_at` N) to find those accounts
//! without scanning.
//!
//! **The account writer must set the index attributes.** Every put of an account item in the
//! state table replaces the item, so the writer (the activation function) adds, on each save,
//! [`due_attributes`]`(tenant, account, `[`next_due`]`(definition, &state, clock))`: `sweep_shard`
//! ([`sweep_shard`]) and `due_at` (epoch milliseconds), or neither when nothing can change with
//! time (the account then leaves the index). The sweep moves `due_at` forward itself after each
//! visit ([`Store::set_due`], conditional on the record's version, so it never overwrites a
//! newer save).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use pql_engine::definition::{Tier, Window};
use pql_engine::hits::Hit;
use pql_engine::{verdict, AccountState, Definition, Timestamp};

use crate::records::{record_pk, RecordKind};
use crate::tenants::TenantId;
use crate::{Conflict, Store, StoreError};

/// The name of the state table's sparse index.
pub const DUE_INDEX: &str = "due";

/// Accounts are spread over this many index partitions (`sweep_shard` = "00" .. "15"), so
/// that no partition of the index gets hot and the sweep can page through them in parallel.
pub const SWEEP_SHARDS: u32 = 16;

/// How often an account whose score decays is re-checked while it is warm or hot.
pub const DECAY_RECHECK_DAYS: f64 = 1.0;

/// A negative-points hit still counts for the re-check while it weighs at least this much.
const NEGATIVE_WEIGHT_FLOOR: f64 = 0.01;

/// The index partition of an account: a stable hash (FNV-1a) of tenant and account.
pub fn sweep_shard(tenant: &TenantId, account: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant
        .as_str()
        .bytes()
        .chain(std::iter::once(b'#'))
        .chain(account.bytes())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:02}", hash % u64::from(SWEEP_SHARDS))
}

/// Every shard, in order.
pub fn all_shards() -> Vec<String> {
    (0..SWEEP_SHARDS).map(|i| format!("{i:02}")).collect()
}

/// The next time after `clock` at which the account's decision can change with time alone, or
/// `None` when it cannot (until new events arrive):
///
/// * a met sliding-window milestone (`in_last_days`) stops being met when the oldest hit that
///   completes its threshold leaves the window: exactly then;
/// * with decay (`half_life_days`) or a hard scoring window (`window_days`), the score falls:
///   re-check every [`DECAY_RECHECK_DAYS`] while the account is warm or hot (it may drop a
///   tier), and while negative points still weigh (their decay may raise it).
///
/// Windows anchored at sign-up, fit and trait gates do not change with time.
pub fn next_due(
    definition: &Definition,
    state: &AccountState,
    clock: Timestamp,
) -> Option<Timestamp> {
    let mut due: Option<Timestamp> = None;
    let mut consider = |t: Timestamp| {
        if t > clock {
            due = Some(due.map_or(t, |d| d.min(t)));
        }
    };
    for (m, set) in definition.milestones.iter().zip(&state.milestones) {
        let Window::Sliding(days) = m.window else {
            continue;
        };
        let (_, keep) = m.shape;
        if let Some(completing) = set.completion(keep) {
            consider(completing.at.plus_days(days));
        }
    }
    let scoring = &definition.scoring;
    if scoring.half_life_days.is_some() || scoring.window_days.is_some() {
        let v = verdict(definition, state, clock);
        let decay = scoring.clock(clock);
        let weighs = |h: &Hit| decay.weight(h) >= NEGATIVE_WEIGHT_FLOOR;
        let negative_points_weigh = scoring
            .events
            .iter()
            .zip(&state.scoring)
            .any(|(rule, set)| rule.points < 0.0 && set.hits().iter().any(weighs));
        if v.tier > Tier::Cold || negative_points_weigh {
            consider(clock.plus_days(DECAY_RECHECK_DAYS));
        }
    }
    due
}

/// The index attributes of an account item, for the writer's put: `sweep_shard` and `due_at`
/// when `due` is `Some`, nothing otherwise.
pub fn due_attributes(
    tenant: &TenantId,
    account: &str,
    due: Option<Timestamp>,
) -> Vec<(String, AttributeValue)> {
    match due {
        Some(at) => vec![
            (
                "sweep_shard".to_owned(),
                AttributeValue::S(sweep_shard(tenant, account)),
            ),
            (
                "due_at".to_owned(),
                AttributeValue::N(at.millis().to_string()),
            ),
        ],
        None => Vec::new(),
    }
}

/// An account the index says is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueAccount {
    pub tenant: TenantId,
    pub account: String,
    pub due_at: Timestamp,
}

/// Splits an account item's key, `<tenant>#account#<account>`.
pub fn parse_account_pk(pk: &str) -> Option<(TenantId, String)> {
    let (tenant, rest) = pk.split_once('#')?;
    let account = rest.strip_prefix("account#")?;
    Some((TenantId::parse(tenant).ok()?, account.to_owned()))
}

impl Store {
    /// Up to `limit` accounts of `shard` due at or before `now`, the longest overdue first
    /// (one query of the sparse index; eventually consistent, so read the record after).
    pub async fn due_accounts(
        &self,
        shard: &str,
        now: Timestamp,
        limit: i32,
    ) -> Result<Vec<DueAccount>, StoreError> {
        let table = &self.tables.state;
        let out = self
            .client
            .query()
            .table_name(table)
            .index_name(DUE_INDEX)
            .key_condition_expression("sweep_shard = :shard AND due_at <= :now")
            .expression_attribute_values(":shard", AttributeValue::S(shard.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.millis().to_string()))
            .scan_index_forward(true)
            .limit(limit.max(1))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query", table, e))?;
        let mut due = Vec::with_capacity(out.items().len());
        for item in out.items() {
            let pk = item.get("pk").and_then(|v| v.as_s().ok());
            let due_at = item
                .get("due_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok());
            match (pk.and_then(|pk| parse_account_pk(pk)), due_at) {
                (Some((tenant, account)), Some(at)) => due.push(DueAccount {
                    tenant,
                    account,
                    due_at: Timestamp(at),
                }),
                _ => tracing::warn!(?pk, "an item of the due index is not an account; ignored"),
            }
        }
        Ok(due)
    }

    /// Moves an account's place in the due index (`None`: out of it), if the account record is
    /// still at `record_version` (else its writer has set the index attributes already).
    pub async fn set_due(
        &self,
        tenant: &TenantId,
        account: &str,
        record_version: u64,
        due: Option<Timestamp>,
    ) -> Result<Result<(), Conflict>, StoreError> {
        let table = &self.tables.state;
        let mut values = HashMap::from([(
            ":v".to_owned(),
            AttributeValue::N(record_version.to_string()),
        )]);
        let update = match due {
            Some(at) => {
                values.insert(
                    ":shard".to_owned(),
                    AttributeValue::S(sweep_shard(tenant, account)),
                );
                values.insert(
                    ":due".to_owned(),
                    AttributeValue::N(at.millis().to_string()),
                );
                "SET sweep_shard = :shard, due_at = :due"
            }
            None => "REMOVE sweep_shard, due_at",
        };
        match self
            .client
            .update_item()
            .table_name(table)
            .key(
                "pk",
                AttributeValue::S(record_pk(tenant, RecordKind::Account, account)),
            )
            .update_expression(update)
            .condition_expression("version = :v")
            .set_expression_attribute_values(Some(values))
            .send()
            .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pql_engine::time::MS_PER_DAY;

    #[test]
    fn shards_are_stable_and_in_range() {
        let tenant = TenantId::parse("acme").unwrap();
        let shard = sweep_shard(&tenant, "a1");
        assert_eq!(shard, sweep_shard(&tenant, "a1"));
        assert!(all_shards().contains(&shard));
        let spread: std::collections::BTreeSet<String> = (0..200)
            .map(|i| sweep_shard(&tenant, &format!("acct-{i}")))
            .collect();
        assert_eq!(spread.len(), SWEEP_SHARDS as usize);
    }

    #[test]
    fn account_keys_parse() {
        let (tenant, account) = parse_account_pk("acme#account#a#1").unwrap();
        assert_eq!((tenant.as_str(), account.as_str()), ("acme", "a#1"));
        assert_eq!(parse_account_pk("acme#user#u1"), None);
    }

    #[test]
    fn decay_recheck_is_a_day() {
        assert_eq!(
            Timestamp(0).plus_days(DECAY_RECHECK_DAYS),
            Timestamp(MS_PER_DAY)
        );
    }
}
