//! One day of Segment calls for every account: the account's scripted moments that fall on
//! the day, plus the everyday activity of its people, rendered as Segment JSON.

use pql_engine::Timestamp;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use crate::plan::{weekday, Account, Kind, What, DAY, HOUR, MIN, SEC, WORKDAY};
use crate::random::{poisson, stream, uniform, uuid};
use crate::Simulation;

/// Where the product's web app and marketing site live (a reserved TLD: nothing real).
const APP: &str = "https://app.quanta.example";
const SITE: &str = "https://www.quanta.example";

/// One call with the time the engine will read from it, and a tie-breaker that keeps the
/// order deterministic and each account's calls in the order they were made.
struct Stamped {
    at: i64,
    order: u64,
    value: Value,
}

/// Every call of day `day` (0-based), sorted by time.
pub(crate) fn calls(sim: &Simulation, day: u32) -> Vec<Value> {
    let start = sim.config.start.millis() + i64::from(day) * DAY;
    let end = start + DAY;
    let mut out = Vec::new();
    for (index, account) in sim.accounts.iter().enumerate() {
        let lo = account.actions.partition_point(|a| a.at < start);
        let hi = account.actions.partition_point(|a| a.at < end);
        if lo == hi && account.signup >= end {
            continue;
        }
        let mut gen = DayGen {
            account,
            rng: stream(sim.config.seed, index as u64, u64::from(day)),
            out: &mut out,
            order: (index as u64) << 32,
            start,
            end,
        };
        for action in &account.actions[lo..hi] {
            gen.scripted(action.at, action.user, &action.what);
        }
        if account.signup < end {
            gen.everyday();
        }
    }
    out.sort_by_key(|s| (s.at, s.order));
    out.into_iter().map(|s| s.value).collect()
}

fn iso(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

/// The same instant written in local time with its offset: `2026-01-05T11:00:00.000+01:00`.
fn iso_local(ms: i64, tz_minutes: i32) -> String {
    if tz_minutes == 0 {
        return iso(ms);
    }
    let local = Timestamp(ms + i64::from(tz_minutes) * MIN).to_rfc3339();
    let sign = if tz_minutes < 0 { '-' } else { '+' };
    let abs = tz_minutes.unsigned_abs();
    format!(
        "{}{sign}{:02}:{:02}",
        local.trim_end_matches('Z'),
        abs / 60,
        abs % 60
    )
}

fn page_name(path: &str) -> &'static str {
    match path.split(['?', '#']).next().unwrap_or(path) {
        "/" => "Home",
        "/pricing" => "Pricing",
        "/docs" => "Docs",
        "/signup" => "Sign up",
        "/customers" => "Customers",
        "/invite/accept" => "Accept invitation",
        "/dashboard" => "Dashboard",
        "/reports" => "Reports",
        "/settings" => "Settings",
        _ => "Docs",
    }
}

/// Everyday product usage, weighted.
#[derive(Clone, Copy)]
enum Usage {
    DashboardPage,
    DashboardViewed,
    DocsPage,
    QueryRun,
    ChartCreated,
    FilterApplied,
    ReportsPage,
    ReportShared,
    SettingsPage,
    ReportExported,
    MobileScreen,
}

const DOCS: &[&str] = &[
    "/docs",
    "/docs/getting-started",
    "/docs/sql",
    "/docs/integrations/postgres",
    "/docs/api",
];

struct DayGen<'a> {
    account: &'a Account,
    rng: ChaCha8Rng,
    out: &'a mut Vec<Stamped>,
    order: u64,
    start: i64,
    end: i64,
}

impl DayGen<'_> {
    fn push(&mut self, at: i64, value: Value) {
        self.order += 1;
        let browser_retry = value.get("sentAt").is_some() && self.rng.random_bool(0.003);
        if browser_retry {
            // A retried delivery: the very same call twice.
            self.out.push(Stamped {
                at,
                order: self.order,
                value: value.clone(),
            });
            self.order += 1;
        }
        self.out.push(Stamped {
            at,
            order: self.order,
            value,
        });
    }

    /// The fields every call has: type, ids, context and times.
    fn call(
        &mut self,
        kind: &'static str,
        at: i64,
        user: usize,
        identified: bool,
        browser: bool,
    ) -> Map<String, Value> {
        let account = self.account;
        let u = &account.users[user];
        let mut call = Map::new();
        call.insert("type".into(), kind.into());
        call.insert("messageId".into(), uuid(&mut self.rng).into());
        if identified {
            call.insert("userId".into(), u.id.as_str().into());
            if browser && self.rng.random_bool(0.8) {
                call.insert("anonymousId".into(), u.anonymous_id.as_str().into());
            }
        } else {
            call.insert("anonymousId".into(), u.anonymous_id.as_str().into());
        }

        let mut context = Map::new();
        if browser {
            context.insert(
                "library".into(),
                json!({"name": "analytics.js", "version": "next-1.70.0"}),
            );
            context.insert("userAgent".into(), u.user_agent.into());
            context.insert("locale".into(), "en-US".into());
            context.insert(
                "ip".into(),
                format!("203.0.113.{}", self.rng.random_range(1..255)).into(),
            );
        } else {
            context.insert(
                "library".into(),
                json!({"name": "analytics-node", "version": "2.1.2"}),
            );
        }
        let linked = identified && at >= u.grouped;
        if linked && self.rng.random_bool(account.group_context) {
            context.insert("groupId".into(), account.id.as_str().into());
        }
        call.insert("context".into(), Value::Object(context));

        if browser {
            // Device clock (skewed), the time the batch was sent (device clock) and the time it
            // arrived (true clock): the engine corrects the skew back to `at`.
            let queued = if self.rng.random_bool(0.02) {
                self.rng.random_range(MIN..30 * MIN)
            } else {
                self.rng.random_range(50..4 * SEC)
            };
            let device = at + u.skew;
            if self.rng.random_bool(0.5) {
                call.insert("timestamp".into(), iso(device).into());
            } else {
                call.insert(
                    "originalTimestamp".into(),
                    iso_local(device, u.tz_minutes).into(),
                );
                call.insert("timestamp".into(), iso(at).into());
            }
            call.insert("sentAt".into(), iso(device + queued).into());
            call.insert("receivedAt".into(), iso(at + queued).into());
        } else if self.rng.random_bool(0.03) {
            call.insert("receivedAt".into(), iso(at).into());
        } else {
            call.insert("timestamp".into(), iso(at).into());
        }
        call
    }

    fn track(&mut self, at: i64, user: usize, event: &'static str, properties: Value) {
        let browser = self.rng.random_bool(self.account.users[user].client_share);
        self.track_from(at, user, event, properties, browser);
    }

    fn track_from(
        &mut self,
        at: i64,
        user: usize,
        event: &'static str,
        properties: Value,
        browser: bool,
    ) {
        let mut call = self.call("track", at, user, true, browser);
        call.insert("event".into(), event.into());
        call.insert("properties".into(), properties);
        self.push(at, Value::Object(call));
    }

    fn page(&mut self, at: i64, user: usize, path: &'static str, identified: bool) {
        let base = if identified && !path.starts_with("/pricing") && path != "/" {
            APP
        } else {
            SITE
        };
        let mut call = self.call("page", at, user, identified, true);
        let (clean, search) = match path.find(['?', '#']) {
            Some(i) => (&path[..i], &path[i..]),
            None => (path, ""),
        };
        let name = page_name(path);
        if self.rng.random_bool(0.7) {
            call.insert("name".into(), name.into());
        }
        let url = format!("{base}{path}");
        let mut properties = json!({
            "path": clean,
            "url": url,
            "title": format!("{name} · Quanta"),
            "search": search,
        });
        if self.rng.random_bool(0.3) {
            properties["referrer"] = "https://www.google.com/".into();
        }
        if let Some(Value::Object(context)) = call.get_mut("context") {
            context.insert(
                "page".into(),
                json!({"path": clean, "url": url, "search": search}),
            );
        }
        call.insert("properties".into(), properties);
        self.push(at, Value::Object(call));
    }

    fn identify(&mut self, at: i64, user: usize) {
        let browser = self.rng.random_bool(0.6);
        let mut call = self.call("identify", at, user, true, browser);
        let u = &self.account.users[user];
        // Both ids: this joins the user's anonymous visits to them.
        call.insert("anonymousId".into(), u.anonymous_id.as_str().into());
        call.insert(
            "traits".into(),
            json!({
                "email": u.email,
                "name": u.name,
                "title": u.title,
                "created_at": iso(u.joined),
            }),
        );
        self.push(at, Value::Object(call));
    }

    fn group(&mut self, at: i64, user: usize, full: bool) {
        let browser = self.rng.random_bool(0.5);
        let mut call = self.call("group", at, user, true, browser);
        let a = self.account;
        call.insert("groupId".into(), a.id.as_str().into());
        let traits = if full {
            let mut t = json!({
                "name": a.name,
                "employees": a.employees,
                "industry": a.industry,
                "plan": a.plan_at(at),
                "created_at": iso(a.signup),
                "website": format!("https://{}", a.domain),
            });
            if a.do_not_contact {
                t["do_not_contact"] = true.into();
            }
            t
        } else {
            json!({"name": a.name})
        };
        call.insert("traits".into(), traits);
        self.push(at, Value::Object(call));
    }

    fn project(&mut self) -> String {
        let projects = &self.account.projects;
        projects[self.rng.random_range(0..projects.len())].clone()
    }

    fn scripted(&mut self, at: i64, user: usize, what: &What) {
        match what {
            What::AnonPage { path } => self.page(at, user, path, false),
            What::Page { path } => self.page(at, user, path, true),
            What::SignedUp => {
                let source = ["organic", "google", "referral", "newsletter", "g2"]
                    [self.rng.random_range(0..5)];
                self.track(
                    at,
                    user,
                    "Signed Up",
                    json!({"plan": "trial", "source": source}),
                );
            }
            What::Identify => self.identify(at, user),
            What::Group { full } => self.group(at, user, *full),
            What::ProjectCreated { template } => {
                let project = self.project();
                self.track(
                    at,
                    user,
                    "Project Created",
                    json!({"project_id": project, "template": template}),
                );
            }
            What::TeammateInvited { email, role } => self.track(
                at,
                user,
                "Teammate Invited",
                json!({"invitee_email": email, "role": role, "method": "email"}),
            ),
            What::IntegrationConnected { provider } => {
                let sync = if *provider == "csv" {
                    "manual"
                } else {
                    "hourly"
                };
                self.track(
                    at,
                    user,
                    "Integration Connected",
                    json!({"provider": provider, "sync": sync}),
                );
            }
            What::PlanLimitReached { limit } => {
                let plan = self.account.plan_at(at);
                self.track(
                    at,
                    user,
                    "Plan Limit Reached",
                    json!({"limit": limit, "plan": plan, "usage_pct": 100}),
                );
            }
            What::SupportTicketOpened { topic } => {
                let priority = if self.rng.random_bool(0.2) {
                    "high"
                } else {
                    "normal"
                };
                self.track(
                    at,
                    user,
                    "Support Ticket Opened",
                    json!({"topic": topic, "priority": priority}),
                );
            }
            What::SubscriptionStarted { plan, seats } => {
                let annual = self.rng.random_bool(0.35);
                let price = if *plan == "team" { 29 } else { 59 };
                let mut call = self.call("track", at, user, true, false);
                if let Some(Value::Object(context)) = call.get_mut("context") {
                    // Sent by the billing system, which always knows the account.
                    context.insert("groupId".into(), self.account.id.as_str().into());
                }
                call.insert("event".into(), "Subscription Started".into());
                call.insert(
                    "properties".into(),
                    json!({
                        "plan": plan,
                        "seats": seats,
                        "billing_period": if annual { "annual" } else { "monthly" },
                        "mrr": price * seats,
                        "currency": "USD",
                    }),
                );
                self.push(at, Value::Object(call));
            }
        }
    }

    /// The day's ordinary activity: sessions in the app, API traffic, the odd re-sent
    /// identify or group call.
    fn everyday(&mut self) {
        let account = self.account;
        let age = (self.start - account.signup) as f64 / DAY as f64;
        let engaged = age < account.horizon;
        let weekend = weekday(self.start) >= 5;
        let intent = account.intent;
        for (user, u) in account.users.iter().enumerate() {
            if u.joined >= self.end {
                continue;
            }
            let joined_today = u.joined >= self.start;
            let mut p = (0.12 + 0.55 * intent) * u.activity;
            if age < 3.0 {
                p *= 1.6;
            }
            if weekend {
                p *= 0.2;
            }
            if !engaged {
                p *= 0.06;
            }
            if account.kind == Kind::Paying {
                p = p.max(0.25);
            }
            if joined_today || self.rng.random_bool(p.min(0.95)) {
                let sessions = 1 + usize::from(self.rng.random_bool(0.2 + 0.4 * intent));
                for _ in 0..sessions {
                    self.session(user);
                }
            }
            if u.developer && account.api_rate > 0.0 {
                let mut rate = account.api_rate;
                if weekend {
                    rate *= 0.5;
                }
                if !engaged {
                    rate *= 0.1;
                }
                for _ in 0..poisson(&mut self.rng, rate) {
                    let at = self.rng.random_range(self.start..self.end);
                    if at > u.joined + HOUR {
                        self.api_batch(at, user);
                    }
                }
            }
        }
    }

    fn api_batch(&mut self, at: i64, user: usize) {
        let calls = uniform(&mut self.rng, 20.0, self.account.api_batch_max).round() as u64;
        let calls = if self.rng.random_bool(0.03) {
            Value::from(calls.to_string())
        } else {
            Value::from(calls)
        };
        let endpoint =
            ["/v1/query", "/v1/query", "/v1/ingest", "/v1/export"][self.rng.random_range(0..4)];
        let mut call = self.call("track", at, user, true, false);
        if self.rng.random_bool(0.9) && at >= self.account.users[user].grouped {
            if let Some(Value::Object(context)) = call.get_mut("context") {
                // The API key belongs to the workspace.
                context.insert("groupId".into(), self.account.id.as_str().into());
            }
        }
        call.insert("event".into(), "API Batch Sent".into());
        call.insert(
            "properties".into(),
            json!({"calls": calls, "endpoint": endpoint, "status": 200}),
        );
        self.push(at, Value::Object(call));
    }

    fn session(&mut self, user: usize) {
        let account = self.account;
        let u = &account.users[user];
        let mut at = self.start + account.work_start + self.rng.random_range(0..WORKDAY);
        if at < u.joined + 30 * SEC {
            at = u.joined + self.rng.random_range(30 * SEC..20 * MIN);
        }
        let intent = account.intent;
        // Logging in re-sends the user's and the account's traits now and then.
        if at >= u.grouped && self.rng.random_bool(0.05) {
            self.group(at, user, true);
            at += SEC;
        }
        if self.rng.random_bool(0.03) {
            self.identify(at, user);
            at += SEC;
        }
        let weights: [(Usage, f64); 11] = [
            (Usage::DashboardPage, 18.0),
            (Usage::DashboardViewed, 16.0),
            (Usage::DocsPage, 6.0),
            (Usage::QueryRun, 14.0),
            (Usage::ChartCreated, 6.0),
            (Usage::FilterApplied, 6.0),
            (Usage::ReportsPage, 5.0),
            (Usage::ReportShared, 1.5 + 5.0 * intent),
            (Usage::SettingsPage, 2.0),
            (Usage::ReportExported, 2.0),
            (Usage::MobileScreen, 2.0),
        ];
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let n = 1 + poisson(&mut self.rng, 1.8 + 7.0 * intent);
        for _ in 0..n {
            if at >= self.end {
                break;
            }
            let mut pick = self.rng.random::<f64>() * total;
            let mut usage = Usage::DashboardPage;
            for (u, w) in weights {
                if pick < w {
                    usage = u;
                    break;
                }
                pick -= w;
            }
            self.usage(at, user, usage);
            at += self.rng.random_range(15 * SEC..5 * MIN);
        }
    }

    fn usage(&mut self, at: i64, user: usize, usage: Usage) {
        match usage {
            Usage::DashboardPage => self.page(at, user, "/dashboard", true),
            Usage::ReportsPage => self.page(at, user, "/reports", true),
            Usage::SettingsPage => self.page(at, user, "/settings", true),
            Usage::DocsPage => {
                let path = DOCS[self.rng.random_range(0..DOCS.len())];
                self.page(at, user, path, true);
            }
            Usage::DashboardViewed => {
                let project = self.project();
                let dashboard = format!("dash_{}", self.rng.random_range(1..40));
                self.track(
                    at,
                    user,
                    "Dashboard Viewed",
                    json!({"project_id": project, "dashboard_id": dashboard}),
                );
            }
            Usage::QueryRun => {
                let rows = self.rng.random_range(1..50_000);
                let ms = self.rng.random_range(40..9_000);
                self.track(
                    at,
                    user,
                    "Query Run",
                    json!({"rows": rows, "duration_ms": ms}),
                );
            }
            Usage::ChartCreated => {
                let chart =
                    ["line", "bar", "table", "funnel", "retention"][self.rng.random_range(0..5)];
                self.track(at, user, "Chart Created", json!({"chart_type": chart}));
            }
            Usage::FilterApplied => {
                let field = ["date", "country", "plan", "channel"][self.rng.random_range(0..4)];
                self.track(at, user, "Filter Applied", json!({"field": field}));
            }
            Usage::ReportShared => {
                let channel = ["slack", "email", "link"][self.rng.random_range(0..3)];
                self.track(at, user, "Report Shared", json!({"channel": channel}));
            }
            Usage::ReportExported => {
                let format = ["pdf", "csv", "png"][self.rng.random_range(0..3)];
                self.track(at, user, "Report Exported", json!({"format": format}));
            }
            Usage::MobileScreen => {
                let mut call = self.call("screen", at, user, true, false);
                if let Some(Value::Object(context)) = call.get_mut("context") {
                    context.insert(
                        "library".into(),
                        json!({"name": "analytics-ios", "version": "1.5.9"}),
                    );
                    context.insert(
                        "device".into(),
                        json!({"type": "ios", "model": "iPhone15,2"}),
                    );
                }
                call.insert("name".into(), "Dashboard".into());
                call.insert("properties".into(), json!({}));
                self.push(at, Value::Object(call));
            }
        }
    }
}
