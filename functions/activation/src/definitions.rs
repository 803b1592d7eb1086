//! Tenants' active definitions, cached for a short time in the warm Lambda: one `GetItem` per
//! tenant and TTL instead of one per event. A changed definition takes effect within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pql_engine::Definition;
use pql_store::tenants::TenantId;
use pql_store::Store;

use crate::ActivationError;

/// How long a definition read from the tenants table is used before it is read again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct DefinitionCache {
    ttl: Duration,
    entries: Mutex<HashMap<TenantId, (Instant, Arc<Definition>)>>,
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

    /// The tenant's active definition, from the cache while it is fresh.
    pub async fn get(
        &self,
        store: &Store,
        tenant: &TenantId,
    ) -> Result<Arc<Definition>, ActivationError> {
        if let Some((at, definition)) = self.lock().get(tenant) {
            if at.elapsed() < self.ttl {
                return Ok(definition.clone());
            }
        }
        let definition = store
            .tenant_definition(tenant)
            .await?
            .map(Arc::new)
            .ok_or_else(|| ActivationError::UnknownTenant(tenant.to_string()))?;
        self.lock()
            .insert(tenant.clone(), (Instant::now(), definition.clone()));
        Ok(definition)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (Instant, Arc<Definition>)>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
