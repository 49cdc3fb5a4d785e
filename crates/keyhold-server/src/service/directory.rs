//! The directory: every service instance and service-to-service authorization,
//! held in memory because every request consults it (which instance the
//! `Bluemix-Instance` header names, whether a kms instance may use its crypto
//! instance, what a service instance may do). There are few of them, so a
//! change reloads the whole snapshot; the node's own writes drop it at once,
//! other nodes' writes through the store's change feed (DESIGN §4, ≤ 1 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use keyhold_core::access::{Role, Roles};
use keyhold_core::model::Instance;
use keyhold_core::resource::{granted_roles, service_instance_of, Authorization};

use super::cache::Lease;

/// One consistent view of the instances and authorizations of all accounts.
#[derive(Default)]
pub struct Directory {
    pub instances: HashMap<String, Arc<Instance>>,
    pub authorizations: Vec<Authorization>,
}

impl Directory {
    pub fn new(instances: Vec<Instance>, authorizations: Vec<Authorization>) -> Self {
        Directory {
            instances: instances
                .into_iter()
                .map(|i| (i.id.clone(), Arc::new(i)))
                .collect(),
            authorizations,
        }
    }

    pub fn instance(&self, id: &str) -> Option<&Arc<Instance>> {
        self.instances.get(id)
    }

    /// Whether a kms instance may use the crypto instance it is bound to: an
    /// authorization kms → hs-crypto with Reader (an unbound one always may).
    pub fn crypto_authorized(&self, kms: &Instance) -> bool {
        let Some(crypto_id) = &kms.crypto_instance else {
            return true;
        };
        self.instance(crypto_id).is_some_and(|crypto| {
            granted_roles(&self.authorizations, kms, crypto).has(Role::Reader)
        })
    }

    /// The service roles a service instance's principal holds on `target`
    /// through authorizations; `None` when the principal is no service instance
    /// (someone else decides). A deleted or reclaimed source instance holds none.
    pub fn service_instance_roles(&self, principal_id: &str, target: &Instance) -> Option<Roles> {
        let guid = service_instance_of(principal_id)?;
        Some(match self.instance(guid) {
            Some(source) if source.state == keyhold_core::model::InstanceState::Active => {
                granted_roles(&self.authorizations, source, target)
            }
            _ => Roles::NONE,
        })
    }
}

/// The node's copy of the [`Directory`].
pub(crate) struct DirectoryCache {
    /// The last snapshot loaded, and whether it is still current.
    latest: RwLock<(Option<Arc<Directory>>, bool)>,
    /// Bumped by every invalidation, so a load that raced a write is not trusted.
    generation: AtomicU64,
    lease: Arc<Lease>,
}

impl DirectoryCache {
    pub fn new(lease: Arc<Lease>) -> Self {
        DirectoryCache {
            latest: RwLock::new((None, false)),
            generation: AtomicU64::new(0),
            lease,
        }
    }

    /// The current snapshot, if this node holds one it may trust.
    pub fn fresh(&self) -> Option<Arc<Directory>> {
        if !self.lease.valid() {
            return None;
        }
        let latest = self.latest.read().ok()?;
        match &*latest {
            (Some(d), true) => Some(d.clone()),
            _ => None,
        }
    }

    /// The last snapshot loaded, current or not: for the authorizer, called
    /// right after the request made sure of a fresh one.
    pub fn latest(&self) -> Option<Arc<Directory>> {
        self.latest.read().ok()?.0.clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps a snapshot loaded at `loaded_at`; it counts as current only if
    /// nothing was invalidated since.
    pub fn put(&self, dir: Arc<Directory>, loaded_at: u64) {
        if let Ok(mut latest) = self.latest.write() {
            let current = self.generation.load(Ordering::SeqCst) == loaded_at;
            *latest = (Some(dir), current);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut latest) = self.latest.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            latest.1 = false;
        }
    }
}
