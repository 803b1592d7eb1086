//! Destination secrets kept outside the settings: SSM Parameter Store (SecureString, read with
//! decryption) and Secrets Manager, and the deployment's defaults.
//!
//! In settings, a secret field (`url`, `secret`) is either the value itself or a reference:
//!
//! ```toml
//! url = "https://hooks.slack.com/services/..."          # inline (stored with the settings)
//! url = { ssm = "/pql/slack-webhook-url" }              # an SSM SecureString parameter
//! secret = { secrets_manager = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pql-whsec" }
//! ```
//!
//! A Slack destination without `url` uses the deployment's `SLACK_WEBHOOK_URL_PARAMETER`, a
//! webhook without `secret` the deployment's `WEBHOOK_SIGNING_SECRET_ARN`, an e-mail
//! destination without `from` the deployment's `ALERT_EMAIL_FROM`.
//!
//! References are resolved when a message is sent (never at start-up: init time counts), each
//! through a [`SecretFetcher`] (one adapter per outside system), and cached per instance for
//! a short TTL (5 minutes) so that a rotated secret is picked up without a redeploy. A failed
//! resolution fails that destination's attempt only (retried, then parked like any failed
//! send), with an error naming the parameter or secret, never its value.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::Secret;

/// Where a destination secret is: inline, or a reference to an outside system.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SecretRef {
    Inline(Secret),
    /// An SSM Parameter Store parameter name (a SecureString, read with decryption).
    Ssm(String),
    /// A Secrets Manager secret ARN or name (its `SecretString` is the secret).
    SecretsManager(String),
}

const REFERENCE_KEYS: &str =
    "allowed: a string, or { ssm = \"/parameter/name\" }, or { secrets_manager = \"secret ARN or name\" }";

impl SecretRef {
    /// What it is, for errors: never the value.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Inline(_) => "the inline value".into(),
            SecretRef::Ssm(name) => format!("SSM parameter `{name}`"),
            SecretRef::SecretsManager(id) => format!("Secrets Manager secret `{id}`"),
        }
    }

    /// Checks a reference's name (inline values are checked by their field).
    pub fn check(&self, field: &str, errors: &mut Vec<String>) {
        match self {
            SecretRef::Inline(_) => {}
            SecretRef::Ssm(name) => {
                let ok = name.len() <= 2048
                    && !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
                if !ok {
                    errors.push(format!(
                        "{field}.ssm: `{name}` is not a parameter name (allowed: 1 to 2048 of A-Z a-z 0-9 _ . - /, e.g. /pql/slack-webhook-url)"
                    ));
                }
            }
            SecretRef::SecretsManager(id) => {
                if id.is_empty() || id.len() > 2048 || id.contains(char::is_whitespace) {
                    errors.push(format!(
                        "{field}.secrets_manager: `{id}` is not a secret ARN or name (allowed: 1 to 2048 characters, no spaces)"
                    ));
                }
            }
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            SecretRef::Inline(secret) => secret.serialize(serializer),
            SecretRef::Ssm(name) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("ssm", name)?;
                map.end()
            }
            SecretRef::SecretsManager(id) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("secrets_manager", id)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RefVisitor;
        impl<'de> Visitor<'de> for RefVisitor {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(REFERENCE_KEYS)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretRef, E> {
                Ok(SecretRef::Inline(Secret::new(v)))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut found: Option<SecretRef> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    let reference = match key.as_str() {
                        "ssm" => SecretRef::Ssm(value),
                        "secrets_manager" => SecretRef::SecretsManager(value),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown secret source `{other}` ({REFERENCE_KEYS})"
                            )))
                        }
                    };
                    if found.replace(reference).is_some() {
                        return Err(de::Error::custom(format!(
                            "a secret reference names one source ({REFERENCE_KEYS})"
                        )));
                    }
                }
                found.ok_or_else(|| {
                    de::Error::custom(format!("an empty secret reference ({REFERENCE_KEYS})"))
                })
            }
        }
        deserializer.deserialize_any(RefVisitor)
    }
}

/// Why a secret could not be read. The message names the parameter or secret, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SecretError {
    /// Whether trying again may help (throttling, a service error) or not (not found, access
    /// denied, not a valid value).
    pub retryable: bool,
    pub message: String,
}

impl SecretError {
    pub fn permanent(message: impl Into<String>) -> Self {
        SecretError {
            retryable: false,
            message: message.into(),
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        SecretError {
            retryable: true,
            message: message.into(),
        }
    }
}

/// Reads one named secret from one outside system.
pub trait SecretFetcher: Send + Sync {
    fn fetch<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret, SecretError>>;
}

/// The deployment's defaults (the function's environment), used by destinations that do not
/// name their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDefaults {
    /// `SLACK_WEBHOOK_URL_PARAMETER`: an SSM parameter holding the Slack webhook URL.
    pub slack_url_parameter: Option<String>,
    /// `WEBHOOK_SIGNING_SECRET_ARN`: a Secrets Manager secret holding the signing secret.
    pub signing_secret_arn: Option<String>,
    /// `ALERT_EMAIL_FROM`: the sender of alert e-mails.
    pub email_from: Option<String>,
}

impl SecretDefaults {
    /// From the environment; an empty value (the template's default) is no value.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        SecretDefaults {
            slack_url_parameter: var("SLACK_WEBHOOK_URL_PARAMETER"),
            signing_secret_arn: var("WEBHOOK_SIGNING_SECRET_ARN"),
            email_from: var("ALERT_EMAIL_FROM"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Ssm,
    SecretsManager,
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Secret)>>>;

/// Resolves secret references, with a per-instance cache.
pub struct Secrets {
    ssm: Option<Arc<dyn SecretFetcher>>,
    secrets_manager: Option<Arc<dyn SecretFetcher>>,
    defaults: SecretDefaults,
    ttl: Duration,
    /// One slot per secret: concurrent sends needing the same secret wait for one read.
    cache: Mutex<HashMap<(Source, String), Slot>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("ssm", &self.ssm.is_some())
            .field("secrets_manager", &self.secrets_manager.is_some())
            .field("defaults", &self.defaults)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// How long a read secret is used before it is read again (rotation is picked up within it).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

impl Secrets {
    /// No outside systems and no defaults: only inline secrets (the local stack, the CLI).
    pub fn inline_only() -> Self {
        Secrets::new(None, None, SecretDefaults::default())
    }

    pub fn new(
        ssm: Option<Arc<dyn SecretFetcher>>,
        secrets_manager: Option<Arc<dyn SecretFetcher>>,
        defaults: SecretDefaults,
    ) -> Self {
        Secrets {
            ssm,
            secrets_manager,
            defaults,
            ttl: DEFAULT_TTL,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn defaults(&self) -> &SecretDefaults {
        &self.defaults
    }

    /// The secret a reference points to (cached for the TTL; errors are not cached).
    pub async fn resolve(&self, reference: &SecretRef) -> Result<Secret, SecretError> {
        let (source, name, fetcher) = match reference {
            SecretRef::Inline(secret) => return Ok(secret.clone()),
            SecretRef::Ssm(name) => (Source::Ssm, name, &self.ssm),
            SecretRef::SecretsManager(id) => (Source::SecretsManager, id, &self.secrets_manager),
        };
        let Some(fetcher) = fetcher else {
            return Err(SecretError::permanent(format!(
                "{}: this notifier cannot read {} (only inline secrets here)",
                reference.describe(),
                match source {
                    Source::Ssm => "SSM parameters",
                    Source::SecretsManager => "Secrets Manager secrets",
                }
            )));
        };
        let slot = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((source, name.clone()))
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((at, secret)) = slot.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(secret.clone());
            }
        }
        let secret = fetcher.fetch(name).await?;
        *slot = Some((Instant::now(), secret.clone()));
        Ok(secret)
    }

    /// Drops a cached secret (e.g. the receiver refused it: it may have been rotated).
    pub fn forget(&self, reference: &SecretRef) {
        let key = match reference {
            SecretRef::Inline(_) => return,
            SecretRef::Ssm(name) => (Source::Ssm, name.clone()),
            SecretRef::SecretsManager(id) => (Source::SecretsManager, id.clone()),
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// The reference a destination's field names, or the deployment's default for it.
    pub fn or_default(
        &self,
        destination: &str,
        field: &str,
        reference: Option<&SecretRef>,
    ) -> Result<SecretRef, SecretError> {
        if let Some(reference) = reference {
            return Ok(reference.clone());
        }
        let (default, variable) = match field {
            "url" => (
                self.defaults
                    .slack_url_parameter
                    .clone()
                    .map(SecretRef::Ssm),
                "SLACK_WEBHOOK_URL_PARAMETER",
            ),
            _ => (
                self.defaults
                    .signing_secret_arn
                    .clone()
                    .map(SecretRef::SecretsManager),
                "WEBHOOK_SIGNING_SECRET_ARN",
            ),
        };
        default.ok_or_else(|| {
            SecretError::permanent(format!(
                "destination `{destination}` has no `{field}` and the deployment has no default ({variable} is not set)"
            ))
        })
    }

    /// A URL secret: resolved, then checked (a referenced value is only seen here).
    pub async fn url(
        &self,
        destination: &str,
        reference: &SecretRef,
    ) -> Result<Secret, SecretError> {
        let url = self.resolve(reference).await?;
        match reqwest::Url::parse(url.expose().trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(Secret::new(url.expose().trim()))
            }
            _ => Err(SecretError::permanent(format!(
                "destination `{destination}`: {} does not hold an http(s) URL with a host (the value is secret and not shown)",
                reference.describe()
            ))),
        }
    }

    /// A signing secret: resolved, then checked.
    pub async fn signing_secret(
        &self,
        destination: &str,
        reference: &SecretRef,
    ) -> Result<Secret, SecretError> {
        let secret = self.resolve(reference).await?;
        if secret.expose().len() < 16 {
            return Err(SecretError::permanent(format!(
                "destination `{destination}`: {} holds a signing secret shorter than 16 characters (the value is not shown)",
                reference.describe()
            )));
        }
        Ok(secret)
    }
}

/// SSM Parameter Store (`GetParameter` with decryption). Building the client does no I/O;
/// nothing is read until a destination needs a parameter.
pub struct SsmParameters {
    client: aws_sdk_ssm::Client,
}

impl SsmParameters {
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        SsmParameters { client }
    }
}

impl SecretFetcher for SsmParameters {
    fn fetch<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret, SecretError>> {
        use aws_sdk_ssm::error::SdkError;
        use aws_sdk_ssm::operation::get_parameter::GetParameterError;
        Box::pin(async move {
            let result = self
                .client
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await;
            let what = format!("SSM parameter `{name}`");
            match result {
                Ok(out) => out
                    .parameter
                    .and_then(|p| p.value)
                    .map(Secret::new)
                    .ok_or_else(|| SecretError::permanent(format!("{what}: no value"))),
                Err(e) => {
                    let text = aws_sdk_ssm::error::DisplayErrorContext(&e).to_string();
                    Err(match &e {
                        SdkError::ServiceError(s) => match s.err() {
                            GetParameterError::ParameterNotFound(_)
                            | GetParameterError::ParameterVersionNotFound(_) => {
                                SecretError::permanent(format!("{what}: not found"))
                            }
                            GetParameterError::InvalidKeyId(_) => SecretError::permanent(format!(
                                "{what}: its KMS key cannot be used: {text}"
                            )),
                            GetParameterError::InternalServerError(_) => {
                                SecretError::retryable(format!("{what}: {text}"))
                            }
                            other => match aws_sdk_ssm::error::ProvideErrorMetadata::code(other) {
                                Some("AccessDeniedException") => SecretError::permanent(format!(
                                    "{what}: access denied (the function's role needs ssm:GetParameter on it, and kms:Decrypt on its key): {text}"
                                )),
                                _ => SecretError::retryable(format!("{what}: {text}")),
                            },
                        },
                        _ => SecretError::retryable(format!("{what}: {text}")),
                    })
                }
            }
        })
    }
}

/// Secrets Manager (`GetSecretValue`; its `SecretString` is the secret).
pub struct SecretsManagerSecrets {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        SecretsManagerSecrets { client }
    }
}

impl SecretFetcher for SecretsManagerSecrets {
    fn fetch<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Secret, SecretError>> {
        use aws_sdk_secretsmanager::error::SdkError;
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        Box::pin(async move {
            let result = self.client.get_secret_value().secret_id(id).send().await;
            let what = format!("Secrets Manager secret `{id}`");
            match result {
                Ok(out) => out.secret_string.map(Secret::new).ok_or_else(|| {
                    SecretError::permanent(format!(
                        "{what}: no SecretString (binary secrets are not supported)"
                    ))
                }),
                Err(e) => {
                    let text = aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string();
                    Err(match &e {
                        SdkError::ServiceError(s) => match s.err() {
                            GetSecretValueError::ResourceNotFoundException(_) => {
                                SecretError::permanent(format!("{what}: not found"))
                            }
                            GetSecretValueError::DecryptionFailure(_) => {
                                SecretError::permanent(format!(
                                    "{what}: cannot be decrypted (the function's role needs kms:Decrypt on its key): {text}"
                                ))
                            }
                            GetSecretValueError::InvalidRequestException(_)
                            | GetSecretValueError::InvalidParameterException(_) => {
                                SecretError::permanent(format!("{what}: {text}"))
                            }
                            GetSecretValueError::InternalServiceError(_) => {
                                SecretError::retryable(format!("{what}: {text}"))
                            }
                            other => match aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(
                                other,
                            ) {
                                Some("AccessDeniedException") => SecretError::permanent(format!(
                                    "{what}: access denied (the function's role needs secretsmanager:GetSecretValue on it): {text}"
                                )),
                                _ => SecretError::retryable(format!("{what}: {text}")),
                            },
                        },
                        _ => SecretError::retryable(format!("{what}: {text}")),
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An outside system in memory: values by name, a call count, an optional delay.
    #[derive(Default)]
    struct Fake {
        values: Mutex<HashMap<String, Result<String, SecretError>>>,
        calls: AtomicUsize,
        delay: Duration,
    }

    impl Fake {
        fn set(&self, name: &str, value: Result<&str, SecretError>) {
            self.values
                .lock()
                .unwrap()
                .insert(name.into(), value.map(str::to_owned));
        }
    }

    impl SecretFetcher for Fake {
        fn fetch<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret, SecretError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                match self.values.lock().unwrap().get(name) {
                    Some(Ok(v)) => Ok(Secret::new(v.clone())),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(SecretError::permanent(format!("`{name}`: not found"))),
                }
            })
        }
    }

    fn secrets(ssm: &Arc<Fake>, sm: &Arc<Fake>, ttl: Duration) -> Secrets {
        Secrets::new(
            Some(ssm.clone() as Arc<dyn SecretFetcher>),
            Some(sm.clone() as Arc<dyn SecretFetcher>),
            SecretDefaults {
                slack_url_parameter: Some("/pql/slack".into()),
                signing_secret_arn: None,
                email_from: None,
            },
        )
        .with_ttl(ttl)
    }

    #[tokio::test]
    async fn cached_for_the_ttl_then_read_again_so_rotation_is_picked_up() {
        let (ssm, sm) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
        ssm.set("/a", Ok("one"));
        let s = secrets(&ssm, &sm, Duration::from_millis(150));
        let a = SecretRef::Ssm("/a".into());
        assert_eq!(s.resolve(&a).await.unwrap().expose(), "one");
        ssm.set("/a", Ok("two"));
        assert_eq!(s.resolve(&a).await.unwrap().expose(), "one", "cached");
        assert_eq!(ssm.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(s.resolve(&a).await.unwrap().expose(), "two", "rotated");
        assert_eq!(ssm.calls.load(Ordering::SeqCst), 2);
        // Same name in the other system is another secret.
        sm.set("/a", Ok("sm"));
        let b = SecretRef::SecretsManager("/a".into());
        assert_eq!(s.resolve(&b).await.unwrap().expose(), "sm");
        // Forgetting (a receiver refused it) reads it again at once.
        ssm.set("/a", Ok("three"));
        s.forget(&a);
        assert_eq!(s.resolve(&a).await.unwrap().expose(), "three");
        // Inline values never reach a fetcher.
        let calls = ssm.calls.load(Ordering::SeqCst) + sm.calls.load(Ordering::SeqCst);
        let inline = SecretRef::Inline(Secret::new("x"));
        assert_eq!(s.resolve(&inline).await.unwrap().expose(), "x");
        assert_eq!(
            ssm.calls.load(Ordering::SeqCst) + sm.calls.load(Ordering::SeqCst),
            calls
        );
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_concurrent_reads_share_one_call() {
        let (ssm, sm) = (
            Arc::new(Fake {
                delay: Duration::from_millis(50),
                ..Fake::default()
            }),
            Arc::new(Fake::default()),
        );
        ssm.set(
            "/a",
            Err(SecretError::retryable("SSM parameter `/a`: throttled")),
        );
        let s = Arc::new(secrets(&ssm, &sm, DEFAULT_TTL));
        let a = SecretRef::Ssm("/a".into());
        let e = s.resolve(&a).await.unwrap_err();
        assert!(e.retryable && e.message.contains("`/a`"), "{e:?}");
        ssm.set("/a", Ok("v"));
        let before = ssm.calls.load(Ordering::SeqCst);
        let reads = (0..10).map(|_| {
            let (s, a) = (s.clone(), a.clone());
            tokio::spawn(async move { s.resolve(&a).await })
        });
        for read in futures::future::join_all(reads).await {
            assert_eq!(read.unwrap().unwrap().expose(), "v");
        }
        assert_eq!(ssm.calls.load(Ordering::SeqCst) - before, 1);
    }

    #[tokio::test]
    async fn defaults_missing_systems_and_bad_values_are_clear_errors_without_values() {
        let (ssm, sm) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
        ssm.set("/pql/slack", Ok("not a url SECRETVALUE"));
        sm.set("arn:whsec", Ok("shortSECRET"));
        let s = secrets(&ssm, &sm, DEFAULT_TTL);
        // Slack without a url: the deployment's parameter.
        let url = s.or_default("team", "url", None).unwrap();
        assert_eq!(url, SecretRef::Ssm("/pql/slack".into()));
        let e = s.url("team", &url).await.unwrap_err();
        assert!(!e.retryable);
        assert!(
            e.message.contains(
                "destination `team`: SSM parameter `/pql/slack` does not hold an http(s) URL"
            ),
            "{e}"
        );
        assert!(!e.message.contains("SECRETVALUE"), "{e}");
        ssm.set("/pql/slack", Ok(" https://hooks.example.com/T/B/X\n"));
        s.forget(&url);
        assert_eq!(
            s.url("team", &url).await.unwrap().expose(),
            "https://hooks.example.com/T/B/X"
        );
        // Webhook without a secret, and no deployment default.
        let e = s.or_default("crm", "secret", None).unwrap_err();
        assert_eq!(
            e.message,
            "destination `crm` has no `secret` and the deployment has no default (WEBHOOK_SIGNING_SECRET_ARN is not set)"
        );
        let e = s
            .signing_secret("crm", &SecretRef::SecretsManager("arn:whsec".into()))
            .await
            .unwrap_err();
        assert!(
            e.message.contains(
                "Secrets Manager secret `arn:whsec` holds a signing secret shorter than 16"
            ),
            "{e}"
        );
        assert!(!e.message.contains("SECRET\""), "{e}");
        // A notifier without outside systems (local stack, CLI) names what it cannot read.
        let e = Secrets::inline_only()
            .resolve(&SecretRef::Ssm("/x".into()))
            .await
            .unwrap_err();
        assert_eq!(
            e.message,
            "SSM parameter `/x`: this notifier cannot read SSM parameters (only inline secrets here)"
        );
        assert!(!e.retryable);
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Holder {
        url: SecretRef,
    }

    #[test]
    fn references_parse_in_toml_and_json_and_round_trip() {
        for (text, expected) in [
            ("url = \"https://x.example/h\"", SecretRef::Inline(Secret::new("https://x.example/h"))),
            ("url = { ssm = \"/pql/slack\" }", SecretRef::Ssm("/pql/slack".into())),
            (
                "url = { secrets_manager = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:x\" }",
                SecretRef::SecretsManager("arn:aws:secretsmanager:eu-west-1:123456789012:secret:x".into()),
            ),
        ] {
            let h: Holder = toml::from_str(text).unwrap();
            assert_eq!(h.url, expected);
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
        }
        assert_eq!(
            serde_json::to_string(&Holder {
                url: SecretRef::Ssm("/p".into())
            })
            .unwrap(),
            r#"{"url":{"ssm":"/p"}}"#
        );
        for (text, expected) in [
            ("url = { vault = \"x\" }", "unknown secret source `vault`"),
            (
                "url = { ssm = \"/a\", secrets_manager = \"b\" }",
                "a secret reference names one source",
            ),
            ("url = {}", "an empty secret reference"),
            ("url = 3", "allowed: a string, or { ssm ="),
        ] {
            let e = toml::from_str::<Holder>(text).unwrap_err().to_string();
            assert!(e.contains(expected), "`{text}`: {e}");
        }
        let mut errors = Vec::new();
        SecretRef::Ssm("/bad name".into()).check("destination[0].url", &mut errors);
        SecretRef::SecretsManager("".into()).check("destination[1].secret", &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("destination[0].url.ssm: `/bad name` is not a parameter name")
        );
        assert!(errors[1]
            .starts_with("destination[1].secret.secrets_manager: `` is not a secret ARN or name"));
    }

    mod sdk {
        use super::*;
        use aws_smithy_mocks::{create_mock_http_client, mock, MockResponseInterceptor, Rule};

        fn ssm_client(rules: &[&Rule]) -> aws_sdk_ssm::Client {
            use aws_sdk_ssm::config::{retry::RetryConfig, BehaviorVersion, Credentials, Region};
            let mut mocks = MockResponseInterceptor::new();
            for rule in rules {
                mocks = mocks.with_rule(rule);
            }
            aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new("eu-west-1"))
                    .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
                    .retry_config(RetryConfig::disabled())
                    .http_client(create_mock_http_client())
                    .interceptor(mocks)
                    .build(),
            )
        }

        fn sm_client(rules: &[&Rule]) -> aws_sdk_secretsmanager::Client {
            use aws_sdk_secretsmanager::config::{
                retry::RetryConfig, BehaviorVersion, Credentials, Region,
            };
            let mut mocks = MockResponseInterceptor::new();
            for rule in rules {
                mocks = mocks.with_rule(rule);
            }
            aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new("eu-west-1"))
                    .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
                    .retry_config(RetryConfig::disabled())
                    .http_client(create_mock_http_client())
                    .interceptor(mocks)
                    .build(),
            )
        }

        #[tokio::test]
        async fn ssm_reads_with_decryption_and_maps_errors() {
            use aws_sdk_ssm::operation::get_parameter::{GetParameterError, GetParameterOutput};
            use aws_sdk_ssm::types::error::{InternalServerError, ParameterNotFound};
            use aws_sdk_ssm::types::Parameter;
            use aws_sdk_ssm::Client;
            let found = mock!(Client::get_parameter)
                .match_requests(|r| {
                    r.name() == Some("/pql/slack") && r.with_decryption() == Some(true)
                })
                .then_output(|| {
                    GetParameterOutput::builder()
                        .parameter(
                            Parameter::builder()
                                .name("/pql/slack")
                                .value("https://hooks.example.com/X")
                                .build(),
                        )
                        .build()
                });
            let missing = mock!(Client::get_parameter)
                .match_requests(|r| r.name() == Some("/missing"))
                .then_error(|| {
                    GetParameterError::ParameterNotFound(ParameterNotFound::builder().build())
                });
            let busy = mock!(Client::get_parameter)
                .match_requests(|r| r.name() == Some("/busy"))
                .then_error(|| {
                    GetParameterError::InternalServerError(InternalServerError::builder().build())
                });
            let denied = mock!(Client::get_parameter)
                .match_requests(|r| r.name() == Some("/denied"))
                .then_error(|| {
                    GetParameterError::generic(
                        aws_sdk_ssm::error::ErrorMetadata::builder()
                            .code("AccessDeniedException")
                            .message("not authorized")
                            .build(),
                    )
                });
            let ssm = SsmParameters::new(ssm_client(&[&found, &missing, &busy, &denied]));
            assert_eq!(
                ssm.fetch("/pql/slack").await.unwrap().expose(),
                "https://hooks.example.com/X"
            );
            let e = ssm.fetch("/missing").await.unwrap_err();
            assert_eq!(
                e,
                SecretError::permanent("SSM parameter `/missing`: not found")
            );
            let e = ssm.fetch("/busy").await.unwrap_err();
            assert!(
                e.retryable && e.message.starts_with("SSM parameter `/busy`: "),
                "{e:?}"
            );
            let e = ssm.fetch("/denied").await.unwrap_err();
            assert!(
                !e.retryable
                    && e.message
                        .contains("access denied (the function's role needs ssm:GetParameter"),
                "{e:?}"
            );
            assert_eq!(found.num_calls(), 1);
        }

        #[tokio::test]
        async fn secrets_manager_reads_the_secret_string_and_maps_errors() {
            use aws_sdk_secretsmanager::operation::get_secret_value::{
                GetSecretValueError, GetSecretValueOutput,
            };
            use aws_sdk_secretsmanager::types::error::{
                DecryptionFailure, InternalServiceError, ResourceNotFoundException,
            };
            use aws_sdk_secretsmanager::Client;
            let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:whsec-AbCdEf";
            let found = mock!(Client::get_secret_value)
                .match_requests(move |r| r.secret_id() == Some(arn) && r.version_id().is_none())
                .then_output(|| {
                    GetSecretValueOutput::builder()
                        .secret_string("whsec_0123456789abcdef")
                        .build()
                });
            let binary = mock!(Client::get_secret_value)
                .match_requests(|r| r.secret_id() == Some("binary"))
                .then_output(|| GetSecretValueOutput::builder().build());
            let missing = mock!(Client::get_secret_value)
                .match_requests(|r| r.secret_id() == Some("missing"))
                .then_error(|| {
                    GetSecretValueError::ResourceNotFoundException(
                        ResourceNotFoundException::builder().build(),
                    )
                });
            let kms = mock!(Client::get_secret_value)
                .match_requests(|r| r.secret_id() == Some("kms"))
                .then_error(|| {
                    GetSecretValueError::DecryptionFailure(DecryptionFailure::builder().build())
                });
            let busy = mock!(Client::get_secret_value)
                .match_requests(|r| r.secret_id() == Some("busy"))
                .then_error(|| {
                    GetSecretValueError::InternalServiceError(
                        InternalServiceError::builder().build(),
                    )
                });
            let sm =
                SecretsManagerSecrets::new(sm_client(&[&found, &binary, &missing, &kms, &busy]));
            assert_eq!(
                sm.fetch(arn).await.unwrap().expose(),
                "whsec_0123456789abcdef"
            );
            let e = sm.fetch("binary").await.unwrap_err();
            assert_eq!(e, SecretError::permanent("Secrets Manager secret `binary`: no SecretString (binary secrets are not supported)"));
            let e = sm.fetch("missing").await.unwrap_err();
            assert_eq!(
                e,
                SecretError::permanent("Secrets Manager secret `missing`: not found")
            );
            let e = sm.fetch("kms").await.unwrap_err();
            assert!(
                !e.retryable
                    && e.message
                        .contains("cannot be decrypted (the function's role needs kms:Decrypt"),
                "{e:?}"
            );
            let e = sm.fetch("busy").await.unwrap_err();
            assert!(e.retryable, "{e:?}");
        }
    }
}
