//! `cargo xtask`: memtide's build tasks.
//!
//! Everything a fresh Debian/Ubuntu x86_64 machine needs is done here, so
//! that the README's two commands (`cargo xtask demo`, `cargo xtask test`)
//! work without other set-up.

mod busybox;
mod cpio;
mod deps;
mod elf;
mod error;
mod initramfs;
mod kconfig;
mod kernel;
mod paths;
mod process;
mod run;
mod test;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use busybox::Applets;

/// memtide build tasks.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "memtide build tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the Debian packages the builds need (only those missing).
    Deps,
    /// Build the guest kernel (vmlinux + bzImage) from Debian's
    /// linux-source-6.12, cached by config hash in $MEMTIDE_CACHE.
    Kernel,
    /// Build the static guest init and pack the uncompressed initramfs
    /// ($MEMTIDE_CACHE/initramfs.cpio and initramfs-idle.cpio).
    Initramfs(ImageOpts),
    /// deps + kernel + initramfs.
    Images(ImageOpts),
    /// Set everything up, then run `memtide demo`: one guest shrunk by
    /// its balloon and grown by hot-add, narrated. Arguments after `--` go
    /// to `memtide demo`.
    Demo {
        /// Extra arguments for `memtide demo`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set everything up, then boot a guest with memtide's defaults.
    /// Arguments after `--` go to `memtide run`.
    Run {
        /// Extra arguments for `memtide run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set everything up, then run formatting and lint checks, the unit
    /// tests and the integration tests that boot real guests.
    Test,
}

/// Options of the initramfs build.
#[derive(Debug, Args)]
struct ImageOpts {
    /// Link every busybox applet into /bin (268 links, about 9 s more boot
    /// on a nested host), not only the common ones; `sh` runs every applet
    /// either way.
    #[arg(long)]
    all_applets: bool,
}

impl ImageOpts {
    fn applets(&self) -> Applets {
        if self.all_applets {
            Applets::All
        } else {
            Applets::Core
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Deps => deps::ensure(),
        Task::Kernel => deps::ensure().and_then(|()| kernel::build().map(|_| ())),
        Task::Initramfs(opts) => {
            deps::ensure().and_then(|()| initramfs::build(opts.applets()).map(|_| ()))
        }
        Task::Images(opts) => images(opts.applets()),
        Task::Run { args } => images(Applets::Core).and_then(|()| run::memtide("run", &args)),
        Task::Demo { args } => images(Applets::Core).and_then(|()| run::memtide("demo", &args)),
        Task::Test => images(Applets::Core).and_then(|()| test::run_all()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[xtask] error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs dependencies and builds both guest images.
fn images(applets: Applets) -> Result<(), error::XtaskError> {
    deps::ensure()?;
    kernel::build()?;
    initramfs::build(applets)?;
    Ok(())
}
