//! The narrow view of the store the function needs, so tests and benchmarks can put another
//! sink (failing, in memory, no-op) behind the same handler.

use std::future::Future;

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

impl EventSink for Store {
    async fn tenant_for_write_key(&self, raw_key: &str) -> Result<Option<TenantId>, StoreError> {
        Store::tenant_for_write_key(self, raw_key).await
    }

    async fn put_events(
        &self,
        tenant: &TenantId,
        events: &[Event],
        retention_days: u32,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let outcomes = Store::put_events(self, tenant, events, retention_days).await?;
        Ok(outcomes
            .into_iter()
            .map(|(outcome, _units)| outcome)
            .collect())
    }
}
