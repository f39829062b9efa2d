//! Where the guest's console bytes go, and what memtide learns from them.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// The line a Linux kernel prints when it panics.
pub const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";

/// Longest line kept for scanning; longer lines are scanned in pieces.
const MAX_LINE: usize = 512;

/// Facts about the guest learned from its console, shared with the VMM.
#[derive(Debug, Default)]
pub struct GuestWatch {
    panicked: AtomicBool,
}

impl GuestWatch {
    /// Whether the guest kernel printed a panic line.
    pub fn panicked(&self) -> bool {
        self.panicked.load(Ordering::SeqCst)
    }
}

/// A writer for the UART's transmit side: copies every byte to the host
/// sink and scans complete lines for [`PANIC_MARKER`].
pub struct ConsoleOutput {
    sink: Box<dyn Write + Send>,
    line: Vec<u8>,
    watch: std::sync::Arc<GuestWatch>,
}

impl ConsoleOutput {
    /// Creates an output that writes to `sink` and reports into `watch`.
    pub fn new(sink: Box<dyn Write + Send>, watch: std::sync::Arc<GuestWatch>) -> Self {
        Self {
            sink,
            line: Vec::with_capacity(MAX_LINE),
            watch,
        }
    }

    fn scan_line(&mut self) {
        if self
            .line
            .windows(PANIC_MARKER.len())
            .any(|w| w == PANIC_MARKER)
        {
            self.watch.panicked.store(true, Ordering::SeqCst);
        }
        self.line.clear();
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' || self.line.len() >= MAX_LINE {
                self.scan_line();
            }
            if b != b'\n' {
                self.line.push(b);
            }
        }
        self.sink.write_all(buf)?;
        if buf.contains(&b'\n') {
            self.sink.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn detects_panic_line_split_across_writes() {
        let watch = Arc::new(GuestWatch::default());
        let mut out = ConsoleOutput::new(Box::new(io::sink()), watch.clone());
        out.write_all(b"[    1.0] Kernel pan").expect("write");
        assert!(!watch.panicked());
        out.write_all(b"ic - not syncing: Attempted to kill init!\n")
            .expect("write");
        assert!(watch.panicked());
    }

    #[test]
    fn ordinary_lines_do_not_count_as_panic() {
        let watch = Arc::new(GuestWatch::default());
        let mut out = ConsoleOutput::new(Box::new(io::sink()), watch.clone());
        out.write_all(b"panic=-1 in the command line\nKernel panic test skipped\n")
            .expect("write");
        assert!(!watch.panicked());
    }
}
