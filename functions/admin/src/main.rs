//! The admin Lambda function: settings at init, clients on the first request, then the
//! runtime loop.

use lambda_http::{service_fn, Error, Request};
use pql_admin::App;
use pql_lambda_init::OnFirstUse;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // At init, only what fails fast: the settings. The AWS configuration and the DynamoDB
    // client are built by the first request, once per instance, and reused.
    let tables = pql_lambda_init::tables_from_env()?;
    let app = OnFirstUse::new("the DynamoDB client", || async {
        pql_lambda_init::store(tables.clone()).await.map(App::new)
    });
    tracing::info!("admin function initialised");

    let app = &app;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(app.get().await?.handle(request).await)
    }))
    .await
}
