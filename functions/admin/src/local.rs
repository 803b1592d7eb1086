//! The admin handler served over a local socket (`pql local --admin-listen`, tests), through
//! [`pql_local_http`].

use std::future::Future;
use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use tokio::net::TcpListener;

use crate::error::AdminError;
use crate::handler::App;

impl pql_local_http::LocalHandler for App {
    fn handle(&self, request: Request) -> impl Future<Output = Response<Body>> + Send {
        App::handle(self, request)
    }

    fn too_large(&self, bytes: usize) -> Response<Body> {
        AdminError::TooLarge {
            bytes,
            max: crate::handler::MAX_BODY_BYTES,
        }
        .into_response()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves (see [`pql_local_http::serve`]).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    pql_local_http::serve(listener, app, shutdown).await
}
