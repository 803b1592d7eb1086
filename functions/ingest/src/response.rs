//! What the function answers: one error enum for everything that rejects a request as a whole,
//! and the success body (with the calls of a batch that were rejected one by one).

use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use pql_engine::event::EventError;
use pql_store::StoreError;
use serde::Serialize;

/// The largest request body, before and after gzip decompression (Segment's 500 KB).
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// The most calls one batch may hold (Segment's limit).
pub const MAX_BATCH_EVENTS: usize = 2_500;

const ENDPOINTS: &str = "POST /v1/batch, /v1/import, /v1/track, /v1/identify, /v1/group, \
                         /v1/page, /v1/screen and /v1/alias";

/// Why a request was rejected as a whole. Nothing of such a request is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("there is no endpoint {method} {path} (allowed: {ENDPOINTS})")]
    NotFound { method: String, path: String },
    #[error("{path} accepts POST only, not {method}")]
    MethodNotAllowed { method: String, path: String },
    #[error(
        "the request body is {bytes} bytes; a request may be at most {MAX_REQUEST_BYTES} bytes \
         (500 KB): send fewer calls per batch"
    )]
    RequestTooLarge { bytes: usize },
    #[error(
        "the request body decompresses to more than {MAX_REQUEST_BYTES} bytes; a request may be \
         at most {MAX_REQUEST_BYTES} bytes (500 KB) once decompressed: send fewer calls per batch"
    )]
    DecompressedTooLarge,
    #[error("Content-Encoding `{encoding}` is not supported (allowed: gzip or identity)")]
    UnsupportedEncoding { encoding: String },
    #[error("the body is sent with Content-Encoding: gzip but is not valid gzip: {reason}")]
    InvalidGzip { reason: String },
    #[error(
        "no write key: send it as the user name of HTTP Basic authentication with an empty \
         password (`Authorization: Basic base64(\"WRITE_KEY:\")`) or as `writeKey` in the JSON body"
    )]
    MissingWriteKey,
    #[error(
        "the Authorization header cannot be read: {reason} \
         (allowed: `Basic base64(\"WRITE_KEY:\")`)"
    )]
    MalformedAuthorization { reason: &'static str },
    #[error("`writeKey` in the body must be a string")]
    WriteKeyNotAString,
    #[error(
        "the write key is not known: check the write key of the source sending to this endpoint"
    )]
    UnknownWriteKey,
    /// The body as a whole is unusable (invalid JSON, not an object, a malformed batch), or the
    /// one call sent to a single-call endpoint was rejected.
    #[error("{0}")]
    Payload(EventError),
    #[error(
        "the batch has {count} calls; a batch may have at most {MAX_BATCH_EVENTS} calls: \
         split it"
    )]
    TooManyEvents { count: usize },
    /// DynamoDB failed: the client should retry (puts deduplicate, so retrying is safe).
    #[error("the event store failed: {0}")]
    Unavailable(#[source] StoreError),
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::NotFound { .. } => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::MissingWriteKey
            | IngestError::MalformedAuthorization { .. }
            | IngestError::WriteKeyNotAString
            | IngestError::UnknownWriteKey => StatusCode::UNAUTHORIZED,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::RequestTooLarge { .. }
            | IngestError::DecompressedTooLarge
            | IngestError::InvalidGzip { .. }
            | IngestError::Payload(_)
            | IngestError::TooManyEvents { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable snake_case code in the body's `error`.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::NotFound { .. } => "not_found",
            IngestError::MethodNotAllowed { .. } => "method_not_allowed",
            IngestError::RequestTooLarge { .. } | IngestError::DecompressedTooLarge => {
                "request_too_large"
            }
            IngestError::UnsupportedEncoding { .. } => "unsupported_encoding",
            IngestError::InvalidGzip { .. } => "invalid_gzip",
            IngestError::MissingWriteKey
            | IngestError::MalformedAuthorization { .. }
            | IngestError::WriteKeyNotAString
            | IngestError::UnknownWriteKey => "unauthorized",
            IngestError::Payload(e) => e.code(),
            IngestError::TooManyEvents { .. } => "too_many_events",
            IngestError::Unavailable(_) => "unavailable",
        }
    }

    /// The body's `message`: what, where and what is allowed. Store failures are described to
    /// the client in general terms only (the details go to the log).
    pub fn message(&self) -> String {
        match self {
            IngestError::Unavailable(_) => {
                "the event store is unavailable; retry the request \
                                            (retries are safe: calls are deduplicated by messageId)"
                    .to_owned()
            }
            other => other.to_string(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(
            self.status(),
            &ErrorBody {
                error: self.code(),
                message: self.message(),
            },
        );
        let headers = response.headers_mut();
        match self {
            IngestError::MethodNotAllowed { .. } => {
                headers.insert(ALLOW, HeaderValue::from_static("POST"));
            }
            IngestError::MissingWriteKey
            | IngestError::MalformedAuthorization { .. }
            | IngestError::WriteKeyNotAString
            | IngestError::UnknownWriteKey => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"pql\""),
                );
            }
            IngestError::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

/// A call of a batch that failed validation; the others were stored.
#[derive(Debug)]
pub struct Rejected {
    /// Position in the batch (0 for a single call).
    pub index: usize,
    pub error: EventError,
}

/// The result of a request whose valid calls were stored.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Calls written now.
    pub stored: usize,
    /// Calls whose messageId the tenant already had (stored by an earlier request or earlier
    /// in this one): accepted, nothing written.
    pub duplicates: usize,
    /// Calls whose messageId the tenant had with a later time: this earlier copy replaced it
    /// (a retry whose corrected timestamp changed).
    pub corrected: usize,
    pub rejected: Vec<Rejected>,
}

impl Ingested {
    pub fn accepted(&self) -> usize {
        self.stored + self.duplicates + self.corrected
    }

    pub fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct Item {
            index: usize,
            error: &'static str,
            message: String,
        }
        #[derive(Serialize)]
        struct Success {
            success: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            accepted: Option<usize>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            rejected: Vec<Item>,
        }
        let accepted = (!self.rejected.is_empty()).then(|| self.accepted());
        let rejected = self
            .rejected
            .iter()
            .map(|r| Item {
                index: r.index,
                error: r.error.code(),
                message: r.error.to_string(),
            })
            .collect();
        json_response(
            StatusCode::OK,
            &Success {
                success: true,
                accepted,
                rejected,
            },
        )
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).expect("response bodies always serialise");
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn plain_success() {
        let response = Ingested {
            stored: 2,
            duplicates: 1,
            corrected: 0,
            rejected: vec![],
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(&response), serde_json::json!({"success": true}));
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn partial_success_lists_the_rejected_calls() {
        let response = Ingested {
            stored: 2,
            duplicates: 1,
            corrected: 0,
            rejected: vec![Rejected {
                index: 1,
                error: EventError::MissingIdentity,
            }],
        }
        .into_response();
        let body = body(&response);
        assert_eq!(body["success"], true);
        assert_eq!(body["accepted"], 3);
        assert_eq!(body["rejected"][0]["index"], 1);
        assert_eq!(body["rejected"][0]["error"], "missing_identity");
        assert!(body["rejected"][0]["message"]
            .as_str()
            .unwrap()
            .contains("userId"));
    }

    #[test]
    fn errors_have_status_code_and_headers() {
        let e = IngestError::MethodNotAllowed {
            method: "GET".into(),
            path: "/v1/track".into(),
        };
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "POST");
        assert_eq!(body(&response)["error"], "method_not_allowed");

        let e = IngestError::Unavailable(StoreError::Dynamo {
            operation: "PutItem",
            table: "secret-table-name".into(),
            message: "throttled".into(),
        });
        assert!(e.to_string().contains("throttled"));
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body(&response);
        assert_eq!(body["error"], "unavailable");
        assert!(!body["message"].as_str().unwrap().contains("secret"));

        let e = IngestError::Payload(EventError::InvalidJson("eof".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "invalid_json");
    }
}
