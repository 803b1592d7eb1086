//! The admin Lambda function: clients at init, then the runtime loop.

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};
use pql_admin::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // Built once per Lambda instance, reused by every invocation.
    let store = pql_lambda_init::store_from_env().await?;
    let app = Arc::new(App::new(store));
    tracing::info!("admin function initialised");

    lambda_http::run(service_fn(move |request: Request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Error>(app.handle(request).await) }
    }))
    .await
}
