//! The notify Lambda function (binary `notify`): the alert outbox's stream in, alerts out to
//! Slack, signed webhooks and e-mail. Everything is in the library; this only wires it to the
//! runtime.
//!
//! Environment: the table names (`TENANTS_TABLE`, `ALERTS_TABLE`, `STATE_TABLE`, and
//! `EVENTS_TABLE` as for every function), `SES_ENDPOINT` (optional endpoint override), and the
//! defaults of destinations that name none (`SLACK_WEBHOOK_URL_PARAMETER`,
//! `WEBHOOK_SIGNING_SECRET_ARN`, `ALERT_EMAIL_FROM`: see `pql_notify::secrets`).

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pql_notify::channels::SesMailer;
use pql_notify::secrets::{SecretDefaults, Secrets, SecretsManagerSecrets, SsmParameters};
use pql_notify::Notifier;
use pql_notify_fn::NotifyHandler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // Built once per Lambda instance, reused by every invocation: one AWS configuration for
    // every client (building a client on it does no I/O).
    let config = pql_lambda_init::sdk_config().await?;
    let store = pql_lambda_init::store_with(&config)?;
    let endpoint = std::env::var("SES_ENDPOINT").ok();
    let mailer = Arc::new(SesMailer::from_config(&config, endpoint.as_deref()));
    // Secrets are read on first use, not here.
    let secrets = Secrets::new(
        Some(Arc::new(SsmParameters::new(aws_sdk_ssm::Client::new(
            &config,
        )))),
        Some(Arc::new(SecretsManagerSecrets::new(
            aws_sdk_secretsmanager::Client::new(&config),
        ))),
        SecretDefaults::from_env(),
    );
    let notifier = Notifier::new(store, mailer).with_secrets(Arc::new(secrets));
    let handler = Arc::new(NotifyHandler::new(Arc::new(notifier)));

    // The alerts stream's batches, and the daily warm digest schedule.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let handler = handler.clone();
        async move { handler.invoke(event.payload).await.map_err(Error::from) }
    }))
    .await
}
