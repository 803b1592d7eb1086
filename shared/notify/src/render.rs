//! What an alert says, and how each channel shows it: a Slack Block Kit message, the versioned
//! webhook payload, an e-mail (text and HTML). Pure: the same context gives the same bytes.

use std::collections::BTreeMap;

use pql_store::alerts::Alert;
use pql_store::AccountRecord;
use serde::Serialize;
use serde_json::{json, Value};

/// The webhook payload's version (`"version"`): bumped on any incompatible change.
pub const PAYLOAD_VERSION: &str = "1";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MilestoneMet {
    pub name: String,
    pub met_at: Option<String>,
    pub by_user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitFact {
    pub name: String,
    pub matched: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveUser {
    pub user_id: String,
    /// The user's events among those the account state keeps (milestone and scoring hits).
    pub events: usize,
}

/// Everything an alert shows, gathered once per alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertContext {
    pub tenant: String,
    pub account_id: String,
    pub account_name: Option<String>,
    pub sequence: u32,
    pub tier: String,
    pub score: f64,
    pub qualified_at: String,
    pub trigger: String,
    pub definition_version: String,
    pub milestones: Vec<MilestoneMet>,
    pub fit: Vec<FitFact>,
    pub reasons: Vec<String>,
    pub most_active_users: Vec<ActiveUser>,
    pub traits: BTreeMap<String, Value>,
    pub owner: Option<String>,
    pub link: Option<String>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl AlertContext {
    /// Reads the alert's decision (milestones met when and by whom, fit facts, reasons) and,
    /// when the account record is at hand, its traits and most active users.
    pub fn new(alert: &Alert, record: Option<&AccountRecord>, top_users: usize) -> AlertContext {
        let d = &alert.decision;
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let milestones = d["milestones"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter(|m| m["met"].as_bool() == Some(true))
                    .map(|m| MilestoneMet {
                        name: text(&m["name"]).unwrap_or_default(),
                        met_at: text(&m["met_at"]),
                        by_user: text(&m["by_user"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fit = d["fit"]["facts"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| FitFact {
                        name: text(&f["name"]).unwrap_or_default(),
                        matched: f["matched"].as_bool().unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let reasons = d["reasons"]
            .as_array()
            .map(|rs| rs.iter().filter_map(text).collect())
            .unwrap_or_default();
        let mut traits = BTreeMap::new();
        let mut most_active_users = Vec::new();
        if let Some(record) = record {
            for (name, value) in record.state.traits() {
                traits.insert(name.clone(), value.value.clone());
            }
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for set in record.state.milestones.iter().chain(&record.state.scoring) {
                for hit in set.hits() {
                    *counts.entry(&hit.user).or_default() += 1;
                }
            }
            let mut users: Vec<(&str, usize)> = counts.into_iter().collect();
            users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            most_active_users = users
                .into_iter()
                .take(top_users)
                .map(|(user, events)| ActiveUser {
                    user_id: user.to_owned(),
                    events,
                })
                .collect();
        }
        AlertContext {
            tenant: alert.tenant.clone(),
            account_id: alert.account.clone(),
            account_name: alert.account_name.clone(),
            sequence: alert.sequence,
            tier: alert.tier.as_str().to_owned(),
            score: round2(alert.score),
            qualified_at: alert.qualified_at.to_rfc3339(),
            trigger: alert.trigger.as_str().to_owned(),
            definition_version: alert.definition_version.clone(),
            milestones,
            fit,
            reasons,
            most_active_users,
            traits,
            owner: None,
            link: None,
        }
    }

    pub fn display_name(&self) -> &str {
        self.account_name.as_deref().unwrap_or(&self.account_id)
    }

    fn title(&self) -> String {
        format!(
            "{} PQL: {} ({})",
            capitalise(&self.tier),
            self.display_name(),
            self.account_id
        )
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Slack mrkdwn escaping (`&`, `<`, `>`): account names come from customers' data.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn html_escape(text: &str) -> String {
    slack_escape(text).replace('"', "&quot;")
}

fn milestone_line(m: &MilestoneMet) -> String {
    let mut line = m.name.clone();
    if let Some(at) = &m.met_at {
        line.push_str(&format!(" — {at}"));
    }
    if let Some(by) = &m.by_user {
        line.push_str(&format!(" by {by}"));
    }
    line
}

fn trait_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The Slack incoming-webhook body: Block Kit, with a plain `text` fallback for notifications.
pub fn slack_message(c: &AlertContext) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": c.title(), "emoji": true}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Account*\n{} (`{}`)", slack_escape(c.display_name()), slack_escape(&c.account_id))},
            {"type": "mrkdwn", "text": format!("*Tier*\n{}", c.tier)},
            {"type": "mrkdwn", "text": format!("*Score*\n{}", c.score)},
            {"type": "mrkdwn", "text": format!("*Qualified*\n{}", c.qualified_at)},
        ]}),
    ];
    if !c.milestones.is_empty() {
        let lines: Vec<String> = c
            .milestones
            .iter()
            .map(|m| format!("• {}", slack_escape(&milestone_line(m))))
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Milestones met*\n{}", lines.join("\n"))}}));
    }
    if !c.most_active_users.is_empty() {
        let lines: Vec<String> = c
            .most_active_users
            .iter()
            .map(|u| format!("• {} ({} events)", slack_escape(&u.user_id), u.events))
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Most active users*\n{}", lines.join("\n"))}}));
    }
    let facts: Vec<String> = c
        .fit
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                if f.matched { "✓" } else { "✗" },
                slack_escape(&f.name)
            )
        })
        .chain(
            c.traits
                .iter()
                .map(|(k, v)| format!("{}: {}", slack_escape(k), slack_escape(&trait_text(v)))),
        )
        .collect();
    if !facts.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Fit*\n{}", facts.join("\n"))}}));
    }
    let mut context = vec![
        json!({"type": "mrkdwn", "text": format!("definition `{}` · alert #{} · {}", c.definition_version, c.sequence, c.trigger)}),
    ];
    if let Some(owner) = &c.owner {
        context.push(json!({"type": "mrkdwn", "text": format!("owner: {}", slack_escape(owner))}));
    }
    blocks.push(json!({"type": "context", "elements": context}));
    if let Some(link) = &c.link {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open account"}, "url": link}
        ]}));
    }
    json!({"text": c.title(), "blocks": blocks})
}

/// The webhook payload (version [`PAYLOAD_VERSION`]); see the README for its fields.
pub fn webhook_payload(c: &AlertContext, idempotency_key: &str) -> Value {
    json!({
        "version": PAYLOAD_VERSION,
        "type": "pql.qualified",
        "id": idempotency_key,
        "tenant": c.tenant,
        "account": {
            "id": c.account_id,
            "name": c.account_name,
            "traits": c.traits,
            "owner": c.owner,
            "link": c.link,
        },
        "alert": {
            "sequence": c.sequence,
            "tier": c.tier,
            "score": c.score,
            "qualified_at": c.qualified_at,
            "trigger": c.trigger,
            "definition_version": c.definition_version,
        },
        "milestones": c.milestones,
        "fit": c.fit,
        "most_active_users": c.most_active_users,
        "reasons": c.reasons,
    })
}

/// An e-mail: subject, plain text and HTML.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub fn email(c: &AlertContext) -> EmailContent {
    let mut text = format!(
        "{}\n\nTier: {}\nScore: {}\nQualified: {}\n",
        c.title(),
        c.tier,
        c.score,
        c.qualified_at
    );
    let mut html = format!(
        "<h2>{}</h2>\n<p><b>Tier:</b> {}<br><b>Score:</b> {}<br><b>Qualified:</b> {}</p>\n",
        html_escape(&c.title()),
        html_escape(&c.tier),
        c.score,
        html_escape(&c.qualified_at)
    );
    if let Some(owner) = &c.owner {
        text.push_str(&format!("Owner: {owner}\n"));
        html.push_str(&format!("<p><b>Owner:</b> {}</p>\n", html_escape(owner)));
    }
    if !c.milestones.is_empty() {
        text.push_str("\nMilestones met:\n");
        html.push_str("<h3>Milestones met</h3>\n<ul>\n");
        for m in &c.milestones {
            text.push_str(&format!("  - {}\n", milestone_line(m)));
            html.push_str(&format!("<li>{}</li>\n", html_escape(&milestone_line(m))));
        }
        html.push_str("</ul>\n");
    }
    if !c.most_active_users.is_empty() {
        text.push_str("\nMost active users:\n");
        html.push_str("<h3>Most active users</h3>\n<ul>\n");
        for u in &c.most_active_users {
            text.push_str(&format!("  - {} ({} events)\n", u.user_id, u.events));
            html.push_str(&format!(
                "<li>{} ({} events)</li>\n",
                html_escape(&u.user_id),
                u.events
            ));
        }
        html.push_str("</ul>\n");
    }
    if !c.fit.is_empty() || !c.traits.is_empty() {
        text.push_str("\nFit:\n");
        html.push_str("<h3>Fit</h3>\n<ul>\n");
        for f in &c.fit {
            let line = format!("{} {}", if f.matched { "yes" } else { "no" }, f.name);
            text.push_str(&format!("  - {line}\n"));
            html.push_str(&format!("<li>{}</li>\n", html_escape(&line)));
        }
        for (k, v) in &c.traits {
            let line = format!("{k}: {}", trait_text(v));
            text.push_str(&format!("  - {line}\n"));
            html.push_str(&format!("<li>{}</li>\n", html_escape(&line)));
        }
        html.push_str("</ul>\n");
    }
    if let Some(link) = &c.link {
        text.push_str(&format!("\nOpen the account: {link}\n"));
        html.push_str(&format!(
            "<p><a href=\"{}\">Open the account</a></p>\n",
            html_escape(link)
        ));
    }
    text.push_str(&format!(
        "\nDefinition {} · alert #{}\n",
        c.definition_version, c.sequence
    ));
    html.push_str(&format!(
        "<p style=\"color:#666\">Definition {} · alert #{}</p>\n",
        html_escape(&c.definition_version),
        c.sequence
    ));
    EmailContent {
        subject: c.title(),
        text,
        html,
    }
}

/// One account of a warm digest (stored with the queued entry).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DigestEntry {
    pub account: String,
    pub name: Option<String>,
    pub sequence: u32,
    pub tier: String,
    pub score: f64,
    pub qualified_at: String,
    pub definition_version: String,
    pub link: Option<String>,
}

impl DigestEntry {
    pub fn from_context(c: &AlertContext) -> DigestEntry {
        DigestEntry {
            account: c.account_id.clone(),
            name: c.account_name.clone(),
            sequence: c.sequence,
            tier: c.tier.clone(),
            score: round2(c.score),
            qualified_at: c.qualified_at.clone(),
            definition_version: c.definition_version.clone(),
            link: c.link.clone(),
        }
    }

    fn title(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.account)
    }
}

/// The warm digest as a Slack message.
pub fn digest_slack(day: &str, entries: &[DigestEntry]) -> Value {
    let lines: Vec<String> = entries
        .iter()
        .map(|e| {
            let name = match &e.link {
                Some(link) => format!("<{link}|{}>", e.title()),
                None => e.title().to_owned(),
            };
            format!("• *{name}*: warm, score {}", e.score)
        })
        .collect();
    let heading = format!("{} warm account(s) on {day}", entries.len());
    json!({
        "text": heading,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": heading}},
            {"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}
        ]
    })
}

/// The warm digest as a signed webhook's payload.
pub fn digest_webhook(tenant: &str, day: &str, entries: &[DigestEntry], id: &str) -> Value {
    json!({
        "version": "1",
        "type": "pql.warm_digest",
        "id": id,
        "tenant": tenant,
        "day": day,
        "accounts": entries,
    })
}

/// The warm digest as an e-mail.
pub fn digest_email(day: &str, entries: &[DigestEntry]) -> EmailContent {
    let subject = format!("{} warm account(s) on {day}", entries.len());
    let mut text = format!("{subject}\n\n");
    let mut html = format!("<h2>{}</h2><ul>", html_escape(&subject));
    for e in entries {
        text.push_str(&format!("- {} (score {})", e.title(), e.score));
        html.push_str(&format!(
            "<li>{} (score {})",
            html_escape(e.title()),
            e.score
        ));
        if let Some(link) = &e.link {
            text.push_str(&format!(" {link}"));
            html.push_str(&format!(" <a href=\"{}\">open</a>", html_escape(link)));
        }
        text.push('\n');
        html.push_str("</li>");
    }
    html.push_str("</ul>");
    EmailContent {
        subject,
        text,
        html,
    }
}
