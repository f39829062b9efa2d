//! `memtide bench boot`: time from `memtide run` starting to the guest
//! init's ready line, over several boots.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::figure::Figure;
use super::stats::{median, min_max};
use crate::cli::{BootBenchArgs, RunArgs};
use memtide_vmm::host_info::HostInfo;

/// The marker the guest init prints once user space is up.
pub const READY_MARKER: &str = "memtide-init: ready";
/// The kernel's line when it starts the initramfs' /init: the end of the
/// kernel's part of the boot.
pub const INIT_MARKER: &str = "Run /init as init process";

/// Errors from the boot benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BootBenchError {
    /// The benchmark could not start `memtide run`.
    #[error("cannot start `memtide run`: {0}")]
    Spawn(std::io::Error),
    /// A guest kernel never started /init.
    #[error("run {run}: the guest kernel never printed {INIT_MARKER:?} (exit status {status})")]
    NeverReady {
        /// Run number (1-based).
        run: u32,
        /// How `memtide run` ended.
        status: std::process::ExitStatus,
    },
    /// A guest did not stop cleanly.
    #[error("run {run}: `memtide run` exited with {status}")]
    BadExit {
        /// Run number (1-based).
        run: u32,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// Zero runs requested.
    #[error("--runs must be at least 1")]
    NoRuns,
    /// More `--compare-kernel` than `--compare` options.
    #[error("{kernels} --compare-kernel for {images} --compare: each kernel goes with the image at its position")]
    KernelWithoutImage {
        /// How many `--compare-kernel` were given.
        kernels: usize,
        /// How many `--compare` were given.
        images: usize,
    },
}

/// One timed boot.
#[derive(Debug, Clone, Copy)]
pub struct BootSample {
    /// Seconds from spawning `memtide run` to the kernel starting /init.
    pub to_init_s: f64,
    /// Seconds from spawning `memtide run` to the init's ready line, if
    /// user space came up.
    pub to_ready_s: Option<f64>,
    /// The guest's own uptime at the ready line, if printed.
    pub guest_uptime_s: Option<f64>,
}

/// Rebuilds the `memtide run` argument list from parsed options.
pub fn run_argv(args: &RunArgs) -> Vec<String> {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let valued = [
        ("--kernel", path(&args.kernel)),
        ("--initramfs", path(&args.initramfs)),
        ("--vcpus", Some(args.vcpus.to_string())),
        ("--memory-mib", Some(args.memory_mib.to_string())),
        ("--cmdline", args.cmdline.clone()),
        ("--append", args.append.clone()),
        ("--cmd", args.cmd.clone()),
        (
            "--balloon-stats-ms",
            Some(args.balloon_stats_ms.to_string()),
        ),
        (
            "--balloon-discard",
            (args.balloon_discard == crate::cli::DiscardArg::PerPage).then(|| "per-page".into()),
        ),
        ("--api-sock", path(&args.api_sock)),
        ("--hotplug-slots", Some(args.hotplug_slots.to_string())),
        ("--slot-mib", Some(args.slot_mib.to_string())),
        (
            "--max-memory-mib",
            args.max_memory_mib.map(|m| m.to_string()),
        ),
        (
            "--virtio-mem-mib",
            (args.virtio_mem_mib > 0).then(|| args.virtio_mem_mib.to_string()),
        ),
        (
            "--virtio-mem-block-mib",
            (args.virtio_mem_mib > 0).then(|| args.virtio_mem_block_mib.to_string()),
        ),
        ("--vsock-uds", path(&args.vsock_uds)),
        (
            "--guest-cid",
            args.vsock_uds.as_ref().map(|_| args.guest_cid.to_string()),
        ),
        (
            "--agent-port",
            args.vsock_uds.as_ref().map(|_| args.agent_port.to_string()),
        ),
        (
            "--min-memory-mib",
            args.min_memory_mib.map(|m| m.to_string()),
        ),
        ("--buffer-pct", Some(args.buffer_pct.to_string())),
        ("--weight", Some(args.weight.to_string())),
        (
            "--host-budget-mib",
            args.host_budget_mib.map(|m| m.to_string()),
        ),
        (
            "--balancer-interval-ms",
            Some(args.balancer_interval_ms.to_string()),
        ),
    ];
    let flags = [
        ("--no-initramfs", args.no_initramfs),
        ("--no-compat", args.no_compat),
        ("--balloon", args.balloon),
        ("--balloon-reporting", args.balloon_reporting),
        ("--prefault", args.prefault),
        ("--no-acpi", args.no_acpi),
        ("--no-balancer", args.no_balancer),
        ("--no-syscall-gate", args.no_syscall_gate),
        ("--no-sandbox", args.no_sandbox),
    ];
    let mut v = vec!["run".to_string()];
    for (flag, value) in valued {
        if let Some(value) = value {
            v.push(flag.to_string());
            v.push(value);
        }
    }
    v.extend(
        flags
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| f.to_string()),
    );
    v
}

/// Parses the uptime out of `memtide-init: ready uptime=1.23s`.
pub fn parse_ready_uptime(line: &str) -> Option<f64> {
    let rest = line.split("uptime=").nth(1)?;
    rest.trim().trim_end_matches('s').parse().ok()
}

/// How long to wait for the ready line once the kernel has started /init
/// (an init that never prints one, such as memtide-idle, is then stopped).
const READY_GRACE: Duration = Duration::from_secs(60);

/// Boots one guest and times it.
pub fn time_one_boot(args: &RunArgs, run: u32) -> Result<BootSample, BootBenchError> {
    let exe = std::env::current_exe().map_err(BootBenchError::Spawn)?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(run_argv(args))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(BootBenchError::Spawn)?;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
    }
    let (mut to_init, mut to_ready, mut uptime) = (None, None, None);
    let mut killed = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((at, line)) => {
                let t = at.duration_since(start).as_secs_f64();
                if to_init.is_none() && line.contains(INIT_MARKER) {
                    to_init = Some(t);
                }
                if to_ready.is_none() && line.contains(READY_MARKER) {
                    to_ready = Some(t);
                    uptime = parse_ready_uptime(&line);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let waited_for_ready =
            to_init.is_some_and(|t| start.elapsed().as_secs_f64() - t > READY_GRACE.as_secs_f64());
        if to_ready.is_none() && waited_for_ready && !killed {
            let _ = child.kill();
            killed = true;
        }
    }
    let status = child.wait().map_err(BootBenchError::Spawn)?;
    let to_init_s = to_init.ok_or(BootBenchError::NeverReady { run, status })?;
    // A guest that reached user space must also stop cleanly.
    if to_ready.is_some() && !status.success() {
        return Err(BootBenchError::BadExit { run, status });
    }
    Ok(BootSample {
        to_init_s,
        to_ready_s: to_ready,
        guest_uptime_s: uptime,
    })
}

/// The images a run boots: the run's own initramfs, then each
/// `--compare` one (with its `--compare-kernel`, if any), as (label,
/// `memtide run` options).
fn images(args: &BootBenchArgs) -> Result<Vec<(String, RunArgs)>, BootBenchError> {
    if args.compare_kernel.len() > args.compare.len() {
        return Err(BootBenchError::KernelWithoutImage {
            kernels: args.compare_kernel.len(),
            images: args.compare.len(),
        });
    }
    let own = args.vm.initramfs.as_ref().map_or_else(
        || {
            if args.vm.no_initramfs {
                "no initramfs".to_string()
            } else {
                "the default initramfs".to_string()
            }
        },
        |p| p.display().to_string(),
    );
    let own = match &args.vm.kernel {
        Some(k) if !args.compare_kernel.is_empty() => format!("{own}, kernel {}", k.display()),
        _ => own,
    };
    let mut v = vec![(own, args.vm.clone())];
    for (i, path) in args.compare.iter().enumerate() {
        let mut vm = args.vm.clone();
        vm.initramfs = Some(path.clone());
        let mut label = path.display().to_string();
        if let Some(kernel) = args.compare_kernel.get(i) {
            vm.kernel = Some(kernel.clone());
            label = format!("{label}, kernel {}", kernel.display());
        }
        v.push((label, vm));
    }
    Ok(v)
}

/// The letter that names image `i` in the report (A, B, ...).
fn image_tag(i: usize) -> char {
    u8::try_from(i % 26).map_or('?', |n| char::from(b'A' + n))
}

/// Runs the benchmark, prints its report and returns its figures (those
/// of the first image when comparing).
pub fn run(args: &BootBenchArgs) -> Result<Vec<Figure>, BootBenchError> {
    if args.runs == 0 {
        return Err(BootBenchError::NoRuns);
    }
    let host = HostInfo::detect();
    let images = images(args)?;
    let comparing = images.len() > 1;
    println!(
        "memtide bench boot: {} runs{}, {} vCPU, {} MiB",
        args.runs,
        if comparing { " per image" } else { "" },
        args.vm.vcpus,
        args.vm.memory_mib
    );
    println!("host: {host}");
    if comparing {
        for (i, (label, _)) in images.iter().enumerate() {
            println!("image {}: {label}", image_tag(i));
        }
    }
    let mut samples: Vec<Vec<BootSample>> = vec![Vec::new(); images.len()];
    for run in 1..=args.runs {
        for (i, (_, vm)) in images.iter().enumerate() {
            let s = time_one_boot(vm, run)?;
            let ready = s
                .to_ready_s
                .map_or_else(|| "not reached".to_string(), |r| format!("{r:.3} s"));
            let tag = if comparing {
                format!(" [{}]", image_tag(i))
            } else {
                String::new()
            };
            println!(
                "  run {run}/{}{tag}: kernel starts /init at {:.3} s, init ready line: {ready}",
                args.runs, s.to_init_s
            );
            samples[i].push(s);
        }
    }
    let mut figures = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if comparing {
            println!("image {}:", image_tag(i));
        }
        let f = summarize(s);
        if i == 0 {
            figures = f;
        }
    }
    if comparing {
        print_ratios(&samples);
    }
    Ok(figures)
}

/// The medians of one image's boots: printed, and as figures.
fn summarize(samples: &[BootSample]) -> Vec<Figure> {
    let to_init: Vec<f64> = samples.iter().map(|s| s.to_init_s).collect();
    report("start to kernel running /init", &to_init);
    let mut figures: Vec<Figure> = Figure::of(
        "boot",
        "process start to kernel running /init",
        &to_init,
        "s",
        2,
    )
    .into_iter()
    .collect();
    let ready: Vec<f64> = samples.iter().filter_map(|s| s.to_ready_s).collect();
    if ready.is_empty() {
        println!(
            "start to init ready line: not reached (the init printed no ready line; see its console)"
        );
        figures.push(Figure::text(
            "boot",
            "process start to init ready line",
            "not reached".into(),
            "the init printed no ready line".into(),
        ));
    } else {
        report("start to init ready line", &ready);
        figures.extend(Figure::of(
            "boot",
            "process start to init ready line",
            &ready,
            "s",
            2,
        ));
    }
    let uptimes: Vec<f64> = samples.iter().filter_map(|s| s.guest_uptime_s).collect();
    if let Some(med) = median(&uptimes) {
        println!("guest uptime at ready line: median {med:.3} s");
    }
    figures
}

/// Median of `later` over median of `first`, if both have values.
fn median_ratio(later: &[f64], first: &[f64]) -> Option<f64> {
    let (a, b) = (median(first)?, median(later)?);
    (a > 0.0).then(|| b / a)
}

/// Prints each image's medians as ratios to the first image's.
fn print_ratios(samples: &[Vec<BootSample>]) {
    let init = |s: &[BootSample]| s.iter().map(|x| x.to_init_s).collect::<Vec<_>>();
    let ready = |s: &[BootSample]| s.iter().filter_map(|x| x.to_ready_s).collect::<Vec<_>>();
    let Some(first) = samples.first() else {
        return;
    };
    let fmt = |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}"));
    for (i, s) in samples.iter().enumerate().skip(1) {
        println!(
            "image {} / image A (medians): kernel starts /init {}, init ready line {}",
            image_tag(i),
            fmt(median_ratio(&init(s), &init(first))),
            fmt(median_ratio(&ready(s), &ready(first))),
        );
    }
}

fn report(what: &str, values: &[f64]) {
    if let (Some(med), Some((lo, hi))) = (median(values), min_max(values)) {
        println!(
            "{what}: median {med:.3} s (min {lo:.3}, max {hi:.3}, n={})",
            values.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `memtide bench boot` with `args`, parsed.
    fn parse_bench_boot(args: &[&str]) -> BootBenchArgs {
        let mut argv = vec!["memtide", "bench", "boot"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parse");
        let crate::cli::Command::Bench(crate::cli::BenchCommand::Boot(args)) = cli.command else {
            panic!("not bench boot");
        };
        args
    }

    fn paths(names: &[&str]) -> Vec<std::path::PathBuf> {
        names.iter().map(std::path::PathBuf::from).collect()
    }

    #[test]
    fn compare_images_follow_the_run_s_own_and_ratios_use_medians() {
        let args = parse_bench_boot(&[
            "--initramfs",
            "/old.cpio",
            "--compare",
            "/new.cpio",
            "--compare",
            "/newer.cpio",
        ]);
        let initramfs: Vec<_> = images(&args)
            .expect("images")
            .into_iter()
            .map(|(_, vm)| vm.initramfs.expect("an initramfs"))
            .collect();
        assert_eq!(initramfs, paths(&["/old.cpio", "/new.cpio", "/newer.cpio"]));
        assert_eq!((image_tag(0), image_tag(1), image_tag(2)), ('A', 'B', 'C'));
        assert_eq!(median_ratio(&[1.0, 3.0, 2.0], &[4.0, 4.0, 8.0]), Some(0.5));
        assert_eq!(median_ratio(&[1.0], &[]), None);
    }

    #[test]
    fn a_compare_kernel_goes_with_the_image_at_its_position() {
        let args = parse_bench_boot(&[
            "--kernel",
            "/os.vmlinux",
            "--compare",
            "/b.cpio",
            "--compare-kernel",
            "/o2.vmlinux",
            "--compare",
            "/c.cpio",
        ]);
        let kernels: Vec<_> = images(&args)
            .expect("images")
            .into_iter()
            .map(|(_, vm)| vm.kernel.expect("a kernel"))
            .collect();
        assert_eq!(
            kernels,
            paths(&["/os.vmlinux", "/o2.vmlinux", "/os.vmlinux"])
        );
        let args = parse_bench_boot(&[
            "--compare",
            "/b.cpio",
            "--compare-kernel",
            "/k1",
            "--compare-kernel",
            "/k2",
        ]);
        assert!(matches!(
            images(&args),
            Err(BootBenchError::KernelWithoutImage {
                kernels: 2,
                images: 1
            })
        ));
        assert!(crate::cli::Cli::try_parse_from([
            "memtide",
            "bench",
            "boot",
            "--compare-kernel",
            "/k"
        ])
        .is_err());
    }

    #[test]
    fn parses_the_ready_line() {
        assert_eq!(
            parse_ready_uptime("memtide-init: ready uptime=3.25s"),
            Some(3.25)
        );
        assert_eq!(parse_ready_uptime("memtide-init: ready"), None);
    }

    #[test]
    fn argv_round_trips_through_the_parser() {
        let cli = crate::cli::Cli::try_parse_from([
            "memtide",
            "run",
            "--vcpus",
            "2",
            "--memory-mib",
            "128",
            "--cmd",
            "uname -a",
            "--no-compat",
            "--vsock-uds",
            "/tmp/v.sock",
            "--guest-cid",
            "9",
            "--weight",
            "700",
            "--no-balancer",
            "--virtio-mem-mib",
            "256",
            "--virtio-mem-block-mib",
            "4",
            "--no-sandbox",
        ])
        .expect("parse");
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let mut argv = vec!["memtide".to_string()];
        argv.extend(run_argv(&args));
        let again = crate::cli::Cli::try_parse_from(argv).expect("reparse");
        let crate::cli::Command::Run(back) = again.command else {
            panic!("not run");
        };
        assert_eq!((back.vcpus, back.memory_mib), (2, 128));
        assert_eq!(back.cmd.as_deref(), Some("uname -a"));
        assert!(back.no_compat);
        assert_eq!(
            back.vsock_uds.as_deref(),
            Some(std::path::Path::new("/tmp/v.sock"))
        );
        assert_eq!((back.guest_cid, back.weight), (9, 700));
        assert!(back.no_balancer);
        assert_eq!((back.virtio_mem_mib, back.virtio_mem_block_mib), (256, 4));
        assert!(back.no_sandbox);
    }
}
