//! The admin API over a real socket for the tests: a fresh store (tables on DynamoDB Local)
//! with one tenant (its write key, active definition and admin key), served by the local
//! server around the Lambda handler.

// Each test file uses part of this.
#![allow(dead_code)]

use std::sync::Arc;

use pql_admin::App;
use pql_engine::Definition;
use pql_store::tenants::TenantId;
use pql_store::Store;
use serde_json::Value;

/// The definition the tests start from: two milestones (creating a project is worth 10 and
/// activates, an invitation 40), hot at 40, PQL needing both.
pub const V1: &str = r#"
name = "admin tests"
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

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    admin_key: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _db: Option<pql_dynamodb_local::DynamoDbLocal>,
}

/// What the API answered: status, the JSON body, and the `allow` header (405s).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub allow: String,
}

impl Api {
    /// Serves a tenant with `definition` (TOML) active.
    pub async fn serve(
        tenant: &TenantId,
        write_key: &str,
        admin_key: &str,
        definition: &str,
    ) -> Api {
        let (store, db) = pql_store::testing::fresh_store().await;
        let definition = Definition::from_toml("definition.toml", definition).unwrap();
        store
            .put_tenant(tenant, write_key, &definition)
            .await
            .unwrap();
        store.put_admin_key(tenant, admin_key).await.unwrap();
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
            admin_key: admin_key.to_owned(),
            _stop: stop,
            _db: db,
        }
    }

    /// A request with the admin key.
    pub async fn admin(&self, method: &str, path: &str, body: Option<String>) -> Answer {
        let authorization = format!("Bearer {}", self.admin_key);
        self.request(method, path, body, Some(&authorization)).await
    }

    /// A request with any (or no) `authorization`; `body` is sent as JSON.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        authorization: Option<&str>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        Answer {
            status,
            body,
            allow,
        }
    }
}
