//! Helpers for the end-to-end tests of the pipeline: a [`LocalStack`] per test on fresh tables,
//! Segment calls sent over HTTP, and reads of what the pipeline stored in DynamoDB.
//!
//! Every test starts its own stack ([`spawn_app`]) under a unique table prefix, against the
//! DynamoDB Local of `PQL_DYNAMODB_ENDPOINT` (the one `scripts/test.sh` starts and shares) or,
//! when it is not set, one the stack starts for itself. Waits poll DynamoDB with a deadline
//! ([`wait_for`]); nothing sleeps blindly.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pql_engine::event::parse_call;
use pql_engine::ledger::AccountQualification;
use pql_engine::{evaluate, Decision, Definition, Event, Ledger, Timestamp};
use pql_local_stack::{LocalStack, Options};
use pql_store::alerts::{Alert, LifecycleRecord};
use pql_store::records::Versioned;
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, UserRecord};
use serde_json::{json, Value};

/// How long a wait on the pipeline may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The write key of the test tenant (the Basic-auth user name).
pub const WRITE_KEY: &str = "test_write_key";

/// The small definition of the pipeline tests. A PQL is 3 "Project Created" and 2 distinct users
/// sending "Teammate Invited"; no decay, no sliding window, no fit, so decisions do not depend
/// on the evaluation time and the sweep has nothing to do. Two milestones nobody reaches count
/// exactly what the pipeline kept: `dashboards` ("Dashboard Viewed" calls) and `active_users`
/// (distinct users of the account); their progress is an exact count up to 1,000.
pub const TEST_DEFINITION: &str = r#"
name = "pipeline tests"

[[milestone]]
name = "created_projects"
event = "Project Created"
count_at_least = 3
points = 30

[[milestone]]
name = "invited_team"
event = "Teammate Invited"
distinct_users_at_least = 2
points = 30

[[milestone]]
name = "dashboards"
event = "Dashboard Viewed"
count_at_least = 1000

[[milestone]]
name = "active_users"
any = true
distinct_users_at_least = 1000

[tiers]
warm = 25
hot = 60

[activation]
milestones = ["created_projects"]

[pql]
min_tier = "hot"
milestones = ["created_projects", "invited_team"]
require = "all"
require_fit = false
cooldown_days = 30
reentry = "never"
"#;

pub fn test_definition() -> Definition {
    Definition::from_toml("pipeline-tests.toml", TEST_DEFINITION).unwrap_or_else(|e| panic!("{e}"))
}

/// The example definition loosened so that a short simulated history has qualifications
/// (25 trials over 12 days qualify none with the example as shipped): `warm = 15`,
/// `hot = 25`, one milestone for activation and for the PQL rule, no fit required. Decay,
/// windows (anchored and sliding), fit conditions and gates are kept.
pub fn loosened_example_definition() -> Definition {
    let source =
        std::fs::read_to_string(crate::example_definition()).expect("examples/definition.toml");
    let mut loosened = source;
    for (from, to) in [
        ("warm = 35\nhot = 60", "warm = 15\nhot = 25"),
        (
            "\"connected_integration\"]\nrequire = 2",
            "\"connected_integration\"]\nrequire = 1",
        ),
        (
            "require = 2\nrequire_fit = true",
            "require = 1\nrequire_fit = false",
        ),
    ] {
        assert!(
            loosened.contains(from),
            "examples/definition.toml changed: no {from:?}"
        );
        loosened = loosened.replacen(from, to, 1);
    }
    Definition::from_toml("examples/definition.toml (loosened)", &loosened)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A fixed instant for evaluations that must not depend on the wall clock.
pub fn fixed_now() -> Timestamp {
    Timestamp::parse("2026-03-01T00:00:00Z").expect("a timestamp")
}

/// 2026-01-05T10:00:00Z plus `minutes`.
pub fn at(minutes: i64) -> Timestamp {
    Timestamp(
        Timestamp::parse("2026-01-05T10:00:00Z")
            .expect("a timestamp")
            .millis()
            + minutes * 60_000,
    )
}

/// A `track` call (`context.groupId` = `account` when given).
pub fn track(
    message_id: &str,
    user: &str,
    event: &str,
    when: Timestamp,
    account: Option<&str>,
) -> Value {
    let mut call = json!({
        "type": "track", "messageId": message_id, "userId": user, "event": event,
        "timestamp": when.to_rfc3339(),
    });
    if let Some(account) = account {
        call["context"] = json!({ "groupId": account });
    }
    call
}

/// A `group` call linking `user` to `account`.
pub fn group(message_id: &str, user: &str, account: &str, when: Timestamp) -> Value {
    json!({
        "type": "group", "messageId": message_id, "userId": user, "groupId": account,
        "timestamp": when.to_rfc3339(), "traits": { "name": format!("Account {account}") },
    })
}

/// A unique table prefix per stack (process id, a counter and the time).
fn table_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "e2e-{}-{}-{nanos}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for a test stack: any free port, fresh tables, short polls, the sweep out of the way
/// (the tests' decisions are made in event time; a sweep at wall-clock time would only add
/// decisions the backtest engine does not make).
pub fn test_options(definition: Definition) -> Options {
    let tenant = TenantId::parse("acme").expect("a tenant id");
    let mut options = Options::new(tenant, WRITE_KEY.to_owned(), definition, crate::root());
    options.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    options.table_prefix = table_prefix();
    options.dynamodb_endpoint = std::env::var("PQL_DYNAMODB_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    for mapping in [
        &mut options.activation_mapping,
        &mut options.qualify_mapping,
    ] {
        mapping.poll_interval = Duration::from_millis(10);
        mapping.retry_delay = Duration::from_millis(20);
        mapping.discovery_interval = Duration::from_millis(200);
    }
    options.sweep_interval = Duration::from_secs(3600);
    options
}

/// A running stack and an HTTP client for its ingest endpoint.
pub struct TestApp {
    pub stack: LocalStack,
    pub definition: Definition,
    pub tenant: TenantId,
    client: reqwest::Client,
    auth: String,
    barriers: AtomicU64,
}

/// Starts a stack with the test definition.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_options(test_definition())).await
}

/// Starts a stack with these options.
pub async fn spawn_app_with(options: Options) -> TestApp {
    let definition = options.definition.clone();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", options.write_key))
    );
    let stack = LocalStack::start(options)
        .await
        .unwrap_or_else(|e| panic!("the local stack does not start: {e}"));
    TestApp {
        tenant: stack.tenant.clone(),
        stack,
        definition,
        client: reqwest::Client::new(),
        auth,
        barriers: AtomicU64::new(0),
    }
}

/// Polls `probe` until it gives `Ok`, at most [`WAIT`]; the last `Err` explains a timeout.
pub async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait_for_within(what, WAIT, probe).await
}

/// [`wait_for`] with another deadline.
pub async fn wait_for_within<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let began = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if began.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl TestApp {
    /// A client that sends batches to this stack (can be moved into tasks).
    pub fn sender(&self) -> Sender {
        Sender {
            client: self.client.clone(),
            url: format!("{}/v1/batch", self.stack.ingest_url()),
            auth: self.auth.clone(),
        }
    }

    /// Sends `calls` as one batch envelope; expects a 2xx and returns the JSON answer.
    pub async fn send_batch(&self, calls: &[Value]) -> Value {
        self.sender().send_batch(calls).await
    }

    pub async fn account(&self, account: &str) -> Option<Versioned<AccountRecord>> {
        self.stack
            .store
            .load_record::<AccountRecord>(&self.tenant, RecordKind::Account, account)
            .await
            .unwrap_or_else(|e| panic!("reading account {account}: {e}"))
    }

    pub async fn user(&self, user: &str) -> Option<Versioned<UserRecord>> {
        self.stack
            .store
            .load_record::<UserRecord>(&self.tenant, RecordKind::User, user)
            .await
            .unwrap_or_else(|e| panic!("reading user {user}: {e}"))
    }

    /// The account's alerts (the outbox items, `sk >= 1`), in sequence order.
    pub async fn alerts(&self, account: &str) -> Vec<Alert> {
        self.stack
            .store
            .alerts(&self.tenant, account)
            .await
            .unwrap_or_else(|e| panic!("reading alerts of {account}: {e}"))
    }

    /// The account's lifecycle item (`sk = 0`); default when none is stored.
    pub async fn lifecycle(&self, account: &str) -> Versioned<LifecycleRecord> {
        self.stack
            .store
            .load_lifecycle(&self.tenant, account)
            .await
            .unwrap_or_else(|e| panic!("reading lifecycle of {account}: {e}"))
    }

    /// Every alert of the table (a scan), whatever the account.
    pub async fn all_alerts(&self) -> Vec<Alert> {
        let table = &self.stack.store.tables().alerts;
        let mut alerts = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .stack
                .store
                .client()
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap_or_else(|e| panic!("scanning {table}: {e}"));
            for item in out.items() {
                let is_alert = item
                    .get("sk")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
                    // sk >= 1: alerts; 0: the lifecycle; < 0: the notify function's deliveries.
                    .is_some_and(|n| n >= 1);
                if is_alert {
                    alerts.push(
                        Alert::from_item(item)
                            .unwrap_or_else(|e| panic!("alert item {item:?}: {e}")),
                    );
                }
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return alerts,
            }
        }
    }

    /// The decision on the account's stored state at its event clock.
    pub async fn decision(&self, account: &str) -> Decision {
        let record = self
            .account(account)
            .await
            .unwrap_or_else(|| panic!("account {account} has no record"));
        evaluate(&self.definition, &record.value.state, record.value.clock)
    }

    /// Waits until the account's stored state satisfies `expect` (given the decision at its
    /// clock), and returns the decision.
    pub async fn wait_for_account(
        &self,
        account: &str,
        what: &str,
        expect: impl Fn(&Decision) -> bool,
    ) -> Decision {
        wait_for(&format!("{account}: {what}"), || async {
            let Some(record) = self.account(account).await else {
                return Err("no account record".to_owned());
            };
            let decision = evaluate(&self.definition, &record.value.state, record.value.clock);
            if expect(&decision) {
                Ok(decision)
            } else {
                Err(format!(
                    "version {}: {}",
                    record.version,
                    progress_summary(&decision)
                ))
            }
        })
        .await
    }

    /// Waits until the account has `n` alerts and returns them.
    pub async fn wait_for_alerts(&self, account: &str, n: usize) -> Vec<Alert> {
        wait_for(&format!("{n} alert(s) of {account}"), || async {
            let alerts = self.alerts(account).await;
            if alerts.len() == n {
                Ok(alerts)
            } else {
                Err(format!("{} alert(s)", alerts.len()))
            }
        })
        .await
    }

    /// Waits until everything sent before has gone through both consumers: sends a batch that
    /// activates a fresh barrier account and waits for its lifecycle item. The pumps read each
    /// shard in order and a fresh table's stream in DynamoDB Local has one shard, so when the
    /// barrier's lifecycle is written every record before it has been handled (or parked:
    /// [`TestApp::stop`] checks). Tests wait for the state they expect first, then drain, then
    /// check that it still holds: a drain is a guard against late extras, not the only wait.
    pub async fn drain(&self) {
        self.drain_within(WAIT).await;
    }

    /// [`TestApp::drain`], for a backlog that may take longer than [`WAIT`].
    pub async fn drain_within(&self, timeout: Duration) {
        let n = self.barriers.fetch_add(1, Ordering::Relaxed);
        let account = format!("barrier-{n}");
        let calls: Vec<Value> = (0..3)
            .map(|i| {
                track(
                    &format!("{account}-p{i}"),
                    "barrier-user",
                    "Project Created",
                    at(i),
                    Some(&account),
                )
            })
            .chain(std::iter::once(json!({
                "type": "track", "messageId": format!("{account}-i"), "userId": "barrier-user",
                "event": "Integration Connected", "properties": { "provider": "github" },
                "timestamp": at(3).to_rfc3339(), "context": { "groupId": account },
            })))
            .collect();
        self.send_batch(&calls).await;
        wait_for_within(
            &format!("the barrier account {account} to be activated"),
            timeout,
            || async {
                let lifecycle = self.lifecycle(&account).await;
                if lifecycle.version > 0 {
                    Ok(())
                } else {
                    Err("no lifecycle yet".to_owned())
                }
            },
        )
        .await;
    }

    pub async fn stop(self) {
        let parked = self.stack.parked();
        self.stack
            .stop()
            .await
            .unwrap_or_else(|e| panic!("the local stack did not stop cleanly: {e}"));
        assert!(parked.is_empty(), "stream records were parked: {parked:?}");
    }
}

/// Sends batches to the ingest endpoint.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    url: String,
    auth: String,
}

impl Sender {
    pub async fn send_batch(&self, calls: &[Value]) -> Value {
        let body = serde_json::to_vec(&json!({ "batch": calls })).expect("JSON");
        let response = self
            .client
            .post(&self.url)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {}: {e}", self.url));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "ingest answered {status}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ingest answer is not JSON ({e}): {text}"))
    }
}

/// "name: progress/target" for each milestone (for failure messages).
pub fn progress_summary(decision: &Decision) -> String {
    decision
        .milestones
        .iter()
        .map(|m| format!("{}: {}/{}", m.name, m.progress, m.target))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The progress of milestone `name`.
pub fn progress(decision: &Decision, name: &str) -> f64 {
    decision
        .milestones
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no milestone {name}"))
        .progress
}

/// The calls as the engine parses them (as ingest does, without a receive time: the tests
/// send explicit timestamps and no `sentAt`).
pub fn parse_all(calls: &[Value]) -> Vec<Event> {
    calls
        .iter()
        .map(|c| {
            parse_call(&serde_json::to_vec(c).expect("JSON"), None, None)
                .unwrap_or_else(|e| panic!("call {c}: {e}"))
        })
        .collect()
}

/// What `pql backtest`'s engine does with the calls, in this order: the ledger and every
/// qualification it made.
pub fn ledger_of<'d>(
    definition: &'d Definition,
    calls: &[Value],
) -> (Ledger<'d>, Vec<AccountQualification>) {
    let mut ledger = Ledger::new(definition);
    let mut qualifications = Vec::new();
    for event in parse_all(calls) {
        qualifications.extend(ledger.ingest(&event));
    }
    (ledger, qualifications)
}

/// Asserts that the stored account evaluates as the ledger's at `now`, with the same clock
/// and lifecycle counters.
pub async fn assert_same_as_ledger(
    app: &TestApp,
    ledger: &Ledger<'_>,
    account: &str,
    now: Timestamp,
) {
    let entry = ledger
        .account(account)
        .unwrap_or_else(|| panic!("the ledger has no account {account}"));
    let record = app
        .account(account)
        .await
        .unwrap_or_else(|| panic!("the pipeline has no account {account}"));
    let live = evaluate(&app.definition, &record.value.state, now);
    let expected = evaluate(ledger.definition(), &entry.state, now);
    assert_eq!(
        live, expected,
        "account {account}: the stored state and the ledger's evaluate differently at {now:?}"
    );
    assert_eq!(
        record.value.clock, entry.clock,
        "account {account}: event clock"
    );
    let lifecycle = app.lifecycle(account).await.value.lifecycle;
    assert_eq!(
        lifecycle.qualifications, entry.lifecycle.qualifications,
        "account {account}: qualifications"
    );
    assert_eq!(
        lifecycle.first_qualified_at, entry.lifecycle.first_qualified_at,
        "account {account}: first qualified at"
    );
}

/// (account, qualified_at) of each alert, for set comparisons.
pub fn alert_keys(alerts: &[Alert]) -> Vec<(String, Timestamp)> {
    let mut keys: Vec<_> = alerts
        .iter()
        .map(|a| (a.account.clone(), a.qualified_at))
        .collect();
    keys.sort();
    keys
}
