//! The notify function in the local stack, end to end: Segment calls in, a qualification, and
//! the alert delivered once to a Slack-like receiver, a signed webhook and an e-mail directory,
//! even when the same calls are sent again.

use std::time::{Duration, Instant};

use pql_local_stack::NotifyOptions;
use pql_tests::stack::{at, spawn_app_with, test_definition, test_options, track, wait_for_within};
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "local_webhook_secret_0123456789";

fn qualifying_batch(account: &str) -> Vec<Value> {
    let a = Some(account);
    vec![
        track("p1", "u1", "Project Created", at(1), a),
        track("d1", "u3", "Dashboard Viewed", at(2), a),
        track("p2", "u1", "Project Created", at(3), a),
        track("d2", "u3", "Dashboard Viewed", at(4), a),
        track("i1", "u1", "Teammate Invited", at(5), a),
        track("p3", "u2", "Project Created", at(6), a),
        track("d3", "u1", "Dashboard Viewed", at(7), a),
        track("d4", "u2", "Dashboard Viewed", at(8), a),
        track("i2", "u2", "Teammate Invited", at(9), a),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qualification_reaches_every_receiver_once() {
    let slack = MockServer::start().await;
    let hook = MockServer::start().await;
    for server in [&slack, &hook] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(server)
            .await;
    }
    let mail = std::env::temp_dir().join(format!("pql-notify-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&mail);
    let settings = pql_notify::Settings::parse_toml(
        "test",
        &format!(
            r#"
[[destination]]
id = "slack"
kind = "slack"
url = "{}/services/x"

[[destination]]
id = "crm"
kind = "webhook"
url = "{}/hook"
secret = "{SECRET}"

[[destination]]
id = "mail"
kind = "email"
from = "pql@example.com"
to = ["sales@example.com"]

[default]
destinations = ["slack", "crm", "mail"]
"#,
            slack.uri(),
            hook.uri()
        ),
    )
    .unwrap();
    let mut options = test_options(test_definition());
    let mut notify = NotifyOptions::new(settings);
    notify.email_dir = Some(mail.clone());
    notify.mapping.poll_interval = Duration::from_millis(10);
    notify.mapping.discovery_interval = Duration::from_millis(200);
    options.notify = Some(notify);
    let app = spawn_app_with(options).await;

    let sent = Instant::now();
    let response = app.send_batch(&qualifying_batch("acme")).await;
    assert_eq!(response["success"], true, "{response}");
    let alerts = app.wait_for_alerts("acme", 1).await;
    let requests = wait_for_within("the webhook", Duration::from_secs(30), || async {
        let r = hook.received_requests().await.unwrap_or_default();
        if r.is_empty() {
            Err("no request yet".to_owned())
        } else {
            Ok(r)
        }
    })
    .await;
    eprintln!("calls sent -> webhook received: {:?}", sent.elapsed());
    let signature = requests[0].headers["pql-signature"].to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    pql_notify::signing::verify(SECRET.as_bytes(), signature, &requests[0].body, now, 300).unwrap();
    let payload: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(payload["account"]["id"], "acme");
    assert_eq!(payload["alert"]["sequence"], alerts[0].sequence);
    assert_eq!(payload["alert"]["tier"], alerts[0].tier.as_str());

    // The same calls again (a client retry): no new alert, no new message.
    app.send_batch(&qualifying_batch("acme")).await;
    app.drain().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.alerts("acme").await.len(), 1);
    assert_eq!(hook.received_requests().await.unwrap().len(), 1);
    assert_eq!(slack.received_requests().await.unwrap().len(), 1);
    let mails: Vec<_> = std::fs::read_dir(&mail).unwrap().collect();
    assert_eq!(mails.len(), 1);
    app.stop().await;
    std::fs::remove_dir_all(&mail).unwrap();
}
