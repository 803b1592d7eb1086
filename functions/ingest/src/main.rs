//! The ingest Lambda function: configuration and clients at init, then the runtime loop.

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};
use pql_ingest::{App, Config};
use pql_store::{Store, Tables};
use tracing_subscriber::filter::LevelFilter;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON logs for CloudWatch; the level from AWS_LAMBDA_LOG_LEVEL (or RUST_LOG), default INFO.
    let level = ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .init();

    let config = Config::from_env()?;
    let tables = Tables::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = Store::new(aws_sdk_dynamodb::Client::new(&aws), tables);
    let app = Arc::new(App::new(store, config));
    tracing::info!(
        retention_days = app.config().retention_days,
        "ingest function initialised"
    );

    lambda_http::run(service_fn(move |request: Request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Error>(app.handle(request).await) }
    }))
    .await
}
