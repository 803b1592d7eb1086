//! Alerts over HTTP: sales feedback on an alert, and the tenant's deliveries.
//!
//! * `POST /v1/alerts/{account}/{sequence}/feedback` `{"outcome": "accepted" | "rejected" |
//!   "converted" | "lost", "reason": "...", "by": "..."}`: the outcome sales recorded, with the
//!   alert's definition version (what `pql alerts feedback` stores, through the same store
//!   function and checks). The account may contain `/` (as is, or as `%2F`). Repeating the
//!   stored outcome (same reason and author) changes nothing (`"changed": false`); another
//!   outcome replaces it (the latest wins).
//! * `GET /v1/alerts[?failed=true]`: every delivery of the tenant's alerts (only parked ones
//!   with `failed=true`) and the feedback recorded. A scan of the alerts table, as `pql alerts
//!   list`: an operator's request, not a hot path.

use std::collections::BTreeMap;

use http::StatusCode;
use lambda_http::{Body, Response};
use pql_store::deliveries::{
    check_feedback, DeliveryState, Feedback, FeedbackError, FEEDBACK_OUTCOMES,
};
use pql_store::tenants::TenantId;
use pql_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{json_response, AdminError};
use crate::handler::MAX_BODY_BYTES;

/// `POST /v1/alerts/{account}/{sequence}/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    outcome: String,
    reason: Option<String>,
    by: Option<String>,
}

/// `ACCOUNT/SEQUENCE` (the tenant is the admin key's).
fn parse_alert_id(id: &str) -> Result<(String, u32), AdminError> {
    let bad = |why: &str| {
        AdminError::BadRequest(format!(
            "`{id}` is not an alert id: {why} (expected ACCOUNT/SEQUENCE, e.g. POST /v1/alerts/globex/1/feedback)"
        ))
    };
    let (account, sequence) = id.rsplit_once('/').ok_or_else(|| bad("no sequence"))?;
    if account.is_empty() {
        return Err(bad("empty account"));
    }
    let sequence = sequence
        .parse::<u32>()
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| bad(&format!("the sequence `{sequence}` is not a number >= 1")))?;
    Ok((account.to_owned(), sequence))
}

fn feedback_json(f: &Feedback) -> Value {
    json!({
        "alert": format!("{}/{}/{}", f.tenant, f.account, f.sequence),
        "outcome": f.outcome,
        "reason": f.reason,
        "by": f.by,
        "at": f.at,
        "definition_version": f.definition_version,
    })
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// `POST /v1/alerts/{account}/{sequence}/feedback`.
pub async fn feedback(
    store: &Store,
    tenant: &TenantId,
    id: &str,
    body: &[u8],
) -> Result<Response<Body>, AdminError> {
    let (account, sequence) = parse_alert_id(id)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(AdminError::TooLarge {
            bytes: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::InvalidJson(
            "the body is empty (expected {\"outcome\": ..., \"reason\": ..., \"by\": ...})".into(),
        ));
    }
    let body: FeedbackBody =
        serde_json::from_slice(body).map_err(|e| AdminError::InvalidJson(e.to_string()))?;
    let outcome = body.outcome.trim().to_owned();
    let (reason, by) = (non_empty(body.reason), non_empty(body.by));
    check_feedback(&outcome, reason.as_deref(), by.as_deref()).map_err(|e| {
        AdminError::BadRequest(match e {
            FeedbackError::UnknownOutcome(o) => format!(
                "`outcome`: `{o}` is not an outcome (allowed: {})",
                FEEDBACK_OUTCOMES.join(", ")
            ),
            FeedbackError::ReasonRequired => "`reason`: required when `outcome` is `rejected` (why sales rejected it feeds the definition's review)".into(),
            FeedbackError::TooLong(field) => {
                format!("`{field}`: too long (allowed: at most 1,000 characters)")
            }
        })
    })?;
    let alert = store
        .alert(tenant, &account, sequence)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("alert `{account}/{sequence}`")))?;
    // The same outcome again (a retried request, a double click): nothing changes.
    if let Some(existing) = store.feedback(tenant, &account, sequence).await? {
        if existing.outcome == outcome && existing.reason == reason && existing.by == by {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"feedback": feedback_json(&existing), "changed": false}),
            ));
        }
    }
    let feedback = Feedback {
        tenant: tenant.clone(),
        account,
        sequence,
        outcome,
        reason,
        by,
        at: pql_engine::Timestamp::now().to_rfc3339(),
        definition_version: alert.definition_version.clone(),
    };
    store.put_feedback(&feedback).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"feedback": feedback_json(&feedback), "changed": true}),
    ))
}

/// `GET /v1/alerts[?failed=true]`.
pub async fn list(
    store: &Store,
    tenant: &TenantId,
    params: &BTreeMap<String, String>,
) -> Result<Response<Body>, AdminError> {
    if let Some(name) = params.keys().find(|k| k.as_str() != "failed") {
        return Err(AdminError::BadRequest(format!(
            "unknown query parameter `{name}` (allowed: failed)"
        )));
    }
    let failed = match params.get("failed").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "`failed={other}` (allowed: true or false)"
            )))
        }
    };
    let (deliveries, feedback) = store.all_deliveries(Some(tenant)).await?;
    let rows: Vec<Value> = deliveries
        .iter()
        .filter(|d| !failed || d.state == DeliveryState::Parked)
        .map(|d| {
            json!({
                "id": d.key.id(),
                "alert": format!("{}/{}/{}", d.key.tenant, d.key.account, d.key.sequence),
                "destination": d.key.destination,
                "state": d.state.as_str(),
                "tier": d.tier,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "reason": d.reason,
                "updated_at": d.updated_at,
                "delivered_at": d.delivered_at,
            })
        })
        .collect();
    let feedback: Vec<Value> = feedback.iter().map(feedback_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"deliveries": rows, "feedback": feedback}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids() {
        assert_eq!(parse_alert_id("globex/2").unwrap(), ("globex".into(), 2));
        assert_eq!(parse_alert_id("org/1/3").unwrap(), ("org/1".into(), 3));
        for (id, why) in [
            ("globex", "no sequence"),
            ("/1", "empty account"),
            ("globex/0", "the sequence `0` is not a number >= 1"),
            ("globex/x", "the sequence `x` is not a number >= 1"),
        ] {
            let e = parse_alert_id(id).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("expected ACCOUNT/SEQUENCE"),
                "{id}: {e}"
            );
        }
    }
}
