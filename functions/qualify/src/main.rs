//! The qualify Lambda function (binary `qualify`): the state table's stream in, lifecycle
//! changes and alerts out. Everything is in the library; this only wires it to the runtime.

use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_qualify::Qualifier;
use pql_store::{Store, Tables};

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
    let qualifier = Arc::new(Qualifier::new(Store::new(client, tables)));

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| {
        let qualifier = qualifier.clone();
        async move { qualifier.handle(event.payload).await.map_err(Error::from) }
    }))
    .await
}
