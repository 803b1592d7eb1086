//! The activation Lambda function (binary `activation`): the events table's stream in, account
//! and user state out. Everything is in the library; this only wires it to the runtime.

use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_activation::Activation;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // Built once per Lambda instance, reused by every invocation.
    let store = pql_lambda_init::store_from_env().await?;
    let activation = Arc::new(Activation::new(store));

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| {
        let activation = activation.clone();
        async move { Ok::<_, Error>(activation.handle(event.payload).await) }
    }))
    .await
}
