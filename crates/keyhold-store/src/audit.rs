//! The audit trail's store: one hash-chained, append-only table of records
//! (docs/audit.md). The store keeps the chain linear: an append holds the chain's
//! write lock (SQLite: `BEGIN IMMEDIATE` on the audit database; PostgreSQL: a
//! transaction-scoped advisory lock) while it reads the head and inserts a batch,
//! so several nodes appending to one PostgreSQL never fork it. Hashing and signing
//! are the caller's (the `build` callback), so this crate stays free of crypto.
//!
//! SQLite keeps the trail in its own file beside the main database: an audit
//! writer waiting for its lock never blocks key writes, and the reverse.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, Config, NoTls};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{Result, StoreError};

/// The newest record of the chain (`seq` 0 and an all-zero hash when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        ChainHead {
            seq: 0,
            hash: "0".repeat(64),
        }
    }
}

/// One stored record: the filterable columns and the record's exact JSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub time_ms: i64,
    /// `event` or `checkpoint`.
    pub kind: String,
    pub account_id: String,
    pub instance_id: String,
    pub key_id: String,
    pub principal_id: String,
    pub action: String,
    /// `success` or `failure` (empty for checkpoints).
    pub outcome: String,
    pub hash: String,
    /// The canonical JSON line, `hash` included.
    pub record: String,
}

/// Which events to list; every filter is optional. Events only (no checkpoints).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Events of this account, and account-less ones (refused before authentication).
    pub account_id: String,
    pub after_seq: u64,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub key_id: Option<String>,
    pub principal_id: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub instance_id: Option<String>,
    pub limit: u32,
}

/// Builds the rows of one batch from the current head (seq and hash of the newest record).
pub type BuildBatch<'a> = &'a mut dyn FnMut(&ChainHead) -> Vec<AuditRow>;

pub trait AuditStore: Send + Sync + 'static {
    /// Appends the rows `build` makes from the head, in one transaction under
    /// the chain lock; durable when it returns. Returns the rows written.
    fn append(&self, build: BuildBatch<'_>) -> Result<Vec<AuditRow>>;
    fn head(&self) -> Result<ChainHead>;
    /// Events matching `q`, in sequence order.
    fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRow>>;
    /// Every record (events and checkpoints) after `after_seq`, for export.
    fn scan(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRow>>;
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit_records (
    seq BIGINT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    account_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    hash TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_account ON audit_records (account_id, seq);";

const COLUMNS: &str =
    "seq, time_ms, kind, account_id, instance_id, key_id, principal_id, action, outcome, hash, record";

/// The WHERE clause of [`AuditQuery`] with `?N` (SQLite) or `$N` (PostgreSQL) placeholders.
fn query_sql(q: &AuditQuery, mark: &str) -> (String, Vec<String>, Vec<i64>) {
    // Text parameters first ($1..), then integers, so both dialects bind by position.
    let mut texts = vec![q.account_id.clone()];
    let mut conds = vec![
        "kind = 'event'".to_string(),
        format!("(account_id = {mark}1 OR account_id = '')"),
    ];
    let optional = [
        ("key_id", &q.key_id),
        ("principal_id", &q.principal_id),
        ("action", &q.action),
        ("outcome", &q.outcome),
        ("instance_id", &q.instance_id),
    ];
    for (col, v) in optional {
        if let Some(v) = v {
            texts.push(v.clone());
            conds.push(format!("{col} = {mark}{}", texts.len()));
        }
    }
    let mut ints = vec![q.after_seq as i64];
    conds.push(format!("seq > {mark}{}", texts.len() + ints.len()));
    if let Some(f) = q.from_ms {
        ints.push(f);
        conds.push(format!("time_ms >= {mark}{}", texts.len() + ints.len()));
    }
    if let Some(t) = q.to_ms {
        ints.push(t);
        conds.push(format!("time_ms <= {mark}{}", texts.len() + ints.len()));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_records WHERE {} ORDER BY seq LIMIT {}",
        conds.join(" AND "),
        q.limit.clamp(1, 1000)
    );
    (sql, texts, ints)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

// ---------------------------------------------------------------- SQLite

pub struct SqliteAudit {
    conn: Mutex<Connection>,
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get::<_, i64>(0)? as u64,
        time_ms: r.get(1)?,
        kind: r.get(2)?,
        account_id: r.get(3)?,
        instance_id: r.get(4)?,
        key_id: r.get(5)?,
        principal_id: r.get(6)?,
        action: r.get(7)?,
        outcome: r.get(8)?,
        hash: r.get(9)?,
        record: r.get(10)?,
    })
}

impl SqliteAudit {
    /// Opens (creates) the audit database. `lock_wait` bounds how long an append
    /// waits for the file's write lock before failing (the sink is then unavailable).
    pub fn open(path: &Path, lock_wait: Duration) -> Result<Self> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(lock_wait).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        Ok(SqliteAudit {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| unavailable("audit store lock poisoned"))
    }
}

fn sqlite_head(c: &Connection) -> Result<ChainHead> {
    let head = c
        .query_row(
            "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(ChainHead {
                    seq: r.get::<_, i64>(0)? as u64,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(unavailable)?;
    Ok(head.unwrap_or_else(ChainHead::genesis))
}

impl AuditStore for SqliteAudit {
    fn append(&self, build: BuildBatch<'_>) -> Result<Vec<AuditRow>> {
        let mut c = self.conn()?;
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let head = sqlite_head(&tx)?;
        let rows = build(&head);
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO audit_records ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
                ))
                .map_err(unavailable)?;
            for r in &rows {
                stmt.execute(params![
                    r.seq as i64,
                    r.time_ms,
                    r.kind,
                    r.account_id,
                    r.instance_id,
                    r.key_id,
                    r.principal_id,
                    r.action,
                    r.outcome,
                    r.hash,
                    r.record
                ])
                .map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok(rows)
    }

    fn head(&self) -> Result<ChainHead> {
        sqlite_head(&*self.conn()?)
    }

    fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        let (sql, texts, ints) = query_sql(q, "?");
        let c = self.conn()?;
        let mut stmt = c.prepare(&sql).map_err(unavailable)?;
        let mut params: Vec<rusqlite::types::Value> = texts
            .into_iter()
            .map(rusqlite::types::Value::Text)
            .collect();
        params.extend(ints.into_iter().map(rusqlite::types::Value::Integer));
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), sqlite_row)
            .map_err(unavailable)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)?;
        Ok(rows)
    }

    fn scan(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRow>> {
        let c = self.conn()?;
        let mut stmt = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM audit_records WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![after_seq as i64, limit as i64], sqlite_row)
            .map_err(unavailable)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)?;
        Ok(rows)
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// Serializes appends of every node sharing the database (the chain lock).
const CHAIN_LOCK: i64 = 0x6b68_6175_6474;

pub struct PostgresAudit {
    config: Config,
    schema: String,
    lock_wait: Duration,
    /// The appending connection and the reading one: a long export never
    /// delays an append, and the reverse.
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Client>>,
}

fn pg_row(r: &postgres::Row) -> AuditRow {
    AuditRow {
        seq: r.get::<_, i64>(0) as u64,
        time_ms: r.get(1),
        kind: r.get(2),
        account_id: r.get(3),
        instance_id: r.get(4),
        key_id: r.get(5),
        principal_id: r.get(6),
        action: r.get(7),
        outcome: r.get(8),
        hash: r.get(9),
        record: r.get(10),
    }
}

impl PostgresAudit {
    /// Connects to the deployment's schema (created by [`crate::PostgresStore::open`])
    /// and creates the audit table. Appends give up after `lock_wait` waiting
    /// for a lock or a statement (the sink is then unavailable).
    pub fn open(url: &str, schema: &str, lock_wait: Duration) -> Result<Self> {
        let mut config: Config = url
            .parse()
            .map_err(|e: postgres::Error| unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        config.connect_timeout(lock_wait.max(Duration::from_secs(1)));
        let audit = PostgresAudit {
            config,
            schema: schema.to_string(),
            lock_wait,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
        };
        let mut c = audit.connect()?;
        let mut tx = c.transaction().map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
            .map_err(unavailable)?;
        tx.batch_execute(SCHEMA).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        *audit
            .writer
            .lock()
            .map_err(|_| unavailable("audit store lock poisoned"))? = Some(c);
        Ok(audit)
    }

    fn connect(&self) -> Result<Client> {
        let mut c = self.config.connect(NoTls).map_err(unavailable)?;
        let ms = self.lock_wait.as_millis().max(1);
        c.batch_execute(&format!(
            "SET search_path TO \"{}\"; SET lock_timeout = {ms}; SET statement_timeout = {}",
            self.schema,
            ms * 2
        ))
        .map_err(unavailable)?;
        Ok(c)
    }

    /// Runs `f` on the connection in `slot`, reconnecting when it is closed and
    /// dropping it after an error (it may be mid-transaction or broken).
    fn with<T>(
        &self,
        slot: &Mutex<Option<Client>>,
        f: impl FnOnce(&mut Client) -> Result<T>,
    ) -> Result<T> {
        let mut guard = slot
            .lock()
            .map_err(|_| unavailable("audit store lock poisoned"))?;
        let mut client = match guard.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        let out = f(&mut client);
        if out.is_ok() {
            *guard = Some(client);
        }
        out
    }
}

impl AuditStore for PostgresAudit {
    fn append(&self, build: BuildBatch<'_>) -> Result<Vec<AuditRow>> {
        self.with(&self.writer, |c| {
            let mut tx = c.transaction().map_err(unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
                .map_err(unavailable)?;
            let head = tx
                .query_opt(
                    "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .map_err(unavailable)?
                .map(|r| ChainHead {
                    seq: r.get::<_, i64>(0) as u64,
                    hash: r.get(1),
                })
                .unwrap_or_else(ChainHead::genesis);
            let rows = build(&head);
            let stmt = tx
                .prepare(&format!(
                    "INSERT INTO audit_records ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                ))
                .map_err(unavailable)?;
            for r in &rows {
                tx.execute(
                    &stmt,
                    &[
                        &(r.seq as i64),
                        &r.time_ms,
                        &r.kind,
                        &r.account_id,
                        &r.instance_id,
                        &r.key_id,
                        &r.principal_id,
                        &r.action,
                        &r.outcome,
                        &r.hash,
                        &r.record,
                    ],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(rows)
        })
    }

    fn head(&self) -> Result<ChainHead> {
        self.with(&self.reader, |c| {
            Ok(c.query_opt(
                "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(unavailable)?
            .map(|r| ChainHead {
                seq: r.get::<_, i64>(0) as u64,
                hash: r.get(1),
            })
            .unwrap_or_else(ChainHead::genesis))
        })
    }

    fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        let (sql, texts, ints) = query_sql(q, "$");
        self.with(&self.reader, |c| {
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
            for t in &texts {
                params.push(t);
            }
            for i in &ints {
                params.push(i);
            }
            let rows = c.query(sql.as_str(), &params).map_err(unavailable)?;
            Ok(rows.iter().map(pg_row).collect())
        })
    }

    fn scan(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRow>> {
        self.with(&self.reader, |c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2"
                    ),
                    &[&(after_seq as i64), &(limit as i64)],
                )
                .map_err(unavailable)?;
            Ok(rows.iter().map(pg_row).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(head: &ChainHead, accounts: &[&str]) -> Vec<AuditRow> {
        accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let seq = head.seq + 1 + i as u64;
                AuditRow {
                    seq,
                    time_ms: 1000 * seq as i64,
                    kind: "event".into(),
                    account_id: a.to_string(),
                    instance_id: "i".into(),
                    key_id: format!("k{}", seq % 2),
                    principal_id: "p".into(),
                    action: "kms.secrets.wrap".into(),
                    outcome: "success".into(),
                    hash: format!("{seq:064}"),
                    record: format!("{{\"seq\":{seq}}}"),
                }
            })
            .collect()
    }

    #[test]
    fn appends_link_to_the_head_and_queries_scope_by_account() {
        let dir = std::env::temp_dir().join(format!("kh-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.db");
        let _ = std::fs::remove_file(&path);
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(s.head().unwrap(), ChainHead::genesis());
        let mut seen = Vec::new();
        s.append(&mut |h| {
            seen.push(h.clone());
            batch(h, &["a", "b", ""])
        })
        .unwrap();
        s.append(&mut |h| {
            seen.push(h.clone());
            batch(h, &["a"])
        })
        .unwrap();
        assert_eq!(seen[1].seq, 3);
        assert_eq!(seen[1].hash, format!("{:064}", 3));
        let q = AuditQuery {
            account_id: "a".into(),
            limit: 10,
            ..Default::default()
        };
        let seqs: Vec<u64> = s.query(&q).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3, 4]);
        let q = AuditQuery {
            key_id: Some("k1".into()),
            from_ms: Some(2000),
            ..q
        };
        let seqs: Vec<u64> = s.query(&q).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3]);
        assert_eq!(s.scan(2, 1).unwrap()[0].seq, 3);
        // A second writer holding the lock makes an append fail within the wait.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let t = std::time::Instant::now();
        assert!(s.append(&mut |h| batch(h, &["a"])).is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
        other.execute_batch("ROLLBACK").unwrap();
        assert!(s.append(&mut |h| batch(h, &["a"])).is_ok());
        assert_eq!(s.head().unwrap().seq, 5);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
