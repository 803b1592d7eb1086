//! Tenants, their keys and their active definition.
//!
//! A raw key is never stored: items are keyed by its SHA-256, so a read of the table does not
//! reveal a key, and authenticating a request is one `GetItem`.

use std::fmt;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use pql_engine::Definition;
use sha2::{Digest, Sha256};

use crate::{Store, StoreError};

/// A tenant id: 1 to 64 characters of `a-z`, `0-9`, `-` and `_` (it is part of every key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(id: &str) -> Result<TenantId, String> {
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(TenantId(id.to_owned()))
        } else {
            Err(format!(
                "`{id}` is not a tenant id (allowed: 1 to 64 characters of a-z, 0-9, `-` and `_`)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 of a key, hex: what is stored instead of the key.
pub fn key_hash(raw_key: &str) -> String {
    hex::encode(Sha256::digest(raw_key.as_bytes()))
}

fn write_key_pk(raw_key: &str) -> String {
    format!("writekey#{}", key_hash(raw_key))
}

fn admin_key_pk(raw_key: &str) -> String {
    format!("adminkey#{}", key_hash(raw_key))
}

pub(crate) fn tenant_pk(tenant: &TenantId) -> String {
    format!("tenant#{tenant}")
}

impl Store {
    /// Creates (or replaces the definition of) a tenant and registers its write key. The key
    /// item is only created when absent, so a key can never be moved to another tenant.
    pub async fn put_tenant(
        &self,
        tenant: &TenantId,
        write_key: &str,
        definition: &Definition,
    ) -> Result<(), StoreError> {
        let table = &self.tables.tenants;
        let spec = serde_json::to_string(&definition.spec).expect("a definition always serialises");
        let tenant_item = Put::builder()
            .table_name(table)
            .item("pk", AttributeValue::S(tenant_pk(tenant)))
            .item("tenant_id", AttributeValue::S(tenant.to_string()))
            .item("definition", AttributeValue::S(spec))
            .item(
                "definition_version",
                AttributeValue::S(definition.version.clone()),
            )
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let key_item = Put::builder()
            .table_name(table)
            .item("pk", AttributeValue::S(write_key_pk(write_key)))
            .item("tenant_id", AttributeValue::S(tenant.to_string()))
            .condition_expression("attribute_not_exists(pk) OR tenant_id = :t")
            .expression_attribute_values(":t", AttributeValue::S(tenant.to_string()))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(tenant_item).build())
            .transact_items(TransactWriteItem::builder().put(key_item).build())
            .send()
            .await
            .map_err(|e| StoreError::dynamo("TransactWriteItems", table, e))?;
        Ok(())
    }

    /// The tenant a write key belongs to, if any.
    pub async fn tenant_for_write_key(
        &self,
        raw_key: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        self.tenant_for_key_item(write_key_pk(raw_key), "writekey#…")
            .await
    }

    /// Registers an admin key (for the admin API) for an existing tenant: `adminkey#<sha256>`
    /// items, created only when absent (or already the same tenant's), so a key can never be
    /// moved to another tenant. Write keys and admin keys live under different prefixes: one
    /// never authenticates as the other.
    pub async fn put_admin_key(&self, tenant: &TenantId, raw_key: &str) -> Result<(), StoreError> {
        let table = &self.tables.tenants;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S(admin_key_pk(raw_key)))
            .item("tenant_id", AttributeValue::S(tenant.to_string()))
            .condition_expression("attribute_not_exists(pk) OR tenant_id = :t")
            .expression_attribute_values(":t", AttributeValue::S(tenant.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(aws_sdk_dynamodb::error::SdkError::ServiceError(e))
                if e.err().is_conditional_check_failed_exception() =>
            {
                Err(StoreError::Config(
                    "this admin key already belongs to another tenant".into(),
                ))
            }
            Err(e) => Err(StoreError::dynamo("PutItem", table, e)),
        }
    }

    /// The tenant an admin key belongs to, if any.
    pub async fn tenant_for_admin_key(
        &self,
        raw_key: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        self.tenant_for_key_item(admin_key_pk(raw_key), "adminkey#…")
            .await
    }

    async fn tenant_for_key_item(
        &self,
        pk: String,
        shown: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        let table = &self.tables.tenants;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(pk))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", table, e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let id = item
            .get("tenant_id")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| StoreError::Corrupt {
                table: table.clone(),
                key: shown.into(),
                reason: "no tenant_id".into(),
            })?;
        TenantId::parse(id)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt {
                table: table.clone(),
                key: shown.into(),
                reason,
            })
    }

    /// The tenant's active definition.
    pub async fn tenant_definition(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Definition>, StoreError> {
        let table = &self.tables.tenants;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", table, e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            table: table.clone(),
            key: tenant_pk(tenant),
            reason,
        };
        let source = item
            .get("definition")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| corrupt("no definition".into()))?;
        Definition::from_json("stored definition", source)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }
}
