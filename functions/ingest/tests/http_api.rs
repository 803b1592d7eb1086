//! The HTTP contract of the ingest function, through the Lambda handler, against DynamoDB
//! Local with fresh tables per test.

mod common;

use common::*;
use http::StatusCode;
use pql_engine::EventKind;
use serde_json::json;

#[tokio::test]
async fn each_single_call_endpoint_stores_its_call() {
    let stack = stack().await;
    let calls = [
        (
            "/v1/track",
            json!({"event": "Signed Up", "userId": "u1", "messageId": "m-track"}),
        ),
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": "a@acme.io"}, "messageId": "m-identify"}),
        ),
        (
            "/v1/group",
            json!({"userId": "u1", "groupId": "acme-inc", "traits": {"employees": 50}, "messageId": "m-group"}),
        ),
        (
            "/v1/page",
            json!({"anonymousId": "anon-1", "name": "Pricing", "messageId": "m-page"}),
        ),
        (
            "/v1/screen",
            json!({"userId": "u1", "name": "Dashboard", "messageId": "m-screen"}),
        ),
        (
            "/v1/alias",
            json!({"userId": "u1", "previousId": "anon-1", "messageId": "m-alias"}),
        ),
    ];
    for (path, body) in &calls {
        // No `type` in the body: the endpoint says what the call is.
        stack
            .send(post(path, body.to_string()))
            .await
            .assert_success();
    }
    let stored = stack.stored(&acme()).await;
    assert_eq!(stored.len(), 6);
    assert_eq!(
        stored["m-track"].kind,
        EventKind::Track {
            event: "Signed Up".into()
        }
    );
    assert_eq!(stored["m-identify"].kind, EventKind::Identify);
    assert_eq!(stored["m-identify"].traits["email"], "a@acme.io");
    assert_eq!(
        stored["m-group"].kind,
        EventKind::Group {
            group_id: "acme-inc".into()
        }
    );
    assert_eq!(stored["m-page"].type_name(), "page");
    assert_eq!(stored["m-page"].name(), Some("Pricing"));
    assert_eq!(stored["m-screen"].type_name(), "screen");
    assert_eq!(
        stored["m-alias"].kind,
        EventKind::Alias {
            previous_id: "anon-1".into()
        }
    );
    // No time in the calls: the server's receive time is the event time.
    for event in stored.values() {
        assert_eq!(event.received_at, Some(received_at()));
        assert_eq!(event.timestamp, received_at());
    }
}

#[tokio::test]
async fn batch_and_import_store_every_call_with_the_envelope_applied() {
    let stack = stack().await;
    let body = json!({
        "batch": [track("b1"), track("b2"),
                  {"type": "identify", "userId": "user-2", "messageId": "b3"}],
        "context": {"groupId": "from-envelope"},
    });
    stack
        .send(post("/v1/batch", body.to_string()))
        .await
        .assert_success();
    stack
        .send(post("/v1/import", batch([track("i1"), track("i2")])))
        .await
        .assert_success();
    let stored = stack.stored(&acme()).await;
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b1", "b2", "b3", "i1", "i2"]
    );
    assert_eq!(stored["b1"].account_id(), Some("account-1"));
    assert_eq!(stored["b3"].account_id(), Some("from-envelope"));
}

#[tokio::test]
async fn a_single_call_sent_to_the_batch_endpoint_is_stored() {
    // What a Segment webhook sends: one call with its `type`, to one URL.
    let stack = stack().await;
    stack
        .send(post("/v1/batch", track("webhook-1").to_string()))
        .await
        .assert_success();
    assert!(stack.stored(&acme()).await.contains_key("webhook-1"));
}

#[tokio::test]
async fn write_key_in_the_body_authenticates() {
    let stack = stack().await;
    let body = json!({"batch": [track("k1")], "writeKey": WRITE_KEY});
    stack
        .send(anonymous("POST", "/v1/batch", body.to_string()))
        .await
        .assert_success();
    let mut call = track("k2");
    call["writeKey"] = json!(WRITE_KEY);
    stack
        .send(anonymous("POST", "/v1/track", call.to_string()))
        .await
        .assert_success();
    assert_eq!(stack.stored(&acme()).await.len(), 2);
}

#[tokio::test]
async fn a_missing_or_unknown_write_key_is_401_and_nothing_is_stored() {
    let stack = stack().await;
    let missing = stack
        .send(anonymous("POST", "/v1/batch", batch([track("x1")])))
        .await;
    let missing_message = missing.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        missing_message.contains("no write key"),
        "{missing_message}"
    );
    assert_eq!(missing.headers["www-authenticate"], "Basic realm=\"pql\"");

    let mut request = post("/v1/batch", batch([track("x2")]));
    request
        .headers_mut()
        .insert("authorization", basic("wk_unknown").parse().unwrap());
    let unknown = stack.send(request).await;
    let unknown_message = unknown.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(unknown_message.contains("not known"), "{unknown_message}");
    assert_ne!(missing_message, unknown_message);

    let body = json!({"batch": [track("x3")], "writeKey": "wk_unknown"});
    stack
        .send(anonymous("POST", "/v1/batch", body.to_string()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let mut bearer = post("/v1/batch", batch([track("x4")]));
    bearer
        .headers_mut()
        .insert("authorization", "Bearer abc".parse().unwrap());
    stack
        .send(bearer)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    assert!(stack.stored(&acme()).await.is_empty());
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let stack = stack().await;
    for path in ["/", "/v1", "/v1/tracks", "/v2/batch", "/v1/batch/extra"] {
        stack
            .send(post(path, batch([track("p")])))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    for method in ["GET", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let reply = stack
            .send(anonymous(method, "/v1/track", track("p").to_string()))
            .await;
        reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(reply.headers["allow"], "POST");
    }
    assert!(stack.stored(&acme()).await.is_empty());
}

#[tokio::test]
async fn invalid_json_is_400_and_nothing_is_stored() {
    let stack = stack().await;
    let truncated = &batch([track("j1"), track("j2")])[..60];
    let message = stack
        .send(post("/v1/batch", truncated.to_vec()))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_json")
        .to_owned();
    assert!(message.contains("line 1 column"), "{message}");
    stack
        .send(post("/v1/track", "not json"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    stack
        .send(post("/v1/batch", "[1, 2]"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "not_an_object");
    stack
        .send(post("/v1/batch", r#"{"batch": {"type": "track"}}"#))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "wrong_field_type");
    // Without a header the key would be in the body, which cannot be read.
    stack
        .send(anonymous("POST", "/v1/batch", "{"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(stack.stored(&acme()).await.is_empty());
}

#[tokio::test]
async fn a_single_call_that_fails_validation_is_400() {
    let stack = stack().await;
    let reply = stack
        .send(post("/v1/track", json!({"userId": "u1"}).to_string()))
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "track_without_event");
    stack
        .send(post("/v1/identify", track("t1").to_string()))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "type_mismatch");
    assert!(stack.stored(&acme()).await.is_empty());
}

#[tokio::test]
async fn a_600_kb_request_is_400_and_nothing_is_stored() {
    let stack = stack().await;
    let mut calls = Vec::new();
    // 30 calls of 20 KB each: every call is within the 32 KB limit, the request is not.
    for i in 0..30 {
        let mut call = track(&format!("big-{i}"));
        call["properties"]["pad"] = json!("x".repeat(20 * 1024));
        calls.push(call);
    }
    let body = batch(calls);
    assert!(body.len() > 600 * 1024);
    let message = stack
        .send(post("/v1/batch", body.clone()))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "request_too_large")
        .to_owned();
    assert!(message.contains(&body.len().to_string()), "{message}");
    assert!(message.contains("512000"), "{message}");
    // Compressed it is small, but the limit holds once decompressed too.
    let compressed = gzip(&body);
    assert!(compressed.len() < 100 * 1024);
    let mut request = post("/v1/batch", compressed);
    request
        .headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    stack
        .send(request)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "request_too_large");
    assert!(stack.stored(&acme()).await.is_empty());
}

#[tokio::test]
async fn a_batch_of_2501_calls_is_400_and_nothing_is_stored() {
    let stack = stack().await;
    let calls =
        (0..2_501).map(|i| json!({"type": "track", "event": "E", "userId": "u", "messageId": i}));
    let body = batch(calls);
    assert!(body.len() < 500 * 1024);
    let message = stack
        .send(post("/v1/batch", body))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "too_many_events")
        .to_owned();
    assert!(
        message.contains("2501") && message.contains("2500"),
        "{message}"
    );
    assert!(stack.stored(&acme()).await.is_empty());
}

#[tokio::test]
async fn a_bad_call_in_a_batch_is_listed_and_the_others_are_stored() {
    let stack = stack().await;
    let mut no_identity = track("bad");
    no_identity.as_object_mut().unwrap().remove("userId");
    let mut oversized = track("huge");
    oversized["properties"]["pad"] = json!("x".repeat(33 * 1024));
    let body = batch([
        track("ok-0"),
        track("ok-1"),
        no_identity,
        track("ok-3"),
        oversized,
    ]);
    let reply = stack.send(post("/v1/batch", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["success"], true);
    assert_eq!(reply.body["accepted"], 3);
    let rejected = reply.body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 2);
    assert_eq!(rejected[0]["error"], "missing_identity");
    assert!(rejected[0]["message"].as_str().unwrap().contains("userId"));
    assert_eq!(rejected[1]["index"], 4);
    assert_eq!(rejected[1]["error"], "too_large");
    let stored = stack.stored(&acme()).await;
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ok-0", "ok-1", "ok-3"]
    );
}

#[tokio::test]
async fn the_same_batch_sent_twice_is_stored_once() {
    let stack = stack().await;
    // Calls without a messageId get one from their content, so a retry dedupes as well.
    let mut anonymous_call = track("unused");
    anonymous_call.as_object_mut().unwrap().remove("messageId");
    let body = batch([track("r1"), track("r2"), anonymous_call]);
    stack
        .send(post("/v1/batch", body.clone()))
        .await
        .assert_success();
    let first = stack.stored(&acme()).await;
    assert_eq!(first.len(), 3);
    // A retry is a success too (clients must not retry again), and writes nothing.
    stack.send(post("/v1/batch", body)).await.assert_success();
    assert_eq!(stack.stored(&acme()).await, first);
}

#[tokio::test]
async fn the_same_message_id_in_two_batches_is_stored_once() {
    let stack = stack().await;
    stack
        .send(post("/v1/batch", batch([track("shared"), track("a")])))
        .await
        .assert_success();
    let mut changed = track("shared");
    changed["event"] = json!("Something Else");
    stack
        .send(post("/v1/batch", batch([changed, track("b")])))
        .await
        .assert_success();
    // Twice in one batch as well.
    stack
        .send(post("/v1/batch", batch([track("twice"), track("twice")])))
        .await
        .assert_success();
    let stored = stack.stored(&acme()).await;
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "shared", "twice"]
    );
    // The first copy is kept.
    assert_eq!(stored["shared"].name(), Some("Report Exported"));
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let stack = stack().await;
    let mut request = post("/v1/batch", gzip(&batch([track("z1"), track("z2")])));
    request
        .headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    stack.send(request).await.assert_success();
    // With the key in the compressed body.
    let body = json!({"batch": [track("z3")], "writeKey": WRITE_KEY}).to_string();
    let mut request = anonymous("POST", "/v1/batch", gzip(body.as_bytes()));
    request
        .headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    stack.send(request).await.assert_success();
    assert_eq!(stack.stored(&acme()).await.len(), 3);

    let mut broken = post("/v1/batch", b"\x1f\x8b not really gzip".to_vec());
    broken
        .headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    stack
        .send(broken)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_gzip");
    let mut brotli = post("/v1/batch", batch([track("z4")]));
    brotli
        .headers_mut()
        .insert("content-encoding", "br".parse().unwrap());
    stack
        .send(brotli)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding");
    assert_eq!(stack.stored(&acme()).await.len(), 3);
}

#[tokio::test]
async fn tenants_are_kept_apart() {
    let stack = stack().await;
    let other = pql_store::tenants::TenantId::parse("globex").unwrap();
    stack
        .store
        .put_tenant(&other, "wk_globex", &definition())
        .await
        .unwrap();
    stack
        .send(post("/v1/batch", batch([track("same-id")])))
        .await
        .assert_success();
    let mut request = post("/v1/batch", batch([track("same-id")]));
    request
        .headers_mut()
        .insert("authorization", basic("wk_globex").parse().unwrap());
    stack.send(request).await.assert_success();
    assert_eq!(stack.stored(&acme()).await.len(), 1);
    assert_eq!(stack.stored(&other).await.len(), 1);
}
