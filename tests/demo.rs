//! `memtide demo` end to end, short: two real guests under one budget, the
//! phased workload, the balancer; the demo must end cleanly and leave a
//! valid JSON trace whose invariants hold and a well-formed SVG timeline.
//! The demand is real: memtide-agent reports from each guest while
//! memtide-hog commits memory in phases there, and at least one decision
//! names a PSI signal.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use std::time::Duration;

use memtide_balancer::invariants::{check_no_hot_remove, check_safety, check_virtio_mem};
use memtide_balancer::trace::Trace;
use memtide_test_support::{boot_lock, guest_images, require_kvm, run_memtide, Boots};

/// Tags of `svg` must nest: every opened element is closed in order.
fn well_formed(svg: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == ':')
            .collect();
        if tag.starts_with('/') {
            match stack.pop() {
                Some(top) if top == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed: {stack:?}"))
    }
}

/// An empty output directory for a demo run named `tag`, and the guest
/// kernel's path.
fn fresh_out_dir_and_kernel(tag: &str) -> (std::path::PathBuf, String) {
    let (kernel, _) = guest_images();
    let out = std::env::temp_dir().join(format!("memtide-{tag}-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let kernel = kernel.to_str().expect("utf-8 path").to_string();
    (out, kernel)
}

#[test]
fn a_short_demo_writes_a_valid_trace_and_timeline() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let (out, kernel) = fresh_out_dir_and_kernel("demo");
    let (out_arg, kernel_arg) = (out.to_str().expect("utf-8 path"), kernel.as_str());
    // Two guests boot side by side, then 5 phases of 6 s.
    let run = run_memtide(
        &[
            "demo",
            "--phase-s",
            "6",
            "--out-dir",
            out_arg,
            "--kernel",
            kernel_arg,
        ],
        Boots(12.0).plus_secs(30),
    );
    let stdout = &run.stdout;
    assert!(
        run.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        run.status,
        run.stderr
    );
    assert!(stdout.contains("[demo] booting web, batch"), "{stdout}");
    assert!(stdout.contains("invariants hold"), "{stdout}");
    // The demo names the decisions a guest signal drove: at least one
    // PSI one (the calm time is 1.5 phases, 9 s here: a guest whose PSI
    // shows no stall that long gives memory back, one that stalls grows).
    let signals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("[demo] signal at "))
        .collect();
    assert!(
        signals
            .iter()
            .any(|l| l.contains("PSI ") || l.contains("balloon stats: ")),
        "no decision named PSI or a stall signal:\n{stdout}"
    );
    eprintln!("signal reasons:\n{}", signals.join("\n"));

    let text = std::fs::read_to_string(out.join("trace.json")).expect("trace.json");
    let trace = Trace::from_json(&text).expect("a valid trace");
    assert_eq!(trace.vms.len(), 2);
    // 5 phases of 6 s at 4 ticks a second, give or take the start.
    assert!(trace.ticks.len() > 60, "{} ticks", trace.ticks.len());
    let last = trace.ticks.last().map_or(0, |t| t.t_ms);
    assert!(
        Duration::from_millis(last) >= Duration::from_secs(25),
        "trace ends at {last} ms"
    );
    check_safety(&trace.vms, trace.budget_mib, &trace.ticks).expect("safety");
    check_no_hot_remove(&trace.ticks).expect("no hot-remove");
    let decisions = trace
        .ticks
        .iter()
        .flat_map(|t| t.reasons.iter())
        .filter(|r| !r.is_empty())
        .count();
    assert!(decisions >= 2, "the busy phases should move memory");

    let svg = std::fs::read_to_string(out.join("timeline.svg")).expect("timeline.svg");
    assert!(svg.starts_with("<svg"), "{svg:.100}");
    well_formed(&svg).expect("well-formed SVG");
    for name in ["web", "batch"] {
        assert!(svg.contains(name), "no panel for {name}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_checker_rejects_broken_markup() {
    assert!(well_formed("<svg><g></g></svg>").is_ok());
    assert!(well_formed("<svg><g></svg>").is_err());
    assert!(well_formed("<svg><line/></svg>").is_ok());
}

#[test]
fn the_virtio_mem_demo_grows_by_plug_and_shrinks_by_unplug() {
    if !require_kvm() {
        return;
    }
    let _guard = boot_lock();
    let (out, kernel) = fresh_out_dir_and_kernel("demo-vmem");
    let (out_arg, kernel_arg) = (out.to_str().expect("utf-8 path"), kernel.as_str());
    // Two guests with a 256 MiB virtio-mem region each and no slots; 5
    // phases of 8 s: web's demand rises (plug), then batch's while web's
    // falls (web gives back by unplug). The demand comes from the scripted
    // report source, in step with the phases whatever the guests' speed;
    // the plugs and unplugs are the guests' own.
    let run = run_memtide(
        &[
            "demo",
            "--virtio-mem",
            "--workload",
            "scripted",
            "--phase-s",
            "8",
            "--out-dir",
            out_arg,
            "--kernel",
            kernel_arg,
        ],
        Boots(12.0).plus_secs(40),
    );
    let stdout = &run.stdout;
    assert!(
        run.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        run.status,
        run.stderr
    );
    assert!(stdout.contains("by virtio-mem plug"), "{stdout}");
    assert!(stdout.contains("invariants hold"), "{stdout}");
    let text = std::fs::read_to_string(out.join("trace.json")).expect("trace.json");
    let trace = Trace::from_json(&text).expect("a valid trace");
    assert!(
        trace.vms.iter().all(|v| v.virtio_mem.is_some()),
        "{:?}",
        trace.vms
    );
    check_safety(&trace.vms, trace.budget_mib, &trace.ticks).expect("safety");
    check_virtio_mem(&trace.vms, &trace.ticks, 10_000).expect("virtio-mem accounting");
    let reasons: Vec<&String> = trace
        .ticks
        .iter()
        .flat_map(|t| t.reasons.iter())
        .filter(|r| !r.is_empty())
        .collect();
    let has = |s: &str| reasons.iter().any(|r| r.contains(s));
    assert!(has("(virtio-mem)") && has("plug "), "no plug: {reasons:#?}");
    assert!(has("unplug "), "no unplug: {reasons:#?}");
    assert!(
        !has("slot(s) hot-added"),
        "no slots in this demo: {reasons:#?}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
