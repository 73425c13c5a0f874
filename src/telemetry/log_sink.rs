//! Where log lines go: appended on the request path to one shared buffer, which a writer
//! thread takes whole and writes with a single `write`, then rests a few milliseconds so
//! the next lines gather.
//!
//! Why not stdout directly: stdout is line-buffered, so every request's log line was its
//! own `write(2)` on the tokio worker, about a tenth of a request's CPU in a profile under
//! load. Batched, a burst of lines costs one system call. Why one buffer rather than a
//! queue of lines: a line per message cost an allocation on the request thread, a free on
//! the writer thread (jemalloc's slow path for memory freed by another thread) and a
//! channel send; appending to a buffer the writer swaps for an empty one costs a lock and
//! a copy, and the two buffers keep their memory between batches.
//!
//! Lines are never dropped: when [`PENDING_MAX`] bytes wait, senders wait too (the request
//! log is an audit trail; losing it silently under load would be worse than slowing
//! down). Written by hand rather than with `tracing-appender`, which would bring the
//! `time` crates along for rolling files this proxy does not use.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes that may wait for the writer before senders wait for it. At about 500 bytes a
/// request line, some 8,000 lines: a quarter of a second at 30,000 requests/s.
const PENDING_MAX: usize = 4 << 20;
/// What each of the two buffers keeps of its memory after a write: a burst may grow one
/// to [`PENDING_MAX`], and that is given back rather than held for good.
const KEEP: usize = 256 << 10;
/// What a thread's scratch line keeps of its memory: a line can be as long as a client's
/// model name (the request body's limit), and one such line must not pin that much on a
/// worker thread for good.
const SCRATCH_KEEP: usize = 64 << 10;
/// After a write, how long the thread sleeps before looking at the buffer again. While it
/// sleeps, senders do not wake it (a wake-up per line is a context switch per request on a
/// busy core, which cost more than the `write` it saves); lines gather and go out together.
/// This is also the most a line waits under steady load.
const GATHER: Duration = Duration::from_millis(5);
/// How long [`FlushGuard`] waits for pending lines to be written at exit.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// What senders and the writer share, under one lock.
#[derive(Default)]
struct Pending {
    /// Lines not yet taken by the writer, whole lines only.
    buf: Vec<u8>,
    /// The writer is waiting for a line: the next sender wakes it.
    parked: bool,
    /// Flushes asked for, and how many of them the writer has done: a flush is done once
    /// everything appended before it was asked for has been written.
    flushes_asked: u64,
    flushes_done: u64,
    /// The writer thread has ended (it cannot, short of a panic in the output): lines are
    /// then dropped rather than left to fill the buffer and stop every sender for good.
    writer_gone: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits here while nothing is pending.
    work: Condvar,
    /// Senders wait here while the buffer is full; [`FlushGuard`] waits here for its flush.
    written: Condvar,
}

impl Shared {
    /// The lock, even if a thread panicked holding it: a `Vec<u8>` of whole lines and two
    /// counters stay usable, and the log must go on.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the writer if it is waiting for work (a line, or a flush to do); a writer
    /// that is writing or resting finds the work when it next looks.
    fn wake_writer(&self, p: &mut Pending) {
        if p.parked {
            p.parked = false;
            self.work.notify_one();
        }
    }

    /// Appends `bytes` (one or more whole lines), waiting while the buffer is full.
    fn push(&self, bytes: &[u8]) {
        let mut p = self.lock();
        while p.buf.len() >= PENDING_MAX && !p.writer_gone {
            p = self.written.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        if p.writer_gone {
            return;
        }
        p.buf.extend_from_slice(bytes);
        self.wake_writer(&mut p);
    }
}

/// The fmt layer's writer factory: each event is appended to the shared buffer.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

/// Flushes pending lines when dropped; keep it alive until the process is about to exit.
pub struct FlushGuard {
    shared: Arc<Shared>,
}

/// Starts the writer thread over `out` (stdout in the binary, a buffer in tests).
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(LogSink, FlushGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::default(),
        work: Condvar::new(),
        written: Condvar::new(),
    });
    let for_writer = shared.clone();
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(&for_writer, out))?;
    Ok((
        LogSink {
            shared: shared.clone(),
        },
        FlushGuard { shared },
    ))
}

/// Takes everything pending, writes it, and sleeps [`GATHER`] unless a flush is waiting.
/// Write errors (a closed stdout) are ignored: the buffer must keep draining so that
/// request paths never block on a sink that is gone.
fn write_loop<W: Write>(shared: &Shared, mut out: W) {
    /// Marks the writer gone however the loop ends, and wakes everyone waiting on it.
    struct Gone<'a>(&'a Shared);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            self.0.lock().writer_gone = true;
            self.0.written.notify_all();
        }
    }
    let _gone = Gone(shared);
    let mut batch = Vec::new();
    loop {
        let flush_to = {
            let mut p = shared.lock();
            while p.buf.is_empty() && p.flushes_done == p.flushes_asked {
                p.parked = true;
                p = shared.work.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            p.parked = false;
            let was_full = p.buf.len() >= PENDING_MAX;
            std::mem::swap(&mut p.buf, &mut batch);
            if was_full {
                shared.written.notify_all();
            }
            p.flushes_asked
        };
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
        }
        let _ = out.flush();
        batch.clear();
        batch.shrink_to(KEEP);
        let mut p = shared.lock();
        if p.flushes_done < flush_to {
            p.flushes_done = flush_to;
            shared.written.notify_all();
        } else {
            drop(p);
            std::thread::sleep(GATHER);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let shared = &*self.shared;
        let mut p = shared.lock();
        p.flushes_asked += 1;
        let asked = p.flushes_asked;
        shared.wake_writer(&mut p);
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        while p.flushes_done < asked && !p.writer_gone {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            p = shared
                .written
                .wait_timeout(p, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

thread_local! {
    /// Each thread's scratch line: formatted here, outside the lock, then appended in one
    /// copy. It keeps its capacity, so a line costs no allocation.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl LogSink {
    /// Appends the line `fill` writes (see [`super::request_line`]), waiting if the buffer
    /// is full.
    pub fn send_with(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut fill = Some(fill);
        let _ = SCRATCH.try_with(|scratch| {
            // Busy only if `fill` itself logged a line; that one gets a buffer of its own
            // below.
            if let Ok(mut line) = scratch.try_borrow_mut() {
                if let Some(fill) = fill.take() {
                    line.clear();
                    fill(&mut line);
                    self.shared.push(&line);
                    line.clear();
                    line.shrink_to(SCRATCH_KEEP);
                }
            }
        });
        // The scratch line was busy, or the thread is ending and its locals are gone.
        if let Some(fill) = fill {
            let mut line = Vec::new();
            fill(&mut line);
            self.shared.push(&line);
        }
    }
}

/// Where finished JSON lines go when the log is JSON: the writer thread, or stdout itself
/// when the thread could not start.
pub enum JsonOut {
    Queue(LogSink),
    Stdout,
}

impl JsonOut {
    /// Writes the line `fill` writes into the buffer it is given.
    pub fn send_with(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        match self {
            JsonOut::Queue(sink) => sink.send_with(fill),
            JsonOut::Stdout => {
                let mut line = Vec::new();
                fill(&mut line);
                let _ = io::stdout().lock().write_all(&line);
            }
        }
    }
}

/// Set by [`super::init`] when the log is JSON; `None` otherwise (a terminal, tests
/// without a subscriber), and lines then go through `tracing`.
static JSON_OUT: std::sync::OnceLock<JsonOut> = std::sync::OnceLock::new();

pub fn set_json_out(out: JsonOut) {
    let _ = JSON_OUT.set(out);
}

pub fn json_out() -> Option<&'static JsonOut> {
    JSON_OUT.get()
}

/// One event's bytes on their way to the shared buffer.
pub struct SinkWriter<'a> {
    shared: &'a Shared,
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over a whole formatted event in one call.
        self.shared.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` that records what reached it and how many writes it took; its first
    /// write waits until the test opens the gate.
    #[derive(Clone)]
    struct Recorder {
        seen: Arc<Mutex<(Vec<u8>, usize)>>,
        gate: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
    }

    impl Recorder {
        fn gated() -> (Self, std::sync::mpsc::Sender<()>) {
            let (open, gate) = std::sync::mpsc::channel();
            let rec = Recorder {
                seen: Arc::default(),
                gate: Arc::new(Mutex::new(Some(gate))),
            };
            (rec, open)
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let gate = self
                .gate
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .take();
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            let mut g = self.seen.lock().map_err(|_| io::Error::other("poisoned"))?;
            g.0.extend_from_slice(buf);
            g.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_queued_behind_a_write_go_out_in_one_write_in_order() {
        let (rec, open) = Recorder::gated();
        let (sink, guard) = spawn(rec.clone()).unwrap();
        let mut expected = Vec::new();
        // The first line's write blocks on the gate; the rest gather behind it.
        for i in 0..1000 {
            let line = format!("{{\"n\":{i}}}\n");
            if i % 2 == 0 {
                sink.make_writer().write_all(line.as_bytes()).unwrap();
            } else {
                sink.send_with(|buf| buf.extend_from_slice(line.as_bytes()));
            }
            expected.extend_from_slice(line.as_bytes());
        }
        open.send(()).unwrap();
        drop(guard);
        let g = rec.seen.lock().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&g.0),
            String::from_utf8_lossy(&expected)
        );
        assert!(g.1 <= 3, "{} writes for 1000 lines", g.1);
    }

    #[test]
    fn a_full_buffer_makes_senders_wait_and_loses_nothing() {
        let (rec, open) = Recorder::gated();
        let (sink, guard) = spawn(rec.clone()).unwrap();
        // The writer takes the first line and blocks writing it; what follows fills the
        // buffer, and then the sender has to wait for the gate.
        sink.send_with(|buf| buf.extend_from_slice(b"first\n"));
        let line = vec![b'x'; 64 << 10];
        let lines = 3 * PENDING_MAX / line.len();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = {
            let (sink, line) = (sink.clone(), line.clone());
            std::thread::spawn(move || {
                for _ in 0..lines {
                    sink.send_with(|buf| buf.extend_from_slice(&line));
                }
                let _ = done_tx.send(());
            })
        };
        assert!(
            done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the sender finished while the writer was stuck: lines were dropped or unbounded"
        );
        open.send(()).unwrap();
        // Once the writer moves again, the sender must be woken and finish.
        assert!(
            done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the sender was never woken after the writer caught up"
        );
        sender.join().unwrap();
        drop(guard);
        let g = rec.seen.lock().unwrap();
        assert_eq!(g.0.len(), b"first\n".len() + lines * line.len());
    }

    #[test]
    fn a_writer_that_died_does_not_block_senders() {
        struct Panics;
        impl Write for Panics {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                panic!("the output panicked");
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (sink, guard) = spawn(Panics).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let line = vec![b'x'; 64 << 10];
            for _ in 0..(3 * PENDING_MAX / line.len()) {
                sink.send_with(|buf| buf.extend_from_slice(&line));
            }
            drop(guard);
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "senders stayed blocked on a writer that had ended"
        );
    }

    #[test]
    fn a_failing_output_does_not_block_senders() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
            }
        }
        let (sink, guard) = spawn(Broken).unwrap();
        let line = vec![b'x'; 64 << 10];
        for _ in 0..(3 * PENDING_MAX / line.len()) {
            sink.make_writer().write_all(&line).unwrap();
        }
        drop(guard);
    }
}
