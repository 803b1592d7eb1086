//! The handler: one HTTP request of the Segment Tracking API in, one response out. Everything
//! that can go wrong becomes a response ([`IngestError`]), so the handler itself cannot fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_http::{Body, Request, Response};
use pql_engine::event::{parse_call, parse_payload};
use pql_engine::{Event, Timestamp};
use pql_store::events::PutOutcome;
use pql_store::tenants::TenantId;
use tracing::{field, Instrument};

use crate::auth::{self, KeyCache, WriteKey};
use crate::body;
use crate::response::{IngestError, Ingested, Rejected, MAX_BATCH_EVENTS};
use crate::routes::Route;
use crate::sink::EventSink;

/// Days an event is kept (and deduplicated) when `EVENT_RETENTION_DAYS` is not set.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// How long a warm function trusts a write key it has looked up.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(60);
const MAX_RETENTION_DAYS: u32 = 3_650;

/// The function's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub retention_days: u32,
    /// Zero turns the write-key cache off.
    pub key_cache_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention_days: DEFAULT_RETENTION_DAYS,
            key_cache_ttl: DEFAULT_KEY_CACHE_TTL,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is `{value}`; it must be a whole number from {min} to {max}")]
    OutOfRange {
        name: &'static str,
        value: String,
        min: u64,
        max: u64,
    },
}

impl Config {
    /// `EVENT_RETENTION_DAYS` (1 to 3650, default 90) and `WRITE_KEY_CACHE_SECONDS` (0 to 3600,
    /// default 60), read through `var` so tests need not touch the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let number = |name: &'static str, default: u64, min: u64, max: u64| match var(name) {
            None => Ok(default),
            Some(value) => match value.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ConfigError::OutOfRange {
                    name,
                    value,
                    min,
                    max,
                }),
            },
        };
        let retention_days = number(
            "EVENT_RETENTION_DAYS",
            DEFAULT_RETENTION_DAYS.into(),
            1,
            MAX_RETENTION_DAYS.into(),
        )?;
        let cache_seconds = number(
            "WRITE_KEY_CACHE_SECONDS",
            DEFAULT_KEY_CACHE_TTL.as_secs(),
            0,
            3_600,
        )?;
        Ok(Config {
            retention_days: u32::try_from(retention_days).expect("at most 3650"),
            key_cache_ttl: Duration::from_secs(cache_seconds),
        })
    }

    /// [`Config::from_vars`] over the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(|name| std::env::var(name).ok())
    }
}

/// The server's receive time; a fixed one in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything a request needs, built once per function instance.
pub struct App<S> {
    sink: S,
    config: Config,
    clock: Clock,
    keys: KeyCache,
}

impl<S: EventSink> App<S> {
    pub fn new(sink: S, config: Config) -> App<S> {
        let keys = KeyCache::new(config.key_cache_ttl);
        App {
            sink,
            config,
            clock: Arc::new(Timestamp::now),
            keys,
        }
    }

    /// Replaces the receive-time clock (tests fix it).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Answers one request. Logs the route, the tenant and the counts; never the write key or
    /// the calls themselves.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let started = Instant::now();
        let route = match Route::parse(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(error) => {
                tracing::info!(
                    status = error.status().as_u16(),
                    error = error.code(),
                    "no route"
                );
                return error.into_response();
            }
        };
        let span = tracing::info_span!("ingest", route = route.name(), tenant = field::Empty);
        async {
            match self.ingest(route, &request).await {
                Ok(ingested) => {
                    tracing::info!(
                        status = 200,
                        accepted = ingested.accepted(),
                        stored = ingested.stored,
                        duplicates = ingested.duplicates,
                        corrected = ingested.corrected,
                        rejected = ingested.rejected.len(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "ingested"
                    );
                    ingested.into_response()
                }
                Err(error) => {
                    let status = error.status().as_u16();
                    if let IngestError::Unavailable(cause) = &error {
                        tracing::error!(status, error = error.code(), cause = %cause, "store failed");
                    } else {
                        tracing::info!(status, error = error.code(), "rejected");
                    }
                    error.into_response()
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn ingest(&self, route: Route, request: &Request) -> Result<Ingested, IngestError> {
        let header_key = auth::from_headers(request.headers())?;
        let body = body::decode(request.headers(), request.body().as_ref())?;
        let key = match header_key {
            Some(key) => key,
            None => auth::from_body(&body)?.ok_or(IngestError::MissingWriteKey)?,
        };
        let tenant = self.tenant(key).await?;
        tracing::Span::current().record("tenant", tenant.as_str());

        let received_at = (self.clock)();
        let results = match route {
            Route::Batch => {
                parse_payload(&body, Some(received_at)).map_err(IngestError::Payload)?
            }
            Route::Call(call) => vec![Ok(parse_call(&body, Some(call.name()), Some(received_at))
                .map_err(IngestError::Payload)?)],
        };
        if results.len() > MAX_BATCH_EVENTS {
            return Err(IngestError::TooManyEvents {
                count: results.len(),
            });
        }
        drop(body);

        let mut events: Vec<Event> = Vec::with_capacity(results.len());
        let mut ingested = Ingested::default();
        for (index, result) in results.into_iter().enumerate() {
            match result {
                Ok(event) => events.push(event),
                Err(error) => ingested.rejected.push(Rejected { index, error }),
            }
        }
        if !events.is_empty() {
            let outcomes = self
                .sink
                .put_events(&tenant, &events, self.config.retention_days)
                .await
                .map_err(IngestError::Unavailable)?;
            for outcome in outcomes {
                match outcome {
                    PutOutcome::Stored => ingested.stored += 1,
                    PutOutcome::Duplicate => ingested.duplicates += 1,
                    PutOutcome::Corrected => ingested.corrected += 1,
                }
            }
        }
        Ok(ingested)
    }

    async fn tenant(&self, key: WriteKey) -> Result<TenantId, IngestError> {
        if let Some(tenant) = self.keys.get(&key) {
            return Ok(tenant);
        }
        let tenant = self
            .sink
            .tenant_for_write_key(key.expose())
            .await
            .map_err(IngestError::Unavailable)?
            .ok_or(IngestError::UnknownWriteKey)?;
        self.keys.insert(key, tenant.clone());
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_variables() {
        let none = |_: &str| None;
        assert_eq!(Config::from_vars(none).unwrap(), Config::default());
        let set = |name: &str| match name {
            "EVENT_RETENTION_DAYS" => Some("30".to_owned()),
            "WRITE_KEY_CACHE_SECONDS" => Some("0".to_owned()),
            _ => None,
        };
        assert_eq!(
            Config::from_vars(set).unwrap(),
            Config {
                retention_days: 30,
                key_cache_ttl: Duration::ZERO
            }
        );
        for bad in ["0", "-1", "ninety", "3651"] {
            let err = Config::from_vars(|name: &str| {
                (name == "EVENT_RETENTION_DAYS").then(|| bad.to_owned())
            })
            .unwrap_err();
            assert!(err.to_string().contains("EVENT_RETENTION_DAYS"), "{err}");
        }
    }
}
