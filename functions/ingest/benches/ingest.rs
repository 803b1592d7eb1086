//! CPU per event of the ingest handler, with a no-op sink (no I/O): route, auth (cached key),
//! body decoding, Segment parsing of every call, the response. DynamoDB's latency is not in it.
//!
//! The batch is 100 calls of realistic trial telemetry from the simulator (identify, group,
//! track, page, screen; browser clock skew, anonymous visits), as an analytics library
//! batches them.
//!
//! Run: `cargo bench -p pql-ingest --bench ingest -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::StatusCode;
use lambda_http::{Body, Request};
use pql_engine::{Event, Timestamp};
use pql_ingest::{App, Config, EventSink};
use pql_simulator::{SimConfig, Simulation};
use pql_store::events::PutOutcome;
use pql_store::tenants::TenantId;
use pql_store::StoreError;
use serde_json::json;

const WRITE_KEY: &str = "wk_bench_0123456789";
const BATCH: usize = 100;

/// Knows one key and stores nothing.
struct NoopSink(TenantId);

impl EventSink for NoopSink {
    async fn tenant_for_write_key(&self, raw_key: &str) -> Result<Option<TenantId>, StoreError> {
        Ok((raw_key == WRITE_KEY).then(|| self.0.clone()))
    }

    async fn put_events(
        &self,
        _tenant: &TenantId,
        events: &[Event],
        _retention_days: u32,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        black_box(events);
        Ok(vec![PutOutcome::Stored; events.len()])
    }
}

/// 100 consecutive calls from the middle of a simulated month, as one batch.
fn batch_body() -> Vec<u8> {
    let simulation = Simulation::new(SimConfig {
        accounts: 40,
        days: 30,
        start: Timestamp::parse("2026-10-01T00:00:00Z").unwrap(),
        seed: 7,
    });
    let calls: Vec<_> = simulation.events().skip(2_000).take(BATCH).collect();
    assert_eq!(calls.len(), BATCH);
    json!({
        "batch": calls,
        "sentAt": "2026-10-20T12:00:00.000Z",
        "context": {"library": {"name": "analytics-node", "version": "2.1.0"}},
    })
    .to_string()
    .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn request(body: &[u8], basic: bool, gzip: bool) -> Request {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri("/v1/batch")
        .header("content-type", "application/json");
    if basic {
        // base64("wk_bench_0123456789:")
        builder = builder.header("authorization", "Basic d2tfYmVuY2hfMDEyMzQ1Njc4OTo=");
    }
    if gzip {
        builder = builder.header("content-encoding", "gzip");
    }
    builder.body(Body::Binary(body.to_vec())).unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let app = App::new(
        NoopSink(TenantId::parse("bench").unwrap()),
        Config::default(),
    )
    .with_clock(|| Timestamp::parse("2026-10-20T12:00:01Z").unwrap());

    let plain = batch_body();
    let compressed = gzip(&plain);
    let with_key = {
        let mut v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        v["writeKey"] = json!(WRITE_KEY);
        v.to_string().into_bytes()
    };
    // Check once that every call is accepted (the benchmark measures the success path).
    for (body, basic, gz) in [
        (&plain, true, false),
        (&compressed, true, true),
        (&with_key, false, false),
    ] {
        let response = runtime.block_on(app.handle(request(body, basic, gz)));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().as_ref(), br#"{"success":true}"#);
    }
    println!(
        "batch of {BATCH} calls: {} bytes, {} bytes gzip ({} bytes per call)",
        plain.len(),
        compressed.len(),
        plain.len() / BATCH
    );

    let mut group = c.benchmark_group("ingest handler, 100-call batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    let cases: [(&str, &Vec<u8>, bool, bool); 3] = [
        ("basic auth", &plain, true, false),
        ("basic auth, gzip", &compressed, true, true),
        ("writeKey in body", &with_key, false, false),
    ];
    for (name, body, basic, gz) in cases {
        group.bench_function(name, |b| {
            b.iter_batched(
                || request(body, basic, gz),
                |request| black_box(runtime.block_on(app.handle(request))),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
