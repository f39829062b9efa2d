//! Building a [`Vmm`] from a [`VmConfig`]: the KVM VM, guest memory,
//! devices, the guest's boot state, and the (not yet started) vCPUs.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use memtide_devices::serial::GuestWatch;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::eventfd::EventFd;

use super::{io_err, kvm_err, open_kvm, VmError, Vmm};
use crate::api::{self, ApiState};
use crate::arch::x86_64::boot::{self, BootSource};
use crate::arch::x86_64::{layout, setup};
use crate::balance;
use crate::config::VmConfig;
use crate::device_manager::{self, DeviceInputs, Devices};
use crate::memory::{self, GuestMemoryMmap};
use crate::outcome::ExitSignal;
use crate::sandbox;
use crate::vcpu::nested::{HostKvm, NestedAssist};
use crate::vcpu::Vcpu;

/// Builds a [`Vmm`] step by step from a [`VmConfig`].
#[derive(Debug)]
pub struct VmmBuilder<'a> {
    config: &'a VmConfig,
}

impl<'a> VmmBuilder<'a> {
    /// A builder for the VM `config` describes.
    pub fn new(config: &'a VmConfig) -> Self {
        Self { config }
    }

    /// Creates the VM, its memory, devices and vCPUs and writes the guest's
    /// boot state; nothing runs yet except the control API and balancer
    /// threads, if configured.
    pub fn build(self) -> Result<Vmm, VmError> {
        let config = self.config;
        // Before anything is created: a path that cannot become the API
        // socket (a regular file, a live socket) ends the run untouched.
        if let Some(sock) = &config.api_sock {
            api::check_path(sock)?;
        }
        // Before any thread starts, so that none has a capability.
        if config.sandbox {
            sandbox::capabilities::drop_all()?;
        }
        let kvm = open_kvm()?;
        let vm = Arc::new(create_vm(&kvm)?);
        let (mem, next_kvm_slot) = build_memory(config, &vm)?;
        let guest_mem = GuestMemoryAtomic::new(mem.clone());

        let exit_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("create exit eventfd"))?;
        let exit = Arc::new(ExitSignal::new(
            exit_evt.try_clone().map_err(io_err("clone exit eventfd"))?,
        ));
        let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("create reset eventfd"))?;
        let watch = Arc::new(GuestWatch::default());
        let devices = device_manager::build(
            config,
            DeviceInputs {
                vm: &vm,
                mem: &mem,
                guest_mem: guest_mem.clone(),
                next_kvm_slot,
                reset_evt: &reset_evt,
                watch: &watch,
            },
        )?;
        let entry = load_guest(config, &devices, &mem)?;
        let balancer_stop = Arc::new(AtomicBool::new(false));
        start_services(config, &devices, &guest_mem, &balancer_stop)?;
        let vcpus = create_vcpus(config, &kvm, &vm, &guest_mem, &devices, &exit, entry)?;
        Ok(Vmm {
            vm,
            vcpus,
            devices,
            exit,
            exit_evt,
            reset_evt,
            watch,
            balancer_stop,
            sandbox: config.sandbox,
        })
    }
}

/// Checks the capabilities memtide needs.
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

/// Creates the VM with its TSS, in-kernel irqchip and PIT.
fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    check_caps(kvm)?;
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
    Ok(vm)
}

/// Maps boot RAM and registers it with KVM; returns it with the first free
/// KVM memory slot.
fn build_memory(config: &VmConfig, vm: &VmFd) -> Result<(GuestMemoryMmap, u32), VmError> {
    let mem = memory::create_guest_memory(config.memory_mib)?;
    memory::advise_huge_pages(&mem);
    if config.prefault {
        memory::prefault(&mem);
    }
    let next_kvm_slot = memory::register_with_kvm(vm, &mem)?;
    Ok((mem, next_kvm_slot))
}

/// Writes the guest's boot state, with what the devices add to the command
/// line; returns the kernel entry.
fn load_guest(
    config: &VmConfig,
    devices: &Devices,
    mem: &GuestMemoryMmap,
) -> Result<GuestAddress, VmError> {
    let mut cmdline = config.cmdline.clone();
    for arg in &devices.boot.cmdline_args {
        cmdline.push(arg)?;
    }
    let entry = boot::load_guest(
        mem,
        &BootSource {
            kernel: &config.kernel,
            initramfs: config.initramfs.as_deref(),
            cmdline: &cmdline.to_bytes_with_nul()?,
            vcpus: config.vcpus,
            acpi_rsdp: devices.boot.acpi_rsdp,
        },
    )?;
    Ok(entry)
}

/// Starts the in-process balancer and the control API, if configured.
fn start_services(
    config: &VmConfig,
    devices: &Devices,
    guest_mem: &GuestMemoryAtomic<GuestMemoryMmap>,
    balancer_stop: &Arc<AtomicBool>,
) -> Result<(), VmError> {
    let balancer = match (&config.balancer, &devices.channel) {
        (Some(bc), Some(ch)) => Some(balance::start(
            bc,
            balance::LocalVm {
                reports: ch.reports.clone(),
                balloon: devices.balloon.clone(),
                hotplug: devices.hotplug.clone(),
                virtio_mem: devices.virtio_mem.clone(),
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
                balloon: devices.balloon.clone(),
                hotplug: devices.hotplug.clone(),
                virtio_mem: devices.virtio_mem.clone(),
                ram_mib: config.memory_mib,
                resident_mib: Box::new(move || memory::resident_bytes(&ram.memory()) >> 20),
                agent: devices.channel.as_ref().map(|c| c.reports.clone()),
                vsock: devices.channel.as_ref().map(|c| c.vsock.clone()),
                balancer,
            },
        )?;
    }
    Ok(())
}

/// Creates and configures the vCPUs (vCPU 0 at the kernel entry).
fn create_vcpus(
    config: &VmConfig,
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMemoryAtomic<GuestMemoryMmap>,
    devices: &Devices,
    exit: &Arc<ExitSignal>,
    entry: GuestAddress,
) -> Result<Vec<Vcpu>, VmError> {
    // Only the nested kvm_pvm host gets the assists; the command line
    // options and the syscall gate were already decided for this host in
    // `VmConfig::from_args`.
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
        vcpus.push(Vcpu::new(
            id,
            fd,
            mem.clone(),
            devices.pio.clone(),
            devices.mmio.clone(),
            exit.clone(),
            NestedAssist::for_host(host, config.complete_syscalls),
        ));
    }
    Ok(vcpus)
}
