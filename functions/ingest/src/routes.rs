//! The endpoints of the Segment HTTP Tracking API, parsed from the method and the path.

use http::Method;

use crate::response::IngestError;

/// What a request asks for. Only `POST` reaches a route; everything else is a 404 or a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/batch` (and `/v1/import`, `/v1/b`): a batch envelope, or a single call carrying its
    /// own `type` (what a Segment webhook sends).
    Batch,
    /// `/v1/track` etc.: one call whose type comes from the URL.
    Call(CallType),
}

/// A call type named by the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Track,
    Identify,
    Group,
    Page,
    Screen,
    Alias,
}

impl CallType {
    /// The name the engine expects (`parse_call`'s `call_type`).
    pub fn name(self) -> &'static str {
        match self {
            CallType::Track => "track",
            CallType::Identify => "identify",
            CallType::Group => "group",
            CallType::Page => "page",
            CallType::Screen => "screen",
            CallType::Alias => "alias",
        }
    }
}

impl Route {
    /// The route for `method` and `path`. A trailing slash is ignored. The one-letter paths are
    /// the ones analytics.js uses (`/v1/t`, `/v1/p`, ..., `/v1/b` for batches).
    pub fn parse(method: &Method, path: &str) -> Result<Route, IngestError> {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        let route = match trimmed {
            "/v1/batch" | "/v1/import" | "/v1/b" => Route::Batch,
            "/v1/track" | "/v1/t" => Route::Call(CallType::Track),
            "/v1/identify" | "/v1/i" => Route::Call(CallType::Identify),
            "/v1/group" | "/v1/g" => Route::Call(CallType::Group),
            "/v1/page" | "/v1/p" => Route::Call(CallType::Page),
            "/v1/screen" | "/v1/s" => Route::Call(CallType::Screen),
            "/v1/alias" | "/v1/a" => Route::Call(CallType::Alias),
            _ => {
                return Err(IngestError::NotFound {
                    method: method.to_string(),
                    path: shorten(path),
                })
            }
        };
        if method == Method::POST {
            Ok(route)
        } else {
            Err(IngestError::MethodNotAllowed {
                method: method.to_string(),
                path: shorten(path),
            })
        }
    }

    /// For logs: "batch", "track", ...
    pub fn name(self) -> &'static str {
        match self {
            Route::Batch => "batch",
            Route::Call(call) => call.name(),
        }
    }
}

/// A path quoted back in an error message, cut to a sane length.
fn shorten(path: &str) -> String {
    const MAX: usize = 100;
    match path.char_indices().nth(MAX) {
        None => path.to_owned(),
        Some((end, _)) => format!("{}…", &path[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_and_aliases() {
        let post = Method::POST;
        assert_eq!(Route::parse(&post, "/v1/batch").unwrap(), Route::Batch);
        assert_eq!(Route::parse(&post, "/v1/import").unwrap(), Route::Batch);
        assert_eq!(Route::parse(&post, "/v1/b/").unwrap(), Route::Batch);
        assert_eq!(
            Route::parse(&post, "/v1/track").unwrap(),
            Route::Call(CallType::Track)
        );
        assert_eq!(
            Route::parse(&post, "/v1/s").unwrap(),
            Route::Call(CallType::Screen)
        );
        assert_eq!(
            Route::parse(&post, "/v1/alias/").unwrap(),
            Route::Call(CallType::Alias)
        );
    }

    #[test]
    fn unknown_paths_and_other_methods() {
        assert!(matches!(
            Route::parse(&Method::POST, "/v2/track"),
            Err(IngestError::NotFound { .. })
        ));
        assert!(matches!(
            Route::parse(&Method::GET, "/"),
            Err(IngestError::NotFound { .. })
        ));
        assert!(matches!(
            Route::parse(&Method::GET, "/v1/track"),
            Err(IngestError::MethodNotAllowed { .. })
        ));
        let long = format!("/{}", "x".repeat(500));
        match Route::parse(&Method::POST, &long) {
            Err(IngestError::NotFound { path, .. }) => assert!(path.chars().count() <= 101),
            other => panic!("{other:?}"),
        }
    }
}
