//! One shard: read in order, batch, invoke, checkpoint, retry, bisect, park.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_dynamodbstreams::Client;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::convert::lambda_record;
use crate::{
    error_message, DynamoDbEventResponse, HandlerError, MappingConfig, Parked, PumpStats,
    StreamHandler,
};

/// `GetRecords` returns at most 1,000 records.
const READ_LIMIT: i32 = 1000;

pub(crate) struct Context<H> {
    pub streams: Client,
    pub stream_arn: String,
    pub config: MappingConfig,
    pub handler: Arc<H>,
    pub parked: mpsc::Sender<Parked>,
    pub stats: Arc<Mutex<PumpStats>>,
}

impl<H> Context<H> {
    fn count(&self, update: impl FnOnce(&mut PumpStats)) {
        update(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The next batch to deliver: the first `len` pending records.
#[derive(Debug)]
struct Batch {
    len: usize,
    /// Failed invocations with these records since they became this batch.
    failures: u32,
    /// These records were in a failed invocation before.
    retry: bool,
    last_error: String,
}

impl Batch {
    fn new(len: usize) -> Self {
        Batch {
            len,
            failures: 0,
            retry: false,
            last_error: String::new(),
        }
    }
}

enum Outcome {
    Success,
    /// The first `done` records succeeded; the rest failed.
    Failed {
        done: usize,
        error: String,
        function_error: bool,
    },
}

/// The shard was left because the pump is shutting down.
struct Cancelled;

pub(crate) struct Worker<H> {
    ctx: Arc<Context<H>>,
    shard_id: String,
    iterator: Option<String>,
    /// `GetRecords` returned no next iterator: every record of the shard has been read.
    closed: bool,
    /// The sequence number of the last record read (filtered ones included).
    last_read: Option<String>,
    /// Started at `LATEST` and nothing read yet: a lost iterator is taken at `LATEST` again.
    at_latest: bool,
    /// Read, not yet checkpointed, in order.
    pending: VecDeque<EventRecord>,
    /// Batches to deliver before a new one is cut (the halves of a bisected batch).
    plan: VecDeque<Batch>,
}

impl<H: StreamHandler> Worker<H> {
    pub fn new(ctx: Arc<Context<H>>, shard_id: String, latest: Option<String>) -> Self {
        Worker {
            ctx,
            shard_id,
            at_latest: latest.is_some(),
            iterator: latest,
            closed: false,
            last_read: None,
            pending: VecDeque::new(),
            plan: VecDeque::new(),
        }
    }

    /// Returns `true` when the shard is closed and every record of it is checkpointed,
    /// `false` on shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) -> bool {
        self.process(&shutdown).await.is_ok()
    }

    async fn process(&mut self, shutdown: &CancellationToken) -> Result<(), Cancelled> {
        let config = self.ctx.config.clone();
        loop {
            if shutdown.is_cancelled() {
                return Err(Cancelled);
            }
            if self.plan.is_empty() {
                self.fill(shutdown).await?;
                if self.pending.is_empty() {
                    if self.closed {
                        return Ok(());
                    }
                    sleep(config.poll_interval, shutdown).await?;
                    continue;
                }
                let len = config.batch_size.min(self.pending.len());
                self.plan.push_back(Batch::new(len));
            }
            self.deliver(shutdown).await?;
        }
    }

    /// Reads until a batch is full or the batching window has passed (one read without a
    /// window).
    async fn fill(&mut self, shutdown: &CancellationToken) -> Result<(), Cancelled> {
        let config = &self.ctx.config;
        let (batch_size, window, poll) = (
            config.batch_size,
            config.batching_window,
            config.poll_interval,
        );
        if self.pending.len() < batch_size && !self.closed {
            self.read(shutdown).await?;
        }
        if window.is_zero() || self.pending.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + window;
        while self.pending.len() < batch_size && !self.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            sleep(poll.min(deadline - now), shutdown).await?;
            self.read(shutdown).await?;
        }
        Ok(())
    }

    /// One `GetRecords` call (after taking an iterator if needed).
    async fn read(&mut self, shutdown: &CancellationToken) -> Result<(), Cancelled> {
        if self.closed {
            return Ok(());
        }
        if self.iterator.is_none() {
            self.position(shutdown).await?;
        }
        let Some(iterator) = self.iterator.take() else {
            return Ok(());
        };
        let ctx = self.ctx.clone();
        let call = ctx
            .streams
            .get_records()
            .shard_iterator(&iterator)
            .limit(READ_LIMIT)
            .send();
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Err(Cancelled),
            result = call => result,
        };
        match result {
            Ok(out) => {
                let mut filtered = 0;
                for record in out.records.unwrap_or_default() {
                    let record = lambda_record(record, &ctx.stream_arn);
                    if let Some(sequence) = &record.change.sequence_number {
                        self.last_read = Some(sequence.clone());
                        self.at_latest = false;
                    }
                    match &ctx.config.filter {
                        Some(filter) if !filter.matches(&record) => filtered += 1,
                        _ => self.pending.push_back(record),
                    }
                }
                if filtered > 0 {
                    ctx.count(|s| s.records_filtered += filtered);
                }
                match out.next_shard_iterator {
                    Some(next) => self.iterator = Some(next),
                    None => self.closed = true,
                }
            }
            Err(error) => {
                let service = error.as_service_error();
                if service.is_some_and(|e| e.is_expired_iterator_exception()) {
                    tracing::debug!(
                        shard_id = self.shard_id,
                        "shard iterator expired; renewing it"
                    );
                } else if service.is_some_and(|e| e.is_trimmed_data_access_exception()) {
                    tracing::warn!(
                        shard_id = self.shard_id,
                        "records past the stream's retention were trimmed before they were read; \
                         continuing at the oldest record left"
                    );
                    self.last_read = None;
                    self.at_latest = false;
                } else if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                    tracing::warn!(shard_id = self.shard_id, "the shard is gone; leaving it");
                    self.closed = true;
                } else {
                    // Throttling, a server error, or an iterator DynamoDB Local no longer
                    // accepts (it answers `ValidationException: Invalid ShardIterator`): a new
                    // iterator after the last record read loses nothing.
                    tracing::warn!(
                        shard_id = self.shard_id,
                        error = error_message(&error),
                        "GetRecords failed; retrying with a new iterator"
                    );
                    sleep(ctx.config.poll_interval, shutdown).await?;
                }
            }
        }
        Ok(())
    }

    /// Takes an iterator: after the last record read, else at the shard's start (or at
    /// `LATEST` for a shard the pump started at `LATEST` and has read nothing from).
    async fn position(&mut self, shutdown: &CancellationToken) -> Result<(), Cancelled> {
        let ctx = self.ctx.clone();
        loop {
            let request = ctx
                .streams
                .get_shard_iterator()
                .stream_arn(&ctx.stream_arn)
                .shard_id(&self.shard_id);
            let request = match (&self.last_read, self.at_latest) {
                (Some(sequence), _) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(sequence),
                (None, true) => request.shard_iterator_type(ShardIteratorType::Latest),
                (None, false) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(Cancelled),
                result = request.send() => result,
            };
            match result {
                Ok(out) => {
                    match out.shard_iterator {
                        Some(iterator) => self.iterator = Some(iterator),
                        None => self.closed = true,
                    }
                    return Ok(());
                }
                Err(error) => {
                    let service = error.as_service_error();
                    if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                        tracing::warn!(shard_id = self.shard_id, "the shard is gone; leaving it");
                        self.closed = true;
                        return Ok(());
                    }
                    if service.is_some_and(|e| e.is_trimmed_data_access_exception()) {
                        tracing::warn!(
                            shard_id = self.shard_id,
                            "the checkpoint is past the stream's retention; continuing at the \
                             oldest record left"
                        );
                        self.last_read = None;
                        self.at_latest = false;
                        continue;
                    }
                    tracing::warn!(
                        shard_id = self.shard_id,
                        error = error_message(&error),
                        "GetShardIterator failed; retrying"
                    );
                    sleep(ctx.config.poll_interval, shutdown).await?;
                }
            }
        }
    }

    /// Invokes the handler with the planned batch and applies the outcome.
    async fn deliver(&mut self, shutdown: &CancellationToken) -> Result<(), Cancelled> {
        let ctx = self.ctx.clone();
        let config = &ctx.config;
        let (len, retry) = {
            let batch = self.plan.front().expect("a planned batch");
            (batch.len, batch.retry)
        };
        let mut event = Event::default();
        event.records = self.pending.iter().take(len).cloned().collect();
        let sequence_numbers: Vec<Option<String>> = event
            .records
            .iter()
            .map(|r| r.change.sequence_number.clone())
            .collect();
        ctx.count(|s| {
            s.invocations += 1;
            s.retries += u64::from(retry);
        });
        let invocation = AssertUnwindSafe(ctx.handler.handle(event)).catch_unwind();
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Err(Cancelled),
            result = invocation => result,
        };
        let outcome = classify(result, &sequence_numbers, config.report_batch_item_failures);
        let (done, error, function_error) = match outcome {
            Outcome::Success => {
                self.checkpoint(len);
                self.plan.pop_front();
                return Ok(());
            }
            Outcome::Failed {
                done,
                error,
                function_error,
            } => (done, error, function_error),
        };
        ctx.count(|s| s.failed_invocations += 1);
        self.checkpoint(done);
        let rest = len - done;
        let batch = self.plan.front_mut().expect("a planned batch");
        batch.len = rest;
        if function_error && config.bisect_batch_on_function_error && rest > 1 {
            tracing::warn!(
                shard_id = self.shard_id,
                error,
                records = rest,
                "batch failed; bisecting it"
            );
            self.plan.pop_front();
            let first = rest.div_ceil(2);
            for len in [rest - first, first] {
                let mut half = Batch::new(len);
                half.retry = true;
                half.last_error.clone_from(&error);
                self.plan.push_front(half);
            }
        } else {
            batch.failures += 1;
            batch.retry = true;
            batch.last_error = error;
            if batch.failures > config.maximum_retry_attempts {
                let Batch {
                    failures,
                    last_error,
                    ..
                } = self.plan.pop_front().expect("a planned batch");
                return self.park(rest, last_error, failures, shutdown).await;
            }
            tracing::warn!(
                shard_id = self.shard_id,
                error = batch.last_error,
                attempt = batch.failures,
                records = rest,
                "batch failed; retrying it"
            );
        }
        sleep(config.retry_delay, shutdown).await
    }

    /// The first `n` pending records are processed.
    fn checkpoint(&mut self, n: usize) {
        self.pending.drain(..n);
        if n > 0 {
            self.ctx.count(|s| s.records_delivered += n as u64);
        }
    }

    /// Gives up on the first `n` pending records: off to the on-failure destination.
    async fn park(
        &mut self,
        n: usize,
        error: String,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Result<(), Cancelled> {
        let records: Vec<EventRecord> = self.pending.drain(..n).collect();
        tracing::warn!(
            shard_id = self.shard_id,
            records = n,
            first_sequence_number = records
                .first()
                .and_then(|r| r.change.sequence_number.as_deref()),
            attempts,
            error,
            "giving up on records after the last retry; parking them"
        );
        self.ctx.count(|s| {
            s.records_parked += n as u64;
            s.batches_parked += 1;
        });
        let parked = Parked {
            stream_arn: self.ctx.stream_arn.clone(),
            shard_id: self.shard_id.clone(),
            records,
            error,
            attempts,
        };
        let sent = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Err(Cancelled),
            sent = self.ctx.parked.send(parked) => sent,
        };
        if sent.is_err() {
            tracing::warn!(
                shard_id = self.shard_id,
                "nobody receives parked records; they are dropped"
            );
        }
        Ok(())
    }
}

/// What an invocation's result means for the batch, as Lambda reads it.
fn classify(
    result: std::thread::Result<Result<DynamoDbEventResponse, HandlerError>>,
    sequence_numbers: &[Option<String>],
    report_batch_item_failures: bool,
) -> Outcome {
    let function_error = |error: String| Outcome::Failed {
        done: 0,
        error,
        function_error: true,
    };
    let response = match result {
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return function_error(format!("the handler panicked: {message}"));
        }
        Ok(Err(error)) => return function_error(error_message(&*error)),
        Ok(Ok(response)) => response,
    };
    if !report_batch_item_failures || response.batch_item_failures.is_empty() {
        return Outcome::Success;
    }
    let mut lowest: Option<usize> = None;
    for failure in &response.batch_item_failures {
        let identifier = failure.item_identifier.as_deref().unwrap_or_default();
        if identifier.is_empty() {
            return function_error(
                "partial batch response with an empty itemIdentifier: the whole batch failed"
                    .into(),
            );
        }
        let position = sequence_numbers
            .iter()
            .position(|s| s.as_deref() == Some(identifier));
        match position {
            Some(i) => lowest = Some(lowest.map_or(i, |l| l.min(i))),
            None => {
                return function_error(format!(
                    "partial batch response names {identifier:?}, not a sequence number of the \
                     batch: the whole batch failed"
                ))
            }
        }
    }
    let done = lowest.unwrap_or_default();
    Outcome::Failed {
        done,
        error: format!(
            "the handler reported a failure at sequence number {}",
            sequence_numbers[done].as_deref().unwrap_or_default()
        ),
        function_error: false,
    }
}

/// Sleeps, unless the pump shuts down first.
async fn sleep(duration: Duration, shutdown: &CancellationToken) -> Result<(), Cancelled> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Err(Cancelled),
        () = tokio::time::sleep(duration) => Ok(()),
    }
}
