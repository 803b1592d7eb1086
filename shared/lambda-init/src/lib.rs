//! What the Lambda functions' `main`s share: the logs (at init), the AWS configuration and the
//! DynamoDB store, and [`OnFirstUse`], which builds them on the first invocation instead of at
//! init, once per instance.

use std::future::Future;

use pql_store::{Store, StoreError, Tables};
use tracing_subscriber::filter::LevelFilter;

/// The error type of `lambda_runtime` and `lambda_http` (`Error`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A value built when an invocation first needs it, once per instance, then reused by every
/// later invocation (a function's handler and the AWS clients it holds).
///
/// Init then costs only what a function must check up front (its table names, its settings),
/// and the AWS SDK configuration is built on the first invocation. A failed build fails that
/// invocation with a [`FirstUseError`] and is not kept: the next invocation builds again.
/// Concurrent first uses wait for the one build in progress.
pub struct OnFirstUse<T, F> {
    what: &'static str,
    cell: tokio::sync::OnceCell<T>,
    build: F,
}

impl<T, F, Fut, E> OnFirstUse<T, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    /// `what` names the value in the error of a failed build ("the DynamoDB client").
    pub fn new(what: &'static str, build: F) -> Self {
        OnFirstUse {
            what,
            cell: tokio::sync::OnceCell::new(),
            build,
        }
    }

    /// The value, built now if no invocation has built it yet.
    pub async fn get(&self) -> Result<&T, FirstUseError> {
        self.cell
            .get_or_try_init(|| async {
                (self.build)().await.map_err(|e| FirstUseError {
                    what: self.what,
                    source: e.into(),
                })
            })
            .await
    }

    /// The value if an invocation has built it (for tests: callers use `get`).
    #[cfg(test)]
    fn built(&self) -> Option<&T> {
        self.cell.get()
    }
}

/// [`OnFirstUse::get`] failed: this invocation fails, the next one tries again.
#[derive(Debug, thiserror::Error)]
#[error("building {what} on first use failed (the next invocation tries again): {source}")]
pub struct FirstUseError {
    what: &'static str,
    #[source]
    source: BoxError,
}

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

/// The store on `tables` (read at init with [`tables_from_env`]: `TENANTS_TABLE`,
/// `EVENTS_TABLE`, `STATE_TABLE`, `ALERTS_TABLE`, so that a missing name fails the init): the
/// AWS configuration ([`sdk_config`]) and one DynamoDB client.
pub async fn store(tables: Tables) -> Result<Store, StoreError> {
    Ok(store_with(&sdk_config().await?, tables))
}

/// The store on an [`sdk_config`] the function also uses for other clients (notify: SES,
/// SSM, Secrets Manager), so the configuration is built once.
pub fn store_with(config: &aws_config::SdkConfig, tables: Tables) -> Store {
    Store::new(aws_sdk_dynamodb::Client::new(config), tables)
}

/// The table names ([`Tables::from_env`]), and a check of the settings [`sdk_config`] reads
/// (`AWS_REGION`, `PQL_TLS_ROOTS`): what a function reads at init, so that a missing or wrong
/// setting fails the init, with nothing built (the clients are built on first use).
pub fn tables_from_env() -> Result<Tables, StoreError> {
    lambda_aws()?;
    Tables::from_env()
}

/// What [`sdk_config`] takes from the Lambda environment: `None` outside Lambda.
struct LambdaAws {
    region: String,
    system_roots: bool,
}

fn lambda_aws() -> Result<Option<LambdaAws>, StoreError> {
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        && std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    if !in_lambda {
        return Ok(None);
    }
    let region = std::env::var("AWS_REGION")
        .map_err(|_| StoreError::Config("environment variable AWS_REGION is not set".into()))?;
    let system_roots = match std::env::var("PQL_TLS_ROOTS").as_deref() {
        Err(_) | Ok("amazon") => false,
        Ok("system") => true,
        Ok(other) => {
            return Err(StoreError::Config(format!(
                "PQL_TLS_ROOTS is {other:?}; allowed: \"amazon\" (default) or \"system\""
            )))
        }
    };
    Ok(Some(LambdaAws {
        region,
        system_roots,
    }))
}

/// The roots every AWS service endpoint chains to (Amazon Root CA 1-4 and Starfield Services
/// Root G2, the Amazon Trust Services hierarchy), compiled in.
const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("amazon-trust-services-roots.pem");

/// The AWS SDK configuration, cheap to build (the functions build it on their first
/// invocation, through [`OnFirstUse`]).
///
/// In Lambda (credentials in the environment, as Lambda always provides them): the region and
/// credentials from the environment, and HTTPS that trusts the Amazon Trust Services roots
/// only, compiled in. `aws_config::load_defaults` would build the default credentials chain
/// (its STS client for web identity included) and the HTTP client would load and parse every
/// root certificate of the system store: about two thirds of what the functions' init cost
/// when they built it there (bench/init-time). These clients only ever talk to AWS service endpoints, whose
/// certificates chain to these roots. `PQL_TLS_ROOTS=system` restores the system store (a
/// proxy that re-signs TLS, a partition whose endpoints chain elsewhere). Outside Lambda (a
/// laptop, tests, the local stack): the SDK's defaults.
pub async fn sdk_config() -> Result<aws_config::SdkConfig, StoreError> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};

    let Some(LambdaAws {
        region,
        system_roots,
    }) = lambda_aws()?
    else {
        return Ok(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await);
    };
    let trust = if system_roots {
        TrustStore::default()
    } else {
        TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS.as_bytes())
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

    /// Built once, then reused; a failed build is not kept.
    #[tokio::test]
    async fn on_first_use_builds_once_and_retries_failures() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = AtomicUsize::new(0);
        let value = OnFirstUse::new("the test value", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err("no network yet"),
                n => Ok(n),
            }
        });
        assert!(value.built().is_none());
        let error = value.get().await.unwrap_err().to_string();
        assert_eq!(
            error,
            "building the test value on first use failed (the next invocation tries again): no network yet"
        );
        assert_eq!(*value.get().await.unwrap(), 1);
        assert_eq!(*value.get().await.unwrap(), 1);
        assert_eq!(value.built(), Some(&1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
