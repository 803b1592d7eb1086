//! The baseline of the init-time benchmark: a minimal `lambda_runtime` function (echo), built
//! the same way as the real ones. On Lambda a Rust hello-world like this inits in ~14-16 ms.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
