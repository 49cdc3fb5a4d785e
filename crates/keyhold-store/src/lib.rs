//! Keyhold's persistent store. The [`Store`] trait is what the service layer
//! needs; [`SqliteStore`] is the embedded implementation (one node).
//!
//! Writes to a key are optimistic: a caller reads a [`KeyRecord`], changes it,
//! bumps `revision` and writes it back; the write fails with
//! [`StoreError::Conflict`] if someone else wrote in between.

pub mod audit;
mod postgres;
mod query;
mod sqlite;

pub use audit::{
    AuditBatch, AuditPage, AuditQuery, AuditRow, AuditStore, ChainHead, PostgresAudit, SqliteAudit,
};
use keyhold_core::list::ListKeys;
use keyhold_core::model::{
    ImportToken, Instance, InstancePolicy, KeyRecord, KeyRing, KeyVersion, Registration,
};
use keyhold_core::resource::Authorization;
use keyhold_core::timefmt::Timestamp;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The record changed since it was read; re-read and retry.
    #[error("concurrent modification")]
    Conflict,
    #[error("already exists")]
    Duplicate,
    #[error("not found")]
    NotFound,
    #[error("not empty")]
    NotEmpty,
    /// The store cannot be reached or written now.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused a value (e.g. text it cannot represent).
    #[error("value refused by the store: {0}")]
    Rejected(String),
    /// Stored data could not be read back (a bug or corruption).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A credential that can be exchanged for a token; only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub hash: Vec<u8>,
    pub id: String,
    pub principal_id: String,
    /// `user` or `service`.
    pub principal_kind: String,
    pub account_id: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// An IAM object of an account (user, service ID, access group, group
/// membership, access policy), kept as a JSON document. `refs` names the ids
/// it depends on: deleting any of them deletes it in the same transaction, so
/// removing a user also removes its memberships and policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamObject {
    pub account_id: String,
    /// `user`, `serviceid`, `group`, `member` or `policy`.
    pub kind: String,
    pub id: String,
    pub refs: Vec<String>,
    pub doc: String,
}

/// Which registrations to list.
#[derive(Debug, Clone, Default)]
pub struct RegistrationQuery {
    pub key_id: Option<String>,
    /// A CRN pattern where `*` matches any run of characters.
    pub crn_pattern: Option<String>,
    pub prevent_key_deletion: Option<bool>,
    pub limit: u32,
    pub offset: u64,
}

/// A change another node made that this node's caches must honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Key {
        instance_id: String,
        key_id: String,
    },
    InstancePolicies {
        instance_id: String,
    },
    /// An account's IAM objects (identities, groups, policies, API keys) changed.
    Iam {
        account_id: String,
    },
    /// Service instances or service-to-service authorizations changed.
    Directory,
    /// Anything may have changed (e.g. keys moved between rings).
    Everything,
    /// Change notices may be missed from now on: caches must not be trusted.
    Lost,
    /// Notices flow again (after a [`Change::Lost`]); drop what was cached meanwhile.
    Resumed,
    /// The channel was just seen working. Reported at least every [`HEARTBEAT`]; a
    /// node that stops hearing it (a silent partition) must stop trusting its caches.
    Alive,
}

/// A key version's stored blob, for re-wrapping under a new master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionBlob {
    pub instance_id: String,
    pub key_id: String,
    pub version_id: String,
    /// Standard (extractable) keys are bound as such; root keys otherwise.
    pub extractable: bool,
    pub blob: Vec<u8>,
}

fn unsupported<T>() -> Result<T> {
    Err(StoreError::Unavailable(
        "this store cannot re-wrap stored blobs".into(),
    ))
}

/// How a store's connections are used right now (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Connections serving a request now.
    pub in_use: usize,
    /// Open connections waiting for work.
    pub idle: usize,
    /// Connections kept open at most while idle.
    pub max_idle: usize,
}

/// How often a watching store proves its notification channel alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(300);

/// Receives [`Change`]s from a shared store's notification channel.
pub type ChangeListener = std::sync::Arc<dyn Fn(Change) + Send + Sync>;

pub trait Store: Send + Sync + 'static {
    /// Starts delivering other nodes' changes to `listener`; returns false for a
    /// store only one node uses (nothing to watch). A watching store first
    /// reports [`Change::Lost`] until its channel is up.
    fn watch(&self, listener: ChangeListener) -> bool {
        let _ = listener;
        false
    }

    /// A cheap round trip that reads the database (readiness probes). It may
    /// block; callers bound it with a timeout.
    fn ping(&self) -> Result<()>;

    /// Connection usage now; read by the metrics endpoint, never on a request path.
    fn pool_status(&self) -> PoolStatus;

    fn put_instance(&self, instance: &Instance) -> Result<()>;
    fn get_instance(&self, id: &str) -> Result<Option<Instance>>;

    /// Lists every service instance (all accounts): few enough to hold in memory.
    fn list_instances(&self) -> Result<Vec<Instance>>;
    /// Adds a new instance (Duplicate if its id exists). An instance bound to a
    /// crypto instance records the binding in the same transaction, and fails
    /// with NotFound if the crypto instance is gone (checked under its row lock,
    /// so a concurrent delete of the crypto instance cannot slip between).
    fn create_instance(&self, instance: &Instance) -> Result<()>;
    /// Rewrites an existing instance (NotFound if absent); its binding is fixed.
    fn update_instance(&self, instance: &Instance) -> Result<()>;
    /// Removes an instance; NotEmpty (nothing changed) while a key-management
    /// instance is bound to it or it holds keys not yet destroyed.
    fn delete_instance(&self, id: &str) -> Result<()>;

    fn list_authorizations(&self) -> Result<Vec<Authorization>>;
    fn create_authorization(&self, authorization: &Authorization) -> Result<()>;
    /// NotFound if there is no such authorization.
    fn delete_authorization(&self, id: &str) -> Result<()>;

    fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    fn find_api_key(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>>;
    /// The account's API keys (never their secrets: only hashes are stored).
    fn list_api_keys(&self, account_id: &str) -> Result<Vec<ApiKeyRecord>>;
    fn get_api_key(&self, account_id: &str, id: &str) -> Result<Option<ApiKeyRecord>>;
    /// Removes an API key (NotFound if absent).
    fn delete_api_key(&self, account_id: &str, id: &str) -> Result<()>;
    /// Rotation: the key keeps its id and gets a new secret's hash (NotFound if absent).
    fn replace_api_key_hash(&self, account_id: &str, id: &str, hash: &[u8]) -> Result<()>;

    /// Inserts an IAM object (Duplicate if its id is taken) and notifies other nodes.
    fn insert_iam_object(&self, obj: &IamObject) -> Result<()>;
    fn get_iam_object(&self, account_id: &str, kind: &str, id: &str) -> Result<Option<IamObject>>;
    /// The account's objects of one kind, by id.
    fn list_iam_objects(&self, account_id: &str, kind: &str) -> Result<Vec<IamObject>>;
    /// Deletes an object, every object of the account whose `refs` name it, and the
    /// API keys of the principal it is, in one transaction (NotFound if absent).
    fn delete_iam_object(&self, account_id: &str, kind: &str, id: &str) -> Result<()>;

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>>;
    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()>;
    /// Stores `value` unless the setting exists; returns the value that won, so
    /// nodes starting together agree on one.
    fn put_setting_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>>;
    /// Compare-and-swap: writes `value` only if the stored value is `expected`
    /// (`None`: the setting is absent); returns whether it wrote. Durable before
    /// it returns, like every write.
    fn replace_setting_if(&self, name: &str, expected: Option<&[u8]>, value: &[u8])
        -> Result<bool>;

    /// Inserts a new key with its first version and aliases (Duplicate if an alias is taken).
    fn insert_key(&self, key: &KeyRecord, version: &KeyVersion) -> Result<()>;
    fn get_key(&self, instance_id: &str, key_id: &str) -> Result<Option<KeyRecord>>;
    fn key_id_for_alias(&self, instance_id: &str, alias: &str) -> Result<Option<String>>;
    /// Writes `key` if the stored revision is `key.revision - 1`; adds `new_version` in
    /// the same transaction.
    fn update_key(&self, key: &KeyRecord, new_version: Option<&KeyVersion>) -> Result<()>;
    /// [`Store::update_key`] plus adding (`Some`) or removing an alias row atomically.
    fn update_key_alias(&self, key: &KeyRecord, alias: &str, add: bool) -> Result<()>;
    /// Removes a key, its versions, aliases and registrations.
    fn purge_key(&self, instance_id: &str, key_id: &str) -> Result<()>;
    fn list_keys(
        &self,
        instance_id: &str,
        query: &ListKeys,
        now: Timestamp,
    ) -> Result<Vec<KeyRecord>>;
    fn count_keys(&self, instance_id: &str, query: &ListKeys, now: Timestamp) -> Result<u64>;
    /// Keys deleted at or before `before`, for automatic purge.
    fn deleted_before(&self, before: Timestamp, limit: u32) -> Result<Vec<(String, String)>>;
    /// All versions of a key, newest first.
    fn versions(&self, instance_id: &str, key_id: &str) -> Result<Vec<KeyVersion>>;

    fn create_ring(&self, ring: &KeyRing) -> Result<()>;
    fn get_ring(&self, instance_id: &str, ring_id: &str) -> Result<Option<KeyRing>>;
    fn list_rings(&self, instance_id: &str) -> Result<Vec<KeyRing>>;
    /// Deletes an empty ring (NotEmpty otherwise). With `force`, destroyed keys
    /// are moved to `default` first; keys in any other state still block it.
    fn delete_ring(&self, instance_id: &str, ring_id: &str, force: bool) -> Result<()>;

    fn put_registration(&self, reg: &Registration) -> Result<()>;
    fn get_registration(
        &self,
        instance_id: &str,
        key_id: &str,
        crn: &str,
    ) -> Result<Option<Registration>>;
    fn delete_registration(&self, instance_id: &str, key_id: &str, crn: &str) -> Result<()>;
    fn list_registrations(
        &self,
        instance_id: &str,
        query: &RegistrationQuery,
    ) -> Result<(Vec<Registration>, u64)>;

    fn put_instance_policies(&self, instance_id: &str, policies: &[InstancePolicy]) -> Result<()>;
    fn instance_policies(&self, instance_id: &str) -> Result<Vec<InstancePolicy>>;

    fn put_import_token(&self, token: &ImportToken) -> Result<()>;
    fn get_import_token(&self, instance_id: &str) -> Result<Option<ImportToken>>;
    /// Decrements the remaining retrievals if any are left; returns the token as
    /// updated and whether this retrieval was granted.
    fn retrieve_import_token(&self, instance_id: &str) -> Result<Option<(ImportToken, bool)>>;

    /// Master-key rotation: key versions' blobs with a version id greater than
    /// `after`, in version-id order (a stable order to resume from).
    fn version_blobs_after(&self, after: &str, limit: u32) -> Result<Vec<VersionBlob>> {
        let _ = (after, limit);
        unsupported()
    }
    /// How many key versions are stored (all instances).
    fn count_versions(&self) -> Result<u64> {
        unsupported()
    }
    /// Compare-and-swap of one version's blob; returns whether it wrote.
    fn replace_version_blob_if(&self, version_id: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let _ = (version_id, old, new);
        unsupported()
    }
    /// Import tokens of instances after `after`, in instance-id order.
    fn import_tokens_after(&self, after: &str, limit: u32) -> Result<Vec<ImportToken>> {
        let _ = (after, limit);
        unsupported()
    }
    fn count_import_tokens(&self) -> Result<u64> {
        unsupported()
    }
    /// Replaces a token's wrapped private key if it still is `old`.
    fn replace_import_token_key_if(
        &self,
        instance_id: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        let _ = (instance_id, old, new);
        unsupported()
    }
}
