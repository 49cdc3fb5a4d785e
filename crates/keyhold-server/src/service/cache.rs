//! Per-node cache of key metadata and versions for the wrap/unwrap path, so a
//! hit touches no database. Every write on this node invalidates its key.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keyhold_core::model::{InstancePolicy, KeyRecord, KeyVersion};
use lru::LruCache;

/// A key as the crypto path needs it: metadata plus every version's blob.
pub(crate) struct CachedKey {
    pub record: KeyRecord,
    /// Newest first.
    pub versions: Vec<KeyVersion>,
}

type Id = (String, String);

pub(crate) struct KeyCache {
    keys: Mutex<LruCache<Id, Arc<CachedKey>>>,
    /// Bumped by every invalidation, so a load that raced a write is not cached.
    generation: AtomicU64,
    aliases: Mutex<LruCache<Id, String>>,
}

impl KeyCache {
    pub fn new(entries: usize) -> Self {
        let cap = NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        KeyCache {
            keys: Mutex::new(LruCache::new(cap)),
            generation: AtomicU64::new(0),
            aliases: Mutex::new(LruCache::new(cap)),
        }
    }

    pub fn get(&self, instance_id: &str, key_id: &str) -> Option<Arc<CachedKey>> {
        let mut keys = self.keys.lock().ok()?;
        keys.get(&(instance_id.to_string(), key_id.to_string()))
            .cloned()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a key loaded when the generation was `loaded_at`, unless a write
    /// has invalidated anything since.
    pub fn put(&self, key: Arc<CachedKey>, loaded_at: u64) {
        if let Ok(mut keys) = self.keys.lock() {
            if self.generation.load(Ordering::SeqCst) == loaded_at {
                keys.put((key.record.instance_id.clone(), key.record.id.clone()), key);
            }
        }
    }

    pub fn invalidate(&self, instance_id: &str, key_id: &str) {
        if let Ok(mut keys) = self.keys.lock() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            keys.pop(&(instance_id.to_string(), key_id.to_string()));
        }
    }

    pub fn clear(&self) {
        if let Ok(mut keys) = self.keys.lock() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            keys.clear();
        }
    }

    pub fn alias(&self, instance_id: &str, alias: &str) -> Option<String> {
        let mut aliases = self.aliases.lock().ok()?;
        aliases
            .get(&(instance_id.to_string(), alias.to_string()))
            .cloned()
    }

    pub fn put_alias(&self, instance_id: &str, alias: &str, key_id: &str) {
        if let Ok(mut aliases) = self.aliases.lock() {
            aliases.put(
                (instance_id.to_string(), alias.to_string()),
                key_id.to_string(),
            );
        }
    }

    pub fn drop_alias(&self, instance_id: &str, alias: &str) {
        if let Ok(mut aliases) = self.aliases.lock() {
            aliases.pop(&(instance_id.to_string(), alias.to_string()));
        }
    }
}

/// Per-node cache of each instance's policies (consulted by every key creation).
pub(crate) struct PolicyCache {
    entries: Mutex<std::collections::HashMap<String, Arc<Vec<InstancePolicy>>>>,
    generation: AtomicU64,
}

impl PolicyCache {
    pub fn new() -> Self {
        PolicyCache {
            entries: Mutex::new(std::collections::HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    pub fn get(&self, instance_id: &str) -> Option<Arc<Vec<InstancePolicy>>> {
        self.entries.lock().ok()?.get(instance_id).cloned()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches policies read at `loaded_at`, unless they changed since.
    pub fn put(&self, instance_id: &str, policies: Arc<Vec<InstancePolicy>>, loaded_at: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if self.generation.load(Ordering::SeqCst) == loaded_at {
                entries.insert(instance_id.to_string(), policies);
            }
        }
    }

    pub fn forget(&self, instance_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.remove(instance_id);
        }
    }
}
