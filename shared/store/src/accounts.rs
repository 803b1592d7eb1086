//! Accounts as the admin API shows them: the lifecycle (alerts table, `sk = 0`), the current
//! decision (the account record of the state table evaluated with the active definition) and
//! the alerts (`sk >= 1`).
//!
//! **Listing is admin-only and bounded.** The alerts table's key is `pk = "<tenant>#<account>"`,
//! so "all accounts of a tenant in stage S" has no key to query: [`Store::list_lifecycles`] is a
//! paginated `Scan` filtered on `tenant`, `sk = 0` and `stage`, reading at most
//! [`MAX_SCANNED_PER_PAGE`] items per call and returning a cursor to go on. Never call it from a
//! hot path. At scale the table wants a GSI (hash `tenant`, range `stage`, projecting `account`,
//! `qualifications`, `updated_at`) on the lifecycle items; listing then becomes one `Query`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use pql_engine::{Lifecycle, Stage};

use crate::alerts::LIFECYCLE_SK;
use crate::tenants::TenantId;
use crate::{Store, StoreError};

/// The most lifecycle items one listing call examines (a page may hold fewer matches: follow
/// the cursor).
pub const MAX_SCANNED_PER_PAGE: i32 = 1000;

/// An account's lifecycle as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleItem {
    pub account: String,
    pub lifecycle: Lifecycle,
    pub updated_at: Option<String>,
}

/// A page of a listing and where the next one starts (`None`: the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Parses a stage name (`signed_up`, `activated`, `pql`, ...).
pub fn parse_stage(text: &str) -> Result<Stage, String> {
    Stage::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| {
            let all: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "`{text}` is not a stage (allowed: one of {})",
                all.join(", ")
            )
        })
}

fn encode_cursor(key: &HashMap<String, AttributeValue>) -> Option<String> {
    let pk = key.get("pk")?.as_s().ok()?;
    let sk = key.get("sk")?.as_n().ok()?;
    Some(hex::encode(format!("{sk}#{pk}")))
}

fn decode_cursor(
    tenant: &TenantId,
    cursor: &str,
) -> Result<HashMap<String, AttributeValue>, String> {
    let bad = || format!("`{cursor}` is not a cursor this API returned");
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (sk, pk) = text.split_once('#').ok_or_else(bad)?;
    sk.parse::<u64>().map_err(|_| bad())?;
    if !pk.starts_with(&format!("{tenant}#")) {
        return Err(bad());
    }
    Ok(HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::N(sk.to_owned())),
    ]))
}

impl Store {
    /// One page of the tenant's account lifecycles, optionally in one stage. Admin-only: a
    /// bounded, paginated scan (see the module documentation). `cursor` is a `next` returned
    /// before; a bad one is an `Err(String)` for the caller to report.
    pub async fn list_lifecycles(
        &self,
        tenant: &TenantId,
        stage: Option<Stage>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Result<Page<LifecycleItem>, String>, StoreError> {
        let mut start = match cursor.map(|c| decode_cursor(tenant, c)).transpose() {
            Ok(start) => start,
            Err(e) => return Ok(Err(e)),
        };
        let table = &self.tables.alerts;
        let mut filter = "tenant = :t AND sk = :sk".to_owned();
        let mut values = HashMap::from([
            (":t".to_owned(), AttributeValue::S(tenant.to_string())),
            (
                ":sk".to_owned(),
                AttributeValue::N(LIFECYCLE_SK.to_string()),
            ),
        ]);
        if let Some(stage) = stage {
            filter.push_str(" AND stage = :stage");
            values.insert(":stage".into(), AttributeValue::S(stage.as_str().into()));
        }
        let mut items = Vec::new();
        let mut scanned = 0i32;
        loop {
            let budget = (MAX_SCANNED_PER_PAGE - scanned).max(1);
            let out = self
                .client
                .scan()
                .table_name(table)
                .filter_expression(&filter)
                .set_expression_attribute_values(Some(values.clone()))
                .limit(budget)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Scan", table, e))?;
            scanned += out.scanned_count();
            for item in out.items() {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
                let account = text("account").cloned().unwrap_or_default();
                let lifecycle = text("lifecycle")
                    .and_then(|l| serde_json::from_str(l).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        table: table.clone(),
                        key: format!("{tenant}#{account}/0"),
                        reason: "no readable `lifecycle`".into(),
                    })?;
                items.push(LifecycleItem {
                    account,
                    lifecycle,
                    updated_at: text("updated_at").cloned(),
                });
            }
            start = out.last_evaluated_key;
            if start.is_none() || items.len() >= limit || scanned >= MAX_SCANNED_PER_PAGE {
                break;
            }
        }
        // A page ends where the last item returned is: the cursor resumes after it.
        let next = if items.len() > limit {
            items.truncate(limit);
            let last = items.last().expect("limit >= 1");
            encode_cursor(&HashMap::from([
                (
                    "pk".to_owned(),
                    AttributeValue::S(crate::alerts::alerts_pk(tenant, &last.account)),
                ),
                ("sk".to_owned(), AttributeValue::N(LIFECYCLE_SK.to_string())),
            ]))
        } else {
            start.as_ref().and_then(encode_cursor)
        };
        items.sort_by(|a, b| a.account.cmp(&b.account));
        Ok(Ok(Page { items, next }))
    }
}

/// One stored account record, as a scan of the state table reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAccount {
    pub account: String,
    pub record: crate::Versioned<crate::AccountRecord>,
}

/// A position in a scan of the state table: its last evaluated key. With a `Limit`, that is
/// the last item *examined*, which may be a user record or another tenant's item (the table
/// is shared), so a cursor is for the store's own callers (previews, re-evaluation jobs),
/// never shown to a tenant.
pub(crate) fn encode_scan_cursor(key: &HashMap<String, AttributeValue>) -> Option<String> {
    Some(hex::encode(key.get("pk")?.as_s().ok()?))
}

pub(crate) fn decode_scan_cursor(cursor: &str) -> Result<AttributeValue, String> {
    let bad = || format!("`{cursor}` is not a cursor of a state table scan");
    let pk = String::from_utf8(hex::decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    if pk.is_empty() {
        return Err(bad());
    }
    Ok(AttributeValue::S(pk))
}

impl Store {
    /// One page of the tenant's account records (state table), examining at most
    /// `max_scanned` items: a bounded, paginated `Scan` filtered on `tenant` and `kind`, for
    /// admin work only (previews, re-evaluation jobs), never a hot path. `next` resumes after
    /// the last item examined (`None`: the end). A bad cursor is an `Err(String)`.
    pub async fn scan_account_records(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        max_scanned: i32,
    ) -> Result<Result<Page<StoredAccount>, String>, StoreError> {
        let mut start = match cursor.map(decode_scan_cursor).transpose() {
            Ok(start) => start.map(|pk| HashMap::from([("pk".to_owned(), pk)])),
            Err(e) => return Ok(Err(e)),
        };
        let table = &self.tables.state;
        let mut items = Vec::new();
        let mut scanned = 0i32;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .filter_expression("tenant = :t AND kind = :k")
                .expression_attribute_values(":t", AttributeValue::S(tenant.to_string()))
                .expression_attribute_values(":k", AttributeValue::S("account".into()))
                .limit((max_scanned - scanned).max(1))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Scan", table, e))?;
            scanned += out.scanned_count();
            for item in out.items() {
                let pk = item
                    .get("pk")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                let corrupt = |reason: String| StoreError::Corrupt {
                    table: table.clone(),
                    key: pk.clone(),
                    reason,
                };
                let account = item
                    .get("id")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .ok_or_else(|| corrupt("no `id`".into()))?;
                let version = item
                    .get("version")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| corrupt("no `version`".into()))?;
                let body = item
                    .get("body")
                    .and_then(|v| v.as_b().ok())
                    .ok_or_else(|| corrupt("no `body`".into()))?;
                let value = crate::records::decode_body(body.as_ref()).map_err(corrupt)?;
                items.push(StoredAccount {
                    account,
                    record: crate::Versioned { value, version },
                });
            }
            start = out.last_evaluated_key;
            if start.is_none() || scanned >= max_scanned {
                break;
            }
        }
        Ok(Ok(Page {
            items,
            next: start.as_ref().and_then(encode_scan_cursor),
        }))
    }
}
