//! Where the guest's console bytes go, and what memtide learns from them.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::guest_fault::{self, GuestFault};

/// The line a Linux kernel prints when it panics.
pub const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";

/// Longest line kept for scanning; longer lines are scanned in pieces.
const MAX_LINE: usize = 512;

/// Most guest faults kept; later ones are only counted.
pub const MAX_FAULTS: usize = 16;

/// Facts about the guest learned from its console, shared with the VMM.
#[derive(Debug, Default)]
pub struct GuestWatch {
    panicked: AtomicBool,
    faults: Mutex<Vec<GuestFault>>,
    faults_dropped: AtomicUsize,
}

impl GuestWatch {
    /// Whether the guest kernel printed a panic line.
    pub fn panicked(&self) -> bool {
        self.panicked.load(Ordering::SeqCst)
    }

    /// The guest process failures seen on the console, first ones first
    /// (at most [`MAX_FAULTS`]).
    pub fn faults(&self) -> Vec<GuestFault> {
        crate::bus::lock(&self.faults).clone()
    }

    /// How many failures were seen beyond the first [`MAX_FAULTS`].
    pub fn faults_dropped(&self) -> usize {
        self.faults_dropped.load(Ordering::SeqCst)
    }

    fn record(&self, fault: GuestFault) {
        let mut faults = crate::bus::lock(&self.faults);
        if faults.len() < MAX_FAULTS {
            faults.push(fault);
        } else {
            self.faults_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A writer for the UART's transmit side: copies every byte to the host
/// sink and scans complete lines for [`PANIC_MARKER`] and for guest process
/// failures ([`GuestFault`]).
pub struct ConsoleOutput {
    sink: Box<dyn Write + Send>,
    line: Vec<u8>,
    watch: std::sync::Arc<GuestWatch>,
}

impl std::fmt::Debug for ConsoleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sink is a trait object without `Debug`.
        f.debug_struct("ConsoleOutput")
            .field("line", &String::from_utf8_lossy(&self.line))
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
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
        if let Some(fault) = guest_fault::parse_line(&self.line) {
            self.watch.record(fault);
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
    fn records_guest_faults_in_order_split_across_writes() {
        let watch = Arc::new(GuestWatch::default());
        let mut out = ConsoleOutput::new(Box::new(io::sink()), watch.clone());
        out.write_all(b"[    3.1] sh[26]: segfault at 0 ip 1 sp 2 error 4\r\nmemtide-init: comm")
            .expect("write");
        out.write_all(b"and exited with status 139 (signal 11, SIGSEGV)\r\n")
            .expect("write");
        out.write_all(b"memtide-init: powering off\r\n")
            .expect("write");
        let faults = watch.faults();
        assert_eq!(faults.len(), 2, "{faults:?}");
        assert!(matches!(faults[0], GuestFault::KernelFault { pid: 26, .. }));
        assert!(matches!(
            faults[1],
            GuestFault::CommandFailed {
                status: 139,
                signal: Some(11)
            }
        ));
        assert!(!watch.panicked());
    }

    #[test]
    fn keeps_the_first_faults_and_counts_the_rest() {
        let watch = Arc::new(GuestWatch::default());
        let mut out = ConsoleOutput::new(Box::new(io::sink()), watch.clone());
        for pid in 0..MAX_FAULTS + 3 {
            writeln!(
                out,
                "memtide-init: process {pid} (x) killed by signal 9, SIGKILL"
            )
            .expect("write");
        }
        let faults = watch.faults();
        assert_eq!(faults.len(), MAX_FAULTS);
        assert!(matches!(
            faults[0],
            GuestFault::ProcessKilled { pid: 0, .. }
        ));
        assert_eq!(watch.faults_dropped(), 3);
    }

    #[test]
    fn a_successful_command_is_no_fault() {
        let watch = Arc::new(GuestWatch::default());
        let mut out = ConsoleOutput::new(Box::new(io::sink()), watch.clone());
        out.write_all(b"memtide-init: command exited with status 0\r\n")
            .expect("write");
        assert!(watch.faults().is_empty());
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
