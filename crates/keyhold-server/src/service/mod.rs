//! The domain services: every Key Protect rule lives here, between the HTTP
//! layer (which only parses and renders) and the store and crypto unit.
//!
//! Methods are synchronous (SQLite and HSM calls block); the api layer runs
//! them on the blocking pool. Key writes are read–check–compare-and-swap
//! loops, so concurrent writers never lose an update.

mod actions;
mod cache;
mod directory;
mod iam;
mod import;
mod instances;
mod keys;
mod policies;
mod resources;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use keyhold_core::model::{Instance, KeyRecord, KeyVersion};
use keyhold_core::rules::TimingRules;
use keyhold_core::timefmt::{self, Timestamp};
use keyhold_core::validate::is_uuid;
use keyhold_core::{Error, Reason, Result};
use keyhold_crypto::{CryptoError, CryptoUnit};
use keyhold_store::{Change, ChangeListener, Store, StoreError};

pub use actions::{UnwrapOutcome, WrapOutcome};
pub use cache::CachedKey;
pub use cache::InstancePolicies;
pub use directory::Directory;
pub use iam::{
    bootstrap_policy, check_text, ensure_object, new_api_key, service_id_object, user_object,
    AccountAccess, IamKind, NewApiKey,
};
pub use instances::{instance_guid, Credential, InstanceInput, InstanceUpdate};
pub use keys::{CreateKey, ImportMaterial, PolicyOverrides};
pub use policies::{cidr_contains, parse_cidr, InstancePolicyInput, KeyPolicyInput};
pub use resources::RegistrationInput;

use crate::metrics::{self, Cache, MeteredUnit, StoreFailure};
use cache::{KeyCache, Lease, MapCache, PolicyCache};
use directory::DirectoryCache;

/// What a key change writes besides bumping the record.
pub(crate) enum KeyWrite {
    /// The change turned out to be a no-op: write nothing.
    Nothing,
    Record,
    Version(KeyVersion),
    Alias {
        alias: String,
        add: bool,
    },
}

/// How many times a compare-and-swap write is retried under contention.
/// Losers of a race back off for a random time that grows with each attempt.
const CAS_ATTEMPTS: u32 = 32;

pub struct Service {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) unit: Arc<dyn CryptoUnit>,
    pub(crate) rules: TimingRules,
    cache: Arc<KeyCache>,
    policy_cache: Arc<PolicyCache>,
    /// Each account's access policies and group memberships (every request's authorization).
    access_cache: Arc<MapCache<AccountAccess>>,
    directory: Arc<DirectoryCache>,
}

pub(crate) fn store_err(e: StoreError) -> Error {
    match e {
        StoreError::Unavailable(why) => {
            metrics::record_store_error(StoreFailure::Unavailable);
            tracing::error!(error = %why, "store unavailable");
            Error::unavailable("The key store is unavailable; retry later")
        }
        StoreError::Rejected(why) => {
            metrics::record_store_error(StoreFailure::Rejected);
            tracing::info!(error = %why, "the store refused a value");
            Error::bad_body("The request holds a value the key store cannot keep")
        }
        StoreError::Corrupt(why) => {
            metrics::record_store_error(StoreFailure::Corrupt);
            tracing::error!(error = %why, "stored data could not be read");
            Error::internal()
        }
        StoreError::Conflict => Error::new(
            Reason::TooManyRequests,
            "The resource is being changed concurrently; retry",
        ),
        StoreError::Duplicate => {
            Error::new(Reason::DuplicateResource, "The resource already exists")
        }
        StoreError::NotFound => Error::new(Reason::NotFound, "The resource does not exist"),
        StoreError::NotEmpty => {
            Error::new(Reason::KeyRingNotEmpty, "The key ring still holds keys")
        }
    }
}

pub(crate) fn crypto_err(e: CryptoError) -> Error {
    match e {
        CryptoError::Unauthentic => Error::new(
            Reason::UnprocessableCiphertext,
            "The provided ciphertext is invalid or corrupted, or does not match the key and aad",
        ),
        CryptoError::InvalidInput(why) => Error::field(
            Reason::InvalidField,
            "payload",
            format!("The field `payload` must be: {why}"),
        ),
        CryptoError::BlobIntegrity => {
            tracing::error!("stored key material failed its integrity check");
            Error::new(
                Reason::StoredKeyIntegrity,
                "The stored material of this key failed its integrity check (altered, or swapped with another key's, in the database); it was not used and nothing was changed. Restore the key's row from a backup",
            )
        }
        CryptoError::Sealed => Error::new(
            Reason::CryptoUnitSealed,
            "The crypto unit is sealed: its master key is loaded only when a quorum of administrators unseals it (keyhold ceremony unseal)",
        ),
        CryptoError::Zeroized => Error::new(
            Reason::MasterKeyZeroized,
            "The master key of this crypto instance was zeroized (crypto-shredding): its keys can never be used again",
        ),
        CryptoError::Unit(what) => {
            tracing::error!(operation = what, "crypto unit failure");
            Error::internal()
        }
    }
}

/// Sleeps 0..=(attempt+1) ms, so writers that collided do not collide again in step.
fn backoff(attempt: u32) {
    let mut r = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut r);
    let max_ms = u64::from(attempt.min(20) + 1);
    std::thread::sleep(std::time::Duration::from_micros(
        u64::from(r[0]) * max_ms * 1000 / 255,
    ));
}

impl Service {
    pub fn new(store: Arc<dyn Store>, unit: Arc<dyn CryptoUnit>, rules: TimingRules) -> Self {
        // Every unit operation is counted (keyhold_crypto_operations_total).
        let unit: Arc<dyn CryptoUnit> = Arc::new(MeteredUnit::new(unit));
        let lease = Arc::new(Lease::forever());
        let svc = Service {
            store,
            unit,
            rules,
            cache: Arc::new(KeyCache::new(100_000, lease.clone())),
            policy_cache: Arc::new(PolicyCache::new(lease.clone(), Cache::InstancePolicy)),
            access_cache: Arc::new(MapCache::new(lease.clone(), Cache::AccountAccess)),
            directory: Arc::new(DirectoryCache::new(lease.clone())),
        };
        svc.follow_other_nodes(lease);
        svc
    }

    /// With a shared store, applies other nodes' change notices to this node's
    /// caches, and stops trusting the caches while notices may be missed.
    fn follow_other_nodes(&self, lease: Arc<Lease>) {
        let (keys, policies, access, unit, directory) = (
            self.cache.clone(),
            self.policy_cache.clone(),
            self.access_cache.clone(),
            self.unit.clone(),
            self.directory.clone(),
        );
        let forget_all = {
            let (keys, policies, access, directory) = (
                keys.clone(),
                policies.clone(),
                access.clone(),
                directory.clone(),
            );
            move || {
                keys.clear();
                policies.clear();
                access.clear();
                directory.clear();
            }
        };
        let listener: ChangeListener = Arc::new(move |change| match change {
            Change::Key {
                instance_id,
                key_id,
            } => {
                if let Some(view) = keys.get(&instance_id, &key_id) {
                    // The key may have been purged: drop its unwrapped versions too.
                    for v in &view.versions {
                        unit.forget(&v.version_id);
                    }
                }
                keys.invalidate(&instance_id, &key_id);
            }
            Change::InstancePolicies { instance_id } => policies.forget(&instance_id),
            Change::Iam { account_id } => access.forget(&account_id),
            Change::Directory => directory.clear(),
            Change::Everything => forget_all(),
            Change::Lost => {
                tracing::warn!("change notices from other nodes are not flowing (yet): caches bypassed until they are");
                lease.revoke();
                forget_all();
            }
            Change::Resumed => {
                tracing::info!("following other nodes' changes");
                forget_all();
                lease.renew();
            }
            Change::Alive => {
                if lease.renew() {
                    // Silent for longer than the lease: notices may have been missed.
                    forget_all();
                }
            }
        });
        self.store.watch(listener);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Drops every cached key record (they carry stored blobs): after a
    /// master-key rotation re-wrapped them.
    pub fn forget_cached_keys(&self) {
        self.cache.clear();
    }

    pub fn unit(&self) -> &Arc<dyn CryptoUnit> {
        &self.unit
    }

    pub fn instance(&self, id: &str) -> Result<Option<Instance>> {
        self.store.get_instance(id).map_err(store_err)
    }

    fn now(&self) -> Timestamp {
        timefmt::now()
    }

    fn new_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// Finds a key by UUID or alias (fresh from the store).
    pub(crate) fn resolve_key(&self, instance_id: &str, id_or_alias: &str) -> Result<KeyRecord> {
        let key_id = self.resolve_key_id(instance_id, id_or_alias)?;
        let key = self
            .store
            .get_key(instance_id, &key_id)
            .map_err(store_err)?;
        match key {
            Some(k) if is_uuid(id_or_alias) || k.aliases.iter().any(|a| a == id_or_alias) => Ok(k),
            _ if !is_uuid(id_or_alias) => {
                // A cached alias that moved or went away: look it up afresh.
                self.cache.drop_alias(instance_id, id_or_alias);
                let key_id = self.resolve_key_id(instance_id, id_or_alias)?;
                self.store
                    .get_key(instance_id, &key_id)
                    .map_err(store_err)?
                    .ok_or_else(Error::key_not_found)
            }
            _ => Err(Error::key_not_found()),
        }
    }

    fn resolve_key_id(&self, instance_id: &str, id_or_alias: &str) -> Result<String> {
        if is_uuid(id_or_alias) {
            return Ok(id_or_alias.to_ascii_lowercase());
        }
        if let Some(id) = self.cache.alias(instance_id, id_or_alias) {
            return Ok(id);
        }
        let id = self
            .store
            .key_id_for_alias(instance_id, id_or_alias)
            .map_err(store_err)?
            .ok_or_else(Error::key_not_found)?;
        self.cache.put_alias(instance_id, id_or_alias, &id);
        Ok(id)
    }

    /// Reads a key, lets `change` check and modify it, and writes it back if no
    /// one else wrote in between (retrying otherwise). Returns the new record.
    pub(crate) fn modify_key(
        &self,
        instance_id: &str,
        id_or_alias: &str,
        mut change: impl FnMut(&mut KeyRecord, Timestamp) -> Result<()>,
    ) -> Result<KeyRecord> {
        self.modify_key_with(instance_id, id_or_alias, |key, now| {
            change(key, now).map(|_| KeyWrite::Record)
        })
    }

    /// [`Service::modify_key`] for changes that write more than the record: a new
    /// version or an alias row, in the same transaction.
    pub(crate) fn modify_key_with(
        &self,
        instance_id: &str,
        id_or_alias: &str,
        mut change: impl FnMut(&mut KeyRecord, Timestamp) -> Result<KeyWrite>,
    ) -> Result<KeyRecord> {
        for attempt in 0..CAS_ATTEMPTS {
            let mut key = self.resolve_key(instance_id, id_or_alias)?;
            let now = self.now();
            let write = change(&mut key, now)?;
            if matches!(write, KeyWrite::Nothing) {
                return Ok(key);
            }
            key.revision += 1;
            key.updated_at = now;
            let written = match &write {
                KeyWrite::Nothing | KeyWrite::Record => self.store.update_key(&key, None),
                KeyWrite::Version(v) => self.store.update_key(&key, Some(v)),
                KeyWrite::Alias { alias, add } => self.store.update_key_alias(&key, alias, *add),
            };
            match written {
                Ok(()) => {
                    if let KeyWrite::Alias { alias, add: false } = &write {
                        self.cache.drop_alias(instance_id, alias);
                    }
                    self.cache.invalidate(instance_id, &key.id);
                    return Ok(key);
                }
                Err(StoreError::Conflict) => {
                    backoff(attempt);
                    continue;
                }
                Err(StoreError::Duplicate) => {
                    return Err(Error::new(
                        Reason::DuplicateResource,
                        "The alias is already in use in this instance",
                    ))
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        metrics::record_store_error(StoreFailure::Contention);
        Err(store_err(StoreError::Conflict))
    }

    /// Removes keys deleted longer ago than the auto-purge horizon.
    pub fn auto_purge(&self) -> Result<usize> {
        let before = self.now() - self.rules.auto_purge_after;
        let due = self.store.deleted_before(before, 500).map_err(store_err)?;
        for (instance_id, key_id) in &due {
            self.purge_now(instance_id, key_id)?;
        }
        Ok(due.len())
    }

    fn purge_now(&self, instance_id: &str, key_id: &str) -> Result<()> {
        let versions = self
            .store
            .versions(instance_id, key_id)
            .map_err(store_err)?;
        let key = self.store.get_key(instance_id, key_id).map_err(store_err)?;
        self.store
            .purge_key(instance_id, key_id)
            .map_err(store_err)?;
        for v in versions {
            self.unit.forget(&v.version_id);
        }
        if let Some(key) = key {
            for alias in &key.aliases {
                self.cache.drop_alias(instance_id, alias);
            }
        }
        self.cache.invalidate(instance_id, key_id);
        Ok(())
    }
}
