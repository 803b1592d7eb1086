//! The narrow view of the store the function needs, so tests and benchmarks can put another
//! sink (failing, in memory, no-op) behind the same handler.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use pql_engine::Event;
use pql_store::events::PutOutcome;
use pql_store::tenants::TenantId;
use pql_store::{Store, StoreError};

/// Where the function looks up write keys and stores events.
pub trait EventSink: Send + Sync + 'static {
    /// The tenant a write key belongs to; `None` for an unknown key.
    fn tenant_for_write_key(
        &self,
        raw_key: &str,
    ) -> impl Future<Output = Result<Option<TenantId>, StoreError>> + Send;

    /// Stores the events unless the tenant already has their messageId; one outcome per event,
    /// in order. An error means some events may be stored and others not: the client retries.
    fn put_events(
        &self,
        tenant: &TenantId,
        events: &[Event],
        retention_days: u32,
    ) -> impl Future<Output = Result<Vec<PutOutcome>, StoreError>> + Send;
}

/// How many puts of one request are in flight at once (as in `Store::put_events`).
const PUT_CONCURRENCY: usize = 16;

impl EventSink for Store {
    async fn tenant_for_write_key(&self, raw_key: &str) -> Result<Option<TenantId>, StoreError> {
        Store::tenant_for_write_key(self, raw_key).await
    }

    /// `Store::put_events`, driven here with a `FuturesUnordered`: the store's own version
    /// (a `buffer_unordered` over a closure borrowing the events) is a future the compiler
    /// cannot prove `Send` (rust-lang/rust#102211), and the Lambda runtime needs `Send`.
    /// Same behaviour: at most 16 puts in flight, outcomes in input order, the first error
    /// returned once every put has finished.
    async fn put_events(
        &self,
        tenant: &TenantId,
        events: &[Event],
        retention_days: u32,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let mut outcomes = vec![PutOutcome::Stored; events.len()];
        let mut first_error = None;
        let mut pending = events.iter().enumerate();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < PUT_CONCURRENCY {
                let Some((index, event)) = pending.next() else {
                    break;
                };
                in_flight.push(async move {
                    let result = self.put_event(tenant, event, retention_days).await;
                    (index, result)
                });
            }
            match in_flight.next().await {
                None => break,
                Some((index, Ok((outcome, _units)))) => outcomes[index] = outcome,
                Some((_, Err(error))) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(outcomes),
        }
    }
}
