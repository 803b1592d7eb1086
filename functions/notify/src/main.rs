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
use pql_lambda_init::OnFirstUse;
use pql_notify::channels::SesMailer;
use pql_notify::secrets::{SecretDefaults, Secrets, SecretsManagerSecrets, SsmParameters};
use pql_notify::Notifier;
use pql_notify_fn::NotifyHandler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pql_lambda_init::init_logs();
    // At init, only what fails fast: the settings. The AWS configuration and the clients
    // (DynamoDB, SES, SSM, Secrets Manager: one configuration for all) are built by the first
    // invocation, once per instance, and reused. Secrets are read on first use.
    let tables = pql_lambda_init::tables_from_env()?;
    let ses_endpoint = std::env::var("SES_ENDPOINT").ok();
    let defaults = SecretDefaults::from_env();
    let handler = OnFirstUse::new("the AWS clients", || async {
        let config = pql_lambda_init::sdk_config().await?;
        let store = pql_lambda_init::store_with(&config, tables.clone());
        let mailer = SesMailer::from_config(&config, ses_endpoint.as_deref());
        let secrets = Secrets::new(
            Some(Arc::new(SsmParameters::new(aws_sdk_ssm::Client::new(
                &config,
            )))),
            Some(Arc::new(SecretsManagerSecrets::new(
                aws_sdk_secretsmanager::Client::new(&config),
            ))),
            defaults.clone(),
        );
        let notifier = Notifier::new(store, Arc::new(mailer)).with_secrets(Arc::new(secrets));
        Ok::<_, Error>(NotifyHandler::new(Arc::new(notifier)))
    });

    // The alerts stream's batches, and the daily warm digest schedule.
    let handler = &handler;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Error>(handler.get().await?.invoke(event.payload).await?)
        },
    ))
    .await
}
