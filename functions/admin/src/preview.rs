//! `POST /v1/definitions/preview`: what activating a draft would change, account by account,
//! judged now with the pure engine ([`pql_store::preview`]). Reads at most
//! [`MAX_PREVIEW_ACCOUNTS`] account records (a bounded scan; `truncated` says when there were
//! more) and writes nothing.

use http::StatusCode;
use lambda_http::{Body, Response};
use pql_engine::{Definition, Timestamp};
use pql_store::definition_versions::is_version_id;
use pql_store::preview::{Comparison, Judge};
use pql_store::tenants::TenantId;
use serde::Deserialize;
use serde_json::json;

use crate::error::{json_response, AdminError};
use crate::App;

/// The most account records one preview reads.
pub const MAX_PREVIEW_ACCOUNTS: usize = 5000;
/// Items one scan call examines.
const SCAN_PAGE: i32 = 1000;

/// The draft: a definition as `POST /v1/definitions` takes it, or a pushed version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewBody {
    definition: Option<Box<serde_json::value::RawValue>>,
    source: Option<String>,
    format: Option<String>,
    file: Option<String>,
    version: Option<String>,
}

/// A definition from `definition` (JSON object) or `source` (TOML / JSON text with `format`).
pub(crate) fn compile(
    definition: Option<&serde_json::value::RawValue>,
    source: Option<&str>,
    format: Option<&str>,
    file: Option<&str>,
) -> Result<Definition, AdminError> {
    match (definition, source) {
        (Some(json), None) => {
            if format.is_some() {
                return Err(AdminError::BadRequest(
                    "`format` goes with `source`, not with `definition`".into(),
                ));
            }
            Definition::from_json(file.unwrap_or("definition"), json.get())
                .map_err(AdminError::InvalidDefinition)
        }
        (None, Some(source)) => {
            let format = format.unwrap_or("toml");
            let file = file.map_or_else(|| format!("definition.{format}"), str::to_owned);
            match format {
                "toml" => Definition::from_toml(&file, source),
                "json" => Definition::from_json(&file, source),
                other => {
                    return Err(AdminError::BadRequest(format!(
                        "`format` is `{other}` (allowed: `toml` or `json`)"
                    )))
                }
            }
            .map_err(AdminError::InvalidDefinition)
        }
        _ => Err(AdminError::BadRequest(
            "send exactly one of `definition` (a JSON object), `source` (TOML or JSON text, with `format`) or `version` (a pushed version id)".into(),
        )),
    }
}

impl App {
    pub(crate) async fn preview(
        &self,
        tenant: &TenantId,
        body: PreviewBody,
    ) -> Result<Response<Body>, AdminError> {
        let store = self.store();
        let draft = match body.version {
            Some(version) => {
                if body.definition.is_some() || body.source.is_some() || body.format.is_some() {
                    return Err(AdminError::BadRequest(
                        "send either `version` or a definition (`definition` / `source`), not both"
                            .into(),
                    ));
                }
                if !is_version_id(&version) {
                    return Err(AdminError::BadRequest(format!(
                        "`version` is `{version}` (allowed: `v` and 12 hex digits, as `GET /v1/definitions` lists)"
                    )));
                }
                store
                    .definition_version(tenant, &version)
                    .await?
                    .ok_or_else(|| AdminError::NotFound(format!("definition version `{version}`")))?
                    .definition
            }
            None => compile(
                body.definition.as_deref(),
                body.source.as_deref(),
                body.format.as_deref(),
                body.file.as_deref(),
            )?,
        };
        let active = store.tenant_definition(tenant).await?.ok_or_else(|| {
            AdminError::NotFound(format!("tenant `{tenant}` has no active definition"))
        })?;
        let (draft_version, active_version) = (draft.version.clone(), active.version.clone());
        let mut judge = Judge::default();
        judge.add(draft);
        judge.add(active);
        let now = Timestamp::now();
        let mut comparison = Comparison::default();
        let mut read = 0usize;
        let mut cursor: Option<String> = None;
        let mut missing_versions: Vec<String> = Vec::new();
        loop {
            let page = store
                .scan_account_records(tenant, cursor.as_deref(), SCAN_PAGE)
                .await?
                .map_err(AdminError::BadRequest)?;
            cursor = page.next;
            let mut items = page.items;
            let room = MAX_PREVIEW_ACCOUNTS - read;
            if items.len() > room {
                // The accounts beyond the bound are not judged: say so.
                items.truncate(room);
                cursor = cursor.or(Some(String::new()));
            }
            for item in &items {
                let version = &item.record.value.state.definition_version;
                if !judge.knows(version) && !missing_versions.contains(version) {
                    match store.definition_version(tenant, version).await? {
                        Some(stored) => judge.add(stored.definition),
                        None => missing_versions.push(version.clone()),
                    }
                }
                // Decisions never go back in time: an account whose events run ahead of the
                // wall clock is judged at its own clock (as the sweep does).
                let at = now.max(item.record.value.clock);
                let state = &item.record.value.state;
                let before = judge.verdict(state, &active_version, at);
                let after = judge.verdict(state, &draft_version, at);
                comparison.add(&item.account, before, after);
            }
            read += items.len();
            if cursor.is_none() || read >= MAX_PREVIEW_ACCOUNTS {
                break;
            }
        }
        comparison.finish();
        let truncated = cursor.is_some();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "draft_version": draft_version,
                "active_version": active_version,
                "evaluated_at": now.to_rfc3339(),
                "accounts_read": read,
                "max_accounts": MAX_PREVIEW_ACCOUNTS,
                "truncated": truncated,
                "comparison": comparison,
            }),
        ))
    }
}
