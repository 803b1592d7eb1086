//! The sweep Lambda function (binary `sweep`), run on a schedule. Everything is in the
//! library; this only wires it to the runtime. The event (an EventBridge schedule, or anything
//! for a manual run) is not read: the sweep needs only the time, which is the wall clock's.

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_engine::Timestamp;
use pql_store::{Store, Tables};
use pql_sweep::Sweeper;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();

    // Built once per Lambda instance, reused by every invocation.
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let tables = Tables::from_env()?;
    let sweeper = Arc::new(Sweeper::new(Store::new(client, tables)));

    lambda_runtime::run(service_fn(move |_event: LambdaEvent<serde_json::Value>| {
        let sweeper = sweeper.clone();
        async move { sweeper.sweep(Timestamp::now()).await.map_err(Error::from) }
    }))
    .await
}
