//! What a definition change does to existing accounts, over the admin API against DynamoDB
//! Local: the preview of a draft (accounts moving in and out of stages and tiers, accounts the
//! stored state cannot answer for).

use std::sync::Arc;

use pql_admin::App;
use pql_engine::event::parse_call;
use pql_engine::{AccountState, Definition, Timestamp};
use pql_store::alerts::Observation;
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, Store};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "ak_changes";

const V1: &str = r#"
name = "changes"
[[milestone]]
name = "created"
event = "Project Created"
count_at_least = 1
points = 10
[[milestone]]
name = "invited"
event = "Teammate Invited"
count_at_least = 1
points = 40
[tiers]
warm = 10
hot = 40
[activation]
milestones = ["created"]
[pql]
min_tier = "hot"
milestones = ["created", "invited"]
"#;

/// Same tracking as V1 (so stored state answers it): inviting now disqualifies, creating a
/// project is enough and worth 40. Initech leaves PQL (disqualified), globex enters it.
const SAME_TRACKING: &str = r#"
name = "changes: creators"
[[milestone]]
name = "created"
event = "Project Created"
count_at_least = 1
points = 40
[[milestone]]
name = "invited"
event = "Teammate Invited"
count_at_least = 1
points = 40
[[gate]]
name = "invited_is_a_competitor"
milestone = "invited"
[tiers]
warm = 10
hot = 40
[activation]
milestones = ["created"]
[pql]
min_tier = "hot"
milestones = ["created"]
"#;

/// Needs a milestone V1's state does not keep.
const NEW_MILESTONE: &str = r#"
name = "changes: reports"
[[milestone]]
name = "created"
event = "Project Created"
count_at_least = 1
points = 10
[[milestone]]
name = "reported"
event = "Report Viewed"
count_at_least = 1
points = 40
[tiers]
warm = 10
hot = 40
[pql]
min_tier = "hot"
milestones = ["created", "reported"]
"#;

fn tenant() -> TenantId {
    TenantId::parse("changes").unwrap()
}

struct Api {
    base: String,
    client: reqwest::Client,
    store: Store,
    _stop: tokio::sync::oneshot::Sender<()>,
    _db: Option<pql_dynamodb_local::DynamoDbLocal>,
}

impl Api {
    async fn start() -> Api {
        let (store, db) = pql_store::testing::fresh_store().await;
        let definition = Definition::from_toml("v1.toml", V1).unwrap();
        store
            .put_tenant(&tenant(), "wk_changes", &definition)
            .await
            .unwrap();
        store.put_admin_key(&tenant(), ADMIN_KEY).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Arc::new(App::new(store.clone()));
        tokio::spawn(pql_admin::local::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Api {
            base,
            client: reqwest::Client::new(),
            store,
            _stop: stop,
            _db: db,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {ADMIN_KEY}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, value)
    }

    async fn push(&self, source: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/v1/definitions",
                Some(json!({"source": source, "author": "ana", "message": "test"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["version"].as_str().unwrap().to_owned()
    }
}

fn event(account: &str, user: &str, name: &str, at: Timestamp, id: &str) -> pql_engine::Event {
    let raw = json!({
        "type": "track", "userId": user, "messageId": id, "event": name,
        "timestamp": at.to_rfc3339(), "context": {"groupId": account},
    });
    parse_call(raw.to_string().as_bytes(), None, None).unwrap()
}

fn t0() -> Timestamp {
    Timestamp::parse("2026-01-05T00:00:00Z").unwrap()
}

/// The account's events (track calls naming it), as ingest would store them.
fn history(account: &str, names: &[&str]) -> Vec<pql_engine::Event> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            event(
                account,
                &format!("{account}-user"),
                name,
                t0().plus_days(i as f64 * 0.1),
                &format!("{account}-{i}"),
            )
        })
        .collect()
}

/// Stores an account record built from its events under `definition` and observes it as
/// the qualify function does. Returns the events.
async fn account(
    store: &Store,
    definition: &Definition,
    id: &str,
    names: &[&str],
) -> Vec<pql_engine::Event> {
    let events = history(id, names);
    let mut state = AccountState::new(definition);
    let mut clock = Timestamp::MIN;
    for e in &events {
        if state.apply(definition, e) {
            clock = clock.max(e.timestamp);
        }
    }
    let record: AccountRecord =
        serde_json::from_value(json!({"state": state, "clock": clock})).unwrap();
    let (version, _) = store
        .save_record(&tenant(), RecordKind::Account, id, &record, 0)
        .await
        .unwrap()
        .unwrap();
    store
        .observe_account(
            definition,
            &tenant(),
            id,
            &record,
            Observation::event(version, record.clock),
        )
        .await
        .unwrap();
    events
}

async fn three_accounts(api: &Api) -> Vec<pql_engine::Event> {
    let v1 = Definition::from_toml("v1.toml", V1).unwrap();
    let mut events = Vec::new();
    events.extend(
        account(
            &api.store,
            &v1,
            "initech",
            &["Project Created", "Teammate Invited", "Report Viewed"],
        )
        .await,
    );
    events.extend(
        account(
            &api.store,
            &v1,
            "globex",
            &["Project Created", "Report Viewed"],
        )
        .await,
    );
    events.extend(account(&api.store, &v1, "umbrella", &["Page Viewed"]).await);
    events
}

fn movement(report: &Value, kind: &str, name: &str) -> [u64; 4] {
    let m = &report["comparison"][kind][name];
    ["before", "after", "entering", "leaving"].map(|f| {
        m[f].as_u64()
            .unwrap_or_else(|| panic!("{kind}.{name}.{f}: {report}"))
    })
}

#[tokio::test]
async fn preview_counts_accounts_moving_both_ways() {
    let api = Api::start().await;
    three_accounts(&api).await;
    let (status, report) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"source": SAME_TRACKING})),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accounts_read"], 3);
    assert_eq!(report["truncated"], false);
    let c = &report["comparison"];
    assert_eq!(c["compared"], 3, "{report}");
    assert_eq!(c["unchanged"], 1, "{report}");
    assert_eq!(c["untracked_accounts"], 0, "{report}");
    // [before, after, entering, leaving]
    assert_eq!(movement(&report, "stages", "pql"), [1, 1, 1, 1]);
    assert_eq!(movement(&report, "stages", "disqualified"), [0, 1, 1, 0]);
    assert_eq!(movement(&report, "stages", "activated"), [1, 0, 0, 1]);
    assert_eq!(movement(&report, "stages", "signed_up"), [1, 1, 0, 0]);
    assert_eq!(movement(&report, "tiers", "hot"), [1, 2, 1, 0]);
    assert_eq!(movement(&report, "tiers", "warm"), [1, 0, 0, 1]);
    assert_eq!(
        c["changes"],
        json!([
            {"account": "globex", "from_stage": "activated", "to_stage": "pql",
             "from_tier": "warm", "to_tier": "hot", "from_score": 10.0, "to_score": 40.0},
            {"account": "initech", "from_stage": "pql", "to_stage": "disqualified",
             "from_tier": "hot", "to_tier": "hot", "from_score": 50.0, "to_score": 80.0},
        ])
    );
    // Nothing was written: the active version is still V1 and the preview of it is a no-op.
    let (_, listed) = api.call("GET", "/v1/definitions", None).await;
    let active = listed["active"].as_str().unwrap().to_owned();
    assert_eq!(report["active_version"], active.as_str());
    let (status, same) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"version": active})),
        )
        .await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["comparison"]["unchanged"], 3);
    assert_eq!(same["comparison"]["changes"], json!([]));

    // A pushed version previews the same as its source.
    let pushed = api.push(SAME_TRACKING).await;
    let (_, by_version) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"version": pushed})),
        )
        .await;
    assert_eq!(by_version["draft_version"], pushed.as_str());
    assert_eq!(by_version["comparison"]["changes"], c["changes"]);
}

#[tokio::test]
async fn preview_says_when_stored_state_cannot_answer() {
    let api = Api::start().await;
    three_accounts(&api).await;
    let (status, report) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"source": NEW_MILESTONE, "file": "reports.toml"})),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let c = &report["comparison"];
    assert_eq!(c["compared"], 0, "{report}");
    assert_eq!(c["untracked_accounts"], 3, "{report}");
    let reasons = c["untracked"].as_object().unwrap();
    assert_eq!(reasons.len(), 1, "{report}");
    let (reason, count) = reasons.iter().next().unwrap();
    assert!(reason.starts_with("milestone `reported`"), "{reason}");
    assert_eq!(count, 3);
}

#[tokio::test]
async fn preview_rejects_bad_requests_clearly() {
    let api = Api::start().await;
    let (status, body) = api
        .call("POST", "/v1/definitions/preview", Some(json!({})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("exactly one of"),
        "{body}"
    );
    let (status, body) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"version": "v000000000000", "source": V1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"version": "latest"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("12 hex digits"),
        "{body}"
    );
    let (status, body) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"version": "v000000000000"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/v1/definitions/preview",
            Some(json!({"source": "name = \"x\"\n[tiers]\nwarm = 50\nhot = 10\n", "file": "bad.toml"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_definition")),
        "{body}"
    );
    let (status, _) = api.call("GET", "/v1/definitions/preview", None).await;
    assert_eq!(status, 405);
}
