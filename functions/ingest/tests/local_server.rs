//! The local HTTP server (`pql local`) end to end: a real TCP socket, reqwest as the client,
//! DynamoDB Local behind it.

mod common;

use std::net::SocketAddr;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(stack: &Stack) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(pql_ingest::local::serve(
        listener,
        stack.app.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        address,
        stop,
        task,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

async fn json_body(response: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_local_server_speaks_the_same_contract_over_tcp() {
    let stack = stack().await;
    let server = start(&stack).await;
    let client = reqwest::Client::new();

    // A batch as a Segment library sends it: Basic auth with an empty password.
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .body(batch([track("tcp-1"), track("tcp-2")]))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = json_body(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, json!({"success": true}));

    // A gzip single call with the key in the body, on a kept-alive connection.
    let call = {
        let mut call = track("tcp-3");
        call["writeKey"] = json!(WRITE_KEY);
        call.to_string()
    };
    let response = client
        .post(server.url("/v1/track"))
        .header("content-encoding", "gzip")
        .body(gzip(call.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A partial success.
    let response = client
        .post(server.url("/v1/import"))
        .basic_auth(WRITE_KEY, Some(""))
        .body(batch([
            track("tcp-4"),
            json!({"type": "track", "userId": "u"}),
        ]))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_body(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["error"], "track_without_event");

    // Errors.
    let response = client.get(server.url("/v1/batch")).send().await.unwrap();
    let (status, headers, body) = json_body(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert_eq!(body["error"], "method_not_allowed");
    let response = client.post(server.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client
        .post(server.url("/v1/batch"))
        .body(batch([track("tcp-5")]))
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_body(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .body("{\"batch\": [")
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_body(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_json");

    // A body over Lambda's 6 MB is cut off by the server itself, with the same answer.
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .body(vec![b' '; 7 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    let (status, _, body) = json_body(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "request_too_large");
    assert!(body["message"].as_str().unwrap().contains("7340032"));

    server.stop().await;
    let stored = stack.stored(&acme()).await;
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        ["tcp-1", "tcp-2", "tcp-3", "tcp-4"]
    );
}

#[tokio::test]
async fn the_local_server_stops_when_told_and_frees_its_port() {
    let stack = stack().await;
    let server = start(&stack).await;
    let address = server.address;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v1/track"))
        .basic_auth(WRITE_KEY, Some(""))
        .body(track("s1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
    // Nothing listens there any more.
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}
