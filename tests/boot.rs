//! Boots the real guest kernel and initramfs on /dev/kvm.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use memtide_test_support::{
    boot_lock, guest_images, idle_initramfs, kernel_memory_line_kib, lean_initramfs, require_kvm,
    run_memtide, BOOT_DEADLINE, KERNEL_RUNS_INIT,
};

const READY: &str = "memtide-init: ready uptime=";

fn boot(extra: &[&str]) -> memtide_test_support::Finished {
    let (kernel, initramfs) = guest_images();
    let kernel = kernel.to_str().expect("utf-8 path").to_string();
    let initramfs = initramfs.to_str().expect("utf-8 path").to_string();
    let mut args = vec!["run", "--kernel", &kernel, "--initramfs", &initramfs];
    args.extend_from_slice(extra);
    run_memtide(&args, BOOT_DEADLINE)
}

#[test]
fn boots_to_user_space_runs_a_command_and_exits_zero() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let r = boot(&["--memory-mib", "128", "--cmd", "cat /proc/meminfo"]);
    // The kernel saw the RAM memtide gave it (the e820 map and memory slots).
    let (_, total_kib) = kernel_memory_line_kib(&r.stdout)
        .unwrap_or_else(|| panic!("no 'Memory:' line in console:\n{}", r.stdout));
    assert!(
        (120 * 1024..=128 * 1024).contains(&total_kib),
        "kernel sees {total_kib} KiB of 128 MiB"
    );
    assert!(
        r.stdout.contains(KERNEL_RUNS_INIT),
        "kernel never started /init:\n{}",
        r.stdout
    );
    assert!(
        r.status.success(),
        "exit {}: stderr:\n{}\nconsole:\n{}",
        r.status,
        r.stderr,
        r.stdout
    );
    assert!(r.stdout.contains(READY), "no ready line:\n{}", r.stdout);
    let total_kib: u64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in console:\n{}", r.stdout));
    // The guest sees most of its 128 MiB (the kernel keeps some for itself).
    assert!(
        (90 * 1024..=128 * 1024).contains(&total_kib),
        "MemTotal {total_kib} kB is not about 128 MiB"
    );
    assert!(r
        .stdout
        .contains("memtide-init: command exited with status 0"));
    eprintln!("boot + command took {:?}", r.elapsed);
}

#[test]
fn two_vcpus_are_both_online_in_the_guest() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let r = boot(&[
        "--vcpus",
        "2",
        "--memory-mib",
        "128",
        "--cmd",
        "echo cpus=$(grep -c ^processor /proc/cpuinfo)",
    ]);
    assert!(
        r.stdout.contains("smp: Brought up 1 node, 2 CPUs"),
        "the second vCPU did not come up:\n{}",
        r.stdout
    );
    assert!(
        r.status.success(),
        "exit {}: {}\n{}",
        r.status,
        r.stderr,
        r.stdout
    );
    assert!(r.stdout.contains("cpus=2"), "console:\n{}", r.stdout);
}

#[test]
fn a_guest_kernel_panic_ends_memtide_with_an_error() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    // No init in the initramfs at that path and no root device: the kernel
    // panics with "No working init found". The idle initramfs (5 KiB)
    // spares the guest kernel unpacking the full one for nothing.
    let (kernel, _) = guest_images();
    let (kernel, idle) = (
        kernel.to_str().expect("utf-8 path").to_string(),
        idle_initramfs().to_str().expect("utf-8 path").to_string(),
    );
    let r = run_memtide(
        &[
            "run",
            "--kernel",
            &kernel,
            "--initramfs",
            &idle,
            "--memory-mib",
            "64",
            "--append",
            "rdinit=/nonexistent init=/nonexistent",
        ],
        BOOT_DEADLINE,
    );
    assert_eq!(
        r.status.code(),
        Some(1),
        "stderr:\n{}\nconsole:\n{}",
        r.stderr,
        r.stdout
    );
    assert!(r.stderr.contains("panicked"), "stderr:\n{}", r.stderr);
}

#[test]
fn a_failed_guest_command_ends_memtide_with_exit_code_3_naming_it() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    // The shell kills itself with SIGSEGV: the init sees status 139 from a
    // signal, and memtide names the signal.
    let r = boot(&["--memory-mib", "128", "--cmd", "kill -SEGV $$"]);
    assert_eq!(
        r.status.code(),
        Some(3),
        "stderr:\n{}\nconsole:\n{}",
        r.stderr,
        r.stdout
    );
    assert!(
        r.stdout
            .contains("memtide-init: command exited with status 139 (signal 11, SIGSEGV)"),
        "console:\n{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("memtide: the guest command exited with status 139 (signal 11, SIGSEGV)"),
        "stderr:\n{}",
        r.stderr
    );

    // A plain non-zero exit: status 7, and no signal.
    let r = boot(&["--memory-mib", "128", "--cmd", "exit 7"]);
    assert_eq!(
        r.status.code(),
        Some(3),
        "stderr:\n{}\nconsole:\n{}",
        r.stderr,
        r.stdout
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("guest command exited"))
        .unwrap_or_else(|| panic!("no command line in stderr:\n{}", r.stderr));
    assert_eq!(line, "memtide: the guest command exited with status 7");
}

#[test]
fn the_lean_image_runs_plain_commands_and_names_what_needs_a_shell() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let (kernel, _) = guest_images();
    let kernel = kernel.to_str().expect("utf-8 path").to_string();
    let lean = lean_initramfs();
    let lean = lean.to_str().expect("utf-8 path").to_string();
    let run = |cmd: &str| {
        run_memtide(
            &[
                "run",
                "--kernel",
                &kernel,
                "--initramfs",
                &lean,
                "--memory-mib",
                "128",
                "--cmd",
                cmd,
            ],
            BOOT_DEADLINE,
        )
    };
    // No busybox: the init runs a plain command itself.
    let r = run("memtide-hog 8:1");
    assert!(
        r.status.success(),
        "stderr:\n{}\nconsole:\n{}",
        r.stderr,
        r.stdout
    );
    assert!(
        r.stdout
            .contains("memtide-hog: phase 1: holding 8 MiB for 1 s"),
        "console:\n{}",
        r.stdout
    );
    assert!(r
        .stdout
        .contains("memtide-init: command exited with status 0"));
    // Shell syntax cannot run there: memtide fails and says why.
    let r = run("memtide-hog 8:1; true");
    assert!(!r.status.success(), "console:\n{}", r.stdout);
    assert!(
        r.stderr
            .contains("the guest init could not start the command")
            && r.stderr.contains("needs a shell"),
        "stderr:\n{}\nconsole:\n{}",
        r.stderr,
        r.stdout
    );
}

#[test]
fn a_bzimage_boots_and_on_the_nested_host_is_refused_naming_the_vmlinux() {
    if !require_kvm() {
        return;
    }
    let bz = memtide_test_support::cache_dir().join("bzImage");
    assert!(
        bz.exists(),
        "{} is missing: run `cargo xtask images` first",
        bz.display()
    );
    let bz = bz.to_str().expect("utf-8 path").to_string();
    let lean = lean_initramfs();
    let lean = lean.to_str().expect("utf-8 path").to_string();
    let args = ["run", "--kernel", &bz, "--initramfs", &lean];
    if memtide_test_support::on_nested_pvm_host() {
        // Its decompressor spins inside that host's KVM without a line
        // (400 s tried): memtide refuses it before booting anything.
        let r = run_memtide(&args, std::time::Duration::from_secs(30));
        assert!(!r.status.success(), "a bzImage booted on kvm_pvm: {r:?}");
        assert!(
            r.stderr.contains("is a bzImage") && r.stderr.contains("vmlinux"),
            "no clear refusal:\n{}",
            r.stderr
        );
        return;
    }
    let _guard = boot_lock();
    let r = run_memtide(&args, BOOT_DEADLINE);
    assert!(
        r.status.success() && r.stdout.contains(READY),
        "the bzImage did not boot to the init ({}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
}
