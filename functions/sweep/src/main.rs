//! The sweep Lambda function (binary `sweep`), run on a schedule. Everything is in the
//! library; this only wires it to the runtime. The event (an EventBridge schedule, or anything
//! for a manual run) is not read: the sweep needs only the time, which is the wall clock's.

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_engine::Timestamp;
use pql_sweep::Sweeper;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // Built once per Lambda instance, reused by every invocation.
    let store = pql_lambda_init::store_from_env().await?;
    let sweeper = Arc::new(Sweeper::new(store));

    lambda_runtime::run(service_fn(move |_event: LambdaEvent<serde_json::Value>| {
        let sweeper = sweeper.clone();
        async move { sweeper.sweep(Timestamp::now()).await.map_err(Error::from) }
    }))
    .await
}
