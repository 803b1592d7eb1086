//! Shadow mode: a draft version judged beside the active one on live account changes,
//! recorded and never alerting, so growth teams see what it would have decided.
//!
//! Layout:
//!
//! * tenants table, `pk = "shadow#<tenant>"`: the shadowed `version`, `author`, `started_at`.
//!   Set by the admin API; one per tenant (setting another replaces it; deleting stops it).
//! * state table, `pk = "<tenant>#shadow#<account>"` (`kind = "shadow"`, so the qualify
//!   function and the account scans ignore it): the latest [`ShadowDecision`] for the account,
//!   put by the qualify function after it observed a record version, conditional on being
//!   newer (`record_version`) or for another shadow version.
//!
//! The shadow verdict is made on the account's stored state, mapped to the shadowed version
//! when it tracks what that version needs ([`StateMap`]); otherwise the decision records why
//! not instead of guessing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use pql_engine::{verdict, Definition, StateMap, Timestamp, Verdict};
use serde::{Deserialize, Serialize};

use crate::accounts::Page;
use crate::preview::Comparison;
use crate::tenants::TenantId;
use crate::{AccountRecord, Store, StoreError};

fn setting_pk(tenant: &TenantId) -> String {
    format!("shadow#{tenant}")
}

fn decision_pk(tenant: &TenantId, account: &str) -> String {
    format!("{tenant}#shadow#{account}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The tenant's shadowed version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowSetting {
    pub version: String,
    pub author: String,
    pub started_at: Timestamp,
}

/// What the shadowed version decided on one account change, beside the active version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowDecision {
    pub account: String,
    pub shadow_version: String,
    pub active_version: String,
    /// The account record version observed, and the decision time (its event clock).
    pub record_version: u64,
    pub at: Timestamp,
    pub active: Verdict,
    /// The shadow verdict, or why the stored state cannot answer the shadowed version.
    pub shadow: Result<Verdict, Vec<String>>,
}

/// The shadow verdict beside the active one, for an account record that follows `active`.
pub fn shadow_decision(
    active: &Definition,
    shadow: &Definition,
    map: &Result<StateMap, Vec<String>>,
    account: &str,
    record: &AccountRecord,
    record_version: u64,
) -> ShadowDecision {
    let at = record.clock;
    let shadow_verdict = match map {
        Ok(map) => match map.map(shadow, &record.state) {
            Some(state) => Ok(verdict(shadow, &state, at)),
            None => Err(vec![format!(
                "the stored state follows `{}`, not the active version",
                record.state.definition_version
            )]),
        },
        Err(gaps) => Err(gaps.clone()),
    };
    ShadowDecision {
        account: account.to_owned(),
        shadow_version: shadow.version.clone(),
        active_version: active.version.clone(),
        record_version,
        at,
        active: verdict(active, &record.state, at),
        shadow: shadow_verdict,
    }
}

/// Compares shadow decisions of `version` with the active decisions made at the same time.
pub fn shadow_report(version: &str, decisions: &[ShadowDecision]) -> Comparison {
    let mut comparison = Comparison::default();
    for d in decisions.iter().filter(|d| d.shadow_version == version) {
        comparison.add(&d.account, Ok(d.active), d.shadow.clone());
    }
    comparison.finish();
    comparison
}

/// A shadowed definition ready to judge: the setting, the definition, and the mapping from
/// the active version's states (worked out once per active version).
#[derive(Debug, Clone)]
pub struct Shadow {
    pub definition: Arc<Definition>,
    pub map: Mapping,
}

type Entry = (Instant, Option<(String, Arc<Definition>)>);
/// How a state of one version reads as a state of the shadowed one (or why it cannot).
type Mapping = Arc<Result<StateMap, Vec<String>>>;

/// Each tenant's shadowed definition, read at most once per TTL (30 s, as definitions).
#[derive(Debug, Default)]
pub struct ShadowCache {
    entries: Mutex<HashMap<TenantId, Entry>>,
    maps: Mutex<HashMap<(String, String), Mapping>>,
}

impl ShadowCache {
    /// The tenant's shadow to judge beside `active` (`None`: no shadow, or it is the active
    /// version itself).
    pub async fn get(
        &self,
        store: &Store,
        tenant: &TenantId,
        active: &Definition,
    ) -> Result<Option<Shadow>, StoreError> {
        let cached = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .get(tenant)
                .filter(|(at, _)| at.elapsed() < crate::definitions::DEFAULT_TTL)
                .map(|(_, d)| d.clone())
        };
        let definition = match cached {
            Some(d) => d,
            None => {
                let definition = match store.shadow(tenant).await? {
                    Some(setting) => store
                        .definition_version(tenant, &setting.version)
                        .await?
                        .map(|v| (setting.version, Arc::new(v.definition))),
                    None => None,
                };
                self.entries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(tenant.clone(), (Instant::now(), definition.clone()));
                definition
            }
        };
        let Some((version, definition)) = definition else {
            return Ok(None);
        };
        if version == active.version {
            return Ok(None);
        }
        let map = self
            .maps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((active.version.clone(), version))
            .or_insert_with(|| Arc::new(StateMap::between(active, &definition)))
            .clone();
        Ok(Some(Shadow { definition, map }))
    }
}

impl Store {
    pub async fn set_shadow(
        &self,
        tenant: &TenantId,
        setting: &ShadowSetting,
    ) -> Result<(), StoreError> {
        let table = &self.tables.tenants;
        self.client
            .put_item()
            .table_name(table)
            .item("pk", s(setting_pk(tenant)))
            .item("tenant_id", s(tenant.as_str()))
            .item("version", s(&setting.version))
            .item("author", s(&setting.author))
            .item("started_at", s(setting.started_at.to_rfc3339()))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem", table, e))?;
        Ok(())
    }

    /// Stops shadowing `version` (`false`: it was not the tenant's shadow).
    pub async fn clear_shadow(&self, tenant: &TenantId, version: &str) -> Result<bool, StoreError> {
        let table = &self.tables.tenants;
        match self
            .client
            .delete_item()
            .table_name(table)
            .key("pk", s(setting_pk(tenant)))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", s(version))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(StoreError::dynamo("DeleteItem", table, e)),
        }
    }

    pub async fn shadow(&self, tenant: &TenantId) -> Result<Option<ShadowSetting>, StoreError> {
        let Some(fetched) = self
            .get_consistent(&self.tables.tenants, &setting_pk(tenant))
            .await?
        else {
            return Ok(None);
        };
        let text = |name: &str| {
            fetched
                .string(name, &format!("no `{name}`"))
                .map(str::to_owned)
        };
        let started_at = Timestamp::parse(&text("started_at")?)
            .map_err(|e| fetched.corrupt(format!("`started_at`: {e}")))?;
        Ok(Some(ShadowSetting {
            version: text("version")?,
            author: text("author")?,
            started_at,
        }))
    }

    /// Stores a shadow decision unless a newer one (a later record version of the same
    /// shadow version) is there. Returns whether it was written.
    pub async fn put_shadow_decision(
        &self,
        tenant: &TenantId,
        decision: &ShadowDecision,
    ) -> Result<bool, StoreError> {
        let table = &self.tables.state;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .item("pk", s(decision_pk(tenant, &decision.account)))
            .item("tenant", s(tenant.as_str()))
            .item("kind", s("shadow"))
            .item("id", s(&decision.account))
            .item("shadow_version", s(&decision.shadow_version))
            .item(
                "record_version",
                AttributeValue::N(decision.record_version.to_string()),
            )
            .item(
                "decision",
                s(serde_json::to_string(decision).expect("a decision serialises")),
            )
            .condition_expression(
                "attribute_not_exists(pk) OR shadow_version <> :v OR record_version < :rv",
            )
            .expression_attribute_values(":v", s(&decision.shadow_version))
            .expression_attribute_values(
                ":rv",
                AttributeValue::N(decision.record_version.to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(StoreError::dynamo("PutItem", table, e)),
        }
    }

    /// One page of the tenant's shadow decisions of `version` (a bounded, paginated scan,
    /// admin only, at most `max_scanned` items examined).
    pub async fn shadow_decisions(
        &self,
        tenant: &TenantId,
        version: &str,
        cursor: Option<HashMap<String, AttributeValue>>,
        max_scanned: i32,
    ) -> Result<
        (
            Page<ShadowDecision>,
            Option<HashMap<String, AttributeValue>>,
        ),
        StoreError,
    > {
        let table = &self.tables.state;
        let out = self
            .client
            .scan()
            .table_name(table)
            .filter_expression("tenant = :t AND kind = :k AND shadow_version = :v")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":k", s("shadow"))
            .expression_attribute_values(":v", s(version))
            .limit(max_scanned.max(1))
            .set_exclusive_start_key(cursor)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Scan", table, e))?;
        let mut items = Vec::new();
        for item in out.items() {
            let pk = item
                .get("pk")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            let text = item
                .get("decision")
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    table: table.clone(),
                    key: pk.clone(),
                    reason: "no `decision`".into(),
                })?;
            items.push(serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                table: table.clone(),
                key: pk,
                reason: format!("`decision`: {e}"),
            })?);
        }
        Ok((Page { items, next: None }, out.last_evaluated_key))
    }
}
