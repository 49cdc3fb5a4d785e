//! An optional cache of data keys, as the AWS Encryption SDK's caching materials manager
//! does it: reusing a DEK saves a round trip to the KMS per file, at the cost of a DEK
//! protecting more data and living longer in memory. Each entry is bounded by age, by
//! number of uses and by bytes; whichever is reached first retires it.
//!
//! Encryption entries are keyed by root key; decryption entries by the wrapped DEK. Note
//! that a cached decryption entry keeps working for its lifetime after the root key is
//! disabled: keep `max_age` short where that matters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stream::Dek;

#[derive(Debug, Clone)]
pub struct CacheLimits {
    pub max_age: Duration,
    /// Files one DEK may encrypt (or decrypt) before a new one is fetched.
    pub max_uses: u64,
    /// Plaintext bytes one DEK may encrypt before a new one is fetched.
    pub max_bytes: u64,
    /// Entries kept at most (the oldest goes first).
    pub capacity: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_age: Duration::from_secs(300),
            max_uses: 1000,
            max_bytes: 1 << 40,
            capacity: 256,
        }
    }
}

/// What an encryption entry hands out: the DEK and how the KMS wrapped it.
#[derive(Clone, Debug)]
pub struct Sealing {
    pub dek: Dek,
    pub key_id: String,
    pub key_version: String,
    pub wrapped: String,
}

struct Entry<T> {
    value: T,
    born: Instant,
    uses: u64,
    bytes: u64,
}

pub struct DekCache {
    limits: CacheLimits,
    enc: Mutex<HashMap<String, Entry<Sealing>>>,
    dec: Mutex<HashMap<String, Entry<Dek>>>,
}

impl<T> Entry<T> {
    fn usable(&self, l: &CacheLimits) -> bool {
        self.born.elapsed() < l.max_age && self.uses < l.max_uses && self.bytes < l.max_bytes
    }
}

fn make_room<T>(map: &mut HashMap<String, Entry<T>>, l: &CacheLimits) {
    map.retain(|_, e| e.usable(l));
    while map.len() >= l.capacity.max(1) {
        let oldest = map
            .iter()
            .min_by_key(|(_, e)| e.born)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                map.remove(&k);
            }
            None => break,
        }
    }
}

impl DekCache {
    pub fn new(limits: CacheLimits) -> DekCache {
        DekCache {
            limits,
            enc: Mutex::new(HashMap::new()),
            dec: Mutex::new(HashMap::new()),
        }
    }

    /// A cached sealing for `key`, counting one use, if it is still within its limits.
    pub fn sealing(&self, key: &str) -> Option<Sealing> {
        let mut map = self.enc.lock().ok()?;
        let e = map.get_mut(key)?;
        if !e.usable(&self.limits) {
            map.remove(key);
            return None;
        }
        e.uses += 1;
        Some(e.value.clone())
    }

    /// Keeps a new sealing for `key` (counts as its first use).
    pub fn put_sealing(&self, key: &str, s: Sealing) {
        if let Ok(mut map) = self.enc.lock() {
            make_room(&mut map, &self.limits);
            map.insert(
                key.to_string(),
                Entry {
                    value: s,
                    born: Instant::now(),
                    uses: 1,
                    bytes: 0,
                },
            );
        }
    }

    /// Counts `n` plaintext bytes encrypted under `key`'s cached DEK.
    pub fn add_bytes(&self, key: &str, n: u64) {
        if let Ok(mut map) = self.enc.lock() {
            if let Some(e) = map.get_mut(key) {
                e.bytes = e.bytes.saturating_add(n);
            }
        }
    }

    /// A cached DEK for a wrapped DEK, counting one use.
    pub fn opened(&self, wrapped: &str) -> Option<Dek> {
        let mut map = self.dec.lock().ok()?;
        let e = map.get_mut(wrapped)?;
        if !e.usable(&self.limits) {
            map.remove(wrapped);
            return None;
        }
        e.uses += 1;
        Some(e.value.clone())
    }

    pub fn put_opened(&self, wrapped: &str, dek: Dek) {
        if let Ok(mut map) = self.dec.lock() {
            make_room(&mut map, &self.limits);
            map.insert(
                wrapped.to_string(),
                Entry {
                    value: dek,
                    born: Instant::now(),
                    uses: 1,
                    bytes: 0,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealing() -> Sealing {
        Sealing {
            dek: Dek::generate().unwrap(),
            key_id: "k".into(),
            key_version: "v".into(),
            wrapped: "w".into(),
        }
    }

    #[test]
    fn uses_bound() {
        let c = DekCache::new(CacheLimits {
            max_uses: 3,
            ..Default::default()
        });
        c.put_sealing("k", sealing());
        assert!(c.sealing("k").is_some());
        assert!(c.sealing("k").is_some());
        assert!(c.sealing("k").is_none(), "fourth use must fetch a new DEK");
    }

    #[test]
    fn bytes_bound() {
        let c = DekCache::new(CacheLimits {
            max_bytes: 100,
            ..Default::default()
        });
        c.put_sealing("k", sealing());
        c.add_bytes("k", 99);
        assert!(c.sealing("k").is_some());
        c.add_bytes("k", 1);
        assert!(c.sealing("k").is_none());
    }

    #[test]
    fn age_bound_and_capacity() {
        let c = DekCache::new(CacheLimits {
            max_age: Duration::ZERO,
            ..Default::default()
        });
        c.put_opened("w", Dek::generate().unwrap());
        assert!(c.opened("w").is_none());
        let c = DekCache::new(CacheLimits {
            capacity: 2,
            ..Default::default()
        });
        for w in ["a", "b", "c"] {
            c.put_opened(w, Dek::generate().unwrap());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(c.opened("a").is_none(), "oldest entry evicted");
        assert!(c.opened("b").is_some() && c.opened("c").is_some());
    }
}
