//! Sending one message once: HTTP posts (Slack, webhooks) and e-mail (SES, or a directory).
//! Each attempt is classified for the retry policy; nothing here retries or logs secrets.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::render::EmailContent;
use crate::retry::parse_retry_after;
use crate::secret::Secret;

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Sent,
    /// `429`: wait `Retry-After` (if given) and try again.
    RateLimited {
        retry_after: Option<Duration>,
        error: String,
    },
    /// May pass: timeouts, connection errors, `408`, `5xx`, SES throttling.
    Retryable(String),
    /// Cannot pass by retrying: other `4xx`, a rejected e-mail.
    Permanent(String),
}

/// Posts `body` to a secret URL. Errors never contain the URL.
pub async fn post(
    http: &reqwest::Client,
    url: &Secret,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Attempt {
    let mut request = http
        .post(url.expose())
        .timeout(timeout)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("pql-notify/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) => {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            // `without_url`: the URL is the secret of a Slack webhook.
            return Attempt::Retryable(format!("{kind}: {}", e.without_url()));
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Sent;
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let text = response.text().await.unwrap_or_default();
    let snippet: String = text.chars().take(200).collect();
    let error = format!("HTTP {}: {}", status.as_u16(), snippet.trim());
    match status.as_u16() {
        429 => Attempt::RateLimited { retry_after, error },
        408 | 425 | 500..=599 => Attempt::Retryable(error),
        _ => Attempt::Permanent(error),
    }
}

/// One e-mail to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub from: String,
    pub to: Vec<String>,
    pub content: EmailContent,
    /// Also the file name of the directory sink, and a header of the message.
    pub idempotency_key: String,
}

/// Sends e-mail: [`SesMailer`] in AWS, [`DirectoryMailer`] locally.
pub trait Mailer: Send + Sync {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Attempt>;
}

/// Amazon SES (v2 `SendEmail`, simple content: text and HTML).
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        SesMailer { client }
    }

    /// From the environment's AWS configuration; `endpoint` overrides the SES endpoint (a
    /// local SES emulator).
    pub async fn from_env(endpoint: Option<&str>) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        SesMailer::from_config(&config, endpoint)
    }

    /// On a configuration the caller already built (the Lambda function's, built once).
    pub fn from_config(config: &aws_config::SdkConfig, endpoint: Option<&str>) -> Self {
        let mut builder = aws_sdk_sesv2::config::Builder::from(config);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        SesMailer::new(aws_sdk_sesv2::Client::from_conf(builder.build()))
    }
}

impl Mailer for SesMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Attempt> {
        use aws_sdk_sesv2::types::{
            Body, Content, Destination, EmailContent, Message, MessageHeader,
        };
        Box::pin(async move {
            let content = |text: &str| {
                Content::builder()
                    .data(text)
                    .charset("UTF-8")
                    .build()
                    .expect("data is set")
            };
            let header = MessageHeader::builder()
                .name("X-PQL-Idempotency-Key")
                .value(&email.idempotency_key)
                .build()
                .expect("name and value are set");
            let message = Message::builder()
                .subject(content(&email.content.subject))
                .body(
                    Body::builder()
                        .text(content(&email.content.text))
                        .html(content(&email.content.html))
                        .build(),
                )
                .headers(header)
                .build();
            let result = self
                .client
                .send_email()
                .from_email_address(&email.from)
                .destination(
                    Destination::builder()
                        .set_to_addresses(Some(email.to.clone()))
                        .build(),
                )
                .content(EmailContent::builder().simple(message).build())
                .send()
                .await;
            match result {
                Ok(_) => Attempt::Sent,
                Err(e) => {
                    use aws_sdk_sesv2::error::SdkError;
                    use aws_sdk_sesv2::operation::send_email::SendEmailError;
                    let message = aws_sdk_sesv2::error::DisplayErrorContext(&e).to_string();
                    match &e {
                        SdkError::ServiceError(s) => match s.err() {
                            SendEmailError::TooManyRequestsException(_)
                            | SendEmailError::LimitExceededException(_) => Attempt::RateLimited {
                                retry_after: None,
                                error: message,
                            },
                            SendEmailError::BadRequestException(_)
                            | SendEmailError::MessageRejected(_)
                            | SendEmailError::MailFromDomainNotVerifiedException(_)
                            | SendEmailError::AccountSuspendedException(_)
                            | SendEmailError::SendingPausedException(_)
                            | SendEmailError::NotFoundException(_) => Attempt::Permanent(message),
                            _ => Attempt::Retryable(message),
                        },
                        _ => Attempt::Retryable(message),
                    }
                }
            }
        })
    }
}

/// The local stack's e-mail sink: one JSON file per message, named by its idempotency key
/// (so a second send of the same alert overwrites rather than duplicates).
#[derive(Debug, Clone)]
pub struct DirectoryMailer {
    pub dir: PathBuf,
}

impl Mailer for DirectoryMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let value = serde_json::json!({
                "from": email.from,
                "to": email.to,
                "subject": email.content.subject,
                "text": email.content.text,
                "html": email.content.html,
                "idempotency_key": email.idempotency_key,
            });
            let path = self.dir.join(format!("{}.json", email.idempotency_key));
            let write = async {
                tokio::fs::create_dir_all(&self.dir).await?;
                let tmp = path.with_extension("tmp");
                tokio::fs::write(&tmp, serde_json::to_vec_pretty(&value)?).await?;
                tokio::fs::rename(&tmp, &path).await
            };
            match write.await {
                Ok(()) => Attempt::Sent,
                Err(e) => Attempt::Retryable(format!("cannot write {}: {e}", path.display())),
            }
        })
    }
}

/// A mailer for tenants without e-mail destinations: every send fails permanently.
#[derive(Debug, Clone, Default)]
pub struct NoMailer;

impl Mailer for NoMailer {
    fn send<'a>(&'a self, _email: &'a Email) -> BoxFuture<'a, Attempt> {
        Box::pin(async { Attempt::Permanent("e-mail is not configured for this function".into()) })
    }
}
