//! Where the JSON log lines go: the threads that log append each line to one shared
//! buffer, and a background thread writes the buffer to stderr every [`FLUSH_EVERY`]
//! (sooner once it holds [`FLUSH_SOON`] bytes). A queue with one wake-up per line would
//! wake the writer for nearly every request and, on a server given one core, now and
//! then run it ahead of a waiting request (docs/benchmarks.md, "Why p99 at half of peak").
//! Nothing is dropped: past [`LIMIT`] bytes a logging thread waits for the writer.
//! A line written while serving a request gets that request's id as a last member
//! `"request_id"` (keyhold_server::request_id), unless it names one itself.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const FLUSH_SOON: usize = 256 * 1024;
const LIMIT: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Tells the writer to flush before its next tick (a large buffer, or closing).
    flush_now: Condvar,
    /// Tells waiting loggers the buffer was taken.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A logging thread that panicked mid-append leaves at worst a torn line.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` given to the tracing subscriber.
#[derive(Clone)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
}

/// Flushes what is left and stops the writer thread when dropped (end of `main`).
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread.
pub fn batched_stderr() -> std::io::Result<(BatchedStderr, FlushGuard)> {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("keyhold-log".into())
        .spawn(move || write_out(&for_thread, &mut std::io::stderr()))?;
    Ok((
        BatchedStderr {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_out(shared: &Shared, out: &mut impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut pending = shared.lock();
        if pending.bytes.len() < FLUSH_SOON && !pending.closed {
            pending = shared
                .flush_now
                .wait_timeout(pending, FLUSH_EVERY)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        std::mem::swap(&mut pending.bytes, &mut spare);
        let closed = pending.closed;
        drop(pending);
        shared.drained.notify_all();
        if !spare.is_empty() {
            // Nowhere to report a failed write to stderr; the lines are lost either way.
            let _ = out.write_all(&spare).and_then(|_| out.flush());
            spare.clear();
            if spare.capacity() > FLUSH_SOON * 4 {
                spare.shrink_to(FLUSH_SOON);
            }
        }
        if closed && shared.lock().bytes.is_empty() {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.flush_now.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Appends `line` (one JSON object and a newline) with `"request_id": id` as its
/// last member, unless it has one already (the per-request access line does).
fn append_with_request_id(out: &mut Vec<u8>, line: &[u8], id: &str) {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let has_id = body.windows(13).any(|w| w == b"\"request_id\":");
    match body.strip_suffix(b"}") {
        Some(open) if !has_id => {
            out.extend_from_slice(open);
            out.extend_from_slice(b",\"request_id\":");
            // The id is visible ASCII (api::envelope), but may hold a quote.
            out.extend_from_slice(serde_json::to_string(id).unwrap_or_default().as_bytes());
            out.extend_from_slice(b"}\n");
        }
        _ => out.extend_from_slice(line),
    }
}

/// One event's line, appended whole.
pub struct LineWriter {
    shared: Arc<Shared>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.bytes.len() >= LIMIT && !pending.closed {
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        match keyhold_server::request_id::current() {
            Some(id) => append_with_request_id(&mut pending.bytes, buf, &id),
            None => pending.bytes.extend_from_slice(buf),
        }
        if pending.bytes.len() >= FLUSH_SOON {
            self.shared.flush_now.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            shared: self.shared.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_gets_its_id_once() {
        let mut out = Vec::new();
        append_with_request_id(&mut out, b"{\"level\":\"WARN\"}\n", "a\"b");
        assert_eq!(out, b"{\"level\":\"WARN\",\"request_id\":\"a\\\"b\"}\n");
        out.clear();
        let named = b"{\"fields\":{\"request_id\":\"x\"}}\n";
        append_with_request_id(&mut out, named, "y");
        assert_eq!(out, named);
    }

    #[test]
    fn every_line_is_written_in_order_and_close_flushes() {
        let shared = Arc::new(Shared::default());
        let writer = BatchedStderr {
            shared: shared.clone(),
        };
        let sink = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let for_thread = shared.clone();
        let out = sink.clone();
        let thread = std::thread::spawn(move || write_out(&for_thread, &mut Sink(out)));
        let guard = FlushGuard {
            shared,
            thread: Some(thread),
        };
        // More than FLUSH_SOON, so the writer also flushes early.
        for i in 0..20_000 {
            writer
                .make_writer()
                .write_all(format!("line {i:05} ..............\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| l.starts_with(&format!("line {i:05} "))));
    }
}
