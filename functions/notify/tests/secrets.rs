//! Destination secrets read from SSM / Secrets Manager (in-memory fakes behind the fetcher
//! trait) and the deployment's defaults, against DynamoDB Local and wiremock receivers: a
//! referenced URL and signing secret are used, a missing one parks only its destination
//! with an error naming it (never a value), a throttled read is retried like a failed send.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use pql_engine::definition::Tier;
use pql_engine::Timestamp;
use pql_notify::channels::DirectoryMailer;
use pql_notify::retry::RetryPolicy;
use pql_notify::secret::Secret;
use pql_notify::secrets::{SecretDefaults, SecretError, SecretFetcher, Secrets};
use pql_notify::{AlertOutcome, Notifier, Outcome, Settings};
use pql_store::alerts::{Alert, LifecycleRecord, Trigger};
use pql_store::deliveries::DeliveryState;
use pql_store::tenants::TenantId;
use pql_store::Store;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_from_secrets_manager_0123";
const SECRET_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pql-whsec-AbCdEf";

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// An outside system: per name, the answers of the next reads (the last one repeats).
#[derive(Default)]
struct Fake {
    answers: Mutex<HashMap<String, VecDeque<Result<String, SecretError>>>>,
    reads: Mutex<Vec<String>>,
}

impl Fake {
    fn answer(self, name: &str, answers: Vec<Result<&str, SecretError>>) -> Self {
        self.answers.lock().unwrap().insert(
            name.into(),
            answers.into_iter().map(|a| a.map(str::to_owned)).collect(),
        );
        self
    }
}

impl SecretFetcher for Fake {
    fn fetch<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret, SecretError>> {
        Box::pin(async move {
            self.reads.lock().unwrap().push(name.to_owned());
            let mut answers = self.answers.lock().unwrap();
            let queue = answers.get_mut(name);
            let answer = match queue {
                Some(q) if q.len() > 1 => q.pop_front().unwrap(),
                Some(q) if q.len() == 1 => q[0].clone(),
                _ => Err(SecretError::permanent(format!("`{name}`: not found"))),
            };
            answer.map(Secret::new)
        })
    }
}

fn alert(account: &str) -> Alert {
    Alert {
        tenant: "acme".into(),
        account: account.into(),
        account_name: Some(format!("{account} Inc")),
        sequence: 1,
        qualified_at: Timestamp::parse("2026-03-01T10:00:00Z").unwrap(),
        tier: Tier::Hot,
        score: 80.0,
        definition_version: "v1abc".into(),
        decision: json!({
            "definition_version": "v1abc", "evaluated_at": "2026-03-01T10:00:00Z",
            "stage": "pql", "tier": "hot", "score": 80.0, "qualifies": true, "activated": true,
            "signed_up_at": "2026-02-20T09:00:00Z", "milestones": [],
            "fit": {"score": 0.0, "good": true, "facts": []}, "gates": [], "reasons": []
        }),
        trigger: Trigger::Event,
        created_at: Timestamp::parse("2026-03-01T10:00:01Z").unwrap(),
    }
}

async fn put_alert(store: &Store, alert: &Alert) {
    let current = store
        .load_lifecycle(&tenant(), &alert.account)
        .await
        .unwrap();
    store
        .save_lifecycle(
            &tenant(),
            &alert.account,
            &LifecycleRecord::default(),
            current.version,
            std::slice::from_ref(alert),
        )
        .await
        .unwrap()
        .unwrap();
}

async fn ok_server(route: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        max_rate_limited: 3,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn referenced_and_default_secrets_are_used_and_a_missing_one_parks_only_its_destination() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let slack = ok_server("/services/T0/B0/default").await;
    let crm = ok_server("/hooks/crm").await;
    let partner = ok_server("/hooks/partner").await;
    let mail_dir = tempfile::tempdir().unwrap();
    let settings = Settings::parse_toml(
        "t.toml",
        &format!(
            r#"
[[destination]]
id = "team"
kind = "slack"                        # no url: the deployment's parameter
min_interval_ms = 0

[[destination]]
id = "crm"
kind = "webhook"
url = {{ ssm = "/pql/crm-url" }}       # no secret: the deployment's signing secret

[[destination]]
id = "partner"
kind = "webhook"
url = "{}/hooks/partner"
secret = {{ secrets_manager = "pql/partner-missing" }}

[[destination]]
id = "owners"
kind = "email"                        # no from: the deployment's sender
to = ["sales@example.com"]

[default]
destinations = ["team", "crm", "partner", "owners"]
"#,
            partner.uri()
        ),
    )
    .unwrap();
    store
        .put_notify_settings(&tenant(), &settings.to_json())
        .await
        .unwrap();
    let ssm = Arc::new(
        Fake::default()
            .answer(
                "/pql/slack",
                vec![Ok(&format!("{}/services/T0/B0/default", slack.uri()))],
            )
            // Throttled once: retried like a failed send, then delivered.
            .answer(
                "/pql/crm-url",
                vec![
                    Err(SecretError::retryable(
                        "SSM parameter `/pql/crm-url`: ThrottlingException",
                    )),
                    Ok(&format!("{}/hooks/crm", crm.uri())),
                ],
            ),
    );
    let sm = Arc::new(Fake::default().answer(SECRET_ARN, vec![Ok(SECRET)]).answer(
        "pql/partner-missing",
        vec![Err(SecretError::permanent(
            "Secrets Manager secret `pql/partner-missing`: not found",
        ))],
    ));
    let secrets = Secrets::new(
        Some(ssm.clone() as Arc<dyn SecretFetcher>),
        Some(sm.clone() as Arc<dyn SecretFetcher>),
        SecretDefaults {
            slack_url_parameter: Some("/pql/slack".into()),
            signing_secret_arn: Some(SECRET_ARN.into()),
            email_from: Some("pql@example.com".into()),
        },
    );
    let notifier = Notifier::new(
        store.clone(),
        Arc::new(DirectoryMailer {
            dir: mail_dir.path().to_owned(),
        }),
    )
    .with_policy(policy())
    .with_settings_ttl(Duration::ZERO)
    .with_secrets(Arc::new(secrets));

    let a = alert("globex");
    put_alert(&store, &a).await;
    let AlertOutcome::Routed { destinations, .. } = notifier.deliver(&a).await.unwrap() else {
        panic!("no settings")
    };
    let outcome: HashMap<String, Outcome> = destinations.into_iter().collect();
    assert_eq!(outcome["team"], Outcome::Delivered { attempts: 1 });
    assert_eq!(outcome["crm"], Outcome::Delivered { attempts: 2 });
    assert_eq!(outcome["owners"], Outcome::Delivered { attempts: 1 });
    assert_eq!(
        outcome["partner"],
        Outcome::Parked {
            attempts: 1,
            error: "Secrets Manager secret `pql/partner-missing`: not found".into()
        }
    );
    assert!(partner.received_requests().await.unwrap().is_empty());

    // The webhook is signed with the secret read from Secrets Manager.
    let requests = crm.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let header = requests[0].headers["pql-signature"].to_str().unwrap();
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pql_notify::signing::verify(SECRET.as_bytes(), header, &requests[0].body, t, 300).is_ok()
    );
    assert_eq!(slack.received_requests().await.unwrap().len(), 1);

    // The e-mail went from the deployment's sender.
    let file = std::fs::read_dir(mail_dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mail: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(mail["from"], "pql@example.com");

    // The parked delivery's stored error names the secret, and no secret value is stored.
    let (all, _) = store.all_deliveries(Some(&tenant())).await.unwrap();
    let parked: Vec<_> = all
        .iter()
        .filter(|d| d.state == DeliveryState::Parked)
        .collect();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].key.destination, "partner");
    let stored = format!("{all:?}");
    assert!(!stored.contains(SECRET) && !stored.contains("/services/T0/B0/default"));

    // Each secret was read once: the second alert uses the cache.
    let b = alert("initech");
    put_alert(&store, &b).await;
    notifier.deliver(&b).await.unwrap();
    // (Destinations are delivered concurrently: reads of different secrets come in any
    // order. The CRM URL is read twice: throttled, then retried.)
    let mut ssm_reads = ssm.reads.lock().unwrap().clone();
    ssm_reads.sort();
    assert_eq!(ssm_reads, ["/pql/crm-url", "/pql/crm-url", "/pql/slack"]);
    assert_eq!(
        sm.reads
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == SECRET_ARN)
            .count(),
        1
    );
    assert_eq!(crm.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn without_a_deployment_default_the_destination_is_parked_with_the_variable_named() {
    let (store, _db) = pql_store::testing::fresh_store().await;
    let settings = Settings::parse_toml(
        "t.toml",
        "[[destination]]\nid = \"team\"\nkind = \"slack\"\n\n[default]\ndestinations = [\"team\"]\n",
    )
    .unwrap();
    store
        .put_notify_settings(&tenant(), &settings.to_json())
        .await
        .unwrap();
    // The local stack and the CLI: inline secrets only, no defaults.
    let notifier = Notifier::new(store.clone(), Arc::new(pql_notify::channels::NoMailer))
        .with_policy(policy());
    let a = alert("globex");
    put_alert(&store, &a).await;
    let AlertOutcome::Routed { destinations, .. } = notifier.deliver(&a).await.unwrap() else {
        panic!("no settings")
    };
    assert_eq!(
        destinations,
        [(
            "team".to_owned(),
            Outcome::Parked {
                attempts: 1,
                error: "destination `team` has no `url` and the deployment has no default (SLACK_WEBHOOK_URL_PARAMETER is not set)".into()
            }
        )]
    );
}
