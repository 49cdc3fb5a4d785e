//! Per-node caches: key metadata and versions for the wrap/unwrap path (a hit
//! touches no database) and instance policies. Every write on this node
//! invalidates what it changed; with a shared store, other nodes' change notices
//! do the same, and while notices may be missed the caches answer nothing.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keyhold_core::model::{InstancePolicy, KeyRecord, KeyVersion};
use lru::LruCache;

use crate::metrics::{self, Cache};

/// A key as the crypto path needs it: metadata plus every version's blob.
pub struct CachedKey {
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
    lease: Arc<Lease>,
}

impl KeyCache {
    pub fn new(entries: usize, lease: Arc<Lease>) -> Self {
        let cap = NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        KeyCache {
            keys: Mutex::new(LruCache::new(cap)),
            generation: AtomicU64::new(0),
            aliases: Mutex::new(LruCache::new(cap)),
            lease,
        }
    }

    pub fn get(&self, instance_id: &str, key_id: &str) -> Option<Arc<CachedKey>> {
        let found = if self.lease.valid() {
            let mut keys = self.keys.lock().ok()?;
            keys.get(&(instance_id.to_string(), key_id.to_string()))
                .cloned()
        } else {
            None
        };
        metrics::record_cache(Cache::Key, found.is_some());
        found
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
            self.generation.fetch_add(1, Ordering::SeqCst);
            keys.clear();
        }
        if let Ok(mut aliases) = self.aliases.lock() {
            aliases.clear();
        }
    }

    pub fn alias(&self, instance_id: &str, alias: &str) -> Option<String> {
        if !self.lease.valid() {
            return None;
        }
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

/// Per-node cache of one value per id: each instance's policies (consulted by
/// every key creation), each account's IAM access policies (every request).
pub(crate) struct MapCache<T> {
    entries: Mutex<std::collections::HashMap<String, Arc<T>>>,
    generation: AtomicU64,
    lease: Arc<Lease>,
    /// Which hit-ratio counter of `/metrics` this cache feeds.
    kind: Cache,
}

/// An instance's policies, with the networks its allowedIP policy admits
/// (`None`: requests are not restricted by address).
pub struct InstancePolicies {
    pub list: Vec<InstancePolicy>,
    pub allowed_networks: Option<Vec<(IpAddr, u8)>>,
    /// An enabled allowedNetwork policy says `private-only`: the public
    /// listener refuses the instance's requests.
    pub private_only: bool,
}

pub(crate) type PolicyCache = MapCache<InstancePolicies>;

impl<T> MapCache<T> {
    pub fn new(lease: Arc<Lease>, kind: Cache) -> Self {
        MapCache {
            entries: Mutex::new(std::collections::HashMap::new()),
            generation: AtomicU64::new(0),
            lease,
            kind,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        let found = if self.lease.valid() {
            self.entries.lock().ok()?.get(id).cloned()
        } else {
            None
        };
        metrics::record_cache(self.kind, found.is_some());
        found
    }

    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a value read at `loaded_at`, unless anything was forgotten since.
    pub fn put(&self, id: &str, value: Arc<T>, loaded_at: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if self.generation.load(Ordering::SeqCst) == loaded_at {
                entries.insert(id.to_string(), value);
            }
        }
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.remove(id);
        }
    }
}

/// How long the caches may be trusted. A node alone on its store trusts them for
/// ever; a node among others only while the store's change channel is known to
/// work: each sign of life extends the lease, so a node cut off silently stops
/// answering from its caches within [`LEASE`] (below the 1 s cross-node bound).
pub(crate) struct Lease {
    /// Milliseconds since `origin` until which caches are trusted.
    until_ms: AtomicU64,
    origin: std::time::Instant,
}

pub(crate) const LEASE: std::time::Duration = std::time::Duration::from_millis(900);

impl Lease {
    pub fn forever() -> Self {
        Lease {
            until_ms: AtomicU64::new(u64::MAX),
            origin: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn valid(&self) -> bool {
        self.now_ms() < self.until_ms.load(Ordering::SeqCst)
    }

    /// Extends the lease; returns true if it had lapsed (the caches may have missed notices).
    pub fn renew(&self) -> bool {
        let lapsed = !self.valid();
        self.until_ms
            .store(self.now_ms() + LEASE.as_millis() as u64, Ordering::SeqCst);
        lapsed
    }

    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::SeqCst);
    }
}
