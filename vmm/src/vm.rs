//! Building a VM from a [`VmConfig`] and running it until the guest stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use memtide_devices::bus::{lock, Bus};
use memtide_devices::i8042::I8042;
use memtide_devices::serial::{
    ConsoleOutput, GuestFault, GuestWatch, SerialConsole, StdinInput, COM1_IRQ, COM1_PORT,
    COM1_PORT_COUNT,
};
use memtide_devices::virtio::balloon::{Balloon, BalloonHandler, BalloonShared};
use memtide_devices::virtio::VirtioDevice;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::api::{self, ApiState};
use crate::balance;
use crate::boot::{self, mptable, params};
use crate::compat::HostKvm;
use crate::config::VmConfig;
use crate::guest_channel;
use crate::kernel_cmdline::KernelCmdline;
use crate::layout;
use crate::memory::{self, GuestMemoryMmap};
use crate::mmio_devices::MmioDeviceManager;
use crate::outcome::{ExitSignal, VmOutcome};
use crate::platform_acpi::{self, WiringInputs};
use crate::vcpu::{profile, setup, Vcpu};

/// i8042 data port; the command port is at +4.
const I8042_PORT: u16 = 0x60;

/// Errors from building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm missing.
    #[error("/dev/kvm does not exist: load the kvm module (kvm_intel or kvm_amd) or run on a host with virtualization")]
    NoKvm,
    /// /dev/kvm not accessible.
    #[error("permission denied opening /dev/kvm: run as root or add your user to the 'kvm' group")]
    KvmPermission,
    /// Other failure opening /dev/kvm.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// A capability memtide needs is missing.
    #[error("this host's KVM lacks a capability memtide needs: {0:?}")]
    MissingCap(Cap),
    /// A KVM ioctl failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Kernel or initramfs.
    #[error(transparent)]
    Kernel(#[from] boot::kernel::KernelError),
    /// Zero page.
    #[error(transparent)]
    Params(#[from] params::ParamsError),
    /// MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// vCPU set-up.
    #[error("vCPU set-up: {0}")]
    VcpuSetup(#[from] setup::SetupError),
    /// Writing the command line.
    #[error("cannot write the kernel command line: {0}")]
    Cmdline(vm_memory::GuestMemoryError),
    /// Port-bus wiring (a bug).
    #[error("device wiring: {0}")]
    Bus(#[from] memtide_devices::bus::BusError),
    /// An eventfd or thread could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// virtio-mmio device placement.
    #[error(transparent)]
    MmioDevice(#[from] crate::mmio_devices::MmioDeviceError),
    /// The control API.
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    /// Device entries made the command line invalid.
    #[error("kernel command line: {0}")]
    CmdlineTooLong(#[from] crate::kernel_cmdline::CmdlineError),
    /// Memory hot-add or ACPI set-up.
    #[error("memory hot-add set-up: {0}")]
    Hotplug(String),
    /// The virtio-vsock device.
    #[error("virtio-vsock: {0}")]
    Vsock(#[from] memtide_devices::virtio::vsock::VsockError),
    /// The guest agent's report reader.
    #[error(transparent)]
    AgentReader(#[from] memtide_balancer::reader::ReaderError),
    /// Balancer settings.
    #[error("balancer: {0}")]
    Balancer(#[from] memtide_balancer::SettingsError),
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(event_manager::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

/// How a VM run ended.
#[derive(Debug)]
pub struct RunReport {
    /// The outcome the vCPUs or devices reported.
    pub outcome: VmOutcome,
    /// Whether the guest kernel printed a panic on its console.
    pub panicked: bool,
    /// Guest processes that failed, as seen on the console: the `--cmd`
    /// command's non-zero status, processes a signal killed (first
    /// [`memtide_devices::serial::MAX_FAULTS`]).
    pub guest_faults: Vec<GuestFault>,
    /// How many more guest faults were seen than `guest_faults` holds.
    pub guest_faults_dropped: usize,
}

/// Opens /dev/kvm with errors a user can act on.
pub fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => VmError::NoKvm,
        libc::EACCES | libc::EPERM => VmError::KvmPermission,
        _ => VmError::OpenKvm(e),
    })
}

fn check_caps(kvm: &Kvm) -> Result<(), VmError> {
    for cap in [
        Cap::Irqchip,
        Cap::UserMemory,
        Cap::SetTssAddr,
        Cap::Pit2,
        Cap::PitState2,
        Cap::Irqfd,
        Cap::ExtCpuid,
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCap(cap));
        }
    }
    Ok(())
}

/// Builds the VM described by `config`, boots it, and waits for it to stop.
pub fn run(config: &VmConfig) -> Result<RunReport, VmError> {
    let kvm = open_kvm()?;
    check_caps(&kvm)?;
    let vm = kvm.create_vm().map_err(kvm_err("create the VM"))?;
    vm.set_tss_address(layout::KVM_TSS_ADDRESS)
        .map_err(kvm_err("set the TSS address"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("create the in-kernel irqchip"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("create the PIT"))?;
    let vm = Arc::new(vm);

    let mem = memory::create_guest_memory(config.memory_mib)?;
    memory::advise_huge_pages(&mem);
    if config.prefault {
        memory::prefault(&mem);
    }
    let next_kvm_slot = memory::register_with_kvm(&vm, &mem)?;
    let guest_mem = GuestMemoryAtomic::new(mem.clone());

    let exit_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("create exit eventfd"))?;
    let exit = Arc::new(ExitSignal::new(
        exit_evt.try_clone().map_err(io_err("clone exit eventfd"))?,
    ));
    let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("create reset eventfd"))?;
    let watch = Arc::new(GuestWatch::default());
    let (mut pio, console) = build_devices(&vm, &reset_evt, &watch)?;
    let mut mmio_devices = MmioDeviceManager::new()?;

    let mut balloon_handler = None;
    let mut balloon_shared = None;
    if let Some(bc) = &config.balloon {
        let shared = Arc::new(BalloonShared::new().map_err(io_err("create balloon state"))?);
        let balloon = Arc::new(Mutex::new(
            Balloon::new(
                shared.clone(),
                bc.discard,
                bc.stats_interval,
                bc.free_page_reporting,
            )
            .map_err(io_err("create the balloon"))?,
        ));
        let device: Arc<Mutex<dyn VirtioDevice>> = balloon.clone();
        let (slot, evts) = mmio_devices.add(&vm, device, guest_mem.clone())?;
        log::info!("virtio-balloon at {:#x}, IRQ {}", slot.base, slot.irq);
        lock(&balloon).set_queue_evts(evts);
        balloon_handler = Some(BalloonHandler::new(balloon));
        balloon_shared = Some(shared);
    }
    let channel = match &config.vsock {
        Some(vc) => Some(guest_channel::wire(
            vc,
            &vm,
            &mut mmio_devices,
            guest_mem.clone(),
        )?),
        None => None,
    };
    let platform = if config.acpi {
        Some(platform_acpi::wire(
            config.hotplug.as_ref(),
            WiringInputs {
                vm: &vm,
                mem: &mem,
                guest_mem: guest_mem.clone(),
                mmio: &mut mmio_devices,
                pio: &mut pio,
                off_evt: &reset_evt,
                next_kvm_slot,
                vcpus: config.vcpus,
                memory_mib: config.memory_mib,
            },
        )?)
    } else {
        None
    };
    let pio = Arc::new(pio);
    let mut cmdline = config.cmdline.clone();
    if platform.is_none() {
        // Without ACPI tables the guest learns of virtio devices here.
        for arg in mmio_devices.cmdline_args() {
            cmdline.push(&arg)?;
        }
    }
    let mmio = Arc::new(mmio_devices.into_bus());
    let entry = load_guest(config, &cmdline, &mem, platform.as_ref().map(|p| p.rsdp))?;
    let hotplug = platform.as_ref().and_then(|p| p.hotplug.clone());
    let balancer_stop = Arc::new(AtomicBool::new(false));
    let balancer = match (&config.balancer, &channel) {
        (Some(bc), Some(ch)) => Some(balance::start(
            bc,
            balance::LocalVm {
                reports: ch.reports.clone(),
                balloon: balloon_shared.clone(),
                hotplug: hotplug.clone(),
            },
            config.hotplug.map_or(128, |h| h.slot_mib),
            balancer_stop.clone(),
        )?),
        _ => None,
    };
    if let Some(sock) = &config.api_sock {
        let ram = guest_mem.clone();
        api::start(
            sock,
            ApiState {
                balloon: balloon_shared,
                hotplug,
                ram_mib: config.memory_mib,
                resident_mib: Box::new(move || memory::resident_bytes(&ram.memory()) >> 20),
                agent: channel.as_ref().map(|c| c.reports.clone()),
                vsock: channel.as_ref().map(|c| c.vsock.clone()),
                balancer,
            },
        )?;
    }

    // Only the nested kvm_pvm host gets the emulation fallback; the command
    // line options and the syscall gate were already decided for this host
    // in `VmConfig::from_args`.
    let host = HostKvm::detect();
    log::debug!("host KVM: {}", host.describe());
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get the supported CPUID"))?;
    let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
    for id in 0..config.vcpus {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("create a vCPU"))?;
        let mut vcpu_cpuid = cpuid.clone();
        setup::adapt_cpuid(&mut vcpu_cpuid, id, config.vcpus);
        setup::configure_common(&fd, &vcpu_cpuid)?;
        if id == 0 {
            setup::configure_boot_registers(&fd, entry)?;
        }
        let mut vcpu = Vcpu::new(
            id,
            fd,
            mem.clone(),
            pio.clone(),
            mmio.clone(),
            exit.clone(),
            host,
        );
        if config.complete_syscalls {
            vcpu.complete_syscalls();
        }
        vcpus.push(vcpu);
    }

    let mut event_mgr: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().map_err(VmError::EventLoop)?;
    let stopped = Arc::new(AtomicBool::new(false));
    event_mgr.add_subscriber(Arc::new(Mutex::new(StopWatcher {
        exit_evt,
        reset_evt,
        exit: exit.clone(),
        stopped: stopped.clone(),
    })));
    event_mgr.add_subscriber(Arc::new(Mutex::new(StdinInput::new(console))));
    if let Some(handler) = balloon_handler {
        event_mgr.add_subscriber(Arc::new(Mutex::new(handler)));
    }
    if let Some(channel) = channel {
        event_mgr.add_subscriber(Arc::new(Mutex::new(channel.handler)));
    }

    let profile_path = profile::requested();
    let guest_profile = Arc::new(profile::GuestProfile::default());
    if profile_path.is_some() {
        profile::install_kick_handler().map_err(|e| VmError::Io {
            what: "install the profiler signal handler",
            source: e.into(),
        })?;
        if let Some(first) = vcpus.first_mut() {
            first.set_profile(guest_profile.clone());
        }
    }
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        let handle = vcpu.spawn().map_err(io_err("start a vCPU thread"))?;
        if i == 0 && profile_path.is_some() {
            profile::start_sampler(guest_profile.clone(), &handle)
                .map_err(io_err("start the profiler"))?;
        }
    }
    while !stopped.load(Ordering::SeqCst) {
        event_mgr.run().map_err(VmError::EventLoop)?;
    }
    if let Some(path) = &profile_path {
        if let Err(e) = guest_profile.write_to(path) {
            log::error!("cannot write the guest profile to {}: {e}", path.display());
        }
    }
    balancer_stop.store(true, Ordering::SeqCst);
    let outcome = exit.take().unwrap_or(VmOutcome::Reset);
    Ok(RunReport {
        outcome,
        panicked: watch.panicked(),
        guest_faults: watch.faults(),
        guest_faults_dropped: watch.faults_dropped(),
    })
}

/// Writes kernel, initramfs, command line, zero page, MP table and boot
/// page tables into guest memory; returns the kernel's entry point.
fn load_guest(
    config: &VmConfig,
    cmdline: &KernelCmdline,
    mem: &GuestMemoryMmap,
    acpi_rsdp: Option<u64>,
) -> Result<vm_memory::GuestAddress, VmError> {
    let kernel = boot::load_kernel(mem, &config.kernel)?;
    let initramfs = match &config.initramfs {
        Some(path) => Some(boot::load_initramfs(mem, path, kernel.end)?),
        None => None,
    };
    let cmdline = cmdline.to_bytes_with_nul();
    mem.write_slice(&cmdline, layout::CMDLINE_START)
        .map_err(VmError::Cmdline)?;
    params::write_boot_params(
        mem,
        kernel.setup_header,
        cmdline.len() - 1,
        initramfs,
        acpi_rsdp,
    )?;
    mptable::write(mem, config.vcpus)?;
    setup::write_boot_tables(mem)?;
    Ok(kernel.entry)
}

/// Creates the legacy devices and their port-bus entries.
fn build_devices(
    vm: &VmFd,
    reset_evt: &EventFd,
    watch: &Arc<GuestWatch>,
) -> Result<(Bus, Arc<Mutex<SerialConsole>>), VmError> {
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("create serial irqfd"))?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(kvm_err("register the serial irqfd"))?;
    let output = ConsoleOutput::new(Box::new(std::io::stdout()), watch.clone());
    let console = Arc::new(Mutex::new(SerialConsole::new(serial_irq, output)));
    let i8042 = Arc::new(Mutex::new(I8042::new(
        reset_evt
            .try_clone()
            .map_err(io_err("clone reset eventfd"))?,
    )));
    let mut pio = Bus::new();
    pio.insert(COM1_PORT.into(), COM1_PORT_COUNT.into(), console.clone())?;
    pio.insert(I8042_PORT.into(), 5, i8042)?;
    Ok((pio, console))
}

/// Turns the i8042 reset and the exit eventfd into the end of the main loop.
struct StopWatcher {
    exit_evt: EventFd,
    reset_evt: EventFd,
    exit: Arc<ExitSignal>,
    stopped: Arc<AtomicBool>,
}

impl MutEventSubscriber for StopWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        use std::os::fd::AsRawFd;
        if events.fd() == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.exit.report(VmOutcome::Reset);
        } else if events.fd() == self.exit_evt.as_raw_fd() {
            let _ = self.exit_evt.read();
            self.stopped.store(true, Ordering::SeqCst);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for evt in [&self.exit_evt, &self.reset_evt] {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("cannot watch a stop eventfd: {e}");
            }
        }
    }
}
