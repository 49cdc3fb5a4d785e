//! The tamper-evident audit trail (docs/audit.md): events go through one
//! in-memory queue to a writer thread that appends them to the hash chain in
//! batches (group commit), adds signed checkpoints, and copies each record to the
//! optional `--audit-log` stream.
//!
//! Requests see the sink through three cheap calls: [`Audit::healthy`] (two atomic
//! loads) before the handler runs, and [`Audit::record`] after it, which for a
//! queued (crypto/read) event is one mutex push, and for a synchronous
//! (management) event waits until its batch is committed, at most the sink
//! timeout. A request whose event cannot be queued or committed is answered
//! 503 `AUDIT_UNAVAILABLE_ERR`, never as a success.

pub mod actions;
pub mod record;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keyhold_store::{AuditBatch, AuditStore, ChainHead};
use tokio::sync::oneshot;

pub use actions::Durability;
pub use record::{Event, EventBody, Head, Signer};

/// Group-commit tick: commits start at most this often, so queued events wait
/// (and a crash can lose) at most about this long. Each commit has a fixed cost
/// of about half a millisecond of CPU on the benchmark VM (a disk flush and its
/// journal commit, the index row, the thread switches), paid on the request
/// core: measured side by side on one core, wrap throughput with the trail on
/// was 0.84× of off with a commit every 25 ms, 0.88× every 100 ms and no better
/// beyond that (docs/benchmarks.md). 100 ms is also the window other group
/// commits settle on (MongoDB's journal, PostgreSQL's WAL writer at 200 ms).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A batch this large is written at once, without waiting for the tick (above
/// a tick's worth at full wrap rate on one core, ~4,000).
const FLUSH_SOON: usize = 8192;
/// Events the queue and the batch have room for at start (they grow, and keep
/// what they grew to).
const QUEUE_CAPACITY_AT_START: usize = 4096;
/// At most this many events go in one transaction: a writer catching up (after
/// an outage, or starved of CPU) does so in few large commits.
const MAX_BATCH: usize = 16384;
/// A batch buffer larger than this (after catching up) is not kept.
const SPARE_MAX: usize = 16 << 20;
/// Pause before retrying a failed batch.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// A write slower than this (or failing) makes the sink unavailable.
    pub timeout: Duration,
    /// Events held in memory (queued + being retried) before requests are refused.
    pub queue_capacity: usize,
    /// A signed checkpoint after this many events written by this node…
    pub checkpoint_every: u64,
    /// …or after this long when any were written.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            timeout: Duration::from_secs(2),
            queue_capacity: 100_000,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(30),
        }
    }
}

/// Queued events: their serialised [`EventBody`]s back to back in one buffer,
/// and where each ends. Requests write into it under the queue's lock and the
/// writer swaps it out whole, so an event costs no allocation and no free on
/// the other thread (at tens of thousands a second, both showed).
#[derive(Default)]
struct Events {
    bodies: String,
    items: Vec<Entry>,
}

struct Entry {
    /// The end of this event's body in `bodies` (it starts where the previous ends).
    end: usize,
    time_ms: i64,
    ack: Option<oneshot::Sender<bool>>,
}

impl Events {
    fn with_capacity(events: usize) -> Self {
        Events {
            bodies: String::with_capacity(events * 640),
            items: Vec::with_capacity(events),
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push(&mut self, body: &EventBody<'_>, time_ms: i64, ack: Option<oneshot::Sender<bool>>) {
        body.write_json(&mut self.bodies);
        self.items.push(Entry {
            end: self.bodies.len(),
            time_ms,
            ack,
        });
    }

    /// Each event's body with its entry, in order.
    fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        let mut start = 0;
        self.items.iter().map(move |e| {
            let body = &self.bodies[start..e.end];
            start = e.end;
            (body, e)
        })
    }

    /// Moves the first `n` events to the end of `to`.
    fn move_front(&mut self, to: &mut Events, n: usize) {
        let n = n.min(self.len());
        if to.is_empty() && n == self.len() {
            std::mem::swap(self, to);
            return;
        }
        if n == 0 {
            return;
        }
        let cut = self.items[n - 1].end;
        let base = to.bodies.len();
        to.bodies.push_str(&self.bodies[..cut]);
        to.items.extend(self.items.drain(..n).map(|mut e| {
            e.end += base;
            e
        }));
        self.bodies.drain(..cut);
        for e in &mut self.items {
            e.end -= cut;
        }
    }

    fn clear(&mut self) {
        self.bodies.clear();
        self.items.clear();
    }
}

#[derive(Default)]
struct Queue {
    events: Events,
    /// A management event waits in `events`: its request waits for the commit,
    /// so the batch goes now rather than at the tick.
    urgent: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Events accepted and not yet committed (queued or being retried).
    backlog: AtomicUsize,
    /// The last append failed (cleared by the next success).
    failing: AtomicBool,
    /// Unix ms at which the append in progress started; 0 when idle.
    writing_since_ms: AtomicI64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A request that panicked while pushing leaves the queue usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Audit {
    shared: Arc<Shared>,
    store: Arc<dyn AuditStore>,
    signer: Arc<Signer>,
    cfg: AuditConfig,
}

/// A management event's claim on its commit (see [`Audit::committed`]).
pub struct Receipt(oneshot::Receiver<bool>);

/// Why an event could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl Audit {
    /// Starts the writer thread. `stream` receives every committed record as a JSON line.
    pub fn start(
        store: Arc<dyn AuditStore>,
        signer: Signer,
        stream: Option<Box<dyn Write + Send>>,
        cfg: AuditConfig,
    ) -> Result<Arc<Self>, String> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                events: Events::with_capacity(QUEUE_CAPACITY_AT_START),
                urgent: false,
            }),
            wake: Condvar::new(),
            backlog: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            writing_since_ms: AtomicI64::new(0),
        });
        let signer = Arc::new(signer);
        let writer = Writer {
            shared: shared.clone(),
            store: store.clone(),
            signer: signer.clone(),
            stream,
            cfg: cfg.clone(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            failures: 0,
            spare: String::new(),
        };
        std::thread::Builder::new()
            .name("keyhold-audit".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Arc::new(Audit {
            shared,
            store,
            signer,
            cfg,
        }))
    }

    /// Whether events can be taken now: the last write succeeded, none has been
    /// stuck longer than the timeout, and the queue has room.
    pub fn healthy(&self) -> bool {
        if self.shared.failing.load(Ordering::Acquire) {
            return false;
        }
        let since = self.shared.writing_since_ms.load(Ordering::Acquire);
        if since != 0 && record::now_ms() - since > self.cfg.timeout.as_millis() as i64 {
            return false;
        }
        self.shared.backlog.load(Ordering::Acquire) < self.cfg.queue_capacity
    }

    /// Takes an event into the queue (serialised there). A queued (crypto or read) event is done
    /// with here, without an await; a management (Sync) event returns the
    /// receipt to wait on with [`Audit::committed`].
    pub fn record(
        &self,
        body: &EventBody<'_>,
        time_ms: i64,
        durability: Durability,
    ) -> Result<Option<Receipt>, Unavailable> {
        if self.shared.backlog.fetch_add(1, Ordering::AcqRel) >= self.cfg.queue_capacity {
            self.shared.backlog.fetch_sub(1, Ordering::AcqRel);
            return Err(Unavailable);
        }
        let (ack, receipt) = match durability {
            Durability::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(Receipt(rx)))
            }
            Durability::Queued => (None, None),
        };
        let len = {
            let mut q = self.shared.lock();
            q.urgent |= ack.is_some();
            q.events.push(body, time_ms, ack);
            q.events.len()
        };
        // Once, not on every push past the mark: a wake-up is a system call.
        if receipt.is_some() || len == FLUSH_SOON {
            self.shared.wake.notify_one();
        }
        Ok(receipt)
    }

    /// Waits until the event behind `receipt` is committed, at most the sink timeout.
    pub async fn committed(&self, receipt: Receipt) -> Result<(), Unavailable> {
        match tokio::time::timeout(self.cfg.timeout, receipt.0).await {
            Ok(Ok(true)) => Ok(()),
            _ => Err(Unavailable),
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Waits (up to `within`) until every accepted event is committed; for shutdown.
    pub fn drain(&self, within: Duration) {
        self.shared.wake.notify_one();
        let deadline = Instant::now() + within;
        while self.shared.backlog.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    store: Arc<dyn AuditStore>,
    signer: Arc<Signer>,
    stream: Option<Box<dyn Write + Send>>,
    cfg: AuditConfig,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    failures: u64,
    /// The last batch's buffer, kept for the next: a fresh one each commit
    /// cost page faults and evicted the request path's working set.
    spare: String,
}

impl Writer {
    /// Waits until a batch is due, then moves the queued events into `pending`
    /// (which holds a failed batch's events, kept for the retry). A batch is due
    /// a tick after the last commit started, or at once when it is large or a
    /// management event waits; when idle, this returns every tick anyway, so
    /// checkpoints stay on time.
    fn next_batch(&self, pending: &mut Events, last_commit: Instant) {
        let mut q = self.shared.lock();
        loop {
            let waiting = !q.events.is_empty() || !pending.is_empty();
            let now = Instant::now();
            let due = last_commit + FLUSH_EVERY;
            if q.urgent || q.events.len() >= FLUSH_SOON || (waiting && now >= due) {
                break;
            }
            let wait = if waiting { due - now } else { FLUSH_EVERY };
            let (guard, timeout) = self
                .shared
                .wake
                .wait_timeout(q, wait)
                .unwrap_or_else(|e| e.into_inner());
            q = guard;
            if !waiting && timeout.timed_out() && q.events.is_empty() {
                break;
            }
        }
        // Usually the whole queue, swapped out (a failed batch's events stay first).
        let room = MAX_BATCH.saturating_sub(pending.len());
        q.events.move_front(pending, room);
        q.urgent = q.events.items.iter().any(|e| e.ack.is_some());
    }

    fn run(mut self) {
        let mut pending = Events::with_capacity(QUEUE_CAPACITY_AT_START);
        let mut last_commit = Instant::now();
        loop {
            self.next_batch(&mut pending, last_commit);
            let checkpoint = self.since_checkpoint + pending.len() as u64 > 0
                && (self.since_checkpoint + pending.len() as u64 >= self.cfg.checkpoint_every
                    || self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval);
            if pending.is_empty() && !checkpoint {
                continue;
            }
            last_commit = Instant::now();
            self.shared
                .writing_since_ms
                .store(record::now_ms(), Ordering::Release);
            let signer = self.signer.clone();
            let mut spare = Some(std::mem::take(&mut self.spare));
            let result = self.store.append(&mut |head: &ChainHead| {
                let lines = spare.take().unwrap_or_default();
                seal_batch(&pending, head, checkpoint.then_some(&*signer), lines)
            });
            self.shared.writing_since_ms.store(0, Ordering::Release);
            match result {
                Ok(batch) => {
                    if self.failures > 0 {
                        tracing::info!(
                            failed_attempts = self.failures,
                            "the audit store is writable again"
                        );
                    }
                    self.failures = 0;
                    self.shared.failing.store(false, Ordering::Release);
                    self.shared
                        .backlog
                        .fetch_sub(pending.len(), Ordering::AcqRel);
                    for e in pending.items.iter_mut() {
                        if let Some(ack) = e.ack.take() {
                            let _ = ack.send(true);
                        }
                    }
                    pending.clear();
                    if checkpoint {
                        self.since_checkpoint = 0;
                        self.last_checkpoint = Instant::now();
                    } else {
                        self.since_checkpoint += batch.last_seq + 1 - batch.first_seq;
                    }
                    self.stream(&batch);
                    if batch.lines.capacity() <= SPARE_MAX {
                        self.spare = batch.lines;
                    }
                }
                Err(e) => {
                    if self.failures == 0 {
                        tracing::error!(error = %e, queued = pending.len(), "the audit store cannot be written: requests are refused with 503 AUDIT_UNAVAILABLE_ERR until it recovers");
                    }
                    self.failures += 1;
                    self.shared.failing.store(true, Ordering::Release);
                    // The events stay queued and are retried in order; their
                    // requests are answered 503 now rather than when the store returns.
                    for e in pending.items.iter_mut() {
                        if let Some(ack) = e.ack.take() {
                            let _ = ack.send(false);
                        }
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
    }

    fn stream(&mut self, batch: &AuditBatch) {
        let Some(out) = self.stream.as_mut() else {
            return;
        };
        if let Err(e) = out
            .write_all(batch.lines.as_bytes())
            .and_then(|_| out.flush())
        {
            tracing::warn!(error = %e, "cannot write the audit log stream");
        }
    }
}

/// Chains `pending` onto `head` and serialises it, then (with `checkpoint`) a
/// signed checkpoint, into one batch. Each event is written straight into the
/// batch's buffer and hashed there: no per-event copies. A failed batch is
/// sealed again on retry, from the head the store then has.
fn seal_batch(
    pending: &Events,
    head: &ChainHead,
    checkpoint: Option<&Signer>,
    mut lines: String,
) -> AuditBatch {
    let mut seq = head.seq;
    lines.clear();
    lines.reserve(pending.bodies.len() + pending.len() * 200 + 512);
    let (mut first_ms, mut last_ms) = (i64::MAX, i64::MIN);
    // Events of one millisecond share its formatted time (dozens of them at load).
    let mut time: (i64, String) = (i64::MIN, String::new());
    let mut prev: Option<record::HexDigest> = None;
    for (body, e) in pending.iter() {
        seq += 1;
        if time.0 != e.time_ms {
            time = (e.time_ms, record::format_ms(e.time_ms));
        }
        let prev_hash = prev.as_ref().map_or(head.hash.as_str(), |h| h.as_str());
        prev = Some(record::seal_line(seq, prev_hash, &time.1, body, &mut lines));
        first_ms = first_ms.min(e.time_ms);
        last_ms = last_ms.max(e.time_ms);
    }
    let mut last_hash = prev.map_or_else(|| head.hash.clone(), |h| h.as_str().to_string());
    if let Some(signer) = checkpoint {
        seq += 1;
        let (time, ms) = record::now();
        let (c, line) = signer.checkpoint(seq, &last_hash, time);
        lines.push_str(&line);
        lines.push('\n');
        last_hash = c.hash;
        first_ms = first_ms.min(ms);
        last_ms = last_ms.max(ms);
    }
    AuditBatch {
        first_seq: head.seq + 1,
        last_seq: seq,
        first_ms,
        last_ms,
        last_hash,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(id: &str) -> EventBody<'_> {
        EventBody {
            kind: "event",
            request_id: id,
            action: "kms.secrets.wrap",
            outcome: "success",
            status: 200,
            method: "POST",
            ..Default::default()
        }
    }

    fn ids(e: &Events) -> Vec<String> {
        e.iter()
            .map(|(b, _)| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["request_id"].to_string()
            })
            .collect()
    }

    #[test]
    fn queued_events_move_in_order_whole_or_in_part() {
        let mut queue = Events::default();
        for id in ["a", "b", "c"] {
            queue.push(&body(id), 1, None);
        }
        // A batch that failed keeps its events first; part of the queue joins it.
        let mut pending = Events::default();
        pending.push(&body("x"), 0, None);
        queue.move_front(&mut pending, 2);
        assert_eq!(ids(&pending), ["\"x\"", "\"a\"", "\"b\""]);
        assert_eq!(ids(&queue), ["\"c\""]);
        queue.push(&body("d"), 2, None);
        let mut empty = Events::default();
        queue.move_front(&mut empty, 10);
        assert_eq!(ids(&empty), ["\"c\"", "\"d\""]);
        assert!(queue.is_empty());
    }
}
