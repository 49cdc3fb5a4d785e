//! Read-ahead and write-behind threads for `encrypt`/`decrypt`: the kernel's copying of
//! file data (page-cache reads, page allocation on writes) overlaps the AES-GCM work on
//! another core instead of taking turns with it. Memory stays bounded: each side holds at
//! most `DEPTH + 2` chunks of `CHUNK` bytes.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

const CHUNK: usize = 1024 * 1024;
const DEPTH: usize = 3;

/// A reader whose data is read by a background thread, `CHUNK` bytes ahead.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    pub fn new(mut inner: Box<dyn Read + Send>) -> io::Result<ReadAhead> {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
        let (back, spare) = sync_channel::<Vec<u8>>(DEPTH + 2);
        std::thread::Builder::new()
            .name("keyhold-read".into())
            .spawn(move || loop {
                let mut buf = spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                buf.resize(CHUNK, 0);
                let mut filled = 0;
                let result = loop {
                    if filled == CHUNK {
                        break Ok(());
                    }
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let end = filled == 0 || result.is_err();
                let msg = result.map(|_| buf);
                // A closed channel means the consumer stopped early: nothing left to do.
                if tx.send(msg).is_err() || end {
                    return;
                }
            })?;
        Ok(ReadAhead {
            rx,
            back,
            cur: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    if next.is_empty() {
                        self.done = true;
                    }
                    let old = std::mem::replace(&mut self.cur, next);
                    let _ = self.back.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A writer whose data is written by a background thread in `CHUNK`-byte pieces.
/// `finish` must be called to learn whether every write succeeded.
pub struct WriteBehind {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl WriteBehind {
    pub fn new(mut inner: Box<dyn Write + Send>) -> io::Result<WriteBehind> {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (back, spare) = sync_channel::<Vec<u8>>(DEPTH + 2);
        let thread = std::thread::Builder::new()
            .name("keyhold-write".into())
            .spawn(move || {
                for mut chunk in rx {
                    inner.write_all(&chunk)?;
                    chunk.clear();
                    let _ = back.try_send(chunk);
                }
                inner.flush()
            })?;
        Ok(WriteBehind {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            spare,
            thread: Some(thread),
        })
    }

    fn ship(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().map(|tx| tx.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer thread stopped: its error is the one to report.
            _ => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("writer stopped"))),
        }
    }

    fn join(&mut self) -> io::Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("writer thread panicked"))?,
            None => Ok(()),
        }
    }

    /// Drops what is not yet shipped and waits for the thread (after a failure).
    pub fn abandon(&mut self) {
        self.buf.clear();
        let _ = self.join();
    }

    /// Writes what is left and waits for the thread; any write error surfaces here.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.ship()?;
        }
        self.join()
    }
}

impl Write for WriteBehind {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Data is flushed by `finish`; a flush mid-stream has nothing to wait for.
        Ok(())
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn round_trips_through_both_threads() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 253) as u8).collect();
        let mut r = ReadAhead::new(Box::new(io::Cursor::new(data.clone()))).unwrap();
        let sink = Arc::new(Mutex::new(Vec::new()));
        let mut w = WriteBehind::new(Box::new(Shared(sink.clone()))).unwrap();
        let mut buf = vec![0u8; 65537];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(*sink.lock().unwrap(), data);
        let mut empty = ReadAhead::new(Box::new(io::empty())).unwrap();
        assert_eq!(empty.read(&mut buf).unwrap(), 0);
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_surface() {
        let mut w = WriteBehind::new(Box::new(Failing)).unwrap();
        let chunk = vec![0u8; CHUNK];
        let mut failed = false;
        for _ in 0..10 {
            if w.write_all(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed || w.finish().is_err());
    }
}
