//! `pql generate`: simulated trial events (JSONL, gzip when the name ends in `.gz`) and the
//! outcomes CSV that goes with them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context};
use flate2::write::GzEncoder;
use flate2::Compression;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pql_engine::Timestamp;
use pql_simulator::{SimConfig, Simulation};

use crate::outcomes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many accounts sign up for a trial.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub accounts: usize,
    /// Days of history.
    #[arg(long, default_value_t = 60, value_name = "D")]
    pub days: u32,
    /// The same seed gives the same data.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    /// First day (UTC), e.g. 2026-01-05.
    #[arg(long, default_value = "2026-01-05", value_name = "DATE", value_parser = parse_start)]
    pub start: Timestamp,
    /// Where to write the events, one Segment call per line; gzip when it ends in `.gz`.
    #[arg(long, value_name = "OUT.jsonl[.gz]")]
    pub events: PathBuf,
    /// Where to write who bought and when: `account_id,converted_at`.
    #[arg(long, value_name = "OUT.csv")]
    pub outcomes: Option<PathBuf>,
}

fn parse_start(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).map_err(|e| e.to_string())
}

/// The events file: plain or gzip-compressed.
enum Sink {
    Plain(BufWriter<File>),
    Gzip(Box<GzEncoder<BufWriter<File>>>),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(bytes),
            Sink::Gzip(w) => w.write_all(bytes),
        }
    }

    /// Flushes everything (and writes the gzip trailer), reporting any error.
    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Plain(mut w) => w.flush(),
            Sink::Gzip(w) => w.finish()?.flush(),
        }
    }
}

type Writer = (
    mpsc::SyncSender<Vec<u8>>,
    thread::JoinHandle<io::Result<u64>>,
);

/// Days are written by a second thread (compression is the slow part), a day at a time.
fn writer_thread(path: &Path, gzip: bool) -> anyhow::Result<Writer> {
    let file = File::create(path)
        .with_context(|| format!("cannot create events file {}", path.display()))?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(2);
    let handle = thread::spawn(move || -> io::Result<u64> {
        let file = BufWriter::with_capacity(1 << 20, file);
        let mut sink = if gzip {
            Sink::Gzip(Box::new(GzEncoder::new(file, Compression::default())))
        } else {
            Sink::Plain(file)
        };
        let mut bytes = 0;
        for chunk in rx {
            sink.write_all(&chunk)?;
            bytes += chunk.len() as u64;
        }
        sink.finish()?;
        Ok(bytes)
    });
    Ok((tx, handle))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    if args.days == 0 || args.days > 3650 {
        bail!("--days must be between 1 and 3650 (got {})", args.days);
    }
    let started = Instant::now();
    let sim = Simulation::new(SimConfig {
        accounts: args.accounts,
        days: args.days,
        start: args.start,
        seed: args.seed,
    });
    let gzip = args
        .events
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let events_name = args.events.display().to_string();
    let (tx, handle) = writer_thread(&args.events, gzip)?;

    let progress =
        ProgressBar::with_draw_target(Some(u64::from(args.days)), ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template("generating day {pos}/{len} [{bar:32}] {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut events: u64 = 0;
    for day in 0..args.days {
        let calls = sim.day(day);
        let mut chunk = Vec::with_capacity(calls.len() * 700);
        for call in &calls {
            serde_json::to_writer(&mut chunk, call).expect("JSON values always serialise");
            chunk.push(b'\n');
        }
        events += calls.len() as u64;
        if tx.send(chunk).is_err() {
            break; // the writer failed: its error is reported below
        }
        progress.inc(1);
        progress.set_message(format!("{events} events"));
    }
    drop(tx);
    progress.finish_and_clear();
    let bytes = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
        .with_context(|| format!("cannot write events file {events_name}"))?;

    let outcomes = sim.outcomes();
    let converted = outcomes.iter().filter(|(_, c)| c.is_some()).count();
    if let Some(path) = &args.outcomes {
        outcomes::write(path, &outcomes)?;
    }
    eprintln!(
        "wrote {events} events ({:.1} MB of JSON{}) for {} accounts over {} days to {events_name}; \
         {converted} accounts converted{} ({:.2} s)",
        bytes as f64 / 1e6,
        if gzip { ", gzip-compressed" } else { "" },
        args.accounts,
        args.days,
        args.outcomes
            .as_ref()
            .map_or_else(String::new, |p| format!(", outcomes in {}", p.display())),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
