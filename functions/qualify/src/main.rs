//! The qualify Lambda function (binary `qualify`): the state table's stream in, lifecycle
//! changes and alerts out. Everything is in the library; this only wires it to the runtime.

use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_qualify::Qualifier;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // Built once per Lambda instance, reused by every invocation.
    let store = pql_lambda_init::store_from_env().await?;
    let qualifier = Arc::new(Qualifier::new(store));

    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| {
        let qualifier = qualifier.clone();
        async move { qualifier.handle(event.payload).await.map_err(Error::from) }
    }))
    .await
}
