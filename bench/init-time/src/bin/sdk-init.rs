//! What the functions' init costs, piece by piece: a `lambda_runtime` function that only builds
//! a DynamoDB client, in one of three ways chosen by `PQL_PROBE` (the benchmark passes it with
//! `--env`), to measure what `shared/lambda-init` could do instead of `load_defaults`:
//!
//! * `defaults` (or unset): `aws_config::load_defaults`, as the functions do today. Its default
//!   credentials chain builds an STS client for web identity, whose construction builds an
//!   HTTPS connector, which loads every native root certificate (a directory scan).
//! * `env`: region and credentials from the environment Lambda sets (`AWS_REGION`,
//!   `AWS_ACCESS_KEY_ID` ...), no default chains. The DynamoDB client still builds a connector
//!   with the native roots.
//! * `env-amazon-roots`: as `env`, and the DynamoDB client trusts only the Amazon Trust
//!   Services roots (what AWS endpoints chain to), compiled in: no file is read.

use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use lambda_runtime::{service_fn, Error, LambdaEvent};

const AMAZON_ROOTS: &str = include_str!("amazon-trust-services-roots.pem");

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mode = std::env::var("PQL_PROBE").unwrap_or_default();
    let config = match mode.as_str() {
        "env" | "env-amazon-roots" => {
            let region = std::env::var("AWS_REGION")?;
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .region(aws_config::Region::new(region))
                .credentials_provider(
                    aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                );
            if mode == "env-amazon-roots" {
                let context = TlsContext::builder()
                    .with_trust_store(
                        TrustStore::empty()
                            .with_native_roots(false)
                            .with_pem_certificate(AMAZON_ROOTS.as_bytes()),
                    )
                    .build()?;
                loader = loader.http_client(
                    aws_smithy_http_client::Builder::new()
                        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                        .tls_context(context)
                        .build_https(),
                );
            }
            loader.load().await
        }
        _ => aws_config::load_defaults(BehaviorVersion::latest()).await,
    };
    let client = aws_sdk_dynamodb::Client::new(&config);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let _client = client.clone();
        async move { Ok::<_, Error>(event.payload) }
    }))
    .await
}
