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
mod host_lane;
mod initramfs;
mod kconfig;
mod kernel;
mod lane;
mod paths;
mod process;
mod run;
mod static_binary;
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
    /// Build the static multi-call guest binary (init, agent, hog) and pack
    /// the uncompressed initramfs
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
    /// tests, and the integration tests that boot real guests in both
    /// lanes: on this host's /dev/kvm, then on standard KVM (`lane svm`).
    Test(TestOpts),
    /// Run a command on standard KVM from any x86_64 host: a Debian kernel
    /// with kvm_amd boots under QEMU's TCG (which emulates AMD SVM with
    /// nested paging) with memtide's build and guest images at their host
    /// paths, and runs COMMAND there (memtide is on PATH). Exits with
    /// COMMAND's status; consoles are kept in target/lane/svm/.
    Lane(LaneArgs),
}

/// Which lanes `cargo xtask test` runs the integration tests in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Lanes {
    /// This host's /dev/kvm, then the standard-KVM lane.
    Both,
    /// Only this host's /dev/kvm.
    Host,
    /// Only the standard-KVM lane (kvm_amd inside QEMU TCG).
    Svm,
}

/// Options of `cargo xtask test`.
#[derive(Debug, Args)]
struct TestOpts {
    /// The lanes the integration tests run in.
    #[arg(long, value_enum, default_value = "both")]
    lanes: Lanes,
    /// Test with the guest images already in $MEMTIDE_CACHE, as they are,
    /// instead of building them (the packages must be installed): to time
    /// the suite with images built elsewhere, such as an older kernel or a
    /// larger initramfs (docs/measurements.md, "Suite time, host lane").
    #[arg(long)]
    prebuilt_images: bool,
}

/// The lanes `cargo xtask lane` offers.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LaneKind {
    /// kvm_amd inside QEMU TCG (nested SVM): standard KVM on any x86_64 host.
    Svm,
}

/// Arguments of `cargo xtask lane`.
#[derive(Debug, Args)]
struct LaneArgs {
    /// The lane.
    #[arg(value_enum)]
    kind: LaneKind,
    /// L1 RAM in MiB.
    #[arg(long, default_value_t = 4096)]
    memory_mib: u32,
    /// The Debian meta-package whose dependency is the L1 kernel package.
    #[arg(long, default_value = "linux-image-cloud-amd64")]
    l1_kernel: String,
    /// Parameters for L1's `insmod kvm-amd.ko` (default: shadow paging,
    /// see docs/lanes.md; "npt=1" brings back the faulty nested paging).
    #[arg(long, default_value = lane::DEFAULT_KVM_AMD_PARAMS)]
    kvm_amd_params: String,
    /// L1 vCPUs (default: the host's CPU count).
    #[arg(long)]
    cpus: Option<usize>,
    /// Wall-clock limit for the L1 run, in minutes.
    #[arg(long, default_value_t = 45)]
    timeout_min: u64,
    /// Host files to carry into L1 at the same paths (repeatable), e.g. a
    /// script the command runs.
    #[arg(long, value_name = "FILE")]
    carry: Vec<std::path::PathBuf>,
    /// QEMU TCG threading: `multi` (one host thread per L1 vCPU, the
    /// default) or `single` (one thread for all; to tell TCG races apart).
    #[arg(long, default_value = "multi", value_parser = ["multi", "single"])]
    tcg_thread: String,
    /// QEMU's `-cpu` model for L1.
    #[arg(long, default_value = lane::DEFAULT_CPU_MODEL)]
    cpu_model: String,
    /// Carry the integration test executables into L1 too; without a
    /// COMMAND, run them all there (what `cargo xtask test` does in this lane).
    #[arg(long)]
    tests: bool,
    /// The command (after `--`), e.g. `memtide bench all`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "tests"
    )]
    command: Vec<String>,
}

/// Options of the initramfs build.
#[derive(Debug, Args)]
struct ImageOpts {
    /// Which busybox applets get a /bin link: `core` (the common ones),
    /// `sh` (only the shell) or `all` (268 links, about 9 s more boot on a
    /// nested host); `sh` runs every applet either way.
    #[arg(long, value_enum, default_value = "core")]
    applets: Applets,
    /// Same as `--applets all`.
    #[arg(long, conflicts_with = "applets")]
    all_applets: bool,
}

impl ImageOpts {
    fn applets(&self) -> Applets {
        if self.all_applets {
            Applets::All
        } else {
            self.applets
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
        Task::Test(opts) => {
            let ready = if opts.prebuilt_images {
                prebuilt_images()
            } else {
                images(Applets::Core)
            };
            ready.and_then(|()| test::run_all(opts.lanes))
        }
        Task::Lane(args) => {
            let LaneKind::Svm = args.kind;
            let opts = lane::LaneOpts {
                memory_mib: args.memory_mib,
                timeout: std::time::Duration::from_secs(args.timeout_min * 60),
                carry: args.carry.clone(),
                cpus: args.cpus,
                l1_kernel: args.l1_kernel.clone(),
                kvm_amd_params: args.kvm_amd_params.clone(),
                tcg_thread: args.tcg_thread.clone(),
                cpu_model: args.cpu_model.clone(),
            };
            let ran = images(Applets::Core).and_then(|()| {
                if args.tests {
                    lane::run_tests(&args.command, &opts)
                } else {
                    lane::run(&args.command, &[], &opts)
                }
            });
            match ran {
                Ok(0) => Ok(()),
                Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[xtask] error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks that every guest image the tests boot is in the cache, without
/// building any.
fn prebuilt_images() -> Result<(), error::XtaskError> {
    let cache = paths::cache_dir()?;
    for name in paths::IMAGE_FILES {
        let path = cache.join(name);
        if !path.is_file() {
            return Err(error::XtaskError::Missing(path));
        }
    }
    println!(
        "[xtask] test: the prebuilt guest images in {} (none built)",
        cache.display()
    );
    Ok(())
}

/// Installs dependencies and builds both guest images.
fn images(applets: Applets) -> Result<(), error::XtaskError> {
    deps::ensure()?;
    kernel::build()?;
    initramfs::build(applets)?;
    Ok(())
}
