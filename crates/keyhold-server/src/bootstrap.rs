//! `keyhold init`: turns a fresh store into a (non-dev) deployment with one
//! account and its first administrator (Administrator platform role, Manager
//! and KeyPurge service roles, account-wide), whose API key is returned once.
//! The account setting is written last, by compare-and-swap: it is what makes
//! a store "initialised", so a second `init` (or one racing it) refuses.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use keyhold_core::access::{PlatformRole, Role};
use keyhold_core::iam::AnyRole;
use keyhold_store::Store;
use zeroize::Zeroizing;

use crate::auth::PrincipalKind;
use crate::dev::open_store;
use crate::service::{bootstrap_policy, new_api_key, user_object, IamKind};

const ACCOUNT_SETTING: &str = "account_id";
const CRYPTO_INSTANCE_SETTING: &str = "crypto_instance_id";
/// Dev deployments record their instance here; `init` refuses such a store.
const DEV_INSTANCE_SETTING: &str = "dev_instance_id";

/// Why `keyhold init` did nothing: the store is already someone's (exit 4), or it
/// could not be set up (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for InitError {
    fn from(s: String) -> Self {
        InitError::Failed(s)
    }
}

/// What `keyhold init` prints (once).
pub struct Initialised {
    pub account_id: String,
    pub iam_id: String,
    pub apikey_id: String,
    pub apikey: Zeroizing<String>,
}

/// The account of an initialised store, if it is one.
pub fn account_of(store: &dyn Store) -> Result<Option<String>, String> {
    store
        .get_setting(ACCOUNT_SETTING)
        .map_err(|e| e.to_string())?
        .map(|v| String::from_utf8(v).map_err(|_| "corrupt account id".to_string()))
        .transpose()
}

/// The deployment's crypto instance (the key ceremony's), created on first use.
pub fn crypto_instance(store: &dyn Store) -> Result<String, String> {
    let candidate = uuid::Uuid::new_v4().to_string();
    let v = store
        .put_setting_if_absent(CRYPTO_INSTANCE_SETTING, candidate.as_bytes())
        .map_err(|e| e.to_string())?;
    String::from_utf8(v).map_err(|_| "corrupt crypto instance id".into())
}

pub fn init(dir: &Path, store_url: Option<&str>) -> Result<Initialised, InitError> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot secure {}: {e}", dir.display()))?;
    let store = open_store(dir, store_url)?;
    let store = store.as_ref();
    if let Some(a) = account_of(store)? {
        return Err(InitError::Refused(format!(
            "this store is already initialised (account {a}); refusing to initialise it again"
        )));
    }
    if store
        .get_setting(DEV_INSTANCE_SETTING)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(InitError::Refused(
            "this store belongs to a dev deployment (serve --dev); use a new data directory and store"
                .into(),
        ));
    }
    let account_id = format!("acct-{}", uuid::Uuid::new_v4().simple());
    let iam_id = format!("user-{}", uuid::Uuid::new_v4());
    let roles = [
        AnyRole::Platform(PlatformRole::Administrator),
        AnyRole::Service(Role::Manager),
        AnyRole::Service(Role::KeyPurge),
    ];
    let key = new_api_key(
        &account_id,
        &iam_id,
        PrincipalKind::User,
        "first administrator",
    )
    .map_err(|e| e.to_string())?;
    let write = || -> Result<(), String> {
        let err = |e: keyhold_store::StoreError| e.to_string();
        store
            .insert_iam_object(&user_object(&account_id, &iam_id, "administrator"))
            .map_err(err)?;
        store
            .insert_iam_object(&bootstrap_policy(
                &account_id,
                &format!("policy-{}", uuid::Uuid::new_v4()),
                &iam_id,
                &roles,
            )?)
            .map_err(err)?;
        store.put_api_key(&key.record).map_err(err)
    };
    write()?;
    let won = store
        .replace_setting_if(ACCOUNT_SETTING, None, account_id.as_bytes())
        .map_err(|e| e.to_string())?;
    if !won {
        // Another init finished first: take back what this one wrote.
        let _ = store.delete_iam_object(&account_id, IamKind::User.as_str(), &iam_id);
        return Err(InitError::Refused(
            "this store was initialised meanwhile by another `keyhold init`; refusing".into(),
        ));
    }
    Ok(Initialised {
        account_id,
        iam_id,
        apikey_id: key.record.id.clone(),
        apikey: key.secret,
    })
}
