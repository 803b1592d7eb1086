//! The ingest Lambda function: settings at init, clients on the first request, then the
//! runtime loop.

use lambda_http::{service_fn, Error, Request};
use pql_ingest::{App, Config};
use pql_lambda_init::OnFirstUse;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // At init, only what fails fast: the settings. The AWS configuration and the DynamoDB
    // client are built by the first request, once per instance, and reused.
    let config = Config::from_env()?;
    let tables = pql_lambda_init::tables_from_env()?;
    tracing::info!(
        retention_days = config.retention_days,
        "ingest function initialised"
    );
    let app = OnFirstUse::new("the DynamoDB client", || async {
        let store = pql_lambda_init::store(tables.clone()).await?;
        Ok::<_, Error>(App::new(store, config.clone()))
    });

    let app = &app;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(app.get().await?.handle(request).await)
    }))
    .await
}
