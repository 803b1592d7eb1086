//! A tenant's notification settings: destinations, routing rules, suppression, the link
//! template. Written as TOML (`pql alerts settings`, `pql local`) or JSON (stored in the tenants
//! table), checked by [`Settings::parse_toml`] / [`Settings::parse_json`], which report every
//! problem at once.
//!
//! ```toml
//! link_template = "https://crm.example.com/accounts/{account_id}"
//!
//! [[destination]]
//! id = "sales-slack"
//! kind = "slack"                       # slack | webhook | email
//! url = "https://hooks.slack.com/services/..."   # or { ssm = "/pql/slack-webhook-url" };
//!                                               # none: the deployment's SLACK_WEBHOOK_URL_PARAMETER
//!
//! [[destination]]
//! id = "crm"
//! kind = "webhook"
//! url = "https://crm.example.com/hooks/pql"
//! secret = "whsec_..."                 # the HMAC-SHA256 signing secret, 16+ characters, or
//!                                      # { secrets_manager = "arn:..." } / { ssm = "/name" };
//!                                      # none: the deployment's WEBHOOK_SIGNING_SECRET_ARN
//!
//! [[destination]]
//! id = "owners"
//! kind = "email"
//! from = "pql@example.com"             # none: the deployment's ALERT_EMAIL_FROM
//! to = ["sales@example.com"]           # plus the route's owner, if any
//!
//! [[route]]                            # the first route whose conditions all hold wins
//! name = "emea-enterprise"
//! when = [{ trait = "region", equals = "emea" }, { trait = "employees", at_least = 200 }]
//! destinations = ["sales-slack", "crm", "owners"]
//! owner_trait = "owner_email"          # the account trait naming its owner
//!
//! [default]                            # everything else
//! destinations = ["sales-slack"]
//! warm = "skip"                        # hot alerts always go out at once; warm: instant | skip | digest
//!
//! [suppress]
//! when = [{ trait = "plan", in = ["paid", "enterprise"] }, { trait = "do_not_contact", equals = true }]
//! cooldown_days = 30                   # no repeat of a tier already sent to a destination
//! ```
//!
//! Traits are the account traits the qualification definition reads (the account state keeps
//! only those), so a trait used here must appear in the definition (e.g. as a fit condition).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secret::Secret;
use crate::secrets::SecretRef;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_template: Option<String>,
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationSpec>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
    pub default: DefaultRouteSpec,
    #[serde(default)]
    pub suppress: SuppressSpec,
    /// How many of the most active users an alert lists (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub most_active_users: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Slack,
    Webhook,
    Email,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    pub id: String,
    pub kind: ChannelKind,
    /// Inline, `{ ssm = "/name" }` or `{ secrets_manager = "arn" }`; Slack: none means the
    /// deployment's `SLACK_WEBHOOK_URL_PARAMETER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretRef>,
    /// As `url`; none means the deployment's `WEBHOOK_SIGNING_SECRET_ARN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The least time between two messages to this destination (Slack: 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmMode {
    /// Warm alerts are sent at once, like hot ones.
    #[default]
    Instant,
    /// Warm alerts are not sent on this route (recorded as suppressed).
    Skip,
    /// Warm alerts are queued per destination and sent once a day as one message listing
    /// them (`pql_store::deliveries::WarmDigest`); an account that turns hot before it goes
    /// gets its hot alert at once and leaves the digest.
    Digest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    pub when: Vec<ConditionSpec>,
    pub destinations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_trait: Option<String>,
    #[serde(default)]
    pub warm: WarmMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRouteSpec {
    pub destinations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_trait: Option<String>,
    #[serde(default)]
    pub warm: WarmMode,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressSpec {
    #[serde(default)]
    pub when: Vec<ConditionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_days: Option<f64>,
}

/// A condition on an account trait: exactly one operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    #[serde(rename = "trait")]
    pub trait_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
}

/// A checked condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Exists(bool),
    AtLeast(f64),
    AtMost(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub trait_name: String,
    pub op: Op,
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Condition {
    /// Whether the condition holds for these traits. A missing (or null) trait satisfies only
    /// `exists = false`, as in definitions.
    pub fn holds(&self, traits: &BTreeMap<String, Value>) -> bool {
        let value = traits.get(&self.trait_name).filter(|v| !v.is_null());
        let Some(value) = value else {
            return self.op == Op::Exists(false);
        };
        match &self.op {
            Op::Equals(x) => same(value, x),
            Op::NotEquals(x) => !same(value, x),
            Op::In(xs) => xs.iter().any(|x| same(value, x)),
            Op::NotIn(xs) => !xs.iter().any(|x| same(value, x)),
            Op::Exists(e) => *e,
            Op::AtLeast(x) => number(value).is_some_and(|v| v >= *x),
            Op::AtMost(x) => number(value).is_some_and(|v| v <= *x),
        }
    }

    /// `plan = paid`, for reasons.
    pub fn describe(&self, traits: &BTreeMap<String, Value>) -> String {
        let value = traits
            .get(&self.trait_name)
            .map(show)
            .unwrap_or_else(|| "(none)".into());
        let rule = match &self.op {
            Op::Equals(x) => format!("equals {}", show(x)),
            Op::NotEquals(x) => format!("not_equals {}", show(x)),
            Op::In(xs) => format!(
                "in [{}]",
                xs.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            Op::NotIn(xs) => format!(
                "not_in [{}]",
                xs.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            Op::Exists(e) => format!("exists = {e}"),
            Op::AtLeast(x) => format!("at_least {x}"),
            Op::AtMost(x) => format!("at_most {x}"),
        };
        format!("{} = {value} ({rule})", self.trait_name)
    }
}

/// A checked destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub id: String,
    pub channel: Channel,
    pub min_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    /// `url`: none means the deployment's default.
    Slack { url: Option<SecretRef> },
    /// `secret`: none means the deployment's default.
    Webhook {
        url: SecretRef,
        secret: Option<SecretRef>,
    },
    /// `from`: none means the deployment's `ALERT_EMAIL_FROM`.
    Email {
        from: Option<String>,
        to: Vec<String>,
    },
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Slack { .. } => "slack",
            Channel::Webhook { .. } => "webhook",
            Channel::Email { .. } => "email",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub when: Vec<Condition>,
    pub destinations: Vec<String>,
    pub owner_trait: Option<String>,
    pub warm: WarmMode,
}

/// Checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub link_template: Option<LinkTemplate>,
    pub destinations: BTreeMap<String, Destination>,
    /// The named routes, in order, then the default route (named `default`, no conditions).
    pub routes: Vec<Route>,
    pub suppress_when: Vec<Condition>,
    pub cooldown_days: f64,
    pub most_active_users: usize,
    /// The spec they were checked from (to store them).
    pub spec: SettingsSpec,
}

/// Every problem found in a settings file, one per line: `field: what is wrong (allowed: ...)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsErrors {
    pub file: String,
    pub errors: Vec<String>,
}

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{} are not valid notification settings ({n} problem{}):",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {}: {e}", self.file)?;
        }
        Ok(())
    }
}

/// A link to the account in the tenant's own tools: `{account_id}`, `{account_name}` and
/// `{tenant}` are replaced (percent-encoded).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkTemplate(String);

const PLACEHOLDERS: [&str; 3] = ["account_id", "account_name", "tenant"];

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl LinkTemplate {
    pub fn parse(template: &str) -> Result<LinkTemplate, String> {
        let allowed = || {
            format!(
                "allowed: {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            )
        };
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("`}}` without `{{` in `{template}`"));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{{` without `}}` in `{template}`"))?;
            let name = &after[..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder `{{{name}}}` in `{template}` ({})",
                    allowed()
                ));
            }
            rest = &after[close + 1..];
        }
        let link = LinkTemplate(template.to_owned());
        let sample = link.render("acme", "account-1", Some("Acme Inc"));
        match reqwest::Url::parse(&sample) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(link),
            Ok(url) => Err(format!(
                "`{template}` gives a `{}` URL (allowed: http or https URLs with a host)",
                url.scheme()
            )),
            Err(e) => Err(format!("`{template}` does not give a URL: {e}")),
        }
    }

    pub fn render(&self, tenant: &str, account_id: &str, account_name: Option<&str>) -> String {
        self.0
            .replace("{account_id}", &encode(account_id))
            .replace(
                "{account_name}",
                &encode(account_name.unwrap_or(account_id)),
            )
            .replace("{tenant}", &encode(tenant))
    }
}

fn check_url_ref(field: &str, url: &SecretRef, errors: &mut Vec<String>) {
    match url {
        SecretRef::Inline(url) => check_url(field, url, errors),
        other => other.check(field, errors),
    }
}

fn check_url(field: &str, url: &Secret, errors: &mut Vec<String>) {
    // The URL is a secret: errors name the field, never the value.
    match reqwest::Url::parse(url.expose()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => errors.push(format!(
            "{field}: not an http(s) URL with a host (the value is secret and not shown)"
        )),
        Err(e) => errors.push(format!(
            "{field}: not a URL: {e} (the value is secret and not shown)"
        )),
    }
}

fn check_email(field: &str, address: &str, errors: &mut Vec<String>) {
    let ok = address
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !host.contains('@'))
        && !address.contains(char::is_whitespace);
    if !ok {
        errors.push(format!("{field}: `{address}` is not an e-mail address"));
    }
}

fn check_condition(
    field: &str,
    spec: &ConditionSpec,
    errors: &mut Vec<String>,
) -> Option<Condition> {
    if spec.trait_name.trim().is_empty() {
        errors.push(format!(
            "{field}.trait: empty (allowed: an account trait name)"
        ));
    }
    let mut ops = Vec::new();
    if let Some(v) = &spec.equals {
        ops.push(Op::Equals(v.clone()));
    }
    if let Some(v) = &spec.not_equals {
        ops.push(Op::NotEquals(v.clone()));
    }
    if let Some(v) = &spec.in_ {
        ops.push(Op::In(v.clone()));
    }
    if let Some(v) = &spec.not_in {
        ops.push(Op::NotIn(v.clone()));
    }
    if let Some(v) = spec.exists {
        ops.push(Op::Exists(v));
    }
    if let Some(v) = spec.at_least {
        ops.push(Op::AtLeast(v));
    }
    if let Some(v) = spec.at_most {
        ops.push(Op::AtMost(v));
    }
    if ops.len() != 1 {
        errors.push(format!(
            "{field}: {} operators (allowed: exactly one of `equals`, `not_equals`, `in`, `not_in`, `exists`, `at_least`, `at_most`)",
            ops.len()
        ));
        return None;
    }
    let op = ops.pop()?;
    if let Op::In(xs) | Op::NotIn(xs) = &op {
        if xs.is_empty() {
            errors.push(format!(
                "{field}: an empty list (allowed: one value or more)"
            ));
        }
    }
    Some(Condition {
        trait_name: spec.trait_name.clone(),
        op,
    })
}

impl Settings {
    pub fn parse_toml(source_name: &str, text: &str) -> Result<Settings, SettingsErrors> {
        let spec: SettingsSpec = toml::from_str(text).map_err(|e| SettingsErrors {
            file: source_name.to_owned(),
            errors: vec![e.to_string().trim().replace('\n', " ")],
        })?;
        Settings::check(source_name, spec)
    }

    pub fn parse_json(source_name: &str, text: &str) -> Result<Settings, SettingsErrors> {
        let spec: SettingsSpec = serde_json::from_str(text).map_err(|e| SettingsErrors {
            file: source_name.to_owned(),
            errors: vec![e.to_string()],
        })?;
        Settings::check(source_name, spec)
    }

    /// TOML or JSON by the file's extension.
    pub fn parse_file(path: &str, text: &str) -> Result<Settings, SettingsErrors> {
        if path.ends_with(".json") {
            Settings::parse_json(path, text)
        } else {
            Settings::parse_toml(path, text)
        }
    }

    /// The JSON that is stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.spec).expect("settings serialise")
    }

    pub fn check(source_name: &str, spec: SettingsSpec) -> Result<Settings, SettingsErrors> {
        let mut errors = Vec::new();
        let link_template = spec.link_template.as_deref().and_then(|t| {
            LinkTemplate::parse(t)
                .map_err(|e| errors.push(format!("link_template: {e}")))
                .ok()
        });
        let mut destinations = BTreeMap::new();
        for (i, d) in spec.destinations.iter().enumerate() {
            let field = format!("destination[{i}]");
            if let Err(e) = pql_store::deliveries::check_destination_id(&d.id) {
                errors.push(format!("{field}.id: {e}"));
            }
            let not_for = |name: &str, present: bool, errors: &mut Vec<String>| {
                if present {
                    errors.push(format!(
                        "{field}.{name}: not used by {:?} destinations",
                        d.kind
                    ));
                }
            };
            let channel = match d.kind {
                ChannelKind::Slack | ChannelKind::Webhook => {
                    not_for("to", !d.to.is_empty(), &mut errors);
                    not_for("from", d.from.is_some(), &mut errors);
                    if let Some(url) = &d.url {
                        check_url_ref(&format!("{field}.url"), url, &mut errors);
                    }
                    if d.kind == ChannelKind::Slack {
                        not_for("secret", d.secret.is_some(), &mut errors);
                        // No `url`: the deployment's default Slack webhook.
                        Channel::Slack { url: d.url.clone() }
                    } else {
                        let url = d.url.clone().unwrap_or_else(|| {
                            errors.push(format!("{field}.url: missing (required for webhook destinations: a URL, {{ ssm = \"/name\" }} or {{ secrets_manager = \"arn\" }})"));
                            SecretRef::Inline(Secret::new(""))
                        });
                        match &d.secret {
                            Some(SecretRef::Inline(s)) if s.expose().len() < 16 => {
                                errors.push(format!("{field}.secret: too short (allowed: 16 characters or more; the value is not shown)"));
                            }
                            Some(reference) => {
                                reference.check(&format!("{field}.secret"), &mut errors)
                            }
                            // No `secret`: the deployment's default signing secret.
                            None => {}
                        }
                        Channel::Webhook {
                            url,
                            secret: d.secret.clone(),
                        }
                    }
                }
                ChannelKind::Email => {
                    not_for("url", d.url.is_some(), &mut errors);
                    not_for("secret", d.secret.is_some(), &mut errors);
                    // No `from`: the deployment's ALERT_EMAIL_FROM.
                    if let Some(from) = &d.from {
                        check_email(&format!("{field}.from"), from, &mut errors);
                    }
                    let from = d.from.clone();
                    for (j, to) in d.to.iter().enumerate() {
                        check_email(&format!("{field}.to[{j}]"), to, &mut errors);
                    }
                    Channel::Email {
                        from,
                        to: d.to.clone(),
                    }
                }
            };
            let destination = Destination {
                id: d.id.clone(),
                channel,
                min_interval_ms: d
                    .min_interval_ms
                    .unwrap_or(if d.kind == ChannelKind::Slack {
                        1000
                    } else {
                        0
                    }),
            };
            if destinations.insert(d.id.clone(), destination).is_some() {
                errors.push(format!("{field}.id: `{}` is defined twice", d.id));
            }
        }
        let known: Vec<String> = destinations.keys().cloned().collect();
        let check_targets = |field: &str,
                             targets: &[String],
                             owner_trait: &Option<String>,
                             errors: &mut Vec<String>| {
            if targets.is_empty() {
                errors.push(format!(
                    "{field}.destinations: empty (allowed: one destination id or more)"
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, t) in targets.iter().enumerate() {
                if !destinations.contains_key(t) {
                    errors.push(format!(
                        "{field}.destinations[{j}]: destination `{t}` is not defined (allowed: {})",
                        if known.is_empty() {
                            "none defined".to_owned()
                        } else {
                            known
                                .iter()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ));
                } else if !seen.insert(t) {
                    errors.push(format!("{field}.destinations[{j}]: `{t}` is listed twice"));
                } else if let Some(Destination {
                    channel: Channel::Email { to, .. },
                    ..
                }) = destinations.get(t)
                {
                    if to.is_empty() && owner_trait.is_none() {
                        errors.push(format!("{field}.destinations[{j}]: e-mail destination `{t}` has no `to` and this route no `owner_trait`: nobody would get it"));
                    }
                }
            }
            if let Some(o) = owner_trait {
                if o.trim().is_empty() {
                    errors.push(format!(
                        "{field}.owner_trait: empty (allowed: an account trait name)"
                    ));
                }
            }
        };
        let mut routes = Vec::new();
        let mut names = BTreeSet::new();
        for (i, r) in spec.routes.iter().enumerate() {
            let field = format!("route[{i}]");
            if r.name.trim().is_empty() || r.name == "default" {
                errors.push(format!(
                    "{field}.name: `{}` (allowed: a non-empty name other than `default`)",
                    r.name
                ));
            } else if !names.insert(r.name.clone()) {
                errors.push(format!("{field}.name: `{}` is used twice", r.name));
            }
            if r.when.is_empty() {
                errors.push(format!("{field}.when: no conditions (a route without conditions is the `[default]` route)"));
            }
            let when = r
                .when
                .iter()
                .enumerate()
                .filter_map(|(j, c)| check_condition(&format!("{field}.when[{j}]"), c, &mut errors))
                .collect();
            check_targets(&field, &r.destinations, &r.owner_trait, &mut errors);
            routes.push(Route {
                name: r.name.clone(),
                when,
                destinations: r.destinations.clone(),
                owner_trait: r.owner_trait.clone(),
                warm: r.warm,
            });
        }
        check_targets(
            "default",
            &spec.default.destinations,
            &spec.default.owner_trait,
            &mut errors,
        );
        routes.push(Route {
            name: "default".into(),
            when: Vec::new(),
            destinations: spec.default.destinations.clone(),
            owner_trait: spec.default.owner_trait.clone(),
            warm: spec.default.warm,
        });
        let suppress_when = spec
            .suppress
            .when
            .iter()
            .enumerate()
            .filter_map(|(j, c)| check_condition(&format!("suppress.when[{j}]"), c, &mut errors))
            .collect();
        let cooldown_days = spec.suppress.cooldown_days.unwrap_or(30.0);
        if !(0.0..=3650.0).contains(&cooldown_days) {
            errors.push(format!(
                "suppress.cooldown_days: {cooldown_days} (allowed: 0 to 3650)"
            ));
        }
        let most_active_users = spec.most_active_users.unwrap_or(3);
        if most_active_users > 20 {
            errors.push(format!(
                "most_active_users: {most_active_users} (allowed: 0 to 20)"
            ));
        }
        if !errors.is_empty() {
            return Err(SettingsErrors {
                file: source_name.to_owned(),
                errors,
            });
        }
        Ok(Settings {
            link_template,
            destinations,
            routes,
            suppress_when,
            cooldown_days,
            most_active_users,
            spec,
        })
    }

    /// The first route whose conditions all hold, else the default route.
    pub fn route(&self, traits: &BTreeMap<String, Value>) -> &Route {
        self.routes
            .iter()
            .find(|r| r.when.iter().all(|c| c.holds(traits)))
            .unwrap_or_else(|| {
                self.routes
                    .last()
                    .expect("the default route is always there")
            })
    }

    /// Why no alert goes out for an account with these traits (paying, do-not-contact...).
    pub fn suppressed_by(&self, traits: &BTreeMap<String, Value>) -> Option<String> {
        self.suppress_when
            .iter()
            .find(|c| c.holds(traits))
            .map(|c| format!("suppressed: {}", c.describe(traits)))
    }

    /// The route's owner (the value of its `owner_trait`), if the account has one.
    pub fn owner(route: &Route, traits: &BTreeMap<String, Value>) -> Option<String> {
        let name = route.owner_trait.as_ref()?;
        traits.get(name).and_then(|v| v.as_str()).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOOD: &str = r#"
link_template = "https://crm.example.com/t/{tenant}/accounts/{account_id}"

[[destination]]
id = "sales-slack"
kind = "slack"
url = "https://hooks.slack.example/services/T/B/SECRETPATH"

[[destination]]
id = "crm"
kind = "webhook"
url = "https://crm.example.com/hooks/pql"
secret = "whsec_0123456789abcdef"

[[destination]]
id = "owners"
kind = "email"
from = "pql@example.com"

[[route]]
name = "emea"
when = [{ trait = "region", equals = "emea" }, { trait = "employees", at_least = 200 }]
destinations = ["crm", "owners"]
owner_trait = "owner_email"

[default]
destinations = ["sales-slack"]
warm = "skip"

[suppress]
when = [{ trait = "plan", in = ["paid", "enterprise"] }, { trait = "do_not_contact", equals = true }]
cooldown_days = 14
"#;

    fn traits(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn routes_by_traits_with_a_default() {
        let s = Settings::parse_toml("s.toml", GOOD).unwrap();
        let emea =
            traits(json!({"region": "EMEA", "employees": "250", "owner_email": "ana@example.com"}));
        let route = s.route(&emea);
        assert_eq!(route.name, "emea");
        assert_eq!(route.destinations, ["crm", "owners"]);
        assert_eq!(
            Settings::owner(route, &emea).as_deref(),
            Some("ana@example.com")
        );
        let small = traits(json!({"region": "emea", "employees": 20}));
        assert_eq!(s.route(&small).name, "default");
        assert_eq!(s.route(&small).warm, WarmMode::Skip);
        assert_eq!(s.route(&BTreeMap::new()).name, "default");
        assert_eq!(s.cooldown_days, 14.0);
        assert_eq!(s.destinations["sales-slack"].min_interval_ms, 1000);
    }

    #[test]
    fn suppresses_paying_and_do_not_contact_accounts() {
        let s = Settings::parse_toml("s.toml", GOOD).unwrap();
        assert_eq!(
            s.suppressed_by(&traits(json!({"plan": "paid"}))).as_deref(),
            Some("suppressed: plan = paid (in [paid, enterprise])")
        );
        assert!(s
            .suppressed_by(&traits(json!({"do_not_contact": true})))
            .is_some());
        assert!(s
            .suppressed_by(&traits(json!({"do_not_contact": false, "plan": "trial"})))
            .is_none());
        assert!(s.suppressed_by(&BTreeMap::new()).is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once_and_secrets_are_not_shown() {
        let bad = r#"
link_template = "crm.example.com/{account}"

[[destination]]
id = "Sales Slack"
kind = "slack"
url = "not a url SECRETVALUE"
secret = "x"

[[destination]]
id = "crm"
kind = "webhook"
url = "https://crm.example.com/hook"
secret = "short"

[[destination]]
id = "mail"
kind = "email"
from = "nobody"

[[route]]
name = "r"
when = [{ trait = "region", equals = "emea", in = ["x"] }]
destinations = ["crm", "nope", "mail"]

[default]
destinations = []

[suppress]
cooldown_days = -1
"#;
        let err = Settings::parse_toml("bad.toml", bad).unwrap_err();
        let text = err.to_string();
        for expected in [
            "link_template: unknown placeholder `{account}`",
            "destination[0].id: `Sales Slack` is not a destination id",
            "destination[0].url: not a URL",
            "destination[0].secret: not used by Slack destinations",
            "destination[1].secret: too short",
            "destination[2].from: `nobody` is not an e-mail address",
            "route[0].when[0]: 2 operators",
            "route[0].destinations[1]: destination `nope` is not defined (allowed: `Sales Slack`, `crm`, `mail`)",
            "route[0].destinations[2]: e-mail destination `mail` has no `to`",
            "default.destinations: empty",
            "suppress.cooldown_days: -1",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
        assert!(!text.contains("SECRETVALUE"), "{text}");
        assert!(!text.contains("short\""), "{text}");
    }

    #[test]
    fn unknown_fields_and_kinds_are_errors() {
        let err = Settings::parse_toml(
            "x.toml",
            "[default]\ndestinations = [\"a\"]\nwarm = \"digestt\"\n",
        )
        .unwrap_err();
        assert!(err.errors[0].contains("unknown variant `digestt`"), "{err}");
        let err = Settings::parse_json(
            "x.json",
            r#"{"default": {"destinations": ["a"]}, "routes": []}"#,
        )
        .unwrap_err();
        assert!(err.errors[0].contains("unknown field `routes`"), "{err}");
    }

    #[test]
    fn link_templates() {
        let t =
            LinkTemplate::parse("https://crm.example.com/a/{account_id}?n={account_name}").unwrap();
        assert_eq!(
            t.render("acme", "org 1/2", Some("Acme & Co")),
            "https://crm.example.com/a/org%201%2F2?n=Acme%20%26%20Co"
        );
        assert!(LinkTemplate::parse("https://x.example/{account_id")
            .unwrap_err()
            .contains("`{` without `}`"));
        assert!(LinkTemplate::parse("https://x.example/}")
            .unwrap_err()
            .contains("`}` without `{`"));
        assert!(LinkTemplate::parse("ftp://x.example/{account_id}")
            .unwrap_err()
            .contains("gives a `ftp` URL"));
        assert!(LinkTemplate::parse("/accounts/{account_id}")
            .unwrap_err()
            .contains("does not give a URL"));
    }

    #[test]
    fn secrets_may_be_references_or_the_deployment_defaults() {
        let text = r#"
[[destination]]
id = "team"
kind = "slack"

[[destination]]
id = "crm"
kind = "webhook"
url = { ssm = "/pql/crm-url" }
secret = { secrets_manager = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:whsec" }

[[destination]]
id = "partner"
kind = "webhook"
url = "https://partner.example.com/hook"

[[destination]]
id = "owners"
kind = "email"
to = ["sales@example.com"]

[default]
destinations = ["team", "crm", "partner", "owners"]
"#;
        let s = Settings::parse_toml("s.toml", text).unwrap();
        assert_eq!(s.destinations["team"].channel, Channel::Slack { url: None });
        assert_eq!(
            s.destinations["crm"].channel,
            Channel::Webhook {
                url: SecretRef::Ssm("/pql/crm-url".into()),
                secret: Some(SecretRef::SecretsManager(
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:whsec".into()
                )),
            }
        );
        assert_eq!(
            s.destinations["partner"].channel,
            Channel::Webhook {
                url: SecretRef::Inline(Secret::new("https://partner.example.com/hook")),
                secret: None,
            }
        );
        assert_eq!(
            s.destinations["owners"].channel,
            Channel::Email {
                from: None,
                to: vec!["sales@example.com".into()]
            }
        );
        // Stored as JSON with the references (not values), and read back the same.
        let json = s.to_json();
        assert!(json.contains(r#""url":{"ssm":"/pql/crm-url"}"#), "{json}");
        assert_eq!(Settings::parse_json("stored", &json).unwrap(), s);

        let bad = r#"
[[destination]]
id = "crm"
kind = "webhook"
secret = { ssm = "no spaces allowed" }

[[destination]]
id = "team"
kind = "slack"
url = { secrets_manager = "" }

[default]
destinations = ["crm", "team"]
"#;
        let text = Settings::parse_toml("bad.toml", bad)
            .unwrap_err()
            .to_string();
        for expected in [
            "destination[0].url: missing (required for webhook destinations: a URL, { ssm = \"/name\" } or { secrets_manager = \"arn\" })",
            "destination[0].secret.ssm: `no spaces allowed` is not a parameter name",
            "destination[1].url.secrets_manager: `` is not a secret ARN or name",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
        let text = Settings::parse_toml(
            "bad.toml",
            "[[destination]]\nid = \"t\"\nkind = \"slack\"\nurl = { parameter = \"/x\" }\n[default]\ndestinations = [\"t\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("unknown secret source `parameter`"), "{text}");
    }

    #[test]
    fn round_trips_through_json() {
        let s = Settings::parse_toml("s.toml", GOOD).unwrap();
        let again = Settings::parse_json("stored", &s.to_json()).unwrap();
        assert_eq!(again, s);
    }
}
