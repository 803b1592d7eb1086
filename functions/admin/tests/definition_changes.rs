//! What a definition change does to existing accounts, over the admin API against DynamoDB
//! Local: the preview of a draft (accounts moving in and out of stages and tiers, accounts the
//! stored state cannot answer for), and the re-evaluation job an activation starts (chunks as
//! the sweep runs them, resumed after an interruption, idempotent, no second alert).

use aws_sdk_dynamodb::types::AttributeValue;
mod common;

use common::{Api, V1};
use pql_engine::event::parse_call;
use pql_engine::{AccountState, Definition, Timestamp};
use pql_store::alerts::Observation;
use pql_store::reevaluation::RebuildCache;
use pql_store::tenants::TenantId;
use pql_store::testing::SecondMilestone::{Invited, Reported};
use pql_store::testing::TestDefinition;
use pql_store::{AccountRecord, RecordKind, Store};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "ak_changes";

/// Needs a milestone V1's state does not keep.
fn new_milestone() -> TestDefinition {
    TestDefinition::new("changes: reports").second(Reported)
}

/// Same tracking as V1 (so stored state answers it): inviting now disqualifies, creating a
/// project is enough and worth 40. Initech leaves PQL (disqualified), globex enters it.
fn same_tracking() -> TestDefinition {
    TestDefinition::new("changes: creators")
        .created_points(40)
        .second(Invited)
        .gate("invited_is_a_competitor", "invited")
        .activation(&["created"])
        .pql("hot", &["created"])
}

fn tenant() -> TenantId {
    TenantId::parse("changes").unwrap()
}

impl Api {
    async fn start() -> Api {
        Api::serve(&tenant(), "wk_changes", ADMIN_KEY, V1).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let answer = self.admin(method, path, body.map(|b| b.to_string())).await;
        (answer.status, answer.body)
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
            Some(json!({"source": same_tracking().toml()})),
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
    let pushed = api.push(&same_tracking().toml()).await;
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
            Some(json!({"source": new_milestone().toml(), "file": "reports.toml"})),
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

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs chunks of `size` until the job finishes; returns the chunks run.
async fn run_job(store: &Store, size: i32) -> usize {
    let mut cache = RebuildCache::default();
    let mut chunks = 0;
    while let Some(report) = store
        .reevaluate_chunk(&tenant(), size, Timestamp::now(), &mut cache)
        .await
        .unwrap()
    {
        chunks += 1;
        assert!(!report.lost_race);
        assert!(chunks < 50, "the job does not finish");
    }
    chunks
}

async fn job_item(store: &Store) -> std::collections::HashMap<String, AttributeValue> {
    store
        .client()
        .get_item()
        .table_name(&store.tables().tenants)
        .key(
            "pk",
            AttributeValue::S(format!("reevaluation#{}", tenant())),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
}

async fn state_of(store: &Store, account: &str) -> AccountRecord {
    store
        .load_record::<AccountRecord>(&tenant(), RecordKind::Account, account)
        .await
        .unwrap()
        .unwrap()
        .value
}

fn built(definition: &Definition, events: &[pql_engine::Event], account: &str) -> AccountState {
    let mut state = AccountState::new(definition);
    for e in events.iter().filter(|e| e.account_id() == Some(account)) {
        state.apply(definition, e);
    }
    state
}

#[tokio::test]
async fn activation_reevaluates_mapped_state_resumes_and_never_alerts_twice() {
    let api = Api::start().await;
    let events = three_accounts(&api).await;
    api.store.put_events(&tenant(), &events, 90).await.unwrap();
    assert_eq!(
        api.store.alerts(&tenant(), "initech").await.unwrap().len(),
        1
    );
    let (status, missing) = api.call("GET", "/v1/definitions/reevaluation", None).await;
    assert_eq!(status, 404, "{missing}");

    let version = api.push(&same_tracking().toml()).await;
    let (status, activated) = api
        .call(
            "POST",
            &format!("/v1/definitions/{version}/activate"),
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 200, "{activated}");
    let job = &activated["reevaluation"];
    assert_eq!(job["version"], version.as_str(), "{activated}");
    // The accounts are counted by the job's chunks, not in the activation request.
    assert_eq!(
        (&job["total"], &job["progress"], job["done"].as_u64()),
        (&Value::Null, &Value::Null, Some(0)),
        "{job}"
    );
    assert_eq!(job["state"], "running");

    // One account per chunk. After the first, an interruption: the second chunk's updates
    // are made but its cursor is lost (the job item is put back as it was).
    let mut cache = RebuildCache::default();
    let first = api
        .store
        .reevaluate_chunk(&tenant(), 1, Timestamp::now(), &mut cache)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.accounts, 1);
    let (_, progress) = api.call("GET", "/v1/definitions/reevaluation", None).await;
    assert_eq!(
        (progress["done"].as_u64(), progress["state"].as_str()),
        (Some(1), Some("running"))
    );
    assert_eq!(
        progress["total"], 3,
        "counted by the first chunk: {progress}"
    );
    assert!(progress["progress"].as_f64().unwrap() > 0.3, "{progress}");
    assert!(progress.get("cursor").is_none(), "{progress}");
    let before_second = job_item(&api.store).await;
    api.store
        .reevaluate_chunk(&tenant(), 1, Timestamp::now(), &mut cache)
        .await
        .unwrap()
        .unwrap();
    // The account the lost chunk visited: its counters are lost with the cursor (counters
    // are saved with the cursor), its update is not.
    let after_second = api
        .store
        .reevaluation(&tenant())
        .await
        .unwrap()
        .unwrap()
        .value;
    let pk = String::from_utf8(hex_decode(after_second.cursor.as_deref().unwrap())).unwrap();
    let lost = pk.rsplit('#').next().unwrap().to_owned();
    api.store
        .client()
        .put_item()
        .table_name(&api.store.tables().tenants)
        .set_item(Some(before_second))
        .send()
        .await
        .unwrap();
    // Resumed from the saved cursor: the second chunk runs again, then the rest.
    assert_eq!(
        run_job(&api.store, 1).await,
        3,
        "chunks 2 (again), 3 and the empty end"
    );

    let (_, done) = api.call("GET", "/v1/definitions/reevaluation", None).await;
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["done"], 3, "{done}");
    assert_eq!(
        done["already_done"], 1,
        "the re-run chunk found its account done: {done}"
    );
    assert_eq!(done["mapped"], 2, "{done}");
    assert_eq!(done["rebuilt"], 0, "{done}");
    assert_eq!(
        done["qualified"],
        u64::from(lost != "globex"),
        "{lost}: {done}"
    );
    assert_eq!(
        done["not_alerted_again"],
        u64::from(lost != "initech"),
        "{lost}: {done}"
    );
    assert_eq!(done["failed"], 0, "{done}");
    assert!(done["finished_at"].is_string(), "{done}");

    // Exact results: each state is what the new version builds from the same events.
    let target = Definition::from_toml("same.toml", &same_tracking().toml()).unwrap();
    for account in ["initech", "globex", "umbrella"] {
        assert_eq!(
            state_of(&api.store, account).await.state,
            built(&target, &events, account),
            "{account}"
        );
    }
    // Globex qualifies under the new version: one alert, made by the job.
    let globex = api.store.alerts(&tenant(), "globex").await.unwrap();
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0].definition_version, version);
    // Initech was alerted under V1: not again, whatever the new version says.
    assert_eq!(
        api.store.alerts(&tenant(), "initech").await.unwrap().len(),
        1
    );
    assert!(api
        .store
        .alerts(&tenant(), "umbrella")
        .await
        .unwrap()
        .is_empty());

    // A finished job has nothing more to run, and running it again changes nothing.
    assert_eq!(run_job(&api.store, 1).await, 0);
    assert_eq!(
        api.store.alerts(&tenant(), "globex").await.unwrap().len(),
        1
    );

    // Rolling back starts a job back to V1; it never alerts globex a second time either.
    let (status, rolled) = api
        .call(
            "POST",
            "/v1/definitions/rollback",
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["reevaluation"]["action"], "rollback");
    run_job(&api.store, 2).await;
    let (_, back) = api.call("GET", "/v1/definitions/reevaluation", None).await;
    assert_eq!(
        (back["done"].as_u64(), back["qualified"].as_u64()),
        (Some(3), Some(0)),
        "{back}"
    );
    assert_eq!(
        api.store.alerts(&tenant(), "globex").await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn activation_rebuilds_untracked_state_from_raw_events() {
    let api = Api::start().await;
    let events = three_accounts(&api).await;
    api.store.put_events(&tenant(), &events, 90).await.unwrap();
    let version = api.push(&new_milestone().toml()).await;
    let target = Definition::from_toml("reports.toml", &new_milestone().toml()).unwrap();
    let (status, activated) = api
        .call(
            "POST",
            &format!("/v1/definitions/{version}/activate"),
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 200, "{activated}");
    // Before the job reaches it, an event for umbrella arrives: the activation function
    // restarts its state afresh under the new version (losing its history). Here: the same
    // write, by hand.
    let late = event(
        "umbrella",
        "umbrella-user",
        "Report Viewed",
        t0().plus_days(1.0),
        "umbrella-late",
    );
    api.store
        .put_events(&tenant(), std::slice::from_ref(&late), 90)
        .await
        .unwrap();
    let current = api
        .store
        .load_record::<AccountRecord>(&tenant(), RecordKind::Account, "umbrella")
        .await
        .unwrap()
        .unwrap();
    let mut fresh = AccountState::new(&target);
    fresh.apply(&target, &late);
    let reset: AccountRecord =
        serde_json::from_value(json!({"state": fresh, "clock": late.timestamp})).unwrap();
    api.store
        .save_record(
            &tenant(),
            RecordKind::Account,
            "umbrella",
            &reset,
            current.version,
        )
        .await
        .unwrap()
        .unwrap();

    run_job(&api.store, 2).await;
    let (_, done) = api.call("GET", "/v1/definitions/reevaluation", None).await;
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(
        (done["rebuilt"].as_u64(), done["mapped"].as_u64()),
        (Some(3), Some(0)),
        "{done}"
    );
    let mut all = events.clone();
    all.push(late);
    for account in ["initech", "globex", "umbrella"] {
        assert_eq!(
            state_of(&api.store, account).await.state,
            built(&target, &all, account),
            "{account}: rebuilt from the raw events"
        );
    }
    // Umbrella's history before the reset is back (its first event, the page view).
    assert_eq!(
        state_of(&api.store, "umbrella").await.state.first_seen,
        Some(t0())
    );
    // Globex (created + reported) qualifies: one alert; initech qualifies too but was
    // alerted under V1: no second alert. Umbrella has no project: no alert.
    assert_eq!(done["qualified"], 1, "{done}");
    assert_eq!(
        api.store.alerts(&tenant(), "globex").await.unwrap().len(),
        1
    );
    assert_eq!(
        api.store.alerts(&tenant(), "initech").await.unwrap().len(),
        1
    );
    assert!(api
        .store
        .alerts(&tenant(), "umbrella")
        .await
        .unwrap()
        .is_empty());
    // The item tells the qualify function which version the job wrote.
    let item = api
        .store
        .client()
        .get_item()
        .table_name(&api.store.tables().state)
        .key(
            "pk",
            AttributeValue::S(format!("{}#account#globex", tenant())),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["reevaluated_version"], item["version"]);
}

#[tokio::test]
async fn shadow_mode_is_set_reported_and_stopped() {
    let api = Api::start().await;
    three_accounts(&api).await;
    let version = api.push(&same_tracking().toml()).await;
    let (_, listed) = api.call("GET", "/v1/definitions", None).await;
    let active_version = listed["active"].as_str().unwrap().to_owned();

    let (status, body) = api
        .call(
            "POST",
            &format!("/v1/definitions/{active_version}/shadow"),
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(
        status, 409,
        "the active version cannot be its own shadow: {body}"
    );
    let (status, _) = api
        .call(
            "POST",
            "/v1/definitions/v000000000000/shadow",
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(
            "POST",
            "/v1/definitions/latest/shadow",
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call("GET", &format!("/v1/definitions/{version}/shadow"), None)
        .await;
    assert_eq!(status, 405);

    let (status, started) = api
        .call(
            "POST",
            &format!("/v1/definitions/{version}/shadow"),
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["shadow"], version.as_str());
    let setting = api.store.shadow(&tenant()).await.unwrap().unwrap();
    assert_eq!(setting.version, version);

    // What the qualify function stores on each account change (tested there), for each
    // account as it is now.
    let active = Definition::from_toml("v1.toml", V1).unwrap();
    let shadow = Definition::from_toml("same.toml", &same_tracking().toml()).unwrap();
    let map = pql_engine::StateMap::between(&active, &shadow);
    for account in ["initech", "globex", "umbrella"] {
        let record = state_of(&api.store, account).await;
        let decision =
            pql_store::shadow::shadow_decision(&active, &shadow, &map, account, &record, 1);
        assert!(api
            .store
            .put_shadow_decision(&tenant(), &decision)
            .await
            .unwrap());
    }
    let (status, report) = api
        .call(
            "GET",
            &format!("/v1/definitions/{version}/shadow/report"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["shadowing"], true);
    assert_eq!(report["accounts"], 3);
    assert_eq!(report["truncated"], false);
    let c = &report["comparison"];
    assert_eq!(
        (c["compared"].as_u64(), c["unchanged"].as_u64()),
        (Some(3), Some(1)),
        "{report}"
    );
    let changed: Vec<&str> = c["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["account"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["globex", "initech"]);
    assert_eq!(movement(&report, "stages", "pql"), [1, 1, 1, 1]);

    let (status, stopped) = api
        .call("DELETE", &format!("/v1/definitions/{version}/shadow"), None)
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert!(api.store.shadow(&tenant()).await.unwrap().is_none());
    let (status, _) = api
        .call("DELETE", &format!("/v1/definitions/{version}/shadow"), None)
        .await;
    assert_eq!(status, 404);
    // The decisions stay readable after stopping.
    let (_, after) = api
        .call(
            "GET",
            &format!("/v1/definitions/{version}/shadow/report"),
            None,
        )
        .await;
    assert_eq!(
        (after["shadowing"].as_bool(), after["accounts"].as_u64()),
        (Some(false), Some(3))
    );
}
