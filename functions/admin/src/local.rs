//! The admin handler behind a small HTTP/1.1 server (hyper), for `pql local --admin-listen` and
//! for tests over a real socket: each request becomes the
//! `lambda_http::Request` the Lambda runtime would have built, and the response goes back as is.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::error::AdminError;
use crate::handler::App;

/// The largest body read at all: Lambda's own limit on a synchronous request (6 MB). Bodies
/// up to it get the handler's precise answer; larger ones are cut off here.
pub const MAX_READ_BYTES: usize = 6 * 1024 * 1024;
/// How long open connections get to finish after `shutdown` resolves.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// (for at most 5 s). Accept errors (such as running out of file descriptors) are logged and
/// do not stop the server.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = Arc::clone(&app);
                let service = service_fn(move |request| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(respond(&app, request).await) }
                });
                let connection = graceful.watch(
                    http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("connections still open after {} s; closing", DRAIN.as_secs());
        }
    }
    Ok(())
}

/// One request: read the body (bounded), call the handler, convert the response.
async fn respond(app: &App, request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_READ_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let declared = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            if error.is::<http_body_util::LengthLimitError>() {
                let bytes = declared.unwrap_or(MAX_READ_BYTES + 1);
                return to_hyper(
                    AdminError::TooLarge {
                        bytes,
                        max: crate::handler::MAX_BODY_BYTES,
                    }
                    .into_response(),
                );
            }
            // The client went away or sent a broken body: nobody is listening for an answer.
            tracing::debug!(%error, "could not read the request body");
            let mut response = hyper::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        lambda_http::Body::Binary(bytes.into())
    };
    let response = app
        .handle(lambda_http::Request::from_parts(parts, body))
        .await;
    to_hyper(response)
}

fn to_hyper(response: lambda_http::Response<lambda_http::Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(data) => Bytes::from(data),
        // The enum is non-exhaustive upstream; the handler builds only the variants above.
        #[allow(unreachable_patterns)]
        other => Bytes::copy_from_slice(other.as_ref()),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}
