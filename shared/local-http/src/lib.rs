//! A `lambda_http` handler behind a small HTTP/1.1 server (hyper), for `pql local` and for
//! tests over a real socket: each request becomes the `lambda_http::Request` the Lambda runtime
//! would have built, and the response goes back as is. The ingest and admin functions both
//! serve themselves through it.

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
use lambda_http::{Body, Request, Response};
use tokio::net::TcpListener;

/// The largest body read at all: Lambda's own limit on a synchronous request (6 MB). Bodies
/// up to it get the handler's precise answer; larger ones are cut off here.
pub const MAX_READ_BYTES: usize = 6 * 1024 * 1024;
/// How long open connections get to finish after `shutdown` resolves.
const DRAIN: Duration = Duration::from_secs(5);

/// What a function must offer to be served locally.
pub trait LocalHandler: Send + Sync + 'static {
    /// The Lambda handler itself.
    fn handle(&self, request: Request) -> impl Future<Output = Response<Body>> + Send;
    /// The answer to a body over [`MAX_READ_BYTES`] (`bytes`: its declared length, if any),
    /// which never reaches `handle`.
    fn too_large(&self, bytes: usize) -> Response<Body>;
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// (for at most 5 s). Accept errors (such as running out of file descriptors) are logged and
/// do not stop the server.
pub async fn serve<H: LocalHandler>(
    listener: TcpListener,
    app: Arc<H>,
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
                    async move { Ok::<_, Infallible>(respond(&*app, request).await) }
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
async fn respond<H: LocalHandler>(
    app: &H,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_READ_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error.is::<http_body_util::LengthLimitError>() {
                let declared = parts
                    .headers
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                return to_hyper(app.too_large(declared.unwrap_or(MAX_READ_BYTES + 1)));
            }
            // The client went away or sent a broken body: nobody is listening for an answer.
            tracing::debug!(%error, "could not read the request body");
            let mut response = hyper::Response::new(Full::new(Bytes::new()));
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let body = if bytes.is_empty() {
        Body::Empty
    } else {
        Body::Binary(bytes.into())
    };
    to_hyper(app.handle(Request::from_parts(parts, body)).await)
}

fn to_hyper(response: Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(data) => Bytes::from(data),
        // The enum is non-exhaustive upstream; the handlers build only the variants above.
        #[allow(unreachable_patterns)]
        other => Bytes::copy_from_slice(other.as_ref()),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}
