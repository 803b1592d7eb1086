//! The handler: one admin request in, one response out. Everything that can go wrong becomes
//! an [`AdminError`] response, so the handler itself cannot fail.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use pql_engine::definition::Tier;
use pql_engine::{evaluate, Definition, Timestamp};
use pql_store::accounts::{parse_stage, LifecycleItem};
use pql_store::definition_versions::{canonical_text, is_version_id, VersionSummary};
use pql_store::records::RecordKind;
use pql_store::tenants::TenantId;
use pql_store::{AccountRecord, Store};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth;
use crate::error::{json_response, AdminError};

/// The largest request body accepted (a definition is a few KB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Accounts per page when `limit` is not given, and the most allowed.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;

/// The function: the store, built once per instance.
#[derive(Debug, Clone)]
pub struct App {
    store: Store,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Definitions,
    Rollback,
    Preview,
    Reevaluation,
    Shadow(String),
    ShadowReport(String),
    Version(String),
    Diff(String, String),
    Activate(String),
    Accounts,
    Account(String),
    Funnel,
    Precision,
    Alerts,
    AlertFeedback(String),
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        Some(match segments.as_slice() {
            ["v1", "definitions"] => Route::Definitions,
            ["v1", "definitions", "rollback"] => Route::Rollback,
            ["v1", "definitions", "preview"] => Route::Preview,
            ["v1", "definitions", "reevaluation"] => Route::Reevaluation,
            ["v1", "definitions", v] => Route::Version((*v).to_owned()),
            ["v1", "definitions", a, "diff", b] => Route::Diff((*a).to_owned(), (*b).to_owned()),
            ["v1", "definitions", v, "activate"] => Route::Activate((*v).to_owned()),
            ["v1", "definitions", v, "shadow"] => Route::Shadow((*v).to_owned()),
            ["v1", "definitions", v, "shadow", "report"] => Route::ShadowReport((*v).to_owned()),
            ["v1", "accounts"] => Route::Accounts,
            ["v1", "funnel"] => Route::Funnel,
            ["v1", "precision"] => Route::Precision,
            ["v1", "alerts"] => Route::Alerts,
            // An account id may hold `/`: every segment between `alerts` and `feedback`.
            ["v1", "alerts", id @ .., "feedback"] if id.len() >= 2 => Route::AlertFeedback(
                id.iter()
                    .map(|s| percent_decode(s))
                    .collect::<Option<Vec<_>>>()?
                    .join("/"),
            ),
            ["v1", "accounts", id] => Route::Account(percent_decode(id)?),
            _ => return None,
        })
    }

    fn allow(&self) -> &'static str {
        match self {
            Route::Definitions => "GET, POST",
            Route::Rollback | Route::Activate(_) | Route::Preview => "POST",
            Route::Shadow(_) => "POST, DELETE",
            Route::AlertFeedback(_) => "POST",
            _ => "GET",
        }
    }
}

/// `%XX` escapes of a path segment (an account id may hold any character).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_params(request: &Request) -> Result<BTreeMap<String, String>, AdminError> {
    let mut params = BTreeMap::new();
    for pair in request.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |t: &str| {
            percent_decode(&t.replace('+', " ")).ok_or_else(|| {
                AdminError::BadRequest(format!(
                    "query parameter `{pair}` is not valid percent-encoding"
                ))
            })
        };
        params.insert(decode(name)?, decode(value)?);
    }
    Ok(params)
}

/// `POST /v1/definitions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    /// The definition as a JSON object (the TOML schema).
    definition: Option<Box<serde_json::value::RawValue>>,
    /// Or its source text, with `format` (`toml`, the default, or `json`).
    source: Option<String>,
    format: Option<String>,
    /// The file name errors are reported against.
    file: Option<String>,
    author: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    activate: bool,
}

/// `POST .../activate` and `.../rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorBody {
    author: String,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AdminError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AdminError::TooLarge {
            bytes: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::InvalidJson("the body is empty".into()));
    }
    serde_json::from_slice(body).map_err(|e| AdminError::InvalidJson(e.to_string()))
}

fn check_author(author: &str) -> Result<String, AdminError> {
    let author = author.trim();
    if author.is_empty() || author.len() > 200 {
        return Err(AdminError::BadRequest(
            "`author` must name who makes the change (1 to 200 characters)".into(),
        ));
    }
    Ok(author.to_owned())
}

fn check_version(version: &str) -> Result<(), AdminError> {
    if is_version_id(version) {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!(
            "`{version}` is not a version id (allowed: `v` and 12 hex digits, as `GET /v1/definitions` lists)"
        )))
    }
}

fn tier_from(text: &str) -> Result<Tier, AdminError> {
    match text {
        "cold" => Ok(Tier::Cold),
        "warm" => Ok(Tier::Warm),
        "hot" => Ok(Tier::Hot),
        _ => Err(AdminError::BadRequest(format!(
            "tier `{text}` is not a tier (allowed: one of cold, warm, hot)"
        ))),
    }
}

fn summary_json(s: &VersionSummary, active: Option<&str>) -> Value {
    json!({
        "version": s.version,
        "name": s.name,
        "author": s.author,
        "message": s.message,
        "created_at": s.created_at.to_rfc3339(),
        "active": active == Some(s.version.as_str()),
    })
}

impl App {
    pub fn new(store: Store) -> Self {
        App { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One request → one response.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        match self.route(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(%method, %path, status = error.status().as_u16(), error = error.code(), "admin request refused");
                error.into_response()
            }
        }
    }

    async fn route(&self, request: Request) -> Result<Response<Body>, AdminError> {
        let path = request.uri().path().to_owned();
        let route = Route::parse(&path).ok_or_else(|| {
            AdminError::NotFound(format!(
                "{path} (the admin API has /v1/definitions and /v1/accounts)"
            ))
        })?;
        let method = request.method().clone();
        let allowed = match (&route, &method) {
            (Route::AlertFeedback(_), m) => m == Method::POST,
            (Route::Definitions, &Method::GET | &Method::POST) => true,
            (Route::Shadow(_), m) => m == Method::POST || m == Method::DELETE,
            (Route::Rollback | Route::Activate(_) | Route::Preview, &Method::POST) => true,
            (Route::Rollback | Route::Activate(_) | Route::Definitions | Route::Preview, _) => {
                false
            }
            (_, &Method::GET) => true,
            _ => false,
        };
        if !allowed {
            return Err(AdminError::MethodNotAllowed {
                method: method.to_string(),
                path,
                allow: route.allow(),
            });
        }
        let tenant = auth::authenticate(&self.store, request.headers()).await?;
        let params = query_params(&request)?;
        let body = request.body().as_ref();
        match (route, method) {
            (Route::Definitions, Method::GET) => self.list_definitions(&tenant).await,
            (Route::Definitions, _) => self.push(&tenant, parse_body(body)?).await,
            (Route::Version(v), _) => self.show_definition(&tenant, &v).await,
            (Route::Diff(a, b), _) => self.diff(&tenant, &a, &b).await,
            (Route::Activate(v), _) => {
                let body: ActorBody = parse_body(body)?;
                self.activate(&tenant, &v, &body.author).await
            }
            (Route::Rollback, _) => {
                let body: ActorBody = parse_body(body)?;
                self.rollback(&tenant, &body.author).await
            }
            (Route::Accounts, _) => self.list_accounts(&tenant, &params).await,
            (Route::Account(id), _) => self.show_account(&tenant, &id, &params).await,
            (Route::Funnel, _) => self.funnel(&tenant, &params).await,
            (Route::Precision, _) => self.precision(&tenant).await,
            (Route::Alerts, _) => crate::alerts::list(&self.store, &tenant, &params).await,
            (Route::AlertFeedback(id), _) => {
                crate::alerts::feedback(&self.store, &tenant, &id, body).await
            }
            (Route::Preview, _) => self.preview(&tenant, parse_body(body)?).await,
            (Route::Reevaluation, _) => self.reevaluation_status(&tenant).await,
            (Route::Shadow(v), Method::DELETE) => {
                check_version(&v)?;
                self.stop_shadow(&tenant, &v).await
            }
            (Route::Shadow(v), _) => {
                check_version(&v)?;
                let body: ActorBody = parse_body(body)?;
                self.start_shadow(&tenant, &v, check_author(&body.author)?)
                    .await
            }
            (Route::ShadowReport(v), _) => {
                check_version(&v)?;
                self.shadow_report(&tenant, &v).await
            }
        }
    }

    async fn list_definitions(&self, tenant: &TenantId) -> Result<Response<Body>, AdminError> {
        let index = self
            .store
            .definition_index(tenant)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("tenant `{tenant}`")))?;
        let active = index.active();
        let versions: Vec<Value> = index
            .versions
            .iter()
            .map(|s| summary_json(s, active))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "active": active,
                "versions": versions,
                "history": index.history,
            }),
        ))
    }

    async fn push(&self, tenant: &TenantId, body: PushBody) -> Result<Response<Body>, AdminError> {
        let author = check_author(&body.author)?;
        let definition = match (&body.definition, &body.source) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AdminError::BadRequest(
                    "send exactly one of `definition` (a JSON object) or `source` (TOML or JSON text, with `format`)".into(),
                ))
            }
            (Some(json), None) => {
                if body.format.is_some() {
                    return Err(AdminError::BadRequest(
                        "`format` goes with `source`, not with `definition`".into(),
                    ));
                }
                let file = body.file.as_deref().unwrap_or("definition");
                Definition::from_json(file, json.get()).map_err(AdminError::InvalidDefinition)?
            }
            (None, Some(source)) => {
                let format = body.format.as_deref().unwrap_or("toml");
                let file = body.file.clone().unwrap_or_else(|| format!("definition.{format}"));
                match format {
                    "toml" => Definition::from_toml(&file, source),
                    "json" => Definition::from_json(&file, source),
                    other => {
                        return Err(AdminError::BadRequest(format!(
                            "`format` is `{other}` (allowed: `toml` or `json`)"
                        )))
                    }
                }
                .map_err(AdminError::InvalidDefinition)?
            }
        };
        let now = Timestamp::now();
        let (summary, created) = self
            .store
            .push_definition(tenant, &definition, &author, body.message.trim(), now)
            .await?;
        let mut answer = json!({
            "version": summary.version,
            "name": summary.name,
            "author": summary.author,
            "message": summary.message,
            "created_at": summary.created_at.to_rfc3339(),
            "created": created,
        });
        if body.activate {
            let activated = self
                .store
                .activate_definition(tenant, &summary.version, &author, now)
                .await?;
            answer["active"] = json!(activated.active);
            answer["previous"] = json!(activated.previous);
            answer["reevaluation"] = json!(
                self.start_reevaluation(tenant, &activated, "activate", now)
                    .await?
            );
        }
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(status, &answer))
    }

    async fn show_definition(
        &self,
        tenant: &TenantId,
        version: &str,
    ) -> Result<Response<Body>, AdminError> {
        check_version(version)?;
        let index = self.store.definition_index(tenant).await?;
        let stored = self
            .store
            .definition_version(tenant, version)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("definition version `{version}`")))?;
        let active = index.as_ref().and_then(|i| i.active());
        let mut answer = summary_json(&stored.summary, active);
        answer["definition"] =
            serde_json::to_value(&stored.definition.spec).expect("a definition always serialises");
        answer["canonical"] = json!(canonical_text(&stored.definition.spec));
        Ok(json_response(StatusCode::OK, &answer))
    }

    async fn diff(
        &self,
        tenant: &TenantId,
        from: &str,
        to: &str,
    ) -> Result<Response<Body>, AdminError> {
        check_version(from)?;
        check_version(to)?;
        let load = |v: &'static str, version: String| async move {
            self.store
                .definition_version(tenant, &version)
                .await?
                .ok_or_else(|| {
                    AdminError::NotFound(format!("definition version `{version}` ({v})"))
                })
        };
        let a = load("from", from.to_owned()).await?;
        let b = load("to", to.to_owned()).await?;
        let (a_text, b_text) = (
            canonical_text(&a.definition.spec),
            canonical_text(&b.definition.spec),
        );
        let diff = similar::TextDiff::from_lines(&a_text, &b_text);
        let unified = diff
            .unified_diff()
            .context_radius(3)
            .header(from, to)
            .to_string();
        let (mut added, mut removed) = (0usize, 0usize);
        for change in diff.iter_all_changes() {
            match change.tag() {
                similar::ChangeTag::Insert => added += 1,
                similar::ChangeTag::Delete => removed += 1,
                similar::ChangeTag::Equal => {}
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "from": from,
                "to": to,
                "identical": from == to,
                "added_lines": added,
                "removed_lines": removed,
                "diff": unified,
            }),
        ))
    }

    async fn activate(
        &self,
        tenant: &TenantId,
        version: &str,
        author: &str,
    ) -> Result<Response<Body>, AdminError> {
        check_version(version)?;
        let author = check_author(author)?;
        let now = Timestamp::now();
        let activated = self
            .store
            .activate_definition(tenant, version, &author, now)
            .await?;
        // Existing accounts are re-evaluated under it by the sweep, in chunks.
        let job = self
            .start_reevaluation(tenant, &activated, "activate", now)
            .await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "active": activated.active, "previous": activated.previous, "reevaluation": job }),
        ))
    }

    async fn rollback(
        &self,
        tenant: &TenantId,
        author: &str,
    ) -> Result<Response<Body>, AdminError> {
        let author = check_author(author)?;
        let now = Timestamp::now();
        let activated = self.store.rollback_definition(tenant, &author, now).await?;
        let job = self
            .start_reevaluation(tenant, &activated, "rollback", now)
            .await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "active": activated.active, "rolled_back": activated.previous, "reevaluation": job }),
        ))
    }

    async fn active_definition(&self, tenant: &TenantId) -> Result<Definition, AdminError> {
        self.store
            .tenant_definition(tenant)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("tenant `{tenant}` has no definition")))
    }

    fn decision_time(params: &BTreeMap<String, String>) -> Result<Timestamp, AdminError> {
        match params.get("at") {
            None => Ok(Timestamp::now()),
            Some(at) => Timestamp::parse(at).map_err(|e| {
                AdminError::BadRequest(format!("`at` is `{at}`: {e} (allowed: an RFC 3339 time)"))
            }),
        }
    }

    async fn list_accounts(
        &self,
        tenant: &TenantId,
        params: &BTreeMap<String, String>,
    ) -> Result<Response<Body>, AdminError> {
        for name in params.keys() {
            if !["stage", "tier", "limit", "cursor", "at"].contains(&name.as_str()) {
                return Err(AdminError::BadRequest(format!(
                    "unknown query parameter `{name}` (allowed: stage, tier, limit, cursor, at)"
                )));
            }
        }
        let stage = params
            .get("stage")
            .map(|s| parse_stage(s))
            .transpose()
            .map_err(AdminError::BadRequest)?;
        let tier = params.get("tier").map(|t| tier_from(t)).transpose()?;
        let limit = match params.get("limit") {
            None => DEFAULT_PAGE,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(AdminError::BadRequest(format!(
                        "`limit` is `{l}` (allowed: a whole number from 1 to {MAX_PAGE})"
                    )))
                }
            },
        };
        let at = Self::decision_time(params)?;
        let definition = self.active_definition(tenant).await?;
        let page = self
            .store
            .list_lifecycles(
                tenant,
                stage,
                limit,
                params.get("cursor").map(String::as_str),
            )
            .await?
            .map_err(AdminError::BadRequest)?;
        let records = futures::future::join_all(page.items.iter().map(|item| {
            self.store
                .load_record::<AccountRecord>(tenant, RecordKind::Account, &item.account)
        }))
        .await;
        let mut accounts = Vec::new();
        for (item, record) in page.items.iter().zip(records) {
            let record = record?;
            let entry = account_summary(&definition, item, record.as_ref().map(|r| &r.value), at);
            let keep = match tier {
                None => true,
                Some(t) => entry["tier"] == json!(t.as_str()),
            };
            if keep {
                accounts.push(entry);
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "definition_version": definition.version,
                "evaluated_at": at.to_rfc3339(),
                "accounts": accounts,
                "next": page.next,
            }),
        ))
    }

    async fn show_account(
        &self,
        tenant: &TenantId,
        account: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Response<Body>, AdminError> {
        let at = Self::decision_time(params)?;
        let definition = self.active_definition(tenant).await?;
        let lifecycle = self.store.load_lifecycle(tenant, account).await?;
        let record = self
            .store
            .load_record::<AccountRecord>(tenant, RecordKind::Account, account)
            .await?;
        if lifecycle.version == 0 && record.is_none() {
            return Err(AdminError::NotFound(format!("account `{account}`")));
        }
        let decision = record
            .as_ref()
            .map(|r| evaluate(&definition, &r.value.state, at));
        let alerts: Vec<Value> = self
            .store
            .alerts(tenant, account)
            .await?
            .into_iter()
            .map(|a| {
                json!({
                    "sequence": a.sequence,
                    "qualified_at": a.qualified_at.to_rfc3339(),
                    "tier": a.tier.as_str(),
                    "score": a.score,
                    "definition_version": a.definition_version,
                    "trigger": a.trigger.as_str(),
                    "reasons": a.decision.get("reasons").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "account": account,
                "name": record.as_ref().and_then(|r| r.value.state.name()),
                "stage": lifecycle.value.lifecycle.stage.as_str(),
                "lifecycle": lifecycle.value.lifecycle,
                "definition_version": definition.version,
                "decision": decision,
                "alerts": alerts,
            }),
        ))
    }
}

/// The most accounts `GET /v1/funnel` reads (it reads each one's record: admin only).
pub const MAX_FUNNEL_ACCOUNTS: usize = 2000;

fn median(values: &mut [f64]) -> Option<f64> {
    pql_engine::backtest::median(values)
}

impl App {
    /// `GET /v1/funnel?days=N&at=T`: accounts per stage reached on each of the last N days
    /// (from the lifecycle's and the decision's times), the current stages, and the median days
    /// from sign-up to activation, to each milestone and to PQL. Reads at most
    /// [`MAX_FUNNEL_ACCOUNTS`] accounts (`truncated` says when there were more).
    async fn funnel(
        &self,
        tenant: &TenantId,
        params: &BTreeMap<String, String>,
    ) -> Result<Response<Body>, AdminError> {
        for name in params.keys() {
            if !["days", "at"].contains(&name.as_str()) {
                return Err(AdminError::BadRequest(format!(
                    "unknown query parameter `{name}` (allowed: days, at)"
                )));
            }
        }
        let days = match params.get("days") {
            None => 30,
            Some(d) => match d.parse::<u32>() {
                Ok(n) if (1..=365).contains(&n) => n,
                _ => {
                    return Err(AdminError::BadRequest(format!(
                        "`days` is `{d}` (allowed: a whole number from 1 to 365)"
                    )))
                }
            },
        };
        let at = Self::decision_time(params)?;
        let definition = self.active_definition(tenant).await?;
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut truncated = false;
        loop {
            let page = self
                .store
                .list_lifecycles(tenant, None, MAX_FUNNEL_ACCOUNTS, cursor.as_deref())
                .await?
                .map_err(AdminError::BadRequest)?;
            items.extend(page.items);
            cursor = page.next;
            if items.len() >= MAX_FUNNEL_ACCOUNTS {
                truncated = cursor.is_some() || items.len() > MAX_FUNNEL_ACCOUNTS;
                items.truncate(MAX_FUNNEL_ACCOUNTS);
                break;
            }
            if cursor.is_none() {
                break;
            }
        }
        let mut stages: BTreeMap<&str, usize> = BTreeMap::new();
        let mut signed_up = Vec::new();
        let mut activated = Vec::new();
        let mut qualified = Vec::new();
        let mut to_activation = Vec::new();
        let mut to_pql = Vec::new();
        let mut to_milestone: BTreeMap<String, Vec<f64>> = definition
            .milestones
            .iter()
            .map(|m| (m.name.clone(), Vec::new()))
            .collect();
        for chunk in items.chunks(50) {
            let records = futures::future::join_all(chunk.iter().map(|item| {
                self.store
                    .load_record::<AccountRecord>(tenant, RecordKind::Account, &item.account)
            }))
            .await;
            for (item, record) in chunk.iter().zip(records) {
                let lifecycle = &item.lifecycle;
                *stages.entry(lifecycle.stage.as_str()).or_default() += 1;
                let decision = record?.map(|r| evaluate(&definition, &r.value.state, at));
                let signup = decision.as_ref().and_then(|d| d.signed_up_at);
                signed_up.extend(signup);
                activated.extend(lifecycle.activated_at);
                qualified.extend(lifecycle.first_qualified_at);
                let Some(signup) = signup else { continue };
                let since = |t: Timestamp| signup.days_before(t).max(0.0);
                to_activation.extend(lifecycle.activated_at.map(since));
                to_pql.extend(lifecycle.first_qualified_at.map(since));
                for m in decision.iter().flat_map(|d| &d.milestones) {
                    if let (Some(met), Some(list)) = (m.met_at, to_milestone.get_mut(&m.name)) {
                        list.push(since(met));
                    }
                }
            }
        }
        let reached_by =
            |times: &[Timestamp], end: Timestamp| times.iter().filter(|t| **t <= end).count();
        let over_time: Vec<Value> = (0..days)
            .rev()
            .map(|back| {
                let end = at.minus_days(f64::from(back));
                json!({
                    "date": end.to_rfc3339(),
                    "signed_up": reached_by(&signed_up, end),
                    "activated": reached_by(&activated, end),
                    "pql": reached_by(&qualified, end),
                })
            })
            .collect();
        let milestones: BTreeMap<String, Value> = to_milestone
            .into_iter()
            .map(|(name, mut days)| {
                (
                    name,
                    json!({ "accounts": days.len(), "median_days": median(&mut days) }),
                )
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "definition_version": definition.version,
                "evaluated_at": at.to_rfc3339(),
                "accounts": items.len(),
                "truncated": truncated,
                "stages": stages,
                "over_time": over_time,
                "median_days_from_signup": {
                    "activated": { "accounts": to_activation.len(), "median_days": median(&mut to_activation) },
                    "pql": { "accounts": to_pql.len(), "median_days": median(&mut to_pql) },
                    "milestones": milestones,
                },
            }),
        ))
    }
}

impl App {
    /// `GET /v1/precision`: per definition version, the alerts it made and the sales outcomes
    /// recorded on them (`pql alerts feedback`: accepted, rejected, converted, lost), with
    /// precision = converted ÷ alerts with a final outcome (converted, lost or rejected).
    /// Admin-only and bounded: reads at most [`MAX_FUNNEL_ACCOUNTS`] lifecycles and the alerts
    /// of those that qualified, and scans the tenant's feedback items.
    async fn precision(&self, tenant: &TenantId) -> Result<Response<Body>, AdminError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut truncated = false;
        loop {
            let page = self
                .store
                .list_lifecycles(tenant, None, MAX_FUNNEL_ACCOUNTS, cursor.as_deref())
                .await?
                .map_err(AdminError::BadRequest)?;
            items.extend(
                page.items
                    .into_iter()
                    .filter(|i| i.lifecycle.qualifications > 0),
            );
            cursor = page.next;
            if items.len() >= MAX_FUNNEL_ACCOUNTS {
                truncated = cursor.is_some() || items.len() > MAX_FUNNEL_ACCOUNTS;
                items.truncate(MAX_FUNNEL_ACCOUNTS);
                break;
            }
            if cursor.is_none() {
                break;
            }
        }
        let mut alerted: BTreeMap<String, usize> = BTreeMap::new();
        for chunk in items.chunks(50) {
            let alerts = futures::future::join_all(
                chunk
                    .iter()
                    .map(|item| self.store.alerts(tenant, &item.account)),
            )
            .await;
            for alert in alerts
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
            {
                *alerted.entry(alert.definition_version).or_default() += 1;
            }
        }
        let (_, feedback) = self.store.all_deliveries(Some(tenant)).await?;
        let mut outcomes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for f in feedback {
            alerted.entry(f.definition_version.clone()).or_default();
            *outcomes
                .entry(f.definition_version)
                .or_default()
                .entry(f.outcome)
                .or_default() += 1;
        }
        let index = self.store.definition_index(tenant).await?;
        let rows: Vec<Value> = alerted
            .into_iter()
            .map(|(version, alerts)| {
                let by = outcomes.remove(&version).unwrap_or_default();
                let n = |s: &str| by.get(s).copied().unwrap_or(0);
                let decided = n("converted") + n("lost") + n("rejected");
                let name = index
                    .as_ref()
                    .and_then(|i| i.summary(&version))
                    .map(|s| s.name.clone());
                json!({
                    "definition_version": version,
                    "name": name,
                    "alerts": alerts,
                    "outcomes": by,
                    "with_final_outcome": decided,
                    "converted": n("converted"),
                    "precision": (decided > 0).then(|| n("converted") as f64 / decided as f64),
                })
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "versions": rows, "truncated": truncated }),
        ))
    }
}

fn account_summary(
    definition: &Definition,
    item: &LifecycleItem,
    record: Option<&AccountRecord>,
    at: Timestamp,
) -> Value {
    let decision = record.map(|r| evaluate(definition, &r.state, at));
    json!({
        "account": item.account,
        "name": record.and_then(|r| r.state.name()),
        "stage": item.lifecycle.stage.as_str(),
        "qualifications": item.lifecycle.qualifications,
        "first_qualified_at": item.lifecycle.first_qualified_at.map(|t| t.to_rfc3339()),
        "tier": decision.as_ref().map(|d| d.tier.as_str()),
        "score": decision.as_ref().map(|d| d.score),
        "qualifies": decision.as_ref().map(|d| d.qualifies),
        "updated_at": item.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/v1/definitions"), Some(Route::Definitions));
        assert_eq!(Route::parse("/v1/definitions/"), Some(Route::Definitions));
        assert_eq!(
            Route::parse("/v1/definitions/rollback"),
            Some(Route::Rollback)
        );
        assert_eq!(
            Route::parse("/v1/definitions/va/diff/vb"),
            Some(Route::Diff("va".into(), "vb".into()))
        );
        assert_eq!(
            Route::parse("/v1/accounts/acme%20inc"),
            Some(Route::Account("acme inc".into()))
        );
        assert_eq!(Route::parse("/v1/accounts/bad%zz"), None);
        assert_eq!(Route::parse("/v1/funnel"), Some(Route::Funnel));
        assert_eq!(Route::parse("/v1/precision"), Some(Route::Precision));
        assert_eq!(Route::parse("/v2/definitions"), None);
    }
}
