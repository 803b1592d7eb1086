//! Behaviour that needs a sink DynamoDB Local cannot play: failures (503), look-up caching,
//! the batch-size boundary. An in-memory sink stands in for the store.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_failing_store_is_503_and_a_retry_stores_everything_once() {
    let sink = MemorySink::with_acme();
    sink.failing_puts.store(1, Ordering::SeqCst);
    let app = memory_app(sink);
    let body = batch([track("a"), track("b"), track("c")]);

    let reply = send(&app, post("/v1/batch", body.clone())).await;
    let message = reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(message.contains("retry"), "{message}");
    // The store's own error (table names, causes) stays in the log.
    assert!(!message.contains("EventsTable"), "{message}");
    assert_eq!(reply.headers["retry-after"], "1");
    // Part of the batch was written before the failure ...
    assert_eq!(app.sink().stored(), 1);

    // ... and the client's retry completes it without duplicates.
    send(&app, post("/v1/batch", body)).await.assert_success();
    assert_eq!(app.sink().stored(), 3);
}

#[tokio::test]
async fn a_failing_key_lookup_is_503_not_401() {
    let sink = MemorySink::with_acme();
    sink.failing_lookups.store(1, Ordering::SeqCst);
    let app = memory_app(sink);
    send(&app, post("/v1/track", track("a").to_string()))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    send(&app, post("/v1/track", track("a").to_string()))
        .await
        .assert_success();
    assert_eq!(app.sink().stored(), 1);
}

#[tokio::test]
async fn known_keys_are_looked_up_once_per_minute_and_unknown_keys_every_time() {
    let app = memory_app(MemorySink::with_acme());
    for i in 0..5 {
        send(&app, post("/v1/track", track(&format!("m{i}")).to_string()))
            .await
            .assert_success();
    }
    assert_eq!(app.sink().lookups.load(Ordering::SeqCst), 1);
    for _ in 0..3 {
        let mut request = post("/v1/track", track("x").to_string());
        request
            .headers_mut()
            .insert("authorization", basic("wk_nope").parse().unwrap());
        send(&app, request)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(app.sink().lookups.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_batch_of_exactly_2500_calls_is_accepted() {
    let app = memory_app(MemorySink::with_acme());
    let calls =
        (0..2_500).map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": i}));
    send(&app, post("/v1/batch", batch(calls)))
        .await
        .assert_success();
    assert_eq!(app.sink().stored(), 2_500);
}

#[tokio::test]
async fn an_empty_batch_is_a_success_and_stores_nothing() {
    let app = memory_app(MemorySink::with_acme());
    send(&app, post("/v1/batch", r#"{"batch": []}"#))
        .await
        .assert_success();
    assert_eq!(app.sink().stored(), 0);
    assert_eq!(app.sink().lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_batch_whose_calls_all_fail_validation_is_200_with_none_accepted() {
    let app = memory_app(MemorySink::with_acme());
    let reply = send(
        &app,
        post(
            "/v1/batch",
            batch([json!({"type": "track"}), json!("nope")]),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["accepted"], 0);
    assert_eq!(reply.body["rejected"][0]["error"], "missing_identity");
    assert_eq!(reply.body["rejected"][1]["error"], "not_an_object");
    assert_eq!(app.sink().stored(), 0);
}

/// Collects what the JSON log subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_the_tenant_and_counts_but_never_the_key_or_the_calls() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let sink = MemorySink::with_acme();
    sink.failing_puts.store(1, Ordering::SeqCst);
    let app = memory_app(sink);
    let mut secret_call = track("m-secret");
    secret_call["properties"]["email"] = json!("ceo@secret-customer.example");
    let body = batch([secret_call.clone(), json!({"type": "track", "userId": "u"})]);
    send(&app, post("/v1/batch", body.clone()))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    send(&app, post("/v1/batch", body)).await;
    let with_key = json!({"batch": [secret_call], "writeKey": WRITE_KEY}).to_string();
    send(&app, anonymous("POST", "/v1/batch", with_key)).await;
    let mut unknown = post("/v1/batch", "{}");
    unknown
        .headers_mut()
        .insert("authorization", basic("wk_unknown_secret").parse().unwrap());
    send(&app, unknown).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{logs}");
    assert!(logs.contains("\"tenant\":\"acme\""), "{logs}");
    let ingested = &lines[1]["fields"];
    assert_eq!(ingested["message"], "ingested");
    assert_eq!(ingested["accepted"], 1);
    assert_eq!(ingested["rejected"], 1);
    assert_eq!(ingested["duplicates"], 1);
    assert_eq!(lines[0]["fields"]["status"], 503);
    assert_eq!(lines[3]["fields"]["error"], "unauthorized");
    for secret in [
        WRITE_KEY,
        "wk_unknown_secret",
        "secret-customer",
        "m-secret",
        "Report Exported",
    ] {
        assert!(!logs.contains(secret), "`{secret}` is in the logs: {logs}");
    }
}
