//! Init time of the Lambda functions, and the time of their first invocation.
//!
//! * Init: from process start to the function's first request to the Lambda Runtime API
//!   (`GET /2018-06-01/runtime/invocation/next`), which is where Lambda's init phase ends.
//! * First invocation: from the stub's answer to that poll (an event the function handles
//!   without real work, see [`first_event`]) to the function's `POST .../response` (or
//!   `.../error`). Work a function defers from init to its first use (the AWS SDK
//!   configuration and clients) is paid here, so the two are reported side by side.
//!
//! Each `bootstrap` runs against a local stub of the Runtime API, with the environment Lambda
//! gives it (dummy credentials, a region, the table names) and every AWS endpoint pointed at
//! the stub, so nothing leaves the machine. The stub answers AWS calls as an empty table would
//! (`200 {}`); any such call before the first poll is work done at init and is reported, as
//! are the calls of the first invocation.
//!
//! ```text
//! cargo lambda build --release --bin hello --bin ingest ...   # or scripts/lambda-build.sh
//! cargo run -p pql-init-time -- [--runs 50] [--lambda-dir target/lambda] [--env K=V] [NAME ...]
//! ```
//!
//! Names default to every `target/lambda/<name>/bootstrap` found, `hello` (the minimal
//! `lambda_runtime` function of this crate) first. Runs are interleaved (one of each function
//! per round) so that load from other processes on the machine falls on all of them alike. It
//! reports figures and never fails on them: timings on a shared machine are not assertions.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";

/// What the stub saw, and when.
enum Seen {
    /// A poll for the next invocation (its request line arrived).
    Next(Instant),
    /// The stub finished writing the invocation event in answer to a poll.
    Answered(Instant),
    /// The function's `POST .../invocation/<id>/response`.
    Response(Instant),
    /// `POST .../invocation/<id>/error` (or `/runtime/init/error`), with the start of its body.
    Error(String),
    /// Any other request (an AWS call): its request line and `x-amz-target`.
    Other(String),
}

/// The stub's state: the current run, and the event its first poll gets (set by the driver
/// before each run, taken by that poll; later polls are held open until the process is killed).
#[derive(Default)]
struct Stub {
    run: AtomicU64,
    event: Mutex<Option<String>>,
}

impl Stub {
    /// A new run, whose first poll gets `event`. Connections accepted before belong to killed
    /// processes: what they still send (a poll written just before the kill) is not reported
    /// and gets no event.
    fn start_run(&self, event: String) -> u64 {
        let run = self.run.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut e) = self.event.lock() {
            *e = Some(event);
        }
        run
    }

    fn take_event(&self, run: u64) -> Option<String> {
        if self.run.load(Ordering::SeqCst) != run {
            return None;
        }
        self.event.lock().ok()?.take()
    }
}

fn serve(listener: TcpListener, seen: Sender<(u64, Seen)>, stub: Arc<Stub>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let seen = seen.clone();
        let stub = Arc::clone(&stub);
        let run = stub.run.load(Ordering::SeqCst);
        std::thread::spawn(move || handle(stream, seen, &stub, run));
    }
}

/// One connection: requests one after the other (the runtime's client keeps connections
/// alive), each read whole (headers and `content-length` body) before it is answered.
fn handle(stream: TcpStream, seen: Sender<(u64, Seen)>, stub: &Stub, run: u64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let at = Instant::now();
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            continue;
        }
        let mut length = 0usize;
        let mut target = None;
        loop {
            let mut header = String::new();
            if !reader.read_line(&mut header).is_ok_and(|n| n > 0) || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("x-amz-target") {
                    target = Some(value.to_owned());
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("");
        // A killed process's request: only answered.
        let current = stub.run.load(Ordering::SeqCst) == run;
        if path.starts_with(NEXT) {
            if !current {
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            }
            if seen.send((run, Seen::Next(at))).is_err() {
                return;
            }
            let Some(event) = stub.take_event(run) else {
                // Hold the poll open until the driver kills the process.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 lambda-runtime-aws-request-id: init-time-bench\r\n\
                 lambda-runtime-deadline-ms: {}\r\n\
                 lambda-runtime-invoked-function-arn: arn:aws:lambda:eu-west-1:123456789012:function:bench\r\n\
                 lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n\
                 content-length: {}\r\n\r\n{event}",
                deadline_ms(),
                event.len()
            );
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
            let _ = seen.send((run, Seen::Answered(Instant::now())));
            continue;
        }
        let runtime = path.starts_with("/2018-06-01/runtime/");
        let report = if runtime && path.ends_with("/response") {
            Seen::Response(at)
        } else if runtime && path.ends_with("/error") {
            let text = String::from_utf8_lossy(&body);
            Seen::Error(text.chars().take(300).collect())
        } else {
            Seen::Other(match target {
                Some(target) => format!("{line} ({target})"),
                None => line,
            })
        };
        if current && seen.send((run, report)).is_err() {
            return;
        }
        // The Runtime API accepts; an AWS call gets what an empty table answers.
        let answer: &[u8] = if runtime {
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"status\":\"OK\"}\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\n\r\n{}"
        };
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

/// A deadline 60 s from now, in ms since the epoch (the invocation's `Deadline-Ms`).
fn deadline_ms() -> u128 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now + Duration::from_secs(60)).as_millis()
}

/// The first invocation's event: one the function handles without real work, so that the
/// figure is what the first invocation costs over any later one (the clients it builds on
/// first use, deserialising, the answer).
///
/// * `ingest`, `admin`: an HTTP API (payload 2.0) `GET` of a path neither serves (a 404,
///   answered without a store call);
/// * `activation`, `qualify`, `notify`: an empty DynamoDB stream batch;
/// * `sweep`: its schedule's event; it sweeps every shard of the due index, each `Query`
///   answered by the stub with an empty page;
/// * anything else (`hello`): `{}`.
fn first_event(name: &str) -> String {
    match name {
        "ingest" | "admin" => concat!(
            r#"{"version":"2.0","routeKey":"$default","rawPath":"/init-time-bench","#,
            r#""rawQueryString":"","headers":{"host":"bench.example"},"#,
            r#""requestContext":{"accountId":"123456789012","apiId":"bench","#,
            r#""domainName":"bench.example","domainPrefix":"bench","#,
            r#""http":{"method":"GET","path":"/init-time-bench","protocol":"HTTP/1.1","#,
            r#""sourceIp":"127.0.0.1","userAgent":"init-time"},"requestId":"bench","#,
            r#""routeKey":"$default","stage":"$default","time":"01/Jan/2026:00:00:00 +0000","#,
            r#""timeEpoch":1767225600000},"isBase64Encoded":false}"#
        )
        .to_owned(),
        "activation" | "qualify" | "notify" => r#"{"Records":[]}"#.to_owned(),
        "sweep" => concat!(
            r#"{"version":"0","id":"bench","detail-type":"Scheduled Event","#,
            r#""source":"aws.events","time":"2026-01-01T00:00:00Z","detail":{}}"#
        )
        .to_owned(),
        _ => "{}".to_owned(),
    }
}

/// The environment Lambda gives a function, plus what this project's functions read.
fn environment(name: &str, stub: &str) -> Vec<(String, String)> {
    let env: Vec<(&str, String)> = vec![
        ("AWS_LAMBDA_RUNTIME_API", stub.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("pql-{name}")),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/pql/bench/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".into()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_rust".into()),
        ("AWS_REGION", "eu-west-1".into()),
        ("AWS_DEFAULT_REGION", "eu-west-1".into()),
        ("AWS_ACCESS_KEY_ID", "AKIDBENCHMARKONLY".into()),
        ("AWS_SECRET_ACCESS_KEY", "benchmark-only".into()),
        ("AWS_SESSION_TOKEN", "benchmark-only".into()),
        // Any AWS call goes to the stub (and shows in the report), never to the network.
        ("AWS_ENDPOINT_URL", format!("http://{stub}")),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("TENANTS_TABLE", "bench-TenantsTable".into()),
        ("EVENTS_TABLE", "bench-EventsTable".into()),
        ("STATE_TABLE", "bench-StateTable".into()),
        ("ALERTS_TABLE", "bench-AlertsTable".into()),
        ("EVENT_RETENTION_DAYS", "90".into()),
        // The notify function's settings as the template passes them (empty: not configured).
        ("SLACK_WEBHOOK_URL_PARAMETER", String::new()),
        ("WEBHOOK_SIGNING_SECRET_ARN", String::new()),
        ("ALERT_EMAIL_FROM", String::new()),
    ];
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A function to measure: its name, its `bootstrap`, its environment and its first event.
struct Target {
    name: String,
    bootstrap: PathBuf,
    env: Vec<(String, String)>,
    event: String,
}

#[derive(Default)]
struct Run {
    init: Option<Duration>,
    first: Option<Duration>,
    at_init: Vec<String>,
    in_first: Vec<String>,
    problem: Option<String>,
}

fn drain(seen: &Receiver<(u64, Seen)>) {
    while seen.try_recv().is_ok() {}
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One cold start: start the process, wait for its first poll (init), answer it with the
/// event and wait for the function's answer (first invocation), kill it.
fn run_once(target: &Target, seen: &Receiver<(u64, Seen)>, stub: &Stub) -> Run {
    drain(seen);
    let this_run = stub.start_run(target.event.clone());
    let mut command = Command::new(&target.bootstrap);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut run = Run::default();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            run.problem = Some(format!("cannot start: {e}"));
            return run;
        }
    };
    let deadline = start + Duration::from_secs(10);
    let mut answered: Option<Instant> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let received = match seen.recv_timeout(left.min(Duration::from_millis(50))) {
            Ok((run, _)) if run != this_run => continue,
            other => other.map(|(_, s)| s),
        };
        match received {
            Ok(Seen::Next(at)) => {
                if run.init.is_none() {
                    run.init = Some(at.duration_since(start));
                }
            }
            Ok(Seen::Answered(at)) => answered = Some(at),
            Ok(Seen::Response(at)) => {
                run.first = answered.map(|a| at.saturating_duration_since(a));
                break;
            }
            Ok(Seen::Error(body)) => {
                run.problem = Some(format!("the first invocation failed: {body}"));
                break;
            }
            Ok(Seen::Other(line)) => {
                if run.init.is_none() {
                    run.at_init.push(line);
                } else {
                    run.in_first.push(line);
                }
            }
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    run.problem = Some(match run.init {
                        None => format!("exited before polling: {status}"),
                        Some(_) => format!("exited during the first invocation: {status}"),
                    });
                    break;
                }
                if Instant::now() >= deadline {
                    run.problem = Some(match run.init {
                        None => "no poll within 10 s".to_owned(),
                        Some(_) => "no answer to the first invocation within 10 s".to_owned(),
                    });
                    break;
                }
            }
        }
    }
    kill(child);
    run
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Median, p90 and min of a list of times (`None` when it is empty).
fn stats(list: Option<&Vec<Duration>>) -> Option<(Duration, Duration, Duration)> {
    let mut sorted = list.filter(|l| !l.is_empty())?.clone();
    sorted.sort();
    Some((
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        sorted[0],
    ))
}

fn ratio(value: Option<Duration>, base: Option<Duration>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if !b.is_zero() => format!("{:.2}x", v.as_secs_f64() / b.as_secs_f64()),
        _ => "-".to_owned(),
    }
}

/// Adds `note` to `list` unless it is there already; repeated notes are counted.
fn note(list: &mut Vec<(String, usize)>, note: String) {
    match list.iter_mut().find(|(n, _)| *n == note) {
        Some((_, count)) => *count += 1,
        None => list.push((note, 1)),
    }
}

fn main() {
    let mut runs = 50usize;
    let mut lambda_dir: Option<PathBuf> = None;
    let mut names: Vec<String> = Vec::new();
    let mut extra_env: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .expect("--runs N (N > 0)")
            }
            "--lambda-dir" => lambda_dir = Some(args.next().expect("--lambda-dir DIR").into()),
            "--env" => {
                let pair = args.next().expect("--env NAME=VALUE");
                let (k, v) = pair.split_once('=').expect("--env NAME=VALUE");
                extra_env.push((k.to_owned(), v.to_owned()));
            }
            "-h" | "--help" => {
                println!(
                    "init-time [--runs N] [--lambda-dir DIR] [--env NAME=VALUE ...] [NAME ...]"
                );
                return;
            }
            name => names.push(name.to_owned()),
        }
    }
    let lambda_dir = lambda_dir.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        target.join("lambda")
    });
    if names.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir(&lambda_dir)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("bootstrap").is_file())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found.sort_by_key(|n| n != "hello");
        names = found;
    }
    if names.is_empty() {
        eprintln!(
            "no bootstrap under {}: build first (scripts/lambda-build.sh)",
            lambda_dir.display()
        );
        std::process::exit(2);
    }

    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port for the stub");
    let stub = listener
        .local_addr()
        .expect("the stub's address")
        .to_string();
    let (tx, rx) = channel();
    let stub_state: Arc<Stub> = Arc::default();
    let serving = Arc::clone(&stub_state);
    std::thread::spawn(move || serve(listener, tx, serving));

    let targets: Vec<Target> = names
        .iter()
        .map(|n| Target {
            name: n.clone(),
            bootstrap: lambda_dir.join(n).join("bootstrap"),
            env: environment(n, &stub)
                .into_iter()
                .chain(extra_env.iter().cloned())
                .collect(),
            event: first_event(n),
        })
        .collect();
    // Warm-up (page cache, first exec): 3 unrecorded rounds.
    for _ in 0..3 {
        for target in &targets {
            run_once(target, &rx, &stub_state);
        }
    }
    let mut init: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut first: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut notes: BTreeMap<&str, Vec<(String, usize)>> = BTreeMap::new();
    for _ in 0..runs {
        for target in &targets {
            let name = target.name.as_str();
            let run = run_once(target, &rx, &stub_state);
            if let Some(t) = run.init {
                init.entry(name).or_default().push(t);
            }
            if let Some(t) = run.first {
                first.entry(name).or_default().push(t);
            }
            let list = notes.entry(name).or_default();
            for line in run.at_init {
                note(list, format!("request at init: {line}"));
            }
            for line in run.in_first {
                note(list, format!("request in the first invocation: {line}"));
            }
            if let Some(problem) = run.problem {
                note(list, problem);
            }
        }
    }

    let hello_init = stats(init.get("hello")).map(|s| s.0);
    let hello_first = stats(first.get("hello")).map(|s| s.0);
    println!(
        "init: process start -> first GET {NEXT}; first invocation: the stub's answer to it -> \
         the function's POST .../response ({runs} runs each, interleaved; stub at {stub})\n"
    );
    println!(
        "| function | bootstrap size | runs | init median ms | init p90 ms | init min ms | init / hello \
         | first invocation median ms | p90 ms | first / hello | init + first / hello |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for target in &targets {
        let name = target.name.as_str();
        let size = std::fs::metadata(&target.bootstrap)
            .map(|m| format!("{:.1} MB", m.len() as f64 / 1e6))
            .unwrap_or_else(|_| "-".into());
        let runs = init.get(name).map_or(0, Vec::len);
        let i = stats(init.get(name));
        let f = stats(first.get(name));
        let cell = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), ms);
        let sum = |a: Option<Duration>, b: Option<Duration>| Some(a? + b?);
        println!(
            "| {name} | {size} | {runs} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(i.map(|s| s.0)),
            cell(i.map(|s| s.1)),
            cell(i.map(|s| s.2)),
            ratio(i.map(|s| s.0), hello_init),
            cell(f.map(|s| s.0)),
            cell(f.map(|s| s.1)),
            ratio(f.map(|s| s.0), hello_first),
            ratio(
                sum(i.map(|s| s.0), f.map(|s| s.0)),
                sum(hello_init, hello_first)
            ),
        );
    }
    for (name, list) in &notes {
        for (text, count) in list {
            println!("note: {name}: {text} ({count} times in {runs} runs)");
        }
    }
}
