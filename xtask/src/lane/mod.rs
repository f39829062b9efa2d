//! `cargo xtask lane svm -- COMMAND`: runs COMMAND on standard KVM, the
//! kind memtide's users have, from any x86_64 host: a Debian kernel with
//! `kvm_amd` boots as "L1" under QEMU's TCG, which emulates AMD SVM with
//! nested paging (Intel hosts included), and COMMAND runs inside it with
//! memtide's build outputs and guest images at their host paths.
//!
//! Results (the L1 console, L1's `dmesg`, the console of every guest a
//! test booted) are kept in `target/lane/svm/`. See `docs/lanes.md`.

mod l1_kernel;
mod modules;
mod payload;
mod qemu;
pub mod suite;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::deps::BUSYBOX;
use crate::error::{io_at, XtaskError};
use crate::paths::{
    cache_dir, workspace_root, BZIMAGE_FILE, INITRAMFS_FILE, INITRAMFS_IDLE_FILE,
    INITRAMFS_LEAN_FILE, VMLINUX_FILE,
};

use payload::L1Root;
use qemu::L1End;

/// Debian packages the lane needs beyond the image build's.
pub const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static"];

/// The L1 init script.
const INIT_SCRIPT: &str = include_str!("init.sh");

/// Options of one lane run.
pub struct LaneOpts {
    /// L1 RAM in MiB.
    pub memory_mib: u32,
    /// Wall-clock limit for the whole L1 run.
    pub timeout: Duration,
    /// Extra host files carried in at their own paths.
    pub carry: Vec<PathBuf>,
    /// QEMU's `-accel tcg,thread=` value.
    pub tcg_thread: String,
    /// L1 vCPUs; `None`: as many as the host has.
    pub cpus: Option<usize>,
    /// The Debian meta-package that names the L1 kernel package.
    pub l1_kernel: String,
    /// Parameters for `insmod kvm-amd.ko` (space-separated `name=value`).
    pub kvm_amd_params: String,
    /// QEMU's `-cpu` model for L1.
    pub cpu_model: String,
}

/// L1's CPU model: everything TCG emulates but XSAVE, whose `XSETBV` QEMU
/// 7.2 runs inside an L2 guest without the SVM intercept, so L1's KVM never
/// learns the guest's `XCR0` (docs/lanes.md).
pub const DEFAULT_CPU_MODEL: &str = "max,-xsave";

/// `kvm_amd` parameters: shadow paging in L1, because QEMU's TCG
/// emulation of nested paging corrupts L1 and L2 memory when guests come
/// and go (docs/lanes.md).
pub const DEFAULT_KVM_AMD_PARAMS: &str = "npt=0";

impl Default for LaneOpts {
    fn default() -> Self {
        Self {
            memory_mib: 4096,
            timeout: Duration::from_secs(45 * 60),
            carry: Vec::new(),
            tcg_thread: "multi".into(),
            cpus: None,
            l1_kernel: l1_kernel::META_PACKAGE.into(),
            kvm_amd_params: DEFAULT_KVM_AMD_PARAMS.into(),
            cpu_model: DEFAULT_CPU_MODEL.into(),
        }
    }
}

/// The lane's name in every message: failures must say which lane failed.
pub const LANE: &str = "svm";

/// Where one lane's results go.
pub fn results_dir() -> PathBuf {
    workspace_root().join("target").join("lane").join(LANE)
}

/// Quotes `arg` for a POSIX shell.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `argv` inside L1 with `executables` (and their shared libraries)
/// at their host paths; returns the command's exit status.
pub fn run(argv: &[String], executables: &[PathBuf], opts: &LaneOpts) -> Result<i32, XtaskError> {
    if argv.is_empty() {
        return Err(XtaskError::Lane(
            "no command given (cargo xtask lane svm -- COMMAND)".into(),
        ));
    }
    crate::deps::ensure_packages(PACKAGES)?;
    let memtide = crate::run::build_memtide()?;
    let cache = cache_dir()?;
    let kernel = l1_kernel::ensure(&cache.join("lane-svm"), &opts.l1_kernel)?;
    let dir = results_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;

    let script = argv
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let root = l1_root(&script, &memtide, executables, &cache, &kernel, opts)?;
    let payload_mib = root.bytes() / (1 << 20);
    let initramfs = dir.join("l1.cpio");
    std::fs::write(&initramfs, root.finish()?).map_err(io_at(&initramfs))?;
    let results_disk = dir.join("results.img");
    let disk = std::fs::File::create(&results_disk).map_err(io_at(&results_disk))?;
    disk.set_len(1 << 30).map_err(io_at(&results_disk))?;
    drop(disk);

    println!(
        "[xtask] lane {LANE}: booting L1 ({}, {payload_mib} MiB of files) under QEMU TCG; \
         running: {script}",
        kernel.package
    );
    let heartbeat = dir.join("l1-heartbeat.log");
    let kernel_log = dir.join("l1-kernel.log");
    let machine = qemu::L1Machine {
        kernel: &kernel.vmlinuz,
        initramfs: &initramfs,
        results_disk: &results_disk,
        memory_mib: opts.memory_mib,
        tcg_thread: &opts.tcg_thread,
        cpu_model: &opts.cpu_model,
        heartbeat: &heartbeat,
        kernel_log: &kernel_log,
        cpus: opts
            .cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let console = dir.join("l1-console.log");
    let end = qemu::run(&machine, &console, opts.timeout)?;
    let _ = std::fs::remove_file(&initramfs);
    unpack_results(&results_disk, &dir);
    let _ = std::fs::remove_file(&results_disk);
    match end {
        L1End::Command(0) => {
            println!(
                "[xtask] lane {LANE}: command passed; consoles in {}",
                dir.display()
            );
            Ok(0)
        }
        L1End::Command(code) => {
            println!(
                "[xtask] lane {LANE}: FAILED: the command exited with status {code}; \
                 L1 console and guest consoles kept in {}",
                dir.display()
            );
            Ok(code)
        }
        L1End::L1Crashed(line) => Err(XtaskError::LaneFault(format!(
            "lane {LANE}: the L1 kernel crashed ({line}): a fault of L1's kvm_amd or of \
             QEMU's SVM emulation (memtide is an unprivileged process there); L1 console \
             and kernel log kept in {}",
            dir.display()
        ))),
        L1End::L1Hung => Err(XtaskError::LaneFault(format!(
            "lane {LANE}: the L1 VM hung (no heartbeat for {} s): L1's kernel or QEMU's \
             TCG stopped; L1 console and kernel log kept in {}",
            qemu::HEARTBEAT_LIMIT.as_secs(),
            dir.display()
        ))),
        other => Err(XtaskError::Lane(format!(
            "lane {LANE}: {}; L1 console and kernel log kept in {}",
            match other {
                L1End::Setup => "the L1 VM could not set up standard KVM".to_string(),
                L1End::TimedOut => "the L1 VM did not finish within the time limit".to_string(),
                _ => "the L1 VM ended without reporting the command's status".to_string(),
            },
            dir.display()
        ))),
    }
}

/// The L1 initramfs: busybox, the init, the command, the modules to load,
/// memtide, `executables`, the carried files and the guest images, each at
/// its host path.
fn l1_root(
    script: &str,
    memtide: &Path,
    executables: &[PathBuf],
    cache: &Path,
    kernel: &l1_kernel::L1Kernel,
    opts: &LaneOpts,
) -> Result<L1Root, XtaskError> {
    let mut root = L1Root::new();
    root.file_as("bin/busybox", Path::new(BUSYBOX))?;
    root.data("init", 0o755, INIT_SCRIPT.as_bytes())?;
    root.data("lane/cmd.sh", 0o644, format!("{script}\n").as_bytes())?;
    root.data("lane/env", 0o644, env_file(memtide, cache).as_bytes())?;
    let mut module_list = String::new();
    for (i, ko) in modules::load_order(&kernel.modules_dir)?.iter().enumerate() {
        let name = format!("lane/modules.d/{i:02}.ko");
        root.data(&name, 0o644, &modules::read(ko)?)?;
        let stem = ko.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let params = if modules::canonical(stem) == "kvm_amd" {
            opts.kvm_amd_params.as_str()
        } else {
            ""
        };
        module_list.push_str(&format!("/{name} {params}\n"));
    }
    root.data("lane/modules", 0o644, module_list.as_bytes())?;
    root.binary(memtide)?;
    for exe in executables {
        root.binary(exe)?;
    }
    for file in &opts.carry {
        let file = std::fs::canonicalize(file).map_err(io_at(file))?;
        root.same_path(&file)?;
    }
    for image in [
        VMLINUX_FILE,
        BZIMAGE_FILE,
        INITRAMFS_FILE,
        INITRAMFS_LEAN_FILE,
        INITRAMFS_IDLE_FILE,
    ] {
        let path = cache.join(image);
        if path.exists() {
            root.same_path(&path)?;
        }
    }
    Ok(root)
}

/// The environment the command runs in: the host's paths, memtide on PATH,
/// guest consoles collected for the results.
fn env_file(memtide: &Path, cache: &Path) -> String {
    let bin_dir = memtide.parent().unwrap_or(Path::new("/"));
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cwd = std::env::current_dir().unwrap_or_else(|_| workspace_root());
    [
        (
            "PATH",
            format!("{}:/bin:/sbin:/usr/bin:/usr/sbin", bin_dir.display()),
        ),
        ("HOME", home),
        ("MEMTIDE_CACHE", cache.display().to_string()),
        ("MEMTIDE_TEST_CONSOLE_DIR", "/out/consoles".into()),
        ("MEMTIDE_LANE", LANE.into()),
        ("RUST_BACKTRACE", "1".into()),
        ("LANE_CWD", cwd.display().to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
    .collect()
}

/// Unpacks the tar stream the init wrote to the results disk (nothing if
/// L1 never got that far).
fn unpack_results(disk: &Path, dir: &Path) {
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(disk)
        .arg("-C")
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("[xtask] lane {LANE}: L1 wrote no results (only its console is kept)");
    }
}

/// `cargo test --no-run` for the integration tests; returns their
/// executables.
pub fn integration_test_executables() -> Result<Vec<PathBuf>, XtaskError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "test",
        "--release",
        "-p",
        "memtide-tests",
        "--tests",
        "--no-run",
        "--message-format=json",
    ]);
    let out = cmd.output().map_err(|source| XtaskError::Spawn {
        cmd: format!("{cmd:?}"),
        source,
    })?;
    if !out.status.success() {
        return Err(XtaskError::Failed {
            cmd: format!("{cmd:?}"),
            status: out.status,
            hint: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(test_executables(&String::from_utf8_lossy(&out.stdout)))
}

/// The test executables in cargo's JSON messages.
pub fn test_executables(json_lines: &str) -> Vec<PathBuf> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["profile"]["test"] == true)
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .collect()
}

/// Runs `argv` inside L1 with the integration test executables on board;
/// an empty `argv` runs them all ([`suite::test_script`]).
pub fn run_tests(argv: &[String], opts: &LaneOpts) -> Result<i32, XtaskError> {
    let exes = integration_test_executables()?;
    if argv.is_empty() {
        let script = [
            "sh".to_string(),
            "-c".to_string(),
            suite::test_script(&exes),
        ];
        run(&script, &exes, opts)
    } else {
        run(argv, &exes, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_plain_words_and_escapes_the_rest() {
        assert_eq!(shell_quote("memtide"), "memtide");
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn test_executables_come_from_test_artifacts_only() {
        let json = concat!(
            r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/boot-1"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","profile":{"test":false},"executable":"/t/memtide"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":null}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        assert_eq!(test_executables(json), vec![PathBuf::from("/t/boot-1")]);
    }
}
