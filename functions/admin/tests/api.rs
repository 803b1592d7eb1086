//! The admin API over a real socket (the local server around the Lambda handler), against
//! DynamoDB Local: auth, versioned definitions (push, list, show, diff, activate, rollback) and
//! the pipeline reading what was activated, accounts by stage and tier.

use std::time::Duration;

mod common;

use common::{Api, V1};
use pql_engine::event::parse_call;
use pql_engine::{AccountState, Definition, Timestamp};
use pql_store::alerts::{Observation, Observed};
use pql_store::definitions::DefinitionCache;
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, RecordKind, Store};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "ak_test_secret";
const WRITE_KEY: &str = "wk_test";

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

impl Api {
    async fn start() -> Api {
        Api::serve(&tenant(), WRITE_KEY, ADMIN_KEY, V1).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let answer = self.admin(method, path, body.map(|b| b.to_string())).await;
        (answer.status, answer.body)
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        authorization: Option<&str>,
    ) -> (u16, Value) {
        let answer = self
            .request(method, path, body.map(|b| b.to_string()), authorization)
            .await;
        (answer.status, answer.body)
    }
}

#[tokio::test]
async fn only_admin_keys_get_in() {
    let api = Api::start().await;
    let (status, body) = api.call_with("GET", "/v1/definitions", None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_admin_key"))
    );
    let (status, body) = api
        .call_with("GET", "/v1/definitions", None, Some("Bearer nope"))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unknown_admin_key"))
    );
    let (status, body) = api
        .call_with(
            "GET",
            "/v1/definitions",
            None,
            Some(&format!("Bearer {WRITE_KEY}")),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("write_key_not_allowed"))
    );
    // Basic, as the ingest API takes keys, works too.
    let basic = format!("Basic {}", base64_encode(&format!("{ADMIN_KEY}:")));
    let (status, _) = api
        .call_with("GET", "/v1/definitions", None, Some(&basic))
        .await;
    assert_eq!(status, 200);
    let (status, body) = api.call("DELETE", "/v1/definitions", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, _) = api.call("GET", "/v1/nothing", None).await;
    assert_eq!(status, 404);
    // The raw key is not stored anywhere: only its hash.
    let scan = api
        .store
        .client()
        .scan()
        .table_name(&api.store.tables().tenants)
        .send()
        .await
        .unwrap();
    let dump = format!("{:?}", scan.items());
    assert!(!dump.contains(ADMIN_KEY) && dump.contains("adminkey#"));
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn definitions_are_versioned_activated_and_rolled_back() {
    let api = Api::start().await;
    let v1 = Definition::from_toml("v1.toml", V1).unwrap().version;

    // The tenant's existing definition is its first version, active.
    let (status, list) = api.call("GET", "/v1/definitions", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["active"], json!(v1));
    assert_eq!(list["versions"].as_array().unwrap().len(), 1);

    // Invalid: as precise as `pql definition validate`, with locations.
    let bad = V1.replace(
        "count_at_least = 1\npoints = 40",
        "count_at_leest = 1\npoints = 40",
    );
    let (status, error) = api
        .call(
            "POST",
            "/v1/definitions",
            Some(json!({"source": bad, "file": "growth.toml", "author": "ana", "message": "typo"})),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"], "invalid_definition");
    assert_eq!(error["location"], "growth.toml:11:1", "{error}");
    let expected = Definition::from_toml("growth.toml", &bad)
        .unwrap_err()
        .to_string();
    assert!(
        error["message"].as_str().unwrap().contains(&expected),
        "{error}"
    );
    assert!(error["errors"][0]["allowed"]
        .as_str()
        .unwrap()
        .contains("count_at_least"));
    let undefined = V1.replace(
        r#"milestones = ["created", "invited"]"#,
        r#"milestones = ["created", "invitd"]"#,
    );
    let (status, error) = api
        .call(
            "POST",
            "/v1/definitions",
            Some(json!({"source": undefined, "author": "ana"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["field"], "pql.milestones[1]", "{error}");
    assert!(
        error["location"]
            .as_str()
            .unwrap()
            .starts_with("definition.toml:"),
        "{error}"
    );
    // JSON definitions get the field path.
    let mut as_json =
        serde_json::to_value(Definition::from_toml("v1.toml", V1).unwrap().spec).unwrap();
    as_json["tiers"]["warm"] = json!(50);
    let (status, error) = api
        .call(
            "POST",
            "/v1/definitions",
            Some(json!({"definition": as_json, "author": "ana"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        error["field"].as_str().unwrap().starts_with("tiers"),
        "{error}"
    );
    let (status, error) = api
        .call("POST", "/v1/definitions", Some(json!({"source": V1})))
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_json")),
        "{error}"
    );
    assert!(error["message"].as_str().unwrap().contains("author"));

    // A change makes a new version, not active yet.
    let v2_source = V1.replace("hot = 40", "hot = 45");
    let v2 = Definition::from_toml("v2.toml", &v2_source)
        .unwrap()
        .version;
    let (status, pushed) = api
        .call(
            "POST",
            "/v1/definitions",
            Some(json!({"source": v2_source, "author": "ana", "message": "stricter hot"})),
        )
        .await;
    assert_eq!(status, 201, "{pushed}");
    assert_eq!(pushed["version"], json!(v2));
    assert_eq!(pushed["created"], json!(true));
    // The same content again (different layout, comments) is the same version.
    let (status, again) = api
        .call(
            "POST",
            "/v1/definitions",
            Some(json!({"source": format!("# a comment\n{v2_source}\n\n"), "author": "bo", "message": "again"})),
        )
        .await;
    assert_eq!(
        (status, &again["created"], &again["author"]),
        (200, &json!(false), &json!("ana"))
    );
    let (_, list) = api.call("GET", "/v1/definitions", None).await;
    assert_eq!(list["active"], json!(v1));
    let versions: Vec<&str> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, [v1.as_str(), v2.as_str()]);
    assert_eq!(list["versions"][1]["message"], "stricter hot");

    // Show and diff.
    let (status, shown) = api
        .call("GET", &format!("/v1/definitions/{v2}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["definition"]["tiers"]["hot"], json!(45.0));
    assert!(shown["canonical"].as_str().unwrap().contains("\"hot\": 45"));
    let (status, diff) = api
        .call("GET", &format!("/v1/definitions/{v1}/diff/{v2}"), None)
        .await;
    assert_eq!(status, 200, "{diff}");
    let text = diff["diff"].as_str().unwrap();
    assert!(
        text.contains(&format!("--- {v1}")) && text.contains(&format!("+++ {v2}")),
        "{text}"
    );
    assert!(
        text.contains("-    \"hot\": 40.0") && text.contains("+    \"hot\": 45.0"),
        "{text}"
    );
    assert_eq!(
        (diff["added_lines"].as_u64(), diff["removed_lines"].as_u64()),
        (Some(1), Some(1))
    );
    let (status, _) = api.call("GET", "/v1/definitions/v000000000000", None).await;
    assert_eq!(status, 404);
    let (status, error) = api.call("GET", "/v1/definitions/latest", None).await;
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap().contains("12 hex digits"));

    // Activation changes what the pipeline reads.
    let cache = DefinitionCache::new(Duration::ZERO);
    assert_eq!(
        cache
            .get(&api.store, &tenant())
            .await
            .unwrap()
            .unwrap()
            .version,
        v1
    );
    let (status, activated) = api
        .call(
            "POST",
            &format!("/v1/definitions/{v2}/activate"),
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 200, "{activated}");
    assert_eq!(
        (&activated["active"], &activated["previous"]),
        (&json!(v2), &json!(v1))
    );
    assert_eq!(
        cache
            .get(&api.store, &tenant())
            .await
            .unwrap()
            .unwrap()
            .version,
        v2
    );
    let (status, _) = api
        .call(
            "POST",
            "/v1/definitions/v000000000000/activate",
            Some(json!({"author": "ana"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(
            "POST",
            &format!("/v1/definitions/{v2}/activate"),
            Some(json!({"author": " "})),
        )
        .await;
    assert_eq!(status, 400);

    // Rollback: back to the previous active version, then nothing left to roll back to.
    let (status, rolled) = api
        .call(
            "POST",
            "/v1/definitions/rollback",
            Some(json!({"author": "bo"})),
        )
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(
        (&rolled["active"], &rolled["rolled_back"]),
        (&json!(v1), &json!(v2))
    );
    assert_eq!(
        cache
            .get(&api.store, &tenant())
            .await
            .unwrap()
            .unwrap()
            .version,
        v1
    );
    let (status, error) = api
        .call(
            "POST",
            "/v1/definitions/rollback",
            Some(json!({"author": "bo"})),
        )
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (409, Some("conflict")),
        "{error}"
    );
    let (_, list) = api.call("GET", "/v1/definitions", None).await;
    let actions: Vec<(&str, &str)> = list["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["action"].as_str().unwrap(), h["author"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("activate", "pql"), ("activate", "ana"), ("rollback", "bo")]
    );

    // Push and activate in one call.
    let v3_source = V1.replace("warm = 10", "warm = 5");
    let (status, pushed) = api
        .call(
            "POST",
            "/v1/definitions",
            Some(json!({"source": v3_source, "author": "ana", "activate": true})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(pushed["active"], pushed["version"]);
    assert_eq!(
        api.store
            .tenant_definition(&tenant())
            .await
            .unwrap()
            .unwrap()
            .version,
        pushed["version"].as_str().unwrap()
    );
}

fn call(account: &str, kind: &str, name: &str, at: Timestamp, id: &str) -> pql_engine::Event {
    let mut raw = json!({
        "type": kind, "userId": "u1", "messageId": id,
        "timestamp": at.to_rfc3339(), "context": {"groupId": account},
    });
    if kind == "track" {
        raw["event"] = json!(name);
    } else {
        raw["groupId"] = json!(account);
        raw["traits"] = json!({"name": name});
    }
    parse_call(raw.to_string().as_bytes(), None, None).unwrap()
}

/// Stores an account record made of these events and observes it as qualify does.
async fn account(
    store: &Store,
    definition: &Definition,
    id: &str,
    events: &[(&str, &str)],
) -> Observed {
    let t0 = Timestamp::parse("2026-01-05T00:00:00Z").unwrap();
    let mut state = AccountState::new(definition);
    let mut clock = Timestamp::MIN;
    for (i, (kind, name)) in events.iter().enumerate() {
        let at = t0.plus_days(i as f64 * 0.1);
        let event = call(id, kind, name, at, &format!("{id}-{i}"));
        if state.apply(definition, &event) {
            clock = clock.max(at);
        }
    }
    // Built from its serialised form: the record may carry more (defaulted) fields.
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
        .unwrap()
}

#[tokio::test]
async fn accounts_by_stage_and_tier_with_decisions() {
    let api = Api::start().await;
    let definition = Definition::from_toml("v1.toml", V1).unwrap();
    let store = &api.store;
    let qualified = account(
        store,
        &definition,
        "initech",
        &[
            ("group", "Initech"),
            ("track", "Project Created"),
            ("track", "Teammate Invited"),
        ],
    )
    .await;
    assert!(matches!(qualified, Observed::Qualified(_)), "{qualified:?}");
    account(
        store,
        &definition,
        "globex",
        &[("track", "Project Created")],
    )
    .await;
    account(store, &definition, "hooli", &[("track", "Project Created")]).await;
    account(store, &definition, "umbrella", &[("track", "Page Viewed")]).await;
    // Another tenant's account is never listed.
    let other = TenantId::parse("other").unwrap();
    store
        .put_tenant(&other, "wk_other", &definition)
        .await
        .unwrap();

    let at = "at=2026-01-06T00:00:00Z";
    let (status, list) = api.call("GET", &format!("/v1/accounts?{at}"), None).await;
    assert_eq!(status, 200, "{list}");
    let names = |list: &Value| -> Vec<String> {
        list["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["account"].as_str().unwrap().to_owned())
            .collect()
    };
    // `umbrella` never left `signed_up`, so it has no lifecycle item.
    assert_eq!(names(&list), ["globex", "hooli", "initech"]);
    assert_eq!(list["next"], Value::Null);

    let (_, pql) = api
        .call("GET", &format!("/v1/accounts?stage=pql&{at}"), None)
        .await;
    assert_eq!(names(&pql), ["initech"]);
    assert_eq!(pql["accounts"][0]["tier"], "hot");
    assert_eq!(pql["accounts"][0]["name"], "Initech");
    assert_eq!(pql["accounts"][0]["qualifications"], 1);
    let (_, warm) = api
        .call("GET", &format!("/v1/accounts?tier=warm&{at}"), None)
        .await;
    assert_eq!(names(&warm), ["globex", "hooli"]);
    let (_, activated) = api
        .call(
            "GET",
            &format!("/v1/accounts?stage=activated&tier=hot&{at}"),
            None,
        )
        .await;
    assert_eq!(names(&activated), Vec::<String>::new());

    // Pages: follow `next` until the end, every account exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/accounts?limit=1&cursor={c}&{at}"),
            None => format!("/v1/accounts?limit=1&{at}"),
        };
        let (status, page) = api.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["accounts"].as_array().unwrap().len() <= 1);
        seen.extend(names(&page));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["globex", "hooli", "initech"]);

    // One account, with its decision and reasons.
    let (status, shown) = api
        .call("GET", &format!("/v1/accounts/initech?{at}"), None)
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["stage"], "pql");
    assert_eq!(shown["decision"]["tier"], "hot");
    assert!(
        !shown["decision"]["reasons"].as_array().unwrap().is_empty(),
        "{shown}"
    );
    assert_eq!(shown["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(
        shown["alerts"][0]["definition_version"],
        json!(definition.version)
    );
    let (status, _) = api.call("GET", "/v1/accounts/nobody", None).await;
    assert_eq!(status, 404);

    // The funnel: stages reached per day, median days from sign-up (the first event here).
    let (status, funnel) = api
        .call("GET", &format!("/v1/funnel?days=3&{at}"), None)
        .await;
    assert_eq!(status, 200, "{funnel}");
    assert_eq!(funnel["accounts"], 3);
    assert_eq!(funnel["stages"], json!({"activated": 2, "pql": 1}));
    let days: Vec<(u64, u64, u64)> = funnel["over_time"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let n = |k: &str| d[k].as_u64().unwrap();
            (n("signed_up"), n("activated"), n("pql"))
        })
        .collect();
    assert_eq!(days, [(0, 0, 0), (3, 2, 0), (3, 3, 1)], "{funnel}");
    let medians = &funnel["median_days_from_signup"];
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-6;
    assert!(close(&medians["pql"]["median_days"], 0.2), "{medians}");
    assert!(
        close(&medians["activated"]["median_days"], 0.0),
        "{medians}"
    );
    assert!(
        close(&medians["milestones"]["invited"]["median_days"], 0.2),
        "{medians}"
    );
    assert_eq!(medians["milestones"]["invited"]["accounts"], 1);
    let (status, error) = api.call("GET", "/v1/funnel?days=0", None).await;
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap().contains("from 1 to 365"));

    // Bad input says what is allowed.
    for (query, needle) in [
        ("stage=hot", "signed_up"),
        ("tier=boiling", "cold, warm, hot"),
        ("limit=0", "from 1 to 200"),
        ("cursor=zz", "not a cursor"),
        ("sort=name", "allowed: stage"),
        ("at=yesterday", "RFC 3339"),
    ] {
        let (status, error) = api
            .call("GET", &format!("/v1/accounts?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{query}: {error}"
        );
    }
}

#[tokio::test]
async fn precision_per_definition_version_from_sales_feedback() {
    use pql_store::deliveries::Feedback;
    let api = Api::start().await;
    let store = &api.store;
    let v1 = Definition::from_toml("v1.toml", V1).unwrap();
    let v2 = Definition::from_toml("v2.toml", &V1.replace("hot = 40", "hot = 45")).unwrap();
    let qualify = [
        ("group", "X"),
        ("track", "Project Created"),
        ("track", "Teammate Invited"),
    ];
    for (definition, id, outcome) in [
        (&v1, "a1", Some("converted")),
        (&v1, "a2", Some("rejected")),
        (&v1, "a3", Some("accepted")),
        (&v2, "b1", Some("converted")),
        (&v2, "b2", None),
    ] {
        let observed = account(store, definition, id, &qualify).await;
        assert!(
            matches!(observed, Observed::Qualified(_)),
            "{id}: {observed:?}"
        );
        if let Some(outcome) = outcome {
            store
                .put_feedback(&Feedback {
                    tenant: tenant(),
                    account: id.to_owned(),
                    sequence: 1,
                    outcome: outcome.to_owned(),
                    reason: None,
                    by: Some("sales".into()),
                    at: "2026-01-07T00:00:00Z".into(),
                    definition_version: definition.version.clone(),
                })
                .await
                .unwrap();
        }
    }
    // Not qualified: no alert, counted nowhere.
    account(store, &v1, "c1", &[("track", "Project Created")]).await;

    let (status, answer) = api.call("GET", "/v1/precision", None).await;
    assert_eq!(status, 200, "{answer}");
    let rows = answer["versions"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{answer}");
    let row = |v: &str| {
        rows.iter()
            .find(|r| r["definition_version"] == v)
            .unwrap_or_else(|| panic!("{v}: {answer}"))
    };
    let first = row(&v1.version);
    assert_eq!(first["alerts"], 3);
    assert_eq!(first["with_final_outcome"], 2);
    assert_eq!(first["precision"], json!(0.5));
    assert_eq!(first["name"], "admin tests");
    assert_eq!(
        first["outcomes"],
        json!({"accepted": 1, "converted": 1, "rejected": 1})
    );
    let second = row(&v2.version);
    assert_eq!(
        (second["alerts"].as_u64(), second["precision"].as_f64()),
        (Some(2), Some(1.0))
    );
}
