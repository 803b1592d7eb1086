//! Versioned definitions for the admin API, in the tenants table (hash key `pk` only, so no
//! change to the template):
//!
//! * `pk = "definition#<tenant>#<version>"`: one immutable version (`version` is the engine's
//!   content hash, so pushing the same content twice finds the existing version): `definition`
//!   (the spec as JSON), `name`, `author`, `message`, `created_at`. Written once, with
//!   `attribute_not_exists(pk)`, never updated.
//! * `pk = "definitions#<tenant>"`: the tenant's index, `index` (JSON: every version's summary
//!   in push order, the activation stack, the activation history) and `rev`, a number for
//!   optimistic concurrency. One item keeps listing to one `GetItem`; at ~250 bytes a version
//!   it holds well over a thousand versions (DynamoDB's item limit is 400 KB).
//! * `pk = "tenant#<tenant>"` (see [`crate::tenants`]) keeps the **active** definition, which the
//!   pipeline reads through [`crate::definitions::DefinitionCache`]: activating a version
//!   rewrites it, in the same transaction as the index.
//!
//! A tenant created before versions existed (or by [`Store::put_tenant`]) gets its index lazily:
//! the first read records its current definition as the first version.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use pql_engine::definition::spec::DefinitionSpec;
use pql_engine::{Definition, Timestamp};
use serde::{Deserialize, Serialize};

use crate::tenants::{tenant_pk, TenantId};
use crate::{Store, StoreError};

/// How often a write of the index is retried after losing a race.
const MAX_ATTEMPTS: u32 = 8;

/// The author recorded for the version a tenant already had when its index was created.
pub const INITIAL_AUTHOR: &str = "pql";

fn version_pk(tenant: &TenantId, version: &str) -> String {
    format!("definition#{tenant}#{version}")
}

fn index_pk(tenant: &TenantId) -> String {
    format!("definitions#{tenant}")
}

/// Whether `text` looks like an engine version id (`v` and 12 lowercase hex digits).
pub fn is_version_id(text: &str) -> bool {
    text.len() == 13
        && text.starts_with('v')
        && text[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The canonical text of a definition: its spec as pretty JSON (fields in schema order; comments
/// and layout of the source do not survive). Its hash is the version id; diffs compare it.
pub fn canonical_text(spec: &DefinitionSpec) -> String {
    let mut text = serde_json::to_string_pretty(spec).expect("a definition always serialises");
    text.push('\n');
    text
}

/// What the index keeps about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    pub version: String,
    pub name: String,
    pub author: String,
    pub message: String,
    pub created_at: Timestamp,
}

/// One activation or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationEntry {
    pub version: String,
    pub author: String,
    pub at: Timestamp,
    /// `activate` or `rollback`.
    pub action: String,
}

/// A tenant's definition versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefinitionIndex {
    /// Every version, oldest first.
    pub versions: Vec<VersionSummary>,
    /// Activated versions, the active one last; a rollback pops the active one.
    pub stack: Vec<String>,
    /// What was activated or rolled back, when and by whom, oldest first.
    pub history: Vec<ActivationEntry>,
}

impl DefinitionIndex {
    pub fn active(&self) -> Option<&str> {
        self.stack.last().map(String::as_str)
    }

    pub fn summary(&self, version: &str) -> Option<&VersionSummary> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// One stored version, with its definition.
#[derive(Debug, Clone)]
pub struct DefinitionVersion {
    pub summary: VersionSummary,
    pub definition: Definition,
}

/// What an activation or a rollback did.
#[derive(Debug, Clone, PartialEq)]
pub struct Activated {
    pub active: String,
    /// The version active before (`None`: there was none).
    pub previous: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tenant `{0}` does not exist")]
    NoTenant(String),
    #[error("version `{0}` does not exist for this tenant")]
    NoSuchVersion(String),
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(String),
    #[error("the definition index of `{0}` kept changing: gave up after {MAX_ATTEMPTS} attempts")]
    Contended(String),
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn is_condition_failure(error: &TransactWriteItemsError) -> bool {
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
    /// The tenant's versions (`None`: no such tenant). Creates the index from the tenant's
    /// current definition the first time.
    pub async fn definition_index(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<DefinitionIndex>, StoreError> {
        Ok(self.load_index(tenant).await?.map(|(index, _)| index))
    }

    /// One version (`None`: not a version of this tenant).
    pub async fn definition_version(
        &self,
        tenant: &TenantId,
        version: &str,
    ) -> Result<Option<DefinitionVersion>, StoreError> {
        let table = &self.tables.tenants;
        let pk = version_pk(tenant, version);
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(&pk))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", table, e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            table: table.clone(),
            key: pk.clone(),
            reason,
        };
        let text = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .ok_or_else(|| corrupt(format!("no `{name}`")))
        };
        let definition = Definition::from_json("stored definition", &text("definition")?)
            .map_err(|e| corrupt(e.to_string()))?;
        let created_at = Timestamp::parse(&text("created_at")?)
            .map_err(|e| corrupt(format!("`created_at`: {e}")))?;
        Ok(Some(DefinitionVersion {
            summary: VersionSummary {
                version: definition.version.clone(),
                name: definition.name.clone(),
                author: text("author")?,
                message: text("message")?,
                created_at,
            },
            definition,
        }))
    }

    /// Stores a new version (not activated). Returns its summary and whether it is new: the
    /// same content pushed again is the existing version (its author and message stay).
    pub async fn push_definition(
        &self,
        tenant: &TenantId,
        definition: &Definition,
        author: &str,
        message: &str,
        now: Timestamp,
    ) -> Result<(VersionSummary, bool), VersionError> {
        let summary = VersionSummary {
            version: definition.version.clone(),
            name: definition.name.clone(),
            author: author.to_owned(),
            message: message.to_owned(),
            created_at: now,
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut index, rev)) = self.load_index(tenant).await? else {
                return Err(VersionError::NoTenant(tenant.to_string()));
            };
            if let Some(existing) = index.summary(&definition.version) {
                return Ok((existing.clone(), false));
            }
            // The version item first (idempotent: same content, same key), then the index.
            self.put_version_item(tenant, definition, &summary).await?;
            index.versions.push(summary.clone());
            if self.put_index(tenant, &index, rev, None).await? {
                return Ok((summary, true));
            }
        }
        Err(VersionError::Contended(tenant.to_string()))
    }

    /// Makes `version` the tenant's active definition (what the pipeline reads).
    pub async fn activate_definition(
        &self,
        tenant: &TenantId,
        version: &str,
        author: &str,
        now: Timestamp,
    ) -> Result<Activated, VersionError> {
        let Some(stored) = self.definition_version(tenant, version).await? else {
            return Err(VersionError::NoSuchVersion(version.to_owned()));
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut index, rev)) = self.load_index(tenant).await? else {
                return Err(VersionError::NoTenant(tenant.to_string()));
            };
            let previous = index.active().map(str::to_owned);
            index.stack.push(version.to_owned());
            index.history.push(ActivationEntry {
                version: version.to_owned(),
                author: author.to_owned(),
                at: now,
                action: "activate".into(),
            });
            if self
                .put_index(tenant, &index, rev, Some(&stored.definition))
                .await?
            {
                return Ok(Activated {
                    active: version.to_owned(),
                    previous,
                });
            }
        }
        Err(VersionError::Contended(tenant.to_string()))
    }

    /// Activates the version that was active before the current one.
    pub async fn rollback_definition(
        &self,
        tenant: &TenantId,
        author: &str,
        now: Timestamp,
    ) -> Result<Activated, VersionError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some((mut index, rev)) = self.load_index(tenant).await? else {
                return Err(VersionError::NoTenant(tenant.to_string()));
            };
            if index.stack.len() < 2 {
                return Err(VersionError::NothingToRollBack(match index.active() {
                    Some(v) => format!("`{v}` is the only version ever activated"),
                    None => "no version was ever activated".into(),
                }));
            }
            let current = index.stack.pop().expect("two or more");
            let target = index.active().expect("one or more").to_owned();
            let Some(stored) = self.definition_version(tenant, &target).await? else {
                return Err(VersionError::NoSuchVersion(target));
            };
            index.history.push(ActivationEntry {
                version: target.clone(),
                author: author.to_owned(),
                at: now,
                action: "rollback".into(),
            });
            if self
                .put_index(tenant, &index, rev, Some(&stored.definition))
                .await?
            {
                return Ok(Activated {
                    active: target,
                    previous: Some(current),
                });
            }
        }
        Err(VersionError::Contended(tenant.to_string()))
    }

    async fn put_version_item(
        &self,
        tenant: &TenantId,
        definition: &Definition,
        summary: &VersionSummary,
    ) -> Result<(), StoreError> {
        let table = &self.tables.tenants;
        let spec = serde_json::to_string(&definition.spec).expect("a definition always serialises");
        let result = self
            .client
            .put_item()
            .table_name(table)
            .item("pk", s(version_pk(tenant, &definition.version)))
            .item("tenant_id", s(tenant.as_str()))
            .item("version", s(&definition.version))
            .item("name", s(&definition.name))
            .item("definition", s(spec))
            .item("author", s(&summary.author))
            .item("message", s(&summary.message))
            .item("created_at", s(summary.created_at.to_rfc3339()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Immutable: the same content is already stored under this key.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(())
            }
            Err(e) => Err(StoreError::dynamo("PutItem", table, e)),
        }
    }

    /// The index and its `rev` (0: none stored yet), created from the tenant's current
    /// definition when missing. `None`: no such tenant.
    async fn load_index(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(DefinitionIndex, u64)>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let fetched = self
                .get_consistent(&self.tables.tenants, &index_pk(tenant))
                .await?;
            if let Some(fetched) = fetched {
                let index: DefinitionIndex = fetched.json("index")?;
                let rev = fetched.number("rev", "no `rev`")?;
                return Ok(Some((index, rev)));
            }
            // No index yet: the tenant's current definition becomes its first version.
            let Some(current) = self.tenant_definition(tenant).await? else {
                return Ok(None);
            };
            let now = Timestamp::now();
            let summary = VersionSummary {
                version: current.version.clone(),
                name: current.name.clone(),
                author: INITIAL_AUTHOR.into(),
                message: "the definition the tenant had before versions were recorded".into(),
                created_at: now,
            };
            self.put_version_item(tenant, &current, &summary).await?;
            let index = DefinitionIndex {
                versions: vec![summary],
                stack: vec![current.version.clone()],
                history: vec![ActivationEntry {
                    version: current.version.clone(),
                    author: INITIAL_AUTHOR.into(),
                    at: now,
                    action: "activate".into(),
                }],
            };
            if self.put_index(tenant, &index, 0, None).await? {
                return Ok(Some((index, 1)));
            }
        }
        Err(StoreError::Config(format!(
            "the definition index of `{tenant}` kept changing"
        )))
    }

    /// Writes the index if it is still at `rev` (0: absent); with `activate`, sets the tenant's
    /// active definition in the same transaction. `false`: someone else wrote it first.
    async fn put_index(
        &self,
        tenant: &TenantId,
        index: &DefinitionIndex,
        rev: u64,
        activate: Option<&Definition>,
    ) -> Result<bool, StoreError> {
        let table = &self.tables.tenants;
        let (condition, values) = if rev == 0 {
            ("attribute_not_exists(pk)", None)
        } else {
            (
                "rev = :rev",
                Some(HashMap::from([(
                    ":rev".to_owned(),
                    AttributeValue::N(rev.to_string()),
                )])),
            )
        };
        let put = Put::builder()
            .table_name(table)
            .item("pk", s(index_pk(tenant)))
            .item("tenant_id", s(tenant.as_str()))
            .item(
                "index",
                s(serde_json::to_string(index).expect("an index serialises")),
            )
            .item("rev", AttributeValue::N((rev + 1).to_string()))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build());
        if let Some(definition) = activate {
            let spec =
                serde_json::to_string(&definition.spec).expect("a definition always serialises");
            let update = Update::builder()
                .table_name(table)
                .key("pk", s(tenant_pk(tenant)))
                .update_expression("SET #d = :d, definition_version = :v")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#d", "definition")
                .expression_attribute_values(":d", s(spec))
                .expression_attribute_values(":v", s(&definition.version))
                .build()
                .map_err(|e| StoreError::Config(e.to_string()))?;
            request = request.transact_items(TransactWriteItem::builder().update(update).build());
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if is_condition_failure(e.err()) => Ok(false),
            Err(e) => Err(StoreError::dynamo("TransactWriteItems", table, e)),
        }
    }
}
