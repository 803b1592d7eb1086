//! The activation Lambda function (binary `activation`): the events table's stream in, account
//! and user state out. Everything is in the library; this only wires it to the runtime.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_activation::Activation;
use pql_lambda_init::OnFirstUse;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // At init, only what fails fast: the settings. The AWS configuration and the DynamoDB
    // client are built by the first invocation, once per instance, and reused.
    let tables = pql_lambda_init::tables_from_env()?;
    let activation = OnFirstUse::new("the DynamoDB client", || async {
        pql_lambda_init::store(tables.clone())
            .await
            .map(Activation::new)
    });

    let activation = &activation;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(activation.get().await?.handle(event.payload).await)
    }))
    .await
}
