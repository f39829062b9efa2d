//! A sampling profiler for the guest: a thread interrupts vCPU 0 at a fixed
//! rate and the vCPU records its RIP. Set `MEMTIDE_PROFILE_GUEST=FILE` to
//! write "rip count" lines to FILE when the VM stops; map them to symbols
//! with the kernel's System.map (`docs/nested-host.md`). A developer tool
//! for finding what makes the guest slow on a given host.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use memtide_devices::bus::lock;

use super::{kick, VcpuHandle};

/// Environment variable naming the output file.
pub const PROFILE_ENV: &str = "MEMTIDE_PROFILE_GUEST";
/// Time between samples.
const SAMPLE_PERIOD: Duration = Duration::from_millis(2);

/// Collected samples: guest RIP → hits.
#[derive(Debug, Default)]
pub struct GuestProfile {
    hits: Mutex<HashMap<u64, u64>>,
    stop: AtomicBool,
}

impl GuestProfile {
    /// Records one sample.
    pub fn record(&self, rip: u64) {
        let mut hits = lock(&self.hits);
        *hits.entry(rip).or_insert(0) += 1;
    }

    /// Tells the sampling thread to stop (it ends within one period).
    pub fn stop_sampling(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Writes the samples, most frequent first, to `out` (created before
    /// the sandbox closed, see `vm/vmm.rs`).
    pub fn write_to(&self, out: std::fs::File) -> std::io::Result<()> {
        self.stop_sampling();
        let hits = lock(&self.hits);
        let mut v: Vec<_> = hits.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        let mut f = std::io::BufWriter::new(out);
        for (rip, n) in v {
            writeln!(f, "{rip:#x} {n}")?;
        }
        f.flush()
    }
}

/// The output path, if profiling was asked for.
pub fn requested() -> Option<PathBuf> {
    std::env::var_os(PROFILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Starts the sampling thread against `vcpu`'s thread, with the kick
/// signal (`vcpu/kick.rs`), which makes `KVM_RUN` return `EINTR`. Stop it
/// ([`GuestProfile::stop_sampling`]) and join it before joining `vcpu`.
pub fn start_sampler(
    profile: Arc<GuestProfile>,
    vcpu: &VcpuHandle,
) -> std::io::Result<JoinHandle<()>> {
    let target = std::os::unix::thread::JoinHandleExt::as_pthread_t(vcpu.thread());
    std::thread::Builder::new()
        .name("profiler".into())
        .spawn(move || {
            while !profile.stop.load(Ordering::SeqCst) {
                std::thread::sleep(SAMPLE_PERIOD);
                // SAFETY: `target` is the vCPU thread, which is not joined
                // before this thread is: the VMM stops and joins the sampler
                // first (`vm/vmm.rs`), so the pthread_t stays valid; the
                // signal has the handler `kick::install_handler` installed
                // before any vCPU started.
                if unsafe { libc::pthread_kill(target, kick::kick_signal()) } != 0 {
                    break;
                }
            }
        })
}
