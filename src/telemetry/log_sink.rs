//! Where log lines go: formatted on the request path by tracing's fmt layer, then handed to
//! one writer thread that writes whatever has queued up with a single `write`, then rests a
//! few milliseconds so the next lines gather.
//!
//! Why not stdout directly: stdout is line-buffered, so every request's log line was its
//! own `write(2)` on the tokio worker, about a tenth of a request's CPU in a profile under
//! load. Batched, a burst of lines costs one system call, and the worker only pays for a
//! channel send. Lines are never dropped: when the queue is full the sender waits (the
//! request log is an audit trail; losing it silently under load would be worse than
//! slowing down). Written by hand rather than with `tracing-appender`, which would bring
//! the `time` crates along for rolling files this proxy does not use.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines that may wait for the writer thread. At about 1 KiB a line this bounds the
/// queue's memory to a few MiB.
const QUEUE_LINES: usize = 4096;
/// Bytes gathered before a write when lines arrive faster than the thread writes them.
const BATCH_BYTES: usize = 64 << 10;
/// After a write, how long the thread sleeps before looking at the queue again. While it
/// sleeps, senders do not wake it (a wake-up per line is a context switch per request on a
/// busy core, which cost more than the `write` it saves); lines gather and go out together.
/// This is also the most a line waits under steady load.
const GATHER: Duration = Duration::from_millis(5);
/// How long [`FlushGuard`] waits for queued lines to be written at exit.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(Vec<u8>),
    /// Write everything queued before this, then answer.
    Flush(SyncSender<()>),
}

/// The fmt layer's writer factory: each event becomes one message to the writer thread.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Msg>,
}

/// Flushes queued lines when dropped; keep it alive until the process is about to exit.
pub struct FlushGuard {
    tx: SyncSender<Msg>,
}

/// Starts the writer thread over `out` (stdout in the binary, a buffer in tests).
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(LogSink, FlushGuard)> {
    let (tx, rx) = sync_channel(QUEUE_LINES);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(rx, out))?;
    Ok((LogSink { tx: tx.clone() }, FlushGuard { tx }))
}

fn write_loop<W: Write>(rx: Receiver<Msg>, out: W) {
    let mut out = BufWriter::with_capacity(BATCH_BYTES, out);
    // Write errors (a closed stdout) are ignored: the queue must keep draining so that
    // request paths never block on a sink that is gone.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Msg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.try_send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        std::thread::sleep(GATHER);
    }
    let _ = out.flush();
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(FLUSH_WAIT);
        }
    }
}

impl LogSink {
    /// Queues one finished line (see [`super::request_line`]), waiting if the queue is
    /// full; a stopped writer loses the line rather than failing the request.
    pub fn send_line(&self, line: Vec<u8>) {
        let _ = self.tx.send(Msg::Line(line));
    }
}

/// Where finished JSON lines go when the log is JSON: the writer thread, or stdout itself
/// when the thread could not start.
pub enum JsonOut {
    Queue(LogSink),
    Stdout,
}

impl JsonOut {
    pub fn send_line(&self, line: Vec<u8>) {
        match self {
            JsonOut::Queue(sink) => sink.send_line(line),
            JsonOut::Stdout => {
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

/// One event's bytes on their way to the writer thread.
pub struct SinkWriter<'a> {
    tx: &'a SyncSender<Msg>,
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over a whole formatted event in one call.
        self.tx
            .send(Msg::Line(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "log writer has stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter { tx: &self.tx }
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
        let (open, gate) = std::sync::mpsc::channel();
        let rec = Recorder {
            seen: Arc::default(),
            gate: Arc::new(Mutex::new(Some(gate))),
        };
        let (sink, guard) = spawn(rec.clone()).unwrap();
        let mut expected = Vec::new();
        // The first line's write blocks on the gate; the rest queue up behind it.
        for i in 0..1000 {
            let line = format!("{{\"n\":{i}}}\n");
            sink.make_writer().write_all(line.as_bytes()).unwrap();
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
        for _ in 0..(QUEUE_LINES * 3) {
            sink.make_writer().write_all(b"line\n").unwrap();
        }
        drop(guard);
    }
}
