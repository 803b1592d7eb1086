//! Sales feedback over HTTP (`POST /v1/alerts/{account}/{sequence}/feedback`) and the
//! deliveries list (`GET /v1/alerts`), through the local server around the Lambda handler,
//! against DynamoDB Local: stored where `pql alerts feedback` stores it, checked the same way,
//! idempotent for a repeat, precise errors.

mod common;

use common::Api;
use pql_engine::definition::Tier;
use pql_engine::Timestamp;
use pql_store::alerts::{Alert, LifecycleRecord, Trigger};
use pql_store::deliveries::{Claim, DeliveryKey, Finish};
use pql_store::tenants::TenantId;
use pql_store::testing::TestDefinition;
use serde_json::{json, Value};

const ADMIN_KEY: &str = "ak_feedback_secret";

/// Creating a project (50) activates and is enough for PQL at hot.
fn definition() -> TestDefinition {
    TestDefinition::new("feedback tests")
        .created_points(50)
        .activation(&["created"])
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

impl Api {
    async fn start() -> Api {
        Api::serve(&tenant(), "wk_feedback", ADMIN_KEY, &definition().toml()).await
    }

    /// `body`: a JSON value, or raw text.
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value, String) {
        let answer = self.admin(method, path, body.map(str::to_owned)).await;
        (answer.status, answer.body, answer.allow)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, value, _) = self.call("POST", path, Some(&body.to_string())).await;
        (status, value)
    }

    async fn put_alert(&self, account: &str, version: &str) {
        let alert = Alert {
            tenant: "acme".into(),
            account: account.into(),
            account_name: None,
            sequence: 1,
            qualified_at: Timestamp::parse("2026-03-01T10:00:00Z").unwrap(),
            tier: Tier::Hot,
            score: 50.0,
            definition_version: version.into(),
            decision: json!({}),
            trigger: Trigger::Event,
            created_at: Timestamp::parse("2026-03-01T10:00:01Z").unwrap(),
        };
        let current = self.store.load_lifecycle(&tenant(), account).await.unwrap();
        self.store
            .save_lifecycle(
                &tenant(),
                account,
                &LifecycleRecord::default(),
                current.version,
                &[alert],
            )
            .await
            .unwrap()
            .unwrap();
    }
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str, message: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let text = body["message"].as_str().unwrap();
    assert!(text.contains(message), "`{message}` not in `{text}`");
}

#[tokio::test]
async fn feedback_is_stored_as_the_cli_stores_it_and_a_repeat_changes_nothing() {
    let api = Api::start().await;
    api.put_alert("globex", "v1aaaaaaaaaaaa").await;
    let path = "/v1/alerts/globex/1/feedback";

    let (status, body) = api
        .post(
            path,
            json!({"outcome": "accepted", "by": "ana@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["feedback"]["alert"], "acme/globex/1");
    assert_eq!(body["feedback"]["definition_version"], "v1aaaaaaaaaaaa");
    let stored = api
        .store
        .feedback(&tenant(), "globex", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.outcome, "accepted");
    assert_eq!(stored.by.as_deref(), Some("ana@example.com"));
    assert_eq!(stored.definition_version, "v1aaaaaaaaaaaa");
    assert_eq!(body["feedback"]["at"], stored.at.as_str());

    // The same again (a retried request): nothing is written.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, again) = api
        .post(
            path,
            json!({"outcome": "accepted", "by": "ana@example.com"}),
        )
        .await;
    assert_eq!((status, &again["changed"]), (200, &json!(false)), "{again}");
    assert_eq!(again["feedback"]["at"], stored.at.as_str());
    assert_eq!(
        api.store.feedback(&tenant(), "globex", 1).await.unwrap(),
        Some(stored.clone())
    );

    // A later outcome replaces it, and the deliveries list shows it.
    let (status, body) = api
        .post(
            path,
            json!({"outcome": "converted", "by": "ana@example.com"}),
        )
        .await;
    assert_eq!((status, &body["changed"]), (200, &json!(true)), "{body}");
    let (status, list, _) = api.call("GET", "/v1/alerts", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["feedback"].as_array().unwrap().len(), 1);
    assert_eq!(list["feedback"][0]["outcome"], "converted");

    // Precision reads the same storage.
    let (status, precision, _) = api.call("GET", "/v1/precision", None).await;
    assert_eq!(status, 200, "{precision}");
    let row = precision["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["definition_version"] == "v1aaaaaaaaaaaa")
        .unwrap_or_else(|| panic!("{precision}"));
    assert_eq!(row["converted"], 1, "{precision}");

    // An account id with `/`, percent-encoded.
    api.put_alert("org/1", "v1aaaaaaaaaaaa").await;
    let (status, body) = api
        .post(
            "/v1/alerts/org%2F1/1/feedback",
            json!({"outcome": "rejected", "reason": "student project"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["feedback"]["alert"], "acme/org/1/1");
    let stored = api
        .store
        .feedback(&tenant(), "org/1", 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.reason.as_deref(), Some("student project"));
}

#[tokio::test]
async fn bad_feedback_gets_precise_errors_and_unknown_alerts_404() {
    let api = Api::start().await;
    api.put_alert("globex", "v1aaaaaaaaaaaa").await;
    let path = "/v1/alerts/globex/1/feedback";
    let (s, b) = api.post(path, json!({"outcome": "won"})).await;
    assert_error(
        s,
        &b,
        400,
        "bad_request",
        "`outcome`: `won` is not an outcome (allowed: accepted, rejected, converted, lost)",
    );
    let (s, b) = api
        .post(path, json!({"outcome": "rejected", "reason": "  "}))
        .await;
    assert_error(
        s,
        &b,
        400,
        "bad_request",
        "`reason`: required when `outcome` is `rejected`",
    );
    let (s, b) = api
        .post(path, json!({"outcome": "lost", "reason": "x".repeat(1001)}))
        .await;
    assert_error(
        s,
        &b,
        400,
        "bad_request",
        "`reason`: too long (allowed: at most 1,000 characters)",
    );
    let (s, b) = api
        .post(path, json!({"outcome": "lost", "note": "x"}))
        .await;
    assert_error(s, &b, 400, "invalid_json", "unknown field `note`");
    let (s, b, _) = api.call("POST", path, Some("")).await;
    assert_error(s, &b, 400, "invalid_json", "the body is empty");
    let (s, b, _) = api.call("POST", path, Some("{\"outcome\": ")).await;
    assert_error(s, &b, 400, "invalid_json", "not valid JSON");
    let (s, b) = api
        .post("/v1/alerts/globex/0/feedback", json!({"outcome": "lost"}))
        .await;
    assert_error(
        s,
        &b,
        400,
        "bad_request",
        "`globex/0` is not an alert id: the sequence `0` is not a number >= 1",
    );
    let (s, b) = api
        .post("/v1/alerts/globex/9/feedback", json!({"outcome": "lost"}))
        .await;
    assert_error(s, &b, 404, "not_found", "alert `globex/9`");
    let (s, b) = api
        .post("/v1/alerts/initech/1/feedback", json!({"outcome": "lost"}))
        .await;
    assert_error(s, &b, 404, "not_found", "alert `initech/1`");
    let (s, b, allow) = api.call("GET", path, None).await;
    assert_error(s, &b, 405, "method_not_allowed", "GET is not allowed");
    assert_eq!(allow, "POST");
    // Nothing of the refused requests was stored.
    assert_eq!(
        api.store.feedback(&tenant(), "globex", 1).await.unwrap(),
        None
    );
    // Without the admin key: 401.
    let response = api
        .client
        .post(format!("{}{path}", api.base))
        .body(json!({"outcome": "lost"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn deliveries_are_listed_and_failed_ones_filtered() {
    let api = Api::start().await;
    api.put_alert("globex", "v1aaaaaaaaaaaa").await;
    for (destination, finish) in [
        ("slack", Finish::Delivered { attempts: 1 }),
        (
            "crm",
            Finish::Parked {
                attempts: 5,
                error: "HTTP 503: down".into(),
            },
        ),
    ] {
        let key = DeliveryKey {
            tenant: tenant(),
            account: "globex".into(),
            sequence: 1,
            destination: destination.into(),
        };
        let claim = api
            .store
            .claim_delivery(&key, "owner", 0, 60_000, "hot")
            .await
            .unwrap();
        assert_eq!(claim, Claim::Won);
        api.store
            .finish_delivery(&key, "owner", "hot", &finish)
            .await
            .unwrap()
            .unwrap();
    }
    let (status, all, _) = api.call("GET", "/v1/alerts", None).await;
    assert_eq!(status, 200, "{all}");
    let states: Vec<(&str, &str)> = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("acme/globex/1/crm", "parked"),
            ("acme/globex/1/slack", "delivered")
        ]
    );
    let (status, failed, _) = api.call("GET", "/v1/alerts?failed=true", None).await;
    assert_eq!(status, 200, "{failed}");
    let failed = failed["deliveries"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["last_error"], "HTTP 503: down");
    assert_eq!(failed[0]["attempts"], 5);
    let (s, b, _) = api.call("GET", "/v1/alerts?failed=yes", None).await;
    assert_error(
        s,
        &b,
        400,
        "bad_request",
        "`failed=yes` (allowed: true or false)",
    );
    let (s, b, _) = api.call("GET", "/v1/alerts?state=parked", None).await;
    assert_error(
        s,
        &b,
        400,
        "bad_request",
        "unknown query parameter `state` (allowed: failed)",
    );
    let (s, b, allow) = api.call("POST", "/v1/alerts", Some("{}")).await;
    assert_error(s, &b, 405, "method_not_allowed", "POST is not allowed");
    assert_eq!(allow, "GET");
}
