//! The local stack: the pipeline of the SAM template, on one machine.
//!
//! * DynamoDB Local (started here, or any endpoint given), with the tables created from
//!   `infra/template.yaml` under a fresh prefix;
//! * a tenant seeded with its write key and definition;
//! * the ingest function's handler behind a local HTTP server;
//! * the activation and qualify handlers fed by the stream pump, which reproduces the Lambda
//!   event-source mappings (batching, retries, bisection, partial batch failures, parking);
//! * the sweep handler on a timer.
//!
//! `pql local`, `pql demo` and the end-to-end tests all start it with [`LocalStack::start`] and
//! stop it with [`LocalStack::stop`]; nothing is left running afterwards.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pql_activation::Activation;
use pql_dynamodb_local::DynamoDbLocal;
use pql_engine::{Definition, Timestamp};
use pql_ingest::{App, Config as IngestConfig};
use pql_qualify::Qualifier;
use pql_store::tenants::TenantId;
use pql_store::{template, Store, Tables};
use pql_stream_pump::{
    CancellationToken, DynamoDbEventResponse, Event, HandlerError, MappingConfig, Parked,
    RecordFilter, StartingPosition,
};
use pql_sweep::Sweeper;
use tokio::task::JoinSet;

/// The one description of the tables: the SAM template, compiled in.
pub use pql_store::template::SAM_TEMPLATE as TEMPLATE;

/// How often the local pumps read a shard that had nothing new. Lambda polls a stream shard
/// about four times a second; locally a shorter pause keeps the demo and the tests snappy.
const LOCAL_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The pump settings of the template's event-source mapping for `function` (a logical id such
/// as `ActivationFunction`): batch size, batching window, retries, bisection, partial batch
/// responses, starting position and `FilterCriteria`, so the local stack delivers to each
/// handler what Lambda would.
///
/// The template is compiled in and its mappings are checked by `pql_store::template`'s tests,
/// so a missing mapping is a bug in the build, not an input error.
pub fn template_mapping(function: &str) -> MappingConfig {
    let spec = template::mapping_for(TEMPLATE, function)
        .unwrap_or_else(|e| panic!("infra/template.yaml: {e}"))
        .unwrap_or_else(|| {
            panic!("infra/template.yaml has no event-source mapping for {function}")
        });
    mapping_config(&spec)
}

fn mapping_config(spec: &template::MappingSpec) -> MappingConfig {
    let defaults = MappingConfig::default();
    let filter = (!spec.filters.is_empty()).then(|| {
        let spec = spec.clone();
        let description = format!("{} FilterCriteria {:?}", spec.logical_id, spec.filters);
        // The patterns are written against the record as the function receives it, which is
        // what `EventRecord` serialises to.
        RecordFilter::new(description, move |record| {
            serde_json::to_value(record).is_ok_and(|value| spec.accepts(&value))
        })
    });
    MappingConfig {
        batch_size: spec.batch_size as usize,
        batching_window: spec.batching_window,
        // Lambda's default (retry until the record expires) would stall a local shard for a
        // day; the template always sets a bound, and the pump's own bound stands in otherwise.
        maximum_retry_attempts: spec
            .maximum_retry_attempts
            .unwrap_or(defaults.maximum_retry_attempts),
        bisect_batch_on_function_error: spec.bisect_batch_on_function_error,
        report_batch_item_failures: spec.report_batch_item_failures,
        starting_position: if spec.starting_position == "LATEST" {
            StartingPosition::Latest
        } else {
            StartingPosition::TrimHorizon
        },
        poll_interval: LOCAL_POLL_INTERVAL,
        filter,
        ..defaults
    }
}

/// A stream handler as a value: what the activation pump invokes.
pub type BoxedHandler = Arc<
    dyn Fn(
            Event,
        )
            -> Pin<Box<dyn Future<Output = Result<DynamoDbEventResponse, HandlerError>> + Send>>
        + Send
        + Sync,
>;

/// Wraps the activation handler (tests: inject a failure, count invocations). Not for production.
#[derive(Clone)]
pub struct WrapHandler(pub Arc<dyn Fn(BoxedHandler) -> BoxedHandler + Send + Sync>);

impl std::fmt::Debug for WrapHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrapHandler(..)")
    }
}

/// The notify function in the local stack: the alerts table's stream, delivered per `settings`
/// (stored as the tenant's notification settings), e-mails written to `email_dir`.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    pub settings: pql_notify::Settings,
    /// Where e-mails go (one JSON file each); `None`: e-mail destinations fail (parked).
    pub email_dir: Option<PathBuf>,
    /// Event-source mapping of the notify function (alerts table stream), the template's.
    pub mapping: MappingConfig,
    pub retry: pql_notify::retry::RetryPolicy,
}

impl NotifyOptions {
    /// Delivery per `settings`, through the template's mapping for the notify function.
    pub fn new(settings: pql_notify::Settings) -> NotifyOptions {
        NotifyOptions {
            settings,
            email_dir: None,
            mapping: template_mapping("NotifyFunction"),
            retry: pql_notify::retry::RetryPolicy::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Use this DynamoDB (e.g. one already running) instead of starting DynamoDB Local.
    pub dynamodb_endpoint: Option<String>,
    /// Where the ingest server listens (port 0: any free port).
    pub listen: SocketAddr,
    pub tenant: TenantId,
    pub write_key: String,
    pub definition: Definition,
    /// Prefix of the table names, so several stacks can share one DynamoDB.
    pub table_prefix: String,
    /// The repository (its `package-lock.json` pins DynamoDB Local).
    pub repo_root: PathBuf,
    /// Event-source mapping of the activation function (events table stream).
    pub activation_mapping: MappingConfig,
    /// Event-source mapping of the qualify function (state table stream).
    pub qualify_mapping: MappingConfig,
    /// How often the sweep runs.
    pub sweep_interval: Duration,
    /// Wraps the activation function's handler (tests inject failures with it); `None`: as is.
    pub wrap_activation: Option<WrapHandler>,
    /// Runs the notify function (alert delivery); `None`: alerts stay in the outbox.
    pub notify: Option<NotifyOptions>,
    /// Registers this admin key for the tenant (stored as its SHA-256 only).
    pub admin_key: Option<String>,
    /// Where the admin API listens (port 0: any free port); `None`: not served.
    pub admin_listen: Option<SocketAddr>,
}

impl Options {
    /// The template's mappings; the tests and the demo shorten timings.
    pub fn new(
        tenant: TenantId,
        write_key: String,
        definition: Definition,
        repo_root: PathBuf,
    ) -> Options {
        Options {
            dynamodb_endpoint: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            tenant,
            write_key,
            definition,
            table_prefix: format!("pql-{}-", std::process::id()),
            repo_root,
            activation_mapping: template_mapping("ActivationFunction"),
            qualify_mapping: template_mapping("QualifyFunction"),
            sweep_interval: Duration::from_secs(60),
            wrap_activation: None,
            notify: None,
            admin_key: None,
            admin_listen: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalStackError {
    #[error(transparent)]
    DynamoDbLocal(#[from] pql_dynamodb_local::LocalDynamoError),
    #[error(transparent)]
    Store(#[from] pql_store::StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("table {0} has no stream; is infra/template.yaml's StreamSpecification there?")]
    NoStream(String),
    #[error("stream pump: {0}")]
    Pump(#[from] pql_stream_pump::PumpError),
    #[error("a background task failed: {0}")]
    Task(String),
}

/// A running local stack. [`LocalStack::stop`] it; dropping it also kills DynamoDB Local.
pub struct LocalStack {
    pub endpoint: String,
    pub store: Store,
    pub ingest_address: SocketAddr,
    /// Where the admin API listens, when [`Options::admin_listen`] was given.
    pub admin_address: Option<SocketAddr>,
    pub tenant: TenantId,
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), String>>,
    parked: Arc<Mutex<Vec<Parked>>>,
    _dynamodb: Option<DynamoDbLocal>,
}

async fn stream_arn(store: &Store, table: &str) -> Result<String, LocalStackError> {
    let out = store
        .client()
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| pql_store::StoreError::Dynamo {
            operation: "DescribeTable",
            table: table.to_owned(),
            message: e.to_string(),
        })?;
    out.table
        .and_then(|t| t.latest_stream_arn)
        .ok_or_else(|| LocalStackError::NoStream(table.to_owned()))
}

impl LocalStack {
    pub async fn start(options: Options) -> Result<LocalStack, LocalStackError> {
        let (endpoint, dynamodb) = match &options.dynamodb_endpoint {
            Some(endpoint) => (endpoint.clone(), None),
            None => {
                let root = options.repo_root.clone();
                let db = tokio::task::spawn_blocking(move || DynamoDbLocal::start(&root))
                    .await
                    .map_err(|e| LocalStackError::Task(e.to_string()))??;
                (db.endpoint(), Some(db))
            }
        };
        let client = pql_store::local_client(&endpoint);
        template::create_tables(&client, TEMPLATE, &options.table_prefix).await?;
        let store = Store::new(client, Tables::with_prefix(&options.table_prefix));
        store
            .put_tenant(&options.tenant, &options.write_key, &options.definition)
            .await?;
        if let Some(admin_key) = &options.admin_key {
            store.put_admin_key(&options.tenant, admin_key).await?;
        }

        let shutdown = CancellationToken::new();
        let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
        let parked = Arc::new(Mutex::new(Vec::new()));

        // Consumers first, so that no event is written before its stream is read.
        let streams = pql_stream_pump::local_client(&endpoint);
        let (parked_tx, mut parked_rx) = tokio::sync::mpsc::channel::<Parked>(64);
        let activation = Arc::new(Activation::new(store.clone()));
        let mut handler: BoxedHandler = Arc::new(move |event| {
            let activation = Arc::clone(&activation);
            Box::pin(async move { Ok(activation.handle(event).await) })
        });
        if let Some(WrapHandler(wrap)) = &options.wrap_activation {
            handler = wrap(handler);
        }
        let pump = pql_stream_pump::start(
            streams.clone(),
            stream_arn(&store, &store.tables().events).await?,
            options.activation_mapping.clone(),
            Arc::new(move |event| handler(event)),
            parked_tx.clone(),
        )
        .await?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            pump.run(token)
                .await
                .map(drop)
                .map_err(|e| format!("activation pump: {e}"))
        });

        let qualifier = Arc::new(Qualifier::new(store.clone()));
        let pump = pql_stream_pump::start(
            streams,
            stream_arn(&store, &store.tables().state).await?,
            options.qualify_mapping.clone(),
            Arc::new(move |event| {
                let qualifier = Arc::clone(&qualifier);
                async move { qualifier.handle(event).await.map_err(|e| e.into()) }
            }),
            parked_tx.clone(),
        )
        .await?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            pump.run(token)
                .await
                .map(drop)
                .map_err(|e| format!("qualify pump: {e}"))
        });

        if let Some(notify) = &options.notify {
            store
                .put_notify_settings(&options.tenant, &notify.settings.to_json())
                .await?;
            let mailer: Arc<dyn pql_notify::channels::Mailer> = match &notify.email_dir {
                Some(dir) => Arc::new(pql_notify::channels::DirectoryMailer { dir: dir.clone() }),
                None => Arc::new(pql_notify::channels::NoMailer),
            };
            let notifier = Arc::new(
                pql_notify::Notifier::new(store.clone(), mailer).with_policy(notify.retry.clone()),
            );
            let handler = Arc::new(pql_notify_fn::NotifyHandler::new(notifier));
            let pump = pql_stream_pump::start(
                pql_stream_pump::local_client(&endpoint),
                stream_arn(&store, &store.tables().alerts).await?,
                notify.mapping.clone(),
                Arc::new(move |event| {
                    let handler = Arc::clone(&handler);
                    async move { Ok(handler.handle(event).await) }
                }),
                parked_tx.clone(),
            )
            .await?;
            let token = shutdown.clone();
            tasks.spawn(async move {
                pump.run(token)
                    .await
                    .map(drop)
                    .map_err(|e| format!("notify pump: {e}"))
            });
        }
        drop(parked_tx);

        let keep = Arc::clone(&parked);
        tasks.spawn(async move {
            while let Some(p) = parked_rx.recv().await {
                tracing::error!(shard = %p.shard_id, records = p.records.len(), attempts = p.attempts, error = %p.error, "records parked (the on-failure destination)");
                keep.lock().unwrap_or_else(|e| e.into_inner()).push(p);
            }
            Ok(())
        });

        let sweeper = Sweeper::new(store.clone());
        let token = shutdown.clone();
        let interval = options.sweep_interval;
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = ticks.tick() => {
                        if let Err(e) = sweeper.sweep(Timestamp::now()).await {
                            tracing::warn!(error = %e, "sweep failed; the next one retries");
                        }
                    }
                }
            }
        });

        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| LocalStackError::Listen {
                address: options.listen,
                source,
            })?;
        let ingest_address = listener
            .local_addr()
            .map_err(|source| LocalStackError::Listen {
                address: options.listen,
                source,
            })?;
        let app = Arc::new(App::new(store.clone(), IngestConfig::default()));
        let token = shutdown.clone();
        tasks.spawn(async move {
            pql_ingest::local::serve(listener, app, token.cancelled_owned())
                .await
                .map_err(|e| format!("ingest server: {e}"))
        });

        let admin_address = match options.admin_listen {
            None => None,
            Some(address) => {
                let listen_error = |source| LocalStackError::Listen { address, source };
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(listen_error)?;
                let bound = listener.local_addr().map_err(listen_error)?;
                let app = Arc::new(pql_admin::App::new(store.clone()));
                let token = shutdown.clone();
                tasks.spawn(async move {
                    pql_admin::local::serve(listener, app, token.cancelled_owned())
                        .await
                        .map_err(|e| format!("admin server: {e}"))
                });
                Some(bound)
            }
        };

        Ok(LocalStack {
            endpoint,
            store,
            ingest_address,
            admin_address,
            tenant: options.tenant,
            shutdown,
            tasks,
            parked,
            _dynamodb: dynamodb,
        })
    }

    /// The ingest base URL, e.g. `http://127.0.0.1:8787`.
    pub fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest_address)
    }

    /// The admin API's base URL, when it is served.
    pub fn admin_url(&self) -> Option<String> {
        self.admin_address.map(|a| format!("http://{a}"))
    }

    /// Records the pumps gave up on so far (what would sit in the failure queue).
    pub fn parked(&self) -> Vec<Parked> {
        self.parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the server and the consumers, waits for them, then stops DynamoDB Local.
    pub async fn stop(mut self) -> Result<(), LocalStackError> {
        self.shutdown.cancel();
        let mut first_error = None;
        while let Some(result) = self.tasks.join_next().await {
            let error = match result {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => e.to_string(),
            };
            first_error.get_or_insert(error);
        }
        match first_error {
            Some(e) => Err(LocalStackError::Task(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pql_stream_pump::EventRecord;
    use serde_json::json;

    /// A stream record as Lambda hands it to the function.
    fn record(event_name: &str, keys: serde_json::Value, image: serde_json::Value) -> EventRecord {
        serde_json::from_value(json!({
            "eventID": "1",
            "eventName": event_name,
            "eventSource": "aws:dynamodb",
            "awsRegion": "local",
            "dynamodb": {"Keys": keys, "NewImage": image, "SequenceNumber": "1",
                         "SizeBytes": 1, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }))
        .expect("a stream record")
    }

    fn passes(mapping: &MappingConfig, record: &EventRecord) -> bool {
        mapping.filter.as_ref().is_none_or(|f| f.matches(record))
    }

    #[test]
    fn qualify_gets_account_records_only() {
        let qualify = template_mapping("QualifyFunction");
        let keys = json!({"pk": {"S": "t#a"}, "sk": {"S": "account"}});
        let account = json!({"kind": {"S": "account"}});
        let user = json!({"kind": {"S": "user"}});
        assert!(passes(
            &qualify,
            &record("INSERT", keys.clone(), account.clone())
        ));
        assert!(passes(&qualify, &record("MODIFY", keys.clone(), account)));
        assert!(!passes(&qualify, &record("MODIFY", keys.clone(), user)));
        assert!(!passes(&qualify, &record("REMOVE", keys, json!({}))));
        assert_eq!(qualify.batch_size, 100);
        assert_eq!(qualify.maximum_retry_attempts, 5);
        assert!(qualify.bisect_batch_on_function_error && qualify.report_batch_item_failures);
    }

    #[test]
    fn notify_gets_new_alerts_only() {
        let notify = template_mapping("NotifyFunction");
        let alert = |sk: i64| json!({"pk": {"S": "t#a"}, "sk": {"N": sk.to_string()}});
        assert!(passes(&notify, &record("INSERT", alert(1), json!({}))));
        assert!(passes(&notify, &record("INSERT", alert(12), json!({}))));
        // sk 0 is the account's alert counter, negative keys are its deliveries.
        assert!(!passes(&notify, &record("INSERT", alert(0), json!({}))));
        assert!(!passes(&notify, &record("INSERT", alert(-1), json!({}))));
        assert!(!passes(&notify, &record("MODIFY", alert(1), json!({}))));
        assert_eq!(notify.batch_size, 10);
    }

    #[test]
    fn activation_gets_new_and_corrected_events_not_expiries() {
        let activation = template_mapping("ActivationFunction");
        let keys = json!({"pk": {"S": "t#m"}});
        for (event_name, passed) in [("INSERT", true), ("MODIFY", true), ("REMOVE", false)] {
            let record = record(event_name, keys.clone(), json!({}));
            assert_eq!(passes(&activation, &record), passed, "{event_name}");
        }
    }
}
