//! A guest booted by a benchmark: `memtide run` as a child process with a
//! control API socket, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::RunArgs;
use crate::config::cache_dir;
use crate::ctl::{call, CtlError};

/// How long a guest may take to bring its balloon driver up.
const DRIVER_DEADLINE: Duration = Duration::from_secs(300);

/// Errors while driving a benchmark guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// `memtide run` could not start.
    #[error("cannot start `memtide run`: {0}")]
    Spawn(std::io::Error),
    /// The API did not answer as expected.
    #[error(transparent)]
    Api(#[from] CtlError),
    /// An answer that is not the JSON expected.
    #[error("unexpected API answer: {0}")]
    BadAnswer(String),
    /// Something took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The guest stopped.
    #[error("the guest stopped during the benchmark ({0})")]
    GuestGone(std::process::ExitStatus),
    /// No image cache.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A running benchmark guest.
pub struct BenchGuest {
    child: Child,
    /// Its API socket.
    pub sock: PathBuf,
}

impl Drop for BenchGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// GET `path` as JSON.
pub fn get_json(sock: &Path, path: &str) -> Result<serde_json::Value, GuestError> {
    let body = call(sock, "GET", path, "")?;
    serde_json::from_str(&body).map_err(|_| GuestError::BadAnswer(body))
}

/// A numeric field of `v`.
pub fn field(v: &serde_json::Value, name: &str) -> Result<f64, GuestError> {
    v[name]
        .as_f64()
        .ok_or_else(|| GuestError::BadAnswer(format!("no {name} in {v}")))
}

impl BenchGuest {
    /// Boots `args` (plus a balloon and an API socket; the idle initramfs
    /// unless one is given) and waits for the balloon driver.
    pub fn boot(args: &RunArgs, tag: &str) -> Result<Self, GuestError> {
        let mut args = args.clone();
        let sock =
            std::env::temp_dir().join(format!("memtide-bench-{}-{tag}.sock", std::process::id()));
        args.balloon = true;
        args.api_sock = Some(sock.clone());
        if args.initramfs.is_none() && !args.no_initramfs {
            args.initramfs = Some(cache_dir()?.join("initramfs-idle.cpio"));
        }
        let exe = std::env::current_exe().map_err(GuestError::Spawn)?;
        let child = Command::new(exe)
            .args(super::boot::run_argv(&args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(GuestError::Spawn)?;
        let mut guest = BenchGuest { child, sock };
        let start = Instant::now();
        guest.wait_until(
            "the balloon driver",
            DRIVER_DEADLINE,
            Duration::from_millis(200),
            |g| {
                Ok(get_json(&g.sock, "/balloon")
                    .is_ok_and(|v| v["driver_ready"] == serde_json::Value::Bool(true)))
            },
        )?;
        println!(
            "  guest up, balloon driver ready after {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Ok(guest)
    }

    /// Polls `done` every `every` until it holds, the guest exits, or `deadline`.
    pub fn wait_until(
        &mut self,
        what: &'static str,
        deadline: Duration,
        every: Duration,
        mut done: impl FnMut(&Self) -> Result<bool, GuestError>,
    ) -> Result<(), GuestError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(GuestError::Spawn)? {
                return Err(GuestError::GuestGone(status));
            }
            if self.sock.exists() && done(self)? {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(GuestError::Timeout(what));
            }
            std::thread::sleep(every);
        }
    }
}
