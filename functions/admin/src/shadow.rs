//! Shadow mode over the API: `POST /v1/definitions/{v}/shadow` starts judging a version
//! beside the active one on live changes (the qualify function stores its decisions, never
//! alerting), `DELETE` stops it, `GET /v1/definitions/{v}/shadow/report` compares the two
//! ([`pql_store::shadow`]).

use http::StatusCode;
use lambda_http::{Body, Response};
use pql_engine::Timestamp;
use pql_store::shadow::{shadow_report, ShadowSetting};
use pql_store::tenants::TenantId;
use serde_json::json;

use crate::error::{json_response, AdminError};
use crate::App;

/// The most shadow decisions a report reads (a bounded scan; `truncated` says when more).
pub const MAX_REPORT_DECISIONS: usize = 5000;

impl App {
    pub(crate) async fn start_shadow(
        &self,
        tenant: &TenantId,
        version: &str,
        author: String,
    ) -> Result<Response<Body>, AdminError> {
        let store = self.store();
        store
            .definition_version(tenant, version)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("definition version `{version}`")))?;
        let active = store
            .definition_index(tenant)
            .await?
            .and_then(|i| i.active().map(str::to_owned));
        if active.as_deref() == Some(version) {
            return Err(AdminError::Conflict(format!(
                "`{version}` is the active version: shadow a version that is not active"
            )));
        }
        let setting = ShadowSetting {
            version: version.to_owned(),
            author,
            started_at: Timestamp::now(),
        };
        let previous = store.shadow(tenant).await?;
        store.set_shadow(tenant, &setting).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "shadow": setting.version,
                "author": setting.author,
                "started_at": setting.started_at.to_rfc3339(),
                "replaced": previous.map(|p| p.version),
                "active": active,
            }),
        ))
    }

    pub(crate) async fn stop_shadow(
        &self,
        tenant: &TenantId,
        version: &str,
    ) -> Result<Response<Body>, AdminError> {
        if !self.store().clear_shadow(tenant, version).await? {
            return Err(AdminError::NotFound(format!(
                "`{version}` is not the version this tenant shadows"
            )));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({ "stopped": version }),
        ))
    }

    pub(crate) async fn shadow_report(
        &self,
        tenant: &TenantId,
        version: &str,
    ) -> Result<Response<Body>, AdminError> {
        let store = self.store();
        let setting = store.shadow(tenant).await?;
        let mut decisions = Vec::new();
        let mut cursor = None;
        let truncated = loop {
            let (page, next) = store
                .shadow_decisions(tenant, version, cursor, 1000)
                .await?;
            decisions.extend(page.items);
            cursor = next;
            if cursor.is_none() {
                break false;
            }
            if decisions.len() >= MAX_REPORT_DECISIONS {
                break true;
            }
        };
        decisions.truncate(MAX_REPORT_DECISIONS);
        let comparison = shadow_report(version, &decisions);
        let since = decisions.iter().map(|d| d.at).min();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "shadow_version": version,
                "shadowing": setting.as_ref().is_some_and(|s| s.version == version),
                "started_at": setting.filter(|s| s.version == version).map(|s| s.started_at.to_rfc3339()),
                "accounts": decisions.len(),
                "truncated": truncated,
                "earliest_decision": since.map(|t| t.to_rfc3339()),
                "comparison": comparison,
            }),
        ))
    }
}
