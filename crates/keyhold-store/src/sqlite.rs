//! SQLite store: WAL with `synchronous=FULL`, so an acknowledged write survives a
//! crash or power loss. Records are JSON documents beside the indexed columns
//! that list queries need.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use keyhold_core::list::ListKeys;
use keyhold_core::model::{
    ImportToken, Instance, InstancePolicy, KeyRecord, KeyRing, KeyState, KeyVersion, Registration,
};
use keyhold_core::resource::Authorization;
use keyhold_core::timefmt::Timestamp;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension, Transaction};

use crate::query::{
    crn_like, list_where, now_placeholder, order_and_page, refs_column, refs_like, refs_parse,
    schema, Dialect, Param,
};
use crate::{
    ApiKeyRecord, IamObject, PoolStatus, RegistrationQuery, Result, Store, StoreError, VersionBlob,
};

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            StoreError::Duplicate
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The JSON document of the one row `sql` selects, if any.
fn doc<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<T>> {
    let text: Option<String> = conn
        .query_row(sql, params, |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    text.map(|d| from_json(&d)).transpose()
}

/// The JSON documents of every row `sql` selects.
fn docs<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params, |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(from_json(&row.map_err(db_err)?)?);
    }
    Ok(out)
}

const API_KEY_COLUMNS: &str =
    "hash, id, principal_id, principal_kind, account_id, name, created_at";

fn api_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        hash: r.get(0)?,
        id: r.get(1)?,
        principal_id: r.get(2)?,
        principal_kind: r.get(3)?,
        account_id: r.get(4)?,
        name: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn iam_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IamObject> {
    Ok(IamObject {
        account_id: r.get(0)?,
        kind: r.get(1)?,
        id: r.get(2)?,
        refs: refs_parse(&r.get::<_, String>(3)?),
        doc: r.get(4)?,
    })
}

fn sqlite_params(params: &[Param]) -> Vec<Value> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(t) => Value::Text(t.clone()),
            Param::Int(n) => Value::Integer(*n),
        })
        .collect()
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(db_err)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        // CRNs are case-sensitive; so must LIKE be.
        conn.pragma_update(None, "case_sensitive_like", "ON")
            .map_err(db_err)?;
        conn.execute_batch(&schema(Dialect::Sqlite))
            .map_err(db_err)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Unavailable("store lock poisoned".into()))
    }

    fn write_key(tx: &Transaction<'_>, key: &KeyRecord) -> Result<()> {
        let n = tx
            .execute(
                "UPDATE keys SET name=?3, state=?4, extractable=?5, imported=?6, key_ring=?7, updated_at=?8, rotated_at=?9,
                 deleted_at=?10, expiration=?11, revision=?12, doc=?13 WHERE instance_id=?1 AND id=?2 AND revision=?12 - 1",
                params![
                    key.instance_id, key.id, key.name, u8::from(key.state), key.extractable, key.imported, key.key_ring,
                    key.updated_at, key.last_rotated_at, key.deleted_at, key.expiration, key.revision, to_json(key)?
                ],
            )
            .map_err(db_err)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    fn insert_version(tx: &Transaction<'_>, v: &KeyVersion) -> Result<()> {
        tx.execute(
            "INSERT INTO key_versions (instance_id, key_id, seq, version_id, created_at, blob) VALUES (?1,?2,?3,?4,?5,?6)",
            params![v.instance_id, v.key_id, v.seq, v.version_id, v.created_at, v.blob],
        )
        .map_err(|e| match db_err(e) {
            StoreError::Duplicate => StoreError::Conflict,
            other => other,
        })?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn ping(&self) -> Result<()> {
        // Reads the schema page, so an unreadable or corrupt file fails the check.
        self.conn()?
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(db_err)?;
        Ok(())
    }

    fn pool_status(&self) -> PoolStatus {
        // One connection behind a mutex: busy when someone holds it.
        let in_use = usize::from(self.conn.try_lock().is_err());
        PoolStatus {
            in_use,
            idle: 1 - in_use,
            max_idle: 1,
        }
    }

    fn put_instance(&self, instance: &Instance) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO instances (id, doc) VALUES (?1, ?2)",
                params![instance.id, to_json(instance)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_instance(&self, id: &str) -> Result<Option<Instance>> {
        doc(
            &*self.conn()?,
            "SELECT doc FROM instances WHERE id = ?1",
            [id],
        )
    }

    fn list_instances(&self) -> Result<Vec<Instance>> {
        docs(&*self.conn()?, "SELECT doc FROM instances ORDER BY id", [])
    }

    fn create_instance(&self, instance: &Instance) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        if let Some(crypto) = &instance.crypto_instance {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM instances WHERE id = ?1", [crypto], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(db_err)?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            tx.execute(
                "INSERT INTO instance_bindings (crypto_id, kms_id) VALUES (?1, ?2)",
                params![crypto, instance.id],
            )
            .map_err(db_err)?;
        }
        tx.execute(
            "INSERT INTO instances (id, doc) VALUES (?1, ?2)",
            params![instance.id, to_json(instance)?],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn update_instance(&self, instance: &Instance) -> Result<()> {
        let n = self
            .conn()?
            .execute(
                "UPDATE instances SET doc = ?2 WHERE id = ?1",
                params![instance.id, to_json(instance)?],
            )
            .map_err(db_err)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn delete_instance(&self, id: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let in_use: i64 = tx
            .query_row(
                "SELECT (SELECT count(*) FROM instance_bindings WHERE crypto_id = ?1)
                      + (SELECT count(*) FROM keys WHERE instance_id = ?1 AND state != ?2)",
                params![id, u8::from(KeyState::Destroyed)],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if in_use > 0 {
            return Err(StoreError::NotEmpty);
        }
        let n = tx
            .execute("DELETE FROM instances WHERE id = ?1", [id])
            .map_err(db_err)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute("DELETE FROM instance_bindings WHERE kms_id = ?1", [id])
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn list_authorizations(&self) -> Result<Vec<Authorization>> {
        docs(
            &*self.conn()?,
            "SELECT doc FROM authorizations ORDER BY id",
            [],
        )
    }

    fn create_authorization(&self, a: &Authorization) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO authorizations (id, account_id, doc) VALUES (?1, ?2, ?3)",
                params![a.id, a.account_id, to_json(a)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn delete_authorization(&self, id: &str) -> Result<()> {
        let n = self
            .conn()?
            .execute("DELETE FROM authorizations WHERE id = ?1", [id])
            .map_err(db_err)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn put_api_key(&self, k: &ApiKeyRecord) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO api_keys (hash, id, principal_id, principal_kind, account_id, name, created_at) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                params![k.hash, k.id, k.principal_id, k.principal_kind, k.account_id, k.name, k.created_at],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn find_api_key(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>> {
        self.conn()?
            .query_row(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = ?1"),
                [hash],
                api_key_row,
            )
            .optional()
            .map_err(db_err)
    }

    fn list_api_keys(&self, account_id: &str) -> Result<Vec<ApiKeyRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = ?1 ORDER BY created_at, id"
            ))
            .map_err(db_err)?;
        let rows = stmt.query_map([account_id], api_key_row).map_err(db_err)?;
        rows.map(|r| r.map_err(db_err)).collect()
    }

    fn get_api_key(&self, account_id: &str, id: &str) -> Result<Option<ApiKeyRecord>> {
        self.conn()?
            .query_row(
                &format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = ?1 AND id = ?2"
                ),
                [account_id, id],
                api_key_row,
            )
            .optional()
            .map_err(db_err)
    }

    fn delete_api_key(&self, account_id: &str, id: &str) -> Result<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM api_keys WHERE account_id = ?1 AND id = ?2",
                [account_id, id],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn replace_api_key_hash(&self, account_id: &str, id: &str, hash: &[u8]) -> Result<()> {
        let n = self
            .conn()?
            .execute(
                "UPDATE api_keys SET hash = ?3 WHERE account_id = ?1 AND id = ?2",
                params![account_id, id, hash],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn insert_iam_object(&self, o: &IamObject) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO iam_objects (account_id, kind, id, refs, doc) VALUES (?1,?2,?3,?4,?5)",
                params![o.account_id, o.kind, o.id, refs_column(&o.refs), o.doc],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_iam_object(&self, account_id: &str, kind: &str, id: &str) -> Result<Option<IamObject>> {
        self.conn()?
            .query_row(
                "SELECT account_id, kind, id, refs, doc FROM iam_objects WHERE account_id = ?1 AND kind = ?2 AND id = ?3",
                [account_id, kind, id],
                iam_row,
            )
            .optional()
            .map_err(db_err)
    }

    fn list_iam_objects(&self, account_id: &str, kind: &str) -> Result<Vec<IamObject>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT account_id, kind, id, refs, doc FROM iam_objects WHERE account_id = ?1 AND kind = ?2 ORDER BY id",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([account_id, kind], iam_row)
            .map_err(db_err)?;
        rows.map(|r| r.map_err(db_err)).collect()
    }

    fn delete_iam_object(&self, account_id: &str, kind: &str, id: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let n = tx
            .execute(
                "DELETE FROM iam_objects WHERE account_id = ?1 AND kind = ?2 AND id = ?3",
                [account_id, kind, id],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "DELETE FROM iam_objects WHERE account_id = ?1 AND refs LIKE ?2 ESCAPE '\\'",
            params![account_id, refs_like(id)],
        )
        .map_err(db_err)?;
        tx.execute(
            "DELETE FROM api_keys WHERE account_id = ?1 AND principal_id = ?2",
            [account_id, id],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.conn()?
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
                params![name, value],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn put_setting_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT OR IGNORE INTO settings (name, value) VALUES (?1, ?2)",
            params![name, value],
        )
        .map_err(db_err)?;
        conn.query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .map_err(db_err)
    }

    fn replace_setting_if(
        &self,
        name: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool> {
        let conn = self.conn()?;
        let n = match expected {
            None => conn.execute(
                "INSERT OR IGNORE INTO settings (name, value) VALUES (?1, ?2)",
                params![name, value],
            ),
            Some(old) => conn.execute(
                "UPDATE settings SET value = ?3 WHERE name = ?1 AND value = ?2",
                params![name, old, value],
            ),
        }
        .map_err(db_err)?;
        Ok(n == 1)
    }

    fn insert_key(&self, key: &KeyRecord, version: &KeyVersion) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO keys (instance_id, id, name, state, extractable, imported, key_ring, created_at, updated_at,
             rotated_at, deleted_at, expiration, revision, doc) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
            params![
                key.instance_id, key.id, key.name, u8::from(key.state), key.extractable, key.imported, key.key_ring,
                key.created_at, key.updated_at, key.last_rotated_at, key.deleted_at, key.expiration, key.revision, to_json(key)?
            ],
        )
        .map_err(db_err)?;
        for alias in &key.aliases {
            tx.execute(
                "INSERT INTO aliases (instance_id, alias, key_id) VALUES (?1,?2,?3)",
                params![key.instance_id, alias, key.id],
            )
            .map_err(db_err)?;
        }
        Self::insert_version(&tx, version)?;
        tx.commit().map_err(db_err)
    }

    fn get_key(&self, instance_id: &str, key_id: &str) -> Result<Option<KeyRecord>> {
        doc(
            &*self.conn()?,
            "SELECT doc FROM keys WHERE instance_id = ?1 AND id = ?2",
            [instance_id, key_id],
        )
    }

    fn key_id_for_alias(&self, instance_id: &str, alias: &str) -> Result<Option<String>> {
        self.conn()?
            .query_row(
                "SELECT key_id FROM aliases WHERE instance_id = ?1 AND alias = ?2",
                [instance_id, alias],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
    }

    fn update_key(&self, key: &KeyRecord, new_version: Option<&KeyVersion>) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        Self::write_key(&tx, key)?;
        if let Some(v) = new_version {
            Self::insert_version(&tx, v)?;
        }
        tx.commit().map_err(db_err)
    }

    fn update_key_alias(&self, key: &KeyRecord, alias: &str, add: bool) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        Self::write_key(&tx, key)?;
        if add {
            tx.execute(
                "INSERT INTO aliases (instance_id, alias, key_id) VALUES (?1,?2,?3)",
                params![key.instance_id, alias, key.id],
            )
            .map_err(db_err)?;
        } else {
            tx.execute(
                "DELETE FROM aliases WHERE instance_id = ?1 AND alias = ?2 AND key_id = ?3",
                params![key.instance_id, alias, key.id],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn purge_key(&self, instance_id: &str, key_id: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        for table in ["keys", "key_versions", "aliases", "registrations"] {
            let column = if table == "keys" { "id" } else { "key_id" };
            tx.execute(
                &format!("DELETE FROM {table} WHERE instance_id = ?1 AND {column} = ?2"),
                [instance_id, key_id],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn list_keys(&self, instance_id: &str, q: &ListKeys, now: Timestamp) -> Result<Vec<KeyRecord>> {
        let w = list_where(Dialect::Sqlite, instance_id, q, now);
        let sql = format!(
            "SELECT doc FROM keys WHERE {} {}",
            w.clause,
            order_and_page(q, &now_placeholder(Dialect::Sqlite))
        );
        docs(
            &*self.conn()?,
            &sql,
            params_from_iter(sqlite_params(&w.params)),
        )
    }

    fn count_keys(&self, instance_id: &str, q: &ListKeys, now: Timestamp) -> Result<u64> {
        let w = list_where(Dialect::Sqlite, instance_id, q, now);
        let n: i64 = self
            .conn()?
            .query_row(
                &format!("SELECT count(*) FROM keys WHERE {}", w.clause),
                params_from_iter(sqlite_params(&w.params)),
                |r| r.get(0),
            )
            .map_err(db_err)?;
        Ok(n as u64)
    }

    fn deleted_before(&self, before: Timestamp, limit: u32) -> Result<Vec<(String, String)>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT instance_id, id FROM keys WHERE deleted_at IS NOT NULL AND deleted_at <= ?1 AND state = 5 LIMIT ?2")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![before, limit], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    fn versions(&self, instance_id: &str, key_id: &str) -> Result<Vec<KeyVersion>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT seq, version_id, created_at, blob FROM key_versions WHERE instance_id = ?1 AND key_id = ?2 ORDER BY seq DESC")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([instance_id, key_id], |r| {
                Ok(KeyVersion {
                    instance_id: instance_id.to_string(),
                    key_id: key_id.to_string(),
                    seq: r.get(0)?,
                    version_id: r.get(1)?,
                    created_at: r.get(2)?,
                    blob: r.get(3)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    fn create_ring(&self, ring: &KeyRing) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO key_rings (instance_id, id, doc) VALUES (?1, ?2, ?3)",
                params![ring.instance_id, ring.id, to_json(ring)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_ring(&self, instance_id: &str, ring_id: &str) -> Result<Option<KeyRing>> {
        doc(
            &*self.conn()?,
            "SELECT doc FROM key_rings WHERE instance_id = ?1 AND id = ?2",
            [instance_id, ring_id],
        )
    }

    fn list_rings(&self, instance_id: &str) -> Result<Vec<KeyRing>> {
        docs(
            &*self.conn()?,
            "SELECT doc FROM key_rings WHERE instance_id = ?1 ORDER BY id",
            [instance_id],
        )
    }

    fn delete_ring(&self, instance_id: &str, ring_id: &str, force: bool) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM key_rings WHERE instance_id = ?1 AND id = ?2",
                [instance_id, ring_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let destroyed = u8::from(KeyState::Destroyed);
        let blocking: i64 = tx
            .query_row(
                "SELECT count(*) FROM keys WHERE instance_id = ?1 AND key_ring = ?2 AND (state != ?3 OR ?4 = 0)",
                params![instance_id, ring_id, destroyed, force],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if blocking > 0 {
            return Err(StoreError::NotEmpty);
        }
        // Only destroyed keys remain; with force they move to the default ring.
        let mut moved = Vec::new();
        {
            let mut stmt = tx
                .prepare("SELECT doc FROM keys WHERE instance_id = ?1 AND key_ring = ?2")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([instance_id, ring_id], |r| r.get::<_, String>(0))
                .map_err(db_err)?;
            for row in rows {
                moved.push(from_json::<KeyRecord>(&row.map_err(db_err)?)?);
            }
        }
        for mut key in moved {
            key.key_ring = "default".into();
            key.revision += 1;
            Self::write_key(&tx, &key)?;
        }
        tx.execute(
            "DELETE FROM key_rings WHERE instance_id = ?1 AND id = ?2",
            [instance_id, ring_id],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn put_registration(&self, reg: &Registration) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO registrations (instance_id, key_id, crn, prevent_deletion, doc) VALUES (?1,?2,?3,?4,?5)",
                params![reg.instance_id, reg.key_id, reg.resource_crn, reg.prevent_key_deletion, to_json(reg)?],
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
        doc(
            &*self.conn()?,
            "SELECT doc FROM registrations WHERE instance_id = ?1 AND key_id = ?2 AND crn = ?3",
            [instance_id, key_id, crn],
        )
    }

    fn delete_registration(&self, instance_id: &str, key_id: &str, crn: &str) -> Result<()> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM registrations WHERE instance_id = ?1 AND key_id = ?2 AND crn = ?3",
                [instance_id, key_id, crn],
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
        let mut clauses = vec!["instance_id = ?".to_string()];
        let mut params: Vec<Value> = vec![Value::Text(instance_id.into())];
        if let Some(k) = &q.key_id {
            clauses.push("key_id = ?".into());
            params.push(Value::Text(k.clone()));
        }
        if let Some(p) = &q.crn_pattern {
            clauses.push("crn LIKE ? ESCAPE '\\'".into());
            params.push(Value::Text(crn_like(p)));
        }
        if let Some(p) = q.prevent_key_deletion {
            clauses.push("prevent_deletion = ?".into());
            params.push(Value::Integer(p as i64));
        }
        let clause = clauses.join(" AND ");
        let conn = self.conn()?;
        let total: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM registrations WHERE {clause}"),
                params_from_iter(params.iter()),
                |r| r.get(0),
            )
            .map_err(db_err)?;
        let sql = format!(
            "SELECT doc FROM registrations WHERE {clause} ORDER BY key_id, crn LIMIT {} OFFSET {}",
            q.limit,
            q.offset.min(i64::MAX as u64)
        );
        let mut stmt = conn.prepare(&sql).map_err(db_err)?;
        let rows = stmt
            .query_map(params_from_iter(params.iter()), |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(from_json(&row.map_err(db_err)?)?);
        }
        Ok((out, total as u64))
    }

    fn put_instance_policies(&self, instance_id: &str, policies: &[InstancePolicy]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        for p in policies {
            tx.execute(
                "INSERT OR REPLACE INTO instance_policies (instance_id, policy_type, doc) VALUES (?1,?2,?3)",
                params![instance_id, p.policy_type.name(), to_json(p)?],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn instance_policies(&self, instance_id: &str) -> Result<Vec<InstancePolicy>> {
        docs(
            &*self.conn()?,
            "SELECT doc FROM instance_policies WHERE instance_id = ?1 ORDER BY policy_type",
            [instance_id],
        )
    }

    fn put_import_token(&self, token: &ImportToken) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO import_tokens (instance_id, doc) VALUES (?1, ?2)",
                params![token.instance_id, to_json(token)?],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn get_import_token(&self, instance_id: &str) -> Result<Option<ImportToken>> {
        doc(
            &*self.conn()?,
            "SELECT doc FROM import_tokens WHERE instance_id = ?1",
            [instance_id],
        )
    }

    fn retrieve_import_token(&self, instance_id: &str) -> Result<Option<(ImportToken, bool)>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let doc: Option<String> = tx
            .query_row(
                "SELECT doc FROM import_tokens WHERE instance_id = ?1",
                [instance_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        let Some(doc) = doc else { return Ok(None) };
        let mut token: ImportToken = from_json(&doc)?;
        if token.remaining_retrievals == 0 {
            return Ok(Some((token, false)));
        }
        token.remaining_retrievals -= 1;
        tx.execute(
            "UPDATE import_tokens SET doc = ?2 WHERE instance_id = ?1",
            params![instance_id, to_json(&token)?],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Some((token, true)))
    }

    fn version_blobs_after(&self, after: &str, limit: u32) -> Result<Vec<VersionBlob>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT v.instance_id, v.key_id, v.version_id, COALESCE(k.extractable, 0), v.blob FROM key_versions v
                 LEFT JOIN keys k ON k.instance_id = v.instance_id AND k.id = v.key_id
                 WHERE v.version_id > ?1 ORDER BY v.version_id LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![after, i64::from(limit)], |r| {
                Ok(VersionBlob {
                    instance_id: r.get(0)?,
                    key_id: r.get(1)?,
                    version_id: r.get(2)?,
                    extractable: r.get(3)?,
                    blob: r.get(4)?,
                })
            })
            .map_err(db_err)?;
        rows.map(|r| r.map_err(db_err)).collect()
    }

    fn count_versions(&self) -> Result<u64> {
        let n: i64 = self
            .conn()?
            .query_row("SELECT COUNT(*) FROM key_versions", [], |r| r.get(0))
            .map_err(db_err)?;
        Ok(n.max(0) as u64)
    }

    fn replace_version_blob_if(&self, version_id: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let n = self
            .conn()?
            .execute(
                "UPDATE key_versions SET blob = ?3 WHERE version_id = ?1 AND blob = ?2",
                params![version_id, old, new],
            )
            .map_err(db_err)?;
        Ok(n == 1)
    }

    fn import_tokens_after(&self, after: &str, limit: u32) -> Result<Vec<ImportToken>> {
        docs(
            &*self.conn()?,
            "SELECT doc FROM import_tokens WHERE instance_id > ?1 ORDER BY instance_id LIMIT ?2",
            params![after, i64::from(limit)],
        )
    }

    fn count_import_tokens(&self) -> Result<u64> {
        let n: i64 = self
            .conn()?
            .query_row("SELECT COUNT(*) FROM import_tokens", [], |r| r.get(0))
            .map_err(db_err)?;
        Ok(n.max(0) as u64)
    }

    fn replace_import_token_key_if(
        &self,
        instance_id: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let doc: Option<String> = tx
            .query_row(
                "SELECT doc FROM import_tokens WHERE instance_id = ?1",
                [instance_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        let Some(doc) = doc else { return Ok(false) };
        let mut token: ImportToken = from_json(&doc)?;
        if token.wrapped_private_key != old {
            return Ok(false);
        }
        token.wrapped_private_key = new.to_vec();
        tx.execute(
            "UPDATE import_tokens SET doc = ?2 WHERE instance_id = ?1",
            params![instance_id, to_json(&token)?],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use keyhold_core::list::ListKeys;
    use keyhold_core::model::VersionRef;

    use super::*;

    fn key(id: &str, ring: &str, state: KeyState, aliases: &[&str]) -> KeyRecord {
        KeyRecord {
            instance_id: "inst".into(),
            id: id.into(),
            name: format!("name-{id}"),
            description: None,
            tags: vec![],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            extractable: false,
            imported: false,
            state,
            expiration: None,
            key_ring: ring.into(),
            created_at: 100,
            created_by: "u".into(),
            updated_at: 100,
            last_rotated_at: None,
            last_action_at: 100,
            deleted_at: None,
            deleted_by: None,
            rotation: None,
            dual_auth: None,
            deletion_authorization: None,
            current_version: VersionRef {
                id: format!("v-{id}"),
                created_at: 100,
            },
            version_count: 1,
            revision: 1,
        }
    }

    fn version(k: &KeyRecord, seq: u32) -> KeyVersion {
        KeyVersion {
            instance_id: k.instance_id.clone(),
            key_id: k.id.clone(),
            version_id: format!("{}-{seq}", k.id),
            seq,
            created_at: 100,
            blob: vec![seq as u8; 8],
        }
    }

    #[test]
    fn blobs_walk_in_order_and_swap_by_compare() {
        let s = SqliteStore::open_in_memory().unwrap();
        for id in ["b", "a", "c"] {
            let mut k = key(id, "default", KeyState::Active, &[]);
            k.extractable = id == "c";
            s.insert_key(&k, &version(&k, 1)).unwrap();
        }
        assert_eq!(s.count_versions().unwrap(), 3);
        let first = s.version_blobs_after("", 2).unwrap();
        let ids: Vec<_> = first.iter().map(|b| b.version_id.as_str()).collect();
        assert_eq!(ids, ["a-1", "b-1"]);
        let rest = s.version_blobs_after("b-1", 2).unwrap();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].extractable && !first[0].extractable);
        assert!(!s.replace_version_blob_if("a-1", b"other", b"new").unwrap());
        assert!(s
            .replace_version_blob_if("a-1", &first[0].blob, b"new")
            .unwrap());
        assert_eq!(s.version_blobs_after("", 1).unwrap()[0].blob, b"new");

        let t = ImportToken {
            instance_id: "inst".into(),
            created_at: 1,
            expires_at: 1000,
            max_retrievals: 1,
            remaining_retrievals: 1,
            public_key_pem: String::new(),
            nonce: vec![1; 12],
            wrapped_private_key: vec![1],
            token_id: "t".into(),
        };
        s.put_import_token(&t).unwrap();
        assert_eq!(s.count_import_tokens().unwrap(), 1);
        assert_eq!(s.import_tokens_after("", 5).unwrap().len(), 1);
        assert!(s.import_tokens_after("inst", 5).unwrap().is_empty());
        assert!(!s.replace_import_token_key_if("inst", &[2], &[3]).unwrap());
        assert!(s.replace_import_token_key_if("inst", &[1], &[3]).unwrap());
        assert_eq!(
            s.get_import_token("inst")
                .unwrap()
                .unwrap()
                .wrapped_private_key,
            [3]
        );
    }

    #[test]
    fn deleting_an_iam_object_cascades_to_what_names_it() {
        let s = SqliteStore::open_in_memory().unwrap();
        let obj = |kind: &str, id: &str, refs: &[&str]| IamObject {
            account_id: "a".into(),
            kind: kind.into(),
            id: id.into(),
            refs: refs.iter().map(|r| r.to_string()).collect(),
            doc: "{}".into(),
        };
        s.insert_iam_object(&obj("user", "u_1", &[])).unwrap();
        s.insert_iam_object(&obj("user", "u%1", &[])).unwrap();
        s.insert_iam_object(&obj("group", "g", &[])).unwrap();
        s.insert_iam_object(&obj("member", "g/u_1", &["g", "u_1"]))
            .unwrap();
        s.insert_iam_object(&obj("policy", "p1", &["u_1"])).unwrap();
        s.insert_iam_object(&obj("policy", "p2", &["u%1"])).unwrap();
        s.insert_iam_object(&obj("policy", "p3", &["g"])).unwrap();
        assert_eq!(
            s.insert_iam_object(&obj("policy", "p1", &[])),
            Err(StoreError::Duplicate)
        );
        s.put_api_key(&ApiKeyRecord {
            hash: vec![1; 32],
            id: "k1".into(),
            principal_id: "u_1".into(),
            principal_kind: "user".into(),
            account_id: "a".into(),
            name: "n".into(),
            created_at: 0,
        })
        .unwrap();
        s.delete_iam_object("a", "user", "u_1").unwrap();
        let ids = |kind: &str| -> Vec<String> {
            s.list_iam_objects("a", kind)
                .unwrap()
                .into_iter()
                .map(|o| o.id)
                .collect()
        };
        // LIKE's wildcards in ids are escaped: "u%1" and its policy stay.
        assert_eq!(ids("user"), vec!["u%1"]);
        assert_eq!(ids("policy"), vec!["p2", "p3"]);
        assert!(ids("member").is_empty());
        assert!(s.list_api_keys("a").unwrap().is_empty());
        assert_eq!(
            s.delete_iam_object("a", "user", "u_1"),
            Err(StoreError::NotFound)
        );
        s.delete_iam_object("a", "group", "g").unwrap();
        assert_eq!(ids("policy"), vec!["p2"]);
    }

    #[test]
    fn settings_compare_and_swap() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert!(s.replace_setting_if("c", None, b"one").unwrap());
        assert!(!s.replace_setting_if("c", None, b"two").unwrap());
        assert!(!s.replace_setting_if("c", Some(b"zero"), b"two").unwrap());
        assert!(s.replace_setting_if("c", Some(b"one"), b"two").unwrap());
        assert_eq!(s.get_setting("c").unwrap().unwrap(), b"two");
    }

    #[test]
    fn optimistic_writes_detect_a_lost_update() {
        let s = SqliteStore::open_in_memory().unwrap();
        let k = key("a", "default", KeyState::Active, &[]);
        s.insert_key(&k, &version(&k, 1)).unwrap();
        let mut first = s.get_key("inst", "a").unwrap().unwrap();
        let mut second = first.clone();
        first.revision += 1;
        first.name = "first".into();
        s.update_key(&first, Some(&version(&first, 2))).unwrap();
        second.revision += 1;
        second.name = "second".into();
        assert_eq!(s.update_key(&second, None), Err(StoreError::Conflict));
        assert_eq!(s.get_key("inst", "a").unwrap().unwrap().name, "first");
        let versions = s.versions("inst", "a").unwrap();
        assert_eq!(
            versions.iter().map(|v| v.seq).collect::<Vec<_>>(),
            vec![2, 1]
        );
    }

    #[test]
    fn aliases_are_unique_per_instance() {
        let s = SqliteStore::open_in_memory().unwrap();
        let a = key("a", "default", KeyState::Active, &["shared"]);
        s.insert_key(&a, &version(&a, 1)).unwrap();
        let b = key("b", "default", KeyState::Active, &["shared"]);
        assert_eq!(
            s.insert_key(&b, &version(&b, 1)),
            Err(StoreError::Duplicate)
        );
        assert!(
            s.get_key("inst", "b").unwrap().is_none(),
            "a refused insert leaves nothing behind"
        );
        assert_eq!(
            s.key_id_for_alias("inst", "shared").unwrap().as_deref(),
            Some("a")
        );
    }

    #[test]
    fn list_filters_and_counts() {
        let s = SqliteStore::open_in_memory().unwrap();
        for (id, ring, state) in [
            ("a", "default", KeyState::Active),
            ("b", "r1", KeyState::Suspended),
            ("c", "default", KeyState::Destroyed),
        ] {
            let k = key(id, ring, state, &[]);
            s.insert_key(&k, &version(&k, 1)).unwrap();
        }
        let q = ListKeys::default();
        assert_eq!(
            s.count_keys("inst", &q, 200).unwrap(),
            2,
            "deleted keys are not listed by default"
        );
        let q = ListKeys::from_query([("state", "5")], None).unwrap();
        assert_eq!(s.list_keys("inst", &q, 200).unwrap()[0].id, "c");
        let q = ListKeys::from_query([], Some("r1".into())).unwrap();
        assert_eq!(s.list_keys("inst", &q, 200).unwrap()[0].id, "b");
        let q = ListKeys::from_query([("search", "name-a")], None).unwrap();
        assert_eq!(s.count_keys("inst", &q, 200).unwrap(), 1);
        let q = ListKeys::from_query([("sort", "-id"), ("limit", "1")], None).unwrap();
        assert_eq!(s.list_keys("inst", &q, 200).unwrap()[0].id, "b");
    }

    #[test]
    fn rings_with_live_keys_are_not_deleted() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.create_ring(&KeyRing {
            instance_id: "inst".into(),
            id: "r1".into(),
            created_at: 1,
            created_by: "u".into(),
        })
        .unwrap();
        let k = key("a", "r1", KeyState::Destroyed, &[]);
        s.insert_key(&k, &version(&k, 1)).unwrap();
        assert_eq!(
            s.delete_ring("inst", "r1", false),
            Err(StoreError::NotEmpty)
        );
        s.delete_ring("inst", "r1", true).unwrap();
        assert_eq!(s.get_key("inst", "a").unwrap().unwrap().key_ring, "default");
        assert_eq!(s.delete_ring("inst", "r1", true), Err(StoreError::NotFound));
    }

    #[test]
    fn import_token_retrievals_run_out() {
        let s = SqliteStore::open_in_memory().unwrap();
        let t = ImportToken {
            instance_id: "inst".into(),
            created_at: 1,
            expires_at: 1000,
            max_retrievals: 1,
            remaining_retrievals: 1,
            public_key_pem: String::new(),
            nonce: vec![1; 12],
            wrapped_private_key: vec![],
            token_id: "t".into(),
        };
        s.put_import_token(&t).unwrap();
        assert!(s.retrieve_import_token("inst").unwrap().unwrap().1);
        assert!(!s.retrieve_import_token("inst").unwrap().unwrap().1);
    }
}
