//! Dev mode (DESIGN §4): a data directory holding a SQLite store, a software
//! master key kept in a file (with a loud warning) or a PKCS#11 token whose
//! master and MAC keys are created when absent, one key-management instance
//! and three API keys, described in `dev.json` for scripts and tests.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyhold_core::model::Instance;
use keyhold_core::timefmt;
use keyhold_crypto::{
    Binding, CryptoUnit, Pkcs11Config, Pkcs11Unit, Purpose, SealableUnit, SoftUnit,
};
use keyhold_store::{
    ApiKeyRecord, AuditStore, PostgresAudit, PostgresStore, SqliteAudit, SqliteStore, Store,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::apikey;
use crate::auth::token::TokenService;
use crate::ceremony::Ceremony;
use crate::config::{CryptoUnitConfig, MasterKeySource};
use crate::service::{bootstrap_policy, ensure_object, service_id_object, user_object};
use keyhold_core::iam::AnyRole;

/// Where the PIN comes from when no PIN file is given.
pub const PIN_ENV: &str = "KEYHOLD_PKCS11_PIN";

pub const DEV_ACCOUNT: &str = "dev-account";
const INSTANCE_SETTING: &str = "dev_instance_id";
const SIGNING_KEY_SETTING: &str = "token_signing_key";
/// The token signing key under the platform key (ceremony mode), apart from the
/// one under a file master key, so neither mode can misread the other's.
const PLATFORM_SIGNING_KEY_SETTING: &str = "token_signing_key_platform";
/// The audit trail's Ed25519 checkpoint signing key, wrapped like the token signing key.
const AUDIT_KEY_SETTING: &str = "audit_signing_key";
/// Which master-key source the data in this store is wrapped under.
const MASTER_KEY_SOURCE_SETTING: &str = "master_key_source";

/// The contract scripts and tests rely on (`DIR/dev.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevInfo {
    pub url: String,
    pub iam_url: String,
    /// The dev administrator.
    pub apikey: String,
    pub instance_id: String,
    /// A second administrator, so dual authorization can be exercised.
    pub second_apikey: String,
    /// A service ID for the service-to-service calls (registrations).
    pub service_apikey: String,
}

pub struct DevDeployment {
    pub store: Arc<dyn Store>,
    pub unit: Arc<dyn CryptoUnit>,
    pub tokens: Arc<TokenService>,
    pub info: DevInfo,
    /// Set when the master key comes from the ceremony.
    pub ceremony: Option<Arc<Ceremony>>,
    /// The account of an initialised (non-dev) deployment; `None` in dev mode.
    pub account: Option<String>,
    /// The audit trail's store and signing key, unless audit is off.
    pub audit: Option<AuditParts>,
}

pub struct AuditParts {
    pub store: Arc<dyn AuditStore>,
    /// The Ed25519 checkpoint signing key (PKCS#8), kept wrapped in the store.
    pub signing_key: Zeroizing<Vec<u8>>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Writes a file readable only by its owner, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = staged_private(path, bytes)?;
    fs::rename(&tmp, path).map_err(|e| io_err("cannot write", path, e))
}

/// Writes `bytes` (owner-only, synced) to a file beside `path` that no other
/// process uses, for a rename or link into place.
fn staged_private(path: &Path, bytes: &[u8]) -> Result<PathBuf, String> {
    let mut tag = [0u8; 6];
    aws_lc_rs::rand::fill(&mut tag).map_err(|_| "cannot generate a file name".to_string())?;
    let suffix: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension(format!("tmp-{}-{suffix}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("cannot write", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err("cannot write", &tmp, e))?;
    Ok(tmp)
}

/// The key in `dir/name`, created (32 random bytes, owner-only) if absent.
fn load_or_create_key_file(dir: &Path, name: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let path = dir.join(name);
    let mut key = Zeroizing::new([0u8; 32]);
    if !path.exists() {
        aws_lc_rs::rand::fill(&mut key[..])
            .map_err(|_| "cannot generate a master key".to_string())?;
        let tmp = staged_private(&path, &key[..])?;
        // Linking never replaces: if another node created the key first, use theirs.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("cannot write", &path, e)),
        }
    }
    let bytes = Zeroizing::new(fs::read(&path).map_err(|e| io_err("cannot read", &path, e))?);
    if bytes.len() != 32 {
        return Err(format!("{} is not a 32-byte key", path.display()));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn load_or_create_master_key(dir: &Path) -> Result<Zeroizing<[u8; 32]>, String> {
    let path = dir.join("master.key");
    let key = load_or_create_key_file(dir, "master.key")?;
    tracing::warn!(
        path = %path.display(),
        "DEV MODE: the master key is stored in plain form in the data directory; never use dev mode for real keys"
    );
    Ok(key)
}

/// Keyhold's own service secrets (the token signing key) in ceremony mode are
/// wrapped by this platform key, kept in the data directory, so tokens work
/// while the customer's master key is sealed. It never protects customer keys.
fn platform_unit(dir: &Path) -> Result<SoftUnit, String> {
    let key = load_or_create_key_file(dir, "platform.key")?;
    Ok(SoftUnit::new(key, 16))
}

fn read_pin(pin_file: Option<&Path>) -> Result<Zeroizing<String>, String> {
    let pin = match pin_file {
        Some(path) => {
            let bytes = Zeroizing::new(fs::read(path).map_err(|e| io_err("cannot read the PIN file", path, e))?);
            Zeroizing::new(
                std::str::from_utf8(&bytes)
                    .map_err(|_| format!("the PIN file {} is not UTF-8", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            )
        }
        None => Zeroizing::new(std::env::var(PIN_ENV).map_err(|_| {
            format!("the PKCS#11 unit needs the user PIN: --pkcs11-pin-file (KEYHOLD_PKCS11_PIN_FILE) or {PIN_ENV}")
        })?),
    };
    if pin.is_empty() {
        return Err("the PKCS#11 user PIN is empty".into());
    }
    Ok(pin)
}

/// Makes the deployment's crypto unit. Dev mode creates the HSM's master and
/// MAC keys when the token has none.
fn make_unit(
    dir: &Path,
    unit: &CryptoUnitConfig,
    cache_entries: usize,
) -> Result<Arc<dyn CryptoUnit>, String> {
    match unit {
        CryptoUnitConfig::Soft => {
            let master = load_or_create_master_key(dir)?;
            Ok(Arc::new(SoftUnit::new(master, cache_entries)))
        }
        CryptoUnitConfig::Pkcs11 {
            module,
            token,
            pin_file,
        } => {
            let unit = Pkcs11Unit::open(Pkcs11Config {
                module: module.clone(),
                token_label: token.clone(),
                pin: read_pin(pin_file.as_deref())?,
                master_label: keyhold_crypto::DEFAULT_MASTER_LABEL.into(),
                mac_label: keyhold_crypto::DEFAULT_MAC_LABEL.into(),
                create_keys: true,
                sessions: 0,
                cache_entries,
            })?;
            tracing::info!(module = %module.display(), token = %token, "crypto unit: PKCS#11");
            Ok(Arc::new(unit))
        }
    }
}

fn signing_key(
    store: &dyn Store,
    unit: &dyn CryptoUnit,
    setting: &str,
) -> Result<Zeroizing<Vec<u8>>, String> {
    service_key(store, unit, setting, SIGNING_KEY_SETTING, || {
        TokenService::generate_signing_key().map_err(|e| e.to_string())
    })
}

/// A service secret kept in setting `setting`, wrapped by `unit` under `object_id`;
/// made by `generate` on first start.
fn service_key(
    store: &dyn Store,
    unit: &dyn CryptoUnit,
    setting: &str,
    object_id: &str,
    generate: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let binding = Binding {
        purpose: Purpose::ServiceSecret,
        instance_id: "",
        object_id,
        version_id: "1",
    };
    if let Some(blob) = store.get_setting(setting).map_err(|e| e.to_string())? {
        return unit
            .unwrap_material(&binding, &blob)
            .map_err(|e| format!("cannot open the {setting}: {e}"));
    }
    let pkcs8 = Zeroizing::new(generate()?);
    let blob = unit
        .wrap_material(&binding, &pkcs8)
        .map_err(|e| e.to_string())?;
    // Nodes starting together agree on one key: the first one stored.
    let stored = store
        .put_setting_if_absent(setting, &blob)
        .map_err(|e| e.to_string())?;
    unit.unwrap_material(&binding, &stored)
        .map_err(|e| format!("cannot open the {setting}: {e}"))
}

fn instance(store: &dyn Store) -> Result<Instance, String> {
    if let Some(id) = store
        .get_setting(INSTANCE_SETTING)
        .map_err(|e| e.to_string())?
    {
        let id = String::from_utf8(id).map_err(|_| "corrupt dev instance id".to_string())?;
        if let Some(i) = store.get_instance(&id).map_err(|e| e.to_string())? {
            return Ok(i);
        }
    }
    let candidate = Instance::kms(
        uuid::Uuid::new_v4().to_string(),
        "dev".into(),
        DEV_ACCOUNT.into(),
        "local".into(),
        timefmt::now(),
    );
    store.put_instance(&candidate).map_err(|e| e.to_string())?;
    // Nodes starting together agree on one instance: the first one recorded.
    let id = store
        .put_setting_if_absent(INSTANCE_SETTING, candidate.id.as_bytes())
        .map_err(|e| e.to_string())?;
    let id = String::from_utf8(id).map_err(|_| "corrupt dev instance id".to_string())?;
    store
        .get_instance(&id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("dev instance {id} is missing from the store"))
}

/// Returns `existing` if the store knows it, else a new API key for the principal.
fn api_key(
    store: &dyn Store,
    existing: Option<&str>,
    principal: &str,
    kind: &str,
    name: &str,
) -> Result<String, String> {
    if let Some(k) = existing {
        if store
            .find_api_key(&apikey::hash(k))
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(k.to_string());
        }
    }
    let key = apikey::generate().map_err(|e| e.to_string())?;
    store
        .put_api_key(&ApiKeyRecord {
            hash: apikey::hash(&key),
            id: uuid::Uuid::new_v4().to_string(),
            principal_id: principal.into(),
            principal_kind: kind.into(),
            account_id: DEV_ACCOUNT.into(),
            name: name.into(),
            created_at: timefmt::now(),
        })
        .map_err(|e| e.to_string())?;
    Ok(key.to_string())
}

/// Every service role, and every platform role: what the dev administrators hold.
pub fn all_roles() -> Vec<AnyRole> {
    use keyhold_core::access::{PlatformRole as P, Role as R};
    let mut roles: Vec<AnyRole> = [
        R::Reader,
        R::ReaderPlus,
        R::Writer,
        R::Manager,
        R::KeyPurge,
        R::KmipAdapterManager,
    ]
    .into_iter()
    .map(AnyRole::Service)
    .collect();
    roles.extend(
        [P::Viewer, P::Operator, P::Editor, P::Administrator]
            .into_iter()
            .map(AnyRole::Platform),
    );
    roles
}

/// The dev identities and the policies that reproduce dev mode's access: both
/// administrators hold every role account-wide, the service ID Reader (what a
/// service-to-service authorization grants). Idempotent (fixed ids).
fn dev_access(store: &dyn Store) -> Result<(), String> {
    ensure_object(
        store,
        &user_object(DEV_ACCOUNT, "dev-admin", "dev administrator"),
    )?;
    ensure_object(
        store,
        &user_object(DEV_ACCOUNT, "dev-admin-2", "second dev administrator"),
    )?;
    ensure_object(
        store,
        &service_id_object(DEV_ACCOUNT, "dev-service", "dev service ID"),
    )?;
    for (policy, subject, roles) in [
        ("dev-policy-admin", "dev-admin", all_roles()),
        ("dev-policy-admin-2", "dev-admin-2", all_roles()),
        (
            "dev-policy-service",
            "dev-service",
            vec![AnyRole::Service(keyhold_core::access::Role::Reader)],
        ),
    ] {
        ensure_object(
            store,
            &bootstrap_policy(DEV_ACCOUNT, policy, subject, &roles)?,
        )?;
    }
    Ok(())
}

/// Opens the store `url` names (`sqlite://PATH` or `postgres://…[?schema=NAME]`),
/// or SQLite in the data directory. Without a schema, a PostgreSQL deployment
/// keeps its tables in a schema named after the data directory, so nodes given
/// the same directory form one deployment and others stay apart.
pub fn open_store(dir: &Path, url: Option<&str>) -> Result<Arc<dyn Store>, String> {
    let opened: Arc<dyn Store> = match url {
        None => Arc::new(
            SqliteStore::open(&dir.join("keyhold.db"))
                .map_err(|e| format!("cannot open the store: {e}"))?,
        ),
        Some(u) if u.starts_with("sqlite://") => Arc::new(
            SqliteStore::open(Path::new(&u["sqlite://".len()..]))
                .map_err(|e| format!("cannot open the store: {e}"))?,
        ),
        Some(u) if is_postgres(u) => {
            let (url, schema) = pg_target(dir, u)?;
            Arc::new(
                PostgresStore::open(&url, &schema)
                    .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?,
            )
        }
        Some(_) => {
            return Err(
                "--store must be sqlite://PATH or postgres://USER@HOST:PORT/DB[?schema=NAME]"
                    .into(),
            )
        }
    };
    Ok(opened)
}

fn is_postgres(u: &str) -> bool {
    u.starts_with("postgres://") || u.starts_with("postgresql://")
}

/// The connection URL and schema of a PostgreSQL deployment: the URL's
/// `schema=`, else one named after the data directory.
fn pg_target(dir: &Path, u: &str) -> Result<(String, String), String> {
    let (url, schema) = split_schema(u);
    let schema = match schema {
        Some(s) => s,
        None => {
            let canonical = fs::canonicalize(dir).map_err(|e| io_err("cannot resolve", dir, e))?;
            let digest = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                canonical.to_string_lossy().as_bytes(),
            );
            let hex: String = digest.as_ref()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("keyhold_dev_{hex}")
        }
    };
    Ok((url, schema))
}

/// Opens the audit trail's store beside the main one: with SQLite its own files
/// (`audit.db` and the records `audit.jsonl` in the data directory, or
/// `PATH-audit` and `PATH-audit.jsonl` beside `sqlite://PATH`), so a locked
/// audit file never blocks key writes; with PostgreSQL a table in the
/// deployment's schema. Appends give up after `lock_wait`.
pub fn open_audit_store(
    dir: &Path,
    url: Option<&str>,
    lock_wait: std::time::Duration,
) -> Result<Arc<dyn AuditStore>, String> {
    let err = |e: keyhold_store::StoreError| format!("cannot open the audit store: {e}");
    Ok(match url {
        Some(u) if is_postgres(u) => {
            let (url, schema) = pg_target(dir, u)?;
            Arc::new(PostgresAudit::open(&url, &schema, lock_wait).map_err(err)?)
        }
        Some(u) if u.starts_with("sqlite://") => Arc::new(
            SqliteAudit::open(
                Path::new(&format!("{}-audit", &u["sqlite://".len()..])),
                lock_wait,
            )
            .map_err(err)?,
        ),
        _ => Arc::new(SqliteAudit::open(&dir.join("audit.db"), lock_wait).map_err(err)?),
    })
}

/// Takes our own `schema=` parameter out of a PostgreSQL URL.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(s) => {
                schema = Some(s.to_string());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}

pub fn dev_json_path(dir: &Path) -> PathBuf {
    dir.join("dev.json")
}

/// Opens (or creates) the dev deployment in `dir`. `url` is filled in by the caller.
/// Refuses to serve a store whose keys are wrapped under the other master-key source.
fn check_source(store: &dyn Store, source: MasterKeySource) -> Result<(), String> {
    let recorded = store
        .put_setting_if_absent(MASTER_KEY_SOURCE_SETTING, source.as_str().as_bytes())
        .map_err(|e| e.to_string())?;
    if recorded != source.as_str().as_bytes() {
        return Err(format!(
            "this deployment's keys are wrapped under a master key from {:?}; it cannot be served with --master-key {} (use a new data directory and store)",
            String::from_utf8_lossy(&recorded),
            source.as_str()
        ));
    }
    Ok(())
}

/// What kind of deployment [`open`] opens.
pub struct Mode {
    /// Dev (`serve --dev`), or initialised by `keyhold init`.
    pub dev: bool,
    /// How long an audit write may wait for the audit store; `None`: audit off.
    pub audit_wait: Option<std::time::Duration>,
}

/// Opens a dev deployment (`dev`) or one initialised by `keyhold init`: the
/// latter creates no instance, identities or dev.json, and refuses a master key
/// kept in a file.
pub fn open(
    dir: &Path,
    store_url: Option<&str>,
    token_lifetime: i64,
    cache_entries: usize,
    source: MasterKeySource,
    crypto_unit: &CryptoUnitConfig,
    mode: Mode,
) -> Result<DevDeployment, String> {
    let Mode { dev, audit_wait } = mode;
    fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err("cannot secure", dir, e))?;
    let store = open_store(dir, store_url)?;
    let account = crate::bootstrap::account_of(store.as_ref())?;
    match (dev, &account) {
        (true, Some(a)) => {
            return Err(format!(
                "this store was initialised with `keyhold init` (account {a}); serve it without --dev"
            ))
        }
        (false, None) => {
            return Err("this store is not initialised: run `keyhold init --data-dir DIR [--store URL]` first (or use `serve --dev`)".into())
        }
        _ => {}
    }
    if !dev && source == MasterKeySource::File && *crypto_unit == CryptoUnitConfig::Soft {
        return Err("a master key kept in a file is for --dev only: serve with --master-key ceremony or --crypto-unit pkcs11".into());
    }
    check_source(store.as_ref(), source)?;
    let audit_key = |unit: &dyn CryptoUnit| match audit_wait {
        Some(wait) => {
            let key = service_key(
                store.as_ref(),
                unit,
                AUDIT_KEY_SETTING,
                AUDIT_KEY_SETTING,
                crate::audit::Signer::generate,
            )?;
            Ok::<_, String>(Some(AuditParts {
                store: open_audit_store(dir, store_url, wait)?,
                signing_key: key,
            }))
        }
        None => Ok(None),
    };
    let (unit, sealable, pkcs8, audit): (Arc<dyn CryptoUnit>, _, _, _) = match source {
        MasterKeySource::File => {
            let unit = make_unit(dir, crypto_unit, cache_entries)?;
            let pkcs8 = signing_key(store.as_ref(), unit.as_ref(), SIGNING_KEY_SETTING)?;
            let audit = audit_key(unit.as_ref())?;
            (unit, None, pkcs8, audit)
        }
        MasterKeySource::Ceremony => {
            if *crypto_unit != CryptoUnitConfig::Soft {
                return Err("--master-key ceremony loads the master key into the soft crypto unit; \
                    a PKCS#11 unit keeps its master key in the HSM (use --master-key file with --crypto-unit pkcs11)"
                    .into());
            }
            let platform = platform_unit(dir)?;
            let pkcs8 = signing_key(store.as_ref(), &platform, PLATFORM_SIGNING_KEY_SETTING)?;
            // The platform key, like the token key: the trail runs while the unit is sealed.
            let audit = audit_key(&platform)?;
            let unit = Arc::new(SealableUnit::sealed(cache_entries));
            (
                unit.clone() as Arc<dyn CryptoUnit>,
                Some(unit),
                pkcs8,
                audit,
            )
        }
    };
    let tokens = Arc::new(TokenService::new(&pkcs8, token_lifetime).map_err(|e| e.to_string())?);
    if let Some(account) = account {
        let crypto_instance = crate::bootstrap::crypto_instance(store.as_ref())?;
        let ceremony = match sealable {
            Some(unit) => Some(Arc::new(
                Ceremony::open(store.clone(), unit, &crypto_instance, &account)
                    .map_err(|e| format!("cannot open the key ceremony: {e}"))?,
            )),
            None => None,
        };
        return Ok(DevDeployment {
            store,
            unit,
            tokens,
            info: DevInfo {
                url: String::new(),
                iam_url: String::new(),
                apikey: String::new(),
                instance_id: String::new(),
                second_apikey: String::new(),
                service_apikey: String::new(),
            },
            ceremony,
            account: Some(account),
            audit,
        });
    }
    let instance = instance(store.as_ref())?;
    // One crypto instance, bound to the dev key-management instance (KYOK).
    let ceremony = match sealable {
        Some(unit) => Some(Arc::new(
            Ceremony::open(store.clone(), unit, &instance.id, DEV_ACCOUNT)
                .map_err(|e| format!("cannot open the key ceremony: {e}"))?,
        )),
        None => None,
    };
    let previous: Option<DevInfo> = fs::read(dev_json_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let prev = previous.as_ref();
    let info = DevInfo {
        url: String::new(),
        iam_url: String::new(),
        apikey: api_key(
            store.as_ref(),
            prev.map(|p| p.apikey.as_str()),
            "dev-admin",
            "user",
            "dev administrator",
        )?,
        instance_id: instance.id,
        second_apikey: api_key(
            store.as_ref(),
            prev.map(|p| p.second_apikey.as_str()),
            "dev-admin-2",
            "user",
            "second dev administrator",
        )?,
        service_apikey: api_key(
            store.as_ref(),
            prev.map(|p| p.service_apikey.as_str()),
            "dev-service",
            "service",
            "dev service ID",
        )?,
    };
    dev_access(store.as_ref())?;
    Ok(DevDeployment {
        store,
        unit,
        tokens,
        info,
        ceremony,
        account: None,
        audit,
    })
}
