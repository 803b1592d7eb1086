//! The sweep Lambda function (binary `sweep`), run on a schedule. Everything is in the
//! library; this only wires it to the runtime. The event (an EventBridge schedule, or anything
//! for a manual run) is not read: the sweep needs only the time, which is the wall clock's.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_engine::Timestamp;
use pql_lambda_init::OnFirstUse;
use pql_sweep::Sweeper;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // At init, only what fails fast: the settings. The AWS configuration and the DynamoDB
    // client are built by the first invocation, once per instance, and reused.
    let tables = pql_lambda_init::tables_from_env()?;
    let sweeper = OnFirstUse::new("the DynamoDB client", || async {
        pql_lambda_init::store(tables.clone())
            .await
            .map(Sweeper::new)
    });

    let sweeper = &sweeper;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(sweeper.get().await?.sweep(Timestamp::now()).await?)
        },
    ))
    .await
}
