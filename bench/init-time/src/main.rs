//! Init time of the Lambda functions: from process start to the function's first request to
//! the Lambda Runtime API (`GET /2018-06-01/runtime/invocation/next`), which is where Lambda's
//! init phase ends. Each `bootstrap` runs against a local stub of that API, with the
//! environment Lambda gives it (dummy credentials, a region, the table names) and every AWS
//! endpoint pointed at the stub, so nothing leaves the machine; any request the stub gets
//! before the first poll is work done at init and is reported.
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
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// What the stub saw: when, and the request line.
struct Seen {
    at: Instant,
    line: String,
}

const NEXT: &str = "/2018-06-01/runtime/invocation/next";

/// The stub: every connection on its own thread; the request line of each request goes to the
/// driver. `invocation/next` is never answered (the run ends there); anything else gets a 500,
/// which an SDK call made at init would see as a failure (and the report lists it).
fn serve(listener: TcpListener, seen: Sender<Seen>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let seen = seen.clone();
        std::thread::spawn(move || handle(stream, seen));
    }
}

fn handle(stream: TcpStream, seen: Sender<Seen>) {
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
        // The headers; a body (an SDK call) is not read: the connection is closed after the
        // answer.
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header.trim() != "" {
            header.clear();
        }
        let is_next = line.contains(NEXT);
        if seen.send(Seen { at, line }).is_err() {
            return;
        }
        if is_next {
            // Hold the poll open until the driver kills the process.
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
            return;
        }
        let _ = writer.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
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

/// A function to measure: its name, its `bootstrap` and its environment.
type Target = (String, PathBuf, Vec<(String, String)>);

struct Run {
    init: Option<Duration>,
    other_requests: Vec<String>,
    exited: Option<String>,
}

fn drain(seen: &Receiver<Seen>) {
    while seen.try_recv().is_ok() {}
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn run_once(bootstrap: &Path, env: &[(String, String)], seen: &Receiver<Seen>) -> Run {
    drain(seen);
    let mut command = Command::new(bootstrap);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Run {
                init: None,
                other_requests: Vec::new(),
                exited: Some(format!("cannot start: {e}")),
            }
        }
    };
    let deadline = start + Duration::from_secs(10);
    let mut other = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left.min(Duration::from_millis(50))) {
            Ok(s) if s.line.contains(NEXT) => {
                kill(child);
                return Run {
                    init: Some(s.at.duration_since(start)),
                    other_requests: other,
                    exited: None,
                };
            }
            Ok(s) => other.push(s.line),
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Run {
                        init: None,
                        other_requests: other,
                        exited: Some(format!("exited before polling: {status}")),
                    };
                }
                if Instant::now() >= deadline {
                    kill(child);
                    return Run {
                        init: None,
                        other_requests: other,
                        exited: Some("no poll within 10 s".into()),
                    };
                }
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
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
    std::thread::spawn(move || serve(listener, tx));

    let targets: Vec<Target> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                lambda_dir.join(n).join("bootstrap"),
                environment(n, &stub)
                    .into_iter()
                    .chain(extra_env.iter().cloned())
                    .collect(),
            )
        })
        .collect();
    // Warm-up (page cache, first exec): 3 unrecorded rounds.
    for _ in 0..3 {
        for (_, bootstrap, env) in &targets {
            run_once(bootstrap, env, &rx);
        }
    }
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut problems: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for _ in 0..runs {
        for (name, bootstrap, env) in &targets {
            let run = run_once(bootstrap, env, &rx);
            if let Some(t) = run.init {
                times.entry(name).or_default().push(t);
            }
            let list = problems.entry(name).or_default();
            for line in run.other_requests {
                let note = format!("request at init: {line}");
                if !list.contains(&note) {
                    list.push(note);
                }
            }
            if let Some(e) = run.exited {
                if !list.contains(&e) {
                    list.push(e);
                }
            }
        }
    }

    let hello_median = times.get("hello").map(|t| {
        let mut t = t.clone();
        t.sort();
        percentile(&t, 50.0)
    });
    println!(
        "init time: process start -> first GET {NEXT} ({runs} runs each, interleaved; stub at {stub})\n"
    );
    println!("| function | runs | median ms | p90 ms | min ms | median / hello | bootstrap size |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, bootstrap, _) in &targets {
        let size = std::fs::metadata(bootstrap)
            .map(|m| format!("{:.1} MB", m.len() as f64 / 1e6))
            .unwrap_or_else(|_| "-".into());
        let Some(list) = times.get(name.as_str()) else {
            println!("| {name} | 0 | - | - | - | - | {size} |");
            continue;
        };
        let mut sorted = list.clone();
        sorted.sort();
        let median = percentile(&sorted, 50.0);
        let ratio = hello_median
            .map(|h| format!("{:.2}x", median.as_secs_f64() / h.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {name} | {} | {} | {} | {} | {ratio} | {size} |",
            sorted.len(),
            ms(median),
            ms(percentile(&sorted, 90.0)),
            ms(sorted[0]),
        );
    }
    for (name, list) in &problems {
        for p in list {
            println!("note: {name}: {p}");
        }
    }
}
