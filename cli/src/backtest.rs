//! `pql backtest`: recorded events → ledger → per-account results, summary and accuracy.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::ProgressBar;
use pql_engine::backtest::{accuracy, results, summarize};
use pql_engine::event::{parse_payload, EventError};
use pql_engine::{Event, Ledger, Timestamp};
use serde::Serialize;

use crate::input::Lines;
use crate::report::{self, Format, Report};
use crate::report_html;
use crate::{outcomes, validate};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The definition to test (TOML, or JSON by extension).
    #[arg(long, value_name = "FILE")]
    pub definition: PathBuf,
    /// Segment calls, one JSON object (a call or a `{"batch": [...]}`) per line; plain or
    /// gzip-compressed.
    #[arg(long, value_name = "FILE.jsonl[.gz]")]
    pub events: PathBuf,
    /// Known outcomes, CSV with the header `account_id,converted_at` (empty: did not
    /// convert): adds precision, recall and lift.
    #[arg(long, value_name = "FILE.csv")]
    pub outcomes: Option<PathBuf>,
    /// Evaluate as of this time (ISO-8601, e.g. 2026-02-15T00:00:00Z or 2026-02-15); later
    /// events are left out. Default: the time of the latest event.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub as_of: Option<Timestamp>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// List every account in the table, not only the qualified ones.
    #[arg(long)]
    pub all: bool,
    /// Also write a self-contained HTML page with charts (funnel, time to PQL, scores with the
    /// thresholds, precision and recall by threshold with --outcomes).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// A second definition, replayed over the same events and shown beside the first in the
    /// HTML report.
    #[arg(long, value_name = "FILE", requires = "report")]
    pub compare: Option<PathBuf>,
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).map_err(|e| e.to_string())
}

/// What was read, for the summary line and the JSON output.
#[derive(Debug, Default, Serialize)]
pub struct InputStats {
    pub lines: u64,
    pub blank_lines: u64,
    /// Accepted calls, including those after the as-of time.
    pub events: u64,
    /// Lines that were not a usable payload at all (invalid JSON, not an object, ...).
    pub bad_lines: u64,
    /// Calls rejected one by one (a bad call, or a bad item in a batch).
    pub rejected: u64,
    /// Accepted calls later than the as-of time: not applied.
    pub after_as_of: u64,
    pub bad_lines_by_reason: BTreeMap<&'static str, u64>,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
}

impl InputStats {
    fn summary_line(&self, as_of_given: bool) -> String {
        let mut line = format!(
            "read {} lines: {} events, {} bad line{}",
            self.lines,
            self.events,
            self.bad_lines,
            plural(self.bad_lines)
        );
        line += &reasons(&self.bad_lines_by_reason);
        line += &format!(", {} rejected call{}", self.rejected, plural(self.rejected));
        line += &reasons(&self.rejected_by_reason);
        if as_of_given {
            line += &format!(
                ", {} event{} after --as-of left out",
                self.after_as_of,
                plural(self.after_as_of)
            );
        }
        line
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn reasons(by: &BTreeMap<&'static str, u64>) -> String {
    if by.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by.iter().map(|(code, n)| format!("{code}: {n}")).collect();
    format!(" ({})", parts.join(", "))
}

/// Prints the first problems in full and counts the rest.
struct Problems {
    progress: ProgressBar,
    shown: usize,
    hidden: usize,
}

impl Problems {
    const LIMIT: usize = 20;

    fn report(&mut self, message: impl FnOnce() -> String) {
        if self.shown < Self::LIMIT {
            self.shown += 1;
            let message = message();
            self.progress.suspend(|| eprintln!("{message}"));
        } else {
            self.hidden += 1;
        }
    }
}

/// One input line's worth of results, in file order.
// Nearly every line is an event: boxing it to shrink the rare error variants would cost an
// allocation per event. (Whether the lint fires depends on serde_json features other
// workspace crates enable, so `allow`, not `expect`.)
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Event(Event),
    Blank,
    BadLine {
        line: u64,
        error: EventError,
    },
    Rejected {
        line: u64,
        /// 1-based position in the batch, for batch envelopes.
        item: Option<usize>,
        error: EventError,
    },
}

/// Lines handed from the reader thread to the ledger in one go.
const CHUNK_LINES: u64 = 2048;

/// Parsed results of consecutive lines.
#[derive(Default)]
struct Chunk {
    lines: u64,
    items: Vec<Parsed>,
}

/// The reader thread: chunks of parsed lines in file order come out of `chunks`; chunks the
/// ledger is done with go back through `spent`, to be freed on the reader's side.
struct Reader {
    chunks: mpsc::Receiver<anyhow::Result<Chunk>>,
    spent: mpsc::Sender<Chunk>,
    handle: thread::JoinHandle<()>,
}

/// Reads and parses the events on a second thread (decompressing and parsing JSON is most of
/// the work, and freeing the parsed events is not nothing), sending chunks of parsed lines in
/// file order. A read error ends the stream.
fn spawn_reader(mut lines: Lines, name: String) -> Reader {
    let (tx, chunks) = mpsc::sync_channel(4);
    let (spent, spent_rx) = mpsc::channel::<Chunk>();
    let handle = thread::spawn(move || {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = Chunk::default();
        loop {
            match lines.next_line(&mut buf) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let _ = tx.send(Ok(std::mem::take(&mut chunk)));
                    let error = anyhow::Error::new(e).context(format!(
                        "cannot read events file {name} after line {}{}",
                        lines.line_number(),
                        if lines.is_gzip() {
                            " (gzip stream)"
                        } else {
                            ""
                        }
                    ));
                    let _ = tx.send(Err(error));
                    return;
                }
            }
            parse_line(&buf, lines.line_number(), &mut chunk.items);
            chunk.lines += 1;
            if chunk.lines == CHUNK_LINES {
                if tx.send(Ok(std::mem::take(&mut chunk))).is_err() {
                    return; // the receiver is gone
                }
                while let Ok(done) = spent_rx.try_recv() {
                    drop(done);
                }
            }
        }
        let _ = tx.send(Ok(chunk));
    });
    Reader {
        chunks,
        spent,
        handle,
    }
}

fn parse_line(buf: &[u8], line: u64, out: &mut Vec<Parsed>) {
    if buf.trim_ascii().is_empty() {
        out.push(Parsed::Blank);
        return;
    }
    let items = match parse_payload(buf, None) {
        Ok(items) => items,
        Err(error) => {
            out.push(Parsed::BadLine { line, error });
            return;
        }
    };
    let batch = items.len() > 1;
    for (index, item) in items.into_iter().enumerate() {
        out.push(match item {
            Ok(event) => Parsed::Event(event),
            Err(error) => Parsed::Rejected {
                line,
                // Only on the error path: is this a one-item batch or a single call?
                item: (batch || is_batch(buf)).then_some(index + 1),
                error,
            },
        });
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let definition = validate::load(&args.definition)?;
    let compare = args.compare.as_deref().map(validate::load).transpose()?;
    if let Some(path) = &args.report {
        if path.is_dir() {
            anyhow::bail!(
                "--report {} is a directory (allowed: a file name, e.g. report.html)",
                path.display()
            );
        }
    }
    // Outcomes are checked before the (long) read of the events.
    let outcomes = args.outcomes.as_deref().map(outcomes::read).transpose()?;
    if let (Some(o), Some(path)) = (&outcomes, &args.outcomes) {
        eprintln!(
            "read {}: {} accounts, {} converted",
            path.display(),
            o.rows,
            o.conversions.len()
        );
    }

    let started = Instant::now();
    let events_name = args.events.display().to_string();
    let lines = Lines::open(&args.events)?;
    let progress = lines.progress();
    let reader = spawn_reader(lines, events_name.clone());

    let mut ledger = Ledger::new(&definition);
    let mut compare_ledger = compare.as_ref().map(Ledger::new);
    let mut stats = InputStats::default();
    let mut problems = Problems {
        progress: progress.clone(),
        shown: 0,
        hidden: 0,
    };
    let mut latest: Option<Timestamp> = None;
    let mut engine_time = Duration::ZERO;
    for chunk in &reader.chunks {
        let chunk = chunk?;
        stats.lines += chunk.lines;
        for parsed in &chunk.items {
            match parsed {
                Parsed::Event(event) => {
                    stats.events += 1;
                    if args.as_of.is_some_and(|as_of| event.timestamp > as_of) {
                        stats.after_as_of += 1;
                        continue;
                    }
                    latest = Some(latest.map_or(event.timestamp, |l| l.max(event.timestamp)));
                    let t = Instant::now();
                    ledger.ingest(event);
                    engine_time += t.elapsed();
                    if let Some(other) = compare_ledger.as_mut() {
                        other.ingest(event);
                    }
                }
                Parsed::Blank => stats.blank_lines += 1,
                Parsed::BadLine { line, error } => {
                    stats.bad_lines += 1;
                    *stats.bad_lines_by_reason.entry(error.code()).or_default() += 1;
                    problems.report(|| {
                        format!("{events_name}:{line}: bad line ({}): {error}", error.code())
                    });
                }
                Parsed::Rejected { line, item, error } => {
                    stats.rejected += 1;
                    *stats.rejected_by_reason.entry(error.code()).or_default() += 1;
                    problems.report(|| rejected(&events_name, *line, *item, error));
                }
            }
        }
        // Freed by the reader thread (if it is still running), off this busy one.
        let _ = reader.spent.send(chunk);
    }
    reader
        .handle
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    progress.finish_and_clear();
    if problems.hidden > 0 {
        eprintln!(
            "... and {} more problems not shown (the counts below include them)",
            problems.hidden
        );
    }
    eprintln!("{}", stats.summary_line(args.as_of.is_some()));

    let as_of = args.as_of.or(latest);
    let results = results(&ledger, as_of.unwrap_or(Timestamp(0)));
    let summary = summarize(&results);
    let accuracy = outcomes
        .as_ref()
        .map(|o| accuracy(&results, &o.conversions));
    let elapsed = started.elapsed();

    let report = Report {
        definition: &definition,
        as_of,
        input: &stats,
        results: &results,
        summary: &summary,
        accuracy: accuracy.as_ref(),
        all: args.all,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    report::write(&mut out, &report, args.format)
        .and_then(|()| out.flush())
        .or_else(ignore_broken_pipe)
        .context("cannot write the report to standard output")?;

    eprintln!(
        "{}",
        timing(stats.events - stats.after_as_of, elapsed, engine_time)
    );

    if let Some(path) = &args.report {
        let mut sides = vec![report_html::Side {
            definition: &definition,
            results: &results,
            summary: &summary,
            accuracy: accuracy.as_ref(),
        }];
        let other = compare_ledger.as_ref().map(|l| {
            let results = pql_engine::backtest::results(l, as_of.unwrap_or(Timestamp(0)));
            let summary = summarize(&results);
            let accuracy = outcomes
                .as_ref()
                .map(|o| pql_engine::backtest::accuracy(&results, &o.conversions));
            (results, summary, accuracy)
        });
        if let (Some(d), Some((results, summary, accuracy))) = (&compare, &other) {
            sides.push(report_html::Side {
                definition: d,
                results,
                summary,
                accuracy: accuracy.as_ref(),
            });
        }
        let page = report_html::Page {
            events_file: &events_name,
            events: stats.events - stats.after_as_of,
            as_of,
            sides,
            conversions: outcomes.as_ref().map(|o| &o.conversions),
        };
        std::fs::write(path, report_html::render(&page))
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    Ok(())
}

/// `pql backtest ... | head` closing the pipe early is not an error.
fn ignore_broken_pipe(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

fn is_batch(line: &[u8]) -> bool {
    line.windows(7).any(|w| w == b"\"batch\"")
}

fn rejected(file: &str, line: u64, item: Option<usize>, e: &EventError) -> String {
    if let Some(item) = item {
        format!(
            "{file}:{line}: batch item {item}: rejected call ({}): {e}",
            e.code()
        )
    } else {
        format!("{file}:{line}: rejected call ({}): {e}", e.code())
    }
}

fn timing(events: u64, elapsed: Duration, engine: Duration) -> String {
    let rate = |d: Duration| {
        let s = d.as_secs_f64();
        if s > 0.0 {
            format!("{:.0}", events as f64 / s)
        } else {
            "-".to_owned()
        }
    };
    format!(
        "backtest: {events} events in {:.2} s ({} events/s; engine alone {:.2} s, {} events/s)",
        elapsed.as_secs_f64(),
        rate(elapsed),
        engine.as_secs_f64(),
        rate(engine)
    )
}
