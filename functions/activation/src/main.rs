//! The activation Lambda function (binary `activation`): the events table's stream in, account
//! and user state out. Everything is in the library; this only wires it to the runtime.

use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_activation::Activation;
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
    let activation = Arc::new(Activation::new(Store::new(client, tables)));

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| {
        let activation = activation.clone();
        async move { Ok::<_, Error>(activation.handle(event.payload).await) }
    }))
    .await
}
