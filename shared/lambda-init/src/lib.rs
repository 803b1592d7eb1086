//! Init-time work shared by the Lambda functions' `main`s, done once per instance.

use pql_store::{Store, StoreError, Tables};
use tracing_subscriber::filter::LevelFilter;

/// JSON logs for CloudWatch (Lambda adds the time); the level from `AWS_LAMBDA_LOG_LEVEL`
/// (set by the function's logging config) or `RUST_LOG`, INFO by default.
pub fn init_logs() {
    let level = ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
}

/// The store: AWS configuration from the Lambda environment ([`sdk_config`]), one DynamoDB
/// client, and the table names the template sets (`TENANTS_TABLE`, `EVENTS_TABLE`,
/// `STATE_TABLE`, `ALERTS_TABLE`).
pub async fn store_from_env() -> Result<Store, StoreError> {
    store_with(&sdk_config().await?)
}

/// The store on an [`sdk_config`] the function also uses for other clients (notify: SES,
/// SSM, Secrets Manager), so the configuration is built once.
pub fn store_with(config: &aws_config::SdkConfig) -> Result<Store, StoreError> {
    let tables = Tables::from_env()?;
    Ok(Store::new(aws_sdk_dynamodb::Client::new(config), tables))
}

/// The roots every AWS service endpoint chains to (Amazon Root CA 1-4 and Starfield Services
/// Root G2, the Amazon Trust Services hierarchy), compiled in.
const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("amazon-trust-services-roots.pem");

/// The AWS SDK configuration, built for a cheap init.
///
/// In Lambda (credentials in the environment, as Lambda always provides them): the region and
/// credentials from the environment, and HTTPS that trusts the Amazon Trust Services roots
/// only, compiled in. `aws_config::load_defaults` would build the default credentials chain
/// (its STS client for web identity included) and the HTTP client would load and parse every
/// root certificate of the system store: about two thirds of the function's init time
/// (bench/init-time). These clients only ever talk to AWS service endpoints, whose
/// certificates chain to these roots. `PQL_TLS_ROOTS=system` restores the system store (a
/// proxy that re-signs TLS, a partition whose endpoints chain elsewhere). Outside Lambda (a
/// laptop, tests, the local stack): the SDK's defaults.
pub async fn sdk_config() -> Result<aws_config::SdkConfig, StoreError> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};

    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        && std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    if !in_lambda {
        return Ok(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await);
    }
    let region = std::env::var("AWS_REGION")
        .map_err(|_| StoreError::Config("environment variable AWS_REGION is not set".into()))?;
    let trust = match std::env::var("PQL_TLS_ROOTS").as_deref() {
        Err(_) | Ok("amazon") => TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS.as_bytes()),
        Ok("system") => TrustStore::default(),
        Ok(other) => {
            return Err(StoreError::Config(format!(
                "PQL_TLS_ROOTS is {other:?}; allowed: \"amazon\" (default) or \"system\""
            )))
        }
    };
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| StoreError::Config(format!("TLS trust store: {e}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(tls)
        .build_https();
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        )
        .http_client(http)
        .load()
        .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled-in bundle is what production TLS trusts: it must parse, and hold the five
    /// roots of the Amazon Trust Services hierarchy.
    #[test]
    fn amazon_roots_parse() {
        let certs = AMAZON_TRUST_SERVICES_ROOTS
            .matches("-----BEGIN CERTIFICATE-----")
            .count();
        assert_eq!(certs, 5);
        aws_smithy_http_client::tls::TlsContext::builder()
            .with_trust_store(
                aws_smithy_http_client::tls::TrustStore::empty()
                    .with_native_roots(false)
                    .with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS.as_bytes()),
            )
            .build()
            .expect("the bundled roots parse");
    }
}
