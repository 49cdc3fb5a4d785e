//! The audit trail's store: a hash-chained, append-only sequence of records
//! (docs/audit.md), kept as one row per group commit. A row holds the batch's
//! records as JSON lines (SQLite: their place in the records file) with its
//! sequence and time range, so appending costs
//! one insert per batch rather than one per event: at thousands of wraps a
//! second, per-event rows and their index were most of the trail's cost.
//! Reads scan batches and filter their lines; they are paged and bounded.
//!
//! The store keeps the chain linear: an append holds the chain's write lock
//! (SQLite: `BEGIN IMMEDIATE` on the audit database; PostgreSQL: a
//! transaction-scoped advisory lock) while it reads the head and inserts the
//! batch, so several nodes appending to one PostgreSQL never fork it. Hashing
//! and signing are the caller's (the `build` callback), so this crate stays
//! free of crypto.
//!
//! SQLite keeps the trail in its own files beside the main database (the
//! records in an append-only JSON lines file, indexed by a database of their
//! own): an audit writer waiting for its lock never blocks key writes, and the
//! reverse.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, Config, NoTls};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Deserialize;

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

/// One group commit: consecutive records of the chain, stored as one row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditBatch {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The earliest and the latest record time in the batch (unix ms): reads
    /// by time skip batches outside their range without opening them.
    pub first_ms: i64,
    pub last_ms: i64,
    /// The hash of the batch's last record: the chain's head after it.
    pub last_hash: String,
    /// The records' exact JSON lines, in sequence order, each ending in `\n`.
    pub lines: String,
}

/// One record read back from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    /// `event` or `checkpoint`.
    pub kind: String,
    pub account_id: String,
    pub hash: String,
    /// The record's exact JSON line (without the newline).
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

/// A page of matching events, and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    /// The `after_seq` of the next page; `None` when the trail holds no further
    /// match. A page can be short (even empty) and still have a next one: one
    /// call reads at most [`SCAN_BUDGET`] records, so a rare filter over a long
    /// trail answers in bounded time and the client follows the cursor.
    pub next_after: Option<u64>,
}

/// Records one events query reads at most before it returns its page.
pub const SCAN_BUDGET: usize = 100_000;
/// Batches fetched per round trip while reading. Small, because a batch can hold
/// up to thousands of records (a writer catching up) and a page needs few.
const FETCH_BATCHES: u32 = 4;

/// Builds the batch to append from the current head (seq and hash of the newest record).
pub type BuildBatch<'a> = &'a mut dyn FnMut(&ChainHead) -> AuditBatch;

pub trait AuditStore: Send + Sync + 'static {
    /// Appends the batch `build` makes from the head, in one transaction under
    /// the chain lock; durable when it returns. Returns the batch written.
    fn append(&self, build: BuildBatch<'_>) -> Result<AuditBatch>;
    fn head(&self) -> Result<ChainHead>;
    /// A page of the events matching `q`, in sequence order.
    fn query(&self, q: &AuditQuery) -> Result<AuditPage>;
    /// Up to `limit` records (events and checkpoints) after `after_seq`, for export.
    fn scan(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRow>>;
}

/// A stored batch as reads see it.
struct StoredBatch {
    last_seq: u64,
    lines: String,
}

/// Reads the batches holding records after `after`, at most `n`, whose time
/// range meets `[from_ms, to_ms]`, in sequence order.
trait BatchSource {
    fn batches(&self, after: u64, from_ms: i64, to_ms: i64, n: u32) -> Result<Vec<StoredBatch>>;
}

/// The batch-selecting statement: the batch holding `after` (the newest whose
/// first record is at or before it; both bounds use the primary key) and those after it.
fn batches_sql(mark: &str, columns: &str) -> String {
    format!(
        "SELECT {columns} FROM audit_batches \
         WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM audit_batches WHERE first_seq <= {mark}1), 0) \
         AND last_seq > {mark}1 AND last_ms >= {mark}2 AND first_ms <= {mark}3 \
         ORDER BY first_seq LIMIT {mark}4"
    )
}

const HEAD_SQL: &str =
    "SELECT last_seq, last_hash FROM audit_batches ORDER BY first_seq DESC LIMIT 1";
const INSERT_SQL_SQLITE: &str = "INSERT INTO audit_batches \
    (first_seq, last_seq, first_ms, last_ms, last_hash, records, records_at, records_len) \
    VALUES (?1,?2,?3,?4,?5,'',?6,?7)";
const INSERT_SQL_PG: &str = "INSERT INTO audit_batches \
    (first_seq, last_seq, first_ms, last_ms, last_hash, records) VALUES ($1,$2,$3,$4,$5,$6)";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit_batches (
    first_seq BIGINT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    last_hash TEXT NOT NULL,
    records TEXT NOT NULL
);";

/// Moves a trail written by earlier versions (one row per record, `audit_records`)
/// into batches of one record each; the records and the chain are unchanged.
fn migrate_sql(newline: &str) -> String {
    format!(
        "INSERT INTO audit_batches (first_seq, last_seq, first_ms, last_ms, last_hash, records) \
         SELECT seq, seq, time_ms, time_ms, hash, record || {newline} FROM audit_records ORDER BY seq; \
         DROP TABLE audit_records;"
    )
}

/// The fields of a record line that reads filter on (the rest is left unparsed).
#[derive(Deserialize)]
struct Fields<'a> {
    seq: u64,
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Cow<'a, str>,
    #[serde(borrow, default)]
    account_id: Cow<'a, str>,
    #[serde(borrow, default)]
    instance_id: Cow<'a, str>,
    #[serde(borrow, default)]
    key_id: Cow<'a, str>,
    #[serde(borrow, default)]
    principal_id: Cow<'a, str>,
    #[serde(borrow, default)]
    action: Cow<'a, str>,
    #[serde(borrow, default)]
    outcome: Cow<'a, str>,
    #[serde(borrow, default)]
    hash: Cow<'a, str>,
    #[serde(borrow, default)]
    prev_hash: Cow<'a, str>,
}

impl Fields<'_> {
    fn row(&self, line: &str) -> AuditRow {
        AuditRow {
            seq: self.seq,
            kind: self.kind.to_string(),
            account_id: self.account_id.to_string(),
            hash: self.hash.to_string(),
            record: line.to_string(),
        }
    }

    /// Unix ms of the record's `time` (RFC 3339 with milliseconds).
    fn time_ms(&self) -> Option<i64> {
        let secs = keyhold_core::timefmt::parse(&self.time)?;
        let millis = self
            .time
            .split_once('.')
            .map(|(_, frac)| {
                let digits: String = frac
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .chain("000".chars())
                    .take(3)
                    .collect();
                digits.parse::<i64>().unwrap_or(0)
            })
            .unwrap_or(0);
        Some(secs * 1000 + millis)
    }

    fn matches(&self, q: &AuditQuery) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.kind == "event"
            && (self.account_id == q.account_id || self.account_id.is_empty())
            && eq(&q.key_id, &self.key_id)
            && eq(&q.principal_id, &self.principal_id)
            && eq(&q.action, &self.action)
            && eq(&q.outcome, &self.outcome)
            && eq(&q.instance_id, &self.instance_id)
            && (q.from_ms.is_none() && q.to_ms.is_none() || {
                let t = self.time_ms().unwrap_or(i64::MIN);
                q.from_ms.is_none_or(|f| t >= f) && q.to_ms.is_none_or(|to| t <= to)
            })
    }
}

/// The records after `after` in the batches `src` yields, each with its parsed
/// fields, until `visit` says stop or `budget` records were read. Returns the
/// last sequence number read and whether the trail ended.
fn walk(
    src: &dyn BatchSource,
    mut after: u64,
    (from_ms, to_ms): (i64, i64),
    budget: usize,
    visit: &mut dyn FnMut(&Fields<'_>, &str) -> bool,
) -> Result<(u64, bool)> {
    let mut read = 0usize;
    loop {
        let batches = src.batches(after, from_ms, to_ms, FETCH_BATCHES)?;
        if batches.is_empty() {
            return Ok((after, true));
        }
        let before = after;
        for b in &batches {
            for line in b.lines.lines() {
                // A line altered in the store so it no longer parses is skipped
                // here; `keyhold audit verify` on an export names it.
                let Ok(f) = serde_json::from_str::<Fields<'_>>(line) else {
                    continue;
                };
                if f.seq <= after {
                    continue;
                }
                after = f.seq;
                read += 1;
                if !visit(&f, line) {
                    return Ok((after, false));
                }
            }
            after = after.max(b.last_seq);
            if read >= budget {
                return Ok((after, false));
            }
        }
        if after == before {
            // Only a tampered store can get here (a batch whose range lies).
            return Ok((after, true));
        }
    }
}

fn query_batches(src: &dyn BatchSource, q: &AuditQuery, budget: usize) -> Result<AuditPage> {
    let limit = q.limit.clamp(1, 1000) as usize;
    let mut rows = Vec::new();
    let range = (q.from_ms.unwrap_or(i64::MIN), q.to_ms.unwrap_or(i64::MAX));
    let (last, ended) = walk(src, q.after_seq, range, budget, &mut |f, line| {
        if f.matches(q) {
            rows.push(f.row(line));
        }
        rows.len() < limit
    })?;
    let next_after = (!ended).then_some(last);
    Ok(AuditPage { rows, next_after })
}

fn scan_batches(src: &dyn BatchSource, after: u64, limit: u32) -> Result<Vec<AuditRow>> {
    let limit = limit.max(1) as usize;
    let mut rows = Vec::new();
    walk(
        src,
        after,
        (i64::MIN, i64::MAX),
        usize::MAX,
        &mut |f, line| {
            rows.push(f.row(line));
            rows.len() < limit
        },
    )?;
    Ok(rows)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

// ---------------------------------------------------------------- SQLite

/// The SQLite trail: the records themselves in an append-only file of JSON
/// lines (`audit.jsonl` beside `audit.db`), and in `audit.db` one row per batch
/// naming its byte range in that file. An append writes its batch to the file
/// and `fdatasync`s it (one data write and one flush: durable), then commits
/// the batch's row without waiting for the disk (WAL, `synchronous=NORMAL`).
/// Stored in the database, a batch cost five fsyncs and about twenty disk
/// requests per commit (rollback journal, its directory, the pages), which on a
/// VM were two thirds of the writer's CPU (docs/benchmarks.md).
///
/// The row is only an index: after a power loss that took its last commits,
/// opening the store finds the records past the indexed end of the file and
/// indexes those that continue the chain; a torn tail (a batch whose write was
/// never acknowledged) is moved aside to `audit.jsonl.torn-OFFSET`, never
/// deleted. Rows of earlier versions keep their records inline (`records`).
pub struct SqliteAudit {
    /// The appending connection and the reading one.
    writer: Mutex<Appender>,
    reader: Mutex<Connection>,
    /// The records file, read positionally (shared with the appender).
    records: std::fs::File,
}

/// The appending connection, and the records file it appends to.
struct Appender {
    conn: Connection,
    records: std::fs::File,
    /// Bytes of the records file already dropped from the page cache (or
    /// written before this process opened it); page-aligned.
    dropped_to: u64,
}

/// The page granularity of the cache advice: the partial page at the end of
/// the file stays cached, because the next batch fills it.
const CACHE_PAGE: u64 = 4096;

impl Appender {
    /// Drops the pages written up to `end` from the page cache. They were
    /// written once, are durable, and are read back only by an export or a
    /// query, so caching them crowds the key database out of memory (at full
    /// wrap rate the trail grows ~20 MB a second). It also keeps the writer on
    /// pages it freed a moment ago: filling ever new page cache pages cost more
    /// than the rest of a commit on the benchmark VM, where a page the guest has
    /// not touched recently is backed by the host on first write
    /// (docs/audit.md). Advice only: a failure changes nothing but the cache.
    fn drop_written_pages(&mut self, end: u64) {
        let to = end - end % CACHE_PAGE;
        if to > self.dropped_to {
            advise_dont_need(&self.records, self.dropped_to, to - self.dropped_to);
            self.dropped_to = to;
        }
    }
}

#[cfg(target_os = "linux")]
fn advise_dont_need(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor
    // is owned by `file`, which outlives the call.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_dont_need(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// `audit.db` → `audit.jsonl`; any other name gets `.jsonl` appended.
fn records_path(db: &Path) -> std::path::PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let stem = name.strip_suffix(".db").unwrap_or(&name);
    db.with_file_name(format!("{stem}.jsonl"))
}

fn sqlite_open(path: &Path, lock_wait: Duration) -> Result<Connection> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.busy_timeout(lock_wait).map_err(unavailable)?;
    // WAL with `synchronous=NORMAL`: a commit of the index writes a page or two
    // and waits for no disk; the records it indexes were synced before it.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(unavailable)?;
    conn.pragma_update(None, "journal_size_limit", 1 << 22)
        .map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(unavailable)?;
    Ok(conn)
}

/// The head and where the indexed records end in the records file, from the
/// newest row. Rows with their records in the file always follow the inline
/// ones of earlier versions, so a newest row without a range means none has
/// one yet: the file's indexed part is empty.
const TAIL_SQL: &str = "SELECT last_seq, last_hash, COALESCE(records_at + records_len, 0) \
    FROM audit_batches ORDER BY first_seq DESC LIMIT 1";

fn sqlite_tail(c: &Connection) -> Result<(ChainHead, u64)> {
    // A cached statement: this runs on every commit.
    let tail = c
        .prepare_cached(TAIL_SQL)
        .and_then(|mut s| {
            s.query_row([], |r| {
                let head = ChainHead {
                    seq: r.get::<_, i64>(0)? as u64,
                    hash: r.get(1)?,
                };
                Ok((head, r.get::<_, i64>(2)? as u64))
            })
            .optional()
        })
        .map_err(unavailable)?;
    Ok(tail.unwrap_or_else(|| (ChainHead::genesis(), 0)))
}

/// Adds the records file's columns to a database of an earlier version.
fn add_records_columns(c: &Connection) -> Result<()> {
    let has: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('audit_batches') WHERE name = 'records_at'",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if has == 0 {
        c.execute_batch(
            "ALTER TABLE audit_batches ADD COLUMN records_at INTEGER;
             ALTER TABLE audit_batches ADD COLUMN records_len INTEGER;",
        )
        .map_err(unavailable)?;
    }
    Ok(())
}

/// Indexes batch `b`, whose records are bytes `at..at + len` of the records file.
fn insert_sqlite(c: &Connection, b: &AuditBatch, at: u64, len: u64) -> Result<()> {
    c.prepare_cached(INSERT_SQL_SQLITE)
        .and_then(|mut s| {
            s.execute(params![
                b.first_seq as i64,
                b.last_seq as i64,
                b.first_ms,
                b.last_ms,
                b.last_hash,
                at as i64,
                len as i64
            ])
        })
        .map_err(unavailable)?;
    Ok(())
}

/// Indexes the records past the indexed end of the file that continue the
/// chain (their rows were lost with the index's last commits); moves anything
/// after them aside and cuts the file there, so the next batch follows the
/// last record. A file shorter than the index (records removed) is left as it
/// is: reads show the gap, and `keyhold audit verify` names it.
fn recover_tail(c: &Connection, file: &std::fs::File, path: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let (mut head, end) = sqlite_tail(c)?;
    let len = file.metadata().map_err(unavailable)?.len();
    if len <= end {
        return Ok(());
    }
    let mut tail = vec![0u8; (len - end) as usize];
    file.read_exact_at(&mut tail, end).map_err(unavailable)?;
    let first_seq = head.seq + 1;
    let (mut first_ms, mut last_ms, mut good) = (i64::MAX, i64::MIN, 0usize);
    while let Some(n) = tail[good..].iter().position(|&b| b == b'\n') {
        let line = &tail[good..good + n];
        let Ok(f) = serde_json::from_slice::<Fields<'_>>(line) else {
            break;
        };
        if f.seq != head.seq + 1 || f.prev_hash != head.hash {
            break;
        }
        let t = f.time_ms().unwrap_or(0);
        (first_ms, last_ms) = (first_ms.min(t), last_ms.max(t));
        head = ChainHead {
            seq: f.seq,
            hash: f.hash.to_string(),
        };
        good += n + 1;
    }
    if good > 0 {
        let b = AuditBatch {
            first_seq,
            last_seq: head.seq,
            first_ms,
            last_ms,
            last_hash: head.hash,
            lines: String::new(),
        };
        insert_sqlite(c, &b, end, good as u64)?;
    }
    if good < tail.len() {
        let cut = end + good as u64;
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".torn-{cut}"));
        std::fs::write(&aside, &tail[good..]).map_err(unavailable)?;
        std::fs::File::open(&aside)
            .and_then(|f| f.sync_all())
            .map_err(unavailable)?;
        file.set_len(cut).map_err(unavailable)?;
        file.sync_all().map_err(unavailable)?;
    }
    Ok(())
}

/// Opens (creates, mode 0600) the records file; a new one's directory entry is
/// made durable before anything is written to it.
fn open_records(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(unavailable)?;
    if !existed {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(unavailable)?;
        }
    }
    Ok(file)
}

impl SqliteAudit {
    /// Opens (creates) the audit database and its records file. `lock_wait`
    /// bounds how long an append waits for the database's write lock before
    /// failing (the sink is then unavailable).
    pub fn open(path: &Path, lock_wait: Duration) -> Result<Self> {
        let records_file = records_path(path);
        let records = open_records(&records_file)?;
        let mut writer = sqlite_open(path, lock_wait)?;
        let tx = writer
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        tx.execute_batch(SCHEMA).map_err(unavailable)?;
        let old: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_records'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if old.is_some() {
            tx.execute_batch(&migrate_sql("char(10)"))
                .map_err(unavailable)?;
        }
        add_records_columns(&tx)?;
        recover_tail(&tx, &records, &records_file)?;
        tx.commit().map_err(unavailable)?;
        let reader = sqlite_open(path, lock_wait)?;
        let len = records.metadata().map_err(unavailable)?.len();
        Ok(SqliteAudit {
            writer: Mutex::new(Appender {
                conn: writer,
                records: records.try_clone().map_err(unavailable)?,
                dropped_to: len - len % CACHE_PAGE,
            }),
            reader: Mutex::new(reader),
            records,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| unavailable("audit store lock poisoned"))
}

impl SqliteAudit {
    /// A batch's lines from the records file. A range the file no longer holds
    /// (removed records) reads short; bytes that are not UTF-8 (altered
    /// records) are replaced. Either way the lines are returned for
    /// `keyhold audit verify` to name.
    fn read_records(&self, at: i64, len: i64) -> Result<String> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len.max(0) as usize];
        let mut got = 0;
        while got < buf.len() {
            match self
                .records
                .read_at(&mut buf[got..], at as u64 + got as u64)
            {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        buf.truncate(got);
        Ok(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

impl BatchSource for SqliteAudit {
    fn batches(&self, after: u64, from_ms: i64, to_ms: i64, n: u32) -> Result<Vec<StoredBatch>> {
        let c = lock(&self.reader)?;
        let mut stmt = c
            .prepare_cached(&batches_sql(
                "?",
                "last_seq, records, records_at, records_len",
            ))
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![after as i64, from_ms, to_ms, n as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .map_err(unavailable)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)?;
        drop(stmt);
        drop(c);
        rows.into_iter()
            .map(|(last_seq, inline, at, len)| {
                let lines = match (at, len) {
                    (Some(at), Some(len)) => self.read_records(at, len)?,
                    _ => inline,
                };
                Ok(StoredBatch { last_seq, lines })
            })
            .collect()
    }
}

impl AuditStore for SqliteAudit {
    fn append(&self, build: BuildBatch<'_>) -> Result<AuditBatch> {
        use std::os::unix::fs::FileExt;
        let mut guard = lock(&self.writer)?;
        let appender = &mut *guard;
        let tx = appender
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let (head, at) = sqlite_tail(&tx)?;
        let b = build(&head);
        // Durable before the row that indexes it: a retry after a failure
        // writes the batch again at the same offset.
        appender
            .records
            .write_all_at(b.lines.as_bytes(), at)
            .and_then(|()| appender.records.sync_data())
            .map_err(unavailable)?;
        insert_sqlite(&tx, &b, at, b.lines.len() as u64)?;
        tx.commit().map_err(unavailable)?;
        appender.drop_written_pages(at + b.lines.len() as u64);
        Ok(b)
    }

    fn head(&self) -> Result<ChainHead> {
        Ok(sqlite_tail(&*lock(&self.reader)?)?.0)
    }

    fn query(&self, q: &AuditQuery) -> Result<AuditPage> {
        query_batches(self, q, SCAN_BUDGET)
    }

    fn scan(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRow>> {
        scan_batches(self, after_seq, limit)
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// The server's message, which `postgres::Error`'s own text ("db error") leaves out.
fn pg_unavailable(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => unavailable(format!("{} ({})", db.message(), db.code().code())),
        None => unavailable(e),
    }
}

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

fn pg_head(c: &mut impl postgres::GenericClient) -> Result<ChainHead> {
    Ok(c.query_opt(HEAD_SQL, &[])
        .map_err(pg_unavailable)?
        .map(|r| ChainHead {
            seq: r.get::<_, i64>(0) as u64,
            hash: r.get(1),
        })
        .unwrap_or_else(ChainHead::genesis))
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
        let mut tx = c.transaction().map_err(pg_unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
            .map_err(pg_unavailable)?;
        tx.batch_execute(SCHEMA).map_err(pg_unavailable)?;
        // Batches are compressed with lz4 where the server has it: the JSON lines
        // shrink to about a fifth (~150 bytes an event on disk), and the WAL with
        // them. The default, pglz, cost more CPU than the rest of the append while
        // the chain lock was held, so without lz4 batches are stored as they are.
        let mut lz4 = tx.savepoint("lz4").map_err(pg_unavailable)?;
        let compressed = lz4
            .batch_execute(
                "ALTER TABLE audit_batches ALTER COLUMN records SET STORAGE EXTENDED, \
                 ALTER COLUMN records SET COMPRESSION lz4",
            )
            .is_ok();
        if compressed {
            lz4.commit().map_err(pg_unavailable)?;
        } else {
            drop(lz4);
            tx.batch_execute("ALTER TABLE audit_batches ALTER COLUMN records SET STORAGE EXTERNAL")
                .map_err(pg_unavailable)?;
        }
        let old: bool = tx
            .query_one("SELECT to_regclass('audit_records') IS NOT NULL", &[])
            .map_err(pg_unavailable)?
            .get(0);
        if old {
            tx.batch_execute(&migrate_sql("E'\\n'"))
                .map_err(pg_unavailable)?;
        }
        tx.commit().map_err(pg_unavailable)?;
        *audit
            .writer
            .lock()
            .map_err(|_| unavailable("audit store lock poisoned"))? = Some(c);
        Ok(audit)
    }

    fn connect(&self) -> Result<Client> {
        let mut c = self.config.connect(NoTls).map_err(pg_unavailable)?;
        let ms = self.lock_wait.as_millis().max(1);
        // A node cut off mid-append leaves its transaction, and the chain lock,
        // open on the server: PostgreSQL ends it after half the lock wait, so the
        // other nodes' appends go on (tests/cluster/test_cluster_outage.py).
        c.batch_execute(&format!(
            "SET search_path TO \"{}\"; SET lock_timeout = {ms}; SET statement_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}",
            self.schema,
            ms * 2,
            (ms / 2).max(1)
        ))
        .map_err(pg_unavailable)?;
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

impl BatchSource for PostgresAudit {
    fn batches(&self, after: u64, from_ms: i64, to_ms: i64, n: u32) -> Result<Vec<StoredBatch>> {
        self.with(&self.reader, |c| {
            let rows = c
                .query(
                    batches_sql("$", "last_seq, records").as_str(),
                    &[&(after as i64), &from_ms, &to_ms, &(n as i64)],
                )
                .map_err(pg_unavailable)?;
            Ok(rows
                .iter()
                .map(|r| StoredBatch {
                    last_seq: r.get::<_, i64>(0) as u64,
                    lines: r.get(1),
                })
                .collect())
        })
    }
}

impl AuditStore for PostgresAudit {
    fn append(&self, build: BuildBatch<'_>) -> Result<AuditBatch> {
        self.with(&self.writer, |c| {
            let mut tx = c.transaction().map_err(pg_unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
                .map_err(pg_unavailable)?;
            let head = pg_head(&mut tx)?;
            let b = build(&head);
            tx.execute(
                INSERT_SQL_PG,
                &[
                    &(b.first_seq as i64),
                    &(b.last_seq as i64),
                    &b.first_ms,
                    &b.last_ms,
                    &b.last_hash,
                    &b.lines,
                ],
            )
            .map_err(pg_unavailable)?;
            tx.commit().map_err(pg_unavailable)?;
            Ok(b)
        })
    }

    fn head(&self) -> Result<ChainHead> {
        self.with(&self.reader, pg_head)
    }

    fn query(&self, q: &AuditQuery) -> Result<AuditPage> {
        query_batches(self, q, SCAN_BUDGET)
    }

    fn scan(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRow>> {
        scan_batches(self, after_seq, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of event lines for the given accounts, after `head`; times are 1 s per seq.
    fn batch(head: &ChainHead, accounts: &[&str]) -> AuditBatch {
        let mut lines = String::new();
        let mut seq = head.seq;
        for a in accounts {
            seq += 1;
            lines.push_str(&format!(
                "{{\"seq\":{seq},\"prev_hash\":\"{:064}\",\"time\":\"2026-01-01T00:00:{:02}.250Z\",\"type\":\"event\",\"account_id\":\"{a}\",\"key_id\":\"k{}\",\"action\":\"kms.secrets.wrap\",\"hash\":\"{seq:064}\"}}\n",
                seq - 1,
                seq % 60,
                seq % 2
            ));
        }
        AuditBatch {
            first_seq: head.seq + 1,
            last_seq: seq,
            first_ms: 1_767_225_600_000 + 1000 * (head.seq as i64 + 1) + 250,
            last_ms: 1_767_225_600_000 + 1000 * seq as i64 + 250,
            last_hash: format!("{seq:064}"),
            lines,
        }
    }

    fn seqs(rows: &[AuditRow]) -> Vec<u64> {
        rows.iter().map(|r| r.seq).collect()
    }

    fn temp_db(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("kh-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.db");
        (dir, path)
    }

    #[test]
    fn appends_link_to_the_head_and_reads_filter_the_batches() {
        let (dir, path) = temp_db("reads");
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(s.head().unwrap(), ChainHead::genesis());
        let mut seen = Vec::new();
        for accounts in [&["a", "b", ""][..], &["a"], &["b", "a"]] {
            s.append(&mut |h| {
                seen.push(h.clone());
                batch(h, accounts)
            })
            .unwrap();
        }
        assert_eq!(seen[1].seq, 3);
        assert_eq!(seen[1].hash, format!("{:064}", 3));
        assert_eq!(s.head().unwrap().seq, 6);

        let q = AuditQuery {
            account_id: "a".into(),
            limit: 10,
            ..Default::default()
        };
        let page = s.query(&q).unwrap();
        assert_eq!(
            (seqs(&page.rows), page.next_after),
            (vec![1, 3, 4, 6], None)
        );
        // A full page names its last record as the cursor, also mid-batch.
        let page = s
            .query(&AuditQuery {
                limit: 2,
                ..q.clone()
            })
            .unwrap();
        assert_eq!((seqs(&page.rows), page.next_after), (vec![1, 3], Some(3)));
        let page = s
            .query(&AuditQuery {
                after_seq: 3,
                ..q.clone()
            })
            .unwrap();
        assert_eq!(seqs(&page.rows), vec![4, 6]);
        // Filters by field and by time (seq 3 is at :03.250).
        let q2 = AuditQuery {
            key_id: Some("k1".into()),
            from_ms: Some(1_767_225_603_000),
            ..q.clone()
        };
        assert_eq!(seqs(&s.query(&q2).unwrap().rows), vec![3]);
        let q3 = AuditQuery {
            to_ms: Some(1_767_225_603_249),
            ..q.clone()
        };
        assert_eq!(seqs(&s.query(&q3).unwrap().rows), vec![1]);
        // A bounded scan (checked between batches) hands back a cursor with
        // what it found so far.
        let page = query_batches(&s, &q, 2).unwrap();
        assert_eq!((seqs(&page.rows), page.next_after), (vec![1, 3], Some(3)));
        let page = query_batches(
            &s,
            &AuditQuery {
                after_seq: 3,
                ..q.clone()
            },
            2,
        )
        .unwrap();
        assert_eq!((seqs(&page.rows), page.next_after), (vec![4, 6], Some(6)));
        let page = query_batches(
            &s,
            &AuditQuery {
                after_seq: 6,
                ..q.clone()
            },
            2,
        )
        .unwrap();
        assert_eq!((seqs(&page.rows), page.next_after), (vec![], None));
        // Export scans every record, across batch boundaries.
        assert_eq!(seqs(&s.scan(2, 3).unwrap()), vec![3, 4, 5]);
        assert_eq!(s.scan(0, 100).unwrap().len(), 6);
        assert!(s.scan(6, 100).unwrap().is_empty());

        // A second writer holding the lock makes an append fail within the wait.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let t = std::time::Instant::now();
        assert!(s.append(&mut |h| batch(h, &["a"])).is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
        other.execute_batch("ROLLBACK").unwrap();
        assert!(s.append(&mut |h| batch(h, &["a"])).is_ok());
        assert_eq!(s.head().unwrap().seq, 7);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    /// Which of a file's pages are in the page cache (`mincore` over a mapping).
    #[cfg(target_os = "linux")]
    fn resident_pages(path: &Path) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let mut vec = vec![0u8; len.div_ceil(page_size())];
        // SAFETY: a read-only shared mapping of a file we hold open; mincore
        // writes one byte per page into `vec`, which is sized for the mapping,
        // and the mapping is unmapped before `file` is dropped.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.iter().map(|b| b & 1 == 1).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn appended_pages_leave_the_page_cache_and_read_back_from_disk() {
        let (dir, path) = temp_db("fadvise");
        // Where the file system ignores the advice (tmpfs keeps every page),
        // there is nothing to check.
        let probe = dir.join("probe");
        std::fs::write(&probe, vec![1u8; 1 << 16]).unwrap();
        let f = std::fs::File::open(&probe).unwrap();
        f.sync_all().unwrap();
        advise_dont_need(&f, 0, 1 << 16);
        if resident_pages(&probe).iter().all(|&r| r) {
            eprintln!("skipped: this file system keeps pages despite POSIX_FADV_DONTNEED");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        let records = records_path(&path);
        let accounts = vec!["an-account-id-of-some-length"; 2_000];
        s.append(&mut |h| batch(h, &accounts)).unwrap();
        let pages = resident_pages(&records);
        assert!(pages.len() > 50, "{} pages", pages.len());
        let cached = pages.iter().filter(|&&r| r).count();
        assert!(
            cached * 10 < pages.len(),
            "{cached} of {} appended pages still cached",
            pages.len()
        );
        // The records read back intact, from the disk.
        assert_eq!(s.scan(0, 5_000).unwrap().len(), 2_000);
        drop(s);
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(s.head().unwrap().seq, 2_000);
        assert_eq!(s.scan(1_990, 100).unwrap().len(), 10);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_the_index_lost_are_indexed_again_and_a_torn_tail_is_moved_aside() {
        let (dir, path) = temp_db("recover");
        let records = records_path(&path);
        assert_eq!(records, dir.join("audit.jsonl"));
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        s.append(&mut |h| batch(h, &["a", "b"])).unwrap();
        drop(s);
        // Records 3-4 reached the file but not the index (a power loss took
        // the index's last commit), then a write torn mid-line.
        let durable = std::fs::read(&records).unwrap();
        let lost = batch(
            &ChainHead {
                seq: 2,
                hash: format!("{:064}", 2),
            },
            &["a", "a"],
        );
        let torn = "{\"seq\":5,\"prev_hash\":\"00";
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&records)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("{}{torn}", lost.lines).as_bytes()).unwrap();
        drop(f);

        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(s.head().unwrap().seq, 4);
        assert_eq!(seqs(&s.scan(0, 10).unwrap()), vec![1, 2, 3, 4]);
        let q = AuditQuery {
            account_id: "a".into(),
            from_ms: Some(lost.first_ms),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(seqs(&s.query(&q).unwrap().rows), vec![3, 4]);
        let cut = durable.len() + lost.lines.len();
        assert_eq!(std::fs::metadata(&records).unwrap().len() as usize, cut);
        let aside = dir.join(format!("audit.jsonl.torn-{cut}"));
        assert_eq!(std::fs::read_to_string(aside).unwrap(), torn);
        // The next batch follows record 4 in the file.
        s.append(&mut |h| batch(h, &["b"])).unwrap();
        assert_eq!(seqs(&s.scan(3, 10).unwrap()), vec![4, 5]);
        drop(s);
        // Opening again finds nothing to recover.
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(s.scan(0, 10).unwrap().len(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_trail_of_one_row_per_record_is_moved_into_batches() {
        let (dir, path) = temp_db("migrate");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE audit_records (seq BIGINT PRIMARY KEY, time_ms BIGINT NOT NULL,
                 kind TEXT NOT NULL, account_id TEXT NOT NULL, instance_id TEXT NOT NULL,
                 key_id TEXT NOT NULL, principal_id TEXT NOT NULL, action TEXT NOT NULL,
                 outcome TEXT NOT NULL, hash TEXT NOT NULL, record TEXT NOT NULL);",
            )
            .unwrap();
            for seq in 1..=3i64 {
                let line = format!(
                    "{{\"seq\":{seq},\"type\":\"event\",\"account_id\":\"a\",\"hash\":\"h{seq}\"}}"
                );
                c.execute(
                    "INSERT INTO audit_records VALUES (?1, 0, 'event', 'a', '', '', '', '', 'success', ?2, ?3)",
                    params![seq, format!("h{seq}"), line],
                )
                .unwrap();
            }
        }
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(
            s.head().unwrap(),
            ChainHead {
                seq: 3,
                hash: "h3".into()
            }
        );
        let rows = s.scan(0, 10).unwrap();
        assert_eq!(seqs(&rows), vec![1, 2, 3]);
        assert_eq!(
            rows[1].record,
            "{\"seq\":2,\"type\":\"event\",\"account_id\":\"a\",\"hash\":\"h2\"}"
        );
        drop(s);
        // Opening again finds nothing left to move; new batches go to the
        // records file and read back after the inline ones.
        let s = SqliteAudit::open(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(s.scan(0, 10).unwrap().len(), 3);
        s.append(&mut |h| batch(h, &["a"])).unwrap();
        assert_eq!(seqs(&s.scan(0, 10).unwrap()), vec![1, 2, 3, 4]);
        assert!(std::fs::read_to_string(records_path(&path))
            .unwrap()
            .starts_with("{\"seq\":4,"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
