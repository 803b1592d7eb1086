//! Delivering one alert: settings, context, route, suppression, then per destination (all at
//! once, independently) claim, send with retries, mark. See `pql_store::deliveries` for the
//! exactly-once protocol and its at-least-once window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pql_store::alerts::Alert;
use pql_store::deliveries::{Claim, Delivery, DeliveryKey, DeliveryState, Finish, WarmDigest};
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, Store, StoreError};
use sha2::Digest as _;

use crate::channels::{post, Attempt, Email, Mailer};
use crate::render::{
    digest_email, digest_slack, digest_webhook, email, slack_message, webhook_payload,
    AlertContext, DigestEntry, EmailContent,
};
use crate::retry::RetryPolicy;
use crate::secrets::{SecretError, SecretRef, Secrets};
use crate::settings::{Channel, Destination, Settings, WarmMode};
use crate::signing::{sign, SIGNATURE_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored notification settings of tenant {tenant} are invalid: {errors}")]
    Settings { tenant: String, errors: String },
    #[error("{0}")]
    Replay(String),
}

/// What happened to one destination of an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// Gave up after the retry policy; stored with the error, `pql alerts replay` resends.
    Parked {
        attempts: u32,
        error: String,
    },
    /// Not sent on purpose, and recorded.
    Suppressed(String),
    /// Already delivered, parked or suppressed by an earlier or concurrent consumer.
    AlreadyDone(DeliveryState),
    /// Another consumer holds an unexpired claim: it is sending now (or crashed, and the
    /// claim frees itself when its lease ends). The caller retries later.
    InFlight,
    /// Our lease expired before we could mark the send: another consumer may send again;
    /// receivers deduplicate on the idempotency key.
    LeaseLost,
}

/// What happened to an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertOutcome {
    /// The tenant has no notification settings.
    NoSettings,
    Routed {
        route: String,
        destinations: Vec<(String, Outcome)>,
    },
}

impl AlertOutcome {
    /// Whether a destination must be retried later (the stream record is reported failed).
    pub fn needs_retry(&self) -> bool {
        matches!(self, AlertOutcome::Routed { destinations, .. }
            if destinations.iter().any(|(_, o)| *o == Outcome::InFlight))
    }
}

/// Spaces messages to one destination (`min_interval_ms`, and after a `429` its
/// `Retry-After`) across every alert this instance sends, so concurrent alerts queue politely
/// instead of each burning attempts on `429`s.
#[derive(Debug, Default)]
struct Pacer {
    next: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    async fn wait(&self, destination: &str, interval: Duration) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.get(destination).copied().unwrap_or(now).max(now);
            next.insert(destination.to_owned(), slot + interval);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    fn push_back(&self, destination: &str, until: Instant) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let entry = next.entry(destination.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn tier_rank(tier: &str) -> u8 {
    match tier {
        "hot" => 2,
        "warm" => 1,
        _ => 0,
    }
}

/// A tenant's settings (or their absence) and when they were read.
type CachedSettings = (Instant, Option<Arc<Settings>>);

/// The notifier: built once per Lambda instance (or local stack, or CLI replay).
pub struct Notifier {
    store: Store,
    /// Built on the first send: loading the system's root certificates is most of a cold
    /// start's work, and a notify instance woken for a batch of suppressed alerts never needs it.
    http: std::sync::OnceLock<reqwest::Client>,
    mailer: Arc<dyn Mailer>,
    policy: RetryPolicy,
    lease: Duration,
    settings_ttl: Duration,
    settings: Mutex<HashMap<TenantId, CachedSettings>>,
    secrets: Arc<Secrets>,
    pacer: Pacer,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("policy", &self.policy)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(store: Store, mailer: Arc<dyn Mailer>) -> Notifier {
        Notifier {
            store,
            http: std::sync::OnceLock::new(),
            mailer,
            policy: RetryPolicy::default(),
            lease: Duration::from_secs(150),
            settings_ttl: Duration::from_secs(30),
            settings: Mutex::new(HashMap::new()),
            secrets: Arc::new(Secrets::inline_only()),
            pacer: Pacer::default(),
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client with default TLS")
        })
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a claim protects a send. A sender stops retrying (and parks) before its lease
    /// ends, so a live sender is never overtaken by another consumer.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long tenant settings are cached (0: read every time).
    pub fn with_settings_ttl(mut self, ttl: Duration) -> Self {
        self.settings_ttl = ttl;
        self
    }

    /// Where referenced secrets are read, and the deployment's defaults (default: inline
    /// secrets only, no defaults).
    pub fn with_secrets(mut self, secrets: Arc<Secrets>) -> Self {
        self.secrets = secrets;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn settings(&self, tenant: &TenantId) -> Result<Option<Arc<Settings>>, NotifyError> {
        if let Some((at, settings)) = self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
        {
            if at.elapsed() < self.settings_ttl {
                return Ok(settings.clone());
            }
        }
        let settings = match self.store.notify_settings(tenant).await? {
            None => None,
            Some(json) => Some(Arc::new(
                Settings::parse_json(&format!("notify#{tenant}"), &json).map_err(|e| {
                    NotifyError::Settings {
                        tenant: tenant.to_string(),
                        errors: e.errors.join("; "),
                    }
                })?,
            )),
        };
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.clone(), (Instant::now(), settings.clone()));
        Ok(settings)
    }

    /// Delivers an alert to every destination of its route; a destination failing does not
    /// hold up the others (they are sent concurrently and finish independently).
    pub async fn deliver(&self, alert: &Alert) -> Result<AlertOutcome, NotifyError> {
        let tenant = TenantId::parse(&alert.tenant).map_err(|e| {
            NotifyError::Store(StoreError::Config(format!("alert of a bad tenant: {e}")))
        })?;
        let Some(settings) = self.settings(&tenant).await? else {
            return Ok(AlertOutcome::NoSettings);
        };
        let record = self
            .store
            .load_record::<AccountRecord>(&tenant, RecordKind::Account, &alert.account)
            .await?;
        let mut context = AlertContext::new(
            alert,
            record.as_ref().map(|r| &r.value),
            settings.most_active_users,
        );
        let route = settings.route(&context.traits);
        context.owner = Settings::owner(route, &context.traits);
        context.link = settings
            .link_template
            .as_ref()
            .map(|t| t.render(&alert.tenant, &alert.account, alert.account_name.as_deref()));
        let mut reason = settings.suppressed_by(&context.traits);
        if reason.is_none() && context.tier == "warm" && route.warm == WarmMode::Skip {
            reason = Some(format!(
                "suppressed: warm alerts are not sent on route `{}`",
                route.name
            ));
        }
        // Warm on a digest route: queued for the day's digest instead of sent.
        let digest_day =
            (reason.is_none() && context.tier == "warm" && route.warm == WarmMode::Digest)
                .then(today);
        let history = if settings.cooldown_days > 0.0 {
            self.store
                .account_deliveries(&tenant, &alert.account)
                .await?
        } else {
            Vec::new()
        };
        let sends = route.destinations.iter().map(|id| {
            let destination = &settings.destinations[id];
            let key = DeliveryKey {
                tenant: tenant.clone(),
                account: alert.account.clone(),
                sequence: alert.sequence,
                destination: id.clone(),
            };
            let reason = reason
                .clone()
                .or_else(|| repeat_of(&history, &key, &context.tier, settings.cooldown_days));
            let context = &context;
            let digest_day = digest_day.as_deref();
            async move {
                let outcome = match (digest_day, &reason) {
                    (Some(day), None) => self.queue_digest(destination, &key, context, day).await?,
                    _ => {
                        self.deliver_to(destination, &key, context, reason.as_deref())
                            .await?
                    }
                };
                log_outcome(&key, destination, &outcome);
                Ok::<_, NotifyError>((id.clone(), outcome))
            }
        });
        let destinations = futures::future::try_join_all(sends).await?;
        Ok(AlertOutcome::Routed {
            route: route.name.clone(),
            destinations,
        })
    }

    async fn deliver_to(
        &self,
        destination: &Destination,
        key: &DeliveryKey,
        context: &AlertContext,
        suppressed: Option<&str>,
    ) -> Result<Outcome, NotifyError> {
        let mut recipients = Vec::new();
        if let Channel::Email { to, .. } = &destination.channel {
            recipients.clone_from(to);
            if let Some(owner) = &context.owner {
                if owner.contains('@') && !recipients.contains(owner) {
                    recipients.push(owner.clone());
                }
            }
        }
        let suppressed = suppressed.map(str::to_owned).or_else(|| {
            (matches!(destination.channel, Channel::Email { .. }) && recipients.is_empty()).then(
                || "suppressed: no recipient (no `to`, and the account has no owner)".to_owned(),
            )
        });
        if let Some(reason) = suppressed {
            if self
                .store
                .suppress_delivery(key, &context.tier, &reason)
                .await?
            {
                return Ok(Outcome::Suppressed(reason));
            }
            return Ok(match self.store.delivery(key).await? {
                Some(d) => Outcome::AlreadyDone(d.state),
                None => Outcome::Suppressed(reason),
            });
        }
        let owner = claim_token();
        let claimed_at = Instant::now();
        let lease_ms = self.lease.as_millis() as i64;
        match self
            .store
            .claim_delivery(key, &owner, now_ms(), lease_ms, &context.tier)
            .await?
        {
            Claim::Won => {}
            Claim::Lost(d) if d.state == DeliveryState::Claimed => return Ok(Outcome::InFlight),
            Claim::Lost(d) => return Ok(Outcome::AlreadyDone(d.state)),
        }
        // Stop retrying well before the lease ends.
        let deadline = claimed_at + self.lease.mul_f64(0.8);
        let finish = self
            .send_with_retries(destination, key, context, &recipients, deadline)
            .await;
        match self
            .store
            .finish_delivery(key, &owner, &context.tier, &finish)
            .await?
        {
            Ok(()) => Ok(match finish {
                Finish::Delivered { attempts } => Outcome::Delivered { attempts },
                Finish::Parked { attempts, error } => Outcome::Parked { attempts, error },
            }),
            Err(_) => Ok(Outcome::LeaseLost),
        }
    }

    async fn send_with_retries(
        &self,
        destination: &Destination,
        key: &DeliveryKey,
        context: &AlertContext,
        recipients: &[String],
        deadline: Instant,
    ) -> Finish {
        let idempotency_key = key.idempotency_key();
        let body = match &destination.channel {
            Channel::Slack { .. } => slack_message(context).to_string().into_bytes(),
            Channel::Webhook { .. } => webhook_payload(context, &idempotency_key)
                .to_string()
                .into_bytes(),
            Channel::Email { .. } => Vec::new(),
        };
        let mail = self.mail(destination, recipients, &idempotency_key, || email(context));
        self.send_loop(
            destination,
            &key.id(),
            idempotency_key,
            body,
            mail,
            deadline,
        )
        .await
    }

    /// The e-mail to send, if the destination is an e-mail one. No `from`: the deployment's
    /// sender; neither is a permanent failure of this send.
    fn mail(
        &self,
        destination: &Destination,
        recipients: &[String],
        idempotency_key: &str,
        content: impl FnOnce() -> EmailContent,
    ) -> Option<Result<Email, String>> {
        match &destination.channel {
            Channel::Email { from, .. } => Some(
                from.clone()
                    .or_else(|| self.secrets.defaults().email_from.clone())
                    .map(|from| Email {
                        from,
                        to: recipients.to_vec(),
                        content: content(),
                        idempotency_key: idempotency_key.to_owned(),
                    })
                    .ok_or_else(|| {
                        format!(
                            "destination `{}` has no `from` and the deployment has no default (ALERT_EMAIL_FROM is not set)",
                            destination.id
                        )
                    }),
            ),
            _ => None,
        }
    }

    /// Sends one message to a destination with the retry policy until `deadline`.
    async fn send_loop(
        &self,
        destination: &Destination,
        log_id: &str,
        idempotency_key: String,
        body: Vec<u8>,
        mail: Option<Result<Email, String>>,
        deadline: Instant,
    ) -> Finish {
        let interval = Duration::from_millis(destination.min_interval_ms);
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        loop {
            self.pacer.wait(&destination.id, interval).await;
            let attempt = match &destination.channel {
                Channel::Slack { url } => {
                    // Resolved on every attempt (cached): a failed read is a failed attempt.
                    let url = match self
                        .secrets
                        .or_default(&destination.id, "url", url.as_ref())
                    {
                        Ok(reference) => self
                            .secrets
                            .url(&destination.id, &reference)
                            .await
                            .map(|url| (reference, url)),
                        Err(e) => Err(e),
                    };
                    match url {
                        Ok((reference, url)) => {
                            let attempt = post(
                                self.http(),
                                &url,
                                &[("idempotency-key", idempotency_key.clone())],
                                body.clone(),
                                self.policy.timeout,
                            )
                            .await;
                            self.forget_if_refused(&attempt, &reference);
                            attempt
                        }
                        Err(e) => secret_failure(e),
                    }
                }
                Channel::Webhook { url, secret } => {
                    let resolved = async {
                        let reference =
                            self.secrets
                                .or_default(&destination.id, "secret", secret.as_ref())?;
                        let url = self.secrets.url(&destination.id, url).await?;
                        let secret = self
                            .secrets
                            .signing_secret(&destination.id, &reference)
                            .await?;
                        Ok::<_, SecretError>((reference, url, secret))
                    };
                    match resolved.await {
                        Ok((reference, resolved_url, secret)) => {
                            let t = now_ms() / 1000;
                            let signature = sign(secret.expose().as_bytes(), t, &body);
                            let attempt = post(
                                self.http(),
                                &resolved_url,
                                &[
                                    (SIGNATURE_HEADER, signature),
                                    ("idempotency-key", idempotency_key.clone()),
                                ],
                                body.clone(),
                                self.policy.timeout,
                            )
                            .await;
                            // A refused signature may be a rotated secret: read both again.
                            self.forget_if_refused(&attempt, &reference);
                            self.forget_if_refused(&attempt, url);
                            attempt
                        }
                        Err(e) => secret_failure(e),
                    }
                }
                Channel::Email { .. } => {
                    match mail.as_ref().expect("built for e-mail destinations") {
                        Ok(mail) => self.mailer.send(mail).await,
                        Err(e) => Attempt::Permanent(e.clone()),
                    }
                }
            };
            let attempts = failures + rate_limited + 1;
            let wait = match attempt {
                Attempt::Sent => return Finish::Delivered { attempts },
                Attempt::Permanent(error) => return Finish::Parked { attempts, error },
                Attempt::RateLimited { retry_after, error } => {
                    rate_limited += 1;
                    if rate_limited >= self.policy.max_rate_limited {
                        return Finish::Parked {
                            attempts,
                            error: format!(
                                "still rate limited after {rate_limited} tries: {error}"
                            ),
                        };
                    }
                    let wait =
                        self.policy
                            .rate_limited(retry_after, rate_limited, &mut rand::rng());
                    tracing::debug!(destination = destination.id, ?wait, "rate limited");
                    self.pacer.push_back(&destination.id, Instant::now() + wait);
                    (wait, error)
                }
                Attempt::Retryable(error) => {
                    failures += 1;
                    if failures >= self.policy.max_attempts {
                        return Finish::Parked { attempts, error };
                    }
                    (self.policy.backoff(failures, &mut rand::rng()), error)
                }
            };
            let (wait, error) = wait;
            if Instant::now() + wait >= deadline {
                return Finish::Parked {
                    attempts,
                    error: format!("gave up before the claim's lease ends: {error}"),
                };
            }
            tracing::info!(
                delivery = log_id,
                attempts,
                wait_ms = wait.as_millis() as u64,
                error,
                "send failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Queues a warm alert into the destination's digest of `day` (a later day if that one
    /// is already being sent) and records the delivery as not sent, with the day. An alert
    /// already recorded (a redelivery) is not queued again.
    async fn queue_digest(
        &self,
        destination: &Destination,
        key: &DeliveryKey,
        context: &AlertContext,
        day: &str,
    ) -> Result<Outcome, NotifyError> {
        if let Some(done) = self.store.delivery(key).await? {
            return Ok(Outcome::AlreadyDone(done.state));
        }
        let entry = serde_json::to_string(&DigestEntry::from_context(context))
            .expect("digest entries serialise");
        let mut day = day.to_owned();
        while !self
            .store
            .queue_for_digest(
                &key.tenant,
                &day,
                &destination.id,
                &key.account,
                key.sequence,
                &entry,
            )
            .await?
        {
            day = next_day(&day);
        }
        let reason = format!("queued for the warm digest of {day}");
        if self
            .store
            .suppress_delivery(key, &context.tier, &reason)
            .await?
        {
            return Ok(Outcome::Suppressed(reason));
        }
        Ok(match self.store.delivery(key).await? {
            Some(d) => Outcome::AlreadyDone(d.state),
            None => Outcome::Suppressed(reason),
        })
    }

    /// The daily run: sends every destination's warm digest of the 7 days before `today`
    /// not sent yet (a missed run is caught up), each exactly once (claim, send, mark).
    pub async fn send_digests(
        &self,
        today: chrono::NaiveDate,
    ) -> Result<Vec<(String, Outcome)>, NotifyError> {
        let mut outcomes = Vec::new();
        for back in (1..=7).rev() {
            let day = (today - chrono::Days::new(back))
                .format("%Y-%m-%d")
                .to_string();
            for (tenant, destination) in self.store.digest_index(&day).await? {
                let outcome = self.send_digest(&tenant, &day, &destination).await?;
                let id = format!("{tenant}/{day}/{destination}");
                log_digest(&id, &outcome);
                outcomes.push((id, outcome));
            }
        }
        Ok(outcomes)
    }

    async fn send_digest(
        &self,
        tenant: &TenantId,
        day: &str,
        destination_id: &str,
    ) -> Result<Outcome, NotifyError> {
        let owner = claim_token();
        let claimed_at = Instant::now();
        let lease_ms = self.lease.as_millis() as i64;
        let Some(digest) = self
            .store
            .claim_digest(tenant, day, destination_id, &owner, now_ms(), lease_ms)
            .await?
        else {
            return Ok(
                match self.store.digest(tenant, day, destination_id).await? {
                    Some(d) if d.state == "claimed" => Outcome::InFlight,
                    Some(d) if d.state == "parked" => Outcome::AlreadyDone(DeliveryState::Parked),
                    Some(d) if d.state == "delivered" => {
                        Outcome::AlreadyDone(DeliveryState::Delivered)
                    }
                    _ => Outcome::Suppressed("no digest pending".into()),
                },
            );
        };
        let id = format!("{tenant}/{day}/{destination_id}");
        let settings = self.settings(tenant).await?;
        let Some(destination) = settings
            .as_ref()
            .and_then(|s| s.destinations.get(destination_id))
        else {
            let error = format!(
                "destination `{destination_id}` is no longer in the tenant's notification settings"
            );
            let finish = Finish::Parked { attempts: 0, error };
            return self.finish_digest(&digest, &owner, finish, 0).await;
        };
        // An account that turned hot since got its hot alert at once: not listed again.
        let mut entries = Vec::new();
        for (account, sequence, data) in &digest.entries {
            let alerts = self.store.alerts(tenant, account).await?;
            if alerts
                .iter()
                .any(|a| a.sequence > *sequence && a.tier.as_str() == "hot")
            {
                continue;
            }
            match serde_json::from_str::<DigestEntry>(data) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    tracing::error!(digest = id, account, error = %e, "unreadable digest entry: left out")
                }
            }
        }
        if entries.is_empty() {
            // Nothing left to say: recorded as done, nothing sent.
            self.finish_digest(&digest, &owner, Finish::Delivered { attempts: 0 }, 0)
                .await?;
            return Ok(Outcome::Suppressed(
                "every queued account turned hot: no digest sent".into(),
            ));
        }
        let idempotency_key = format!(
            "pql_digest_{}",
            &hex::encode(sha2::Sha256::digest(id.as_bytes()))[..32]
        );
        let body = match &destination.channel {
            Channel::Slack { .. } => digest_slack(day, &entries).to_string().into_bytes(),
            Channel::Webhook { .. } => {
                digest_webhook(tenant.as_str(), day, &entries, &idempotency_key)
                    .to_string()
                    .into_bytes()
            }
            Channel::Email { .. } => Vec::new(),
        };
        let to = match &destination.channel {
            Channel::Email { to, .. } => to.clone(),
            _ => Vec::new(),
        };
        let finish = if matches!(destination.channel, Channel::Email { .. }) && to.is_empty() {
            Finish::Parked {
                attempts: 0,
                error: "no recipient: a digest goes to the destination's `to` (it lists several accounts, so no owner)".into(),
            }
        } else {
            let mail = self.mail(destination, &to, &idempotency_key, || {
                digest_email(day, &entries)
            });
            let deadline = claimed_at + self.lease.mul_f64(0.8);
            self.send_loop(destination, &id, idempotency_key, body, mail, deadline)
                .await
        };
        self.finish_digest(&digest, &owner, finish, entries.len() as u32)
            .await
    }

    async fn finish_digest(
        &self,
        digest: &WarmDigest,
        owner: &str,
        finish: Finish,
        listed: u32,
    ) -> Result<Outcome, NotifyError> {
        Ok(
            match self
                .store
                .finish_digest(digest, owner, &finish, listed)
                .await?
            {
                Ok(()) => match finish {
                    Finish::Delivered { attempts } => Outcome::Delivered { attempts },
                    Finish::Parked { attempts, error } => Outcome::Parked { attempts, error },
                },
                Err(_) => Outcome::LeaseLost,
            },
        )
    }

    /// A receiver refusing us (`401`, `403`, `404`: a revoked webhook, a rotated secret) drops
    /// the cached secret, so the next attempt or alert reads the current one.
    fn forget_if_refused(&self, attempt: &Attempt, reference: &SecretRef) {
        if let Attempt::Permanent(error) = attempt {
            if ["HTTP 401", "HTTP 403", "HTTP 404"]
                .iter()
                .any(|code| error.starts_with(code))
            {
                self.secrets.forget(reference);
            }
        }
    }

    /// `pql alerts replay`: releases a parked delivery and delivers its alert again (the
    /// alert's other destinations, already done, are left alone).
    pub async fn replay(&self, key: &DeliveryKey) -> Result<AlertOutcome, NotifyError> {
        if !self.store.release_for_replay(key).await? {
            let state = self.store.delivery(key).await?;
            return Err(NotifyError::Replay(match state {
                None => format!("{}: no such delivery", key.id()),
                Some(d) => format!(
                    "{}: only parked deliveries can be replayed (this one is {})",
                    key.id(),
                    d.state.as_str()
                ),
            }));
        }
        let alert = self
            .store
            .alert(&key.tenant, &key.account, key.sequence)
            .await?
            .ok_or_else(|| NotifyError::Replay(format!("{}: the alert is gone", key.id())))?;
        self.deliver(&alert).await
    }
}

/// A secret that could not be read fails the attempt like a failed send.
fn secret_failure(e: SecretError) -> Attempt {
    if e.retryable {
        Attempt::Retryable(e.message)
    } else {
        Attempt::Permanent(e.message)
    }
}

/// Today (UTC), the day warm alerts are queued for.
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn next_day(day: &str) -> String {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.checked_add_days(chrono::Days::new(1)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(today)
}

fn log_digest(id: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Delivered { attempts } => {
            tracing::info!(digest = id, attempts, "digest delivered")
        }
        Outcome::Parked { attempts, error } => {
            tracing::error!(digest = id, attempts, error, "digest parked after retries")
        }
        other => tracing::info!(digest = id, outcome = ?other, "digest not sent"),
    }
}

fn claim_token() -> String {
    use rand::RngExt;
    format!("{:032x}", rand::rng().random::<u128>())
}

/// A repeat: this destination already got an alert of this account, of this tier or higher,
/// within the cooldown. (An escalation, warm then hot, is not a repeat.)
fn repeat_of(
    history: &[Delivery],
    key: &DeliveryKey,
    tier: &str,
    cooldown_days: f64,
) -> Option<String> {
    let now = pql_engine::Timestamp::now();
    history
        .iter()
        .filter(|d| {
            d.key.destination == key.destination
                && d.key.sequence < key.sequence
                && d.state == DeliveryState::Delivered
                && tier_rank(d.tier.as_deref().unwrap_or("")) >= tier_rank(tier)
        })
        .find_map(|d| {
            let at = pql_engine::Timestamp::parse(d.delivered_at.as_deref()?).ok()?;
            (at.days_before(now) < cooldown_days).then(|| {
                format!(
                    "suppressed: repeat of alert #{} ({}) delivered {} to this destination, within the {cooldown_days}-day cooldown",
                    d.key.sequence,
                    d.tier.as_deref().unwrap_or("?"),
                    d.delivered_at.as_deref().unwrap_or("?")
                )
            })
        })
}

fn log_outcome(key: &DeliveryKey, destination: &Destination, outcome: &Outcome) {
    let id = key.id();
    let kind = destination.channel.kind();
    match outcome {
        Outcome::Delivered { attempts } => {
            tracing::info!(delivery = id, kind, attempts, "delivered")
        }
        Outcome::Parked { attempts, error } => {
            tracing::error!(delivery = id, kind, attempts, error, "parked after retries")
        }
        Outcome::Suppressed(reason) => tracing::info!(delivery = id, kind, reason, "not sent"),
        Outcome::AlreadyDone(state) => {
            tracing::info!(delivery = id, kind, state = state.as_str(), "already handled")
        }
        Outcome::InFlight => tracing::info!(delivery = id, kind, "being sent by another consumer"),
        Outcome::LeaseLost => tracing::warn!(
            delivery = id,
            kind,
            "sent, but the claim expired first: the receiver may see it twice (same idempotency key)"
        ),
    }
}
