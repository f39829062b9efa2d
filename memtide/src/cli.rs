//! The `memtide` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// memtide: a dynamic-memory hypervisor for Linux guests on KVM.
#[derive(Debug, Parser)]
#[command(
    name = "memtide",
    version,
    about = "A dynamic-memory hypervisor for Linux guests on KVM",
    long_about = "memtide boots unmodified Linux guests on /dev/kvm and (in later \
releases) grows and shrinks their memory with ACPI hot-add and virtio-balloon.\n\n\
With no options, `memtide run` boots the kernel and initramfs that \
`cargo xtask images` cached in $MEMTIDE_CACHE (default ~/.cache/memtide) \
with 1 vCPU and 256 MiB.\n\nEnvironment: MEMTIDE_CACHE (image cache), \
MEMTIDE_LOG (error, warn, info, debug, trace; default warn)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest; its serial console is this terminal. The process ends
    /// with the guest: exit 0 when the guest powers off or reboots, 1 when it
    /// panics or a vCPU fails, 2 when the VM cannot start, 3 when the
    /// guest's --cmd command exits non-zero or a guest process dies of a
    /// signal, 159 when the sandbox refused a system call (a memtide bug).
    Run(RunArgs),
    /// Measure memtide and print figures with a description of the host.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Control a running memtide through its API socket.
    Ctl(CtlArgs),
    /// One balancer over several running memtide VMs (started with
    /// --vsock-uds, --balloon, hot-add slots and --no-balancer), through
    /// their control sockets: reports from GET /memory/guest, resizes with
    /// PUT /balloon and PUT /memory.
    Balance(BalanceArgs),
    /// Draw a balancer trace (from `memtide balance --trace` or the demo)
    /// as an SVG timeline: one panel per VM with assigned, demand,
    /// committed, plugged and balloon, and the decisions marked.
    Plot(PlotArgs),
    /// Compare memtide's policy with baselines (oVirt MoM's balloon rules,
    /// a Hyper-V-like policy, static VMs) on the same simulated demand
    /// traces; prints a markdown table per trace. Deterministic; boots
    /// nothing.
    Sim(SimArgs),
    /// A live view of the balancer of a running memtide (or `memtide
    /// balance`): budget, and per VM assigned, demand, pressure and the last
    /// decision.
    Top(TopArgs),
    /// Dynamic memory, shown: two or three guests under one host budget
    /// run a phased memory workload while the balancer moves memory
    /// between them (live table); writes a JSON trace and an SVG timeline.
    /// `--one-guest` narrates balloon and hot-add on a single guest.
    Demo(DemoArgs),
}

/// Options of `memtide demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Guests under the shared budget (2 or 3).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub guests: u8,
    /// Seconds per phase of the scripted workload (5 phases).
    #[arg(long, default_value_t = 20, value_name = "S")]
    pub phase_s: u64,
    /// Host memory for all guests, MiB (default: the guests' boot memory
    /// plus one slot, so the budget is short in the busy phases).
    #[arg(long, value_name = "MIB")]
    pub budget_mib: Option<u64>,
    /// Where to write the trace (trace.json) and the plot (timeline.svg).
    #[arg(long, default_value = "memtide-demo", value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Where the guests' demand comes from: memtide-agent with a
    /// memtide-hog workload in each guest (default), or a scripted report
    /// source on the host that writes the agent's wire format (exact,
    /// repeatable demand).
    #[arg(long, value_enum, default_value_t = WorkloadSource::Agent)]
    pub workload: WorkloadSource,
    /// Instead: one guest, narrated step by step (inflate, hot-add,
    /// deflate) with what the guest and the host see.
    #[arg(long)]
    pub one_guest: bool,
    /// With --one-guest: how far to inflate the balloon, MiB.
    #[arg(long, default_value_t = 64)]
    pub balloon_mib: u64,
    /// Give each guest a virtio-mem region (of --virtio-mem-mib MiB, by
    /// default as much as its two hot-add slots) instead of hot-add slots:
    /// the balancer grows the guests by plugging blocks and shrinks them by
    /// unplugging, ballooning only what unplug cannot take.
    #[arg(long)]
    pub virtio_mem: bool,
    /// How each guest is booted (--balloon, --api-sock, hot-add slots and,
    /// for the balancer demo, --vsock-uds and --no-balancer are set by the
    /// demo).
    #[command(flatten)]
    pub vm: RunArgs,
}

/// Where the demo's memory demand comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadSource {
    /// memtide-agent in each guest, memtide-hog committing memory.
    Agent,
    /// A report source on the host writing the agent's wire format.
    Scripted,
}

/// Options of `memtide balance`.
#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Host memory for all VMs together, in MiB.
    #[arg(long, value_name = "MIB")]
    pub budget_mib: u64,
    /// A VM: its API socket, optionally with settings:
    /// SOCKET[,name=N][,weight=1-10000][,min=MIB][,buffer=PCT]. Repeat for
    /// each VM.
    #[arg(long = "vm", value_name = "SOCKET[,KEY=VALUE...]", required = true)]
    pub vms: Vec<crate::vm_arg::VmArg>,
    /// How often the balancer decides, in ms.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub interval_ms: u64,
    /// Idle reclaim (off by default): once a guest's demand has stayed low
    /// (committed memory stable, PSI some avg10 below 1 %) this many
    /// seconds, the balancer gives back the VM's memory above committed +
    /// buffer even when the budget is not short, below its startup memory
    /// too, never below its minimum (docs/balancer.md)
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_reclaim_after_s: Option<u64>,
    /// A guest whose agent reports no memory stall (PSI) for this many
    /// seconds, with its committed memory not rising, is calm: the
    /// balancer may give back its memory down to committed + 10 % instead
    /// of committed + buffer (docs/balancer.md). A large value keeps the
    /// buffer.
    #[arg(long, default_value_t = 30, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub calm_after_s: u64,
    /// The host's reserve, percent of the budget: when the VMs would leave
    /// less than this free, calm guests (see --calm-after-s) give back
    /// memory below their startup memory, down to committed + 10 %, until
    /// the reserve is restored (docs/balancer.md). 0 turns it off.
    #[arg(long, default_value_t = 20, value_name = "PCT", value_parser = clap::value_parser!(u64).range(0..=50))]
    pub host_reserve_pct: u64,
    /// Stop after this many seconds (default: when every VM's socket is
    /// gone).
    #[arg(long, value_name = "S")]
    pub duration_s: Option<u64>,
    /// Write the JSON trace (settings, budget, every tick) here; rewritten
    /// every 5 s and at the end.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Serve GET /balancer on this Unix socket (for `memtide top`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Draw the trace as an SVG timeline here when the run ends.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// Do not balance: answer once whether a new VM with this startup,
    /// minimum and maximum memory (MiB) can start under the budget while
    /// every listed VM keeps its minimum, and with how much memory; exit 0
    /// when it can, 1 when not. (A running balancer answers the same on
    /// POST /balancer/admit.)
    #[arg(long, value_name = "STARTUP,MIN,MAX", value_parser = parse_admit)]
    pub admit: Option<[u64; 3]>,
}

/// Parses `STARTUP,MIN,MAX` (MiB).
fn parse_admit(s: &str) -> Result<[u64; 3], String> {
    let v: Vec<u64> = s
        .split(',')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("expected STARTUP,MIN,MAX in MiB: {e}"))?;
    <[u64; 3]>::try_from(v).map_err(|v| format!("expected 3 numbers, got {}", v.len()))
}

/// Options of `memtide plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The JSON trace to draw.
    #[arg(long, value_name = "PATH")]
    pub trace: PathBuf,
    /// Where to write the SVG.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// Options of `memtide sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// The policy: memtide, memtide-idle (idle reclaim after 30 s), mom,
    /// hyperv-like, static or all.
    #[arg(long, default_value = "all", value_name = "NAME")]
    pub policy: String,
    /// The trace: step, ramp, burst, diurnal, out-of-phase, recorded-demo
    /// or all.
    #[arg(long, default_value = "all", value_name = "NAME")]
    pub trace: String,
    /// Replay a recorded run instead (a `memtide balance --trace` or demo
    /// trace.json): each VM's committed memory as its agent reported it.
    #[arg(long, value_name = "PATH", conflicts_with = "trace")]
    pub recorded: Option<PathBuf>,
}

/// Options of `memtide top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The API socket of the running memtide (its --api-sock).
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Redraw interval, ms.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
    /// Print one screen and exit.
    #[arg(long)]
    pub once: bool,
}

/// Options of `memtide ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The API socket of the running memtide (its --api-sock).
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `memtide ctl` commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The virtio-balloon.
    #[command(subcommand)]
    Balloon(BalloonCommand),
    /// Memory hot-add, and what the guest agent reports.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// The virtio-vsock device.
    #[command(subcommand)]
    Vsock(VsockCommand),
    /// The balancer: budget, and per VM assigned, demand, pressure and the
    /// last decision.
    #[command(subcommand)]
    Balancer(BalancerCommand),
    /// Print every metric in the OpenMetrics text format Prometheus
    /// scrapes (GET /metrics; docs/metrics.md lists them).
    Metrics,
}

/// `memtide ctl balancer` commands.
#[derive(Debug, Subcommand)]
pub enum BalancerCommand {
    /// Show the balancer's status.
    Get,
    /// Ask whether a VM with these bounds can start now while every
    /// running VM keeps its minimum, and with how much memory.
    Admit {
        /// Memory it boots with, MiB.
        #[arg(long, value_name = "MIB")]
        startup_mib: u64,
        /// Least memory it may run with, MiB (default: half the startup).
        #[arg(long, value_name = "MIB")]
        minimum_mib: Option<u64>,
        /// Most memory it may reach, MiB (default: the startup).
        #[arg(long, value_name = "MIB")]
        maximum_mib: Option<u64>,
    },
}

/// `memtide ctl vsock` commands.
#[derive(Debug, Subcommand)]
pub enum VsockCommand {
    /// Show the driver state, the guest CID, open connections and counters.
    Get,
}

/// `memtide ctl memory` commands.
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Hot-add memory (a multiple of the slot size), in MiB.
    Add {
        /// MiB to add.
        size_mib: u64,
    },
    /// Show boot, plugged and maximum memory and every slot.
    Get,
    /// Show the guest memory agent's latest report (MemTotal,
    /// MemAvailable, Committed_AS, PSI) and its age.
    Guest,
    /// The virtio-mem device (`--virtio-mem-mib`).
    #[command(subcommand, name = "virtio-mem")]
    VirtioMem(VirtioMemCommand),
}

/// `memtide ctl memory virtio-mem` commands.
#[derive(Debug, Subcommand)]
pub enum VirtioMemCommand {
    /// Show requested and plugged MiB, block size, region and counters.
    Get,
    /// Ask the guest to plug this much (a multiple of the block size), in
    /// MiB; 0 unplugs everything.
    Set {
        /// Requested size in MiB.
        requested_mib: u64,
    },
}

/// `memtide ctl balloon` commands.
#[derive(Debug, Subcommand)]
pub enum BalloonCommand {
    /// Set the balloon target (memory taken from the guest), in MiB.
    Set {
        /// Target size in MiB.
        target_mib: u64,
    },
    /// Show target, actual and inflated MiB.
    Get,
    /// Show the guest's balloon statistics and host counters.
    Stats,
}

/// How the balloon returns inflated pages to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscardArg {
    /// One madvise per merged range of pages (default).
    Ranges,
    /// One madvise per 4 KiB page (for comparison).
    PerPage,
}

/// Options of `memtide run` (and of every benchmark that boots a guest).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Guest kernel: an uncompressed ELF vmlinux (fastest) or a bzImage
    /// (refused on the nested kvm_pvm host, where its decompressor hangs).
    /// Default: $MEMTIDE_CACHE/vmlinux.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Initramfs (cpio, uncompressed or compressed as the kernel supports).
    /// Default: $MEMTIDE_CACHE/initramfs-lean.cpio (no shell: boots
    /// faster) when there is no --cmd or it is a plain `memtide-hog ...`
    /// command, else $MEMTIDE_CACHE/initramfs.cpio (with busybox).
    #[arg(long, value_name = "PATH", conflicts_with = "no_initramfs")]
    pub initramfs: Option<PathBuf>,

    /// Boot without an initramfs.
    #[arg(long)]
    pub no_initramfs: bool,

    /// Number of vCPUs (1-32).
    #[arg(long, short = 'c', default_value_t = 1, value_name = "N")]
    pub vcpus: u8,

    /// Guest RAM in MiB.
    #[arg(long, short = 'm', default_value_t = 256, value_name = "MIB")]
    pub memory_mib: u64,

    /// Replace memtide's base kernel command line.
    #[arg(long, value_name = "ARGS")]
    pub cmdline: Option<String>,

    /// Extra kernel command-line arguments, appended after memtide's.
    #[arg(long, value_name = "ARGS")]
    pub append: Option<String>,

    /// A shell command for the memtide guest init to run after boot
    /// (through /bin/sh -c); the guest powers off when it ends.
    #[arg(long, value_name = "COMMAND")]
    pub cmd: Option<String>,

    /// Do not add the guest options a nested (kvm_pvm) host needs, even
    /// when such a host is detected.
    #[arg(long)]
    pub no_compat: bool,

    /// Add a virtio-balloon device (control it with the API).
    #[arg(long)]
    pub balloon: bool,

    /// How often to ask the guest for balloon statistics, in ms (0: never).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub balloon_stats_ms: u64,

    /// Let the guest report free memory, which memtide then returns to
    /// the host (virtio free page reporting).
    #[arg(long)]
    pub balloon_reporting: bool,

    /// How inflated pages go back to the host.
    #[arg(long, value_enum, default_value_t = DiscardArg::Ranges)]
    pub balloon_discard: DiscardArg,

    /// Serve the control API (HTTP/JSON) on this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,

    /// Make all guest RAM resident on the host before booting.
    #[arg(long)]
    pub prefault: bool,

    /// On a nested kvm_pvm host, do not complete the guest's system calls
    /// in memtide (guest user space then cannot run; for measuring the
    /// cost of doing it, see docs/nested-host.md).
    #[arg(long)]
    pub no_syscall_gate: bool,

    /// Keep memtide's capabilities and run without its seccomp filter. By
    /// default `run` drops every capability before it builds the VM and,
    /// before the guest starts, allows only the system calls a running VM
    /// makes; any other call ends memtide with status 159 and a line naming
    /// the call (docs/sandbox.md). For debugging that line only.
    #[arg(long)]
    pub no_sandbox: bool,

    /// Boot without ACPI tables (MP table and command-line devices only).
    #[arg(long)]
    pub no_acpi: bool,

    /// Memory hot-add slots (ACPI PNP0C80 devices); 0 disables hot-add.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub hotplug_slots: u32,

    /// Size of each hot-add slot in MiB (a multiple of 128).
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    pub slot_mib: u64,

    /// Most memory the VM may reach by hot-add, in MiB (default: boot
    /// memory plus all slots).
    #[arg(long, value_name = "MIB")]
    pub max_memory_mib: Option<u64>,

    /// Add a virtio-mem device that can plug up to this much memory, in MiB
    /// (a multiple of 128; 0: no device; nothing is plugged until
    /// `PUT /memory/virtio-mem`). With the balancer (--vsock-uds), the
    /// balancer grows the guest by plugging its blocks and shrinks it by
    /// unplugging them, the balloon taking only what unplug cannot; its
    /// maximum then includes this region.
    #[arg(long, default_value_t = 0, value_name = "MIB")]
    pub virtio_mem_mib: u64,

    /// virtio-mem block size, in MiB (a power of two, 2 or more): the unit
    /// in which memory is plugged and unplugged.
    #[arg(long, default_value_t = memtide_devices::virtio::mem::DEFAULT_BLOCK_MIB, value_name = "MIB")]
    pub virtio_mem_block_mib: u64,

    /// Add a virtio-vsock device whose host side is Unix sockets: a guest
    /// connection to CID 2 port P goes to `PATH_P`; a host client connects to
    /// PATH and writes `CONNECT <port>\n` to reach a guest listener. The
    /// guest memory agent's reports (port 5100) are read from `PATH_5100`.
    #[arg(long, value_name = "PATH")]
    pub vsock_uds: Option<PathBuf>,

    /// The guest's vsock context ID (3 or more).
    #[arg(long, default_value_t = 3, value_name = "CID", requires = "vsock_uds")]
    pub guest_cid: u64,

    /// Host vsock port the guest memory agent reports to.
    #[arg(
        long,
        default_value_t = 5100,
        value_name = "PORT",
        requires = "vsock_uds"
    )]
    pub agent_port: u32,

    /// Least memory the balancer leaves the guest, in MiB (default: half
    /// of --memory-mib).
    #[arg(long, value_name = "MIB")]
    pub min_memory_mib: Option<u64>,

    /// Memory the balancer gives beyond the guest's committed memory, in
    /// percent (Hyper-V's memory buffer).
    #[arg(long, default_value_t = 20, value_name = "PCT")]
    pub buffer_pct: u32,

    /// The VM's priority when memory is short (1-10000).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub weight: u32,

    /// Host memory the balancer may assign to this VM, in MiB (default:
    /// the VM's maximum).
    #[arg(long, value_name = "MIB")]
    pub host_budget_mib: Option<u64>,

    /// How often the balancer decides, in ms.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub balancer_interval_ms: u64,

    /// Idle reclaim (off by default): once the guest's demand has stayed low
    /// (committed memory stable, PSI some avg10 below 1 %) this many
    /// seconds, the balancer gives back its memory above committed +
    /// buffer even when the budget is not short, below its startup memory
    /// too, never below its minimum (docs/balancer.md)
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_reclaim_after_s: Option<u64>,

    /// A guest whose agent reports no memory stall (PSI) for this many
    /// seconds, with its committed memory not rising, is calm: the
    /// balancer may give back its memory down to committed + 10 % instead
    /// of committed + buffer (docs/balancer.md). A large value keeps the
    /// buffer.
    #[arg(long, default_value_t = 30, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub calm_after_s: u64,

    /// The host's reserve, percent of --host-budget-mib: when the guest
    /// would leave less than this free, and it is calm (see
    /// --calm-after-s), it gives back memory below its startup memory, down
    /// to committed + 10 %, until the reserve is restored
    /// (docs/balancer.md). Only with --host-budget-mib (the default budget
    /// is the VM's own maximum); 0 turns it off.
    #[arg(long, default_value_t = 20, value_name = "PCT", requires = "host_budget_mib", value_parser = clap::value_parser!(u64).range(0..=50))]
    pub host_reserve_pct: u64,

    /// Do not start the balancer (it starts by default when the VM has a
    /// guest agent channel, --vsock-uds).
    #[arg(long)]
    pub no_balancer: bool,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time from process start to the guest init's ready line, over several
    /// boots; prints each run, the median and the host.
    Boot(BootBenchArgs),
    /// Inflate and deflate latency of the balloon, in one booted guest:
    /// median ms and MiB/s over rounds, host RSS, and the same inflate with
    /// one madvise per 4 KiB page for comparison.
    Balloon(BalloonBenchArgs),
    /// Hot-add latency: from `PUT /memory` to the guest reporting the
    /// memory online (`_OST`), one slot at a time; then, in a second guest,
    /// from `PUT /memory/virtio-mem` to the slot's size plugged.
    Hotplug(HotplugBenchArgs),
    /// Balancer reaction time: from the first report of a committed-memory
    /// step to the first memory added and to the demand met, over rounds
    /// (a fresh guest each round; reports from a scripted source).
    Balancer(BalancerBenchArgs),
    /// Shrinking by virtio-mem unplug against balloon inflate, the same
    /// MiB in the same guest: time, MiB/s, guest MemTotal and host
    /// residency before and after, and the speed ratio (medians over runs).
    Shrink(ShrinkBenchArgs),
    /// Every benchmark above in one run, then one Markdown table of
    /// medians and ratios with the host.
    All(AllBenchArgs),
}

/// Options of `memtide bench shrink`.
#[derive(Debug, Args)]
pub struct ShrinkBenchArgs {
    /// MiB to shrink by, with each mechanism (a multiple of the virtio-mem
    /// block size, below --memory-mib).
    #[arg(long, default_value_t = 128)]
    pub mib: u64,
    /// Runs (one guest boot each).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// How the guest is booted (--balloon, --api-sock, --prefault,
    /// --virtio-mem-mib, --balloon-stats-ms and --cmd are set by the
    /// benchmark; the default initramfs, which runs --cmd, unless
    /// --initramfs is given).
    #[command(flatten)]
    pub vm: RunArgs,
}

/// Options of `memtide bench all`.
#[derive(Debug, Args)]
pub struct AllBenchArgs {
    /// Runs or rounds of each benchmark.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Balloon size per round, MiB.
    #[arg(long, default_value_t = 32)]
    pub balloon_mib: u64,
    /// Hot-add slots to add, one at a time.
    #[arg(long, default_value_t = 2)]
    pub slots: u32,
    /// MiB to shrink by in the shrink benchmark (0: skip it).
    #[arg(long, default_value_t = 128)]
    pub shrink_mib: u64,
    /// Also write the table to this file.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
    /// How the guests are booted (each benchmark sets what it needs).
    #[command(flatten)]
    pub vm: RunArgs,
}

/// Options of `memtide bench balancer`.
#[derive(Debug, Args)]
pub struct BalancerBenchArgs {
    /// Rounds (one guest boot each).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Committed memory before the step, MiB.
    #[arg(long, default_value_t = 100)]
    pub low_mib: u64,
    /// Committed memory after the step, MiB.
    #[arg(long, default_value_t = 300)]
    pub high_mib: u64,
    /// Balancer decision interval, ms.
    #[arg(long, default_value_t = 250)]
    pub interval_ms: u64,
    /// How the guest is booted (--balloon, --api-sock, --vsock-uds and at
    /// least one hot-add slot are set by the benchmark).
    #[command(flatten)]
    pub vm: RunArgs,
}

/// Options of `memtide bench hotplug`.
#[derive(Debug, Args)]
pub struct HotplugBenchArgs {
    /// Slots to add, one at a time.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// How the guest is booted (--hotplug-slots, --balloon and --api-sock
    /// are set by the benchmark).
    #[command(flatten)]
    pub vm: RunArgs,
}

/// Options of `memtide bench balloon`.
#[derive(Debug, Args)]
pub struct BalloonBenchArgs {
    /// Balloon size per round, MiB.
    #[arg(long, default_value_t = 64)]
    pub mib: u64,
    /// Rounds per discard mode.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// How the guest is booted (--balloon, --api-sock and --prefault are
    /// set by the benchmark).
    #[command(flatten)]
    pub vm: RunArgs,
}

/// Options of `memtide bench boot`.
#[derive(Debug, Args)]
pub struct BootBenchArgs {
    /// Number of boots to time (per image with --compare).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,

    /// Another initramfs to time against the run's own (`--initramfs`, or
    /// the default): the images boot in turn, A B A B ..., and the report
    /// gives each one's medians and their ratios to the first. Repeatable.
    #[arg(long, value_name = "INITRAMFS", conflicts_with = "no_initramfs")]
    pub compare: Vec<PathBuf>,

    /// The guest kernel for the `--compare` image at the same position
    /// (the first `--compare-kernel` goes with the first `--compare`, and
    /// so on; an image without one boots the run's own `--kernel`), to
    /// time a kernel change and an image change side by side. Repeatable.
    #[arg(long, value_name = "KERNEL", requires = "compare")]
    pub compare_kernel: Vec<PathBuf>,

    /// How the guests are booted.
    #[command(flatten)]
    pub vm: RunArgs,
}
