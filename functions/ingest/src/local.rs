//! The ingest handler served over a local socket (`pql local` on `127.0.0.1:8787`, tests),
//! through [`pql_local_http`].

use std::future::Future;
use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use tokio::net::TcpListener;

use crate::handler::App;
use crate::response::IngestError;
use crate::sink::EventSink;

pub use pql_local_http::MAX_READ_BYTES;

impl<S: EventSink> pql_local_http::LocalHandler for App<S> {
    fn handle(&self, request: Request) -> impl Future<Output = Response<Body>> + Send {
        App::handle(self, request)
    }

    fn too_large(&self, bytes: usize) -> Response<Body> {
        IngestError::RequestTooLarge { bytes }.into_response()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves (see [`pql_local_http::serve`]).
pub async fn serve<S: EventSink>(
    listener: TcpListener,
    app: Arc<App<S>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    pql_local_http::serve(listener, app, shutdown).await
}
