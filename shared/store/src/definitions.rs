//! Each tenant's active definition, cached per Lambda instance for [`DEFAULT_TTL`]: a stream
//! batch touches few tenants, and a definition change takes effect within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tenants::TenantId;
use crate::{Store, StoreError};
use pql_engine::Definition;

pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

type Entry = (Instant, Option<Arc<Definition>>);

/// Definitions by tenant, each read at most once per TTL (a missing tenant too).
#[derive(Debug)]
pub struct DefinitionCache {
    ttl: Duration,
    entries: Mutex<HashMap<TenantId, Entry>>,
}

impl Default for DefinitionCache {
    fn default() -> Self {
        DefinitionCache::new(DEFAULT_TTL)
    }
}

impl DefinitionCache {
    pub fn new(ttl: Duration) -> Self {
        DefinitionCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's active definition (`None`: no such tenant).
    pub async fn get(
        &self,
        store: &Store,
        tenant: &TenantId,
    ) -> Result<Option<Arc<Definition>>, StoreError> {
        if let Some((read_at, definition)) = self.lock().get(tenant) {
            if read_at.elapsed() < self.ttl {
                return Ok(definition.clone());
            }
        }
        let definition = store.tenant_definition(tenant).await?.map(Arc::new);
        self.lock()
            .insert(tenant.clone(), (Instant::now(), definition.clone()));
        Ok(definition)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent: use it anyway.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
