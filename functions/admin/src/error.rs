//! Everything that can go wrong with an admin request, as a status code and a JSON body
//! `{"error": "<code>", "message": "..."}`.

use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::StatusCode;
use lambda_http::{Body, Response};
use pql_engine::definition::DefinitionErrors;
use pql_store::definition_versions::VersionError;
use pql_store::StoreError;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no admin key: send `Authorization: Bearer <admin key>` (or Basic with the key as user name)")]
    MissingKey,
    #[error("the Authorization header is malformed: {0}")]
    MalformedAuthorization(String),
    #[error("unknown admin key")]
    UnknownKey,
    #[error("a write key cannot use the admin API: use the tenant's admin key")]
    WriteKey,
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path} (allowed: {allow})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{}", invalid_definition_message(.0))]
    InvalidDefinition(DefinitionErrors),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is {bytes} bytes (allowed: at most {max})")]
    TooLarge { bytes: usize, max: usize },
    #[error("the store failed; retry: {0}")]
    Store(#[from] StoreError),
}

fn invalid_definition_message(errors: &DefinitionErrors) -> String {
    let n = errors.errors.len();
    format!(
        "the definition is not valid ({n} problem{}):\n{errors}",
        if n == 1 { "" } else { "s" }
    )
}

impl From<VersionError> for AdminError {
    fn from(error: VersionError) -> Self {
        match error {
            VersionError::Store(e) => AdminError::Store(e),
            VersionError::NoTenant(t) => AdminError::NotFound(format!("tenant `{t}`")),
            VersionError::NoSuchVersion(v) => {
                AdminError::NotFound(format!("definition version `{v}`"))
            }
            e @ VersionError::NothingToRollBack(_) => AdminError::Conflict(e.to_string()),
            e @ VersionError::Contended(_) => AdminError::Conflict(e.to_string()),
        }
    }
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::MissingKey
            | AdminError::UnknownKey
            | AdminError::MalformedAuthorization(_) => StatusCode::UNAUTHORIZED,
            AdminError::WriteKey => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::BadRequest(_)
            | AdminError::InvalidJson(_)
            | AdminError::InvalidDefinition(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AdminError::MissingKey => "missing_admin_key",
            AdminError::MalformedAuthorization(_) => "malformed_authorization",
            AdminError::UnknownKey => "unknown_admin_key",
            AdminError::WriteKey => "write_key_not_allowed",
            AdminError::NotFound(_) => "not_found",
            AdminError::MethodNotAllowed { .. } => "method_not_allowed",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::InvalidJson(_) => "invalid_json",
            AdminError::InvalidDefinition(_) => "invalid_definition",
            AdminError::Conflict(_) => "conflict",
            AdminError::TooLarge { .. } => "request_too_large",
            AdminError::Store(_) => "store_unavailable",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        if let AdminError::Store(e) = &self {
            tracing::error!(error = %e, "store failed");
        }
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        if let AdminError::InvalidDefinition(errors) = &self {
            let list: Vec<Value> = errors
                .errors
                .iter()
                .map(|e| {
                    let mut location = errors.file.clone();
                    if let Some(line) = e.line {
                        location.push_str(&format!(":{line}"));
                        if let Some(column) = e.column {
                            location.push_str(&format!(":{column}"));
                        }
                    }
                    json!({
                        "location": location,
                        "file": errors.file,
                        "line": e.line,
                        "column": e.column,
                        "field": e.field,
                        "message": e.message,
                        "allowed": e.allowed,
                    })
                })
                .collect();
            if let Some(first) = list.first() {
                body["location"] = first["location"].clone();
                body["field"] = first["field"].clone();
            }
            body["errors"] = Value::Array(list);
        }
        let mut response = json_response(self.status(), &body);
        match &self {
            AdminError::MissingKey
            | AdminError::UnknownKey
            | AdminError::MalformedAuthorization(_) => {
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"pql admin\""),
                );
            }
            AdminError::MethodNotAllowed { allow, .. } => {
                response
                    .headers_mut()
                    .insert(ALLOW, http::HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).expect("responses always serialise");
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::Text(text))
        .expect("a valid response")
}
