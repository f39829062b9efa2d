//! Bad input gets a clear message and a non-zero exit, never a panic.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use std::time::Duration;

use memtide_test_support::{guest_images, require_kvm, run_memtide};

const QUICK: Duration = Duration::from_secs(30);

fn assert_clean_failure(r: &memtide_test_support::Finished, needle: &str) {
    assert!(!r.status.success(), "should fail: {r:?}");
    assert!(
        !r.stderr.contains("panicked at"),
        "memtide itself panicked:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(needle),
        "expected {needle:?} in:\n{}",
        r.stderr
    );
}

#[test]
fn unknown_flag_is_rejected() {
    let r = run_memtide(&["run", "--no-such-flag"], QUICK);
    assert_clean_failure(&r, "--no-such-flag");
}

#[test]
fn missing_kernel_is_named() {
    let r = run_memtide(
        &["run", "--kernel", "/nonexistent/vmlinux", "--no-initramfs"],
        QUICK,
    );
    assert_clean_failure(&r, "/nonexistent/vmlinux");
}

#[test]
fn corrupt_kernel_is_refused() {
    if !require_kvm() {
        return;
    }
    let path = std::env::temp_dir().join(format!("memtide-corrupt-{}", std::process::id()));
    std::fs::write(&path, vec![0x5a; 64 * 1024]).expect("write junk kernel");
    let p = path.to_str().expect("utf-8").to_string();
    let r = run_memtide(&["run", "--kernel", &p, "--no-initramfs"], QUICK);
    let _ = std::fs::remove_file(&path);
    assert_clean_failure(&r, "neither a loadable ELF vmlinux");
}

#[test]
fn memory_too_small_for_the_kernel_is_explained() {
    if !require_kvm() {
        return;
    }
    let (kernel, _) = guest_images();
    let k = kernel.to_str().expect("utf-8").to_string();
    let r = run_memtide(
        &[
            "run",
            "--kernel",
            &k,
            "--no-initramfs",
            "--memory-mib",
            "16",
        ],
        QUICK,
    );
    assert_clean_failure(&r, "large enough");
    let r = run_memtide(&["run", "--kernel", &k, "--memory-mib", "4"], QUICK);
    assert_clean_failure(&r, "--memory-mib 4");
}

#[test]
fn zero_vcpus_is_rejected() {
    let r = run_memtide(&["run", "--vcpus", "0"], QUICK);
    assert_clean_failure(&r, "--vcpus 0");
}

#[test]
fn a_regular_file_at_api_sock_is_refused_and_left_alone() {
    let path = std::env::temp_dir().join(format!("memtide-api-file-{}", std::process::id()));
    std::fs::write(&path, b"not a socket").expect("write the file");
    let p = path.to_str().expect("utf-8").to_string();
    // The check comes before KVM and the kernel: no guest is booted.
    let r = run_memtide(
        &[
            "run",
            "--kernel",
            "/nonexistent/vmlinux",
            "--no-initramfs",
            "--api-sock",
            &p,
        ],
        QUICK,
    );
    let contents = std::fs::read(&path).expect("the file is still there");
    let _ = std::fs::remove_file(&path);
    assert_clean_failure(&r, &p);
    assert!(r.stderr.contains("not a socket"), "{}", r.stderr);
    assert_eq!(contents, b"not a socket");
}
