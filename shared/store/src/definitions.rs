//! Each tenant's active definition, cached per Lambda instance for [`DEFAULT_TTL`]: a stream
//! batch touches few tenants, and a definition change takes effect within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tenants::TenantId;
use crate::{Store, StoreError};
use pql_engine::{Definition, StateMap};

pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// How old a cached definition must be for [`DefinitionCache::refresh`] to read it again.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

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
        if let Some(definition) = self.cached(tenant, self.ttl) {
            return Ok(definition);
        }
        Ok(self.remember(tenant, store.tenant_definition(tenant).await?))
    }

    /// The tenant's active definition read again unless it was read within the last
    /// [`MIN_REFRESH`]: for a state that follows another version than the cached one, which
    /// may be the version activated since the cache read it (the cache must not send such a
    /// state back to the version it replaced).
    pub async fn refresh(
        &self,
        store: &Store,
        tenant: &TenantId,
    ) -> Result<Option<Arc<Definition>>, StoreError> {
        if let Some(definition) = self.cached(tenant, MIN_REFRESH) {
            return Ok(definition);
        }
        Ok(self.remember(tenant, store.tenant_definition(tenant).await?))
    }

    /// What the cache holds for the tenant if it was read within `max_age`. (`get` and
    /// `refresh` read the store themselves rather than through one shared async helper: the
    /// stream handlers' futures are already nested about as deep as the compiler's default
    /// limit allows.)
    fn cached(&self, tenant: &TenantId, max_age: Duration) -> Option<Option<Arc<Definition>>> {
        let entries = lock(&self.entries);
        let (read_at, definition) = entries.get(tenant)?;
        (read_at.elapsed() < max_age).then(|| definition.clone())
    }

    fn remember(
        &self,
        tenant: &TenantId,
        definition: Option<Definition>,
    ) -> Option<Arc<Definition>> {
        let definition = definition.map(Arc::new);
        lock(&self.entries).insert(tenant.clone(), (Instant::now(), definition.clone()));
        definition
    }
}

/// Stored definition versions by tenant and version id, cached per instance: a version never
/// changes once stored, so a hit is kept for good; a miss is read again after [`DEFAULT_TTL`]
/// (the version may be pushed since). Also the [`StateMap`] between two versions, by their
/// ids (content hashes: the same pair maps the same way for every tenant).
#[derive(Debug, Default)]
pub struct VersionCache {
    versions: Mutex<HashMap<(TenantId, String), VersionEntry>>,
    maps: Mutex<HashMap<(String, String), MapEntry>>,
}

/// A map between two versions (`None`: the first's states do not hold what the second needs).
type MapEntry = Option<Arc<StateMap>>;

#[derive(Debug, Clone)]
enum VersionEntry {
    Stored(Arc<Definition>),
    Missing(Instant),
}

impl VersionCache {
    /// The tenant's stored version `version` (`None`: not stored).
    pub async fn get(
        &self,
        store: &Store,
        tenant: &TenantId,
        version: &str,
    ) -> Result<Option<Arc<Definition>>, StoreError> {
        let key = (tenant.clone(), version.to_owned());
        match lock(&self.versions).get(&key) {
            Some(VersionEntry::Stored(definition)) => return Ok(Some(definition.clone())),
            Some(VersionEntry::Missing(at)) if at.elapsed() < DEFAULT_TTL => return Ok(None),
            _ => {}
        }
        let definition = store
            .definition_version(tenant, version)
            .await?
            .map(|stored| Arc::new(stored.definition));
        let entry = match &definition {
            Some(definition) => VersionEntry::Stored(definition.clone()),
            None => VersionEntry::Missing(Instant::now()),
        };
        lock(&self.versions).insert(key, entry);
        Ok(definition)
    }

    /// How states of `from` read as states of `to` (`None`: they do not hold what `to`
    /// needs; see [`StateMap::between`]).
    pub fn map(&self, from: &Definition, to: &Definition) -> Option<Arc<StateMap>> {
        let key = (from.version.clone(), to.version.clone());
        if let Some(map) = lock(&self.maps).get(&key) {
            return map.clone();
        }
        let map = StateMap::between(from, to).ok().map(Arc::new);
        lock(&self.maps).insert(key, map.clone());
        map
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the map inconsistent: use it anyway.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
