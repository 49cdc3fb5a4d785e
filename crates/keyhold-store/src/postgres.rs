//! PostgreSQL store, for several stateless nodes over one database (DESIGN §4).
//!
//! Same schema and documents as the SQLite store. Every write that other nodes
//! may have cached sends a `NOTIFY` in its transaction; [`Store::watch`] listens
//! and reports them, or reports the channel lost so caches stop being trusted.
//! Commits are synchronous (PostgreSQL's default), so an acknowledged write is durable.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyhold_core::list::ListKeys;
use keyhold_core::model::{
    ImportToken, Instance, InstancePolicy, KeyRecord, KeyRing, KeyState, KeyVersion, Registration,
};
use keyhold_core::resource::Authorization;
use keyhold_core::timefmt::Timestamp;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Transaction};

use crate::query::{
    self, crn_like, list_where, now_placeholder, order_and_page, refs_column, refs_like,
    refs_parse, Dialect, Param,
};
use crate::{
    ApiKeyRecord, Change, ChangeListener, IamObject, PoolStatus, RegistrationQuery, Result, Store,
    StoreError, VersionBlob, HEARTBEAT,
};

/// Connections kept open for reuse; more may exist briefly under load.
const POOL_IDLE: usize = 8;
/// Serializes schema migrations of nodes that start together.
const MIGRATION_LOCK: i64 = 0x6b68_6f6c_6400;

pub struct PostgresStore {
    config: Config,
    schema: String,
    channel: String,
    idle: Mutex<Vec<Client>>,
    /// Connections handed out and not yet returned (for metrics).
    in_use: AtomicUsize,
    watching: Arc<AtomicBool>,
}

fn db_err(e: postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Duplicate
    } else if e.code().is_some_and(|c| c.code().starts_with("22")) {
        // Class 22, data exception: the value, not the database, is at fault.
        StoreError::Rejected(e.to_string())
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A schema name we create and quote ourselves: letters, digits and `_` only.
fn valid_schema(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn pg_params(params: &[Param]) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                Param::Text(t) => Box::new(t.clone()),
                Param::Int(n) => Box::new(*n),
            }
        })
        .collect()
}

/// A pooled connection, returned to the pool when dropped unless it broke.
struct Pooled<'a> {
    store: &'a PostgresStore,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("client present until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        self.store.in_use.fetch_sub(1, Ordering::Relaxed);
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                if let Ok(mut idle) = self.store.idle.lock() {
                    if idle.len() < POOL_IDLE {
                        idle.push(c);
                    }
                }
            }
        }
    }
}

const API_KEY_COLUMNS: &str =
    "hash, id, principal_id, principal_kind, account_id, name, created_at";

fn api_key_row(r: &postgres::Row) -> ApiKeyRecord {
    ApiKeyRecord {
        hash: r.get(0),
        id: r.get(1),
        principal_id: r.get(2),
        principal_kind: r.get(3),
        account_id: r.get(4),
        name: r.get(5),
        created_at: r.get(6),
    }
}

fn iam_row(r: &postgres::Row) -> IamObject {
    IamObject {
        account_id: r.get(0),
        kind: r.get(1),
        id: r.get(2),
        refs: refs_parse(&r.get::<_, String>(3)),
        doc: r.get(4),
    }
}

fn notify(tx: &mut Transaction<'_>, channel: &str, payload: &str) -> Result<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .map_err(db_err)?;
    Ok(())
}

/// Instances or authorizations changed (every node reloads its directory).
const DIRECTORY_NOTICE: &str = "d";

fn key_notice(instance_id: &str, key_id: &str) -> String {
    format!("k {instance_id} {key_id}")
}

fn parse_notice(payload: &str) -> Change {
    let mut parts = payload.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("k"), Some(i), Some(k)) => Change::Key {
            instance_id: i.into(),
            key_id: k.into(),
        },
        (Some("p"), Some(i), None) => Change::InstancePolicies {
            instance_id: i.into(),
        },
        (Some("i"), Some(a), None) => Change::Iam {
            account_id: a.into(),
        },
        (Some(DIRECTORY_NOTICE), None, None) => Change::Directory,
        _ => Change::Everything,
    }
}

impl PostgresStore {
    /// Connects, creates the schema if needed (safely when several nodes start
    /// at once) and runs the migrations. `schema` isolates deployments that share
    /// one database.
    pub fn open(url: &str, schema: &str) -> Result<Self> {
        if !valid_schema(schema) {
            return Err(StoreError::Unavailable(format!(
                "invalid schema name {schema:?}: use letters, digits and _"
            )));
        }
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5));
        let store = PostgresStore {
            config,
            schema: schema.to_string(),
            channel: format!("keyhold_{schema}"),
            idle: Mutex::new(Vec::new()),
            in_use: AtomicUsize::new(0),
            watching: Arc::new(AtomicBool::new(false)),
        };
        let mut client = store.config.connect(NoTls).map_err(db_err)?;
        let mut tx = client.transaction().map_err(db_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(db_err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET LOCAL search_path TO \"{schema}\"; {}",
            query::schema(Dialect::Postgres)
        ))
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(store)
    }

    fn connect(&self) -> Result<Client> {
        let mut client = self.config.connect(NoTls).map_err(db_err)?;
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
            .map_err(db_err)?;
        Ok(client)
    }

    fn client(&self) -> Result<Pooled<'_>> {
        let reused = self
            .idle
            .lock()
            .map_err(|_| StoreError::Unavailable("pool lock poisoned".into()))?
            .pop();
        let client = match reused {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Ok(Pooled {
            store: self,
            client: Some(client),
        })
    }

    fn doc<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>> {
        let row = self.client()?.query_opt(sql, params).map_err(db_err)?;
        row.map(|r| from_json(&r.get::<_, String>(0))).transpose()
    }

    fn docs<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>> {
        let rows = self.client()?.query(sql, params).map_err(db_err)?;
        rows.iter()
            .map(|r| from_json(&r.get::<_, String>(0)))
            .collect()
    }

    fn write_key(tx: &mut Transaction<'_>, key: &KeyRecord) -> Result<()> {
        let n = tx
            .execute(
                "UPDATE keys SET name=$3, state=$4, extractable=$5, imported=$6, key_ring=$7, updated_at=$8, rotated_at=$9,
                 deleted_at=$10, expiration=$11, revision=$12::BIGINT, doc=$13 WHERE instance_id=$1 AND id=$2 AND revision=$12::BIGINT - 1",
                &[
                    &key.instance_id,
                    &key.id,
                    &key.name,
                    &(u8::from(key.state) as i64),
                    &(key.extractable as i64),
                    &(key.imported as i64),
                    &key.key_ring,
                    &key.updated_at,
                    &key.last_rotated_at,
                    &key.deleted_at,
                    &key.expiration,
                    &key.revision,
                    &to_json(key)?,
                ],
            )
            .map_err(db_err)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    fn insert_version(tx: &mut Transaction<'_>, v: &KeyVersion) -> Result<()> {
        tx.execute(
            "INSERT INTO key_versions (instance_id, key_id, seq, version_id, created_at, blob) VALUES ($1,$2,$3,$4,$5,$6)",
            &[&v.instance_id, &v.key_id, &(v.seq as i64), &v.version_id, &v.created_at, &v.blob],
        )
        .map_err(|e| match db_err(e) {
            StoreError::Duplicate => StoreError::Conflict,
            other => other,
        })?;
        Ok(())
    }

    /// Runs `f` in a transaction on a pooled connection.
    fn in_tx<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(db_err)?;
        let out = f(&mut tx)?;
        tx.commit().map_err(db_err)?;
        Ok(out)
    }
}

impl Drop for PostgresStore {
    /// A `postgres::Client` closes its connection by blocking on its own runtime,
    /// which panics inside an async context: close idle connections on a plain thread.
    fn drop(&mut self) {
        let idle = std::mem::take(
            self.idle
                .get_mut()
                .map(|v| v as &mut Vec<Client>)
                .unwrap_or(&mut Vec::new()),
        );
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// The listener loop: LISTEN on the channel, report notices; report the
/// channel lost whenever the connection drops, and resumed once it is back.
fn listen(config: Config, schema: String, channel: String, listener: ChangeListener) {
    loop {
        let connected = config.connect(NoTls).and_then(|mut c| {
            c.batch_execute(&format!(
                "SET search_path TO \"{schema}\"; LISTEN \"{channel}\""
            ))?;
            Ok(c)
        });
        let mut client = match connected {
            Ok(c) => c,
            Err(_) => {
                listener(Change::Lost);
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
        };
        listener(Change::Resumed);
        loop {
            let next = client.notifications().timeout_iter(HEARTBEAT).next();
            match next {
                Ok(Some(n)) => listener(parse_notice(n.payload())),
                Ok(None) => {
                    // Quiet: make sure the connection is still alive.
                    if client.is_closed() || client.simple_query("SELECT 1").is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
            listener(Change::Alive);
        }
        listener(Change::Lost);
    }
}

impl Store for PostgresStore {
    fn ping(&self) -> Result<()> {
        self.client()?.query_one("SELECT 1", &[]).map_err(db_err)?;
        Ok(())
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            in_use: self.in_use.load(Ordering::Relaxed),
            idle: self.idle.lock().map(|v| v.len()).unwrap_or(0),
            max_idle: POOL_IDLE,
        }
    }

    fn watch(&self, listener: ChangeListener) -> bool {
        if self.watching.swap(true, Ordering::SeqCst) {
            return true;
        }
        listener(Change::Lost);
        let (config, schema, channel) = (
            self.config.clone(),
            self.schema.clone(),
            self.channel.clone(),
        );
        std::thread::Builder::new()
            .name("keyhold-pg-listen".into())
            .spawn(move || listen(config, schema, channel, listener))
            .is_ok()
    }

    fn put_instance(&self, instance: &Instance) -> Result<()> {
        self.client()?
            .execute(
                "INSERT INTO instances (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
                &[&instance.id, &to_json(instance)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_instance(&self, id: &str) -> Result<Option<Instance>> {
        self.doc("SELECT doc FROM instances WHERE id = $1", &[&id])
    }

    fn list_instances(&self) -> Result<Vec<Instance>> {
        self.docs("SELECT doc FROM instances ORDER BY id", &[])
    }

    fn create_instance(&self, instance: &Instance) -> Result<()> {
        self.in_tx(|tx| {
            if let Some(crypto) = &instance.crypto_instance {
                // The row lock orders this against a concurrent delete of the crypto instance.
                let found = tx
                    .query_opt(
                        "SELECT 1 FROM instances WHERE id = $1 FOR UPDATE",
                        &[crypto],
                    )
                    .map_err(db_err)?;
                if found.is_none() {
                    return Err(StoreError::NotFound);
                }
                tx.execute(
                    "INSERT INTO instance_bindings (crypto_id, kms_id) VALUES ($1, $2)",
                    &[crypto, &instance.id],
                )
                .map_err(db_err)?;
            }
            tx.execute(
                "INSERT INTO instances (id, doc) VALUES ($1, $2)",
                &[&instance.id, &to_json(instance)?],
            )
            .map_err(db_err)?;
            notify(tx, &self.channel, DIRECTORY_NOTICE)
        })
    }

    fn update_instance(&self, instance: &Instance) -> Result<()> {
        self.in_tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE instances SET doc = $2 WHERE id = $1",
                    &[&instance.id, &to_json(instance)?],
                )
                .map_err(db_err)?;
            if n != 1 {
                return Err(StoreError::NotFound);
            }
            notify(tx, &self.channel, DIRECTORY_NOTICE)
        })
    }

    fn delete_instance(&self, id: &str) -> Result<()> {
        self.in_tx(|tx| {
            let found = tx
                .query_opt("SELECT 1 FROM instances WHERE id = $1 FOR UPDATE", &[&id])
                .map_err(db_err)?;
            if found.is_none() {
                return Err(StoreError::NotFound);
            }
            let destroyed = u8::from(KeyState::Destroyed) as i64;
            let in_use: i64 = tx
                .query_one(
                    "SELECT (SELECT count(*) FROM instance_bindings WHERE crypto_id = $1)
                          + (SELECT count(*) FROM keys WHERE instance_id = $1 AND state != $2)",
                    &[&id, &destroyed],
                )
                .map_err(db_err)?
                .get(0);
            if in_use > 0 {
                return Err(StoreError::NotEmpty);
            }
            tx.execute("DELETE FROM instances WHERE id = $1", &[&id])
                .map_err(db_err)?;
            tx.execute("DELETE FROM instance_bindings WHERE kms_id = $1", &[&id])
                .map_err(db_err)?;
            notify(tx, &self.channel, DIRECTORY_NOTICE)
        })
    }

    fn list_authorizations(&self) -> Result<Vec<Authorization>> {
        self.docs("SELECT doc FROM authorizations ORDER BY id", &[])
    }

    fn create_authorization(&self, a: &Authorization) -> Result<()> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO authorizations (id, account_id, doc) VALUES ($1, $2, $3)",
                &[&a.id, &a.account_id, &to_json(a)?],
            )
            .map_err(db_err)?;
            notify(tx, &self.channel, DIRECTORY_NOTICE)
        })
    }

    fn delete_authorization(&self, id: &str) -> Result<()> {
        self.in_tx(|tx| {
            let n = tx
                .execute("DELETE FROM authorizations WHERE id = $1", &[&id])
                .map_err(db_err)?;
            if n != 1 {
                return Err(StoreError::NotFound);
            }
            notify(tx, &self.channel, DIRECTORY_NOTICE)
        })
    }

    fn put_api_key(&self, k: &ApiKeyRecord) -> Result<()> {
        self.client()?
            .execute(
                "INSERT INTO api_keys (hash, id, principal_id, principal_kind, account_id, name, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                &[&k.hash, &k.id, &k.principal_id, &k.principal_kind, &k.account_id, &k.name, &k.created_at],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn find_api_key(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>> {
        let row = self
            .client()?
            .query_opt(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = $1"),
                &[&hash],
            )
            .map_err(db_err)?;
        Ok(row.as_ref().map(api_key_row))
    }

    fn list_api_keys(&self, account_id: &str) -> Result<Vec<ApiKeyRecord>> {
        let rows = self
            .client()?
            .query(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at, id"),
                &[&account_id],
            )
            .map_err(db_err)?;
        Ok(rows.iter().map(api_key_row).collect())
    }

    fn get_api_key(&self, account_id: &str, id: &str) -> Result<Option<ApiKeyRecord>> {
        let row = self
            .client()?
            .query_opt(
                &format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND id = $2"
                ),
                &[&account_id, &id],
            )
            .map_err(db_err)?;
        Ok(row.as_ref().map(api_key_row))
    }

    fn delete_api_key(&self, account_id: &str, id: &str) -> Result<()> {
        self.in_tx(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM api_keys WHERE account_id = $1 AND id = $2",
                    &[&account_id, &id],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            notify(tx, &self.channel, &format!("i {account_id}"))
        })
    }

    fn replace_api_key_hash(&self, account_id: &str, id: &str, hash: &[u8]) -> Result<()> {
        self.in_tx(|tx| {
            let n = tx
                .execute(
                    "UPDATE api_keys SET hash = $3 WHERE account_id = $1 AND id = $2",
                    &[&account_id, &id, &hash],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            notify(tx, &self.channel, &format!("i {account_id}"))
        })
    }

    fn insert_iam_object(&self, o: &IamObject) -> Result<()> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO iam_objects (account_id, kind, id, refs, doc) VALUES ($1,$2,$3,$4,$5)",
                &[&o.account_id, &o.kind, &o.id, &refs_column(&o.refs), &o.doc],
            )
            .map_err(db_err)?;
            notify(tx, &self.channel, &format!("i {}", o.account_id))
        })
    }

    fn get_iam_object(&self, account_id: &str, kind: &str, id: &str) -> Result<Option<IamObject>> {
        let row = self
            .client()?
            .query_opt(
                "SELECT account_id, kind, id, refs, doc FROM iam_objects WHERE account_id = $1 AND kind = $2 AND id = $3",
                &[&account_id, &kind, &id],
            )
            .map_err(db_err)?;
        Ok(row.as_ref().map(iam_row))
    }

    fn list_iam_objects(&self, account_id: &str, kind: &str) -> Result<Vec<IamObject>> {
        let rows = self
            .client()?
            .query(
                "SELECT account_id, kind, id, refs, doc FROM iam_objects WHERE account_id = $1 AND kind = $2 ORDER BY id",
                &[&account_id, &kind],
            )
            .map_err(db_err)?;
        Ok(rows.iter().map(iam_row).collect())
    }

    fn delete_iam_object(&self, account_id: &str, kind: &str, id: &str) -> Result<()> {
        self.in_tx(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM iam_objects WHERE account_id = $1 AND kind = $2 AND id = $3",
                    &[&account_id, &kind, &id],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            tx.execute(
                "DELETE FROM iam_objects WHERE account_id = $1 AND refs LIKE $2 ESCAPE '\\'",
                &[&account_id, &refs_like(id)],
            )
            .map_err(db_err)?;
            tx.execute(
                "DELETE FROM api_keys WHERE account_id = $1 AND principal_id = $2",
                &[&account_id, &id],
            )
            .map_err(db_err)?;
            notify(tx, &self.channel, &format!("i {account_id}"))
        })
    }

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row = self
            .client()?
            .query_opt("SELECT value FROM settings WHERE name = $1", &[&name])
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        self.client()?
            .execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                &[&name, &value],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn put_setting_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .map_err(db_err)?;
            let row = tx
                .query_one("SELECT value FROM settings WHERE name = $1", &[&name])
                .map_err(db_err)?;
            Ok(row.get(0))
        })
    }

    fn replace_setting_if(
        &self,
        name: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool> {
        let mut client = self.client()?;
        let n = match expected {
            None => client.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            ),
            Some(old) => client.execute(
                "UPDATE settings SET value = $3 WHERE name = $1 AND value = $2",
                &[&name, &old, &value],
            ),
        }
        .map_err(db_err)?;
        Ok(n == 1)
    }

    fn insert_key(&self, key: &KeyRecord, version: &KeyVersion) -> Result<()> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO keys (instance_id, id, name, state, extractable, imported, key_ring, created_at, updated_at,
                 rotated_at, deleted_at, expiration, revision, doc) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
                &[
                    &key.instance_id,
                    &key.id,
                    &key.name,
                    &(u8::from(key.state) as i64),
                    &(key.extractable as i64),
                    &(key.imported as i64),
                    &key.key_ring,
                    &key.created_at,
                    &key.updated_at,
                    &key.last_rotated_at,
                    &key.deleted_at,
                    &key.expiration,
                    &key.revision,
                    &to_json(key)?,
                ],
            )
            .map_err(db_err)?;
            for alias in &key.aliases {
                tx.execute("INSERT INTO aliases (instance_id, alias, key_id) VALUES ($1,$2,$3)", &[&key.instance_id, alias, &key.id])
                    .map_err(db_err)?;
            }
            Self::insert_version(tx, version)
        })
    }

    fn get_key(&self, instance_id: &str, key_id: &str) -> Result<Option<KeyRecord>> {
        self.doc(
            "SELECT doc FROM keys WHERE instance_id = $1 AND id = $2",
            &[&instance_id, &key_id],
        )
    }

    fn key_id_for_alias(&self, instance_id: &str, alias: &str) -> Result<Option<String>> {
        let row = self
            .client()?
            .query_opt(
                "SELECT key_id FROM aliases WHERE instance_id = $1 AND alias = $2",
                &[&instance_id, &alias],
            )
            .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn update_key(&self, key: &KeyRecord, new_version: Option<&KeyVersion>) -> Result<()> {
        self.in_tx(|tx| {
            Self::write_key(tx, key)?;
            if let Some(v) = new_version {
                Self::insert_version(tx, v)?;
            }
            notify(tx, &self.channel, &key_notice(&key.instance_id, &key.id))
        })
    }

    fn update_key_alias(&self, key: &KeyRecord, alias: &str, add: bool) -> Result<()> {
        self.in_tx(|tx| {
            Self::write_key(tx, key)?;
            if add {
                tx.execute(
                    "INSERT INTO aliases (instance_id, alias, key_id) VALUES ($1,$2,$3)",
                    &[&key.instance_id, &alias, &key.id],
                )
                .map_err(db_err)?;
            } else {
                tx.execute(
                    "DELETE FROM aliases WHERE instance_id = $1 AND alias = $2 AND key_id = $3",
                    &[&key.instance_id, &alias, &key.id],
                )
                .map_err(db_err)?;
            }
            notify(tx, &self.channel, &key_notice(&key.instance_id, &key.id))
        })
    }

    fn purge_key(&self, instance_id: &str, key_id: &str) -> Result<()> {
        self.in_tx(|tx| {
            for table in ["keys", "key_versions", "aliases", "registrations"] {
                let column = if table == "keys" { "id" } else { "key_id" };
                tx.execute(
                    &format!("DELETE FROM {table} WHERE instance_id = $1 AND {column} = $2"),
                    &[&instance_id, &key_id],
                )
                .map_err(db_err)?;
            }
            notify(tx, &self.channel, &key_notice(instance_id, key_id))
        })
    }

    fn list_keys(&self, instance_id: &str, q: &ListKeys, now: Timestamp) -> Result<Vec<KeyRecord>> {
        let w = list_where(Dialect::Postgres, instance_id, q, now);
        let sql = format!(
            "SELECT doc FROM keys WHERE {} {}",
            w.clause,
            order_and_page(q, &now_placeholder(Dialect::Postgres))
        );
        let owned = pg_params(&w.params);
        let params: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        self.docs(&sql, &params)
    }

    fn count_keys(&self, instance_id: &str, q: &ListKeys, now: Timestamp) -> Result<u64> {
        let w = list_where(Dialect::Postgres, instance_id, q, now);
        let owned = pg_params(&w.params);
        let params: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        let row = self
            .client()?
            .query_one(
                &format!("SELECT count(*) FROM keys WHERE {}", w.clause),
                &params,
            )
            .map_err(db_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn deleted_before(&self, before: Timestamp, limit: u32) -> Result<Vec<(String, String)>> {
        let rows = self
            .client()?
            .query(
                "SELECT instance_id, id FROM keys WHERE deleted_at IS NOT NULL AND deleted_at <= $1 AND state = 5 LIMIT $2",
                &[&before, &(limit as i64)],
            )
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn versions(&self, instance_id: &str, key_id: &str) -> Result<Vec<KeyVersion>> {
        let rows = self
            .client()?
            .query(
                "SELECT seq, version_id, created_at, blob FROM key_versions WHERE instance_id = $1 AND key_id = $2 ORDER BY seq DESC",
                &[&instance_id, &key_id],
            )
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| KeyVersion {
                instance_id: instance_id.to_string(),
                key_id: key_id.to_string(),
                seq: r.get::<_, i64>(0) as u32,
                version_id: r.get(1),
                created_at: r.get(2),
                blob: r.get(3),
            })
            .collect())
    }

    fn create_ring(&self, ring: &KeyRing) -> Result<()> {
        self.client()?
            .execute(
                "INSERT INTO key_rings (instance_id, id, doc) VALUES ($1, $2, $3)",
                &[&ring.instance_id, &ring.id, &to_json(ring)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_ring(&self, instance_id: &str, ring_id: &str) -> Result<Option<KeyRing>> {
        self.doc(
            "SELECT doc FROM key_rings WHERE instance_id = $1 AND id = $2",
            &[&instance_id, &ring_id],
        )
    }

    fn list_rings(&self, instance_id: &str) -> Result<Vec<KeyRing>> {
        self.docs(
            "SELECT doc FROM key_rings WHERE instance_id = $1 ORDER BY id",
            &[&instance_id],
        )
    }

    fn delete_ring(&self, instance_id: &str, ring_id: &str, force: bool) -> Result<()> {
        self.in_tx(|tx| {
            // Lock the ring so no key moves into it meanwhile.
            let exists = tx
                .query_opt("SELECT 1 FROM key_rings WHERE instance_id = $1 AND id = $2 FOR UPDATE", &[&instance_id, &ring_id])
                .map_err(db_err)?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            let blocking: i64 = tx
                .query_one(
                    "SELECT count(*) FROM keys WHERE instance_id = $1 AND key_ring = $2 AND (state != 5 OR NOT $3)",
                    &[&instance_id, &ring_id, &force],
                )
                .map_err(db_err)?
                .get(0);
            if blocking > 0 {
                return Err(StoreError::NotEmpty);
            }
            let rows = tx
                .query("SELECT doc FROM keys WHERE instance_id = $1 AND key_ring = $2", &[&instance_id, &ring_id])
                .map_err(db_err)?;
            for r in rows {
                let mut key: KeyRecord = from_json(&r.get::<_, String>(0))?;
                key.key_ring = "default".into();
                key.revision += 1;
                Self::write_key(tx, &key)?;
                notify(tx, &self.channel, &key_notice(instance_id, &key.id))?;
            }
            tx.execute("DELETE FROM key_rings WHERE instance_id = $1 AND id = $2", &[&instance_id, &ring_id]).map_err(db_err)?;
            Ok(())
        })
    }

    fn put_registration(&self, reg: &Registration) -> Result<()> {
        self.client()?
            .execute(
                "INSERT INTO registrations (instance_id, key_id, crn, prevent_deletion, doc) VALUES ($1,$2,$3,$4,$5)
                 ON CONFLICT (instance_id, key_id, crn) DO UPDATE SET prevent_deletion = EXCLUDED.prevent_deletion, doc = EXCLUDED.doc",
                &[&reg.instance_id, &reg.key_id, &reg.resource_crn, &(reg.prevent_key_deletion as i64), &to_json(reg)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_registration(
        &self,
        instance_id: &str,
        key_id: &str,
        crn: &str,
    ) -> Result<Option<Registration>> {
        self.doc(
            "SELECT doc FROM registrations WHERE instance_id = $1 AND key_id = $2 AND crn = $3",
            &[&instance_id, &key_id, &crn],
        )
    }

    fn delete_registration(&self, instance_id: &str, key_id: &str, crn: &str) -> Result<()> {
        let n = self
            .client()?
            .execute(
                "DELETE FROM registrations WHERE instance_id = $1 AND key_id = $2 AND crn = $3",
                &[&instance_id, &key_id, &crn],
            )
            .map_err(db_err)?;
        if n == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    fn list_registrations(
        &self,
        instance_id: &str,
        q: &RegistrationQuery,
    ) -> Result<(Vec<Registration>, u64)> {
        let mut clauses = vec!["instance_id = $1".to_string()];
        let mut params: Vec<Param> = vec![Param::Text(instance_id.into())];
        if let Some(k) = &q.key_id {
            params.push(Param::Text(k.clone()));
            clauses.push(format!("key_id = ${}", params.len()));
        }
        if let Some(p) = &q.crn_pattern {
            params.push(Param::Text(crn_like(p)));
            clauses.push(format!("crn LIKE ${} ESCAPE '\\'", params.len()));
        }
        if let Some(p) = q.prevent_key_deletion {
            params.push(Param::Int(p as i64));
            clauses.push(format!("prevent_deletion = ${}", params.len()));
        }
        let clause = clauses.join(" AND ");
        let owned = pg_params(&params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        let mut client = self.client()?;
        let total: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM registrations WHERE {clause}"),
                &refs,
            )
            .map_err(db_err)?
            .get(0);
        let sql = format!(
            "SELECT doc FROM registrations WHERE {clause} ORDER BY key_id, crn LIMIT {} OFFSET {}",
            q.limit,
            q.offset.min(i64::MAX as u64)
        );
        let rows = client.query(&sql, &refs).map_err(db_err)?;
        let regs = rows
            .iter()
            .map(|r| from_json(&r.get::<_, String>(0)))
            .collect::<Result<Vec<_>>>()?;
        Ok((regs, total as u64))
    }

    fn put_instance_policies(&self, instance_id: &str, policies: &[InstancePolicy]) -> Result<()> {
        self.in_tx(|tx| {
            for p in policies {
                tx.execute(
                    "INSERT INTO instance_policies (instance_id, policy_type, doc) VALUES ($1,$2,$3)
                     ON CONFLICT (instance_id, policy_type) DO UPDATE SET doc = EXCLUDED.doc",
                    &[&instance_id, &p.policy_type.name(), &to_json(p)?],
                )
                .map_err(db_err)?;
            }
            notify(tx, &self.channel, &format!("p {instance_id}"))
        })
    }

    fn instance_policies(&self, instance_id: &str) -> Result<Vec<InstancePolicy>> {
        self.docs(
            "SELECT doc FROM instance_policies WHERE instance_id = $1 ORDER BY policy_type",
            &[&instance_id],
        )
    }

    fn put_import_token(&self, token: &ImportToken) -> Result<()> {
        self.client()?
            .execute(
                "INSERT INTO import_tokens (instance_id, doc) VALUES ($1, $2) ON CONFLICT (instance_id) DO UPDATE SET doc = EXCLUDED.doc",
                &[&token.instance_id, &to_json(token)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_import_token(&self, instance_id: &str) -> Result<Option<ImportToken>> {
        self.doc(
            "SELECT doc FROM import_tokens WHERE instance_id = $1",
            &[&instance_id],
        )
    }

    fn retrieve_import_token(&self, instance_id: &str) -> Result<Option<(ImportToken, bool)>> {
        self.in_tx(|tx| {
            // FOR UPDATE: concurrent retrievals on any node are counted one by one.
            let row = tx
                .query_opt(
                    "SELECT doc FROM import_tokens WHERE instance_id = $1 FOR UPDATE",
                    &[&instance_id],
                )
                .map_err(db_err)?;
            let Some(row) = row else { return Ok(None) };
            let mut token: ImportToken = from_json(&row.get::<_, String>(0))?;
            if token.remaining_retrievals == 0 {
                return Ok(Some((token, false)));
            }
            token.remaining_retrievals -= 1;
            tx.execute(
                "UPDATE import_tokens SET doc = $2 WHERE instance_id = $1",
                &[&instance_id, &to_json(&token)?],
            )
            .map_err(db_err)?;
            Ok(Some((token, true)))
        })
    }

    fn version_blobs_after(&self, after: &str, limit: u32) -> Result<Vec<VersionBlob>> {
        let rows = self
            .client()?
            .query(
                "SELECT v.instance_id, v.key_id, v.version_id, COALESCE(k.extractable, 0), v.blob FROM key_versions v
                 LEFT JOIN keys k ON k.instance_id = v.instance_id AND k.id = v.key_id
                 WHERE v.version_id COLLATE \"C\" > $1 ORDER BY v.version_id COLLATE \"C\" LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| VersionBlob {
                instance_id: r.get(0),
                key_id: r.get(1),
                version_id: r.get(2),
                extractable: r.get::<_, i64>(3) != 0,
                blob: r.get(4),
            })
            .collect())
    }

    fn count_versions(&self) -> Result<u64> {
        let row = self
            .client()?
            .query_one("SELECT COUNT(*) FROM key_versions", &[])
            .map_err(db_err)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    fn replace_version_blob_if(&self, version_id: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let n = self
            .client()?
            .execute(
                "UPDATE key_versions SET blob = $3 WHERE version_id = $1 AND blob = $2",
                &[&version_id, &old, &new],
            )
            .map_err(db_err)?;
        Ok(n == 1)
    }

    fn import_tokens_after(&self, after: &str, limit: u32) -> Result<Vec<ImportToken>> {
        self.docs(
            "SELECT doc FROM import_tokens WHERE instance_id COLLATE \"C\" > $1 ORDER BY instance_id COLLATE \"C\" LIMIT $2",
            &[&after, &i64::from(limit)],
        )
    }

    fn count_import_tokens(&self) -> Result<u64> {
        let row = self
            .client()?
            .query_one("SELECT COUNT(*) FROM import_tokens", &[])
            .map_err(db_err)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    fn replace_import_token_key_if(
        &self,
        instance_id: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        self.in_tx(|tx| {
            let row = tx
                .query_opt(
                    "SELECT doc FROM import_tokens WHERE instance_id = $1 FOR UPDATE",
                    &[&instance_id],
                )
                .map_err(db_err)?;
            let Some(row) = row else { return Ok(false) };
            let mut token: ImportToken = from_json(&row.get::<_, String>(0))?;
            if token.wrapped_private_key != old {
                return Ok(false);
            }
            token.wrapped_private_key = new.to_vec();
            tx.execute(
                "UPDATE import_tokens SET doc = $2 WHERE instance_id = $1",
                &[&instance_id, &to_json(&token)?],
            )
            .map_err(db_err)?;
            Ok(true)
        })
    }
}
