//! Init-time work shared by the Lambda functions' `main`s, done once per instance.

use pql_store::{Store, StoreError, Tables};
use tracing_subscriber::filter::LevelFilter;

/// JSON logs for CloudWatch (Lambda adds the time); the level from `AWS_LAMBDA_LOG_LEVEL`
/// (set by the function's logging config) or `RUST_LOG`, INFO by default.
pub fn init_logs() {
    let level = ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
}

/// The store: AWS configuration from the Lambda environment, one DynamoDB client, and the
/// table names the template sets (`TENANTS_TABLE`, `EVENTS_TABLE`, `STATE_TABLE`, `ALERTS_TABLE`).
pub async fn store_from_env() -> Result<Store, StoreError> {
    let tables = Tables::from_env()?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Ok(Store::new(aws_sdk_dynamodb::Client::new(&config), tables))
}
