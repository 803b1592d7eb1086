//! Re-evaluation of existing accounts after an activation or a rollback: started by the
//! admin function, run in chunks by the sweep ([`pql_store::reevaluation`]), and its progress
//! (`GET /v1/definitions/reevaluation`).

use http::StatusCode;
use lambda_http::{Body, Response};
use pql_engine::Timestamp;
use pql_store::definition_versions::Activated;
use pql_store::reevaluation::ReevaluationJob;
use pql_store::tenants::TenantId;
use serde_json::{json, Value};

use crate::error::{json_response, AdminError};
use crate::App;

/// The job as the API shows it, with its progress as a fraction: `total` and `progress` are
/// `null` while the job is still counting the accounts (it counts them as it goes, never in
/// the request that starts it). Scan cursors are the store's business and are not shown.
pub fn job_json(job: &ReevaluationJob) -> Value {
    let mut value = serde_json::to_value(job).expect("a job serialises");
    if let Some(map) = value.as_object_mut() {
        map.remove("cursor");
        map.remove("count_cursor");
    }
    value["state"] = json!(if job.finished() {
        "finished"
    } else {
        "running"
    });
    value["progress"] = match job.progress() {
        Some(progress) => json!((progress * 1000.0).round() / 1000.0),
        None => Value::Null,
    };
    for name in ["started_at", "updated_at", "finished_at"] {
        if let Some(ms) = value[name].as_i64() {
            value[name] = json!(Timestamp(ms).to_rfc3339());
        }
    }
    value
}

impl App {
    /// After an activation or a rollback changed the active version: the job that
    /// re-evaluates existing accounts under it (`None`: the version did not change).
    pub(crate) async fn start_reevaluation(
        &self,
        tenant: &TenantId,
        activated: &Activated,
        action: &str,
        now: Timestamp,
    ) -> Result<Option<Value>, AdminError> {
        if activated.previous.as_deref() == Some(activated.active.as_str()) {
            return Ok(None);
        }
        let job = self
            .store()
            .start_reevaluation(
                tenant,
                &activated.active,
                activated.previous.as_deref(),
                action,
                now,
            )
            .await?;
        Ok(Some(job_json(&job)))
    }

    pub(crate) async fn reevaluation_status(
        &self,
        tenant: &TenantId,
    ) -> Result<Response<Body>, AdminError> {
        let job = self.store().reevaluation(tenant).await?.ok_or_else(|| {
            AdminError::NotFound(
                "re-evaluation: none has run for this tenant (activating or rolling back a version starts one)".into(),
            )
        })?;
        Ok(json_response(StatusCode::OK, &job_json(&job.value)))
    }
}
