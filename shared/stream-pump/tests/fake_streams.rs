//! What DynamoDB Local cannot show: a stream of several shards (DynamoDB Local gives a stream
//! one shard), a child shard behind its parent, `DescribeStream` pages and expired iterators.
//! A small fake of the DynamoDB Streams API (its JSON protocol over HTTP/1.1) serves them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pql_stream_pump::{
    start, CancellationToken, DynamoDbEventResponse, Event, HandlerError, MappingConfig, PumpError,
    PumpStats, StreamHandler,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const ARN: &str = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-01-01T00:00:00.000";

struct Shard {
    id: &'static str,
    parent: Option<&'static str>,
    /// Keys of its records; sequence numbers are `<shard index><record index>`, padded.
    keys: Vec<String>,
    closed: bool,
}

struct Fake {
    shards: Vec<Shard>,
    /// Records per GetRecords answer at most (DynamoDB caps answers at 1 MB too).
    page: usize,
    /// Shards per DescribeStream page.
    describe_page: usize,
    /// `(shard, position)`: the first GetRecords there answers ExpiredIteratorException.
    expire_at: Mutex<HashSet<(usize, usize)>>,
    /// Every GetShardIterator request, as `(shard, type, sequence number)`.
    positions: Mutex<Vec<(String, String, Option<String>)>>,
}

fn sequence(shard: usize, index: usize) -> String {
    format!("{:03}{:018}", shard + 1, index + 1)
}

impl Fake {
    fn shard(&self, id: &str) -> Option<usize> {
        self.shards.iter().position(|s| s.id == id)
    }

    fn answer(&self, target: &str, body: &Value) -> Result<Value, (&'static str, String)> {
        if body.get("StreamArn").is_some_and(|arn| arn != ARN) {
            return Err(("ResourceNotFoundException", "Stream not found".into()));
        }
        match target {
            "DescribeStream" => {
                let from = match body["ExclusiveStartShardId"].as_str() {
                    Some(id) => self.shard(id).expect("a known shard") + 1,
                    None => 0,
                };
                let to = (from + self.describe_page).min(self.shards.len());
                let shards: Vec<Value> = self.shards[from..to]
                    .iter()
                    .enumerate()
                    .map(|(i, shard)| {
                        let i = from + i;
                        let mut range = json!({ "StartingSequenceNumber": sequence(i, 0) });
                        if shard.closed {
                            range["EndingSequenceNumber"] =
                                json!(sequence(i, shard.keys.len().saturating_sub(1)));
                        }
                        let mut out = json!({ "ShardId": shard.id, "SequenceNumberRange": range });
                        if let Some(parent) = shard.parent {
                            out["ParentShardId"] = json!(parent);
                        }
                        out
                    })
                    .collect();
                let mut description = json!({
                    "StreamArn": ARN,
                    "StreamStatus": "ENABLED",
                    "StreamViewType": "NEW_IMAGE",
                    "Shards": shards,
                });
                if to < self.shards.len() {
                    description["LastEvaluatedShardId"] = json!(self.shards[to - 1].id);
                }
                Ok(json!({ "StreamDescription": description }))
            }
            "GetShardIterator" => {
                let id = body["ShardId"].as_str().unwrap();
                let kind = body["ShardIteratorType"].as_str().unwrap().to_owned();
                let number = body["SequenceNumber"].as_str().map(str::to_owned);
                self.positions
                    .lock()
                    .unwrap()
                    .push((id.to_owned(), kind.clone(), number.clone()));
                let i = self.shard(id).expect("a known shard");
                let position = match kind.as_str() {
                    "TRIM_HORIZON" => 0,
                    "LATEST" => self.shards[i].keys.len(),
                    "AFTER_SEQUENCE_NUMBER" => {
                        let number = number.unwrap();
                        (0..self.shards[i].keys.len())
                            .position(|k| sequence(i, k) == number)
                            .expect("a sequence number of the shard")
                            + 1
                    }
                    other => panic!("unexpected iterator type {other}"),
                };
                Ok(json!({ "ShardIterator": format!("{i}|{position}") }))
            }
            "GetRecords" => {
                let iterator = body["ShardIterator"].as_str().unwrap();
                let (i, position) = iterator.split_once('|').unwrap();
                let (i, position): (usize, usize) = (i.parse().unwrap(), position.parse().unwrap());
                if self.expire_at.lock().unwrap().remove(&(i, position)) {
                    return Err(("ExpiredIteratorException", "Iterator expired".into()));
                }
                let shard = &self.shards[i];
                let end = (position + self.page).min(shard.keys.len());
                let records: Vec<Value> = (position..end)
                    .map(|k| {
                        json!({
                            "eventID": format!("e-{i}-{k}"),
                            "eventName": "INSERT",
                            "eventVersion": "1.1",
                            "eventSource": "aws:dynamodb",
                            "awsRegion": "us-east-1",
                            "dynamodb": {
                                "ApproximateCreationDateTime": 1.7e9,
                                "Keys": { "pk": { "S": shard.keys[k] } },
                                "NewImage": { "pk": { "S": shard.keys[k] } },
                                "SequenceNumber": sequence(i, k),
                                "SizeBytes": 20,
                                "StreamViewType": "NEW_IMAGE",
                            }
                        })
                    })
                    .collect();
                let mut out = json!({ "Records": records });
                if !(shard.closed && end == shard.keys.len()) {
                    out["NextShardIterator"] = json!(format!("{i}|{end}"));
                }
                Ok(out)
            }
            other => panic!("unexpected operation {other}"),
        }
    }
}

/// Serves the fake on a free port; returns its endpoint.
async fn serve(fake: Arc<Fake>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(connection(socket, fake.clone()));
        }
    });
    endpoint
}

/// HTTP/1.1 with keep-alive: requests with a Content-Length, answered one by one.
async fn connection(mut socket: TcpStream, fake: Arc<Fake>) {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let length: usize = header("content-length").map_or(0, |l| l.parse().unwrap());
        let target = header("x-amz-target").unwrap_or_default();
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value = serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap();
        buffer.drain(..head_end + length);
        let operation = target.rsplit('.').next().unwrap_or_default();
        let (status, answer) = match fake.answer(operation, &body) {
            Ok(answer) => ("200 OK", answer),
            Err((kind, message)) => (
                "400 Bad Request",
                json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"), "message": message }),
            ),
        };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn fake(shards: Vec<Shard>) -> Fake {
    Fake {
        shards,
        page: 1000,
        describe_page: 100,
        expire_at: Mutex::new(HashSet::new()),
        positions: Mutex::new(Vec::new()),
    }
}

fn config() -> MappingConfig {
    MappingConfig {
        poll_interval: Duration::from_millis(10),
        retry_delay: Duration::from_millis(5),
        discovery_interval: Duration::from_millis(100),
        ..MappingConfig::default()
    }
}

/// Runs a pump on the fake until `done` holds (30 s at most), then stops it.
async fn pump_until<H: StreamHandler>(
    fake: Arc<Fake>,
    config: MappingConfig,
    handler: H,
    done: impl Fn(&PumpStats) -> bool,
) -> PumpStats {
    let endpoint = serve(fake).await;
    let (parked, _parked_rx) = mpsc::channel(16);
    let pump = start(
        pql_stream_pump::local_client(&endpoint),
        ARN.to_owned(),
        config,
        Arc::new(handler),
        parked,
    )
    .await
    .unwrap();
    let stats = pump.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pump.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = *stats.lock().unwrap();
        if done(&now) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the pump stops promptly")
        .unwrap()
        .unwrap()
}

/// Every invocation's keys, in the order the handler saw them.
fn logging(log: Arc<Mutex<Vec<Vec<String>>>>, delay: Duration) -> impl StreamHandler {
    move |event: Event| {
        let log = log.clone();
        async move {
            tokio::time::sleep(delay).await;
            let keys = event
                .records
                .iter()
                .map(|r| match r.change.keys.get("pk") {
                    Some(serde_dynamo::AttributeValue::S(s)) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            log.lock().unwrap().push(keys);
            Ok::<_, HandlerError>(DynamoDbEventResponse::default())
        }
    }
}

#[tokio::test]
async fn a_child_shard_starts_after_its_parent_is_done_and_pages_are_followed() {
    let fake = Arc::new(Fake {
        // One shard per DescribeStream page: the child is on a later page than its parent.
        describe_page: 1,
        ..fake(vec![
            Shard {
                id: "shard-parent",
                parent: None,
                keys: keys("parent", 6),
                closed: true,
            },
            Shard {
                id: "shard-child",
                parent: Some("shard-parent"),
                keys: keys("child", 4),
                closed: false,
            },
            Shard {
                id: "shard-orphan",
                parent: Some("shard-trimmed-long-ago"),
                keys: keys("orphan", 2),
                closed: false,
            },
        ])
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let config = MappingConfig {
        batch_size: 1,
        ..config()
    };
    // A slow handler: a child started too early would overtake its parent.
    let stats = pump_until(
        fake,
        config,
        logging(log.clone(), Duration::from_millis(20)),
        |s| s.records_delivered >= 12,
    )
    .await;
    assert_eq!(
        stats.shards_completed, 1,
        "the parent is closed and read to its end"
    );
    let seen: Vec<String> = log.lock().unwrap().iter().flatten().cloned().collect();
    let of = |prefix: &str| -> Vec<String> {
        seen.iter()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    };
    assert_eq!(of("parent"), keys("parent", 6));
    assert_eq!(of("child"), keys("child", 4));
    assert_eq!(of("orphan"), keys("orphan", 2));
    let last_parent = seen.iter().rposition(|k| k.starts_with("parent")).unwrap();
    let first_child = seen.iter().position(|k| k.starts_with("child")).unwrap();
    assert!(last_parent < first_child, "{seen:?}");
    // A shard whose parent is no longer listed does not wait: it runs beside the parent.
    let first_orphan = seen.iter().position(|k| k.starts_with("orphan")).unwrap();
    assert!(first_orphan < last_parent, "{seen:?}");
}

#[tokio::test]
async fn a_failing_shard_does_not_hold_up_the_others() {
    let fake = Arc::new(fake(vec![
        Shard {
            id: "shard-a",
            parent: None,
            keys: keys("a", 3),
            closed: false,
        },
        Shard {
            id: "shard-b",
            parent: None,
            keys: keys("b", 20),
            closed: false,
        },
    ]));
    let a_failures = Arc::new(AtomicU32::new(0));
    let handler = {
        let a_failures = a_failures.clone();
        move |event: Event| {
            let from_a = event.records.iter().any(|r| {
                r.change
                    .sequence_number
                    .as_deref()
                    .unwrap()
                    .starts_with("001")
            });
            if from_a {
                a_failures.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                if from_a {
                    Err::<DynamoDbEventResponse, HandlerError>("shard a is poisoned".into())
                } else {
                    Ok(DynamoDbEventResponse::default())
                }
            }
        }
    };
    let config = MappingConfig {
        batch_size: 2,
        maximum_retry_attempts: 10_000,
        ..config()
    };
    // Shard a retries (nearly) forever; were it blocking, shard b would never finish.
    let failures = a_failures.clone();
    let stats = pump_until(fake, config, handler, move |s| {
        s.records_delivered >= 20 && failures.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(
        stats.records_delivered, 20,
        "all of shard b, none of shard a"
    );
    assert_eq!(stats.records_parked, 0);
}

#[tokio::test]
async fn an_expired_iterator_is_renewed_after_the_last_record_read() {
    let fake = Arc::new(Fake {
        page: 2,
        expire_at: Mutex::new([(0, 2), (0, 6)].into_iter().collect()),
        ..fake(vec![Shard {
            id: "shard-0",
            parent: None,
            keys: keys("k", 7),
            closed: true,
        }])
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let stats = pump_until(
        fake.clone(),
        config(),
        logging(log.clone(), Duration::ZERO),
        |s| s.shards_completed >= 1,
    )
    .await;
    let seen: Vec<String> = log.lock().unwrap().iter().flatten().cloned().collect();
    assert_eq!(seen, keys("k", 7), "each record once, in order");
    assert_eq!(stats.records_delivered, 7);
    let positions = fake.positions.lock().unwrap().clone();
    assert_eq!(
        positions,
        [
            ("shard-0".to_owned(), "TRIM_HORIZON".to_owned(), None),
            (
                "shard-0".to_owned(),
                "AFTER_SEQUENCE_NUMBER".to_owned(),
                Some(sequence(0, 1))
            ),
            (
                "shard-0".to_owned(),
                "AFTER_SEQUENCE_NUMBER".to_owned(),
                Some(sequence(0, 5))
            ),
        ]
    );
}

#[tokio::test]
async fn an_unknown_stream_or_a_bad_configuration_is_an_error_at_start() {
    let endpoint = serve(Arc::new(fake(Vec::new()))).await;
    let client = pql_stream_pump::local_client(&endpoint);
    let handler = Arc::new(logging(Arc::new(Mutex::new(Vec::new())), Duration::ZERO));
    let (parked, _rx) = mpsc::channel(1);
    let error = start(
        client.clone(),
        format!("{ARN}-gone"),
        config(),
        handler.clone(),
        parked.clone(),
    )
    .await
    .err()
    .expect("an unknown stream");
    assert!(
        matches!(
            &error,
            PumpError::Streams {
                operation: "DescribeStream",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("ResourceNotFoundException"),
        "{error}"
    );
    let config = MappingConfig {
        batch_size: 0,
        ..config()
    };
    let error = start(client, ARN.to_owned(), config, handler, parked)
        .await
        .err()
        .expect("a batch size of 0");
    assert!(matches!(error, PumpError::Config(_)), "{error}");
}
